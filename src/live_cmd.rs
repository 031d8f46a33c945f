//! `medscribe record` (live capture and transcription without a UI) and `medscribe sessions`
//! (list, show, recover, export what was recorded).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use medscribe_asr::{Segment, Transcript};
use medscribe_pipeline::live::{LiveConfig, LiveEvent, LiveSession};
use medscribe_pipeline::output::write_private_atomically;
use medscribe_pipeline::recover::recover_session;
use medscribe_pipeline::session::{clock, find_session, list_sessions, Session, SessionState};
use medscribe_pipeline::source::{list_input_devices, SourceSpec};
use medscribe_pipeline::{render, DataDir, FileTranscript, TranscriptFormat};

use crate::{duration, open_speech, SegmentArg};

/// Where live audio comes from, shared by `record` and `dictate`.
#[derive(Debug, clap::Args)]
pub struct InputArgs {
    /// Capture device, by name or part of it (see --list-devices). Default: the system's default
    /// input.
    #[arg(long, short, value_name = "NAME", conflicts_with_all = ["input_file", "synthetic"])]
    device: Option<String>,

    /// Play a WAV file as if it were the microphone, at real time (for demos and tests).
    #[arg(long, value_name = "WAV", conflicts_with = "synthetic")]
    input_file: Option<PathBuf>,

    /// With --input-file: deliver the file as fast as it can be read instead of at real time.
    #[arg(long, requires = "input_file")]
    fast: bool,

    /// For testing: a generated signal of this many seconds (quiet noise with tone bursts, 16 kHz
    /// mono) instead of a microphone, as fast as possible.
    #[arg(long, value_name = "SECONDS")]
    synthetic: Option<f64>,

    /// Speech model directory (default: the installed default model).
    #[arg(long, short, value_name = "DIR")]
    model: Option<PathBuf>,

    /// Voice activity model (default: Silero VAD as installed by setup).
    #[arg(long, value_name = "FILE")]
    vad_model: Option<PathBuf>,

    /// Threads for the speech model.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
}

impl InputArgs {
    /// The source these arguments name.
    pub fn source(&self) -> SourceSpec {
        if let Some(path) = &self.input_file {
            SourceSpec::File {
                path: path.clone(),
                paced: !self.fast,
            }
        } else if let Some(seconds) = self.synthetic {
            SourceSpec::Synthetic {
                seconds,
                sample_rate: 16_000,
                channels: 1,
            }
        } else {
            SourceSpec::Device(self.device.clone())
        }
    }

    /// Loads the speech model and VAD (live transcription always cuts by voice activity).
    pub fn speech(
        &self,
        ort_lib: Option<&Path>,
        data: &DataDir,
    ) -> Result<(
        Box<dyn medscribe_asr::SpeechRecognizer>,
        Box<dyn medscribe_pipeline::segmenter::SpeechProbability + Send>,
    )> {
        let (recognizer, _, vad) = open_speech(
            self.model.as_deref(),
            Some(SegmentArg::Vad),
            self.vad_model.as_deref(),
            self.threads,
            ort_lib,
            data,
        )?;
        let vad = vad.context("the voice activity model did not load")?;
        Ok((recognizer, Box::new(vad)))
    }
}

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Stop after this long: seconds, or with a unit (90s, 45m, 2h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_duration: Option<f64>,

    /// List the capture devices and exit.
    #[arg(long)]
    list_devices: bool,
}

fn parse_duration(text: &str) -> std::result::Result<f64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit {unit:?}: use s, m or h")),
    };
    match number.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value * scale),
        _ => Err(format!(
            "{text:?} is not a positive duration (e.g. 90s, 45m, 2h)"
        )),
    }
}

