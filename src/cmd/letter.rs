//! `medscribe letter`: dictation or transcript in, structured letter out.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use medscribe_llm::letter::render::{render, Format};
use medscribe_llm::letter::{DeviceName, LetterEvent, LetterOutcome, TranscriptSegment};
use medscribe_pipeline::{DataDir, Speech, SpeechOptions};

use super::{LetterModelArgs, LetterServerArgs, SegmentArg};
use medscribe_pipeline::render::{speaker_count, speaker_name};
use medscribe_pipeline::speakers::Speakers;

#[derive(Debug, clap::Args)]
pub struct LetterArgs {
    /// Dictation recordings (WAV), transcribed in order as one dictation.
    #[arg(
        long,
        value_name = "WAV",
        required_unless_present = "transcript",
        conflicts_with = "transcript"
    )]
    audio: Vec<PathBuf>,

    /// Start from a transcript (text file, or - for stdin) instead of audio.
    #[arg(long, value_name = "FILE")]
    transcript: Option<PathBuf>,

    /// Letter template (see `medscribe templates`): referral, discharge, radiology, soap,
    /// case-conference, or one of your own.
    #[arg(long, short, value_name = "NAME")]
    template: String,

    /// Images (PNG or JPEG) for the model to look at; needs a multimodal model (MedGemma 4B).
    #[arg(long, value_name = "IMG")]
    image: Vec<PathBuf>,

    /// Write the letter without the images when the model cannot see them.
    #[arg(long)]
    no_images: bool,

    /// Letter model: a Hugging Face directory or a .gguf file. Default: Gemma 3 270M from setup.
    #[arg(long, short, value_name = "PATH")]
    model: Option<PathBuf>,

    /// Speech model directory (Moonshine or a MedASR export). Default: Moonshine base-en.
    #[arg(long, value_name = "DIR")]
    asr_model: Option<PathBuf>,

    /// How the audio is cut before recognition (default: vad, fixed for MedASR).
    #[arg(long, value_enum, value_name = "HOW")]
    segment: Option<SegmentArg>,

    /// Output format: md (Markdown), json (the structured letter), txt, fhir (FHIR R4 document
    /// Bundle).
    #[arg(long, short, default_value = "md", value_name = "FORMAT")]
    format: String,

    /// Write the letter to FILE (readable by you only) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,

    /// Where the letter model runs: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceName,

    #[command(flatten)]
    writing: LetterModelArgs,

    #[command(flatten)]
    server: LetterServerArgs,

    /// Tell the speakers of the recording apart (`auto` or how many there are), for a
    /// consultation. With --clinician the letter writer reads each turn as the clinician's or
    /// the patient's words (as it reads `[doctor]` / `[patient]` transcripts).
    #[arg(long, value_name = "auto|N", value_parser = super::transcribe::parse_speakers)]
    speakers: Option<medscribe_asr::diarize::Clusters>,

    /// Which speakers are clinicians, by label as `medscribe speakers` prints them (S1, or
    /// S1,S3); everyone else is read as the patient (or a relative) speaking.
    #[arg(
        long,
        value_name = "S1,..",
        value_delimiter = ',',
        requires = "speakers"
    )]
    clinician: Vec<String>,
}

/// The role tag the letter writer reads at the start of a turn, for `speaker` when the user
/// said who the clinicians are.
fn role_tag(speaker: Option<usize>, clinicians: &[String]) -> &'static str {
    match speaker {
        _ if clinicians.is_empty() => "",
        Some(s) if clinicians.contains(&speaker_name(Some(s))) => "Clinician: ",
        Some(_) => "Patient: ",
        None => "",
    }
}

fn transcript_from_text(path: &Path) -> Result<Vec<TranscriptSegment>> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the transcript from stdin")?;
        text
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read transcript {}", path.display()))?
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(TranscriptSegment::untimed)
        .collect())
}

impl LetterArgs {
    /// How these arguments have letters written.
    pub fn writer_settings(&self) -> medscribe_llm::letter::LetterSettings {
        self.writing.settings(self.device)
    }
}

