//! End-to-end tests of `medscribe transcribe`: the real binary on real files, good and bad.

use crate::common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::*;

fn medscribe() -> Command {
    Command::cargo_bin("medscribe").expect("binary builds")
}

fn tiny_model() -> PathBuf {
    fixture("medasr-tiny-hf")
}

fn short_wav() -> PathBuf {
    fixture("audio/dictation-short.wav")
}

/// Runs `transcribe` and returns (exit code, stdout, stderr).
fn transcribe(args: &[&str]) -> (i32, String, String) {
    let output = medscribe()
        .arg("transcribe")
        .args(args)
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn reference_text() -> String {
    let (code, stdout, stderr) =
        transcribe(&["--model", path_str(&tiny_model()), path_str(&short_wav())]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.trim().is_empty());
    stdout
}

/// The 16-bit samples of the short fixture.
fn pcm16() -> Vec<i16> {
    hound::WavReader::open(short_wav())
        .unwrap()
        .samples::<i16>()
        .map(Result::unwrap)
        .collect()
}

fn write_wav(
    path: &Path,
    spec: hound::WavSpec,
    write: impl FnOnce(&mut hound::WavWriter<std::io::BufWriter<std::fs::File>>),
) {
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    write(&mut writer);
    writer.finalize().unwrap();
}

fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    }
}

