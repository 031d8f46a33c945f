//! Gemma's tokenizer rebuilt from a GGUF file's own `tokenizer.ggml.*` metadata, so that a
//! `.gguf` works on its own as it does in llama.cpp: no `tokenizer.json` beside it.
//!
//! A Gemma GGUF (llama.cpp's `_create_vocab_sentencepiece`) stores SentencePiece's pieces, scores
//! and piece types. Hugging Face's `tokenizer.json` for the same model is a byte-fallback BPE
//! whose merges transformers derives from those pieces (`generate_merges` in
//! `convert_slow_tokenizer.py`). This does the same derivation, so the two tokenizers are the same
//! tokenizer: same vocabulary, same merges in the same order, same added tokens, same
//! normalizer, pre-tokenizer and decoder. Only the `special` flag of added tokens cannot be
//! recovered exactly (Hugging Face's comes from tokenizer_config.json): control pieces are
//! special, user-defined pieces are not, as llama.cpp renders them.

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::Replace;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer, TokenizerBuilder,
};

use crate::error::{LlmError, Result};

/// SentencePiece's word-boundary mark, which Gemma's normalizer writes for every space.
const SPACE_MARK: &str = "\u{2581}";

/// A piece's type as llama.cpp writes it (`SentencePieceTokenTypes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    /// Padding rows llama.cpp adds up to the model's embedding size (`[PAD262145]`): not part
    /// of the SentencePiece model, so Hugging Face's tokenizer has no such pieces.
    Unused,
    Byte,
}

impl PieceType {
    fn from_gguf(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// Whether the GGUF header carries a tokenizer this module can rebuild.
pub(crate) fn has_tokenizer(content: &Content) -> bool {
    content.metadata.contains_key("tokenizer.ggml.tokens")
}

/// Gemma's tokenizer from `content`'s metadata; `path` names the file in errors.
pub(crate) fn from_gguf(content: &Content, path: &Path) -> Result<Tokenizer> {
    let bad = |reason: String| LlmError::BadFile {
        path: path.to_path_buf(),
        reason: format!("cannot build the tokenizer from its metadata: {reason}"),
    };
    let meta = &content.metadata;
    let model = meta
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .ok_or_else(|| bad("no tokenizer.ggml.model".into()))?;
    if model != "llama" {
        return Err(bad(format!(
            "tokenizer.ggml.model is {model:?}; only SentencePiece (\"llama\", Gemma's) is \
             supported (put the model's tokenizer.json beside the file instead)"
        )));
    }
    if flag(content, "tokenizer.ggml.add_space_prefix").map_err(bad)? == Some(true) {
        return Err(bad(
            "tokenizer.ggml.add_space_prefix is set, which Gemma 3 tokenizers never do".into(),
        ));
    }
    let tokens = array(content, "tokenizer.ggml.tokens").map_err(bad)?;
    let scores = array(content, "tokenizer.ggml.scores").map_err(bad)?;
    let types = array(content, "tokenizer.ggml.token_type").map_err(bad)?;
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        return Err(bad(format!(
            "{} tokens but {} scores and {} types",
            tokens.len(),
            scores.len(),
            types.len()
        )));
    }
    let count = u32::try_from(tokens.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| bad(format!("{} tokens", tokens.len())))?;
    let mut pieces = Vec::with_capacity(tokens.len());
    for (id, ((token, score), kind)) in tokens.iter().zip(scores).zip(types).enumerate() {
        let text = token
            .to_string()
            .map_err(|_| bad(format!("token {id} is not a string")))?;
        let score = score
            .to_f32()
            .map_err(|_| bad(format!("score {id} is not a float")))?;
        let kind = kind
            .to_i32()
            .ok()
            .and_then(PieceType::from_gguf)
            .ok_or_else(|| bad(format!("token {id} has an unknown type")))?;
        if text.is_empty() {
            return Err(bad(format!("token {id} is empty")));
        }
        // llama.cpp's converter writes user-defined pieces "pre-normalized", with spaces where
        // the SentencePiece model (and so Hugging Face's vocabulary) has the space mark.
        let text = if kind == PieceType::UserDefined {
            text.replace(' ', SPACE_MARK)
        } else {
            text.clone()
        };
        // A NaN would make the merge order depend on the sort; such a file is broken.
        if score.is_nan() {
            return Err(bad(format!("token {id} has no score (NaN)")));
        }
        pieces.push(Piece { text, score, kind });
    }
    let mut vocab = Vocab::with_capacity(pieces.len());
    for (id, piece) in (0..count).zip(&pieces) {
        if let Some(first) = vocab.insert(piece.text.clone(), id) {
            return Err(bad(format!(
                "tokens {first} and {id} are both {:?}",
                piece.text
            )));
        }
    }
    let id_of = |key: &str| -> Result<u32> {
        let id = meta
            .get(key)
            .ok_or_else(|| bad(format!("no {key}")))?
            .to_u32()
            .map_err(|_| bad(format!("{key} is not an unsigned integer")))?;
        if id >= count {
            return Err(bad(format!("{key} is {id}, past the {count} tokens")));
        }
        Ok(id)
    };
    let unknown = &pieces[id_of("tokenizer.ggml.unknown_token_id")? as usize].text;
    let bos = id_of("tokenizer.ggml.bos_token_id")?;
    let merges = merges(&pieces, &vocab);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unknown.clone())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let tokenizer = gemma_pipeline(bpe, &pieces[bos as usize].text, bos)
        .and_then(|builder| builder.build().map_err(|e| e.to_string()))
        .map_err(bad)?;
    let mut tokenizer: Tokenizer = tokenizer.into();
    // Hugging Face's tokenizer has every control and user-defined piece as an added token,
    // matched in the raw text before normalising.
    let added: Vec<AddedToken> = pieces
        .iter()
        .filter(|p| matches!(p.kind, PieceType::Control | PieceType::UserDefined))
        .map(|p| AddedToken::from(p.text.clone(), p.kind == PieceType::Control).normalized(false))
        .collect();
    tokenizer
        .add_tokens(added)
        .map_err(|e| bad(e.to_string()))?;
    Ok(tokenizer)
}