/// Writes the letter.
pub fn letter(args: LetterArgs, ort_lib: Option<PathBuf>) -> Result<ExitCode> {
    let started = Instant::now();
    let data = DataDir::from_env();
    let interactive = std::io::stderr().is_terminal();
    let Some(format) = Format::parse(&args.format) else {
        bail!("--format {}: expected md, json, txt or fhir", args.format);
    };
    if let Some(out) = &args.out {
        if out.exists() && !args.force {
            bail!("{} exists; pass --force to replace it", out.display());
        }
    }
    let template = super::load_templates().find(&args.template)?.clone();
    let mut writer = super::letter_writer(
        &args.server,
        args.model.as_deref(),
        args.writer_settings(),
        &data,
    )?;
    let model_path = writer.model_path().to_path_buf();

    let transcript = match &args.transcript {
        Some(path) => transcript_from_text(path)?,
        None => transcribe(&args, ort_lib, &data, interactive)?,
    };
    if transcript.iter().all(|s| s.text.trim().is_empty()) {
        bail!("the transcript is empty: no speech was recognised, so there is nothing to write");
    }

    if interactive && writer.server().is_none() {
        eprintln!("medscribe: loading letter model {}", model_path.display());
    }
    let images: &[PathBuf] = if !args.image.is_empty() && !writer.sees_images()? {
        if !args.no_images {
            bail!(
                "{} has no vision tower, so it cannot look at the images; pass --no-images to write the letter without them, or use a multimodal model (MedGemma 4B)",
                model_path.display()
            );
        }
        eprintln!(
            "medscribe: the letter model cannot see images; writing without them (--no-images)"
        );
        &[]
    } else {
        &args.image
    };
    let mut err = std::io::stderr().lock();
    let mut tokens = 0usize;
    let writing = Instant::now();
    let outcome = writer.write(
        &template,
        &transcript,
        images,
        &medscribe_pipeline::timestamp::now_rfc3339(),
        &AtomicBool::new(false),
        &mut |event| {
            if !interactive {
                return;
            }
            let _ = match event {
                LetterEvent::Loading(_) => Ok(()),
                LetterEvent::Server(server) => write!(
                    err,
                    "medscribe: writing a {} on {server}",
                    template.title.to_lowercase()
                ),
                LetterEvent::Prompt(n) => write!(
                    err,
                    "medscribe: writing a {} ({n} prompt tokens)",
                    template.title.to_lowercase()
                ),
                LetterEvent::Section(key) => {
                    let title = template
                        .section(&key)
                        .map_or(key.clone(), |s| s.title.clone());
                    write!(err, "\n\n## {title}\n")
                }
                LetterEvent::Text(text) => {
                    tokens += 1;
                    write!(err, "{text}")
                }
            };
            let _ = err.flush();
        },
    )?;
    // Nothing here sets the cancel flag.
    let LetterOutcome::Written(letter) = outcome else {
        bail!("the letter was cancelled");
    };
    if interactive {
        let _ = writeln!(
            err,
            "\n\nmedscribe: {tokens} tokens in {:.1} s; {:.1} s in all",
            writing.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    for warning in &letter.warnings {
        let _ = writeln!(err, "medscribe: warning: {warning}");
    }
    let rendered = render(&letter, format);
    match &args.out {
        Some(out) => {
            if let Err(error) =
                medscribe_pipeline::output::write_private_atomically(out, rendered.as_bytes())
            {
                // Minutes of generation are not thrown away with a full or read-only disk.
                let kept = keep_unsaved_letter(&data, out, &rendered);
                bail!("{error}; {kept}");
            }
            if interactive {
                let _ = writeln!(err, "medscribe: letter written to {}", out.display());
            }
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(rendered.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps a letter that could not be written where the user asked (see
/// [`medscribe_pipeline::output::keep_unsaved`]), or failing that prints it on stdout; says where
/// it went.
fn keep_unsaved_letter(data: &DataDir, wanted: &Path, rendered: &str) -> String {
    match medscribe_pipeline::output::keep_unsaved(data, wanted, rendered.as_bytes()) {
        Ok(kept) => format!("the letter was kept in {}", kept.display()),
        Err(_) => {
            let mut stdout = std::io::stdout().lock();
            let printed = stdout
                .write_all(rendered.as_bytes())
                .and_then(|()| stdout.flush());
            match printed {
                Ok(()) => "the letter was printed on standard output instead".into(),
                Err(_) => "the letter could not be kept anywhere".into(),
            }
        }
    }
}

/// A recognised segment as the letter writer takes it, `offset_s` later (dictations in several
/// files run on in time).
pub fn letter_segment(segment: &medscribe_asr::Segment, offset_s: f64) -> TranscriptSegment {
    TranscriptSegment::timed(
        offset_s + segment.start_s,
        offset_s + segment.end_s,
        segment.text.trim(),
    )
}

/// Transcribes the dictation files in order into one transcript, times running on across files.
fn transcribe(
    args: &LetterArgs,
    ort_lib: Option<PathBuf>,
    data: &DataDir,
    interactive: bool,
) -> Result<Vec<TranscriptSegment>> {
    let mut speech = Speech::open(
        &SpeechOptions {
            model: args.asr_model.clone(),
            segmentation: args.segment.map(Into::into),
            ort_lib,
            ..SpeechOptions::default()
        },
        data,
    )?;
    if args.speakers.is_some() && args.audio.len() > 1 {
        bail!("--speakers takes one recording (speaker labels are numbered per recording)");
    }
    for label in &args.clinician {
        let known = label
            .strip_prefix('S')
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n >= 1);
        if !known {
            bail!("--clinician {label}: expected speaker labels such as S1 or S1,S3");
        }
    }
    let mut speakers = match args.speakers {
        Some(clusters) => Some(Speakers::open(data, clusters, 1, None)?),
        None => None,
    };
    let mut segments = Vec::new();
    let mut offset = 0.0;
    for path in &args.audio {
        if interactive {
            eprint!("medscribe: transcribing {}", path.display());
        }
        // The pipeline's errors already name the file.
        let mut file = speech.transcribe_wav(path, &mut |_, _| {})?;
        if interactive {
            eprintln!(
                " ({:.1} s of audio in {:.1} s)",
                file.transcript.duration_s, file.processing_s
            );
        }
        if let Some(speakers) = speakers.as_mut() {
            speakers.label(path, &mut file.transcript, speech.recognizer.as_mut())?;
            if interactive {
                eprintln!(
                    "medscribe: {} speakers told apart",
                    speaker_count(&file.transcript.segments)
                );
            }
        }
        segments.extend(file.transcript.segments.iter().map(|s| {
            let mut segment = letter_segment(s, offset);
            segment.text = format!("{}{}", role_tag(s.speaker, &args.clinician), segment.text);
            segment
        }));
        offset += file.transcript.duration_s;
    }
    Ok(segments)
}