#[test]
fn prints_formatted_text_and_json_with_the_required_fields() {
    init_runtime();
    let text = reference_text();
    assert!(text.ends_with('\n'));
    let (code, stdout, stderr) = transcribe(&[
        "--model",
        path_str(&tiny_model()),
        "--format",
        "json",
        path_str(&short_wav()),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let object: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(object["file"], path_str(&short_wav()));
    assert_eq!(object["model"], "medasr:medasr-tiny-hf");
    let expected = medasr_expected()["files"]["dictation-short"].clone();
    let seconds = expected["samples"].as_f64().unwrap() / 16_000.0;
    assert!((object["duration_s"].as_f64().unwrap() - seconds).abs() < 0.001);
    assert_eq!(object["raw_text"], expected["pipeline_text"]);
    assert_eq!(format!("{}\n", object["text"].as_str().unwrap()), text);
    let segments = object["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    for segment in segments {
        assert!(
            segment["start_s"].is_number()
                && segment["end_s"].is_number()
                && segment["text"].is_string()
        );
    }
}

#[test]
fn every_pcm_width_float_and_channel_layout_gives_the_same_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let samples = pcm16();
    let reference = reference_text();
    // Exact re-encodings of the same 16-bit values: the transcript must not change.
    let exact: Vec<(&str, hound::WavSpec)> = vec![
        ("i24.wav", spec(1, 16_000, 24, false)),
        ("i32.wav", spec(1, 16_000, 32, false)),
        ("f32.wav", spec(1, 16_000, 32, true)),
        ("stereo.wav", spec(2, 16_000, 16, false)),
    ];
    for (name, spec) in &exact {
        let path = dir.path().join(name);
        write_wav(&path, *spec, |w| {
            for &s in &samples {
                for _ in 0..spec.channels {
                    match (spec.sample_format, spec.bits_per_sample) {
                        (hound::SampleFormat::Float, _) => {
                            w.write_sample(f32::from(s) / 32768.0).unwrap()
                        }
                        (_, 16) => w.write_sample(s).unwrap(),
                        (_, 24) => w.write_sample(i32::from(s) << 8).unwrap(),
                        _ => w.write_sample(i32::from(s) << 16).unwrap(),
                    }
                }
            }
        });
        let (code, stdout, stderr) =
            transcribe(&["--model", path_str(&tiny_model()), path_str(&path)]);
        assert_eq!(code, 0, "{name}: {stderr}");
        assert_eq!(stdout, reference, "{name}");
    }
    // Lossy or resampled forms: transcribed, with the right duration.
    let eight_bit = dir.path().join("u8.wav");
    write_wav(&eight_bit, spec(1, 16_000, 8, false), |w| {
        for &s in &samples {
            w.write_sample((s >> 8) as i8).unwrap();
        }
    });
    let resampled = dir.path().join("48k-stereo-f32.wav");
    write_wav(&resampled, spec(2, 48_000, 32, true), |w| {
        for &s in &samples {
            for _ in 0..3 {
                w.write_sample(f32::from(s) / 32768.0).unwrap();
                w.write_sample(0.0f32).unwrap();
            }
        }
    });
    let cd = dir.path().join("44k1-24bit.wav");
    write_wav(&cd, spec(1, 44_100, 24, false), |w| {
        for i in 0..(samples.len() * 441 / 160) {
            w.write_sample(i32::from(samples[i * 160 / 441]) << 8)
                .unwrap();
        }
    });
    for path in [&eight_bit, &resampled, &cd] {
        let (code, stdout, stderr) = transcribe(&[
            "--model",
            path_str(&tiny_model()),
            "--format",
            "json",
            path_str(path),
        ]);
        assert_eq!(code, 0, "{}: {stderr}", path.display());
        let object: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let expected = samples.len() as f64 / 16_000.0;
        assert!(
            (object["duration_s"].as_f64().unwrap() - expected).abs() < 0.01,
            "{}",
            path.display()
        );
        assert!(
            !object["raw_text"].as_str().unwrap().is_empty(),
            "{}",
            path.display()
        );
    }
}

/// A valid 16-bit mono WAV header followed by `data_bytes` (not necessarily matching the header).
fn wav_bytes(
    rate: u32,
    channels: u16,
    bits: u16,
    format_tag: u16,
    declared_data: u32,
    data: &[u8],
) -> Vec<u8> {
    let block_align = channels * bits / 8;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    // Hostile sizes near u32::MAX wrap here as they would in a forged file.
    out.extend_from_slice(&36u32.wrapping_add(declared_data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&format_tag.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&declared_data.to_le_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn bad_wav_files_get_one_clear_line_each_and_the_good_file_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(short_wav()).unwrap();
    let audio = vec![0u8; 32_000];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.wav", Vec::new(), "empty file"),
        ("header-only.wav", good[..44].to_vec(), "truncated"),
        (
            "truncated.wav",
            good[..good.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "not-a-wav.wav",
            b"%PDF-1.4 this is a letter, not audio".repeat(20),
            "not a valid WAV file",
        ),
        (
            "mu-law.wav",
            wav_bytes(8_000, 1, 8, 7, 8_000, &audio[..8_000]),
            "unsupported WAV encoding",
        ),
        (
            "rate-zero.wav",
            wav_bytes(0, 1, 16, 1, 32_000, &audio),
            "sample rate",
        ),
        (
            "absurd-chunk.wav",
            wav_bytes(16_000, 1, 16, 1, 0xFFFF_FFF0, &audio),
            "truncated or corrupt",
        ),
        (
            "zero-channels.wav",
            wav_bytes(16_000, 0, 16, 1, 32_000, &audio),
            "WAV",
        ),
        (
            "float64.wav",
            wav_bytes(16_000, 1, 64, 3, 32_000, &audio),
            "unsupported WAV encoding",
        ),
    ];
    let mut args: Vec<String> = vec!["--model".into(), path_str(&tiny_model()).into()];
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    args.extend(["--output".into(), path_str(&out_dir).into()]);
    for (name, bytes, _) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        args.push(path_str(&path).into());
    }
    args.push(path_str(&short_wav()).into());
    let empty_folder = dir.path().join("empty-folder");
    std::fs::create_dir(&empty_folder).unwrap();
    args.push(path_str(&empty_folder).into()); // a folder without recordings is an error too
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = transcribe(&refs);
    assert_eq!(code, 1, "any failed file makes the exit status non-zero");
    assert!(
        stdout.is_empty(),
        "with --output nothing goes to stdout: {stdout}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        cases.len() + 2,
        "one line per bad file, then the summary:\n{stderr}"
    );
    assert_eq!(
        lines.last().unwrap().split(';').next().unwrap(),
        format!(
            "medscribe: 1 transcribed, 0 skipped, {} failed",
            cases.len() + 1
        )
    );
    for (name, _, reason) in &cases {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no error line for {name}:\n{stderr}"));
        assert!(line.starts_with("medscribe: "), "{line}");
        assert!(
            line.contains(reason),
            "{name}: expected {reason:?} in {line:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("empty-folder: no .wav files in this folder")),
        "{stderr}"
    );
    // Only the good file produced output; no partial files from the bad ones.
    let written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, vec!["dictation-short.txt".to_string()]);
    let text = std::fs::read_to_string(out_dir.join("dictation-short.txt")).unwrap();
    assert_eq!(text, reference_text());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join("dictation-short.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "transcripts are readable by the user only"
        );
    }
}

#[test]
fn bad_model_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let no_tokenizer = dir.path().join("no-tokenizer");
    std::fs::create_dir(&no_tokenizer).unwrap();
    std::fs::copy(
        tiny_model().join("model.onnx"),
        no_tokenizer.join("model.onnx"),
    )
    .unwrap();
    let corrupt = dir.path().join("corrupt-onnx");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(
        corrupt.join("model.onnx"),
        b"\x08\x07garbage that is not a protobuf model",
    )
    .unwrap();
    std::fs::copy(
        tiny_model().join("tokenizer.json"),
        corrupt.join("tokenizer.json"),
    )
    .unwrap();
    let truncated = dir.path().join("truncated-onnx");
    std::fs::create_dir(&truncated).unwrap();
    let onnx = std::fs::read(tiny_model().join("model.onnx")).unwrap();
    std::fs::write(truncated.join("model.onnx"), &onnx[..onnx.len() / 3]).unwrap();
    std::fs::copy(
        tiny_model().join("tokenizer.json"),
        truncated.join("tokenizer.json"),
    )
    .unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let bad_tokenizer = dir.path().join("bad-tokenizer");
    std::fs::create_dir(&bad_tokenizer).unwrap();
    std::fs::copy(
        tiny_model().join("model.onnx"),
        bad_tokenizer.join("model.onnx"),
    )
    .unwrap();
    std::fs::write(bad_tokenizer.join("tokenizer.json"), b"{ not json").unwrap();

    let cases: Vec<(PathBuf, &str)> = vec![
        (dir.path().join("missing"), "does not exist"),
        (empty.clone(), "has no model.onnx or model.int8.onnx"),
        (no_tokenizer, "has no tokenizer.json or tokens.txt"),
        (corrupt.clone(), "not a loadable ONNX model"),
        (truncated, "not a loadable ONNX model"),
        (bad_tokenizer.clone(), "cannot load tokenizer"),
        (
            fixture("bad-unexpected-inputs"),
            "unexpected model inputs [audio]",
        ),
    ];
    for (model, reason) in cases {
        let (code, stdout, stderr) =
            transcribe(&["--model", path_str(&model), path_str(&short_wav())]);
        assert_ne!(code, 0, "{}", model.display());
        assert!(stdout.is_empty());
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("medscribe: "), "{stderr}");
        assert!(
            stderr.contains(reason),
            "{}: expected {reason:?} in {stderr:?}",
            model.display()
        );
        assert!(
            stderr.contains(path_str(&model)),
            "the message names the model: {stderr}"
        );
    }
}

