//! Live capture end to end with the real binary (issue 6): `record` from a file played as a
//! microphone and from a sound card through ALSA's file plugin, sessions on disk, `sessions`
//! list/show/export/recover, a kill -9 in the middle of a recording, and flat memory over two
//! hours of audio.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DICTATION: &str = "samples/referral-dictation.wav";

fn medscribe(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_medscribe"));
    command.env("MEDSCRIBE_HOME", home);
    command
}

fn pcm16(path: &Path) -> Vec<i16> {
    hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_samples::<i16>()
        .map(|s| s.unwrap())
        .collect()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn transcript_lines(session: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(session.join("transcript.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn meta(session: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(session.join("session.json")).unwrap()).unwrap()
}

#[test]
fn record_from_a_file_writes_a_complete_private_session_that_sessions_can_read() {
    if !common::slow_tier() {
        return;
    }
    let home = data_home_with_models();
    let out = medscribe(home.path())
        .args(["record", "--fast", "--input-file"])
        .arg(repo().join(DICTATION))
        .output()
        .unwrap();
    let stdout = success_stdout(&out);
    assert!(
        stdout.contains("cardiology") && stdout.contains("angina"),
        "{stdout}"
    );

    let session = only_session(home.path());
    assert_eq!(mode(&session), 0o700);
    for file in ["audio.wav", "transcript.jsonl", "session.json"] {
        assert_eq!(mode(&session.join(file)), 0o600, "{file}");
    }
    assert_eq!(
        pcm16(&session.join("audio.wav")),
        pcm16(&repo().join(DICTATION)),
        "every sample recorded, bit for bit"
    );
    let lines = transcript_lines(&session);
    assert!(!lines.is_empty());
    let ends: Vec<f64> = lines.iter().map(|l| l["end_s"].as_f64().unwrap()).collect();
    assert!(ends.windows(2).all(|w| w[0] <= w[1]), "{ends:?}");
    let meta = meta(&session);
    assert_eq!(meta["state"], "complete");
    assert_eq!(meta["kind"], "recording");

    let id = session.file_name().unwrap().to_string_lossy().into_owned();
    let list = success_stdout(
        &medscribe(home.path())
            .args(["sessions", "list"])
            .output()
            .unwrap(),
    );
    assert!(list.contains(&id) && list.contains("complete"), "{list}");
    let show = success_stdout(
        &medscribe(home.path())
            .args(["sessions", "show", "latest"])
            .output()
            .unwrap(),
    );
    assert!(show.contains("cardiology") && show.contains(&id), "{show}");
    let srt = success_stdout(
        &medscribe(home.path())
            .args(["sessions", "export", &id[..10], "--format", "srt"])
            .output()
            .unwrap(),
    );
    assert!(srt.starts_with("1\n") && srt.contains(" --> "), "{srt}");
    let file = home.path().join("transcript.txt");
    let export = |force: bool| {
        let mut command = medscribe(home.path());
        command
            .args(["sessions", "export", "latest", "--out"])
            .arg(&file);
        if force {
            command.arg("--force");
        }
        command.output().unwrap()
    };
    success_stdout(&export(false));
    assert_eq!(mode(&file), 0o600);
    assert!(std::fs::read_to_string(&file).unwrap().contains("angina"));
    assert_one_line_error(&export(false), "transcript.txt", "--force");
    success_stdout(&export(true));
}

#[test]
fn record_captures_a_sound_card_through_alsa() {
    if !common::slow_tier() {
        return;
    }
    // ALSA's file plugin stands in for a microphone: it plays raw 16-bit 16 kHz mono from a file.
    let home = data_home_with_models();
    let config = home.path().join("config");
    std::fs::create_dir_all(config.join("alsa")).unwrap();
    let raw = home.path().join("mic.raw");
    let input = pcm16(&repo().join(DICTATION));
    let bytes: Vec<u8> = input.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&raw, bytes).unwrap();
    std::fs::write(
        config.join("alsa/asoundrc"),
        format!(
            "pcm.filein {{\n type file\n slave.pcm \"null\"\n file \"/dev/null\"\n infile \"{}\"\n format \"raw\"\n}}\n",
            raw.display()
        ),
    )
    .unwrap();
    let listed = medscribe(home.path())
        .env("XDG_CONFIG_HOME", &config)
        .args(["record", "--list-devices"])
        .output()
        .unwrap();
    assert!(success_stdout(&listed)
        .lines()
        .any(|l| l.starts_with("filein")));

    // The plugin is not paced and plays zeros after the file: take the file's length.
    let out = medscribe(home.path())
        .env("XDG_CONFIG_HOME", &config)
        .args(["record", "--device", "filein", "--max-duration", "19"])
        .output()
        .unwrap();
    let stdout = success_stdout(&out);
    assert!(stdout.contains("cardiology"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ALSA lib"),
        "ALSA's own noise stays hidden: {stderr}"
    );
    let session = only_session(home.path());
    let recorded = pcm16(&session.join("audio.wav"));
    assert_eq!(recorded.len(), 19 * 16_000);
    assert_eq!(
        recorded[..],
        input[..recorded.len()],
        "recorded bit for bit"
    );
    assert_eq!(meta(&session)["source"], "filein");
}

#[test]
fn a_capture_that_cannot_start_is_one_line_and_leaves_no_session() {
    let home = data_home_with_models();
    let out = medscribe(home.path())
        .args(["record", "--device", "no-such-microphone"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "no-such-microphone", "no audio input device");
    let corrupt = home.path().join("corrupt.wav");
    std::fs::write(&corrupt, b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
    let out = medscribe(home.path())
        .args(["record", "--input-file"])
        .arg(&corrupt)
        .output()
        .unwrap();
    assert_one_line_error(&out, "corrupt.wav", "WAV");
    let sessions = home.path().join("sessions");
    assert_eq!(std::fs::read_dir(sessions).unwrap().count(), 0);
}

#[test]
fn dictate_without_a_terminal_says_so_in_one_line() {
    let home = data_home_with_models();
    let out = medscribe(home.path())
        .args(["dictate", "--synthetic", "1"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "dictate", "needs a terminal");
    assert!(!home.path().join("sessions").exists());
}

#[test]
fn kill_9_loses_at_most_a_second_and_recover_finishes_the_session() {
    if !common::slow_tier() {
        return;
    }
    let home = data_home_with_models();
    let mut child = medscribe(home.path())
        .args(["record", "--input-file"])
        .arg(repo().join(DICTATION))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The file source starts its clock before this line is printed, so audio delivered by the
    // time of the kill is at least the time since the line.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let started = Instant::now();
    assert!(line.contains("recording"), "{line}");
    std::thread::sleep(Duration::from_millis(6_500));
    child.kill().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    child.wait().unwrap();

    let session = only_session(home.path());
    let recorded = pcm16(&session.join("audio.wav"));
    let input = pcm16(&repo().join(DICTATION));
    let kept_s = recorded.len() as f64 / 16_000.0;
    assert!(
        kept_s >= elapsed - 1.0 - 0.25,
        "a playable file with all but the last second: {kept_s:.2} s of {elapsed:.2} s"
    );
    assert_eq!(recorded[..], input[..recorded.len()]);
    let list = success_stdout(
        &medscribe(home.path())
            .args(["sessions", "list"])
            .output()
            .unwrap(),
    );
    assert!(list.contains("interrupted"), "{list}");

    let out = medscribe(home.path())
        .args(["sessions", "recover"])
        .output()
        .unwrap();
    success_stdout(&out);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("recovered"), "{report}");
    let repaired = pcm16(&session.join("audio.wav"));
    assert!(repaired.len() >= recorded.len());
    assert_eq!(repaired[..], input[..repaired.len()]);
    assert_eq!(meta(&session)["state"], "complete");
    let text: String = transcript_lines(&session)
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(text.contains("cardiology"), "{text}");
    let again = medscribe(home.path())
        .args(["sessions", "recover"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to recover"));
}

fn peak_rss_of_record(home: &Path, seconds: u32) -> (u64, PathBuf) {
    let mut child = medscribe(home)
        .args(["record", "--synthetic", &seconds.to_string(), "--model"])
        .arg(fixture("medasr-tiny-hf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let peak = peak_rss_until_exit(&mut child, Duration::from_millis(20));
    assert!(child.wait().unwrap().success());
    let mut sessions: Vec<PathBuf> = std::fs::read_dir(home.join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sessions.sort();
    (peak, sessions.pop().unwrap())
}

#[test]
fn two_hours_of_recording_keep_memory_flat() {
    if !common::slow_tier() {
        return;
    }
    let home = data_home_with_models();
    let (short_kb, _) = peak_rss_of_record(home.path(), 60);
    let (long_kb, session) = peak_rss_of_record(home.path(), 7_200);
    let growth_mb = (long_kb as f64 - short_kb as f64) / 1024.0;
    eprintln!("peak RSS: 1 min {short_kb} kB, 2 h {long_kb} kB, growth {growth_mb:.1} MB");
    // Measured 0.7-1.4 MB. Holding the audio would take 460 MB (16 kHz float, two hours); the limit
    // leaves room for allocator noise on other machines, not for anything that grows with time.
    assert!(
        growth_mb < 16.0,
        "memory grew {growth_mb:.1} MB over two hours"
    );
    let wav = hound::WavReader::open(session.join("audio.wav")).unwrap();
    assert_eq!(wav.duration(), 7_200 * 16_000);
}
