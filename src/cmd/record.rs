//! `medscribe record`: live capture and transcription without a UI, for long case conferences.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use medscribe_asr::diarize::Clusters;
use medscribe_pipeline::live::{LiveConfig, LiveEvent, LiveSession};
use medscribe_pipeline::session::{clock, Session};
use medscribe_pipeline::source::{list_input_devices, SourceSpec};
use medscribe_pipeline::speakers::{clusters_text, Speakers};
use medscribe_pipeline::{DataDir, Speech, SpeechOptions};

use super::duration;

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
    pub threads: usize,
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
        ort_lib: Option<PathBuf>,
        data: &DataDir,
    ) -> Result<(
        Box<dyn medscribe_asr::SpeechRecognizer>,
        Box<dyn medscribe_pipeline::segmenter::SpeechProbability + Send>,
    )> {
        Ok(Speech::open_live(&self.speech_options(ort_lib), data)?)
    }

    /// The diarization models, when `wanted` (opened before anything is recorded, so that a
    /// missing model stops us first).
    pub fn speakers(
        &self,
        wanted: Option<Clusters>,
        ort_lib: Option<&std::path::Path>,
        data: &DataDir,
    ) -> Result<Option<Speakers>> {
        Ok(match wanted {
            Some(clusters) => Some(Speakers::open(data, clusters, self.threads, ort_lib)?),
            None => None,
        })
    }

    /// The speech model options these arguments name.
    pub fn speech_options(&self, ort_lib: Option<PathBuf>) -> SpeechOptions {
        SpeechOptions {
            model: self.model.clone(),
            vad_model: self.vad_model.clone(),
            threads: self.threads,
            ort_lib,
            ..SpeechOptions::default()
        }
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

    /// Tell speakers apart: `auto` or how many there are. Lines get a speaker in the session's
    /// transcript.jsonl (S1, S2, ...) while the recording goes on, about ten seconds behind the
    /// audio; when it ends, all are told apart again, and lines that span a change of speaker
    /// are cut there and transcribed again (`sessions rename` then names them). If the
    /// recording is cut off, `sessions recover` does the final pass.
    #[arg(long, value_name = "auto|N", value_parser = super::transcribe::parse_speakers)]
    speakers: Option<Clusters>,
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
    speakers: Option<Speakers>,
) -> Result<LiveSession> {
    let session = Session::create(data, &medscribe_pipeline::timestamp::now_rfc3339())?;
    LiveSession::start_with_speakers(source, recognizer, vad, session.clone(), config, speakers)
        .map_err(|error| {
            let _ = std::fs::remove_dir_all(session.dir());
            error.into()
        })
}

/// `medscribe record`.
pub fn record(args: RecordArgs, ort_lib: Option<PathBuf>) -> Result<ExitCode> {
    if args.list_devices {
        return list_devices();
    }
    let data = DataDir::from_env();
    let source = args.input.source();
    // The speaker models are opened first, so a missing one stops us before anything is recorded.
    // They label lines while the recording goes on, and all of them again when it ends.
    let speakers = args
        .input
        .speakers(args.speakers, ort_lib.as_deref(), &data)?;
    let (recognizer, vad) = args.input.speech(ort_lib.clone(), &data)?;
    let config = LiveConfig {
        max_duration_s: args.max_duration,
        kind: "recording".into(),
        speakers: args.speakers.map(clusters_text),
        ..LiveConfig::default()
    };
    let mut live = start_live(&data, source, (recognizer, vad), config, speakers)?;
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
    let speakers = live.take_speakers();
    live.join();
    if let Some(problem) = failed {
        return Err(problem.into());
    }
    if let Some(mut speakers) = speakers {
        eprintln!("medscribe: telling speakers apart");
        let (mut recognizer, _) = args.input.speech(ort_lib, &data)?;
        let found = session.label_speakers(&mut speakers, &mut *recognizer)?;
        eprintln!(
            "medscribe: {found} speakers; medscribe sessions export {} shows who said what",
            session.id()
        );
    }
    Ok(ExitCode::SUCCESS)
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
