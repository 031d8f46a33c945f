//! MedASR's log-mel front end, identical to Hugging Face's `LasrFeatureExtractor`
//! (transformers' `models/lasr/`, "Front end"): 400-sample symmetric Hann frames every 160 samples,
//! no centring or padding, a 512-point real FFT, power spectrum, a 128-band mel filterbank on the
//! Kaldi mel scale between 125 and 7500 Hz, natural log with a 1e-5 floor. Everything is computed
//! in f64 and cast to f32 at the end, as the reference does.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Samples per second the model expects.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per analysis window.
pub const WINDOW_LENGTH: usize = 400;
/// Samples between frame starts.
pub const HOP_LENGTH: usize = 160;
/// FFT length (the window is zero-padded to this).
pub const FFT_LENGTH: usize = 512;
/// Mel bands per frame.
pub const MEL_BANDS: usize = 128;
const SPECTRUM_BINS: usize = FFT_LENGTH / 2 + 1;
const LOWER_EDGE_HZ: f64 = 125.0;
const UPPER_EDGE_HZ: f64 = 7500.0;
const LOG_FLOOR: f64 = 1e-5;

/// Log-mel features of one signal: `frames` rows of [`MEL_BANDS`] values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Row-major `[frames, MEL_BANDS]`.
    pub values: Vec<f32>,
    /// Number of frames.
    pub frames: usize,
    /// Frame validity (HF's `attention_mask`): frame t is valid iff its last sample lies inside
    /// the signal. For one unpadded signal every frame is valid; kept explicit for batching.
    pub mask: Vec<bool>,
}

/// Number of frames HF produces for `samples` samples: floor((N - 400) / 160) + 1, or 0.
pub fn frame_count(samples: usize) -> usize {
    if samples < WINDOW_LENGTH {
        0
    } else {
        (samples - WINDOW_LENGTH) / HOP_LENGTH + 1
    }
}

/// One triangular mel filter stored sparsely: its first spectrum bin and weights.
#[derive(Debug, Clone)]
struct MelFilter {
    first_bin: usize,
    weights: Vec<f64>,
}

/// Reusable front end: window, filterbank and FFT plan are built once.
pub struct FrontEnd {
    window: Vec<f64>,
    filters: Vec<MelFilter>,
    fft: Arc<dyn RealToComplex<f64>>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    power: Vec<f64>,
}

impl Default for FrontEnd {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontEnd").finish_non_exhaustive()
    }
}

/// The Kaldi mel scale HF calls `mel_scale="kaldi"`: 1127 ln(1 + f/700).
pub(crate) fn hertz_to_mel(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

/// The dense filterbank `[SPECTRUM_BINS][MEL_BANDS]`, exactly `linear_to_mel_weight_matrix`.
fn mel_weight_matrix() -> Vec<[f64; MEL_BANDS]> {
    let nyquist = f64::from(SAMPLE_RATE) / 2.0;
    let lo = hertz_to_mel(LOWER_EDGE_HZ);
    let hi = hertz_to_mel(UPPER_EDGE_HZ);
    // np.linspace(lo, hi, MEL_BANDS + 2): start + i * step, the last value exactly `hi`.
    let edges: Vec<f64> = linspace(lo, hi, MEL_BANDS + 2);
    let bin_hz = linspace(0.0, nyquist, SPECTRUM_BINS);
    let mut matrix = vec![[0.0f64; MEL_BANDS]; SPECTRUM_BINS];
    // Row 0 (DC) stays zero: `bands_to_zero = 1`.
    for (bin, row) in matrix.iter_mut().enumerate().skip(1) {
        let mel = hertz_to_mel(bin_hz[bin]);
        for (band, weight) in row.iter_mut().enumerate() {
            let (lower, center, upper) = (edges[band], edges[band + 1], edges[band + 2]);
            let lower_slope = (mel - lower) / (center - lower);
            let upper_slope = (upper - mel) / (upper - center);
            *weight = lower_slope.min(upper_slope).max(0.0);
        }
    }
    matrix
}

/// numpy's linspace: `start + i * step` with the endpoint written exactly.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    let step = (stop - start) / (n - 1) as f64;
    let mut out: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    if let Some(last) = out.last_mut() {
        *last = stop;
    }
    out
}

