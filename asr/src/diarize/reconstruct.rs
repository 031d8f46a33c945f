//! From windows' local speakers and their clusters to the recording's speaker turns, as
//! pyannote's pipeline and sherpa-onnx do it: each window's frames vote for the global speakers
//! its local speakers were clustered into; in each frame the speakers with the most votes win,
//! as many as the windows counted there (so two speakers at once stay two); frames become turns,
//! short gaps are bridged and very short turns dropped.

use super::segmentation::{LocalSpeaker, Segmentation};
use super::{FRAME_SHIFT, FRAME_SIZE, SAMPLE_RATE, WINDOW, WINDOW_SHIFT};

/// One speaker talking from `start_s` to `end_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerTurn {
    /// Start, seconds.
    pub start_s: f64,
    /// End, seconds.
    pub end_s: f64,
    /// The speaker, numbered from 0 by first appearance in the clustering.
    pub speaker: usize,
}

/// How frames become turns.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOptions {
    /// Turns of one speaker closer than this (seconds) are joined.
    pub min_gap_s: f64,
    /// Turns no longer than this (seconds) are dropped.
    pub min_turn_s: f64,
}

impl Default for TurnOptions {
    /// sherpa-onnx's defaults.
    fn default() -> Self {
        Self {
            min_gap_s: 0.5,
            min_turn_s: 0.3,
        }
    }
}

