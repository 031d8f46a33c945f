//! Cutting a recording into utterances with a voice activity detector: speech starts when the
//! speech probability reaches `threshold` and ends after `min_silence` below `threshold - 0.15`
//! (hysteresis, as Silero's own iterator does); each utterance gets `pad` of audio before and
//! after; utterances with less than `min_speech` of speech are dropped; one that reaches the
//! model's maximum length is split at its quietest point. Audio is kept only for the utterance in
//! progress, so memory does not grow with the recording.

use medscribe_asr::vad::{SileroVad, CHUNK_SAMPLES};

use crate::error::Result;

/// Speech probability of consecutive 32 ms chunks of 16 kHz audio.
pub trait SpeechProbability {
    /// Probability that the next [`CHUNK_SAMPLES`] samples hold speech.
    fn probability(&mut self, chunk: &[f32]) -> Result<f32>;
    /// Starts a new recording.
    fn reset(&mut self);
}

impl SpeechProbability for SileroVad {
    fn probability(&mut self, chunk: &[f32]) -> Result<f32> {
        Ok(SileroVad::probability(self, chunk)?)
    }

    fn reset(&mut self) {
        SileroVad::reset(self);
    }
}

/// Segmentation settings, in 16 kHz samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmenterConfig {
    /// Probability at which speech starts.
    pub threshold: f32,
    /// Speech shorter than this (in chunks above `threshold`) is dropped.
    pub min_speech: usize,
    /// Silence that ends an utterance.
    pub min_silence: usize,
    /// Audio kept before and after each utterance.
    pub pad: usize,
    /// Longest utterance; longer speech is split at its quietest chunk.
    pub max_segment: usize,
}

impl SegmenterConfig {
    /// Defaults for transcribing recordings: threshold 0.5, 250 ms minimum speech, 250 ms
    /// padding, and 1.5 s of silence to end an utterance. Pauses between sentences do not end
    /// one: models transcribe better with context, and each utterance costs a fixed start-up
    /// (Moonshine's first decoder steps). Speech that reaches `max_segment` is split at its
    /// quietest point, which is such a pause.
    pub fn for_max_segment(max_segment: usize) -> Self {
        Self {
            threshold: 0.5,
            min_speech: 4_000,
            min_silence: 24_000,
            pad: 4_000,
            max_segment: max_segment.max(16_000),
        }
    }
}

/// One utterance: its place in the recording (samples) and its audio.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechSegment {
    /// First sample.
    pub start: usize,
    /// One past the last sample.
    pub end: usize,
    /// The audio of `start..end`.
    pub samples: Vec<f32>,
}

/// The utterance still being spoken, for partial transcripts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenUtterance<'a> {
    /// First sample.
    pub start: usize,
    /// Its audio so far.
    pub samples: &'a [f32],
    /// A pause has begun: these samples are what the utterance will be if nobody speaks again.
    pub settled: bool,
    /// A pause has begun (the speaker may have finished), padding or not.
    pub pausing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Silence,
    Speech {
        start: usize,
        silence_since: Option<usize>,
        speech_chunks: usize,
    },
}

/// Streaming segmenter over a [`SpeechProbability`] model.
#[derive(Debug)]
pub struct Segmenter<V> {
    vad: V,
    config: SegmenterConfig,
    buffer: Vec<f32>,
    buffer_start: usize,
    processed: usize,
    state: State,
    /// (chunk start, probability) of the utterance in progress, for splitting.
    chunks: Vec<(usize, f32)>,
    last_end: usize,
}

impl<V: SpeechProbability> Segmenter<V> {
    /// A segmenter for a new recording.
    pub fn new(mut vad: V, config: SegmenterConfig) -> Self {
        vad.reset();
        Self {
            vad,
            config,
            buffer: Vec::new(),
            buffer_start: 0,
            processed: 0,
            state: State::Silence,
            chunks: Vec::new(),
            last_end: 0,
        }
    }