impl FrontEnd {
    /// Builds the window, the filterbank and the FFT plan.
    pub fn new() -> Self {
        // torch.hann_window(400, periodic=False): 0.5 - 0.5 cos(2 pi n / 399).
        let denominator = (WINDOW_LENGTH - 1) as f64;
        let window = (0..WINDOW_LENGTH)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / denominator).cos())
            .collect();
        let dense = mel_weight_matrix();
        let filters = (0..MEL_BANDS)
            .map(|band| {
                let nonzero: Vec<usize> = (0..SPECTRUM_BINS)
                    .filter(|&b| dense[b][band] != 0.0)
                    .collect();
                match (nonzero.first(), nonzero.last()) {
                    (Some(&first), Some(&last)) => MelFilter {
                        first_bin: first,
                        weights: (first..=last).map(|b| dense[b][band]).collect(),
                    },
                    _ => MelFilter {
                        first_bin: 0,
                        weights: Vec::new(),
                    },
                }
            })
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(FFT_LENGTH);
        let scratch = fft.make_scratch_vec();
        let spectrum = fft.make_output_vec();
        Self {
            window,
            filters,
            fft,
            frame: vec![0.0; FFT_LENGTH],
            spectrum,
            scratch,
            power: vec![0.0; SPECTRUM_BINS],
        }
    }

    /// Log-mel features of a 16 kHz mono signal in [-1, 1].
    pub fn compute(&mut self, samples: &[f32]) -> Features {
        let frames = frame_count(samples.len());
        let mut values = vec![0.0f32; frames * MEL_BANDS];
        for (t, row) in values.chunks_exact_mut(MEL_BANDS).enumerate() {
            let start = t * HOP_LENGTH;
            self.frame_features(&samples[start..start + WINDOW_LENGTH], row);
        }
        let mask = (0..frames)
            .map(|t| t * HOP_LENGTH + WINDOW_LENGTH - 1 < samples.len())
            .collect();
        Features {
            values,
            frames,
            mask,
        }
    }

    fn frame_features(&mut self, frame: &[f32], out: &mut [f32]) {
        for ((dst, &x), &w) in self.frame.iter_mut().zip(frame).zip(&self.window) {
            *dst = f64::from(x) * w;
        }
        self.frame[WINDOW_LENGTH..].fill(0.0);
        // Lengths are fixed by construction, so the FFT cannot fail; a failure would leave
        // zeros, which the log floor turns into silence rather than a panic.
        if self
            .fft
            .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
            .is_err()
        {
            self.spectrum.fill(Complex::new(0.0, 0.0));
        }
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.re * c.re + c.im * c.im;
        }
        for (value, filter) in out.iter_mut().zip(&self.filters) {
            let bins = &self.power[filter.first_bin..filter.first_bin + filter.weights.len()];
            let energy: f64 = bins.iter().zip(&filter.weights).map(|(p, w)| p * w).sum();
            *value = energy.max(LOG_FLOOR).ln() as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_matches_unfold() {
        assert_eq!(frame_count(0), 0);
        assert_eq!(frame_count(399), 0);
        assert_eq!(frame_count(400), 1);
        assert_eq!(frame_count(559), 1);
        assert_eq!(frame_count(560), 2);
        assert_eq!(frame_count(16_000), 98);
    }

    #[test]
    fn first_band_is_always_the_log_floor() {
        // Mel band 0 has all-zero weights (spec), so feature 0 is log(1e-5).
        let mut fe = FrontEnd::new();
        let noise: Vec<f32> = (0..4000)
            .map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0)
            .collect();
        let f = fe.compute(&noise);
        for t in 0..f.frames {
            assert!((f.values[t * MEL_BANDS] - (-11.512925)).abs() < 1e-6);
        }
    }

    #[test]
    fn silence_is_the_log_floor_everywhere() {
        let mut fe = FrontEnd::new();
        let f = fe.compute(&[0.0; 1000]);
        assert_eq!(f.frames, 4);
        assert!(f
            .values
            .iter()
            .all(|&v| (v - (1e-5f64).ln() as f32).abs() < 1e-6));
        assert!(f.mask.iter().all(|&m| m));
    }

    #[test]
    fn a_tone_peaks_in_the_band_that_covers_it() {
        let mut fe = FrontEnd::new();
        let tone: Vec<f32> = (0..1600)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin() * 0.5)
            .collect();
        let f = fe.compute(&tone);
        let row = &f.values[..MEL_BANDS];
        let peak = (0..MEL_BANDS)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        // 1 kHz on the Kaldi mel scale between 125 and 7500 Hz lands near band 36.
        let mel = hertz_to_mel(1000.0);
        let edges = linspace(hertz_to_mel(125.0), hertz_to_mel(7500.0), MEL_BANDS + 2);
        let expected = (1..=MEL_BANDS)
            .min_by(|&a, &b| (edges[a] - mel).abs().total_cmp(&(edges[b] - mel).abs()))
            .unwrap()
            - 1;
        assert!(
            (peak as i64 - expected as i64).abs() <= 1,
            "peak {peak}, expected {expected}"
        );
    }

    #[test]
    fn short_input_gives_no_frames() {
        let mut fe = FrontEnd::new();
        let f = fe.compute(&[0.1; 399]);
        assert_eq!(f.frames, 0);
        assert!(f.values.is_empty());
    }
}
