//! `medscribe letter` and `medscribe templates`: dictation or transcript in, structured letter out.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use medscribe_llm::letter::constrain::TokenTable;
use medscribe_llm::letter::facts::DrugLexicon;
use medscribe_llm::letter::prompt::PromptStyle;
use medscribe_llm::letter::render::{render, Format};
use medscribe_llm::letter::template::TemplateSet;
use medscribe_llm::letter::{write_letter, LetterEvent, LetterRequest, TranscriptSegment};
use medscribe_pipeline::segmenter::SpeechProbability;
use medscribe_pipeline::{transcribe_wav, DataDir};

use crate::SegmentArg;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StyleArg {
    /// Chat for models named *-it / *instruct*, grounded otherwise.
    Auto,
    /// Chat-template instructions (instruction-tuned models such as MedGemma 4B-it).
    Chat,
    /// The transcript's own statements filed under sections by the model (base models such as
    /// the default Gemma 3 270M: nothing is written that was not said).
    Grounded,
    /// Few-shot completion: a base model writes freely after the template's example.
    Completion,
}

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

    /// The vision part of a .gguf letter model: a llama.cpp mmproj file. Default: the only
    /// mmproj*.gguf beside the model, if there is one.
    #[arg(long, value_name = "FILE")]
    mmproj: Option<PathBuf>,

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

    /// Prompt style.
    #[arg(long, value_enum, default_value = "auto")]
    style: StyleArg,

    /// Most tokens of the whole letter.
    #[arg(long, default_value_t = 768, value_name = "N")]
    max_new_tokens: usize,

    /// Most tokens of one section.
    #[arg(long, default_value_t = 160, value_name = "N")]
    max_section_tokens: usize,

    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    temperature: f32,

    /// Penalise repeated tokens (1: off); small models loop without it.
    #[arg(long, default_value_t = 1.15, value_name = "R")]
    repetition_penalty: f32,

    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Where the letter model runs: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: String,
}

/// The letter guard's medication names as setup built them; `None` (and the letter says so)
/// when they are not installed, an error when the file is there but unreadable.
pub fn drug_lexicon(data: &DataDir) -> Result<Option<DrugLexicon>> {
    let path = medscribe_pipeline::models::drug_lexicon(data);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(DrugLexicon::load(&path)?))
}

/// The built-in and user templates; user files that cannot be used are reported on stderr, one
/// line each, and skipped.
pub fn load_templates() -> TemplateSet {
    let set = TemplateSet::load(Some(&templates_dir()));
    for warning in &set.warnings {
        eprintln!("medscribe: warning: {warning}");
    }
    set
}

/// Lists the templates.
pub fn list_templates() -> Result<ExitCode> {
    let set = load_templates();
    for t in set.templates() {
        let sections: Vec<String> = t
            .sections
            .iter()
            .map(|s| {
                if s.required {
                    format!("{}*", s.key)
                } else {
                    s.key.clone()
                }
            })
            .collect();
        println!(
            "{:<16} {} (LOINC {} {}); sections: {}  [{}]",
            t.name,
            t.title,
            t.loinc.code,
            t.loinc.display,
            sections.join(", "),
            t.source
        );
    }
    println!(
        "* required. Your own templates: {}/NAME.json (same name overrides).",
        templates_dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `$XDG_CONFIG_HOME/medscribe/templates` (or ~/.config/...).
pub(crate) fn templates_dir() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    config.join("medscribe").join("templates")
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
        .map(|l| TranscriptSegment {
            start_s: None,
            end_s: None,
            text: l.to_string(),
            raw_text: None,
        })
        .collect())
}

