//! `medscribe generate`: text from a Gemma 3 / MedGemma model, streamed as it is produced.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use medscribe_llm::letter::DeviceName;
use medscribe_pipeline::DataDir;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A model directory (config.json, *.safetensors, tokenizer.json) or a .gguf file, which
    /// works on its own (its tokenizer comes from its metadata; a tokenizer.json beside it is
    /// used instead). Default: Gemma 3 270M as installed by setup.
    #[arg(long, short, value_name = "PATH")]
    model: Option<PathBuf>,

    /// The prompt; read from stdin when absent.
    #[arg(long, short, value_name = "TEXT")]
    prompt: Option<String>,

    /// System instructions, folded into the user turn as Gemma's template does.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,

    /// Use the prompt verbatim: no chat template, no <bos> added.
    #[arg(long)]
    raw: bool,

    /// The vision tower and projector of a .gguf model: a llama.cpp mmproj file (projector type
    /// gemma3). Default: the only mmproj*.gguf file beside the model, if there is one.
    #[arg(long, value_name = "FILE")]
    mmproj: Option<PathBuf>,

    /// An image (PNG or JPEG) to show the model; repeat for several, in order. Needs a
    /// multimodal model: a MedGemma 4B directory, or a .gguf with its mmproj file. Templated
    /// prompts get one <start_of_image>
    /// per image before the text; with --raw, each <start_of_image> in the prompt takes the next
    /// image.
    #[arg(long, value_name = "IMG")]
    image: Vec<PathBuf>,

    /// Most tokens to generate.
    #[arg(long, default_value_t = 512, value_name = "N")]
    max_new_tokens: usize,

    /// Sampling temperature; 0 is greedy (deterministic).
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    temperature: f32,

    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    top_k: usize,

    /// Sample only among the most likely tokens whose probabilities reach P.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    top_p: f32,

    /// Penalise tokens already generated (1: off).
    #[arg(long, default_value_t = 1.0, value_name = "R")]
    repetition_penalty: f32,

    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Where the model runs: cpu, or cuda / cuda:N for an NVIDIA GPU (needs a build with
    /// `--features cuda`).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceName,

    /// Print load time and speed on stderr, and which instructions the CPU kernels ran on.
    #[arg(long, short)]
    verbose: bool,
}

/// `medscribe generate`.
pub fn generate(args: GenerateArgs) -> Result<ExitCode> {
    let sampling = medscribe_llm::Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        max_new_tokens: args.max_new_tokens,
    };
    sampling.check().map_err(anyhow::Error::msg)?;
    let path = super::letter_model_path(args.model.as_deref(), &DataDir::from_env())?;
    let prompt = match args.prompt {
        Some(prompt) => prompt,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the prompt from stdin")?;
            text
        }
    };
    if prompt.trim().is_empty() {
        bail!("empty prompt: pass --prompt TEXT or write it to stdin");
    }
    let started = Instant::now();
    let device = args.device.open()?;
    let mut loaded = medscribe_llm::load_with_mmproj(&path, args.mmproj.as_deref(), &device)
        .with_context(|| format!("cannot load letter model {}", path.display()))?;
    let load_s = started.elapsed().as_secs_f64();
    if let (Some(warning), false) = (loaded.chat_template_warning(), args.raw) {
        eprintln!("medscribe: warning: {warning}");
    }
    let text = if args.raw {
        prompt
    } else {
        // Gemma's template puts a turn's images before its text. The user's words are text,
        // never control tokens (`--raw` is for writing those).
        let markers = medscribe_llm::IMAGE_MARKER.repeat(args.image.len());
        let system = args.system.as_deref().map(medscribe_llm::user_text);
        medscribe_llm::chat_prompt(
            system.as_deref(),
            &format!("{markers}{}", medscribe_llm::user_text(prompt.trim())),
        )
    };
    let tokens_per_image = loaded.vision.as_ref().map_or(0, |v| v.tokens_per_image());
    let (text, markers) = medscribe_llm::expand_image_markers(&text, tokens_per_image);
    if markers != args.image.len() {
        bail!(
            "the prompt has {markers} {} marker(s) but {} --image was given: they must match",
            medscribe_llm::IMAGE_MARKER,
            args.image.len()
        );
    }
    if let (false, Some(vision)) = (args.image.is_empty(), loaded.vision.as_ref()) {
        // Read only now that an image needs it; timed apart from the encoding itself.
        let reading_started = Instant::now();
        vision.get().with_context(|| {
            format!(
                "cannot load the vision part of letter model {}",
                path.display()
            )
        })?;
        if args.verbose {
            eprintln!(
                "medscribe: vision tower read in {:.2} s",
                reading_started.elapsed().as_secs_f64()
            );
        }
    }
    let encoding_started = Instant::now();
    let images = if args.image.is_empty() {
        None
    } else {
        Some(loaded.encode_images(&args.image)?)
    };
    if args.verbose && images.is_some() {
        eprintln!(
            "medscribe: {} image(s) encoded in {:.2} s",
            args.image.len(),
            encoding_started.elapsed().as_secs_f64()
        );
    }
    let ids = loaded.tokenizer.encode(&text)?;
    let stop = [loaded.tokenizer.eos, loaded.tokenizer.end_of_turn];
    let tokenizer = &loaded.tokenizer;
    let mut generated: Vec<u32> = Vec::new();
    let mut printed = String::new();
    let mut out = std::io::stdout().lock();
    let mut write_error: Option<std::io::Error> = None;
    let generation_started = Instant::now();
    let mut first_token_s = None;
    let (_, reason) = medscribe_llm::generate_with_images(
        &mut loaded.model,
        &ids,
        images.as_ref(),
        &stop,
        &sampling,
        &AtomicBool::new(false),
        &mut |id| {
            first_token_s.get_or_insert(generation_started.elapsed().as_secs_f64());
            generated.push(id);
            // Decode the whole continuation so pieces that only make sense together (multi-byte
            // characters split over tokens) print correctly.
            if let Ok(text) = tokenizer.decode(&generated) {
                if let Some(new) = text.strip_prefix(printed.as_str()) {
                    if let Err(e) = out.write_all(new.as_bytes()).and_then(|()| out.flush()) {
                        write_error = Some(e);
                        return false;
                    }
                    printed = text;
                }
            }
            true
        },
    )?;
    if let Some(error) = write_error {
        return Err(error.into());
    }
    writeln!(out)?;
    if args.verbose {
        let total = generation_started.elapsed().as_secs_f64();
        let prefill = first_token_s.unwrap_or(total);
        let decode_tokens = generated.len().saturating_sub(1);
        eprintln!(
            "medscribe: loaded in {load_s:.2} s ({} MB of weights); prompt {} tokens in {prefill:.2} s ({:.1} tok/s); {} tokens generated ({:.2} tok/s); stopped: {reason:?}",
            loaded.model.weight_bytes().div_ceil(1 << 20),
            ids.len(),
            ids.len() as f64 / prefill.max(1e-9),
            generated.len(),
            decode_tokens as f64 / (total - prefill).max(1e-9)
        );
        if device.is_cpu() {
            eprintln!("medscribe: CPU kernels: {}", medscribe_llm::cpu_kernels());
        }
    }
    Ok(ExitCode::SUCCESS)
}
