//! Speaker diarization (issue 17), the parts that have landed: pyannote's segmentation model on
//! ONNX Runtime over sliding windows, checked against an independent Python version
//! (tests/diarize_reference.py: numpy and the onnxruntime package) on a real recording.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use medscribe_asr::diarize::{
    diarization_error, diarize, fbank::Fbank, CamppEmbedder, Clusters, Diarizer, SegmentationModel,
    SpeakerEmbedder, SpeakerTurn, TurnOptions,
};
use medscribe_pipeline::DataDir;

fn segmentation_model() -> std::path::PathBuf {
    medscribe_pipeline::models::speaker_segmentation_model(&DataDir::from_env())
}

#[test]
fn segmentation_windows_and_powerset_decoding_match_the_python_reference() {
    if !common::slow_tier() {
        return;
    }
    common::init_runtime();
    let model_path = segmentation_model();
    let wav = common::repo().join("samples/referral-dictation.wav");
    let out = Command::new(common::repo().join(".venv/bin/python"))
        .arg(common::repo().join("tests/diarize_reference.py"))
        .arg(&model_path)
        .arg(&wav)
        .output()
        .expect("setup's venv runs");
    assert_succeeded(&out);
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected: Vec<Vec<u8>> = reference["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w.as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect()
        })
        .collect();

    let mut model = SegmentationModel::load(&model_path, 1).unwrap();
    let audio = common::samples(&wav);
    let segmentation = model.segment(&audio).unwrap();
    assert_eq!(segmentation.windows.len(), expected.len());
    for (index, (ours, theirs)) in segmentation.windows.iter().zip(&expected).enumerate() {
        assert_eq!(ours.len(), 589);
        let differ = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "window {index}: {differ} frames differ");
    }
    // One synthetic voice dictating: speech is found, and mostly as one speaker per window.
    let count = segmentation.speakers_per_frame();
    let speaking = count.iter().filter(|&&c| c > 0).count();
    let overlapped = count.iter().filter(|&&c| c > 1).count();
    assert!(
        speaking > count.len() / 2,
        "{speaking} of {} frames",
        count.len()
    );
    assert!(
        overlapped < speaking / 10,
        "{overlapped} overlapped of {speaking}"
    );
    let locals = segmentation.local_speakers();
    assert!(!locals.is_empty());
    for local in &locals {
        for &(start, end) in &local.samples {
            assert!(start < end && end <= audio.len() + 16_000, "{start}..{end}");
        }
    }
}

#[test]
fn a_model_that_is_not_pyannotes_segmentation_is_refused_by_name() {
    if !common::slow_tier() {
        return;
    }
    common::init_runtime();
    let vad = DataDir::from_env()
        .models_dir()
        .join("silero-vad/silero_vad.onnx");
    let error = SegmentationModel::load(&vad, 1).unwrap_err().to_string();
    assert!(
        error.contains("silero_vad.onnx") && error.contains("not pyannote's segmentation"),
        "{error}"
    );
    let missing = std::path::Path::new("/nonexistent/segmentation-3.0.onnx");
    let error = SegmentationModel::load(missing, 1).unwrap_err().to_string();
    assert!(error.contains("run scripts/setup.sh"), "{error}");
}

fn embedder_model() -> std::path::PathBuf {
    medscribe_pipeline::models::speaker_embedding_model(&DataDir::from_env())
}

