//! Opening a letter model from what the user names: a Hugging Face directory (config.json,
//! *.safetensors, tokenizer.json) or a GGUF file. A GGUF file works on its own (its tokenizer is
//! rebuilt from its metadata); a tokenizer.json beside it is used instead when present, and its
//! vocabulary is checked against the file's, so a mismatched pair fails at load with a clear
//! message instead of writing nonsense.

use std::path::{Path, PathBuf};

use candle_core::Device;

use candle_core::Tensor;

use crate::chat::GemmaTokenizer;
use crate::chat_template::ChatTemplateCheck;
use crate::error::{LlmError, Result};
use crate::gemma3::{gguf_vocabulary, read_gguf, safetensors_files, Gemma3Text, GgufWeights};
use crate::generate::PromptImages;
use crate::gguf_tokenizer::has_tokenizer;
use crate::vision::VisionPart;

/// Ids checked when comparing a tokenizer with a GGUF vocabulary: the specials and a spread of
/// ordinary pieces.
const SAMPLE_IDS: [usize; 12] = [
    0, 1, 2, 3, 105, 106, 1000, 4_567, 50_000, 123_456, 200_000, 262_143,
];

/// A model ready to generate, with its tokenizer and where it came from.
#[derive(Debug)]
pub struct LoadedModel {
    /// The language model.
    pub model: Gemma3Text,
    /// The vision tower and projector, for multimodal checkpoints (for a GGUF model, from its
    /// `mmproj` file); their weights are read when the first image needs them.
    pub vision: Option<VisionPart>,
    /// Its tokenizer.
    pub tokenizer: GemmaTokenizer,
    /// The file or directory it was loaded from.
    pub source: PathBuf,
    /// The model file's own chat template, checked against the Gemma 3 turn format our prompts
    /// are written in (GGUF files carry one in `tokenizer.chat_template`).
    pub chat_template: ChatTemplateCheck,
}

impl LoadedModel {
    /// Why the model's own chat template disagrees with the prompts we write, if it does: a
    /// sentence for the user.
    pub fn chat_template_warning(&self) -> Option<String> {
        match &self.chat_template {
            ChatTemplateCheck::Differs(why) => Some(format!(
                "{}: the model's own chat template is not Gemma 3's turn format, which medscribe \
                 writes its prompts in ({why}); its answers may suffer",
                self.source.display()
            )),
            ChatTemplateCheck::Absent | ChatTemplateCheck::Gemma => None,
        }
    }
}

/// Loads a model directory or a `.gguf` file; a `.gguf` model's vision part comes from the one
/// `mmproj*.gguf` file beside it, if there is exactly one (as llama.cpp releases ship them).
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel> {
    load_with_mmproj(path, None, device)
}

