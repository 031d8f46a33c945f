//! Speaker turns for transcripts: the diarization models opened from the data directory, a
//! recording diarized (`medscribe_asr::diarize`), and its transcript labelled. A segment said by
//! one speaker takes that speaker; a segment that spans a change of speaker (the voice activity
//! detector joins utterances with short pauses between them) is cut at the change and each part
//! transcribed again, so that no sentence is given to the wrong person.

use std::path::Path;

use medscribe_asr::diarize::{
    diarize, CamppEmbedder, Clusters, Diarizer, SegmentationModel, SpeakerTurn, TurnOptions,
};
use medscribe_asr::{Segment, SpeechRecognizer, Transcript};

use crate::datadir::DataDir;
use crate::error::{PipelineError, Result};
use crate::models;
use crate::wav::WavSource;

/// How many speakers to find, from `auto` or a number from 1 to 32 (as the command line and
/// `session.json` write it).
pub fn parse_clusters(text: &str) -> Option<Clusters> {
    if text == "auto" {
        return Some(Clusters::default());
    }
    match text.parse::<usize>() {
        Ok(n) if (1..=32).contains(&n) => Some(Clusters::Count(n)),
        _ => None,
    }
}

/// How the command line and `session.json` write a speaker count: `auto` or the number (what
/// [`parse_clusters`] reads back).
pub fn clusters_text(clusters: Clusters) -> String {
    match clusters {
        Clusters::Count(n) => n.to_string(),
        Clusters::Threshold(_) => "auto".into(),
    }
}

/// The diarization models, loaded once for many recordings.
#[derive(Debug)]
pub struct Speakers {
    segmentation: SegmentationModel,
    embedder: CamppEmbedder,
    clusters: Clusters,
}

impl Speakers {
    /// Loads the models setup installed (ONNX Runtime from `ort_lib`, else where setup put it);
    /// `clusters` says how many speakers to find.
    pub fn open(
        data: &DataDir,
        clusters: Clusters,
        threads: usize,
        ort_lib: Option<&Path>,
    ) -> Result<Self> {
        let runtime = medscribe_asr::runtime::locate_runtime(ort_lib, &data.runtime_dir())?;
        medscribe_asr::runtime::init_runtime(&runtime)?;
        Ok(Self {
            segmentation: SegmentationModel::load(
                &models::speaker_segmentation_model(data),
                threads,
            )?,
            embedder: CamppEmbedder::load(&models::speaker_embedding_model(data), threads)?,
            clusters,
        })
    }

    /// How many speakers these models are to find.
    pub fn clusters(&self) -> Clusters {
        self.clusters
    }

    /// A streaming diarizer on these models, for one recording fed as it arrives.
    pub fn diarizer(&mut self) -> Diarizer<'_> {
        Diarizer::new(&mut self.segmentation, &mut self.embedder)
    }

    /// The speaker turns of `audio` (16 kHz mono).
    pub fn turns(&mut self, audio: &[f32]) -> Result<Vec<SpeakerTurn>> {
        Ok(diarize(
            &mut self.segmentation,
            &mut self.embedder,
            audio,
            self.clusters,
            &TurnOptions::default(),
        )?)
    }

    /// The speaker turns of the recording at `path` and its length in 16 kHz samples. The file
    /// is read block by block into the diarizer, so memory stays flat however long it is.
    pub fn turns_of_file(&mut self, path: &Path) -> Result<(Vec<SpeakerTurn>, usize)> {
        // The WAV reader's errors name the file; the diarizer's are given its name.
        let named = |error: medscribe_asr::AsrError| PipelineError::Audio {
            path: path.to_path_buf(),
            reason: format!("cannot tell the speakers apart: {error}"),
        };
        let mut wav = WavSource::open(path)?;
        let clusters = self.clusters;
        let mut diarizer = self.diarizer();
        while let Some(block) = wav.next_block()? {
            diarizer.push(&block).map_err(named)?;
        }
        let samples = diarizer.samples();
        let turns = diarizer
            .finish(clusters, &TurnOptions::default())
            .map_err(named)?;
        Ok((turns, samples))
    }

    /// Diarizes the recording at `path` and labels its `transcript`, cutting segments that span
    /// a change of speaker and transcribing their parts again with `recognizer`. The recording
    /// is read twice, block by block (once to diarize, once for the parts to transcribe again),
    /// and never held whole.
    pub fn label(
        &mut self,
        path: &Path,
        transcript: &mut Transcript,
        recognizer: &mut dyn SpeechRecognizer,
    ) -> Result<()> {
        let (turns, _) = self.turns_of_file(path)?;
        let floor = Floor::of(&turns);
        let parts: Vec<Vec<(f64, f64, usize)>> = transcript
            .segments
            .iter()
            .map(|segment| floor.parts(segment.start_s, segment.end_s))
            .collect();
        let sample = |seconds: f64| (seconds * RATE) as usize;
        let cut: Vec<(usize, usize)> = parts
            .iter()
            .filter(|parts| parts.len() > 1)
            .flatten()
            .map(|&(start_s, end_s, _)| (sample(start_s), sample(end_s).max(sample(start_s))))
            .collect();
        let mut audio_of_cut = read_ranges(path, &cut)?.into_iter();
        let mut segments = Vec::with_capacity(transcript.segments.len());
        for (segment, parts) in transcript.segments.drain(..).zip(parts) {
            if parts.len() <= 1 {
                segments.push(Segment {
                    speaker: parts.first().map(|p| p.2),
                    ..segment
                });
                continue;
            }
            for (start_s, end_s, speaker) in parts {
                let audio = audio_of_cut.next().unwrap_or_default();
                let raw = recognizer.transcribe_segment(&audio)?;
                if raw.trim().is_empty() {
                    continue;
                }
                segments.push(Segment {
                    start_s,
                    end_s,
                    text: recognizer.format_text(&raw),
                    raw_text: raw,
                    speaker: Some(speaker),
                });
            }
        }
        renumber(&mut segments);
        transcript.raw_text = segments
            .iter()
            .map(|s| s.raw_text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        transcript.text = recognizer.format_text(&transcript.raw_text);
        transcript.segments = segments;
        Ok(())
    }
}

