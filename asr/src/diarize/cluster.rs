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
    /// A cosine distance of 0.4 between centroids of CAM++ embeddings: the middle of the range
    /// (0.3-0.5) where scripts/diarization-bench.sh's built 2-4 speaker conversations all give
    /// their best; below it voices split, above it similar voices join.
    fn default() -> Self {
        Clusters::Threshold(0.4)
    }
}

/// Most embeddings clustered directly; beyond, near copies are pooled first.
pub const DIRECT_LIMIT: usize = 600;
/// Cosine distance under which embeddings are pooled as near copies.
const POOL_DISTANCE: f32 = 0.05;

/// `v` scaled to unit length; zeros for a zero or non-finite vector.
pub(super) fn normalised(v: &[f32]) -> Vec<f32> {
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

/// Fewest embeddings a cluster found by threshold needs to be a speaker of its own
/// (pyannote's `min_cluster_size`; each window a speaker talks in gives one, a window starts
/// every second), capped at a tenth of the embeddings as pyannote caps it.
pub const MIN_CLUSTER_SIZE: usize = 12;

/// pyannote's rule for what a threshold leaves behind: clusters smaller than
/// [`MIN_CLUSTER_SIZE`] (a cough, a few windows of a voice heard oddly) join the nearest large
/// cluster by centroid; with no large cluster at all, everything is one speaker.
fn absorb_small_clusters(slots: &mut [Option<Group>], embeddings: usize) {
    let min_size = MIN_CLUSTER_SIZE.min(((embeddings as f64 * 0.1).round() as usize).max(1));
    let is_large = |g: &Option<Group>| g.as_ref().is_some_and(|g| g.members.len() >= min_size);
    let large: Vec<usize> = (0..slots.len()).filter(|&i| is_large(&slots[i])).collect();
    let small: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].is_some() && !is_large(&slots[i]))
        .collect();
    if small.is_empty() {
        return;
    }
    if large.is_empty() {
        let mut all = small.into_iter();
        if let Some(first) = all.next() {
            for other in all {
                if let Some(g) = slots[other].take() {
                    if let Some(kept) = slots[first].as_mut() {
                        kept.absorb(g);
                    }
                }
            }
        }
        return;
    }
    // Distances to the large clusters as they were, before any small one joined.
    let targets: Vec<(usize, usize)> = small
        .iter()
        .filter_map(|&s| {
            let group = slots[s].as_ref()?;
            let nearest = large
                .iter()
                .filter_map(|&l| Some((group.distance(slots[l].as_ref()?), l)))
                .min_by(|a, b| a.0.total_cmp(&b.0))?;
            Some((s, nearest.1))
        })
        .collect();
    for (s, l) in targets {
        if let Some(g) = slots[s].take() {
            if let Some(kept) = slots[l].as_mut() {
                kept.absorb(g);
            }
        }
    }
}

/// Clusters the `reliable` embeddings only, then gives each of the others the speaker whose
/// centroid is nearest (pyannote's way with embeddings of too little clean speech: they would
/// only blur the clusters). With no reliable embedding at all, every one is clustered.
pub fn cluster_reliable(
    embeddings: &[Vec<f32>],
    reliable: &[bool],
    clusters: Clusters,
) -> Vec<usize> {
    let chosen: Vec<usize> = (0..embeddings.len())
        .filter(|&i| reliable.get(i).copied().unwrap_or(false))
        .collect();
    if chosen.is_empty() || chosen.len() == embeddings.len() {
        return cluster(embeddings, clusters);
    }
    let picked: Vec<Vec<f32>> = chosen.iter().map(|&i| embeddings[i].clone()).collect();
    let picked_labels = cluster(&picked, clusters);
    let speakers = picked_labels.iter().max().map_or(0, |m| m + 1);
    let mut centroids = vec![
        Group {
            sum: vec![0.0; embeddings[0].len()],
            members: Vec::new()
        };
        speakers
    ];
    for (&label, vector) in picked_labels.iter().zip(&picked) {
        centroids[label].absorb(Group {
            sum: normalised(vector),
            members: Vec::new(),
        });
    }
    let mut labels = vec![0usize; embeddings.len()];
    for (&i, &label) in chosen.iter().zip(&picked_labels) {
        labels[i] = label;
    }
    for (i, embedding) in embeddings.iter().enumerate() {
        if reliable.get(i).copied().unwrap_or(false) {
            continue;
        }
        let single = Group {
            sum: normalised(embedding),
            members: Vec::new(),
        };
        labels[i] = centroids
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.distance(&single).total_cmp(&b.1.distance(&single)))
            .map_or(0, |(label, _)| label);
    }
    labels
}

