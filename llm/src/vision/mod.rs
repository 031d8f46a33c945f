//! MedGemma's eyes (transformers' `models/gemma3/`, "Vision and merge"): the SigLIP vision tower
//! ([`tower`], Hugging Face's `last_hidden_state`, weights kept in their stored precision) and
//! Gemma 3's multimodal projector: average pooling of the patch grid down to
//! `mm_tokens_per_image` soft tokens, RMSNorm with gain 1 + w, and the raw
//! `mm_input_projection_weight` matrix into the language model's width.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_transformers::models::siglip;
use serde_json::Value;

use crate::error::{LlmError, Result};

pub(crate) mod tower;

/// Tensor-name prefixes of the vision tower across transformers versions.
const TOWER_PREFIXES: [&str; 4] = [
    "model.vision_tower.vision_model",
    "vision_tower.vision_model",
    "model.vision_tower",
    "vision_tower",
];
/// Tensor-name prefixes of the projector.
const PROJECTOR_PREFIXES: [&str; 2] = ["model.multi_modal_projector", "multi_modal_projector"];

/// Largest input side a vision tower may ask for (MedGemma's SigLIP takes 896).
const MAX_IMAGE_SIZE: usize = 4096;

/// How the patch grid is pooled into soft tokens.
struct Geometry {
    patches_per_side: usize,
    tokens_per_side: usize,
    pool_kernel: usize,
}

impl Geometry {
    fn new(
        config: &siglip::VisionConfig,
        tokens_per_side: usize,
    ) -> std::result::Result<Self, String> {
        // Sizes come from files: zero heads would divide by zero inside the tower, and a
        // layer count or image size no SigLIP has would allocate without bound.
        if config.num_attention_heads == 0
            || config.hidden_size == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(format!(
                "{} attention heads do not divide the vision width {}",
                config.num_attention_heads, config.hidden_size
            ));
        }
        if config.num_hidden_layers > crate::config::MAX_LAYERS
            || config.hidden_size > 1 << 16
            || config.intermediate_size > 1 << 20
            || config.image_size > MAX_IMAGE_SIZE
            || config.num_channels != 3
        {
            return Err(format!(
                "vision sizes out of range (layers {}, width {}, MLP {}, image {}, channels {})",
                config.num_hidden_layers,
                config.hidden_size,
                config.intermediate_size,
                config.image_size,
                config.num_channels
            ));
        }
        if config.patch_size == 0 || !config.image_size.is_multiple_of(config.patch_size) {
            return Err(format!(
                "image size {} is not a multiple of the patch size {}",
                config.image_size, config.patch_size
            ));
        }
        let patches_per_side = config.image_size / config.patch_size;
        if tokens_per_side == 0 || !patches_per_side.is_multiple_of(tokens_per_side) {
            return Err(format!(
                "{tokens_per_side}x{tokens_per_side} soft tokens do not tile a {patches_per_side}x{patches_per_side} patch grid"
            ));
        }
        Ok(Self {
            patches_per_side,
            tokens_per_side,
            pool_kernel: patches_per_side / tokens_per_side,
        })
    }
}

/// The Hugging Face SigLIP name of a llama.cpp `mmproj` vision-tower tensor (`v.`), relative to
/// the tower; `None` for the projector's tensors (`mm.`) and anything unknown.
fn hugging_face_name(gguf: &str) -> Option<String> {
    let rest = gguf.strip_prefix("v.")?;
    let fixed = [
        ("patch_embd.", "embeddings.patch_embedding."),
        ("position_embd.", "embeddings.position_embedding."),
        ("post_ln.", "post_layernorm."),
    ];
    for (from, to) in fixed {
        if let Some(tail) = rest.strip_prefix(from) {
            return Some(format!("{to}{tail}"));
        }
    }
    let rest = rest.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let parts = [
        ("attn_q.", "self_attn.q_proj."),
        ("attn_k.", "self_attn.k_proj."),
        ("attn_v.", "self_attn.v_proj."),
        ("attn_out.", "self_attn.out_proj."),
        ("ln1.", "layer_norm1."),
        ("ln2.", "layer_norm2."),
        ("ffn_up.", "mlp.fc1."),
        ("ffn_down.", "mlp.fc2."),
    ];
    parts.iter().find_map(|(from, to)| {
        rest.strip_prefix(from)
            .map(|tail| format!("encoder.layers.{layer}.{to}{tail}"))
    })
}