struct Piece {
    text: String,
    score: f32,
    kind: PieceType,
}

/// The BPE merges transformers derives from a SentencePiece model (`generate_merges` with the
/// pieces' scores): every split of a piece into two pieces, ordered by the whole piece's score
/// (highest first), then the longer left part, then the longer right part; ties keep the order
/// of the pieces and, within a piece, of the parts' ids. Only normal pieces carry their scores;
/// the others score 0, as in the SentencePiece model llama.cpp's scores were copied from.
fn merges(pieces: &[Piece], vocab: &Vocab) -> Vec<(String, String)> {
    let in_model = |text: &str| {
        vocab
            .get(text)
            .copied()
            .filter(|&id| pieces[id as usize].kind != PieceType::Unused)
    };
    struct Candidate {
        left: u32,
        right: u32,
        score: f32,
        left_chars: usize,
        right_chars: usize,
    }
    let mut candidates = Vec::new();
    let mut local = Vec::new();
    for piece in pieces.iter().filter(|p| p.kind != PieceType::Unused) {
        let score = if piece.kind == PieceType::Normal {
            piece.score
        } else {
            0.0
        };
        local.clear();
        let total_chars = piece.text.chars().count();
        for (left_chars, (at, _)) in piece.text.char_indices().enumerate().skip(1) {
            let (left, right) = piece.text.split_at(at);
            if let (Some(left), Some(right)) = (in_model(left), in_model(right)) {
                local.push(Candidate {
                    left,
                    right,
                    score,
                    left_chars,
                    right_chars: total_chars - left_chars,
                });
            }
        }
        local.sort_by_key(|c| (c.left, c.right));
        candidates.append(&mut local);
    }
    // A stable sort with the comparison reversed, as Python's sorted(..., reverse=True).
    candidates.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    candidates
        .into_iter()
        .map(|c| {
            (
                pieces[c.left as usize].text.clone(),
                pieces[c.right as usize].text.clone(),
            )
        })
        .collect()
}

/// Gemma 3's tokenizer.json around the BPE model: spaces become `▁` and split words after them,
/// `<bos>` opens a sequence, and decoding turns `▁` back into spaces and byte pieces into bytes.
fn gemma_pipeline(
    bpe: BPE,
    bos: &str,
    bos_id: u32,
) -> std::result::Result<
    TokenizerBuilder<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >,
    String,
