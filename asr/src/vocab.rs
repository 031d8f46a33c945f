//! The vocabulary of a CTC model and turning token ids into text.
//!
//! Two file forms are accepted (transformers' `models/lasr/`): a Hugging Face `tokenizer.json`
//! (decoded with the `tokenizers` library, so the text is exactly what transformers produces) or
//! sherpa-onnx's `tokens.txt` (`piece id` per line). Special and blank ids are read from the
//! files, never hard-coded.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{AsrError, Result};

/// SentencePiece's word-boundary marker.
pub const WORD_BOUNDARY: char = '\u{2581}';

/// Token ids -> text for one model.
pub struct Vocabulary {
    pieces: Vec<String>,
    blank: u32,
    special: HashSet<u32>,
    tokenizer: Option<tokenizers::Tokenizer>,
    source: PathBuf,
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocabulary")
            .field("size", &self.pieces.len())
            .field("blank", &self.blank)
            .field("source", &self.source)
            .finish()
    }
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> AsrError {
    AsrError::ModelFile {
        path: path.to_path_buf(),
        reason: crate::error::one_line(reason),
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| file_error(path, format!("not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_error(path, e)),
    }
}

impl Vocabulary {
    /// Loads `tokenizer.json` (preferred) or `tokens.txt` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json);
        }
        let txt = dir.join("tokens.txt");
        if txt.is_file() {
            return Self::from_tokens_txt(&txt);
        }
        Err(AsrError::ModelFileMissing {
            dir: dir.to_path_buf(),
            file: "tokenizer.json or tokens.txt (the vocabulary)".into(),
        })
    }

    /// Loads a Hugging Face tokenizer. The blank is the pad token named in
    /// `tokenizer_config.json`, else `pad_token_id` of `config.json`, else `<epsilon>`.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| file_error(path, format!("cannot load tokenizer: {e}")))?;
        let size = tokenizer.get_vocab_size(true);
        let pieces: Vec<String> = (0..size as u32)
            .map(|id| tokenizer.id_to_token(id).unwrap_or_default())
            .collect();
        let special: HashSet<u32> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| id)
            .collect();
        let dir = path.parent().unwrap_or(Path::new("."));
        let pad_from_tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?
            .and_then(|config| config.get("pad_token").cloned())
            .and_then(|pad| match pad {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Object(map) => map
                    .get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned),
                _ => None,
            })
            .and_then(|pad| tokenizer.token_to_id(&pad));
        let pad_from_model_config = || -> Result<Option<u32>> {
            Ok(read_json(&dir.join("config.json"))?
                .and_then(|config| config.get("pad_token_id").and_then(|v| v.as_u64()))
                .and_then(|id| u32::try_from(id).ok()))
        };
        let blank = match pad_from_tokenizer_config {
            Some(id) => id,
            None => match pad_from_model_config()? {
                Some(id) => id,
                None => tokenizer
                    .token_to_id("<epsilon>")
                    .ok_or_else(|| file_error(path, "cannot tell the CTC blank: no pad token in tokenizer_config.json or config.json and no <epsilon> piece"))?,
            },
        };
        Ok(Self {
            pieces,
            blank,
            special,
            tokenizer: Some(tokenizer),
            source: path.to_path_buf(),
        })
    }

    /// Loads sherpa-onnx's `tokens.txt`: `piece id` per line; the blank is written `<blk>`.
    /// Pieces written `<...>` are control symbols and never appear in text.
    pub fn from_tokens_txt(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let mut entries: Vec<(u32, String)> = Vec::new();
        for (line_no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (piece, id) = line
                .rsplit_once(' ')
                .and_then(|(piece, id)| id.trim().parse::<u32>().ok().map(|id| (piece, id)))
                .ok_or_else(|| {
                    file_error(path, format!("line {}: expected `piece id`", line_no + 1))
                })?;
            entries.push((id, piece.to_owned()));
        }
        let size = entries
            .iter()
            .map(|(id, _)| *id as usize + 1)
            .max()
            .unwrap_or(0);
        if size == 0 || size > 1_000_000 {
            return Err(file_error(path, "no usable vocabulary entries"));
        }
        let mut pieces = vec![String::new(); size];
        for (id, piece) in entries {
            pieces[id as usize] = piece;
        }
        let blank = pieces
            .iter()
            .position(|p| p == "<blk>" || p == "<blank>" || p == "<epsilon>")
            .ok_or_else(|| file_error(path, "no <blk> entry: cannot tell the CTC blank"))?
            as u32;
        let special = pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.len() > 2 && p.starts_with('<') && p.ends_with('>'))
            .map(|(id, _)| id as u32)
            .collect();
        Ok(Self {
            pieces,
            blank,
            special,
            tokenizer: None,
            source: path.to_path_buf(),
        })
    }

    /// The CTC blank id.
    pub fn blank(&self) -> u32 {
        self.blank
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// True when the vocabulary has no entries.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The piece for an id, if any.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// Whether an id is a control symbol that never reaches text.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id) || id as usize >= self.pieces.len()
    }

    /// Text of already-collapsed token ids, special tokens skipped: exactly HF's
    /// `tokenizer.decode(ids, skip_special_tokens=True)` after CTC grouping.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(tokenizer) = &self.tokenizer {
            return tokenizer
                .decode(ids, true)
                .map_err(|e| file_error(&self.source, format!("cannot decode: {e}")));
        }
        // Metaspace decoder with prepend_scheme "always": "▁" becomes a space, and the first
        // piece loses one leading space.
        let mut text = String::new();
        for (index, id) in ids.iter().filter(|&&id| !self.is_special(id)).enumerate() {
            let piece = self.pieces[*id as usize].replace(WORD_BOUNDARY, " ");
            match (index, piece.strip_prefix(' ')) {
                (0, Some(rest)) => text.push_str(rest),
                _ => text.push_str(&piece),
            }
        }
        Ok(text)
    }
}
