//! The dictation TUI end to end (issue 6): the real binary inside tmux at 80x24, a recording
//! played as the microphone, keys sent as a user would, and the screen and session files checked.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Tmux {
    socket: String,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "dictate"])
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = self
            .command()
            .args(["send-keys", "-t", "dictate"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the screen shows `text`; fails with the screen after `seconds`.
    fn wait_for(&self, text: &str, seconds: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} did not appear within {seconds} s; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

fn wait_for_file(path: &Path, seconds: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{} was not written within {seconds} s", path.display());
}

/// Starts `medscribe dictate` on the sample dictation in a fresh tmux server at 80x24; its exit
/// status lands in the returned file.
fn launch(home: &Path) -> (Tmux, PathBuf) {
    launch_with(home, &[])
}

/// [`launch`] with more arguments (plain words: they are quoted for the shell as they are).
fn launch_with(home: &Path, args: &[&str]) -> (Tmux, PathBuf) {
    launch_playing(home, "samples/referral-dictation.wav", args)
}

/// [`launch_with`] playing the recording `wav` (relative to the repository).
fn launch_playing(home: &Path, wav: &str, args: &[&str]) -> (Tmux, PathBuf) {
    let rc = home.join("rc");
    let args: String = args.iter().map(|a| format!(" '{a}'")).collect();
    let script = format!(
        "MEDSCRIBE_HOME='{}' '{}' dictate --input-file '{}'{args}; echo $? > '{}'; sleep 60",
        home.display(),
        env!("CARGO_BIN_EXE_medscribe"),
        repo().join(wav).display(),
        rc.display()
    );
    let tmux = Tmux {
        socket: format!(
            "medscribe-test-{}-{}",
            std::process::id(),
            home.file_name().unwrap().to_string_lossy()
        ),
    };
    let started = tmux
        .command()
        .args([
            "new-session",
            "-d",
            "-s",
            "dictate",
            "-x",
            "80",
            "-y",
            "24",
            &script,
        ])
        .status()
        .expect("tmux is installed (scripts/setup.sh installs it)");
    assert!(started.success());
    (tmux, rc)
}

#[test]
fn dictate_edit_write_and_save_a_letter_in_tmux() {
    if !common::slow_tier() {
        return;
    }
    let home = data_home_with_models();
    let (tmux, rc) = launch(home.path());
    tmux.wait_for("Press space and speak.", 30);
    tmux.keys(&["Space"]);
    tmux.wait_for("REC", 10);
    // Words appear while the recording plays, then the segment settles when it ends.
    let screen = tmux.wait_for("cardiology", 60);
    assert!(screen.contains("Transcript"), "{screen}");
    tmux.wait_for("STOPPED", 60);
    tmux.wait_for("00:00 Referral", 10);

    // Correct the segment in place.
    tmux.keys(&["e", "End", " Thank you", "Enter"]);
    tmux.wait_for("Thank you", 10);
    let session = only_session(home.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(session.join("transcript.jsonl"))
        .unwrap()
        .contains("Thank you")
    {
        assert!(
            Instant::now() < deadline,
            "the correction reaches transcript.jsonl"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Write the letter with the default model, save it, quit.
    tmux.keys(&["g"]);
    tmux.wait_for("done, s saves", 180);
    tmux.keys(&["s"]);
    tmux.wait_for("saved", 10);
    tmux.keys(&["q"]);
    assert_eq!(wait_for_file(&rc, 30).trim(), "0");

    let letter = std::fs::read_to_string(session.join("letters/referral.md")).unwrap();
    assert!(letter.starts_with("# Referral letter"), "{letter}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(session.join("letters/referral.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["template"], "referral");
    let fhir: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(session.join("letters/referral.fhir.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(fhir["resourceType"], "Bundle");
    assert_eq!(fhir["type"], "document");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("session.json")).unwrap())
            .unwrap();
    assert_eq!(meta["state"], "complete");
    assert_eq!(meta["kind"], "dictation");
    let wav = hound::WavReader::open(session.join("audio.wav")).unwrap();
    assert!(wav.duration() > 19 * 16_000);
}

#[test]
fn a_letter_drafted_on_a_letter_server_reaches_the_tui() {
    if !common::slow_tier() {
        return;
    }
    // Another medscribe serves the letter model over OpenAI's API.
    let server = crate::serve::Server::start(&[]);
    let (_, models) = server.curl("/v1/models", &[]);
    let models: serde_json::Value = serde_json::from_str(&models).unwrap();
    let model = models["data"][1]["id"].as_str().unwrap().to_owned();
    let home = data_home_with_models();
    let (tmux, rc) = launch_with(
        home.path(),
        &[
            "--letter-server",
            &server.url,
            "--letter-server-model",
            &model,
        ],
    );
    tmux.wait_for("Press space and speak.", 30);
    tmux.keys(&["Space"]);
    tmux.wait_for("STOPPED", 90);
    tmux.keys(&["g"]);
    // The sections stream into the letter pane as the server writes them.
    tmux.wait_for("done, s saves", 180);
    tmux.keys(&["s"]);
    tmux.wait_for("saved", 10);
    tmux.keys(&["q"]);
    assert_eq!(wait_for_file(&rc, 30).trim(), "0");
    let session = only_session(home.path());
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(session.join("letters/referral.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["model"], model.as_str());
    let first_warning = json["warnings"][0].as_str().unwrap();
    assert!(
        first_warning.starts_with(&format!("drafted by the letter server at {}", server.url)),
        "{first_warning}"
    );
}

#[test]
fn sigterm_finishes_the_session_and_restores_the_terminal() {
    if !common::slow_tier() {
        return;
    }
    let home = data_home_with_models();
    let (tmux, rc) = launch(home.path());
    tmux.wait_for("Press space and speak.", 30);
    tmux.keys(&["Space"]);
    tmux.wait_for("cardiology", 60);
    let session = only_session(home.path());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("session.json")).unwrap())
            .unwrap();
    let pid = meta["pid"].as_u64().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(wait_for_file(&rc, 30).trim(), "0");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("session.json")).unwrap())
            .unwrap();
    assert_eq!(meta["state"], "complete");
    let screen = tmux.wait_for("medscribe: session", 10);
    assert!(
        !screen.contains("Transcript"),
        "the terminal is back: {screen}"
    );
    assert!(hound::WavReader::open(session.join("audio.wav")).is_ok());
}

#[test]
fn a_consultation_gets_speakers_when_recording_stops_and_a_named_one_is_saved() {
    if !slow_tier() {
        return;
    }
    let home = data_home_with_models();
    let (tmux, rc) = launch_playing(
        home.path(),
        "samples/case-conference.wav",
        &["--fast", "--speakers", "3"],
    );
    tmux.wait_for("PAUSED", 60);
    tmux.keys(&["Space"]);
    // The file ends, capture stops, then the speakers are told apart.
    let screen = tmux.wait_for("3 speakers told apart", 180);
    assert!(
        screen.contains(" S1: ") && screen.contains(" S2: "),
        "{screen}"
    );
    tmux.keys(&["n"]);
    tmux.wait_for("Name speaker", 10);
    tmux.keys(&["Dr Patel", "Enter"]);
    tmux.wait_for("Dr Patel: ", 10);
    tmux.keys(&["q"]);
    assert_eq!(wait_for_file(&rc, 60).trim(), "0");
    let session = only_session(home.path());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("session.json")).unwrap())
            .unwrap();
    assert_eq!(meta["speakers"], "3");
    let named: Vec<&str> = meta["speaker_names"]
        .as_object()
        .expect("a name was saved")
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(named, ["Dr Patel"]);
    let transcript = std::fs::read_to_string(session.join("transcript.jsonl")).unwrap();
    assert!(
        transcript.lines().all(|l| l.contains("\"speaker\":")),
        "{transcript}"
    );
}
