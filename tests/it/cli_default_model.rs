//! End-to-end tests of the default model (Moonshine base-en + Silero VAD, installed by setup)
//! and of batch transcription: the real binary on real files.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use common::*;

fn medscribe(args: &[&str]) -> Output {
    Command::cargo_bin("medscribe")
        .unwrap()
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sample() -> PathBuf {
    repo().join("samples/referral-dictation.wav")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn write_wav(path: &Path, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for &x in samples {
        writer
            .write_sample((x.clamp(-1.0, 1.0) * 32767.0) as i16)
            .unwrap();
    }
    writer.finalize().unwrap();
}

fn json_of(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn the_sample_dictation_is_transcribed_by_the_default_model() {
    if !common::slow_tier() {
        return;
    }
    let output = medscribe(&["transcribe", "--format", "json", p(&sample())]);
    let object = json_of(&output);
    assert_eq!(object["model"], "moonshine:moonshine-base-en");
    let said = object["text"].as_str().unwrap().to_lowercase();
    for words in [
        "referral to cardiology",
        "chest pain",
        "high blood pressure",
        "electrocardiogram",
        "stable angina",
    ] {
        assert!(said.contains(words), "{words:?} missing from {said:?}");
    }
    let segments = object["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    let duration = object["duration_s"].as_f64().unwrap();
    for s in segments {
        let (start, end) = (s["start_s"].as_f64().unwrap(), s["end_s"].as_f64().unwrap());
        assert!(0.0 <= start && start < end && end <= duration);
    }
    // Issue 12: the medication is written as the drug lexicon spells it, in the text and its
    // segments; raw_text keeps what the speech model wrote ("amla-depine"), and
    // --no-drug-correction prints that.
    assert!(said.contains("amlodipine 5 mg"), "{said}");
    assert!(segments
        .iter()
        .any(|s| s["text"].as_str().unwrap().contains("amlodipine")));
    let raw = object["raw_text"].as_str().unwrap();
    let uncorrected = medscribe(&["transcribe", "--no-drug-correction", p(&sample())]);
    assert!(uncorrected.status.success());
    assert_eq!(text(&uncorrected.stdout).trim(), raw.trim());
    if raw != object["text"].as_str().unwrap() {
        assert!(!raw.contains("amlodipine"), "{raw}");
    }
}

#[test]
fn silence_short_clips_and_noise_give_no_text() {
    if !common::slow_tier() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let silence = dir.path().join("silence.wav");
    write_wav(&silence, &vec![0.0; 160_000]);
    let blip = dir.path().join("blip.wav");
    write_wav(
        &blip,
        &(0..800)
            .map(|i| (i as f32 * 0.3).sin() * 0.5)
            .collect::<Vec<_>>(),
    );
    // White noise at -30 dBFS RMS (uniform noise: RMS = amplitude / sqrt 3).
    let amplitude = 10f32.powf(-30.0 / 20.0) * 3f32.sqrt();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let noise_samples: Vec<f32> = (0..160_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0) * amplitude
        })
        .collect();
    let noise = dir.path().join("noise.wav");
    write_wav(&noise, &noise_samples);
    for (file, seconds) in [(&silence, 10.0), (&blip, 0.05), (&noise, 10.0)] {
        let object = json_of(&medscribe(&["transcribe", "--format", "json", p(file)]));
        assert_eq!(object["text"], "", "{}", file.display());
        assert_eq!(
            object["segments"].as_array().unwrap().len(),
            0,
            "{}",
            file.display()
        );
        assert!((object["duration_s"].as_f64().unwrap() - seconds).abs() < 0.001);
    }
}

#[test]
fn batch_over_a_folder_writes_every_format_skips_done_work_and_reports_failures() {
    if !common::slow_tier() {
        return;
    }
    let input = tempfile::tempdir().unwrap();
    let output = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(input.path().join("ward-3")).unwrap();
    std::fs::copy(sample(), input.path().join("referral.wav")).unwrap();
    std::fs::copy(sample(), input.path().join("ward-3/referral.wav")).unwrap();
    std::fs::write(input.path().join("ward-3/broken.wav"), b"RIFF....WAVE").unwrap();
    std::fs::write(input.path().join("ward-3/notes.txt"), b"not audio").unwrap();
    let args = [
        "transcribe",
        "--format",
        "txt,json,srt,vtt",
        "--output",
        p(output.path()),
        p(input.path()),
    ];

    let first = medscribe(&args);
    assert_eq!(first.status.code(), Some(1), "one file failed");
    assert!(first.stdout.is_empty());
    let stderr = text(&first.stderr);
    assert!(
        stderr.contains("broken.wav: truncated or not a valid WAV file"),
        "{stderr}"
    );
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.starts_with("medscribe: 2 transcribed, 0 skipped, 1 failed; "),
        "{summary}"
    );
    assert!(summary.contains("real-time factor"), "{summary}");
    for stem in ["referral", "ward-3/referral"] {
        for ext in ["txt", "json", "srt", "vtt"] {
            let file = output.path().join(format!("{stem}.{ext}"));
            assert!(file.is_file(), "{} missing", file.display());
        }
    }
    assert!(
        !output.path().join("ward-3/broken.txt").exists(),
        "no output for a failed file"
    );
    let srt = std::fs::read_to_string(output.path().join("referral.srt")).unwrap();
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");
    let vtt = std::fs::read_to_string(output.path().join("referral.vtt")).unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n00:00:0"), "{vtt}");

    // Resumable: done files are skipped, so only the broken one is tried again.
    let marker = "edited by the secretary\n";
    std::fs::write(output.path().join("referral.txt"), marker).unwrap();
    let second = medscribe(&args);
    let summary = text(&second.stderr);
    assert!(
        summary
            .lines()
            .last()
            .unwrap()
            .starts_with("medscribe: 0 transcribed, 2 skipped, 1 failed"),
        "{summary}"
    );
    assert_eq!(
        std::fs::read_to_string(output.path().join("referral.txt")).unwrap(),
        marker
    );

    // --force redoes them.
    let mut forced: Vec<&str> = args.to_vec();
    forced.insert(1, "--force");
    let third = medscribe(&forced);
    assert!(text(&third.stderr)
        .lines()
        .last()
        .unwrap()
        .starts_with("medscribe: 2 transcribed, 0 skipped, 1 failed"));
    assert_ne!(
        std::fs::read_to_string(output.path().join("referral.txt")).unwrap(),
        marker
    );
}

#[test]
fn usage_errors_are_clear() {
    let out = medscribe(&["transcribe", "--format", "txt,json", p(&sample())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("several formats need --output DIR"));

    let out = medscribe(&["transcribe", "--segment", "fixed", p(&sample())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("fixed windows need a CTC model"),
        "{}",
        text(&out.stderr)
    );

    let out = medscribe(&["transcribe", "--format", "docx", p(&sample())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown format"),
        "{}",
        text(&out.stderr)
    );

    let empty = tempfile::tempdir().unwrap();
    let out = medscribe(&["transcribe", p(empty.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no .wav files in this folder"),
        "{}",
        text(&out.stderr)
    );

    let out = medscribe(&[
        "transcribe",
        "--vad-model",
        "/nonexistent/vad.onnx",
        p(&sample()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("voice activity") && stderr.contains("/nonexistent/vad.onnx"),
        "{stderr}"
    );
}

#[test]
fn medasr_can_use_voice_activity_segments_too() {
    let object = json_of(&medscribe(&[
        "transcribe",
        "--model",
        p(&fixture("medasr-tiny-hf")),
        "--segment",
        "vad",
        "--format",
        "json",
        p(&fixture("audio/dictation-long.wav")),
    ]));
    let segments = object["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    for s in segments {
        let length = s["end_s"].as_f64().unwrap() - s["start_s"].as_f64().unwrap();
        assert!(
            length <= 20.0 + 1e-9,
            "MedASR segments stay within 20 s: {length}"
        );
    }
}

#[test]
fn models_lists_and_verifies_what_setup_installed() {
    if !common::slow_tier() {
        return;
    }
    let out = medscribe(&["models"]);
    let listing = text(&out.stdout);
    assert!(out.status.success(), "{listing}{}", text(&out.stderr));
    for name in [
        "onnxruntime",
        "moonshine-base-en-encoder",
        "silero-vad",
        "verified",
        "moonshine-cpp==0.1.4",
    ] {
        assert!(listing.contains(name), "{name} missing:\n{listing}");
    }
    assert!(
        listing.contains("Default speech model") && listing.contains("(Moonshine)"),
        "{listing}"
    );
    assert!(
        listing.contains("export_medasr_onnx.py"),
        "says how to add MedASR:\n{listing}"
    );

    // A damaged copy is reported and the exit status says so.
    let home = tempfile::tempdir().unwrap();
    let vad = home.path().join("models/silero-vad");
    std::fs::create_dir_all(&vad).unwrap();
    std::fs::write(vad.join("silero_vad.onnx"), b"tampered").unwrap();
    let out = Command::cargo_bin("medscribe")
        .unwrap()
        .arg("models")
        .env("MEDSCRIBE_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let listing = text(&out.stdout);
    assert!(listing.contains("CORRUPT"), "{listing}");
    assert!(listing.contains("missing"), "{listing}");
    assert!(listing.contains("run scripts/setup.sh"), "{listing}");
}
