//! Streaming sample-rate conversion to 16 kHz with rubato's FFT resampler (synchronous,
//! band-limited: the high-quality choice for fixed ratios), with its delay removed so output
//! sample n lines up with input time n / rate.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

/// Input frames per resampler call.
const CHUNK: usize = 1024;

/// Converts a mono stream from one rate to another, block by block.
pub struct StreamResampler {
    inner: Fft<f32>,
    pending: Vec<f32>,
    output: Vec<f32>,
    delay_left: usize,
    frames_in: u64,
    frames_out: u64,
    ratio: f64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("ratio", &self.ratio)
            .finish_non_exhaustive()
    }
}

impl StreamResampler {
    /// A mono resampler from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Result<Self, String> {
        let inner = Fft::<f32>::new(from as usize, to as usize, CHUNK, 1, FixedSync::Input)
            .map_err(|e| e.to_string())?;
        let delay_left = inner.output_delay();
        let output = vec![0.0; inner.output_frames_max()];
        Ok(Self {
            inner,
            pending: Vec::new(),
            output,
            delay_left,
            frames_in: 0,
            frames_out: 0,
            ratio: f64::from(to) / f64::from(from),
        })
    }

    /// Resamples `input`, appending what is ready to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.frames_in += input.len() as u64;
        self.pending.extend_from_slice(input);
        let mut consumed = 0;
        while self.pending.len() - consumed >= self.inner.input_frames_next() {
            let need = self.inner.input_frames_next();
            let produced = self.process(consumed, need, None);
            consumed += need;
            self.emit(produced, u64::MAX, out);
        }
        self.pending.drain(..consumed);
    }

    /// Flushes the resampler: appends the rest so that the output has exactly
    /// round(input length x ratio) samples.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let expected = (self.frames_in as f64 * self.ratio).round() as u64;
        let mut guard = 0;
        while self.frames_out < expected && guard < 64 {
            let available = self.pending.len();
            let produced = self.process(0, available, Some(available));
            self.pending.clear();
            self.emit(produced, expected, out);
            guard += 1;
        }
    }

    fn process(&mut self, offset: usize, frames: usize, partial: Option<usize>) -> usize {
        let needed_in = self.inner.input_frames_next();
        let needed_out = self.inner.output_frames_next();
        if self.output.len() < needed_out {
            self.output.resize(needed_out, 0.0);
        }
        // A partial final block is padded with silence by rubato; it still needs a full buffer.
        let mut padded;
        let input: &[f32] = if frames < needed_in {
            padded = vec![0.0f32; needed_in];
            padded[..frames].copy_from_slice(&self.pending[offset..offset + frames]);
            &padded
        } else {
            &self.pending[offset..offset + needed_in]
        };
        let (Ok(input), Ok(mut output)) = (
            InterleavedSlice::new(input, 1, needed_in),
            InterleavedSlice::new_mut(&mut self.output[..needed_out], 1, needed_out),
        ) else {
            return 0;
        };
        let indexing = Indexing {
            partial_len: partial,
            ..Indexing::default()
        };
        match self
            .inner
            .process_into_buffer(&input, &mut output, Some(&indexing))
        {
            Ok((_, produced)) => produced,
            Err(_) => 0,
        }
    }

    fn emit(&mut self, produced: usize, limit: u64, out: &mut Vec<f32>) {
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        let available = &self.output[skip..produced];
        let room = (limit - self.frames_out.min(limit)) as usize;
        let take = available.len().min(room);
        out.extend_from_slice(&available[..take]);
        self.frames_out += take as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    fn resample_in_blocks(input: &[f32], from: u32, block: usize) -> Vec<f32> {
        let mut r = StreamResampler::new(from, 16_000).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(block) {
            r.push(chunk, &mut out);
        }
        r.finish(&mut out);
        out
    }

    #[test]
    fn output_length_and_alignment_are_exact() {
        for from in [8_000, 22_050, 44_100, 48_000] {
            let input = tone(from, 440.0, 1.37);
            let out = resample_in_blocks(&input, from, 3_333);
            let expected = (input.len() as f64 * 16_000.0 / f64::from(from)).round() as usize;
            assert_eq!(out.len(), expected, "from {from}");
            // Compare with the ideal tone away from the edges: amplitude kept and the delay removed
            // to within half an output sample (FFT sizes with an odd input length leave a
            // fraction of a sample, about 20 us, which does not matter for speech).
            let best = (-10..=10)
                .map(|step| {
                    let shift = step as f32 * 0.05;
                    (2_000..out.len() - 2_000)
                        .map(|i| {
                            let t = (i as f32 + shift) / 16_000.0;
                            (out[i] - (2.0 * std::f32::consts::PI * 440.0 * t).sin() * 0.5).abs()
                        })
                        .fold(0.0f32, f32::max)
                })
                .fold(f32::MAX, f32::min);
            assert!(best < 0.01, "from {from}: max error {best}");
        }
    }

    #[test]
    fn block_size_does_not_change_the_result() {
        let input = tone(48_000, 1000.0, 0.8);
        let a = resample_in_blocks(&input, 48_000, 100);
        let b = resample_in_blocks(&input, 48_000, 50_000);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
    }

    #[test]
    fn frequencies_above_8khz_are_removed() {
        let input = tone(48_000, 12_000.0, 1.0);
        let out = resample_in_blocks(&input, 48_000, 4096);
        let rms = (out[1000..out.len() - 1000]
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            / (out.len() - 2000) as f32)
            .sqrt();
        assert!(rms < 0.01, "aliasing: rms {rms}");
    }
}
