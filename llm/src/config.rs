//! Gemma 3 text configuration, read from a Hugging Face `config.json` with HF's defaults for every
//! key a file leaves out (the real MedGemma 4B/27B files list only a few; transformers' `models/gemma3/`).
//! Accepts the multimodal form (`text_config` nested) and the text-only form, and both spellings
//! of RoPE settings: transformers 4.x (`rope_theta`, `rope_local_base_freq`, `rope_scaling`,
//! `sliding_window_pattern`) and 5.x (`rope_parameters` per layer type, `layer_types`).

use serde_json::Value;

/// Whether a layer attends to a sliding window or to the whole context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Keys within `sliding_window` positions of the query.
    Sliding,
    /// All earlier keys.
    Full,
}

/// RoPE settings of one layer kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeSettings {
    /// Base frequency.
    pub theta: f64,
    /// Linear scaling factor (positions divided by it); 1 when unscaled.
    pub linear_factor: f64,
}

/// The numbers that define a Gemma 3 text model.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3TextConfig {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layer kinds, one per layer.
    pub layers: Vec<LayerKind>,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA).
    pub num_key_value_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Attention scale is `query_pre_attn_scalar ^ -0.5`.
    pub query_pre_attn_scalar: f64,
    /// Window of sliding layers.
    pub sliding_window: usize,
    /// RoPE of sliding layers.
    pub rope_local: RopeSettings,
    /// RoPE of full layers.
    pub rope_global: RopeSettings,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Final logit soft-capping, applied only by the text-only class.
    pub final_logit_softcapping: Option<f64>,
    /// True for `Gemma3ForConditionalGeneration` (multimodal), which never soft-caps.
    pub multimodal: bool,
    /// Most positions the model was trained for (`max_position_embeddings`; GGUF
    /// `gemma3.context_length`): prompt and letter together must fit.
    pub context_length: usize,
}

/// Most layers any configuration may declare (MedGemma 27B has 62): a file claiming 2^40 layers
/// must be an error, not a terabyte allocation.
pub const MAX_LAYERS: usize = 1024;
/// Widest model, MLP, head and vocabulary accepted (MedGemma 27B: 5376, 21504, 128, 262208).
const MAX_WIDTH: usize = 1 << 16;
const MAX_MLP_WIDTH: usize = 1 << 20;
const MAX_HEADS: usize = 1024;
const MAX_HEAD_DIM: usize = 4096;
const MAX_VOCABULARY: usize = 1 << 24;

fn get<'a>(config: &'a Value, key: &str) -> Option<&'a Value> {
    config.get(key).filter(|v| !v.is_null())
}

fn usize_or(config: &Value, key: &str, default: usize) -> Result<usize, String> {
    match get(config, key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("`{key}` is not a whole number")),
    }
}

fn f64_or(config: &Value, key: &str, default: f64) -> Result<f64, String> {
    match get(config, key) {
        None => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| format!("`{key}` is not a number")),
    }
}

/// A `rope_scaling` / `rope_parameters` entry: its linear factor (other types are refused).
fn linear_factor(entry: Option<&Value>) -> Result<f64, String> {
    let Some(entry) = entry else { return Ok(1.0) };
    let kind = entry
        .get("rope_type")
        .or_else(|| entry.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok(1.0),
        "linear" => entry
            .get("factor")
            .and_then(Value::as_f64)
            .filter(|f| *f > 0.0)
            .ok_or_else(|| "linear RoPE scaling without a positive `factor`".to_string()),
        other => Err(format!(
            "RoPE scaling type `{other}` is not supported (Gemma 3 uses linear)"
        )),
    }
}

