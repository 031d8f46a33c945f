//! Diarization error rate, as NIST's md-eval and pyannote.metrics count it: missed speech, false
//! alarms and speaker confusion over the reference's speech time, with the hypothesis' speakers
//! mapped to the reference's one-to-one so that they overlap most, and a collar around every
//! reference boundary left out. Counted on a 10 ms grid.

use super::SpeakerTurn;

/// Grid step, seconds.
const STEP_S: f64 = 0.01;

/// The parts of a diarization error rate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DiarizationError {
    /// Reference speech, speaker-seconds, outside the collars.
    pub reference_s: f64,
    /// Reference speech nobody was heard in.
    pub missed_s: f64,
    /// Speech heard where the reference has none (or fewer speakers).
    pub false_alarm_s: f64,
    /// Speech given to the wrong speaker.
    pub confusion_s: f64,
}

impl DiarizationError {
    /// (missed + false alarm + confusion) / reference; 0 when there is no reference speech.
    pub fn rate(&self) -> f64 {
        if self.reference_s <= 0.0 {
            return 0.0;
        }
        (self.missed_s + self.false_alarm_s + self.confusion_s) / self.reference_s
    }
}

fn speakers(turns: &[SpeakerTurn]) -> usize {
    turns.iter().map(|t| t.speaker + 1).max().unwrap_or(0)
}

/// Bits of the speakers talking in each grid cell.
fn grid(turns: &[SpeakerTurn], cells: usize) -> Vec<u64> {
    let mut out = vec![0u64; cells];
    for turn in turns.iter().filter(|t| t.speaker < 64) {
        let first = (turn.start_s.max(0.0) / STEP_S).round() as usize;
        let last = ((turn.end_s.max(0.0) / STEP_S).round() as usize).min(cells);
        for cell in out.iter_mut().take(last).skip(first) {
            *cell |= 1 << turn.speaker;
        }
    }
    out
}

/// Every one-to-one mapping of `from` speakers onto `to` slots (a slot index >= `to` means
/// unmapped), by recursion: fine for the few speakers of a consultation or a conference.
fn mappings(from: usize, to: usize) -> Vec<Vec<usize>> {
    fn extend(done: &mut Vec<usize>, from: usize, to: usize, out: &mut Vec<Vec<usize>>) {
        if done.len() == from {
            out.push(done.clone());
            return;
        }
        for target in 0..to.max(from) {
            if target >= to || !done.contains(&target) {
                // Unmapped slots may repeat: `to + i` keeps them distinct without meaning.
                let target = if target >= to {
                    to + done.len()
                } else {
                    target
                };
                done.push(target);
                extend(done, from, to, out);
                done.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(&mut Vec::new(), from, to, &mut out);
    out.sort();
    out.dedup();
    out
}

/// The error of `hypothesis` against `reference`, leaving out `collar_s` either side of every
/// reference turn's start and end.
pub fn diarization_error(
    reference: &[SpeakerTurn],
    hypothesis: &[SpeakerTurn],
    collar_s: f64,
) -> DiarizationError {
    let end_s = reference
        .iter()
        .chain(hypothesis)
        .map(|t| t.end_s)
        .fold(0.0, f64::max);
    let cells = (end_s / STEP_S).ceil() as usize + 1;
    let reference_grid = grid(reference, cells);
    let hypothesis_grid = grid(hypothesis, cells);
    let mut scored = vec![true; cells];
    for turn in reference {
        for edge in [turn.start_s, turn.end_s] {
            let first = ((edge - collar_s).max(0.0) / STEP_S).round() as usize;
            let last = (((edge + collar_s) / STEP_S).round() as usize).min(cells);
            scored[first.min(cells)..last].fill(false);
        }
    }
    let (n_ref, n_hyp) = (speakers(reference), speakers(hypothesis));
    let mut best: Option<DiarizationError> = None;
    for mapping in mappings(n_hyp.min(8), n_ref.min(8)) {
        let mut error = DiarizationError::default();
        for cell in 0..cells {
            if !scored[cell] {
                continue;
            }
            let r = reference_grid[cell];
            let h = hypothesis_grid[cell];
            let mut mapped = 0u64;
            for (speaker, &target) in mapping.iter().enumerate() {
                if h & (1 << speaker) != 0 && target < 64 {
                    mapped |= 1 << target;
                }
            }
            let (nr, nh) = (r.count_ones() as f64, h.count_ones() as f64);
            let correct = (r & mapped).count_ones() as f64;
            error.reference_s += nr * STEP_S;
            error.missed_s += (nr - nh).max(0.0) * STEP_S;
            error.false_alarm_s += (nh - nr).max(0.0) * STEP_S;
            error.confusion_s += (nr.min(nh) - correct) * STEP_S;
        }
        if best.is_none_or(|b| error.rate() < b.rate()) {
            best = Some(error);
        }
    }
    best.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(start_s: f64, end_s: f64, speaker: usize) -> SpeakerTurn {
        SpeakerTurn {
            start_s,
            end_s,
            speaker,
        }
    }

    #[test]
    fn a_perfect_answer_under_other_names_scores_zero() {
        let reference = [turn(0.0, 5.0, 0), turn(5.0, 9.0, 1), turn(9.0, 12.0, 2)];
        let renamed = [turn(0.0, 5.0, 2), turn(5.0, 9.0, 0), turn(9.0, 12.0, 1)];
        let error = diarization_error(&reference, &renamed, 0.25);
        assert!(error.rate().abs() < 1e-9, "{error:?}");
        // 12 s less the collars: a quarter second at either end, half a second at each change.
        assert!((error.reference_s - 10.5).abs() < 0.05, "{error:?}");
    }

    #[test]
    fn misses_false_alarms_and_confusion_are_counted() {
        let reference = [turn(0.0, 10.0, 0), turn(10.0, 20.0, 1)];
        // The second speaker's first 4 s given to the first; 2 s of silence called speech; the
        // last 2 s missed.
        let hypothesis = [turn(0.0, 14.0, 0), turn(14.0, 18.0, 1), turn(21.0, 23.0, 1)];
        let error = diarization_error(&reference, &hypothesis, 0.0);
        assert!((error.confusion_s - 4.0).abs() < 0.05, "{error:?}");
        assert!((error.missed_s - 2.0).abs() < 0.05, "{error:?}");
        assert!((error.false_alarm_s - 2.0).abs() < 0.05, "{error:?}");
        assert!((error.rate() - 0.4).abs() < 0.01, "{error:?}");
        // One speaker for everything: half the speech confused.
        let lumped = [turn(0.0, 20.0, 0)];
        assert!((diarization_error(&reference, &lumped, 0.0).rate() - 0.5).abs() < 0.01);
        // More hypothesis speakers than reference ones.
        let split = [turn(0.0, 5.0, 0), turn(5.0, 10.0, 1), turn(10.0, 20.0, 2)];
        assert!((diarization_error(&reference, &split, 0.0).rate() - 0.25).abs() < 0.01);
    }

    #[test]
    fn the_collar_forgives_boundaries() {
        let reference = [turn(0.0, 10.0, 0), turn(10.0, 20.0, 1)];
        let late = [turn(0.0, 10.2, 0), turn(10.2, 20.0, 1)];
        assert!(diarization_error(&reference, &late, 0.25).rate() < 1e-9);
        assert!(diarization_error(&reference, &late, 0.0).rate() > 0.005);
    }
}