/// Like [`load`], with the `mmproj` GGUF file holding a `.gguf` model's vision tower and
/// projector named explicitly.
pub fn load_with_mmproj(
    path: &Path,
    mmproj: Option<&Path>,
    device: &Device,
) -> Result<LoadedModel> {
    if let (true, Some(mmproj)) = (path.is_dir(), mmproj) {
        return Err(LlmError::BadFile {
            path: mmproj.to_path_buf(),
            reason:
                "an mmproj file goes with a .gguf model; a model directory has its own vision tower"
                    .into(),
        });
    }
    if path.is_dir() {
        let tokenizer_path = path.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(LlmError::MissingFile {
                dir: path.to_path_buf(),
                file: "tokenizer.json".into(),
            });
        }
        let tokenizer = GemmaTokenizer::load(&tokenizer_path)?;
        let model = Gemma3Text::load(path, device)?;
        let vision = VisionPart::of_directory(path, &safetensors_files(path)?, device)?;
        return Ok(LoadedModel {
            model,
            vision,
            tokenizer,
            source: path.to_path_buf(),
            chat_template: ChatTemplateCheck::Absent,
        });
    }
    if !path.is_file() {
        return Err(LlmError::BadFile {
            path: path.to_path_buf(),
            reason: "no such model file or directory".into(),
        });
    }
    if path.extension().and_then(|e| e.to_str()) != Some("gguf") {
        return Err(LlmError::BadFile {
            path: path.to_path_buf(),
            reason: "not a model directory or a .gguf file".into(),
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tokenizer_path = dir.join("tokenizer.json");
    let (tokenizer, model, chat_template) = if tokenizer_path.is_file() {
        // Parsing Gemma's 33 MB tokenizer.json takes a core for about a second and scratch
        // memory (370 MB through `tokenizers`' own reader, less through ours), handed back to the
        // system once it is parsed. Large weights are read meanwhile, on the cores the parser
        // leaves idle: they are still far from their full size when the scratch goes (4B: load
        // 2.9 -> 2.4 s, same peak). Beside small weights the scratch would set the peak (270M:
        // +88 MB), so they wait for it.
        let (content, file) = read_gguf(path)?;
        let vocabulary = gguf_vocabulary(&content, path)?;
        let chat_template = gguf_chat_template(&content);
        let load_tokenizer = || {
            let tokenizer = GemmaTokenizer::load(&tokenizer_path);
            release_free_memory();
            tokenizer
        };
        let weights_bytes = file_len(&file).saturating_sub(content.tensor_data_offset);
        let (tokenizer, model) = if weights_bytes < TOKENIZER_ALONGSIDE_WEIGHTS_OF {
            let tokenizer = load_tokenizer()?;
            let model =
                Gemma3Text::from_gguf(&content, file, path, device, GgufWeights::Quantized)?;
            (tokenizer, model)
        } else {
            std::thread::scope(|scope| {
                let tokenizer = scope.spawn(load_tokenizer);
                let model =
                    Gemma3Text::from_gguf(&content, file, path, device, GgufWeights::Quantized);
                let tokenizer = tokenizer.join().map_err(|_| LlmError::BadFile {
                    path: tokenizer_path.clone(),
                    reason: "reading the tokenizer failed".into(),
                })?;
                Ok::<_, LlmError>((tokenizer?, model?))
            })?
        };
        check_vocabulary(&tokenizer, &vocabulary, &tokenizer_path)?;
        (tokenizer, model, chat_template)
    } else {
        // The file works on its own, as in llama.cpp: the tokenizer is rebuilt from its
        // metadata, on another thread while the weights load (its scratch is small).
        let (content, file) = read_gguf(path)?;
        if !has_tokenizer(&content) {
            return Err(LlmError::BadFile {
                path: path.to_path_buf(),
                reason: "has no tokenizer in its metadata (tokenizer.ggml.tokens) and no \
                         tokenizer.json lies beside it"
                    .into(),
            });
        }
        let chat_template = gguf_chat_template(&content);
        std::thread::scope(|scope| {
            let tokenizer = scope.spawn(|| GemmaTokenizer::from_gguf_content(&content, path));
            let model = Gemma3Text::from_gguf(&content, file, path, device, GgufWeights::Quantized);
            let tokenizer = tokenizer.join().map_err(|_| LlmError::BadFile {
                path: path.to_path_buf(),
                reason: "building the tokenizer from its metadata failed".into(),
            })?;
            Ok::<_, LlmError>((tokenizer?, model?, chat_template))
        })?
    };
    // A GGUF file holds the language model only; llama.cpp keeps the vision tower and projector
    // in a separate mmproj file.
    let mmproj = match mmproj {
        Some(explicit) => Some(explicit.to_path_buf()),
        None => mmproj_beside(dir),
    };
    let vision = mmproj
        .map(|file| VisionPart::of_mmproj(&file, model.config().hidden_size, device))
        .transpose()?;
    Ok(LoadedModel {
        model,
        vision,
        tokenizer,
        source: path.to_path_buf(),
        chat_template,
    })
}

/// The GGUF's `tokenizer.chat_template`, checked; a value that is not text counts as absent.
fn gguf_chat_template(content: &candle_core::quantized::gguf_file::Content) -> ChatTemplateCheck {
    match content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
    {
        Some(template) => crate::chat_template::check(template),
        None => ChatTemplateCheck::Absent,
    }
}

/// The single `mmproj*.gguf` file in `dir`, if there is exactly one.
fn mmproj_beside(dir: &Path) -> Option<PathBuf> {
    let mut found = std::fs::read_dir(dir).ok()?.filter_map(|entry| {
        let path = entry.ok()?.path();
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        (name.starts_with("mmproj") && name.ends_with(".gguf")).then_some(path)
    });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

impl LoadedModel {
    /// Reads, preprocesses and encodes `images` (PNG or JPEG files, in prompt order) for
    /// [`crate::generate::generate_with_images`]. A model without a vision tower is an error that
    /// says so.
    pub fn encode_images(&self, images: &[PathBuf]) -> Result<PromptImages> {
        let vision = self.vision.as_ref().ok_or_else(|| LlmError::BadFile {
            path: self.source.clone(),
            reason: "this model has no vision tower, so it cannot look at images (use a \
                     multimodal MedGemma model directory, e.g. medgemma-4b-it, or a .gguf model \
                     with its mmproj file: --mmproj FILE, or the only mmproj*.gguf beside it)"
                .into(),
        })?;
        let vision = vision.get()?;
        let soft_token = self
            .tokenizer
            .token_id("<image_soft_token>")
            .ok_or_else(|| {
                LlmError::Incompatible("the tokenizer has no <image_soft_token> token".into())
            })?;
        let device = self.model.device();
        let pixels = images
            .iter()
            .map(|path| crate::image::load_pixels(path, vision.image_size(), device))
            .collect::<Result<Vec<_>>>()?;
        let pixels = Tensor::stack(&pixels, 0)?;
        Ok(PromptImages {
            soft_token,
            features: vision.image_features(&pixels)?,
        })
    }
}

/// The tokenizer must cover the GGUF vocabulary with the same pieces at the same ids.
fn check_vocabulary(
    tokenizer: &GemmaTokenizer,
    vocabulary: &[String],
    tokenizer_path: &Path,
) -> Result<()> {
    let mismatch = |reason: String| LlmError::BadFile {
        path: tokenizer_path.to_path_buf(),
        reason: format!("does not match the model's vocabulary: {reason}"),
    };
    if tokenizer.vocab_size() < vocabulary.len() {
        return Err(mismatch(format!(
            "{} tokens in the tokenizer, {} in the model",
            tokenizer.vocab_size(),
            vocabulary.len()
        )));
    }
    for &id in SAMPLE_IDS.iter().filter(|&&id| id < vocabulary.len()) {
        let piece = &vocabulary[id];
        if tokenizer.token_id(piece) != Some(id as u32) {
            return Err(mismatch(format!(
                "token {piece:?} has id {id} in the model"
            )));
        }
    }
    Ok(())
}

/// Weights (bytes of tensor data) from which tokenizer.json is parsed while they load.
const TOKENIZER_ALONGSIDE_WEIGHTS_OF: u64 = 1 << 30;

/// The length of an open file; 0 when it cannot be read (the caller then takes the safe path).
fn file_len(file: &std::io::BufReader<std::fs::File>) -> u64 {
    file.get_ref().metadata().map_or(0, |m| m.len())
}

/// Returns freed heap memory to the operating system (glibc keeps it otherwise, so a large
/// temporary allocation would count in the process's memory for the rest of its life).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
