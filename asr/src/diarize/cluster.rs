//! Clustering local speakers' embeddings into the recording's speakers: agglomerative
//! clustering with centroid linkage on cosine distance (pyannote's choice; single linkage, as
//! sherpa-onnx uses, chained every voice of our test conference into one through the windows in
//! between), stopped at a distance or at a given number of speakers. Consecutive windows overlap
//! by 90%, so their embeddings are near copies: past [`DIRECT_LIMIT`] embeddings, near copies
//! are first pooled greedily, which keeps time and memory bounded however long the recording.

/// How many speakers to find.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clusters {
    /// As many as the embeddings say: clusters whose centroids are closer than this cosine
    /// distance are one speaker.
    Threshold(f32),
    /// Exactly this many (fewer if there are fewer embeddings).
    Count(usize),
}

impl Default for Clusters {
    /// A cosine similarity of 0.7 between centroids: d-vectors of one voice sit above 0.8, of
    /// different voices mostly below 0.6 (`tests/it/diarize.rs` prints them).
    fn default() -> Self {
        Clusters::Threshold(0.3)
    }
}

/// Most embeddings clustered directly; beyond, near copies are pooled first.
pub const DIRECT_LIMIT: usize = 600;
/// Cosine distance under which embeddings are pooled as near copies.
const POOL_DISTANCE: f32 = 0.05;

fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() && v.iter().all(|x| x.is_finite()) {
        v.iter().map(|x| x / norm).collect()
    } else {
        vec![0.0; v.len()]
    }
}

/// A group of embeddings: the sum of its (normalised) members, and who they are.
#[derive(Debug, Clone)]
struct Group {
    sum: Vec<f32>,
    members: Vec<usize>,
}

impl Group {
    fn distance(&self, other: &Group) -> f32 {
        let dot: f32 = self.sum.iter().zip(&other.sum).map(|(a, b)| a * b).sum();
        let na = self.sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb = other.sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        if na == 0.0 || nb == 0.0 {
            return 1.0;
        }
        (1.0 - dot / (na * nb)).max(0.0)
    }

    fn absorb(&mut self, other: Group) {
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        self.members.extend(other.members);
    }
}