/// A JSON array of numbers.
fn floats(value: &serde_json::Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// Turns as JSON writes them (start_s, end_s, speaker from 0).
fn json_turns(turns: &serde_json::Value) -> Vec<SpeakerTurn> {
    turns
        .as_array()
        .unwrap()
        .iter()
        .map(|t| SpeakerTurn {
            start_s: t["start_s"].as_f64().unwrap(),
            end_s: t["end_s"].as_f64().unwrap(),
            speaker: t["speaker"].as_u64().expect("a numbered speaker") as usize,
        })
        .collect()
}

#[test]
fn campplus_features_match_kaldi_and_embeddings_match_pytorch() {
    if !common::slow_tier() {
        return;
    }
    common::init_runtime();
    let wav = common::repo().join("samples/referral-dictation.wav");
    let audio = common::samples(&wav);
    let mut embedder = CamppEmbedder::load(&embedder_model(), 1).unwrap();
    let fbank = Fbank::new();
    // PyTorch's own CAM++ (speakerlab) on kaldi-native-fbank features, written by
    // models/scripts/campplus_to_onnx.py --fixture: the conversion and our front end together.
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("models/fixtures/campplus-expected.json"))
            .unwrap(),
    )
    .unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let (start, end) = (
            case["start"].as_u64().unwrap() as usize,
            case["end"].as_u64().unwrap() as usize,
        );
        let ours = embedder.embed(&audio[start..end]).unwrap();
        let theirs = floats(&case["embedding"]);
        let diff = common::max_abs_diff(&ours, &theirs);
        let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
        eprintln!("PyTorch embedding of {start}..{end}: max difference {diff} (scale {scale})");
        assert!(diff < 5e-4 * scale, "{start}..{end}: {diff}");
    }
    // The filter banks against kaldi-native-fbank (sherpa-onnx's front end), and the embedding
    // against ONNX Runtime's Python package on those features.
    for (start, end) in [(16_000, 96_000), (40_000, 50_000)] {
        let out = Command::new(common::repo().join(".venv/bin/python"))
            .arg(common::repo().join("tests/diarize_reference.py"))
            .arg("--embed")
            .arg(embedder_model())
            .arg(&wav)
            .args([start.to_string(), end.to_string()])
            .output()
            .expect("setup's venv runs");
        assert_succeeded(&out);
        let reference: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ours = fbank.compute(&audio[start..end]);
        let theirs = reference["fbank"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "frames of {start}..{end}");
        let mut worst = 0f32;
        for (a, b) in ours.iter().zip(theirs) {
            for (x, y) in a.iter().zip(b.as_array().unwrap()) {
                worst = worst.max((x - y.as_f64().unwrap() as f32).abs());
            }
        }
        eprintln!("filter banks of {start}..{end}: max difference {worst}");
        assert!(
            worst < 2e-3,
            "filter banks of {start}..{end}: max difference {worst}"
        );
        let ours = embedder.embed(&audio[start..end]).unwrap();
        let theirs = floats(&reference["embedding"]);
        let diff = common::max_abs_diff(&ours, &theirs);
        eprintln!("embedding of {start}..{end}: max difference {diff}");
        assert!(
            diff < 2e-3,
            "embedding of {start}..{end}: max difference {diff}"
        );
    }
}

/// The committed three-speaker sample's true turns.
fn case_conference_truth() -> Vec<SpeakerTurn> {
    let text =
        std::fs::read_to_string(common::repo().join("samples/case-conference.turns.json")).unwrap();
    json_turns(&serde_json::from_str(&text).unwrap())
}

#[test]
fn three_voices_of_a_case_conference_are_told_apart() {
    if !common::slow_tier() {
        return;
    }
    common::init_runtime();
    let wav = common::repo().join("samples/case-conference.wav");
    let audio = common::samples(&wav);
    let mut model = SegmentationModel::load(&segmentation_model(), 1).unwrap();
    let mut embedder = CamppEmbedder::load(&embedder_model(), 1).unwrap();
    let truth = case_conference_truth();
    let mut results = Vec::new();
    for clusters in [Clusters::Count(3), Clusters::default()] {
        // Told the number of speakers, as `--speakers 3` does; then on its own.
        let started = std::time::Instant::now();
        let turns = diarize(
            &mut model,
            &mut embedder,
            &audio,
            clusters,
            &TurnOptions::default(),
        )
        .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let error = diarization_error(&truth, &turns, 0.25);
        let found = turns.iter().map(|t| t.speaker + 1).max().unwrap_or(0);
        eprintln!(
            "{clusters:?}: {found} speakers, DER {:.1}% (missed {:.2} s, false alarm {:.2} s, \
             confusion {:.2} s of {:.1} s), real-time factor {:.3}",
            100.0 * error.rate(),
            error.missed_s,
            error.false_alarm_s,
            error.confusion_s,
            error.reference_s,
            seconds / (audio.len() as f64 / 16_000.0)
        );
        for turn in &turns {
            eprintln!(
                "  S{} {:.2}-{:.2}",
                turn.speaker + 1,
                turn.start_s,
                turn.end_s
            );
        }
        results.push((clusters, found, error.rate()));
    }
    // Both find the three voices, within the 10% (measured: 4.4% either way; the
    // sample is held out of scripts/diarization-bench.sh, which chose the threshold).
    for (clusters, found, rate) in results {
        assert_eq!(found, 3, "{clusters:?}");
        assert!(rate <= 0.10, "{clusters:?}: DER {rate}");
    }
}