fn list_devices() -> Result<ExitCode> {
    let devices = list_input_devices()?;
    if devices.is_empty() {
        bail!("no audio input devices found (use --input-file WAV to play a recording instead)");
    }
    for device in devices {
        let format = device.format.map_or(String::new(), |f| {
            format!("  ({} Hz, {} ch)", f.sample_rate, f.channels)
        });
        let default = if device.is_default { "  [default]" } else { "" };
        println!("{}{format}{default}", device.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates a session and starts the live pipeline into it; if the source cannot be opened,
/// nothing was recorded and no empty session is left behind.
pub fn start_live(
    data: &DataDir,
    source: SourceSpec,
    (recognizer, vad): (
        Box<dyn medscribe_asr::SpeechRecognizer>,
        Box<dyn medscribe_pipeline::segmenter::SpeechProbability + Send>,
    ),
    config: LiveConfig,
) -> Result<LiveSession> {
    let session = Session::create(data, &medscribe_pipeline::session::now_rfc3339())?;
    LiveSession::start(source, recognizer, vad, session.clone(), config).map_err(|error| {
        let _ = std::fs::remove_dir_all(session.dir());
        error.into()
    })
}

/// `medscribe record`.
pub fn record(args: RecordArgs, ort_lib: Option<&Path>) -> Result<ExitCode> {
    if args.list_devices {
        return list_devices();
    }
    let data = DataDir::from_env();
    let source = args.input.source();
    let (recognizer, vad) = args.input.speech(ort_lib, &data)?;
    let config = LiveConfig {
        max_duration_s: args.max_duration,
        kind: "recording".into(),
        ..LiveConfig::default()
    };
    let live = start_live(&data, source, (recognizer, vad), config)?;
    let session = live.session().clone();
    let stop = live.stop_flag();
    install_interrupt(Arc::clone(&stop));
    let format = live.format();
    eprintln!(
        "medscribe: recording {} ({} Hz, {} ch) to {}; Ctrl-C stops",
        live.source_name(),
        format.sample_rate,
        format.channels,
        session.dir().display()
    );
    let status = std::io::stderr().is_terminal();
    let mut stdout = std::io::stdout().lock();
    let mut failed = None;
    for event in live.events().iter() {
        match event {
            LiveEvent::Level { dbfs, recorded_s } if status => {
                eprint!("\r\x1b[2K● {}  {dbfs:>4.0} dBFS", clock(recorded_s));
            }
            LiveEvent::Final(line) if !line.text.is_empty() => {
                if status {
                    eprint!("\r\x1b[2K");
                }
                writeln!(stdout, "{}", line.text)?;
                stdout.flush()?;
            }
            LiveEvent::Warning(message) => {
                if status {
                    eprint!("\r\x1b[2K");
                }
                eprintln!("medscribe: warning: {message}");
            }
            LiveEvent::Stopped { recorded_s, error } => {
                if status {
                    eprint!("\r\x1b[2K");
                }
                eprintln!(
                    "medscribe: recorded {} to {}",
                    duration(recorded_s),
                    session.dir().display()
                );
                if let Some(error) = error {
                    failed.get_or_insert(error);
                }
            }
            _ => {}
        }
    }
    live.join();
    match failed {
        Some(problem) => bail!("{problem}"),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Ctrl-C (or SIGTERM) asks the pipeline to stop and finish its files; a second one exits at
/// once (the recording is still playable: its header is at most a second behind).
fn install_interrupt(stop: Arc<AtomicBool>) {
    let _ = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
}

#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    command: SessionsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SessionsCommand {
    /// List sessions, oldest first, with their state.
    List,
    /// Show one session's details and transcript.
    Show {
        /// Session name, a unique start of it, `latest`, or its directory.
        session: String,
    },
    /// Repair and finish sessions whose recording was cut off (crash, kill, power cut): makes
    /// the WAV header count all the audio on disk and transcribes what was not yet transcribed.
    Recover {
        /// Sessions to recover (default: every interrupted one).
        sessions: Vec<String>,
        #[command(flatten)]
        speech: RecoverSpeech,
    },
    /// Write a session's transcript as txt, json, srt or vtt.
    Export {
        /// Session name, a unique start of it, `latest`, or its directory.
        session: String,
        /// Output format.
        #[arg(long, short, default_value = "txt", value_name = "FORMAT")]
        format: TranscriptFormat,
        /// Write to FILE (readable by you only) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
struct RecoverSpeech {
    /// Speech model directory (default: the installed default model).
    #[arg(long, short, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Voice activity model (default: Silero VAD as installed by setup).
    #[arg(long, value_name = "FILE")]
    vad_model: Option<PathBuf>,
}

fn describe_state(session: &Session) -> (String, String, String, String) {
    match session.meta() {
        Ok(meta) => {
            let state = match meta.state {
                SessionState::Complete => "complete".to_string(),
                _ if session.is_interrupted(&meta) => "interrupted (sessions recover)".to_string(),
                _ => "recording".to_string(),
            };
            let audio = medscribe_pipeline::WavSource::open(&session.audio_path())
                .map(|wav| clock(wav.info().duration_s()))
                .unwrap_or_else(|_| "--:--:--".into());
            (meta.kind, state, audio, meta.source)
        }
        Err(error) => (
            "?".into(),
            format!("unreadable: {error}"),
            "--:--:--".into(),
            String::new(),
        ),
    }
}

/// `medscribe sessions ...`.
pub fn sessions(args: SessionsArgs, ort_lib: Option<&Path>) -> Result<ExitCode> {
    let data = DataDir::from_env();
    match args.command {
        SessionsCommand::List => {
            let sessions = list_sessions(&data)?;
            if sessions.is_empty() {
                eprintln!(
                    "medscribe: no sessions yet in {}",
                    medscribe_pipeline::session::sessions_dir(&data).display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<26} {:<10} {:<9} {:>8}  STATE",
                "SESSION", "KIND", "AUDIO", "SEGMENTS"
            );
            for (session, _) in sessions {
                let (kind, state, audio, _) = describe_state(&session);
                let segments = session
                    .transcript()
                    .map_or("?".to_string(), |lines| lines.len().to_string());
                println!(
                    "{:<26} {kind:<10} {audio:<9} {segments:>8}  {state}",
                    session.id()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Show { session } => {
            let session = find_session(&data, &session)?;
            let (kind, state, audio, source) = describe_state(&session);
            println!("session   {}", session.id());
            println!("directory {}", session.dir().display());
            println!("kind      {kind}");
            println!("state     {state}");
            println!("audio     {audio} from {source}");
            if let Ok(meta) = session.meta() {
                println!("started   {}", meta.created);
                println!("model     {}", meta.asr_model);
            }
            println!();
            for line in session.transcript()? {
                println!("[{}] {}", clock(line.start_s), line.text);
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Recover { sessions, speech } => {
            recover(&data, &sessions, &speech, ort_lib)
        }
        SessionsCommand::Export {
            session,
            format,
            out,
            force,
        } => {
            let session = find_session(&data, &session)?;
            let text = export(&session, format)?;
            match out {
                None => print!("{text}"),
                Some(path) => {
                    if path.exists() && !force {
                        bail!("{} exists; pass --force to replace it", path.display());
                    }
                    write_private_atomically(&path, text.as_bytes())?;
                    eprintln!("medscribe: wrote {}", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn export(session: &Session, format: TranscriptFormat) -> Result<String> {
    let meta = session.meta()?;
    if meta.state == SessionState::Recording {
        // Its lock says whether anyone is still writing it.
        let why = if session.is_being_recorded(&meta) {
            "is still being recorded"
        } else {
            "was interrupted (medscribe sessions recover finishes it)"
        };
        eprintln!(
            "medscribe: warning: session {} {why}; the export holds what was transcribed so far",
            session.id()
        );
    }
    let lines = session.transcript()?;
    let join = |pick: fn(&medscribe_pipeline::session::TranscriptLine) -> &str| {
        lines.iter().map(pick).collect::<Vec<_>>().join(" ")
    };
    let duration_s = medscribe_pipeline::WavSource::open(&session.audio_path())
        .map(|wav| wav.info().duration_s())
        .unwrap_or(meta.transcribed_s);
    let transcript = Transcript {
        raw_text: join(|l| &l.raw_text),
        text: join(|l| &l.text),
        segments: lines
            .iter()
            .map(|l| Segment {
                start_s: l.start_s,
                end_s: l.end_s,
                raw_text: l.raw_text.clone(),
                text: l.text.clone(),
            })
            .collect(),
        duration_s,
    };
    Ok(render(
        &FileTranscript {
            file: session.audio_path(),
            model: meta.asr_model,
            transcript,
            processing_s: 0.0,
            warnings: Vec::new(),
        },
        format,
    ))
}

fn recover(
    data: &DataDir,
    wanted: &[String],
    speech: &RecoverSpeech,
    ort_lib: Option<&Path>,
) -> Result<ExitCode> {
    let targets: Vec<Session> = if wanted.is_empty() {
        let mut targets = Vec::new();
        for (session, meta) in list_sessions(data)? {
            match meta {
                Ok(meta) if session.is_interrupted(&meta) => targets.push(session),
                Ok(_) => {}
                // `sessions list` shows these too: say why they are left alone.
                Err(error) => eprintln!("medscribe: warning: {error} (left as it is)"),
            }
        }
        targets
    } else {
        wanted
            .iter()
            .map(|name| find_session(data, name))
            .collect::<std::result::Result<_, _>>()?
    };
    if targets.is_empty() {
        eprintln!("medscribe: no interrupted sessions; nothing to recover");
        return Ok(ExitCode::SUCCESS);
    }
    let (mut recognizer, _, vad) = open_speech(
        speech.model.as_deref(),
        Some(SegmentArg::Vad),
        speech.vad_model.as_deref(),
        1,
        ort_lib,
        data,
    )?;
    let mut vad = vad.context("the voice activity model did not load")?;
    let mut failures = 0;
    for session in targets {
        match recover_session(&session, &mut *recognizer, &mut vad) {
            Ok(done) => eprintln!(
                "medscribe: recovered {}: {} of audio ({} were not in the header), {} new segments from {}",
                session.id(),
                duration(done.duration_s),
                duration(done.restored_s),
                done.added.len(),
                clock(done.resumed_at_s)
            ),
            Err(error) => {
                failures += 1;
                eprintln!("medscribe: {error}");
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