#[test]
fn missing_default_model_and_runtime_are_clear_errors() {
    let empty_home = tempfile::tempdir().unwrap();
    let output = medscribe()
        .args(["transcribe", path_str(&short_wav())])
        .env("MEDSCRIBE_HOME", empty_home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("the default speech model is not installed"),
        "{stderr}"
    );
    assert!(stderr.contains("scripts/setup.sh"), "{stderr}");

    let output = medscribe()
        .args([
            "transcribe",
            "--model",
            path_str(&tiny_model()),
            path_str(&short_wav()),
        ])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("cannot load ONNX Runtime from /nonexistent/libonnxruntime.so"),
        "{stderr}"
    );
    assert!(stderr.contains("scripts/setup.sh"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // With the data directory elsewhere and no variable, the runtime is simply not found.
    let empty_home = tempfile::tempdir().unwrap();
    let output = medscribe()
        .args([
            "transcribe",
            "--model",
            path_str(&tiny_model()),
            path_str(&short_wav()),
        ])
        .env("MEDSCRIBE_HOME", empty_home.path())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("ONNX Runtime library not found"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn several_files_print_headers_and_help_explains() {
    let long = fixture("audio/dictation-long.wav");
    let (code, stdout, stderr) = transcribe(&[
        "--model",
        path_str(&tiny_model()),
        path_str(&short_wav()),
        path_str(&long),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&format!("==> {} <==\n", path_str(&short_wav()))));
    assert!(stdout.contains(&format!("\n==> {} <==\n", path_str(&long))));

    let help = medscribe().args(["transcribe", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for word in [
        "--model",
        "--format",
        "--output",
        "--threads",
        "--force",
        "--segment",
        "32-bit float",
        "medscribe: FILE: reason",
    ] {
        assert!(help.contains(word), "--help mentions {word}");
    }
}

#[test]
fn output_directory_must_exist() {
    let (code, _, stderr) = transcribe(&[
        "--model",
        path_str(&tiny_model()),
        "--output",
        "/nonexistent-dir",
        path_str(&short_wav()),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("output directory /nonexistent-dir does not exist"),
        "{stderr}"
    );
}