> {
    let normalizer = Replace::new(" ", SPACE_MARK).map_err(|e| e.to_string())?;
    let split = Split::new(" ", SplitDelimiterBehavior::MergedWithPrevious, false)
        .map_err(|e| e.to_string())?;
    let post = TemplateProcessing::builder()
        .try_single(format!("{bos} $A"))
        .and_then(|b| b.try_pair(format!("{bos} $A {bos}:1 $B:1")))
        .map_err(|e| e.to_string())?
        .special_tokens(vec![(bos.to_string(), bos_id)])
        .build()
        .map_err(|e| e.to_string())?;
    let decoder = Sequence::new(vec![
        DecoderWrapper::Replace(Replace::new(SPACE_MARK, " ").map_err(|e| e.to_string())?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ]);
    let builder = TokenizerBuilder::new()
        .with_model(ModelWrapper::BPE(bpe))
        .with_normalizer(Some(NormalizerWrapper::Replace(normalizer)))
        .with_pre_tokenizer(Some(PreTokenizerWrapper::Split(split)))
        .with_post_processor(Some(PostProcessorWrapper::Template(post)))
        .with_decoder(Some(DecoderWrapper::Sequence(decoder)));
    Ok(builder)
}

/// An array field of the metadata.
fn array<'a>(content: &'a Content, key: &str) -> std::result::Result<&'a Vec<Value>, String> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| format!("no {key}"))?
        .to_vec()
        .map_err(|_| format!("{key} is not an array"))
}