/// The vision tower and projector of a Gemma3ForConditionalGeneration checkpoint.
pub struct Gemma3Vision {
    tower: tower::Tower,
    /// `1 + mm_soft_emb_norm.weight`.
    soft_norm_gain: Tensor,
    /// `mm_input_projection_weight`: `[vision_hidden, text_hidden]`.
    projection: Tensor,
    eps: f64,
    image_size: usize,
    patches_per_side: usize,
    pool_kernel: usize,
    tokens_per_image: usize,
}

impl std::fmt::Debug for Gemma3Vision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemma3Vision")
            .field("image_size", &self.image_size)
            .field("tokens_per_image", &self.tokens_per_image)
            .finish_non_exhaustive()
    }
}

/// What a vision part's files say before any weight is read, checked: enough to lay out a
/// prompt (soft tokens per image) and to refuse a projector made for another language model.
struct Plan {
    config: siglip::VisionConfig,
    geometry: Geometry,
    text_hidden: usize,
    weights: StoredWeights,
}

/// Where a vision part's weights are.
enum StoredWeights {
    /// A Hugging Face checkpoint's safetensors files.
    Safetensors(Vec<PathBuf>),
    /// A llama.cpp `mmproj` GGUF file.
    Mmproj(PathBuf),
}

impl Plan {
    /// The plan of the model directory `dir` (config.json; weights in `files`), or `None` when
    /// the configuration has no `vision_config` (a text-only model).
    fn of_directory(dir: &Path, files: &[PathBuf]) -> Result<Option<Self>> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|_| LlmError::MissingFile {
            dir: dir.to_path_buf(),
            file: "config.json".into(),
        })?;
        let bad_config = |reason: String| LlmError::BadFile {
            path: config_path.clone(),
            reason,
        };
        let root: Value =
            serde_json::from_str(&text).map_err(|e| bad_config(format!("not valid JSON: {e}")))?;
        let Some(vision) = root.get("vision_config").filter(|v| v.is_object()) else {
            return Ok(None);
        };
        let config: siglip::VisionConfig = serde_json::from_value(vision.clone())
            .map_err(|e| bad_config(format!("vision_config: {e}")))?;
        let tokens_per_image = root
            .get("mm_tokens_per_image")
            .and_then(Value::as_u64)
            .map_or(256, |n| n as usize);
        // HF: tokens_per_side = int(mm_tokens_per_image ** 0.5), kernel = patches // tokens_per_side.
        let tokens_per_side = (tokens_per_image as f64).sqrt() as usize;
        if tokens_per_side * tokens_per_side != tokens_per_image {
            return Err(bad_config(format!(
                "mm_tokens_per_image {tokens_per_image} is not a square"
            )));
        }
        let geometry = Geometry::new(&config, tokens_per_side).map_err(bad_config)?;
        let text_hidden = crate::config::Gemma3TextConfig::from_json(&text)
            .map_err(bad_config)?
            .hidden_size;
        if files.is_empty() {
            return Err(LlmError::MissingFile {
                dir: dir.to_path_buf(),
                file: "*.safetensors".into(),
            });
        }
        Ok(Some(Self {
            config,
            geometry,
            text_hidden,
            weights: StoredWeights::Safetensors(files.to_vec()),
        }))
    }

    /// The plan of a llama.cpp `mmproj` GGUF file of projector type `gemma3`, for a language
    /// model of width `text_hidden`: its header only (metadata, tensor shapes, and that every
    /// tensor lies inside the file).
    fn of_mmproj(path: &Path, text_hidden: usize) -> Result<Self> {
        let bad = |reason: String| LlmError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        let (content, _) = crate::gemma3::read_gguf(path)?;
        let text = |key: &str| {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_string().ok())
                .cloned()
                .unwrap_or_default()
        };
        if text("general.architecture") != "clip" || text("clip.projector_type") != "gemma3" {
            return Err(bad(format!(
                "not a Gemma 3 vision projector (mmproj) file: architecture `{}`, projector `{}`",
                text("general.architecture"),
                text("clip.projector_type")
            )));
        }
        let number = |key: &str| -> Result<usize> {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_u32().ok())
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("no {key} in the metadata")))
        };
        let eps = content
            .metadata
            .get("clip.vision.attention.layer_norm_epsilon")
            .and_then(|v| v.to_f32().ok())
            .map_or(1e-6, f64::from);
        let config: siglip::VisionConfig = serde_json::from_value(serde_json::json!({
            "hidden_size": number("clip.vision.embedding_length")?,
            "intermediate_size": number("clip.vision.feed_forward_length")?,
            "num_hidden_layers": number("clip.vision.block_count")?,
            "num_attention_heads": number("clip.vision.attention.head_count")?,
            "num_channels": 3,
            "image_size": number("clip.vision.image_size")?,
            "patch_size": number("clip.vision.patch_size")?,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": eps,
        }))
        .map_err(|e| bad(format!("vision settings: {e}")))?;
        // llama.cpp writes the pooling kernel only when it is not Gemma 3's 4.
        let kernel = number("clip.vision.projector.scale_factor").unwrap_or(4);
        let patches_per_side = config.image_size / config.patch_size.max(1);
        if kernel == 0 || !patches_per_side.is_multiple_of(kernel) {
            return Err(bad(format!(
                "pooling kernel {kernel} does not tile a {patches_per_side}x{patches_per_side} patch grid"
            )));
        }
        let geometry = Geometry::new(&config, patches_per_side / kernel).map_err(bad)?;
        // A projector made for another language model is the mistake users make (two mmproj
        // files in one folder): refused now, not when the first image comes.
        let projection = "mm.input_projection.weight";
        let stored_shape = content
            .tensor_infos
            .get(projection)
            .map(|info| info.shape.dims().to_vec())
            .ok_or_else(|| bad(format!("no {projection} tensor")))?;
        check_projection_shape(
            projection,
            &stored_shape,
            &[config.hidden_size, text_hidden],
        )
        .map_err(bad)?;
        Ok(Self {
            config,
            geometry,
            text_hidden,
            weights: StoredWeights::Mmproj(path.to_path_buf()),
        })
    }

    /// Soft tokens each image becomes in the prompt.
    fn tokens_per_image(&self) -> usize {
        self.geometry.tokens_per_side * self.geometry.tokens_per_side
    }

    /// Reads the weights.
    fn load(&self, device: &Device) -> Result<Gemma3Vision> {
        match &self.weights {
            StoredWeights::Safetensors(files) => self.load_safetensors(files, device),
            StoredWeights::Mmproj(path) => self.load_mmproj(path, device),
        }
    }

    fn load_safetensors(&self, files: &[PathBuf], device: &Device) -> Result<Gemma3Vision> {
        let config = &self.config;
        let weights_error = |reason: String| LlmError::Weights {
            path: files.first().cloned().unwrap_or_default(),
            reason,
        };
        // SAFETY: the files are memory-mapped read-only; medscribe never writes model files
        // while they are in use.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }
            .map_err(|e| weights_error(format!("not readable safetensors: {e}")))?;
        let find = |prefixes: &[&'static str], probe: &str| {
            prefixes
                .iter()
                .copied()
                .find(|p| tensors.get(&format!("{p}.{probe}")).is_ok())
        };
        let tower_prefix =
            find(&TOWER_PREFIXES, "embeddings.patch_embedding.weight").ok_or_else(|| {
                weights_error("the configuration has a vision tower but the weights do not".into())
            })?;
        let projector_prefix =
            find(&PROJECTOR_PREFIXES, "mm_input_projection_weight").ok_or_else(|| {
                weights_error("no multimodal projector (mm_input_projection_weight)".into())
            })?;
        // In the stored type: the tower widens each matrix for its own product.
        let stored = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors
                .load(name, device)
                .map_err(|e| weights_error(format!("tensor {name}: {e}")))?;
            if t.dims() != shape {
                return Err(weights_error(format!(
                    "tensor {name} has shape {:?}, the configuration needs {shape:?}",
                    t.dims()
                )));
            }
            Ok(t)
        };
        let soft_norm_gain = (stored(
            &format!("{projector_prefix}.mm_soft_emb_norm.weight"),
            &[config.hidden_size],
        )?
        .to_dtype(DType::F32)?
            + 1.0)?;
        let projection = stored(
            &format!("{projector_prefix}.mm_input_projection_weight"),
            &[config.hidden_size, self.text_hidden],
        )?
        .to_dtype(DType::F32)?;
        let tower = tower::Tower::new(config, |name, shape| {
            stored(&format!("{tower_prefix}.{name}"), shape)
        })?;
        Ok(self.assemble(tower, soft_norm_gain, projection))
    }

    /// f16 matrices stay f16 (the tower widens each for its own product); anything else is
    /// unpacked to f32.
    fn load_mmproj(&self, path: &Path, device: &Device) -> Result<Gemma3Vision> {
        let config = &self.config;
        let bad = |reason: String| LlmError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        // Read again: the header read for the plan is not kept while the model waits for an
        // image; every shape is checked against the plan below.
        let (content, mut reader) = crate::gemma3::read_gguf(path)?;
        // The tower's tensors under their Hugging Face names, the projector's under their own.
        let mut by_name = std::collections::HashMap::new();
        for (name, info) in &content.tensor_infos {
            // candle's CUDA unpacking has no kernel for f16 sources: those are read on the host
            // and copied to the device as they are.
            let tensor = match info.ggml_dtype {
                candle_core::quantized::GgmlDType::F16 => content
                    .tensor(&mut reader, name, &Device::Cpu)
                    .and_then(|q| q.dequantize_f16(&Device::Cpu))
                    .and_then(|t| t.to_device(device)),
                _ => content
                    .tensor(&mut reader, name, device)
                    .and_then(|q| q.dequantize(device)),
            }
            .map_err(|e| bad(format!("tensor {name}: {e}")))?;
            by_name.insert(
                hugging_face_name(name).unwrap_or_else(|| name.clone()),
                tensor,
            );
        }
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = by_name
                .remove(name)
                .ok_or_else(|| bad(format!("no {name} tensor")))?;
            if name.starts_with("mm.") {
                check_projection_shape(name, t.dims(), shape).map_err(bad)?;
            } else if t.dims() != shape {
                return Err(bad(format!(
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            Ok(t)
        };
        // The projector is one small matrix and a norm: they compute in f32.
        let soft_norm_gain =
            take("mm.soft_emb_norm.weight", &[config.hidden_size])?.to_dtype(DType::F32)?;
        let projection = take(
            "mm.input_projection.weight",
            &[config.hidden_size, self.text_hidden],
        )?
        .to_dtype(DType::F32)?;
        let tower = tower::Tower::new(config, &mut take)?;
        Ok(self.assemble(tower, soft_norm_gain, projection))
    }

    fn assemble(
        &self,
        tower: tower::Tower,
        soft_norm_gain: Tensor,
        projection: Tensor,
    ) -> Gemma3Vision {
        Gemma3Vision {
            tower,
            soft_norm_gain,
            projection,
            eps: self.config.layer_norm_eps,
            image_size: self.config.image_size,
            patches_per_side: self.geometry.patches_per_side,
            pool_kernel: self.geometry.pool_kernel,
            tokens_per_image: self.tokens_per_image(),
        }
    }
}

/// A projector tensor's shape against the one the language model needs.
fn check_projection_shape(
    name: &str,
    stored: &[usize],
    needed: &[usize],
) -> std::result::Result<(), String> {
    if stored == needed {
        return Ok(());
    }
    Err(format!(
        "tensor {name} has shape {stored:?}, expected {needed:?} (is the language model the one \
         this projector was made for?)"
    ))
}

/// A model's vision tower and projector, read from disk the first time an image needs them.
/// Text-only work, most letters, never pays for them: MedGemma 4B's mmproj alone is 0.85 GB of
/// memory and 3 s of loading. The files' settings are read and checked when the model loads,
/// so a projector made for another model is refused at once.
pub struct VisionPart {
    plan: Plan,
    device: Device,
    loaded: std::sync::OnceLock<Gemma3Vision>,
}

impl std::fmt::Debug for VisionPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionPart")
            .field("tokens_per_image", &self.tokens_per_image())
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

impl VisionPart {
    /// The vision part of the model directory `dir` (config.json; weights in `files`), or
    /// `None` for a text-only model. Reads the configuration only.
    pub fn of_directory(dir: &Path, files: &[PathBuf], device: &Device) -> Result<Option<Self>> {
        Ok(Plan::of_directory(dir, files)?.map(|plan| Self::new(plan, device)))
    }

    /// The vision part in the llama.cpp `mmproj` GGUF file `path`, for a language model of width
    /// `text_hidden`. Reads and checks the file's header only.
    pub fn of_mmproj(path: &Path, text_hidden: usize, device: &Device) -> Result<Self> {
        Ok(Self::new(Plan::of_mmproj(path, text_hidden)?, device))
    }

    fn new(plan: Plan, device: &Device) -> Self {
        Self {
            plan,
            device: device.clone(),
            loaded: std::sync::OnceLock::new(),
        }
    }

    /// Soft tokens each image becomes in the prompt.
    pub fn tokens_per_image(&self) -> usize {
        self.plan.tokens_per_image()
    }

    /// Whether the weights have been read.
    pub fn is_loaded(&self) -> bool {
        self.loaded.get().is_some()
    }

    /// The tower and projector, read from disk on the first call.
    pub fn get(&self) -> Result<&Gemma3Vision> {
        if let Some(vision) = self.loaded.get() {
            return Ok(vision);
        }
        let vision = self.plan.load(&self.device)?;
        // Two first calls at once both read the weights; one result is kept.
        Ok(self.loaded.get_or_init(|| vision))
    }
}

impl Gemma3Vision {
    /// Loads the vision tower and projector of the model directory `dir` (config.json and
    /// safetensors), or `None` when the configuration has no `vision_config` (a text-only model).
    pub fn load(dir: &Path, files: &[PathBuf], device: &Device) -> Result<Option<Self>> {
        Plan::of_directory(dir, files)?
            .map(|plan| plan.load(device))
            .transpose()
    }

    /// Loads the vision tower and projector from a llama.cpp `mmproj` GGUF file of projector type
    /// `gemma3` (as llama.cpp's converter writes them: SigLIP tensors under `v.`, the projector
    /// under `mm.`, the soft-embedding norm already holding 1 + w), for a language model of width
    /// `text_hidden`. f16 matrices stay f16; other types are unpacked to f32.
    pub fn load_mmproj(path: &Path, text_hidden: usize, device: &Device) -> Result<Self> {
        Plan::of_mmproj(path, text_hidden)?.load(device)
    }

    /// Side of the square images the tower takes, in pixels.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Soft tokens each image becomes in the prompt.
    pub fn tokens_per_image(&self) -> usize {
        self.tokens_per_image
    }

    /// The tower's last hidden state for pixel values `[n, 3, size, size]`: `[n, patches, hidden]`.
    pub fn vision_output(&self, pixels: &Tensor) -> Result<Tensor> {
        let (_, channels, height, width) = pixels.dims4()?;
        if channels != 3 || height != self.image_size || width != self.image_size {
            return Err(LlmError::Internal(format!(
                "pixel values of shape {:?}, the vision tower takes [n, 3, {s}, {s}]",
                pixels.dims(),
                s = self.image_size
            )));
        }
        self.tower.forward(pixels)
    }

    /// The projector on a vision output `[n, patches, vision_hidden]`: `[n, tokens, text_hidden]`.
    pub fn project(&self, vision_output: &Tensor) -> Result<Tensor> {
        let (n, _, hidden) = vision_output.dims3()?;
        let side = self.patches_per_side;
        let grid = vision_output
            .transpose(1, 2)?
            .reshape((n, hidden, side, side))?
            .contiguous()?;
        let pooled = grid
            .avg_pool2d(self.pool_kernel)?
            .flatten_from(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let variance = pooled.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = pooled
            .broadcast_div(&(variance + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.soft_norm_gain)?;
        Ok(normed.broadcast_matmul(&self.projection)?)
    }

    /// Soft-token embeddings of pixel values `[n, 3, size, size]`: `[n, tokens, text_hidden]`.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        self.project(&self.vision_output(pixels)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(heads: usize, layers: usize, image: usize) -> siglip::VisionConfig {
        serde_json::from_value(serde_json::json!({
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_channels": 3, "image_size": image,
            "patch_size": 8, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
        }))
        .unwrap()
    }

    #[test]
    fn vision_sizes_from_files_are_checked_before_the_tower_divides_by_them() {
        assert!(Geometry::new(&config(4, 2, 32), 2).is_ok());
        // Zero heads divided by zero inside the tower (issue 15); absurd sizes allocate.
        let err = Geometry::new(&config(0, 2, 32), 2).err().unwrap();
        assert!(err.contains("attention heads"), "{err}");
        assert!(Geometry::new(&config(3, 2, 32), 2).is_err());
        assert!(Geometry::new(&config(4, 1 << 40, 32), 2).is_err());
        assert!(Geometry::new(&config(4, 2, 1 << 20), 2).is_err());
    }
}
