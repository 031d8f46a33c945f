//! Kaldi's filter-bank features (`compute-fbank-feats`, torchaudio's `compliance.kaldi.fbank`,
//! kaldi-native-fbank), with the defaults CAM++ was trained on: 16 kHz, 25 ms frames every
//! 10 ms with the edges snipped, DC removed per frame, pre-emphasis 0.97, Povey window, a
//! 512-point power spectrum, 80 triangular bands on the Kaldi mel scale from 20 Hz to 8 kHz
//! (the Nyquist bin left out, as Kaldi does), natural log floored at f32's epsilon. No dither.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub use crate::features::frame_count;
use crate::features::{hertz_to_mel as mel, FFT_LENGTH as N_FFT};

/// Bands per frame.
pub const BANDS: usize = 80;
/// Samples per frame (25 ms), as MedASR's front end frames them.
pub const FRAME_LENGTH: usize = crate::features::WINDOW_LENGTH;
/// Samples between frame starts (10 ms).
pub const FRAME_SHIFT: usize = crate::features::HOP_LENGTH;
const SAMPLE_RATE: f64 = 16_000.0;
const LOW_HZ: f64 = 20.0;
const PREEMPHASIS: f32 = 0.97;

/// The filter-bank computer (window, bands and FFT plan made once).
pub struct Fbank {
    window: [f32; FRAME_LENGTH],
    /// Per band: the first FFT bin with weight and the weights from there.
    bands: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for Fbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fbank").finish_non_exhaustive()
    }
}

impl Default for Fbank {
    fn default() -> Self {
        Self::new()
    }
}

impl Fbank {
    /// Makes the window, the mel bands and the FFT plan.
    pub fn new() -> Self {
        let mut window = [0f32; FRAME_LENGTH];
        let denominator = (FRAME_LENGTH - 1) as f64;
        for (i, w) in window.iter_mut().enumerate() {
            let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / denominator).cos();
            *w = hann.powf(0.85) as f32;
        }
        let (low, high) = (mel(LOW_HZ), mel(SAMPLE_RATE / 2.0));
        let delta = (high - low) / (BANDS + 1) as f64;
        let bin_hz = SAMPLE_RATE / N_FFT as f64;
        let bands = (0..BANDS)
            .map(|b| {
                let left = low + b as f64 * delta;
                let centre = left + delta;
                let right = centre + delta;
                let weights: Vec<(usize, f32)> = (0..N_FFT / 2)
                    .filter_map(|bin| {
                        let m = mel(bin as f64 * bin_hz);
                        if m <= left || m >= right {
                            return None;
                        }
                        let w = if m <= centre {
                            (m - left) / (centre - left)
                        } else {
                            (right - m) / (right - centre)
                        };
                        Some((bin, w as f32))
                    })
                    .collect();
                let first = weights.first().map_or(0, |&(bin, _)| bin);
                (first, weights.into_iter().map(|(_, w)| w).collect())
            })
            .collect();
        Self {
            window,
            bands,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
        }
    }

    /// The log filter-bank energies of `samples` (16 kHz, in [-1, 1]), one row per frame.
    pub fn compute(&self, samples: &[f32]) -> Vec<[f32; BANDS]> {
        let frames = frame_count(samples.len());
        let mut input = vec![0f32; N_FFT];
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0f32; N_FFT / 2 + 1];
        let mut out = Vec::with_capacity(frames);
        for t in 0..frames {
            let frame = &samples[t * FRAME_SHIFT..t * FRAME_SHIFT + FRAME_LENGTH];
            let clean = |s: f32| if s.is_finite() { s } else { 0.0 };
            let mean = frame.iter().map(|&s| clean(s)).sum::<f32>() / FRAME_LENGTH as f32;
            for (x, &s) in input.iter_mut().zip(frame) {
                *x = clean(s) - mean;
            }
            for i in (1..FRAME_LENGTH).rev() {
                input[i] -= PREEMPHASIS * input[i - 1];
            }
            input[0] -= PREEMPHASIS * input[0];
            for (x, w) in input.iter_mut().zip(&self.window) {
                *x *= w;
            }
            input[FRAME_LENGTH..].iter_mut().for_each(|x| *x = 0.0);
            if self.fft.process(&mut input, &mut spectrum).is_err() {
                spectrum.iter_mut().for_each(|c| *c = Default::default());
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            let mut row = [0f32; BANDS];
            for (value, (first, weights)) in row.iter_mut().zip(&self.bands) {
                let energy: f32 = weights
                    .iter()
                    .zip(&power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                *value = energy.max(f32::EPSILON).ln();
            }
            out.push(row);
        }
        out
    }
}

/// Subtracts each band's mean over the frames ("global-mean" normalisation).
pub fn subtract_mean(features: &mut [[f32; BANDS]]) {
    if features.is_empty() {
        return;
    }
    let mut mean = [0f64; BANDS];
    for row in features.iter() {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    let count = features.len() as f64;
    let mean: Vec<f32> = mean.iter().map(|m| (m / count) as f32).collect();
    for row in features.iter_mut() {
        for (v, m) in row.iter_mut().zip(&mean) {
            *v -= m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_lights_the_band_around_its_frequency() {
        let samples: Vec<f32> = (0..16_000)
            .map(|n| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * n as f32 / 16_000.0).sin())
            .collect();
        let features = Fbank::new().compute(&samples);
        assert_eq!(features.len(), 98);
        let row = &features[50];
        let loudest = (0..BANDS)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap_or(0);
        // 1 kHz is 1000.6 on the Kaldi mel scale; bands are ~35 mel apart from 34 mel.
        let centre = |b: usize| mel(LOW_HZ) + (b + 1) as f64 * (mel(8000.0) - mel(LOW_HZ)) / 81.0;
        assert!(
            (centre(loudest) - mel(1000.0)).abs() < 40.0,
            "band {loudest}"
        );
    }

    #[test]
    fn silence_sits_on_the_floor_and_bad_samples_are_silence() {
        let features = Fbank::new().compute(&[f32::NAN; 800]);
        assert!(features.iter().flatten().all(|&v| v == f32::EPSILON.ln()));
    }

    #[test]
    fn mean_subtraction_centres_every_band() {
        let mut features = vec![[1.0; BANDS], [3.0; BANDS]];
        subtract_mean(&mut features);
        assert_eq!(features[0], [-1.0; BANDS]);
        assert_eq!(features[1], [1.0; BANDS]);
    }
}
