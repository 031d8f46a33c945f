//! Moonshine base-en (Useful Sensors, MIT), the default English recogniser that runs anywhere:
//! an encoder on raw 16 kHz samples and a merged decoder with a key/value cache, decoded greedily
//! (models/manifest.tsv). The files ship inside the PyPI package `moonshine-cpp` and
//! setup installs them; ONNX Runtime loads the `.ort` format like `.onnx`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use crate::ctc::argmax_rows;
use crate::error::{one_line, AsrError, Result};
use crate::runtime::open_session;

/// Start-of-transcript token.
const START_ID: i64 = 1;
/// End-of-transcript token.
const END_ID: u32 = 2;
/// Greedy length cap: tokens per second of audio, plus a margin (spec).
const TOKENS_PER_SECOND: f64 = 6.5;
const TOKEN_MARGIN: usize = 10;
/// Silence added on both ends: speech at sample 0 makes the model end at once (spec, "Gotcha").
const PAD_SAMPLES: usize = 4_000;
/// The encoder accepts 0.1-64 s per call; we stay well inside.
pub const MAX_SEGMENT_SAMPLES: usize = 30 * 16_000;
const MIN_SEGMENT_SAMPLES: usize = 1_600;
/// Key/value heads and head size of base-en's decoder cache.
const KV_HEADS: usize = 8;
const KV_HEAD_DIM: usize = 52;

/// Encoder file names, preferred first. Setup writes `.onnx` beside the shipped `.ort` with the
/// int8 weights unpacked once (models/scripts/prepare_moonshine.py): the `.ort` graph unpacks
/// them on every run, which is most of a decoder step's time.
pub const ENCODER_FILES: [&str; 2] = ["encoder_model.onnx", "encoder_model.ort"];
/// Merged decoder file names, preferred first.
pub const DECODER_FILES: [&str; 2] = ["decoder_model_merged.onnx", "decoder_model_merged.ort"];
/// Tokenizer file name.
pub const TOKENIZER_FILE: &str = "tokenizer.bin";

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Whether `dir` looks like a Moonshine model directory.
pub fn is_moonshine_dir(dir: &Path) -> bool {
    first_existing(dir, &ENCODER_FILES).is_some() || first_existing(dir, &DECODER_FILES).is_some()
}

/// Moonshine's `tokenizer.bin`: records of `[u8 length][bytes]`; ids 0..2 are `<unk>`, `<s>`,
/// `</s>`, ids 3..258 raw bytes 0x00..0xFF, the rest SentencePiece pieces with "▁" for space.
#[derive(Debug, Clone)]
pub struct MoonshineTokenizer {
    pieces: Vec<Vec<u8>>,
}

impl MoonshineTokenizer {
    /// Parses the file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| AsrError::ModelFile {
            path: path.to_path_buf(),
            reason: one_line(e),
        })?;
        Self::parse(&bytes).map_err(|reason| AsrError::ModelFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut pieces = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let length = usize::from(bytes[at]);
            let piece = bytes
                .get(at + 1..at + 1 + length)
                .ok_or_else(|| format!("truncated tokenizer at byte {at}"))?;
            pieces.push(piece.to_vec());
            at += 1 + length;
        }
        if pieces.len() < 259 {
            return Err(format!(
                "only {} tokens: not a Moonshine tokenizer.bin",
                pieces.len()
            ));
        }
        Ok(Self { pieces })
    }

    /// Text of token ids (special ids and ids past the table skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let index = id as usize;
            match index {
                0..=2 => {}
                3..=258 => bytes.push((index - 3) as u8),
                _ => {
                    if let Some(piece) = self.pieces.get(index) {
                        bytes.extend_from_slice(piece);
                    }
                }
            }
        }
        String::from_utf8_lossy(&bytes)
            .replace('\u{2581}', " ")
            .trim()
            .to_owned()
    }
}

/// A loaded Moonshine model.
pub struct Moonshine {
    encoder: Session,
    decoder: Session,
    tokenizer: MoonshineTokenizer,
    /// `past_key_values.*` input names, in the decoder's order.
    past_names: Vec<String>,
    name: String,
}