impl Gemma3TextConfig {
    /// Parses `config.json` text.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let multimodal = get(&root, "text_config").is_some()
            || root
                .get("architectures")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .any(|v| v.as_str() == Some("Gemma3ForConditionalGeneration"))
                });
        let config = get(&root, "text_config").unwrap_or(&root);
        // HF defaults of Gemma3TextConfig (transformers models/gemma3/configuration_gemma3.py).
        let num_hidden_layers = usize_or(config, "num_hidden_layers", 26)?;
        if num_hidden_layers == 0 || num_hidden_layers > MAX_LAYERS {
            return Err(format!(
                "num_hidden_layers {num_hidden_layers} is not between 1 and {MAX_LAYERS}"
            ));
        }
        let layers = match get(config, "layer_types").and_then(Value::as_array) {
            Some(types) => types
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(LayerKind::Sliding),
                    Some("full_attention") => Ok(LayerKind::Full),
                    other => Err(format!("unknown layer type {other:?}")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                let pattern = usize_or(config, "sliding_window_pattern", 6)?.max(1);
                (0..num_hidden_layers)
                    .map(|i| {
                        if (i + 1) % pattern != 0 {
                            LayerKind::Sliding
                        } else {
                            LayerKind::Full
                        }
                    })
                    .collect()
            }
        };
        if layers.len() != num_hidden_layers {
            return Err(format!(
                "{} layer types for {num_hidden_layers} layers",
                layers.len()
            ));
        }
        let (rope_local, rope_global) = match get(config, "rope_parameters") {
            Some(params) => {
                let local = params.get("sliding_attention");
                let global = params.get("full_attention");
                let theta = |entry: Option<&Value>, default: f64| {
                    entry
                        .and_then(|e| e.get("rope_theta"))
                        .and_then(Value::as_f64)
                        .unwrap_or(default)
                };
                (
                    RopeSettings {
                        theta: theta(local, f64_or(config, "rope_local_base_freq", 10_000.0)?),
                        linear_factor: linear_factor(local)?,
                    },
                    RopeSettings {
                        theta: theta(global, f64_or(config, "rope_theta", 1_000_000.0)?),
                        linear_factor: linear_factor(global)?,
                    },
                )
            }
            None => (
                RopeSettings {
                    theta: f64_or(config, "rope_local_base_freq", 10_000.0)?,
                    linear_factor: 1.0,
                },
                RopeSettings {
                    theta: f64_or(config, "rope_theta", 1_000_000.0)?,
                    linear_factor: linear_factor(get(config, "rope_scaling"))?,
                },
            ),
        };
        let parsed = Self {
            vocab_size: usize_or(config, "vocab_size", 262_208)?,
            hidden_size: usize_or(config, "hidden_size", 2304)?,
            intermediate_size: usize_or(config, "intermediate_size", 9216)?,
            layers,
            num_attention_heads: usize_or(config, "num_attention_heads", 8)?,
            num_key_value_heads: usize_or(config, "num_key_value_heads", 4)?,
            head_dim: usize_or(config, "head_dim", 256)?,
            query_pre_attn_scalar: f64_or(config, "query_pre_attn_scalar", 256.0)?,
            sliding_window: usize_or(config, "sliding_window", 4096)?,
            rope_local,
            rope_global,
            rms_norm_eps: f64_or(config, "rms_norm_eps", 1e-6)?,
            final_logit_softcapping: match get(config, "final_logit_softcapping") {
                None => None,
                Some(v) => Some(
                    v.as_f64()
                        .ok_or("`final_logit_softcapping` is not a number")?,
                ),
            },
            multimodal,
            context_length: usize_or(config, "max_position_embeddings", 131_072)?,
        };
        if let Some(activation) = get(config, "hidden_activation").and_then(Value::as_str) {
            if activation != "gelu_pytorch_tanh" {
                return Err(format!(
                    "activation `{activation}` is not supported (Gemma 3 uses gelu_pytorch_tanh)"
                ));
            }
        }
        parsed.check_sizes()?;
        Ok(parsed)
    }

    /// Refuses sizes no Gemma 3 model has and combinations the model code cannot run (zero
    /// heads, heads that do not share key/value heads evenly, an odd head size), whatever file
    /// they came from, before anything is allocated from them.
    pub fn check_sizes(&self) -> Result<(), String> {
        let within = |name: &str, value: usize, max: usize| {
            if value == 0 || value > max {
                Err(format!("{name} {value} is not between 1 and {max}"))
            } else {
                Ok(())
            }
        };
        within("the layer count", self.layers.len(), MAX_LAYERS)?;
        within("the hidden size", self.hidden_size, MAX_WIDTH)?;
        within("the MLP size", self.intermediate_size, MAX_MLP_WIDTH)?;
        within("the vocabulary size", self.vocab_size, MAX_VOCABULARY)?;
        within(
            "the attention head count",
            self.num_attention_heads,
            MAX_HEADS,
        )?;
        within(
            "the key/value head count",
            self.num_key_value_heads,
            MAX_HEADS,
        )?;
        within("the head size", self.head_dim, MAX_HEAD_DIM)?;
        within("the context length", self.context_length, 1 << 24)?;
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
            || !self.head_dim.is_multiple_of(2)
            || self.sliding_window == 0
        {
            return Err(
                "inconsistent attention sizes (heads, key/value heads, head_dim, window)".into(),
            );
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.rope_local.theta)
            || !positive(self.rope_global.theta)
            || !positive(self.rope_local.linear_factor)
            || !positive(self.rope_global.linear_factor)
            || !positive(self.query_pre_attn_scalar)
            || !self.rms_norm_eps.is_finite()
            || self.rms_norm_eps < 0.0
        {
            return Err("RoPE, attention scale or norm settings are not positive numbers".into());
        }
        Ok(())
    }

    /// The soft-capping this model applies to its final logits.
    pub fn effective_softcapping(&self) -> Option<f64> {
        if self.multimodal {
            None
        } else {
            self.final_logit_softcapping
        }
    }
}

