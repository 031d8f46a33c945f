//! MedGemma's eyes (shared/specs/medgemma.md, "Vision and merge"): the SigLIP vision tower
//! (candle-transformers' `siglip::VisionModel` without its pooling head, which matches Hugging
//! Face's `last_hidden_state`) and Gemma 3's multimodal projector: average pooling of the patch
//! grid down to `mm_tokens_per_image` soft tokens, RMSNorm with gain 1 + w, and the raw
//! `mm_input_projection_weight` matrix into the language model's width.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_transformers::models::siglip;
use serde_json::Value;

use crate::error::{LlmError, Result};

/// Tensor-name prefixes of the vision tower across transformers versions.
const TOWER_PREFIXES: [&str; 4] = [
    "model.vision_tower.vision_model",
    "vision_tower.vision_model",
    "model.vision_tower",
    "vision_tower",
];
/// Tensor-name prefixes of the projector.
const PROJECTOR_PREFIXES: [&str; 2] = ["model.multi_modal_projector", "multi_modal_projector"];

/// The vision tower and projector of a Gemma3ForConditionalGeneration checkpoint.
pub struct Gemma3Vision {
    tower: siglip::VisionModel,
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

impl Gemma3Vision {
    /// Loads the vision tower and projector of the model directory `dir` (config.json and
    /// safetensors), or `None` when the configuration has no `vision_config` (a text-only model).
    pub fn load(dir: &Path, files: &[PathBuf], device: &Device) -> Result<Option<Self>> {
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
        if config.patch_size == 0 || !config.image_size.is_multiple_of(config.patch_size) {
            return Err(bad_config(format!(
                "vision_config: image_size {} is not a multiple of patch_size {}",
                config.image_size, config.patch_size
            )));
        }
        let patches_per_side = config.image_size / config.patch_size;
        // HF: tokens_per_side = int(mm_tokens_per_image ** 0.5), kernel = patches // tokens_per_side.
        let tokens_per_side = (tokens_per_image as f64).sqrt() as usize;
        if tokens_per_side == 0
            || tokens_per_side * tokens_per_side != tokens_per_image
            || !patches_per_side.is_multiple_of(tokens_per_side)
        {
            return Err(bad_config(format!(
                "mm_tokens_per_image {tokens_per_image} does not tile a {patches_per_side}x{patches_per_side} patch grid"
            )));
        }
        let weights_error = |reason: String| LlmError::Weights {
            path: files[0].clone(),
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
        let load = |name: String, shape: &[usize]| -> Result<Tensor> {
            let t = tensors
                .load(&name, device)
                .map_err(|e| weights_error(format!("tensor {name}: {e}")))?;
            if t.dims() != shape {
                return Err(weights_error(format!(
                    "tensor {name} has shape {:?}, the configuration needs {shape:?}",
                    t.dims()
                )));
            }
            Ok(t.to_dtype(DType::F32)?)
        };
        let text_hidden = crate::config::Gemma3TextConfig::from_json(&text)
            .map_err(bad_config)?
            .hidden_size;
        let soft_norm_gain = (load(
            format!("{projector_prefix}.mm_soft_emb_norm.weight"),
            &[config.hidden_size],
        )? + 1.0)?;
        let projection = load(
            format!("{projector_prefix}.mm_input_projection_weight"),
            &[config.hidden_size, text_hidden],
        )?;
        let builder =
            candle_nn::VarBuilder::from_backend(Box::new(tensors), DType::F32, device.clone());
        let tower = siglip::VisionModel::new(&config, false, builder.pp(tower_prefix))
            .map_err(|e| weights_error(format!("vision tower ({tower_prefix}): {e}")))?;
        Ok(Some(Self {
            tower,
            soft_norm_gain,
            projection,
            eps: config.layer_norm_eps,
            image_size: config.image_size,
            patches_per_side,
            pool_kernel: patches_per_side / tokens_per_side,
            tokens_per_image,
        }))
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
            return Err(LlmError::Prompt(format!(
                "pixel values of shape {:?}, the vision tower takes [n, 3, {s}, {s}]",
                pixels.dims(),
                s = self.image_size
            )));
        }
        Ok(self.tower.forward(pixels)?)
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