#[test]
fn audio_fed_as_it_arrives_gives_the_turns_of_the_whole() {
    if !common::slow_tier() {
        return;
    }
    // The streaming diarizer keeps only the window being filled; fed in blocks of any size
    // (smaller and larger than a window, uneven), it must give the turns of one whole push, and
    // a second recording through the same models must not reuse the first one's embeddings.
    common::init_runtime();
    let audio = common::samples(&common::repo().join("samples/case-conference.wav"));
    let mut model = SegmentationModel::load(&segmentation_model(), 1).unwrap();
    let mut embedder = CamppEmbedder::load(&embedder_model(), 1).unwrap();
    let options = TurnOptions::default();
    let whole = diarize(
        &mut model,
        &mut embedder,
        &audio,
        Clusters::Count(3),
        &options,
    )
    .unwrap();
    assert!(whole.len() >= 6, "{whole:?}");
    for blocks in [
        vec![4_000],
        vec![7_919, 160_000, 1, 250_000],
        vec![audio.len()],
    ] {
        let mut diarizer = Diarizer::new(&mut model, &mut embedder);
        let mut at = 0;
        for &size in blocks.iter().cycle() {
            if at >= audio.len() {
                break;
            }
            let end = (at + size).min(audio.len());
            diarizer.push(&audio[at..end]).unwrap();
            at = end;
        }
        assert_eq!(diarizer.samples(), audio.len());
        let turns = diarizer.finish(Clusters::Count(3), &options).unwrap();
        assert_eq!(turns, whole, "blocks {blocks:?}");
    }
    // While the recording goes on, the turns so far come from an online clustering: each local
    // speaker joins the nearest voice so far, or starts one.
    let truth = case_conference_truth();
    for clusters in [Clusters::Count(3), Clusters::default()] {
        let mut diarizer = Diarizer::new(&mut model, &mut embedder);
        let mut so_far = Vec::new();
        for block in audio.chunks(16_000) {
            diarizer.push(block).unwrap();
            let labelled = diarizer.labelled_s();
            so_far = diarizer.turns_so_far(clusters, &options);
            assert!(
                so_far.iter().all(|t| t.end_s <= labelled + 1e-9),
                "turns past {labelled}: {so_far:?}"
            );
        }
        let labelled = diarizer.labelled_s();
        let truth_so_far: Vec<SpeakerTurn> = truth
            .iter()
            .filter(|t| t.start_s < labelled)
            .map(|t| SpeakerTurn {
                end_s: t.end_s.min(labelled),
                ..t.clone()
            })
            .collect();
        let error = diarization_error(&truth_so_far, &so_far, 0.25);
        let found = so_far.iter().map(|t| t.speaker + 1).max().unwrap_or(0);
        eprintln!(
            "online {clusters:?}: {found} speakers, DER {:.1}% over the first {labelled:.1} s",
            100.0 * error.rate()
        );
        assert!(error.rate() <= 0.25, "{clusters:?}: {error:?}");
    }

    // Another, short recording (under one window) after the long one: the same as on fresh
    // models, though its sub-segments start at the same sample numbers as the first one's.
    let short = &audio[50_000..150_000];
    let after = diarize(
        &mut model,
        &mut embedder,
        short,
        Clusters::Count(2),
        &options,
    )
    .unwrap();
    let mut fresh_model = SegmentationModel::load(&segmentation_model(), 1).unwrap();
    let mut fresh_embedder = CamppEmbedder::load(&embedder_model(), 1).unwrap();
    let fresh = diarize(
        &mut fresh_model,
        &mut fresh_embedder,
        short,
        Clusters::Count(2),
        &options,
    )
    .unwrap();
    assert_eq!(after, fresh);
}

