//! Reads a BPE `tokenizer.json` (Gemma's: 262,144 tokens, 514,906 merges, 33 MB) in one typed
//! pass.
//!
//! `tokenizers` reads the model section through an untagged enum and a flattened
//! `serde_json::Value`, so the whole vocabulary is parsed three times into generic trees: 0.8 s
//! and about 370 MB of scratch, most of the letter model's load time. This builds the same
//! tokenizer the same way `tokenizers` does (same builders, same order of added tokens) but
//! reads the BPE vocabulary and merges straight into their final types. Anything else (another
//! model type, an unusual layout) is left to `tokenizers` itself.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokenizers::models::bpe::BPE;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PaddingParams,
    PostProcessorWrapper, PreTokenizerWrapper, Tokenizer, TokenizerBuilder, TruncationParams,
};

/// One component section of the file (normalizer, decoder ...), read as a JSON value and then
/// as the component, so that broken JSON inside it is an error rather than a panic in
/// `tokenizers`' deserializers.
fn section<'de, A, T>(map: &mut A) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    T: serde::de::DeserializeOwned,
{
    let value: serde_json::Value = map.next_value()?;
    if mentions_precompiled(&value) {
        return Err(de::Error::custom(PRECOMPILED));
    }
    serde_json::from_value(value).map_err(de::Error::custom)
}

/// Why a `Precompiled` normalizer is refused: `tokenizers` panics (expect("Precompiled")) on a
/// broken one, and Gemma's tokenizers do not use it.
pub(crate) const PRECOMPILED: &str =
    "Precompiled (SentencePiece charsmap) normalizers are not supported";

/// Whether a section holds a `Precompiled` normalizer anywhere (sequences nest them).
fn mentions_precompiled(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(map) => {
            map.get("type").and_then(|t| t.as_str()) == Some("Precompiled")
                || map.values().any(mentions_precompiled)
        }
        serde_json::Value::Array(items) => items.iter().any(mentions_precompiled),
        _ => false,
    }
}

/// The tokenizer in `json`; `Err` when this reader does not handle the file (the caller then
/// uses `tokenizers`' own reader, which gives the authoritative error if there is one).
pub(crate) fn read(json: &str) -> Result<Tokenizer, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let tokenizer = deserializer
        .deserialize_map(FileVisitor)
        .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(tokenizer)
}

struct FileVisitor;

/// `tokenizers`' own added-token entry (private there).
#[derive(serde::Deserialize)]
struct AddedTokenWithId {
    #[allow(dead_code)]
    id: u32,
    #[serde(flatten)]
    token: AddedToken,
}

impl<'de> Visitor<'de> for FileVisitor {
    type Value = Tokenizer;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tokenizer.json object")
    }

    // Mirrors TokenizerVisitor in tokenizers/src/tokenizer/serialization.rs.
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Tokenizer, M::Error> {
        let mut builder = TokenizerBuilder::<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new();
        let mut tokens: Vec<AddedTokenWithId> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => {
                    let version: String = map.next_value()?;
                    if version != "1.0" {
                        return Err(de::Error::custom(format!(
                            "unknown tokenizer version '{version}'"
                        )));
                    }
                }
                "truncation" => {
                    builder = builder.with_truncation(map.next_value::<Option<TruncationParams>>()?)
                }
                "padding" => {
                    builder = builder.with_padding(map.next_value::<Option<PaddingParams>>()?)
                }
                "added_tokens" => tokens = map.next_value()?,
                // `tokenizers` panics (expect("Helper")) when these sections' JSON is broken:
                // each is read as a JSON value first, whose own errors are ordinary errors.
                "normalizer" => builder = builder.with_normalizer(section(&mut map)?),
                "pre_tokenizer" => builder = builder.with_pre_tokenizer(section(&mut map)?),
                "post_processor" => builder = builder.with_post_processor(section(&mut map)?),
                "decoder" => builder = builder.with_decoder(section(&mut map)?),
                "model" => {
                    let model: BpeModel = map.next_value()?;
                    builder = builder.with_model(ModelWrapper::BPE(model.build()?));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let mut tokenizer = builder.build().map_err(de::Error::custom)?;
        tokenizer
            .add_tokens(tokens.into_iter().map(|t| t.token))
            .map_err(de::Error::custom)?;
        Ok(tokenizer.into())
    }
}

/// The `model` section of a BPE tokenizer.json, as `tokenizers`' BPEVisitor reads it.
#[derive(serde::Deserialize)]
struct BpeModel {
    #[serde(rename = "type")]
    kind: Option<String>,
    dropout: Option<f32>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: Option<bool>,
    byte_fallback: Option<bool>,
    ignore_merges: Option<bool>,
    vocab: tokenizers::models::bpe::Vocab,
    merges: Vec<Merge>,
}

impl BpeModel {
    fn build<E: de::Error>(self) -> Result<BPE, E> {
        if self.kind.as_deref().is_some_and(|kind| kind != "BPE") {
            return Err(E::custom("not a BPE model"));
        }
        let mut builder = BPE::builder().vocab_and_merges(
            self.vocab,
            self.merges.into_iter().map(|m| (m.0, m.1)).collect(),
        );
        if let Some(dropout) = self.dropout {
            builder = builder.dropout(dropout);
        }
        if let Some(unk) = self.unk_token {
            builder = builder.unk_token(unk);
        }
        if let Some(prefix) = self.continuing_subword_prefix {
            builder = builder.continuing_subword_prefix(prefix);
        }
        if let Some(suffix) = self.end_of_word_suffix {
            builder = builder.end_of_word_suffix(suffix);
        }
        if let Some(fuse) = self.fuse_unk {
            builder = builder.fuse_unk(fuse);
        }
        if let Some(fallback) = self.byte_fallback {
            builder = builder.byte_fallback(fallback);
        }
        if let Some(ignore) = self.ignore_merges {
            builder = builder.ignore_merges(ignore);
        }
        builder.build().map_err(E::custom)
    }
}

/// One merge: `["a", "b"]`, or the older `"a b"`.
struct Merge(String, String);

impl<'de> Deserialize<'de> for Merge {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MergeVisitor;
        impl<'de> Visitor<'de> for MergeVisitor {
            type Value = Merge;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a merge: two strings, or one with a single space")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merge, A::Error> {
                let first: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let second: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Merge(first, second))
            }

            fn visit_str<E: de::Error>(self, line: &str) -> Result<Merge, E> {
                let mut parts = line.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) if !line.starts_with("#version") => {
                        Ok(Merge(a.to_string(), b.to_string()))
                    }
                    _ => Err(E::custom(format!("bad merge {line:?}"))),
                }
            }
        }
        deserializer.deserialize_any(MergeVisitor)
    }
}
