//! A two-hour 48 kHz stereo recording transcribes with flat memory (issue 2: peak RSS < 500 MB).
//! The WAV is a sparse file (header + zeros), so the test costs no disk space.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn two_hour_48khz_stereo_file_stays_under_500_mb() {
    if !common::slow_tier() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case-conference.wav");
    let (rate, channels, seconds) = (48_000u32, 2u16, 7_200u32);
    let data = rate * u32::from(channels) * 2 * seconds;
    let mut file = std::fs::File::create(&path).unwrap();
    let mut header = Vec::new();
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(36 + data).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&channels.to_le_bytes());
    header.extend_from_slice(&rate.to_le_bytes());
    header.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    header.extend_from_slice(&(channels * 2).to_le_bytes());
    header.extend_from_slice(&16u16.to_le_bytes());
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data.to_le_bytes());
    file.write_all(&header).unwrap();
    file.set_len(header.len() as u64 + u64::from(data)).unwrap();
    drop(file);

    let mut child = Command::new(env!("CARGO_BIN_EXE_medscribe"))
        .args(["transcribe", "--format", "json", "--model"])
        .arg(fixture("medasr-tiny-hf"))
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let peak = peak_rss_until_exit(&mut child, Duration::from_millis(50));
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let object: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(object["duration_s"].as_f64().unwrap(), f64::from(seconds));
    assert!(peak > 0, "peak RSS was measured");
    assert!(peak < 500 * 1024, "peak RSS {} MB", peak / 1024);
    eprintln!("two-hour file: peak RSS {} MB", peak / 1024);
}