impl std::fmt::Debug for Moonshine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moonshine")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Moonshine {
    /// Loads the encoder, merged decoder and tokenizer from `dir`.
    pub fn load(dir: &Path, threads: usize) -> Result<Self> {
        if !dir.is_dir() {
            return Err(AsrError::ModelDirMissing(dir.to_path_buf()));
        }
        let missing = |file: String| AsrError::ModelFileMissing {
            dir: dir.to_path_buf(),
            file,
        };
        let encoder_path = first_existing(dir, &ENCODER_FILES)
            .ok_or_else(|| missing(ENCODER_FILES.join(" or ")))?;
        let decoder_path = first_existing(dir, &DECODER_FILES)
            .ok_or_else(|| missing(DECODER_FILES.join(" or ")))?;
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        if !tokenizer_path.is_file() {
            return Err(missing(TOKENIZER_FILE.into()));
        }
        let tokenizer = MoonshineTokenizer::load(&tokenizer_path)?;
        let encoder = open_session(&encoder_path, threads)?;
        let decoder = open_session(&decoder_path, threads)?;
        let unexpected = |path: &Path, session: &Session| AsrError::UnexpectedSignature {
            path: path.to_path_buf(),
            inputs: session
                .inputs()
                .iter()
                .map(|i| i.name().to_owned())
                .collect::<Vec<_>>()
                .join(", "),
        };
        if encoder.inputs().len() != 1 || encoder.inputs()[0].name() != "input_values" {
            return Err(unexpected(&encoder_path, &encoder));
        }
        let decoder_inputs: Vec<&str> = decoder.inputs().iter().map(|i| i.name()).collect();
        for required in ["input_ids", "encoder_hidden_states", "use_cache_branch"] {
            if !decoder_inputs.contains(&required) {
                return Err(unexpected(&decoder_path, &decoder));
            }
        }
        let past_names: Vec<String> = decoder_inputs
            .iter()
            .filter(|n| n.starts_with("past_key_values."))
            .map(|n| (*n).to_owned())
            .collect();
        if past_names.is_empty() {
            return Err(unexpected(&decoder_path, &decoder));
        }
        let name = format!(
            "moonshine:{}",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        Ok(Self {
            encoder,
            decoder,
            tokenizer,
            past_names,
            name,
        })
    }

    /// The model's name for reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Transcribes one utterance of at most [`MAX_SEGMENT_SAMPLES`] 16 kHz samples.
    /// Shorter than 0.1 s: empty text.
    pub fn transcribe(&mut self, samples: &[f32]) -> Result<String> {
        if samples.len() < MIN_SEGMENT_SAMPLES {
            return Ok(String::new());
        }
        let samples = &samples[..samples.len().min(MAX_SEGMENT_SAMPLES)];
        let inference = |e: ort::Error| AsrError::Inference(one_line(e));
        let mut padded = vec![0.0f32; samples.len() + 2 * PAD_SAMPLES];
        padded[PAD_SAMPLES..PAD_SAMPLES + samples.len()].copy_from_slice(samples);
        let length = padded.len();
        let input = Tensor::from_array(([1usize, length], padded)).map_err(inference)?;
        let hidden: DynValue = self
            .encoder
            .run(ort::inputs!["input_values" => input])
            .map_err(inference)?
            .remove("last_hidden_state")
            .ok_or_else(|| {
                AsrError::Inference("the encoder returned no last_hidden_state".into())
            })?;

        let cap = (length as f64 / 16_000.0 * TOKENS_PER_SECOND) as usize + TOKEN_MARGIN;
        let mut past: Vec<DynValue> = Vec::with_capacity(self.past_names.len());
        for _ in &self.past_names {
            let empty = Tensor::from_array(([1usize, KV_HEADS, 0, KV_HEAD_DIM], Vec::<f32>::new()))
                .map_err(inference)?;
            past.push(empty.into_dyn());
        }
        let present_names: Vec<String> = self
            .past_names
            .iter()
            .map(|n| n.replacen("past_key_values.", "present.", 1))
            .collect();
        let mut ids: Vec<u32> = Vec::new();
        let mut last = START_ID;
        for step in 0..cap {
            let input_ids = Tensor::from_array(([1usize, 1], vec![last])).map_err(inference)?;
            let use_cache = Tensor::from_array(([1usize], vec![step > 0])).map_err(inference)?;
            let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
                Vec::with_capacity(3 + past.len());
            inputs.push(("input_ids".into(), input_ids.into()));
            inputs.push(("encoder_hidden_states".into(), (&hidden).into()));
            inputs.push(("use_cache_branch".into(), use_cache.into()));
            for (name, value) in self.past_names.iter().zip(&past) {
                inputs.push((name.as_str().into(), value.into()));
            }
            let mut outputs = self.decoder.run(inputs).map_err(inference)?;
            let next = {
                let logits = outputs
                    .get("logits")
                    .ok_or_else(|| AsrError::Inference("the decoder returned no logits".into()))?;
                let (_, values) = logits.try_extract_tensor::<f32>().map_err(inference)?;
                // One step, one position: the logits are a single row.
                argmax_rows(values, values.len())
                    .first()
                    .copied()
                    .unwrap_or(END_ID)
            };
            // The encoder's keys/values come from step 0 only; the decoder's grow each step.
            for (slot, name) in past.iter_mut().zip(&present_names) {
                if step == 0 || name.contains(".decoder.") {
                    *slot = outputs.remove(name.as_str()).ok_or_else(|| {
                        AsrError::Inference(format!("the decoder returned no {name}"))
                    })?;
                }
            }
            if next == END_ID {
                break;
            }
            ids.push(next);
            last = i64::from(next);
        }
        Ok(self.tokenizer.decode(&ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<u8> {
        let mut bytes = Vec::new();
        for piece in ["<unk>", "<s>", "</s>"] {
            bytes.push(piece.len() as u8);
            bytes.extend_from_slice(piece.as_bytes());
        }
        for b in 0..=255u8 {
            bytes.push(1);
            bytes.push(b);
        }
        for piece in [
            "\u{2581}the",
            "\u{2581}lungs",
            "\u{2581}are",
            "\u{2581}clear",
            ".",
        ] {
            bytes.push(piece.len() as u8);
            bytes.extend_from_slice(piece.as_bytes());
        }
        bytes
    }

    #[test]
    fn decodes_pieces_and_bytes() {
        let tokenizer = MoonshineTokenizer::parse(&table()).unwrap();
        assert_eq!(
            tokenizer.decode(&[259, 260, 261, 262, 263]),
            "the lungs are clear."
        );
        // Byte tokens assemble UTF-8: "é" is 0xC3 0xA9.
        assert_eq!(
            tokenizer.decode(&[259, 3 + 0x20, 3 + 0xC3, 3 + 0xA9]),
            "the é"
        );
        // Specials and ids past the table are skipped.
        assert_eq!(tokenizer.decode(&[0, 1, 2, 259, 40_000]), "the");
    }

    #[test]
    fn truncated_or_tiny_tables_are_errors() {
        let mut bytes = table();
        bytes.push(9);
        bytes.push(b'x');
        assert!(MoonshineTokenizer::parse(&bytes)
            .unwrap_err()
            .contains("truncated"));
        assert!(MoonshineTokenizer::parse(&[1, b'a']).is_err());
    }
}