/// A speaker label for each embedding, numbered by first appearance (0, 1, ...).
pub fn cluster(embeddings: &[Vec<f32>], clusters: Clusters) -> Vec<usize> {
    let n = embeddings.len();
    if n == 0 {
        return Vec::new();
    }
    let mut groups: Vec<Group> = Vec::new();
    for (index, embedding) in embeddings.iter().enumerate() {
        let vector = normalised(embedding);
        let single = Group {
            sum: vector,
            members: vec![index],
        };
        // Near copies join the most recent groups (windows overlap in time, so a copy is
        // usually a neighbour).
        if n > DIRECT_LIMIT {
            if let Some(group) = groups
                .iter_mut()
                .rev()
                .take(16)
                .find(|g| g.distance(&single) < POOL_DISTANCE)
            {
                group.absorb(single);
                continue;
            }
        }
        groups.push(single);
    }
    let target = match clusters {
        Clusters::Count(k) => k.max(1),
        Clusters::Threshold(_) => 1,
    };
    let threshold = match clusters {
        Clusters::Threshold(t) => t,
        Clusters::Count(_) => f32::INFINITY,
    };
    // Centroid linkage with each group's nearest neighbour cached.
    let nearest = |groups: &[Option<Group>], i: usize| -> (f32, usize) {
        let Some(gi) = &groups[i] else {
            return (f32::INFINITY, i);
        };
        let mut best = (f32::INFINITY, i);
        for (j, gj) in groups.iter().enumerate() {
            if let (true, Some(gj)) = (j != i, gj) {
                let d = gi.distance(gj);
                if d < best.0 {
                    best = (d, j);
                }
            }
        }
        best
    };
    let mut slots: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    let mut neighbour: Vec<(f32, usize)> = (0..slots.len()).map(|i| nearest(&slots, i)).collect();
    let mut alive = slots.len();
    while alive > target {
        let Some((a, &(distance, b))) = neighbour
            .iter()
            .enumerate()
            .filter(|(i, _)| slots[*i].is_some())
            .min_by(|x, y| x.1 .0.total_cmp(&y.1 .0))
        else {
            break;
        };
        if distance >= threshold || a == b {
            break;
        }
        let (keep, gone) = (a.min(b), a.max(b));
        let Some(absorbed) = slots[gone].take() else {
            break;
        };
        if let Some(kept) = slots[keep].as_mut() {
            kept.absorb(absorbed);
        }
        alive -= 1;
        for i in 0..slots.len() {
            if slots[i].is_some() && (i == keep || neighbour[i].1 == keep || neighbour[i].1 == gone)
            {
                neighbour[i] = nearest(&slots, i);
            } else if slots[i].is_some() {
                // The merged centroid moved: it may now be someone's nearest.
                if let (Some(gi), Some(gk)) = (&slots[i], &slots[keep]) {
                    let d = gi.distance(gk);
                    if d < neighbour[i].0 {
                        neighbour[i] = (d, keep);
                    }
                }
            }
        }
    }
    // Name clusters by their first member's position.
    let mut owner = vec![0usize; n];
    let mut firsts: Vec<(usize, usize)> = Vec::new();
    for (slot, group) in slots.iter().enumerate() {
        if let Some(group) = group {
            firsts.push((group.members.iter().copied().min().unwrap_or(0), slot));
            for &m in &group.members {
                owner[m] = slot;
            }
        }
    }
    firsts.sort_unstable();
    let mut name = vec![0usize; slots.len()];
    for (rank, &(_, slot)) in firsts.iter().enumerate() {
        name[slot] = rank;
    }
    owner.iter().map(|&slot| name[slot]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three voices, four embeddings each, with small deviations.
    fn voices() -> Vec<Vec<f32>> {
        let centres = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let mut out = Vec::new();
        for i in 0..12 {
            let c = centres[i % 3];
            let wobble = 0.05 * (i as f32 / 12.0);
            out.push(vec![c[0] + wobble, c[1] + wobble, c[2] - wobble]);
        }
        out
    }

    #[test]
    fn a_threshold_finds_the_voices() {
        let labels = cluster(&voices(), Clusters::default());
        assert_eq!(labels, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_count_cuts_the_longest_links() {
        let labels = cluster(&voices(), Clusters::Count(3));
        assert_eq!(labels, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
        let two = cluster(&voices(), Clusters::Count(2));
        assert_eq!(two.iter().max(), Some(&1));
        assert!(cluster(&voices(), Clusters::Count(1))
            .iter()
            .all(|&l| l == 0));
        assert_eq!(cluster(&voices()[..2], Clusters::Count(5)), [0, 1]);
    }

    #[test]
    fn long_recordings_pool_near_copies_and_still_find_the_voices() {
        // 3000 embeddings: runs of near copies of three voices, as overlapping windows give.
        let voices = voices();
        let many: Vec<Vec<f32>> = (0..3000)
            .map(|i| {
                let mut v = voices[(i / 20) % 3].clone();
                v[0] += 0.001 * (i % 7) as f32;
                v
            })
            .collect();
        let labels = cluster(&many, Clusters::default());
        for (i, &label) in labels.iter().enumerate() {
            assert_eq!(label, (i / 20) % 3, "embedding {i}");
        }
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        assert!(cluster(&[], Clusters::default()).is_empty());
        assert_eq!(cluster(&[vec![0.0, 0.0]], Clusters::default()), [0]);
        let labels = cluster(
            &[vec![f32::NAN, 1.0], vec![0.0, 0.0], vec![1.0, 0.0]],
            Clusters::Threshold(0.5),
        );
        assert_eq!(labels.len(), 3);
    }
}
