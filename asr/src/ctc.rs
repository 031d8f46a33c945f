//! Greedy CTC decoding: best id per frame, repeats collapsed, blanks dropped.

/// A token emitted by greedy CTC, with the logit frame where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emission {
    /// Token id.
    pub id: u32,
    /// Index of the first frame of its run, in the caller's frame numbering.
    pub frame: usize,
}

/// Index of the largest value of each row of a `[frames, vocab]` row-major matrix. Ties go to
/// the lowest index, as `torch.argmax` does.
pub fn argmax_rows(logits: &[f32], vocab: usize) -> Vec<u32> {
    if vocab == 0 {
        return Vec::new();
    }
    logits
        .chunks_exact(vocab)
        .map(|row| {
            let mut best = 0usize;
            for (i, &v) in row.iter().enumerate().skip(1) {
                if v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// Collapses runs of equal ids and drops `blank`, keeping where each token starts. `frames[i]`
/// is the frame number of `ids[i]` (frames of a long recording are not contiguous across chunks).
pub fn collapse(ids: &[u32], frames: &[usize], blank: u32) -> Vec<Emission> {
    let mut out = Vec::new();
    let mut previous: Option<u32> = None;
    for (&id, &frame) in ids.iter().zip(frames) {
        if previous != Some(id) && id != blank {
            out.push(Emission { id, frame });
        }
        previous = Some(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_first_of_ties() {
        assert_eq!(argmax_rows(&[0.0, 1.0, 1.0, 5.0, 0.0, 0.0], 3), vec![1, 0]);
        assert!(argmax_rows(&[1.0], 0).is_empty());
    }

    #[test]
    fn collapse_merges_runs_and_drops_blank() {
        let ids = [0, 5, 5, 0, 5, 7, 7, 7, 0, 0];
        let frames: Vec<usize> = (0..ids.len()).collect();
        let got: Vec<(u32, usize)> = collapse(&ids, &frames, 0)
            .iter()
            .map(|e| (e.id, e.frame))
            .collect();
        assert_eq!(got, vec![(5, 1), (5, 4), (7, 5)]);
    }

    #[test]
    fn a_run_across_a_gap_is_still_one_token() {
        // HF concatenates the kept ids of all chunks, then groups: a run spanning a chunk
        // boundary is one token.
        let got = collapse(&[3, 3, 3], &[10, 11, 50], 0);
        assert_eq!(got, vec![Emission { id: 3, frame: 10 }]);
    }
}