/// Writes the letter.
pub fn letter(args: LetterArgs, ort_lib: Option<&Path>) -> Result<ExitCode> {
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
    let sampling = medscribe_llm::Sampling {
        temperature: args.temperature,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        max_new_tokens: args.max_new_tokens,
        ..medscribe_llm::Sampling::default()
    };
    sampling.check().map_err(anyhow::Error::msg)?;
    let template = load_templates().find(&args.template)?.clone();
    let drugs = drug_lexicon(&data)?;
    let model_path = crate::letter_model_path(args.model.as_deref(), &data)?;
    let device = crate::letter_device(&args.device)?;

    let transcript = match &args.transcript {
        Some(path) => transcript_from_text(path)?,
        None => transcribe(&args, ort_lib, &data, interactive)?,
    };
    if transcript.iter().all(|s| s.text.trim().is_empty()) {
        bail!("the transcript is empty: no speech was recognised, so there is nothing to write");
    }

    if interactive {
        eprintln!("medscribe: loading letter model {}", model_path.display());
    }
    let mut loaded = medscribe_llm::load_with_mmproj(&model_path, args.mmproj.as_deref(), &device)
        .with_context(|| format!("cannot load letter model {}", model_path.display()))?;
    let images = if args.image.is_empty() || (loaded.vision.is_none() && args.no_images) {
        if !args.image.is_empty() {
            eprintln!(
                "medscribe: the letter model cannot see images; writing without them (--no-images)"
            );
        }
        None
    } else if loaded.vision.is_none() {
        bail!(
            "{} has no vision tower, so it cannot look at the images; pass --no-images to write the letter without them, or use a multimodal model (MedGemma 4B)",
            model_path.display()
        );
    } else {
        Some(loaded.encode_images(&args.image)?)
    };
    let style = match args.style {
        StyleArg::Chat => PromptStyle::Chat,
        StyleArg::Completion => PromptStyle::Completion,
        StyleArg::Grounded => PromptStyle::Grounded,
        StyleArg::Auto => PromptStyle::for_model_path(&model_path),
    };
    let table = TokenTable::new(loaded.tokenizer.text_pieces());
    let request = LetterRequest {
        template: &template,
        transcript: &transcript,
        style,
        images: images.as_ref(),
        sampling,
        max_section_tokens: args.max_section_tokens,
        drugs: drugs.as_ref(),
    };
    let mut err = std::io::stderr().lock();
    let mut tokens = 0usize;
    let writing = Instant::now();
    let letter = write_letter(
        &mut loaded,
        &table,
        &request,
        &AtomicBool::new(false),
        &mut |event| {
            if !interactive {
                return;
            }
            let _ = match event {
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

/// Saves a letter that could not be written where the user asked, under `letters/` in the data
/// directory (mode 0600), or failing that prints it on stdout; says where it went.
fn keep_unsaved_letter(data: &DataDir, wanted: &Path, rendered: &str) -> String {
    let dir = data.root().join("letters");
    let name = format!(
        "unsaved-{}-{}",
        medscribe_llm::letter::now_rfc3339().replace(':', "-"),
        wanted
            .file_name()
            .map_or("letter".into(), |n| n.to_string_lossy().into_owned())
    );
    let fallback = dir.join(name);
    let saved = medscribe_pipeline::output::create_private_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            medscribe_pipeline::output::write_private_atomically(&fallback, rendered.as_bytes())
                .map_err(|e| e.to_string())
        });
    match saved {
        Ok(()) => format!("the letter was kept in {}", fallback.display()),
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

/// Transcribes the dictation files in order into one transcript, times running on across files.
fn transcribe(
    args: &LetterArgs,
    ort_lib: Option<&Path>,
    data: &DataDir,
    interactive: bool,
) -> Result<Vec<TranscriptSegment>> {
    let (mut recognizer, segmentation, mut vad) = crate::open_speech(
        args.asr_model.as_deref(),
        args.segment,
        None,
        1,
        ort_lib,
        data,
    )?;
    let mut segments = Vec::new();
    let mut offset = 0.0;
    for path in &args.audio {
        if interactive {
            eprint!("medscribe: transcribing {}", path.display());
        }
        let file = transcribe_wav(
            path,
            recognizer.as_mut(),
            segmentation,
            vad.as_mut().map(|v| v as &mut dyn SpeechProbability),
            &mut |_, _| {},
        )?; // the pipeline's errors already name the file
        if interactive {
            eprintln!(
                " ({:.1} s of audio in {:.1} s)",
                file.transcript.duration_s, file.processing_s
            );
        }
        segments.extend(file.transcript.segments.iter().map(|s| TranscriptSegment {
            start_s: Some(offset + s.start_s),
            end_s: Some(offset + s.end_s),
            text: s.text.trim().to_string(),
            raw_text: None,
        }));
        offset += file.transcript.duration_s;
    }
    Ok(segments)
}