    /// Gives the VAD back (to reuse it for the next recording).
    pub fn into_vad(self) -> V {
        self.vad
    }

    fn buffer_end(&self) -> usize {
        self.buffer_start + self.buffer.len()
    }

    /// Adds 16 kHz samples; returns the utterances that ended.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<SpeechSegment>> {
        self.buffer.extend_from_slice(samples);
        let mut done = Vec::new();
        while self.processed + CHUNK_SAMPLES <= self.buffer_end() {
            let from = self.processed - self.buffer_start;
            let probability = self
                .vad
                .probability(&self.buffer[from..from + CHUNK_SAMPLES])?;
            self.step(probability, &mut done);
            self.processed += CHUNK_SAMPLES;
        }
        self.trim();
        Ok(done)
    }

    /// The utterance in progress, once it has enough speech to be kept: from its start to the
    /// newest audio, or, when a pause has begun and its padding has arrived, exactly the audio
    /// the utterance will have if the pause lasts (`settled`).
    pub fn open_utterance(&self) -> Option<OpenUtterance<'_>> {
        let State::Speech {
            start,
            silence_since,
            speech_chunks,
        } = self.state
        else {
            return None;
        };
        if speech_chunks * CHUNK_SAMPLES < self.config.min_speech {
            return None;
        }
        let (end, settled) = match silence_since {
            Some(since) if since + self.config.pad <= self.processed => {
                (since + self.config.pad, true)
            }
            _ => (self.processed, false),
        };
        let from = start.checked_sub(self.buffer_start)?;
        let to = end.checked_sub(self.buffer_start)?.min(self.buffer.len());
        (from < to).then(|| OpenUtterance {
            start,
            samples: &self.buffer[from..to],
            settled,
            pausing: silence_since.is_some(),
        })
    }

    /// Ends the recording; returns the last utterance, if one was in progress.
    pub fn finish(&mut self) -> Result<Vec<SpeechSegment>> {
        let mut done = Vec::new();
        if self.processed < self.buffer_end() {
            let from = self.processed - self.buffer_start;
            let probability = self.vad.probability(&self.buffer[from..])?;
            self.step(probability, &mut done);
            self.processed = self.buffer_end();
        }
        if let State::Speech {
            start,
            speech_chunks,
            ..
        } = self.state
        {
            self.emit(start, self.buffer_end(), speech_chunks, &mut done);
            self.state = State::Silence;
        }
        Ok(done)
    }

    fn step(&mut self, probability: f32, done: &mut Vec<SpeechSegment>) {
        let chunk_start = self.processed;
        let chunk_end = (chunk_start + CHUNK_SAMPLES).min(self.buffer_end());
        let speech = probability >= self.config.threshold;
        let quiet = probability < self.config.threshold - 0.15;
        match self.state {
            State::Silence => {
                if speech {
                    let start = chunk_start
                        .saturating_sub(self.config.pad)
                        .max(self.last_end)
                        .max(self.buffer_start);
                    self.chunks.clear();
                    self.chunks.push((chunk_start, probability));
                    self.state = State::Speech {
                        start,
                        silence_since: None,
                        speech_chunks: 1,
                    };
                }
            }
            State::Speech {
                start,
                mut silence_since,
                mut speech_chunks,
            } => {
                self.chunks.push((chunk_start, probability));
                if speech {
                    speech_chunks += 1;
                    silence_since = None;
                } else if quiet && silence_since.is_none() {
                    silence_since = Some(chunk_start);
                }
                if let Some(since) =
                    silence_since.filter(|&since| chunk_end - since >= self.config.min_silence)
                {
                    let end = (since + self.config.pad).min(chunk_end);
                    self.emit(start, end, speech_chunks, done);
                    self.state = State::Silence;
                } else if chunk_end - start >= self.config.max_segment {
                    let split = self.quietest_point(start, chunk_end);
                    let before = self
                        .chunks
                        .iter()
                        .filter(|(s, p)| *s < split && *p >= self.config.threshold)
                        .count();
                    self.emit(start, split, before, done);
                    self.chunks.retain(|(s, _)| *s >= split);
                    self.state = State::Speech {
                        start: split,
                        silence_since: None,
                        speech_chunks: speech_chunks.saturating_sub(before),
                    };
                } else {
                    self.state = State::Speech {
                        start,
                        silence_since,
                        speech_chunks,
                    };
                }
            }
        }
    }

    /// The start of the least speech-like chunk in the second half of `start..end`.
    fn quietest_point(&self, start: usize, end: usize) -> usize {
        let half = start + (end - start) / 2;
        self.chunks
            .iter()
            .filter(|(s, _)| *s >= half && *s > start)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(end, |(s, _)| *s)
    }

    fn emit(
        &mut self,
        start: usize,
        end: usize,
        speech_chunks: usize,
        done: &mut Vec<SpeechSegment>,
    ) {
        let end = end.min(self.buffer_end());
        if end <= start || speech_chunks * CHUNK_SAMPLES < self.config.min_speech {
            return;
        }
        let from = start - self.buffer_start;
        let to = end - self.buffer_start;
        done.push(SpeechSegment {
            start,
            end,
            samples: self.buffer[from..to].to_vec(),
        });
        self.last_end = end;
    }

    /// Drops audio no utterance can still need.
    fn trim(&mut self) {
        let keep_from = match self.state {
            State::Speech { start, .. } => start,
            State::Silence => self
                .processed
                .saturating_sub(self.config.pad)
                .max(self.last_end),
        };
        if keep_from > self.buffer_start {
            let drop = (keep_from - self.buffer_start).min(self.buffer.len());
            self.buffer.drain(..drop);
            self.buffer_start += drop;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake VAD: speech wherever the chunk's mean absolute value exceeds 0.05.
    struct Loudness;

    impl SpeechProbability for Loudness {
        fn probability(&mut self, chunk: &[f32]) -> Result<f32> {
            let mean = chunk.iter().map(|x| x.abs()).sum::<f32>() / chunk.len().max(1) as f32;
            Ok(if mean > 0.05 { 0.9 } else { 0.05 })
        }
        fn reset(&mut self) {}
    }

    #[test]
    fn open_utterance_grows_then_settles_on_exactly_the_final_audio() {
        let mut segmenter = Segmenter::new(Loudness, config());
        assert!(segmenter
            .push(&signal(&[(false, 1.0), (true, 0.1)]))
            .unwrap()
            .is_empty());
        assert!(
            segmenter.open_utterance().is_none(),
            "too little speech to keep yet"
        );
        segmenter.push(&signal(&[(true, 1.0)])).unwrap();
        let open = segmenter.open_utterance().unwrap();
        assert!(!open.settled && !open.pausing);
        let (start, grown) = (open.start, open.samples.len());
        segmenter.push(&signal(&[(false, 0.4)])).unwrap();
        let open = segmenter.open_utterance().unwrap();
        assert!(open.settled && open.start == start && open.samples.len() > grown);
        let settled = open.samples.to_vec();
        let done = segmenter.push(&signal(&[(false, 2.0)])).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].start, &done[0].samples), (start, &settled));
        assert!(segmenter.open_utterance().is_none());
    }

    fn config() -> SegmenterConfig {
        SegmenterConfig::for_max_segment(30 * 16_000)
    }

    /// Silence and speech (value 0.5) in the given seconds.
    fn signal(parts: &[(bool, f32)]) -> Vec<f32> {
        parts
            .iter()
            .flat_map(|&(speech, seconds)| {
                std::iter::repeat_n(
                    if speech { 0.5 } else { 0.0 },
                    (seconds * 16_000.0) as usize,
                )
            })
            .collect()
    }

    fn run(audio: &[f32], block: usize, config: SegmenterConfig) -> Vec<SpeechSegment> {
        let mut segmenter = Segmenter::new(Loudness, config);
        let mut out = Vec::new();
        for chunk in audio.chunks(block) {
            out.extend(segmenter.push(chunk).unwrap());
        }
        out.extend(segmenter.finish().unwrap());
        out
    }

    #[test]
    fn silence_gives_no_segments() {
        assert!(run(&vec![0.0; 160_000], 1_000, config()).is_empty());
        assert!(run(&[], 1_000, config()).is_empty());
        assert!(
            run(&vec![0.5; 800], 1_000, config()).is_empty(),
            "50 ms is below the minimum speech"
        );
    }

    #[test]
    fn two_utterances_with_padding_and_exact_audio() {
        let audio = signal(&[
            (false, 1.0),
            (true, 2.0),
            (false, 2.0),
            (true, 1.5),
            (false, 2.0),
        ]);
        let segments = run(&audio, 777, config());
        assert_eq!(
            segments.len(),
            2,
            "{:?}",
            segments
                .iter()
                .map(|s| (s.start, s.end))
                .collect::<Vec<_>>()
        );
        let (a, b) = (&segments[0], &segments[1]);
        // Speech 16000..48000 with 4000 samples of padding, to chunk precision.
        assert!(a.start <= 12_000 && a.start >= 11_000, "{}", a.start);
        assert!(a.end >= 52_000 && a.end <= 53_000, "{}", a.end);
        assert!(b.start >= a.end);
        assert_eq!(a.samples, audio[a.start..a.end].to_vec());
        assert_eq!(b.samples, audio[b.start..b.end].to_vec());
    }

    #[test]
    fn pauses_between_sentences_do_not_split_an_utterance() {
        let audio = signal(&[
            (true, 1.0),
            (false, 0.3),
            (true, 1.0),
            (false, 1.0),
            (true, 1.0),
        ]);
        assert_eq!(run(&audio, 4_096, config()).len(), 1);
    }

    #[test]
    fn block_size_does_not_change_segments() {
        let audio = signal(&[
            (false, 0.4),
            (true, 1.2),
            (false, 1.9),
            (true, 0.7),
            (false, 0.2),
        ]);
        let reference: Vec<(usize, usize)> = run(&audio, 16_000, config())
            .iter()
            .map(|s| (s.start, s.end))
            .collect();
        for block in [1, 100, 511, 512, 513, 40_000] {
            let got: Vec<(usize, usize)> = run(&audio, block, config())
                .iter()
                .map(|s| (s.start, s.end))
                .collect();
            assert_eq!(got, reference, "block {block}");
        }
    }

    #[test]
    fn long_speech_is_split_at_the_quietest_point_within_the_limit() {
        // 25 s of speech with one softer stretch at 14-14.2 s, limit 20 s.
        let mut audio = signal(&[(true, 25.0)]);
        for x in &mut audio[14 * 16_000..(14 * 16_000 + 3_200)] {
            *x = 0.06; // still speech, but quieter
        }
        let limit = 20 * 16_000;
        let mut cfg = SegmenterConfig::for_max_segment(limit);
        cfg.threshold = 0.5;
        let segments = run(&audio, 1_600, cfg);
        assert!(segments.len() >= 2);
        for s in &segments {
            assert!(
                s.end - s.start <= limit,
                "segment of {} samples",
                s.end - s.start
            );
        }
        for pair in segments.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "split segments are contiguous");
        }
        assert_eq!(segments.first().unwrap().start, 0);
        assert_eq!(segments.last().unwrap().end, audio.len());
    }

    #[test]
    fn memory_is_bounded_by_one_segment() {
        let mut segmenter = Segmenter::new(Loudness, config());
        let speech_then_silence = signal(&[(true, 2.0), (false, 8.0)]);
        for _ in 0..30 {
            segmenter.push(&speech_then_silence).unwrap();
        }
        assert!(
            segmenter.buffer.len() < 40 * 16_000,
            "{}",
            segmenter.buffer.len()
        );
    }
}
