//! Long recordings through a CTC model, streamed, with the Hugging Face pipeline's semantics
//! (`chunk_length_s=20, stride_length_s=2`, transformers' `models/lasr/`): 20 s windows that overlap by
//! 2 s on each side, the logits of the overlaps cut, the kept ids of all windows concatenated and
//! decoded once. Samples arrive in blocks; only one window of audio is held at a time.

use crate::ctc::{collapse, Emission};
use crate::error::Result;
use crate::formatter::format_dictation;
use crate::vocab::Vocabulary;
use crate::{Segment, Transcript};

/// A CTC acoustic model: 16 kHz samples in, the best token id of each logit frame out.
pub trait CtcModel {
    /// Best id per logit frame of one window of audio (empty if it is too short for the model).
    fn frame_ids(&mut self, samples: &[f32]) -> Result<Vec<u32>>;
    /// The model's vocabulary.
    fn vocabulary(&self) -> &Vocabulary;
    /// Audio samples per logit frame (MedASR: 4x subsampling of a 160-sample hop = 640).
    fn samples_per_frame(&self) -> usize;
}

/// Window geometry, in samples. HF rounds both to a multiple of `samples_per_frame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkGeometry {
    /// Window length.
    pub chunk: usize,
    /// Overlap on each side.
    pub stride: usize,
}

impl ChunkGeometry {
    /// MedASR's published long-audio setting: 20 s windows, 2 s stride, at 16 kHz, aligned to
    /// `samples_per_frame` as HF's `_align_to` does.
    pub fn medasr(samples_per_frame: usize) -> Self {
        let align = samples_per_frame.max(1) as f64;
        let aligned =
            |seconds: f64| ((seconds * 16_000.0 / align).round_ties_even() * align) as usize;
        Self {
            chunk: aligned(20.0),
            stride: aligned(2.0),
        }
    }

    fn step(&self) -> usize {
        self.chunk.saturating_sub(2 * self.stride).max(1)
    }
}

/// HF's `rescale_stride`: (samples, left, right) -> (logit frames, left, right), with Python's
/// round-half-to-even.
fn rescale_stride(
    samples: usize,
    left: usize,
    right: usize,
    samples_per_frame: usize,
) -> (usize, usize, usize) {
    let ratio = 1.0 / samples_per_frame as f64;
    let token_n = (samples as f64 * ratio).round_ties_even();
    let scale = |x: usize| (x as f64 / samples as f64 * token_n).round_ties_even() as usize;
    (token_n as usize, scale(left), scale(right))
}

/// Streaming long-form transcription state for one recording.
#[derive(Debug)]
pub struct LongFormCtc {
    geometry: ChunkGeometry,
    buffer: Vec<f32>,
    buffer_offset: usize,
    next_start: usize,
    total: usize,
    kept_ids: Vec<u32>,
    /// Index into `windows` of each kept id.
    kept_window: Vec<u32>,
    /// Kept sample range of each processed window.
    windows: Vec<(usize, usize)>,
}

impl LongFormCtc {
    /// Starts a recording.
    pub fn new(geometry: ChunkGeometry) -> Self {
        Self {
            geometry,
            buffer: Vec::new(),
            buffer_offset: 0,
            next_start: 0,
            total: 0,
            kept_ids: Vec::new(),
            kept_window: Vec::new(),
            windows: Vec::new(),
        }
    }

    /// Samples received so far.
    pub fn samples_seen(&self) -> usize {
        self.total
    }

    /// Ids kept so far (overlaps cut), in HF's pipeline order: what it concatenates and decodes.
    pub fn kept_ids(&self) -> &[u32] {
        &self.kept_ids
    }

    /// Adds 16 kHz mono samples; runs the model on every window that is now complete.
    pub fn push(&mut self, samples: &[f32], model: &mut dyn CtcModel) -> Result<()> {
        self.buffer.extend_from_slice(samples);
        self.total += samples.len();
        // A window is known not to be the last once a sample beyond its end has arrived.
        while self.total > self.next_start + self.geometry.chunk {
            self.process_window(false, model)?;
            self.next_start += self.geometry.step();
            let drop = self.next_start - self.buffer_offset;
            self.buffer.drain(..drop.min(self.buffer.len()));
            self.buffer_offset = self.next_start;
        }
        Ok(())
    }