/// The 16 kHz samples of the recording at `path` in each of `ranges` (start, end), in one pass
/// over the file; ranges past its end come back short or empty.
fn read_ranges(path: &Path, ranges: &[(usize, usize)]) -> Result<Vec<Vec<f32>>> {
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); ranges.len()];
    if ranges.is_empty() {
        return Ok(out);
    }
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].0);
    let mut wav = WavSource::open(path)?;
    let mut position = 0usize;
    // Ranges before `first_open` in `order` are complete.
    let mut first_open = 0;
    while let Some(block) = wav.next_block()? {
        let block_end = position + block.len();
        for &index in order[first_open..]
            .iter()
            .take_while(|&&i| ranges[i].0 < block_end)
        {
            let (start, end) = ranges[index];
            let from = start.max(position);
            let to = end.min(block_end);
            if from < to {
                out[index].extend_from_slice(&block[from - position..to - position]);
            }
        }
        while first_open < order.len() && ranges[order[first_open]].1 <= block_end {
            first_open += 1;
        }
        position = block_end;
        if first_open == order.len() {
            break;
        }
    }
    Ok(out)
}

const RATE: f64 = 16_000.0;
/// Shortest part a segment is cut into; shorter ones join their neighbour.
const MIN_PIECE_S: f64 = 0.5;

/// Who has the floor when: the timeline cut at every turn's start and end, each stretch given
/// to the speaker who began talking last among those talking (in overlap, the newcomer).
fn floor_spans(turns: &[SpeakerTurn]) -> Vec<(f64, f64, usize)> {
    let mut points: Vec<f64> = turns.iter().flat_map(|t| [t.start_s, t.end_s]).collect();
    points.sort_by(f64::total_cmp);
    points.dedup();
    let mut spans: Vec<(f64, f64, usize)> = Vec::new();
    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let mid = 0.5 * (a + b);
        let holder = turns
            .iter()
            .filter(|t| t.start_s <= mid && mid < t.end_s)
            .max_by(|x, y| x.start_s.total_cmp(&y.start_s));
        let Some(holder) = holder else { continue };
        match spans.last_mut() {
            Some(last) if last.2 == holder.speaker && (last.1 - a).abs() < 1e-9 => last.1 = b,
            _ => spans.push((a, b, holder.speaker)),
        }
    }
    spans
}

/// The parts of `start_s..end_s` by speaker: the floor spans inside it, gaps given to the
/// part before (or after, at the start), parts shorter than [`MIN_PIECE_S`] joined to a
/// neighbour.
fn pieces(floor: &[(f64, f64, usize)], start_s: f64, end_s: f64) -> Vec<(f64, f64, usize)> {
    let mut parts: Vec<(f64, f64, usize)> = floor
        .iter()
        .filter(|f| f.1 > start_s && f.0 < end_s)
        .map(|f| (f.0.max(start_s), f.1.min(end_s), f.2))
        .collect();
    if parts.is_empty() {
        return parts;
    }
    // Close the gaps: each part runs to the next one's start; the first starts at the segment.
    parts[0].0 = start_s;
    for i in 1..parts.len() {
        parts[i - 1].1 = parts[i].0;
    }
    if let Some(last) = parts.last_mut() {
        last.1 = end_s;
    }
    // Join short parts to a neighbour, and neighbours of one speaker.
    loop {
        let short = parts
            .iter()
            .position(|p| p.1 - p.0 < MIN_PIECE_S)
            .filter(|_| parts.len() > 1);
        let Some(i) = short else { break };
        let part = parts.remove(i);
        if i > 0 {
            parts[i - 1].1 = part.1;
        } else {
            parts[0].0 = part.0;
        }
    }
    let mut joined: Vec<(f64, f64, usize)> = Vec::new();
    for part in parts {
        match joined.last_mut() {
            Some(last) if last.2 == part.2 => last.1 = part.1,
            _ => joined.push(part),
        }
    }
    joined
}

/// Who has the floor when (see [`floor_spans`]), worked out once from a set of turns and then
/// asked about many lines: working it out takes time quadratic in the turns, cutting one line
/// by it time linear in them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Floor(Vec<(f64, f64, usize)>);

