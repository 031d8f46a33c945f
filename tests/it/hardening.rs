//! Hostile and careless input through the real binary (issue 15): folders full of links, outputs
//! that would overwrite each other, a loose umask, WAV files left by streaming writers, letters
//! that cannot be written where asked, and sampling settings that are not numbers.

use crate::common;

use std::path::Path;

use assert_cmd::Command;
use common::*;

fn medscribe() -> Command {
    Command::cargo_bin("medscribe").expect("binary builds")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let output = medscribe().args(args).output().expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn tiny_model() -> String {
    fixture("medasr-tiny-hf").to_str().unwrap().to_owned()
}

fn short_wav() -> std::path::PathBuf {
    fixture("audio/dictation-short.wav")
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn outputs_that_would_overwrite_each_other_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        std::fs::copy(short_wav(), dir.path().join(sub).join("visit.wav")).unwrap();
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let model = tiny_model();
    let (a, b) = (
        dir.path().join("a/visit.wav"),
        dir.path().join("b/visit.wav"),
    );
    for force in [false, true] {
        let mut args = vec![
            "transcribe",
            "--model",
            &model,
            "--output",
            text(&out),
            text(&a),
            text(&b),
        ];
        if force {
            args.push("--force");
        }
        let (code, _, stderr) = run(&args);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("b/visit.wav") && stderr.contains("would overwrite"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "nothing written"
        );
    }
}

#[test]
#[cfg(unix)]
fn folder_links_are_entered_once_and_a_loose_umask_gives_private_folders() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    std::fs::create_dir_all(recordings.join("ward")).unwrap();
    std::fs::copy(short_wav(), recordings.join("ward/visit.wav")).unwrap();
    // Two links back to the top: before, this walk grew without end.
    std::os::unix::fs::symlink(&recordings, recordings.join("ward/again")).unwrap();
    std::os::unix::fs::symlink(&recordings, recordings.join("loop")).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let script = format!(
        "umask 000; exec '{}' transcribe --model '{}' --output '{}' '{}'",
        assert_cmd::cargo::cargo_bin("medscribe").display(),
        tiny_model(),
        out.display(),
        recordings.display()
    );
    let output = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("1 transcribed"), "{stderr}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&out.join("ward")),
        0o700,
        "mirrored folder under umask 000"
    );
    assert_eq!(mode(&out.join("ward/visit.txt")), 0o600);
}

#[test]
fn a_wav_left_by_a_streaming_writer_is_read_to_its_end_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(short_wav()).unwrap();
    // The fixture is a plain 44-byte-header WAV: zero its data size, as a recorder that was
    // killed leaves it.
    assert_eq!(&bytes[36..40], b"data");
    bytes[40..44].copy_from_slice(&0u32.to_le_bytes());
    let streamed = dir.path().join("streamed.wav");
    std::fs::write(&streamed, &bytes).unwrap();
    let model = tiny_model();
    let (code, reference, _) = run(&["transcribe", "--model", &model, text(&short_wav())]);
    assert_eq!(code, 0);
    let (code, stdout, stderr) = run(&["transcribe", "--model", &model, text(&streamed)]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, reference, "the whole recording is transcribed");
    assert!(
        stderr.contains("warning") && stderr.contains("streamed.wav"),
        "{stderr}"
    );
    // A header with no audio after it is an error that says so.
    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, &bytes[..44]).unwrap();
    let (code, _, stderr) = run(&["transcribe", "--model", &model, text(&empty)]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no audio samples"), "{stderr}");
}

#[test]
fn a_letter_that_cannot_be_written_where_asked_is_kept_and_says_where() {
    let home = tempfile::tempdir().unwrap();
    let model =
        medscribe_pipeline::models::default_llm_model(&medscribe_pipeline::DataDir::from_env());
    let output = medscribe()
        .env("MEDSCRIBE_HOME", home.path())
        .args(["letter", "--template", "soap", "--transcript", "-"])
        .args(["--max-new-tokens", "80", "--model"])
        .arg(&model)
        .args(["--out", "/nonexistent-folder/letter.md"])
        .write_stdin("Sore throat for two days. Temperature 38.2.\n")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let line = stderr.lines().last().unwrap();
    assert_eq!(
        line.matches("cannot write /nonexistent-folder/letter.md")
            .count(),
        1,
        "said once: {line}"
    );
    let kept: Vec<_> = std::fs::read_dir(home.path().join("letters"))
        .expect("kept in the data directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(line.contains(kept[0].to_str().unwrap()), "{line}");
    let letter = std::fs::read_to_string(&kept[0]).unwrap();
    assert!(letter.contains('#'), "the Markdown letter: {letter}");
}

#[test]
fn sampling_settings_that_are_not_numbers_are_refused() {
    for args in [
        &["generate", "--prompt", "hi", "--repetition-penalty", "NaN"][..],
        &["generate", "--prompt", "hi", "--temperature", "inf"],
        &[
            "letter",
            "--template",
            "soap",
            "--transcript",
            "-",
            "--repetition-penalty",
            "nan",
        ],
    ] {
        let (code, _, stderr) = run(args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains("out of range"), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}