    /// Processes the last window (once; later calls do nothing). Call when the recording ends.
    pub fn flush(&mut self, model: &mut dyn CtcModel) -> Result<()> {
        if self.total > self.next_start {
            // After `push`, the remaining window always reaches the end of the recording.
            self.process_window(true, model)?;
            self.next_start = self.total;
        }
        Ok(())
    }

    /// Processes what is left and returns the transcript of the whole recording.
    pub fn finish(mut self, model: &mut dyn CtcModel) -> Result<Transcript> {
        self.flush(model)?;
        self.transcript(model)
    }

    fn process_window(&mut self, is_last: bool, model: &mut dyn CtcModel) -> Result<()> {
        let start = self.next_start;
        let end = (start + self.geometry.chunk).min(self.total);
        let window = &self.buffer[start - self.buffer_offset..end - self.buffer_offset];
        let length = window.len();
        let left = if start == 0 { 0 } else { self.geometry.stride };
        let right = if is_last { 0 } else { self.geometry.stride };
        if length <= left {
            return Ok(()); // HF yields no window whose length does not exceed its left stride
        }
        let ids = model.frame_ids(window)?;
        let (token_n, keep_from, cut_right) =
            rescale_stride(length, left, right, model.samples_per_frame());
        let keep_to = token_n.saturating_sub(cut_right).min(ids.len());
        let window_index = self.windows.len() as u32;
        self.windows.push((start + left, end - right));
        if keep_from < keep_to {
            self.kept_ids.extend_from_slice(&ids[keep_from..keep_to]);
            self.kept_window
                .extend(std::iter::repeat_n(window_index, keep_to - keep_from));
        }
        Ok(())
    }

    fn transcript(&self, model: &dyn CtcModel) -> Result<Transcript> {
        let vocab = model.vocabulary();
        let positions: Vec<usize> = (0..self.kept_ids.len()).collect();
        let emissions = collapse(&self.kept_ids, &positions, vocab.blank());
        let all_ids: Vec<u32> = emissions.iter().map(|e| e.id).collect();
        let raw_text = vocab.decode(&all_ids)?;
        let mut segments = Vec::new();
        for (index, &(start, end)) in self.windows.iter().enumerate() {
            let ids: Vec<u32> = emissions
                .iter()
                .filter(|e: &&Emission| self.kept_window[e.frame] as usize == index)
                .map(|e| e.id)
                .collect();
            let raw = vocab.decode(&ids)?;
            if raw.trim().is_empty() {
                continue;
            }
            segments.push(Segment {
                speaker: None,
                start_s: start as f64 / 16_000.0,
                end_s: end as f64 / 16_000.0,
                text: format_dictation(&raw),
                raw_text: raw,
            });
        }
        Ok(Transcript {
            text: format_dictation(&raw_text),
            raw_text,
            segments,
            duration_s: self.total as f64 / 16_000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_hf_for_medasr() {
        assert_eq!(
            ChunkGeometry::medasr(640),
            ChunkGeometry {
                chunk: 320_000,
                stride: 32_000
            }
        );
    }

    #[test]
    fn rescale_matches_python() {
        // Values computed with transformers' rescale_stride.
        assert_eq!(rescale_stride(320_000, 0, 32_000, 640), (500, 0, 50));
        assert_eq!(rescale_stride(320_000, 32_000, 32_000, 640), (500, 50, 50));
        assert_eq!(rescale_stride(91_360, 32_000, 0, 640), (143, 50, 0));
        // Round half to even: 1.5 -> 2, 2.5 -> 2.
        assert_eq!(rescale_stride(960, 0, 0, 640).0, 2);
        assert_eq!(rescale_stride(1600, 0, 0, 640).0, 2);
    }
}