/// A live session on the case conference with the default speech model and speaker models
/// told three voices, read `paced` like a real recording or as fast as it can be; the data
/// directory goes when the first value is dropped.
fn live_case_conference(
    paced: bool,
) -> (
    tempfile::TempDir,
    medscribe_pipeline::session::Session,
    medscribe_pipeline::live::LiveSession,
) {
    use medscribe_pipeline::live::{LiveConfig, LiveSession};
    use medscribe_pipeline::source::SourceSpec;
    use medscribe_pipeline::speakers::Speakers;
    use medscribe_pipeline::speech::{Speech, SpeechOptions};
    let home = common::data_home_with_models();
    let data = DataDir::at(home.path());
    let (recognizer, vad) = Speech::open_live(&SpeechOptions::default(), &data).unwrap();
    let speakers = Speakers::open(&data, Clusters::Count(3), 1, None).unwrap();
    let session =
        medscribe_pipeline::session::Session::create(&data, "2026-11-27T10:00:00Z").unwrap();
    let live = LiveSession::start_with_speakers(
        SourceSpec::File {
            path: common::repo().join("samples/case-conference.wav"),
            paced,
        },
        recognizer,
        vad,
        session.clone(),
        LiveConfig {
            speakers: Some("3".into()),
            ..LiveConfig::default()
        },
        Some(speakers),
    )
    .unwrap();
    (home, session, live)
}

#[test]
fn lines_get_their_speakers_while_the_recording_goes_on() {
    if !common::slow_tier() {
        return;
    }
    use medscribe_pipeline::live::LiveEvent;
    // The live pipeline with speaker models, fed the case conference as fast as it can be read:
    // lines are labelled as the diarizer catches up with them, each label is in
    // transcript.jsonl when it is announced, and the models come back for the final pass.
    let (_home, session, live) = live_case_conference(false);
    let mut finals = Vec::new();
    let mut relabelled = 0;
    for event in live.events().iter() {
        match event {
            // A line may be labelled as it comes, when the diarizer is ahead of it.
            LiveEvent::Final(line) if !line.text.is_empty() => finals.push(line),
            LiveEvent::Speaker(line) => {
                assert!(line.speaker.is_some());
                let Some(known) = finals.iter_mut().find(|f| f.start_s == line.start_s) else {
                    panic!("a label for a line never sent: {line:?}");
                };
                let on_disk = session.transcript().unwrap();
                let written = on_disk.iter().find(|l| l.start_s == line.start_s).unwrap();
                assert_eq!(
                    written.speaker, line.speaker,
                    "announced before it was written"
                );
                known.speaker = line.speaker;
                relabelled += 1;
            }
            // Cut at a change of speaker (see the next test).
            LiveEvent::Split { start_s, lines } => {
                let at = finals.iter().position(|f| f.start_s == start_s).unwrap();
                finals.splice(at..=at, lines);
            }
            LiveEvent::Stopped { error, .. } => assert!(error.is_none(), "{error:?}"),
            _ => {}
        }
    }
    let mut live = live;
    assert!(
        live.take_speakers().is_some(),
        "the speaker models come back"
    );
    assert!(live.take_speakers().is_none(), "once");
    live.join();
    // Every line has its speaker in the session's transcript before any final pass, as the
    // events said.
    assert!(!finals.is_empty());
    let lines = session.transcript().unwrap();
    assert_eq!(lines.len(), finals.len());
    for (line, told) in lines.iter().zip(&finals) {
        assert!(line.speaker.is_some(), "{line:?}");
        assert_eq!(line.speaker, told.speaker, "{line:?}");
    }
    eprintln!(
        "{} lines, {relabelled} labels after their line: {:?}",
        lines.len(),
        lines
            .iter()
            .map(|l| (l.start_s, l.end_s, l.speaker))
            .collect::<Vec<_>>()
    );
}

#[test]
fn lines_spanning_a_change_of_speaker_are_cut_while_the_recording_goes_on() {
    if !common::slow_tier() {
        return;
    }
    use medscribe_pipeline::live::LiveEvent;
    // The case conference at the pace of a real recording (47 s): its first line (three voices
    // in 19 s) is labelled some 15 s after it ends, long before the recording does, so it is
    // cut then, each part transcribed again and written before it is announced.
    let (_home, session, live) = live_case_conference(true);
    let mut shown: Vec<medscribe_pipeline::session::TranscriptLine> = Vec::new();
    let mut splits = 0;
    for event in live.events().iter() {
        match event {
            LiveEvent::Final(line) if !line.text.is_empty() => shown.push(line),
            LiveEvent::Split { start_s, lines } => {
                let at = shown
                    .iter()
                    .position(|l| l.start_s == start_s)
                    .expect("a split of a line shown");
                assert!(lines.len() > 1, "{lines:?}");
                assert_eq!(lines[0].start_s, start_s);
                assert_eq!(lines.last().unwrap().end_s, shown[at].end_s);
                for pair in lines.windows(2) {
                    assert_eq!(pair[0].end_s, pair[1].start_s, "{lines:?}");
                    assert_ne!(pair[0].speaker, pair[1].speaker, "{lines:?}");
                }
                assert!(lines
                    .iter()
                    .all(|l| l.speaker.is_some() && !l.text.is_empty()));
                let on_disk = session.transcript().unwrap();
                for line in &lines {
                    assert!(on_disk.contains(line), "announced before written: {line:?}");
                }
                shown.splice(at..=at, lines);
                splits += 1;
            }
            LiveEvent::Speaker(line) => {
                if let Some(known) = shown.iter_mut().find(|l| l.start_s == line.start_s) {
                    known.speaker = line.speaker;
                }
            }
            LiveEvent::Stopped { error, .. } => assert!(error.is_none(), "{error:?}"),
            _ => {}
        }
    }
    live.join();
    assert!(splits >= 1, "no line was cut while recording: {shown:?}");
    // What was shown is what the session holds, before any final pass.
    assert_eq!(session.transcript().unwrap(), shown);
    eprintln!(
        "{splits} line(s) cut while recording: {:?}",
        shown
            .iter()
            .map(|l| (l.start_s, l.end_s, l.speaker))
            .collect::<Vec<_>>()
    );
}

fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn medscribe(args: &[&str]) -> std::process::Output {
    Command::new(assert_cmd::cargo::cargo_bin("medscribe"))
        .args(args)
        .output()
        .expect("medscribe runs")
}

/// The segments of a `transcript --format json` as speaker turns (`S1` is speaker 0).
fn segment_turns(json: &serde_json::Value) -> Vec<SpeakerTurn> {
    json["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| SpeakerTurn {
            start_s: s["start_s"].as_f64().unwrap(),
            end_s: s["end_s"].as_f64().unwrap(),
            speaker: s["speaker"].as_str().unwrap()[1..]
                .parse::<usize>()
                .unwrap()
                - 1,
        })
        .collect()
}

/// The real telephone call `scripts/setup.sh --test-data` installs, with its reference turns.
fn real_call() -> (PathBuf, Vec<SpeakerTurn>) {
    let dir = DataDir::from_env().root().join("test-data/pyannote-sample");
    let rttm = std::fs::read_to_string(dir.join("sample.rttm"))
        .expect("the real call: run scripts/setup.sh --test-data");
    let mut names: Vec<String> = Vec::new();
    let turns = rttm
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (start_s, duration): (f64, f64) =
                (fields[3].parse().unwrap(), fields[4].parse().unwrap());
            let speaker = match names.iter().position(|n| n == fields[7]) {
                Some(at) => at,
                None => {
                    names.push(fields[7].to_owned());
                    names.len() - 1
                }
            };
            SpeakerTurn {
                start_s,
                end_s: start_s + duration,
                speaker,
            }
        })
        .collect();
    (dir.join("sample.wav"), turns)
}

#[test]
fn a_real_telephone_call_is_transcribed_turn_by_turn() {
    if !common::slow_tier() {
        return;
    }
    // Two real people (not synthesised voices), on the telephone, one short overlap: told
    // nothing, the transcript finds two voices and its segments follow the reference turns.
    let (wav, truth) = real_call();
    let out = common::success_stdout(&medscribe(&[
        "transcribe",
        "--speakers",
        "auto",
        "-f",
        "json",
        wav.to_str().unwrap(),
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["speakers"], serde_json::json!(["S1", "S2"]), "{out}");
    let error = diarization_error(&truth, &segment_turns(&json), 0.25);
    eprintln!("real call: {error:?}");
    assert!(error.rate() <= 0.10, "{error:?} {out}");
}

#[test]
fn transcribe_with_speakers_labels_every_format() {
    if !common::slow_tier() {
        return;
    }
    let wav = common::repo().join("samples/case-conference.wav");
    let wav = wav.to_str().unwrap();
    // One run writes every format.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    common::success_stdout(&medscribe(&[
        "transcribe",
        "--speakers",
        "3",
        "-f",
        "json,txt,srt,vtt",
        "-o",
        dir,
        wav,
    ]));
    let read = |ext: &str| {
        std::fs::read_to_string(out.path().join(format!("case-conference.{ext}"))).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&read("json")).unwrap();
    assert_eq!(json["speakers"], serde_json::json!(["S1", "S2", "S3"]));
    // The transcript's segments, cut at changes of speaker, against the true turns.
    let error = diarization_error(&case_conference_truth(), &segment_turns(&json), 0.25);
    assert!(error.rate() <= 0.15, "{error:?}");
    // Every sentence of the script is in some segment's text, in order.
    let text = json["text"].as_str().unwrap().to_lowercase();
    for word in [
        "patel",
        "ejection fraction",
        "diuretic",
        "thursday",
        "cardiology clinic",
    ] {
        assert!(text.contains(word), "{word} in {text}");
    }
    let txt = read("txt");
    let lines: Vec<&str> = txt.lines().collect();
    assert!(lines.len() >= 6, "{txt}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with('S') && l[1..].contains(": ")),
        "{txt}"
    );
    assert!(lines[0].starts_with("S1: "), "{txt}");
    for (format, tag) in [("vtt", "\n<v S2>"), ("srt", "\n<v S3>")] {
        let text = read(format);
        assert!(text.contains(tag), "{format}: {text}");
    }
    // Without --speakers nothing changes: no speaker anywhere.
    let plain = common::success_stdout(&medscribe(&["transcribe", "-f", "json", wav]));
    assert!(!plain.contains("speaker"), "{plain}");
    let out = medscribe(&["transcribe", "--speakers", "many", wav]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected auto or a number of speakers"));
}