/// Speakers found as embeddings arrive, for labels while a recording goes on (the whole
/// recording is clustered again when it ends): each embedding joins the nearest speaker so far
/// if it is within the threshold (or the count of speakers is reached), else starts a new one.
/// Embeddings of scattered speech (not reliable) never start a speaker unless there is none.
#[derive(Debug, Clone, Default)]
pub struct OnlineClusters {
    centroids: Vec<Group>,
}

impl OnlineClusters {
    /// The speaker of the next `embedding`, with the clusters' rule.
    pub fn assign(&mut self, embedding: &[f32], reliable: bool, clusters: Clusters) -> usize {
        let single = Group {
            sum: normalised(embedding),
            members: Vec::new(),
        };
        let nearest = self
            .centroids
            .iter()
            .enumerate()
            .map(|(i, c)| (c.distance(&single), i))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        // Told the count, a new voice still has to be as far as `auto` asks until the count is
        // reached.
        let (threshold, limit) = match (clusters, Clusters::default()) {
            (Clusters::Threshold(t), _) => (t, usize::MAX),
            (Clusters::Count(n), Clusters::Threshold(t)) => (t, n.max(1)),
            (Clusters::Count(n), Clusters::Count(_)) => (f32::INFINITY, n.max(1)),
        };
        match nearest {
            Some((distance, i))
                if distance < threshold || !reliable || self.centroids.len() >= limit =>
            {
                if reliable {
                    self.centroids[i].absorb(single);
                }
                i
            }
            _ => {
                self.centroids.push(single);
                self.centroids.len() - 1
            }
        }
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
    if let Clusters::Threshold(_) = clusters {
        absorb_small_clusters(&mut slots, n);
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
    fn a_few_stray_embeddings_join_the_nearest_voice() {
        // Two voices of 30 embeddings each and three strays far from both, nearer the second.
        let mut embeddings = Vec::new();
        for i in 0..60 {
            let wobble = 0.01 * (i % 5) as f32;
            embeddings.push(if i % 2 == 0 {
                vec![1.0, wobble, 0.0]
            } else {
                vec![wobble, 1.0, 0.0]
            });
        }
        for _ in 0..3 {
            embeddings.push(vec![0.2, 0.5, 1.0]);
        }
        let labels = cluster(&embeddings, Clusters::Threshold(0.3));
        assert_eq!(labels.iter().max(), Some(&1));
        assert!(labels[60..].iter().all(|&l| l == labels[1]));
        // Told a number of speakers, strays may form one.
        assert_eq!(cluster(&embeddings, Clusters::Count(3))[62], 2);
    }

    #[test]
    fn unreliable_embeddings_take_the_nearest_voice_without_making_one() {
        let voices = voices();
        let mut embeddings = voices.clone();
        // A short, odd embedding that alone would be a fourth voice.
        embeddings.push(vec![0.1, 0.9, 0.6]);
        let mut reliable = vec![true; voices.len()];
        reliable.push(false);
        let labels = cluster_reliable(&embeddings, &reliable, Clusters::Threshold(0.1));
        assert_eq!(&labels[..12], [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert_eq!(labels[12], 1);
        // Nothing reliable: all are clustered.
        assert_eq!(
            cluster_reliable(&embeddings, &[false; 13], Clusters::Threshold(0.1)).len(),
            13
        );
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
