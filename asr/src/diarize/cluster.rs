//! Clustering local speakers' embeddings into the recording's speakers: single-linkage
//! agglomerative clustering on cosine distance (sherpa-onnx's choice), cut at a distance or at a
//! given number of speakers. Built as a minimum spanning tree (Prim), so memory stays linear in
//! the number of embeddings however long the recording.

/// How many speakers to find.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clusters {
    /// As many as the embeddings say: voices closer than this cosine distance are one speaker.
    Threshold(f32),
    /// Exactly this many (fewer if there are fewer embeddings).
    Count(usize),
}

impl Default for Clusters {
    /// sherpa-onnx's default threshold.
    fn default() -> Self {
        Clusters::Threshold(0.5)
    }
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter().map(|x| x / norm).collect()
    } else {
        vec![0.0; v.len()]
    }
}

fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let similarity: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    (1.0 - similarity).max(0.0)
}

/// A speaker label for each embedding, numbered by first appearance (0, 1, ...).
pub fn cluster(embeddings: &[Vec<f32>], clusters: Clusters) -> Vec<usize> {
    let n = embeddings.len();
    if n == 0 {
        return Vec::new();
    }
    let vectors: Vec<Vec<f32>> = embeddings.iter().map(|e| normalised(e)).collect();
    // Prim's algorithm: the minimum spanning tree's edges are single linkage's merges.
    let mut in_tree = vec![false; n];
    let mut best = vec![(f32::INFINITY, 0usize); n];
    let mut edges: Vec<(f32, usize, usize)> = Vec::with_capacity(n.saturating_sub(1));
    let mut current = 0;
    in_tree[0] = true;
    for _ in 1..n {
        let mut next = None;
        for j in 0..n {
            if in_tree[j] {
                continue;
            }
            let d = cosine_distance(&vectors[current], &vectors[j]);
            if d < best[j].0 {
                best[j] = (d, current);
            }
            if next.is_none_or(|k: usize| best[j].0 < best[k].0) {
                next = Some(j);
            }
        }
        let Some(next) = next else { break };
        in_tree[next] = true;
        edges.push((best[next].0, best[next].1, next));
        current = next;
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0));
    let keep = match clusters {
        Clusters::Threshold(threshold) => edges.iter().filter(|e| e.0 < threshold).count(),
        Clusters::Count(k) => n.saturating_sub(k.max(1)),
    };
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for &(_, a, b) in edges.iter().take(keep) {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        parent[ra.max(rb)] = ra.min(rb);
    }
    let mut names: Vec<Option<usize>> = vec![None; n];
    let mut next_name = 0;
    (0..n)
        .map(|i| {
            let r = root(&mut parent, i);
            *names[r].get_or_insert_with(|| {
                next_name += 1;
                next_name - 1
            })
        })
        .collect()
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