#[test]
fn the_speakers_command_prints_turns_and_refuses_bad_input_in_one_line() {
    if !common::slow_tier() {
        return;
    }
    let sample = common::repo().join("samples/case-conference.wav");
    let sample = sample.to_str().unwrap();
    let out = medscribe(&["speakers", "--json", sample]);
    assert_succeeded(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["speakers"], 3);
    // Numbered by first turn: whoever opens is S1.
    assert_eq!(json["turns"][0]["speaker"], 0);
    let error = diarization_error(&case_conference_truth(), &json_turns(&json["turns"]), 0.25);
    assert!(error.rate() <= 0.10, "{error:?}");

    // Plain lines: start, end, speaker; told two speakers it finds two.
    let out = medscribe(&["speakers", "--speakers", "2", sample]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let labels: std::collections::BTreeSet<&str> =
        text.lines().filter_map(|l| l.split('\t').nth(2)).collect();
    assert_eq!(
        labels.into_iter().collect::<Vec<_>>(),
        ["S1", "S2"],
        "{text}"
    );

    // A bad file among good ones: one line naming it, the others still done, exit non-zero.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.wav");
    std::fs::write(&broken, b"RIFF\x04\x00\x00\x00WAVE").unwrap();
    let out = medscribe(&["speakers", broken.to_str().unwrap(), sample]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("broken.wav"), "{stderr}");
    // Named once, not twice.
    assert_eq!(stderr.matches("broken.wav").count(), 1, "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("S3"));

    // A threshold only means something when the count is not given.
    let out = medscribe(&["speakers", "--speakers", "3", "--threshold", "0.3", sample]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threshold"));
}

fn medscribe_at(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(assert_cmd::cargo::cargo_bin("medscribe"))
        .env("MEDSCRIBE_HOME", home)
        .args(args)
        .output()
        .expect("medscribe runs")
}

fn session_lines(session: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(session.join("transcript.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn recorded_sessions_get_speakers_names_and_keep_them_through_recovery() {
    if !common::slow_tier() {
        return;
    }
    let home = common::data_home_with_models();
    let sample = common::repo().join("samples/case-conference.wav");
    let sample = sample.to_str().unwrap();
    let out = medscribe_at(
        home.path(),
        &[
            "record",
            "--input-file",
            sample,
            "--fast",
            "--speakers",
            "3",
        ],
    );
    assert_succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 speakers"));
    let session = common::only_session(home.path());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("session.json")).unwrap())
            .unwrap();
    assert_eq!(meta["speakers"], "3");
    let lines = session_lines(&session);
    let error = diarization_error(
        &case_conference_truth(),
        &json_turns(&serde_json::Value::from(lines.clone())),
        0.25,
    );
    assert!(error.rate() <= 0.15, "{error:?}");

    // A name, shown by every view; the label stays in json.
    let out = medscribe_at(
        home.path(),
        &["sessions", "rename", "latest", "S1", "Dr Patel"],
    );
    assert_succeeded(&out);
    let txt = medscribe_at(home.path(), &["sessions", "export", "latest"]);
    let txt = String::from_utf8(txt.stdout).unwrap();
    assert!(txt.starts_with("Dr Patel: "), "{txt}");
    assert!(txt.contains("\nS2: ") && txt.contains("\nS3: "), "{txt}");
    let vtt = medscribe_at(home.path(), &["sessions", "export", "latest", "-f", "vtt"]);
    assert!(String::from_utf8_lossy(&vtt.stdout).contains("<v Dr Patel>"));
    let show = medscribe_at(home.path(), &["sessions", "show", "latest"]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("] Dr Patel: "));
    let bad = medscribe_at(
        home.path(),
        &["sessions", "rename", "latest", "S9", "Nurse"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("has no speaker S9"));

    // Telling them apart again drops the names (the numbering may change).
    let out = medscribe_at(home.path(), &["sessions", "speakers", "latest"]);
    assert_succeeded(&out);
    let txt = medscribe_at(home.path(), &["sessions", "export", "latest"]);
    assert!(String::from_utf8_lossy(&txt.stdout).starts_with("S1: "));

    // A recording cut off (kill -9) is labelled by `sessions recover`.
    let home = common::data_home_with_models();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("medscribe"))
        .env("MEDSCRIBE_HOME", home.path())
        .args(["record", "--input-file", sample, "--speakers", "auto"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Real time: the first two speakers and part of the third are recorded. Waits for 16 s of
    // audio on disk rather than 16 s of wall time, which a loaded machine spends partly loading
    // the models.
    wait_for_recorded_seconds(home.path(), 16.0, std::time::Duration::from_secs(120));
    child.kill().unwrap();
    child.wait().unwrap();
    let session = common::only_session(home.path());
    let out = medscribe_at(home.path(), &["sessions", "recover"]);
    assert_succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("speakers"));
    let lines = session_lines(&session);
    assert!(!lines.is_empty());
    let found: std::collections::BTreeSet<u64> = lines
        .iter()
        .map(|l| l["speaker"].as_u64().unwrap())
        .collect();
    assert!(found.len() >= 2, "{lines:?}");
}

/// Waits until the only session under `home` has `seconds` of audio in its WAV (the header's
/// byte rate), or `limit` has passed.
fn wait_for_recorded_seconds(home: &std::path::Path, seconds: f64, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        // The header's byte rate and the file's length: the growing samples are not read.
        let recorded = std::fs::read_dir(home.join("sessions"))
            .ok()
            .and_then(|mut dirs| dirs.next())
            .and_then(|dir| {
                use std::io::Read;
                let mut wav = std::fs::File::open(dir.ok()?.path().join("audio.wav")).ok()?;
                let mut header = [0u8; 44];
                wav.read_exact(&mut header).ok()?;
                let byte_rate =
                    u32::from_le_bytes([header[28], header[29], header[30], header[31]]);
                let length = wav.metadata().ok()?.len();
                Some(length.saturating_sub(44) as f64 / f64::from(byte_rate.max(1)))
            });
        if recorded.is_some_and(|s| s >= seconds) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("the recording did not reach {seconds} s within {limit:?}");
}

#[test]
fn letters_from_a_consultation_read_each_turn_as_the_clinicians_or_the_patients() {
    if !common::slow_tier() {
        return;
    }
    let sample = common::repo().join("samples/case-conference.wav");
    let sample = sample.to_str().unwrap();
    let out = medscribe(&[
        "letter",
        "--audio",
        sample,
        "--speakers",
        "3",
        "--clinician",
        "S1,S3",
        "--template",
        "case-conference",
        "--max-new-tokens",
        "48",
        "-f",
        "json",
    ]);
    assert_succeeded(&out);
    let letter: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let turns: Vec<&str> = letter["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    // The sample's first speaker opens; the second (S2) is read as the patient.
    assert!(turns[0].starts_with("Clinician: "), "{turns:?}");
    assert!(
        turns.iter().any(|t| t.starts_with("Patient: ")),
        "{turns:?}"
    );
    assert!(
        turns
            .iter()
            .all(|t| t.starts_with("Clinician: ") || t.starts_with("Patient: ")),
        "{turns:?}"
    );
    // Labels that are not labels, and roles without speakers, are refused in one line.
    let bad = medscribe(&[
        "letter",
        "--audio",
        sample,
        "--speakers",
        "3",
        "--clinician",
        "doctor",
        "-t",
        "soap",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--clinician doctor"));
    let bad = medscribe(&[
        "letter",
        "--audio",
        sample,
        "--clinician",
        "S1",
        "-t",
        "soap",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--speakers"));
}