/// A boolean field of the metadata, if present.
fn flag(content: &Content, key: &str) -> std::result::Result<Option<bool>, String> {
    content
        .metadata
        .get(key)
        .map(|v| v.to_bool().map_err(|_| format!("{key} is not a boolean")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::GemmaTokenizer;
    use candle_core::quantized::gguf_file::VersionedMagic;
    use std::collections::HashMap;

    const NORMAL: i32 = 1;
    const CONTROL: i32 = 3;
    const USER: i32 = 4;
    const UNUSED: i32 = 5;
    const BYTE: i32 = 6;

    /// A small Gemma-like vocabulary as llama.cpp writes it.
    fn pieces() -> Vec<(&'static str, f32, i32)> {
        vec![
            ("<pad>", -1000.0, CONTROL),
            ("<eos>", -1000.0, CONTROL),
            ("<bos>", -1000.0, CONTROL),
            ("<unk>", -1000.0, CONTROL),
            ("<end_of_turn>", -1000.0, CONTROL),
            // Written with a space, as llama.cpp pre-normalises user-defined pieces.
            ("  ", -1000.0, USER),
            ("<0x63>", 0.0, BYTE),
            ("\u{2581}", -0.0, NORMAL),
            ("a", -0.5, NORMAL),
            ("b", -0.7, NORMAL),
            ("ab", -1.0, NORMAL),
            ("\u{2581}a", -2.0, NORMAL),
            ("\u{2581}ab", -3.0, NORMAL),
            ("[PAD13]", -1000.0, UNUSED),
        ]
    }

    fn content(pieces: &[(&str, f32, i32)]) -> Content {
        let mut metadata = HashMap::new();
        let strings = |v: Vec<Value>| Value::Array(v);
        metadata.insert(
            "tokenizer.ggml.model".to_string(),
            Value::String("llama".into()),
        );
        metadata.insert(
            "tokenizer.ggml.tokens".to_string(),
            strings(
                pieces
                    .iter()
                    .map(|p| Value::String(p.0.to_string()))
                    .collect(),
            ),
        );
        metadata.insert(
            "tokenizer.ggml.scores".to_string(),
            strings(pieces.iter().map(|p| Value::F32(p.1)).collect()),
        );
        metadata.insert(
            "tokenizer.ggml.token_type".to_string(),
            strings(pieces.iter().map(|p| Value::I32(p.2)).collect()),
        );
        metadata.insert("tokenizer.ggml.bos_token_id".to_string(), Value::U32(2));
        metadata.insert("tokenizer.ggml.unknown_token_id".to_string(), Value::U32(3));
        metadata.insert(
            "tokenizer.ggml.add_space_prefix".to_string(),
            Value::Bool(false),
        );
        Content {
            magic: VersionedMagic::GgufV3,
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    fn build(content: &Content) -> Result<Tokenizer> {
        from_gguf(content, Path::new("m.gguf"))
    }

    #[test]
    fn merges_follow_transformers_order() {
        let pieces: Vec<Piece> = pieces()
            .into_iter()
            .map(|(text, score, kind)| Piece {
                text: if kind == USER {
                    text.replace(' ', SPACE_MARK)
                } else {
                    text.to_string()
                },
                score,
                kind: PieceType::from_gguf(kind).unwrap(),
            })
            .collect();
        let vocab: Vocab = pieces
            .iter()
            .enumerate()
            .map(|(id, p)| (p.text.clone(), id as u32))
            .collect();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        let mark = SPACE_MARK;
        assert_eq!(
            merges(&pieces, &vocab),
            vec![
                // The user-defined "▁▁" scores 0, above every normal piece.
                pair(mark, mark),
                pair("a", "b"),
                pair(mark, "a"),
                // Within one piece, the longer left part first.
                pair(&format!("{mark}a"), "b"),
                pair(mark, "ab"),
            ]
        );
    }

    #[test]
    fn encodes_and_decodes_like_gemmas_tokenizer_json() {
        let tokenizer = build(&content(&pieces())).unwrap();
        let ids = |text: &str| tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        // Spaces become ▁ and merge, the user-defined piece's id included.
        assert_eq!(ids("ab  ab"), vec![10, 5, 10]);
        assert_eq!(ids("ab ab"), vec![10, 12]);
        // A control token in the text is matched whole; an unknown character falls back to
        // its byte, or to <unk> when the vocabulary has no byte piece for it.
        assert_eq!(ids("a<end_of_turn>c"), vec![8, 4, 6]);
        assert_eq!(ids("d"), vec![3]);
        // Padding rows never come out of text.
        assert!(!ids("[PAD13]").contains(&13));
        // `<bos>` opens a sequence when special tokens are asked for.
        assert_eq!(
            tokenizer.encode("ab", true).unwrap().get_ids().to_vec(),
            vec![2, 10]
        );
        assert_eq!(
            tokenizer.decode(&[10, 5, 12, 6], false).unwrap(),
            "ab   abc"
        );
        // Control pieces are special (skipped), user-defined ones are text.
        assert_eq!(tokenizer.decode(&[2, 8, 4, 5, 9], true).unwrap(), "a  b");
    }

    #[test]
    fn a_padded_multimodal_vocabulary_keeps_its_image_token_and_hides_its_padding() {
        // MedGemma 4B's GGUF layout (llama.cpp's converter, config vocab 262,208): the
        // SentencePiece pieces, then `<image_soft_token>` as a control token at 262,144, then
        // `[PAD{id}]` rows up to the embedding size.
        let mut layout = pieces();
        layout.truncate(13);
        layout.push(("<image_soft_token>", -1000.0, CONTROL));
        layout.extend([("[PAD14]", -1000.0, UNUSED), ("[PAD15]", -1000.0, UNUSED)]);
        let tokenizer =
            GemmaTokenizer::with_specials(build(&content(&layout)).unwrap(), Path::new("m.gguf"))
                .unwrap();
        assert_eq!(tokenizer.vocab_size(), 16);
        assert_eq!(tokenizer.token_id("<image_soft_token>"), Some(13));
        let (expanded, images) = crate::chat::expand_image_markers("a<start_of_image>", 2);
        assert_eq!(images, 1);
        let ids = tokenizer.encode(&expanded).unwrap();
        assert_eq!(ids.iter().filter(|&&id| id == 13).count(), 2);
        for text in ["[PAD14]", "[PAD15] ab"] {
            let ids = tokenizer.encode(text).unwrap();
            assert!(ids.iter().all(|&id| id < 13), "{text}: {ids:?}");
        }
    }

    #[test]
    fn broken_or_foreign_metadata_is_refused_with_the_reason() {
        let reason = |content: Content| match build(&content) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        let with = |edit: &dyn Fn(&mut HashMap<String, Value>)| {
            let mut content = content(&pieces());
            edit(&mut content.metadata);
            reason(content)
        };
        let cases: Vec<(String, &str)> = vec![
            (
                with(&|m| {
                    m.remove("tokenizer.ggml.tokens");
                }),
                "no tokenizer.ggml.tokens",
            ),
            (
                with(&|m| {
                    m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
                }),
                "only SentencePiece",
            ),
            (
                with(&|m| {
                    m.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(true));
                }),
                "add_space_prefix",
            ),
            (
                with(&|m| {
                    m.insert("tokenizer.ggml.scores".into(), Value::Array(vec![]));
                }),
                "14 tokens but 0 scores",
            ),
            (
                with(&|m| {
                    m.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(14));
                }),
                "past the 14 tokens",
            ),
            (
                with(&|m| {
                    m.insert("tokenizer.ggml.tokens".into(), Value::U32(1));
                }),
                "not an array",
            ),
            (
                reason(content(&[("a", 0.0, NORMAL), ("a", 0.0, NORMAL)])),
                "tokens 0 and 1 are both \"a\"",
            ),
            (reason(content(&[("a", f32::NAN, NORMAL)])), "NaN"),
            (reason(content(&[("a", 0.0, 9)])), "unknown type"),
            (reason(content(&[("", 0.0, NORMAL)])), "token 0 is empty"),
            (reason(content(&[])), "0 tokens"),
        ];
        for (message, expected) in cases {
            assert!(
                message.contains(expected) && message.starts_with("m.gguf: "),
                "{message:?} should say {expected:?}"
            );
        }
    }
}
