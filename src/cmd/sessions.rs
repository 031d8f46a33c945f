//! `medscribe sessions`: list, show, recover or export what was recorded.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use medscribe_pipeline::output::write_private_atomically;
use medscribe_pipeline::recover::recover_session;
use medscribe_pipeline::render::shown_speaker;
use medscribe_pipeline::session::{clock, find_session, list_sessions, Session};
use medscribe_pipeline::speakers::{parse_clusters, Speakers};
use medscribe_pipeline::{DataDir, Speech, SpeechOptions, TranscriptFormat};

use super::duration;

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
    /// Tell the speakers of a finished session apart (again): each line of its transcript gets
    /// its speaker, S1, S2, ...; lines that span a change of speaker are cut there and
    /// transcribed again. Names given before are dropped (the numbering may change).
    Speakers {
        /// Session name, a unique start of it, `latest`, or its directory.
        session: String,
        /// `auto` or how many speakers there are (default: what `record --speakers` asked for,
        /// else auto).
        #[arg(long, value_name = "auto|N", value_parser = super::transcribe::parse_speakers)]
        speakers: Option<medscribe_asr::diarize::Clusters>,
        #[command(flatten)]
        speech: RecoverSpeech,
    },
    /// Name a speaker: `sessions rename latest S1 "Dr Patel"`. Every export and view of the
    /// session then shows the name (json keeps the label in `speaker` and adds `speaker_name`).
    Rename {
        /// Session name, a unique start of it, `latest`, or its directory.
        session: String,
        /// The speaker's label, as exports show it (S1, S2, ...).
        label: String,
        /// The name to show.
        name: String,
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

impl RecoverSpeech {
    fn options(&self, ort_lib: Option<PathBuf>) -> SpeechOptions {
        SpeechOptions {
            model: self.model.clone(),
            vad_model: self.vad_model.clone(),
            ort_lib,
            ..SpeechOptions::default()
        }
    }
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

/// (kind, status, audio length, source) of a session, for listing.
fn describe(session: &Session) -> (String, String, String, String) {
    let audio = session
        .audio_duration_s()
        .map_or_else(|| "--:--:--".into(), clock);
    match session.meta() {
        Ok(meta) => (
            meta.kind.clone(),
            session.status(&meta).to_string(),
            audio,
            meta.source,
        ),
        Err(error) => (
            "?".into(),
            format!("unreadable: {error}"),
            audio,
            String::new(),
        ),
    }
}

/// `medscribe sessions ...`.
pub fn sessions(args: SessionsArgs, ort_lib: Option<PathBuf>) -> Result<ExitCode> {
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
                let (kind, state, audio, _) = describe(&session);
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
            let (kind, state, audio, source) = describe(&session);
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
            let names = session.meta().map(|m| m.speaker_names).unwrap_or_default();
            for line in session.transcript()? {
                match line.speaker {
                    Some(_) => println!(
                        "[{}] {}: {}",
                        clock(line.start_s),
                        shown_speaker(&names, line.speaker),
                        line.text
                    ),
                    None => println!("[{}] {}", clock(line.start_s), line.text),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Speakers {
            session,
            speakers,
            speech,
        } => {
            let session = find_session(&data, &session)?;
            let meta = session.meta()?;
            let clusters = speakers
                .or_else(|| meta.speakers.as_deref().and_then(parse_clusters))
                .unwrap_or_default();
            let mut models = Speakers::open(&data, clusters, 1, ort_lib.as_deref())?;
            let (mut recognizer, _) = Speech::open_live(&speech.options(ort_lib), &data)?;
            let found = session.label_speakers(&mut models, &mut *recognizer)?;
            eprintln!("medscribe: {}: {found} speakers", session.id());
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Rename {
            session,
            label,
            name,
        } => {
            let session = find_session(&data, &session)?;
            session.rename_speaker(&label, &name)?;
            eprintln!(
                "medscribe: {}: {label} is now {}",
                session.id(),
                name.trim()
            );
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
            let export = session.export(format)?;
            if let Some(warning) = &export.warning {
                eprintln!("medscribe: warning: {warning}");
            }
            let text = export.text;
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

fn recover(
    data: &DataDir,
    wanted: &[String],
    speech: &RecoverSpeech,
    ort_lib: Option<PathBuf>,
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
    let (mut recognizer, mut vad) = Speech::open_live(&speech.options(ort_lib.clone()), data)?;
    let mut failures = 0;
    for session in targets {
        // Whether the recording asked for speakers, read before recovery marks it complete.
        let wanted_speakers = session
            .meta()
            .ok()
            .and_then(|m| m.speakers)
            .and_then(|text| parse_clusters(&text));
        match recover_session(&session, &mut *recognizer, &mut *vad) {
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
                continue;
            }
        }
        if let Some(clusters) = wanted_speakers {
            // The labelling the interrupted `record --speakers` never reached.
            let labelled = Speakers::open(data, clusters, 1, ort_lib.as_deref())
                .map_err(anyhow::Error::from)
                .and_then(|mut models| Ok(session.label_speakers(&mut models, &mut *recognizer)?));
            match labelled {
                Ok(found) => eprintln!("medscribe: {}: {found} speakers", session.id()),
                Err(error) => {
                    failures += 1;
                    eprintln!("medscribe: {}: speakers: {error:#}", session.id());
                }
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