impl Floor {
    /// The floor of `turns`.
    pub(crate) fn of(turns: &[SpeakerTurn]) -> Self {
        Self(floor_spans(turns))
    }

    /// The parts of `start_s..end_s` by speaker, as [`Speakers::label`] cuts a segment: one
    /// part (or none, if nobody spoke in it) unless it spans a change of speaker.
    pub(crate) fn parts(&self, start_s: f64, end_s: f64) -> Vec<(f64, f64, usize)> {
        pieces(&self.0, start_s, end_s)
    }

    /// Who said most of `start_s..end_s` (the longest part's speaker), if anyone spoke in it.
    pub(crate) fn speaker_of(&self, start_s: f64, end_s: f64) -> Option<usize> {
        self.parts(start_s, end_s)
            .into_iter()
            .max_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)))
            .map(|part| part.2)
    }
}

/// Renumbers speakers by first appearance in the transcript, so that its first voice is S1.
fn renumber(segments: &mut [Segment]) {
    let mut names: Vec<(usize, usize)> = Vec::new();
    for segment in segments.iter_mut() {
        if let Some(speaker) = segment.speaker {
            let name = match names.iter().find(|(s, _)| *s == speaker) {
                Some(&(_, name)) => name,
                None => {
                    names.push((speaker, names.len()));
                    names.len() - 1
                }
            };
            segment.speaker = Some(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_counts_parse_as_written() {
        assert_eq!(parse_clusters("auto"), Some(Clusters::default()));
        assert_eq!(parse_clusters("3"), Some(Clusters::Count(3)));
        for bad in ["0", "33", "-1", "Auto", ""] {
            assert_eq!(parse_clusters(bad), None, "{bad}");
        }
        for written in ["auto", "1", "3", "32"] {
            let parsed = parse_clusters(written).unwrap();
            assert_eq!(clusters_text(parsed), written);
        }
    }

    fn segment(start_s: f64, end_s: f64) -> Segment {
        Segment {
            start_s,
            end_s,
            raw_text: String::new(),
            text: String::new(),
            speaker: None,
        }
    }

    fn turn(start_s: f64, end_s: f64, speaker: usize) -> SpeakerTurn {
        SpeakerTurn {
            start_s,
            end_s,
            speaker,
        }
    }

    #[test]
    fn the_floor_goes_to_the_newcomer_in_overlap() {
        let turns = [turn(0.0, 5.0, 1), turn(4.0, 9.0, 0), turn(12.0, 14.0, 1)];
        assert_eq!(
            floor_spans(&turns),
            [(0.0, 4.0, 1), (4.0, 9.0, 0), (12.0, 14.0, 1)]
        );
    }

    #[test]
    fn segments_are_cut_at_changes_of_speaker_and_slivers_join_a_neighbour() {
        let floor = [(0.0, 4.0, 1), (4.0, 4.3, 2), (4.3, 9.0, 0), (12.0, 14.0, 1)];
        // Inside one speaker's span: one part.
        assert_eq!(pieces(&floor, 0.5, 3.5), [(0.5, 3.5, 1)]);
        // Across the change: two parts; the 0.3 s sliver of speaker 2 joins the part before.
        assert_eq!(pieces(&floor, 1.0, 8.0), [(1.0, 4.3, 1), (4.3, 8.0, 0)]);
        // A gap in the turns goes to the part before it.
        assert_eq!(pieces(&floor, 6.0, 13.0), [(6.0, 12.0, 0), (12.0, 13.0, 1)]);
        // No turn at all: no parts (the segment stays unlabelled).
        assert!(pieces(&floor, 20.0, 21.0).is_empty());
    }

    #[test]
    fn ranges_are_read_in_one_pass_whatever_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ramp.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        // 70,000 samples: more than one block of the reader.
        for i in 0..70_000i32 {
            writer.write_sample((i % 30_000) as i16).unwrap();
        }
        writer.finalize().unwrap();
        let all = WavSource::open(&path).unwrap().read_all().unwrap();
        let ranges = [
            (65_000, 69_000),
            (10, 20),
            (15, 60_000),
            (40_000, 40_000),
            (69_990, 80_000),
            (90_000, 95_000),
        ];
        let parts = read_ranges(&path, &ranges).unwrap();
        for (&(start, end), part) in ranges.iter().zip(&parts) {
            let end = end.min(all.len());
            let start = start.min(end);
            assert_eq!(part[..], all[start..end], "{start}..{end}");
        }
        assert!(read_ranges(&path, &[]).unwrap().is_empty());
    }

    #[test]
    fn speakers_are_numbered_by_first_appearance() {
        let mut segments = vec![segment(0.0, 1.0), segment(1.0, 2.0), segment(2.0, 3.0)];
        segments[0].speaker = Some(2);
        segments[1].speaker = Some(0);
        segments[2].speaker = Some(2);
        renumber(&mut segments);
        let speakers: Vec<Option<usize>> = segments.iter().map(|s| s.speaker).collect();
        assert_eq!(speakers, [Some(0), Some(1), Some(0)]);
    }
}