impl Gemma3TextConfig {
    /// The text configuration from GGUF metadata (llama.cpp's `gemma3` keys). What llama.cpp does not
    /// store follows llama.cpp: every sixth layer is global, the local RoPE base is 10000, and the
    /// attention scale uses head_dim, except for the 27B shape (hidden 5376), whose
    /// query_pre_attn_scalar is 168.
    pub(crate) fn from_gguf(
        content: &candle_core::quantized::gguf_file::Content,
    ) -> std::result::Result<Self, String> {
        let meta = &content.metadata;
        let arch = meta
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "gemma3" {
            return Err(format!("architecture `{arch}` is not Gemma 3 (gemma3)"));
        }
        let number = |key: &str| -> std::result::Result<usize, String> {
            let value = meta
                .get(&format!("gemma3.{key}"))
                .ok_or_else(|| format!("metadata gemma3.{key} is missing"))?;
            value
                .to_u32()
                .map(|n| n as usize)
                .or_else(|_| value.to_u64().map(|n| n as usize))
                .map_err(|_| format!("metadata gemma3.{key} is not a number"))
        };
        let float = |key: &str, default: f64| -> f64 {
            meta.get(&format!("gemma3.{key}"))
                .and_then(|v| v.to_f32().ok())
                .map_or(default, f64::from)
        };
        let hidden = number("embedding_length")?;
        let heads = number("attention.head_count")?;
        let head_dim = number("attention.key_length").unwrap_or(hidden / heads.max(1));
        let layers = number("block_count")?;
        if layers == 0 || layers > crate::config::MAX_LAYERS {
            return Err(format!(
                "block_count {layers} is not between 1 and {}",
                crate::config::MAX_LAYERS
            ));
        }
        let embedding = content
            .tensor_infos
            .get("token_embd.weight")
            .ok_or("no token_embd.weight tensor")?;
        let vocab = match embedding.shape.dims() {
            [rows, width] if *width == hidden => *rows,
            dims => {
                return Err(format!(
                    "token_embd.weight has shape {dims:?}, expected [vocabulary, {hidden}]"
                ))
            }
        };
        let scaling_type = meta
            .get("gemma3.rope.scaling.type")
            .and_then(|v| v.to_string().ok())
            .cloned();
        let linear_factor = match scaling_type.as_deref() {
            None | Some("none") => 1.0,
            Some("linear") => float("rope.scaling.factor", 1.0),
            Some(other) => return Err(format!("RoPE scaling `{other}` is not supported")),
        };
        let config = Self {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: number("feed_forward_length")?,
            layers: (0..layers)
                .map(|i| {
                    if (i + 1) % 6 != 0 {
                        LayerKind::Sliding
                    } else {
                        LayerKind::Full
                    }
                })
                .collect(),
            num_attention_heads: heads,
            num_key_value_heads: number("attention.head_count_kv").unwrap_or(heads),
            head_dim,
            query_pre_attn_scalar: if hidden == 5376 {
                168.0
            } else {
                head_dim as f64
            },
            sliding_window: number("attention.sliding_window").unwrap_or(4096),
            rope_local: RopeSettings {
                theta: 10_000.0,
                linear_factor: 1.0,
            },
            rope_global: RopeSettings {
                theta: float("rope.freq_base", 1_000_000.0),
                linear_factor,
            },
            rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-6),
            final_logit_softcapping: meta
                .get("gemma3.final_logit_softcapping")
                .and_then(|v| v.to_f32().ok())
                .map(f64::from),
            multimodal: false,
            context_length: number("context_length").unwrap_or(131_072),
        };
        config.check_sizes()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// google/medgemma-4b-it's config.json text part as published (transformers 4.x form).
    const MEDGEMMA_4B: &str = r#"{
      "architectures": ["Gemma3ForConditionalGeneration"],
      "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
      "mm_tokens_per_image": 256, "model_type": "gemma3",
      "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
        "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024},
      "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
        "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
        "patch_size": 14, "vision_use_head": false}
    }"#;

    #[test]
    fn medgemma_4b_gets_hf_defaults() {
        let c = Gemma3TextConfig::from_json(MEDGEMMA_4B).unwrap();
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.layers.len()),
            (2560, 10240, 34)
        );
        assert_eq!(
            (
                c.vocab_size,
                c.head_dim,
                c.num_attention_heads,
                c.num_key_value_heads
            ),
            (262_208, 256, 8, 4)
        );
        assert_eq!(c.query_pre_attn_scalar, 256.0);
        assert_eq!(
            c.rope_global,
            RopeSettings {
                theta: 1e6,
                linear_factor: 8.0
            }
        );
        assert_eq!(
            c.rope_local,
            RopeSettings {
                theta: 1e4,
                linear_factor: 1.0
            }
        );
        // Pattern 6: layers 5, 11, 17, ... are full.
        let full: Vec<usize> = (0..34)
            .filter(|&i| c.layers[i] == LayerKind::Full)
            .collect();
        assert_eq!(full, vec![5, 11, 17, 23, 29]);
        assert!(c.multimodal && c.effective_softcapping().is_none());
    }

    #[test]
    fn medgemma_27b_text_uses_its_own_scalar() {
        let json = r#"{"architectures": ["Gemma3ForCausalLM"], "hidden_size": 5376, "intermediate_size": 21504,
            "num_hidden_layers": 62, "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
            "query_pre_attn_scalar": 168, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
            "sliding_window": 1024, "final_logit_softcapping": null, "model_max_length": 1e30}"#;
        let c = Gemma3TextConfig::from_json(json).unwrap();
        assert_eq!((c.head_dim, c.query_pre_attn_scalar), (128, 168.0));
        assert!(!c.multimodal);
    }

    #[test]
    fn transformers_5_form_with_layer_types() {
        let json = r#"{"text_config": {"vocab_size": 480, "hidden_size": 64, "num_hidden_layers": 2,
            "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 8,
            "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}}"#;
        let c = Gemma3TextConfig::from_json(json).unwrap();
        assert_eq!(c.layers, vec![LayerKind::Sliding, LayerKind::Full]);
        assert_eq!(c.rope_global.linear_factor, 8.0);
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        assert!(Gemma3TextConfig::from_json("{")
            .unwrap_err()
            .contains("JSON"));
        assert!(Gemma3TextConfig::from_json(
            r#"{"rope_scaling": {"rope_type": "yarn", "factor": 4}}"#
        )
        .unwrap_err()
        .contains("yarn"));
        assert!(
            Gemma3TextConfig::from_json(r#"{"hidden_activation": "silu"}"#)
                .unwrap_err()
                .contains("silu")
        );
        assert!(Gemma3TextConfig::from_json(r#"{"num_key_value_heads": 3}"#).is_err());
        // Hostile sizes are refused before anything is allocated from them (issue 15).
        for json in [
            r#"{"num_hidden_layers": 1099511627776}"#,
            r#"{"num_hidden_layers": 0}"#,
            r#"{"num_attention_heads": 0}"#,
            r#"{"head_dim": 0}"#,
            r#"{"hidden_size": 0}"#,
            r#"{"vocab_size": 1152921504606846976}"#,
            r#"{"rope_theta": -1}"#,
        ] {
            assert!(Gemma3TextConfig::from_json(json).is_err(), "{json}");
        }
        assert!(Gemma3TextConfig::from_json(
            r#"{"num_hidden_layers": 2, "layer_types": ["full_attention"]}"#
        )
        .is_err());
    }
}