/// The speaker turns, ordered by start time. `labels[i]` is the global speaker of `locals[i]`.
pub fn reconstruct(
    segmentation: &Segmentation,
    locals: &[LocalSpeaker],
    labels: &[usize],
    options: &TurnOptions,
) -> Vec<SpeakerTurn> {
    let speakers = labels.iter().max().map_or(0, |&m| m + 1);
    let frames = frames_with_audio(segmentation);
    if speakers == 0 || frames == 0 {
        return Vec::new();
    }
    // Votes: frames x speakers.
    let mut votes = vec![0u16; frames * speakers];
    for (local, &label) in locals.iter().zip(labels) {
        let Some(window) = segmentation.windows.get(local.window) else {
            continue;
        };
        let offset = segmentation.window_offset(local.window);
        let bit = 1u8 << local.speaker;
        for (frame, &bits) in window.iter().enumerate() {
            if bits & bit != 0 && offset + frame < frames {
                let slot = &mut votes[(offset + frame) * speakers + label];
                *slot = slot.saturating_add(1);
            }
        }
    }
    let count = segmentation.speakers_per_frame();
    let mut active = vec![false; frames * speakers];
    let mut order: Vec<usize> = Vec::with_capacity(speakers);
    for frame in 0..frames {
        let k = usize::from(count.get(frame).copied().unwrap_or(0)).min(speakers);
        if k == 0 {
            continue;
        }
        let row = &votes[frame * speakers..(frame + 1) * speakers];
        order.clear();
        order.extend(0..speakers);
        // Most votes first; among equals the lower speaker number, so the result is stable.
        order.sort_by(|&a, &b| row[b].cmp(&row[a]).then(a.cmp(&b)));
        for &speaker in order.iter().take(k) {
            active[frame * speakers + speaker] = true;
        }
    }
    let frame_s = FRAME_SHIFT as f64 / SAMPLE_RATE as f64;
    let centre_s = 0.5 * FRAME_SIZE as f64 / SAMPLE_RATE as f64;
    let time = |frame: usize| frame as f64 * frame_s + centre_s;
    let mut turns = Vec::new();
    for speaker in 0..speakers {
        let mut own: Vec<SpeakerTurn> = Vec::new();
        let mut start = None;
        for frame in 0..frames {
            let on = active[frame * speakers + speaker];
            match (on, start) {
                (true, None) => start = Some(frame),
                (false, Some(s)) => {
                    own.push(SpeakerTurn {
                        start_s: time(s),
                        end_s: time(frame),
                        speaker,
                    });
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            own.push(SpeakerTurn {
                start_s: time(s),
                end_s: time(frames - 1),
                speaker,
            });
        }
        let mut merged: Vec<SpeakerTurn> = Vec::new();
        for turn in own {
            match merged.last_mut() {
                Some(last) if turn.start_s - last.end_s < options.min_gap_s => {
                    last.end_s = turn.end_s;
                }
                _ => merged.push(turn),
            }
        }
        turns.extend(
            merged
                .into_iter()
                .filter(|t| t.end_s - t.start_s > options.min_turn_s),
        );
    }
    turns.sort_by(|a, b| {
        a.start_s
            .total_cmp(&b.start_s)
            .then(a.speaker.cmp(&b.speaker))
    });
    // Speakers numbered by their first turn (S1 speaks first), whatever the clustering called
    // them, and without gaps where a cluster kept no turn.
    let mut order: Vec<usize> = Vec::new();
    for turn in &mut turns {
        turn.speaker = match order.iter().position(|&s| s == turn.speaker) {
            Some(number) => number,
            None => {
                order.push(turn.speaker);
                order.len() - 1
            }
        };
    }
    turns
}

/// Frames that cover audio: a padded last window's tail is silence, not the recording's.
fn frames_with_audio(segmentation: &Segmentation) -> usize {
    let frames = segmentation.frames();
    let samples = segmentation.samples;
    let padded =
        samples > WINDOW && !(samples - WINDOW).is_multiple_of(WINDOW_SHIFT) || samples < WINDOW;
    if padded {
        frames.min(samples.div_ceil(FRAME_SHIFT))
    } else {
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twelve windows over 21 s: voice A in 0-8 s, B in 9-16 s, both in 16-17 s, A alone after.
    fn conversation() -> (Segmentation, Vec<LocalSpeaker>, Vec<usize>) {
        let samples = 21 * SAMPLE_RATE;
        let starts = super::super::segmentation::window_starts(samples);
        let mut windows = Vec::new();
        for &start in &starts {
            let frames: Vec<u8> = (0..589)
                .map(|f| {
                    let t = (start + f * WINDOW / 589) as f64 / SAMPLE_RATE as f64;
                    // Each window calls A and B by its own local numbers: A is its speaker 2
                    // and B its speaker 1 when the window starts on an odd second.
                    let (a, b) = if (start / WINDOW_SHIFT) % 2 == 1 {
                        (0b010, 0b001)
                    } else {
                        (0b001, 0b010)
                    };
                    let mut bits = 0;
                    if !(8.0..16.0).contains(&t) {
                        bits |= a;
                    }
                    if (9.0..17.0).contains(&t) {
                        bits |= b;
                    }
                    if t >= 21.0 {
                        bits = 0;
                    }
                    bits
                })
                .collect();
            windows.push(frames);
        }
        let segmentation = Segmentation { windows, samples };
        let locals = segmentation.local_speakers();
        // The clustering's answer: A or B by the window's parity, as above.
        let labels = locals
            .iter()
            .map(|l| {
                let odd = l.window % 2 == 1;
                match (odd, l.speaker) {
                    (false, 0) | (true, 1) => 0,
                    _ => 1,
                }
            })
            .collect();
        (segmentation, locals, labels)
    }

    #[test]
    fn turns_follow_the_votes_with_overlap() {
        let (segmentation, locals, labels) = conversation();
        let turns = reconstruct(&segmentation, &locals, &labels, &TurnOptions::default());
        let close = |a: f64, b: f64| (a - b).abs() < 0.1;
        let summary: Vec<(usize, f64, f64)> = turns
            .iter()
            .map(|t| (t.speaker, t.start_s, t.end_s))
            .collect();
        assert_eq!(turns.len(), 3, "{summary:?}");
        assert!(
            turns[0].speaker == 0 && close(turns[0].start_s, 0.03) && close(turns[0].end_s, 8.0),
            "{summary:?}"
        );
        assert!(
            turns[1].speaker == 1 && close(turns[1].start_s, 9.0) && close(turns[1].end_s, 17.0),
            "{summary:?}"
        );
        assert!(
            turns[2].speaker == 0 && close(turns[2].start_s, 16.0) && close(turns[2].end_s, 21.0),
            "{summary:?}"
        );
    }

    #[test]
    fn speakers_are_numbered_by_their_first_turn() {
        let (segmentation, locals, labels) = conversation();
        // The clustering named the first voice 1 and the second 0 (and left 2 unused).
        let swapped: Vec<usize> = labels.iter().map(|&l| if l == 0 { 1 } else { 0 }).collect();
        let turns = reconstruct(&segmentation, &locals, &swapped, &TurnOptions::default());
        let speakers: Vec<usize> = turns.iter().map(|t| t.speaker).collect();
        assert_eq!(speakers, [0, 1, 0]);
        let gapped: Vec<usize> = labels.iter().map(|&l| if l == 0 { 2 } else { 5 }).collect();
        let turns = reconstruct(&segmentation, &locals, &gapped, &TurnOptions::default());
        assert_eq!(
            turns.iter().map(|t| t.speaker).collect::<Vec<_>>(),
            [0, 1, 0]
        );
    }

    #[test]
    fn short_gaps_join_and_short_turns_go() {
        let (segmentation, locals, labels) = conversation();
        let options = TurnOptions {
            min_gap_s: 1.5,
            min_turn_s: 0.3,
        };
        let turns = reconstruct(&segmentation, &locals, &labels, &options);
        // B's one turn; A's two turns, 8 s apart, stay two.
        assert_eq!(turns.len(), 3);
        let long = TurnOptions {
            min_gap_s: 0.5,
            min_turn_s: 7.5,
        };
        let turns = reconstruct(&segmentation, &locals, &labels, &long);
        assert!(turns.iter().all(|t| t.end_s - t.start_s > 7.5));
        assert_eq!(turns.len(), 2);
    }

    #[test]
    fn nothing_in_nothing_out() {
        let empty = Segmentation {
            windows: vec![vec![0; 589]],
            samples: 100,
        };
        assert!(reconstruct(&empty, &[], &[], &TurnOptions::default()).is_empty());
    }
}
