//! Schema-constrained decoding of a letter: the model writes `{"key1":"...","key2":"..."}` with
//! exactly the template's keys in order, every value a string, and the output is a valid JSON
//! document whatever the model prefers and however sampling goes.
//!
//! How: the skeleton between values (`{"key1":"`, `","key2":"`, `"}`) is forced, i.e. fed to the
//! model as tokens without asking it; inside a value, each step masks every token that would break
//! the JSON string: a token may be plain string content (no quote, backslash or control byte), or
//! content followed by one closing quote at its very end. Every token of the vocabulary is put in
//! one of those classes once, when the constraint is built, so a step's mask is one pass over a
//! byte table. Budgets keep the guarantee under a token limit: once a value reaches its limit, or
//! the letter's remaining tokens only just suffice to close every value, closing is the only
//! choice.

use crate::error::{LlmError, Result};

/// What a token can do inside a JSON string value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenClass {
    /// Special, control, or would break the string.
    Forbidden,
    /// String content, whitespace only.
    BlankContent,
    /// String content with a visible character.
    Content,
    /// Optional whitespace, then the closing quote.
    BlankCloser,
    /// Visible content, then the closing quote.
    Closer,
}

/// The vocabulary classified for constrained JSON, built once per tokenizer.
#[derive(Debug, Clone)]
pub struct TokenTable {
    class: Vec<TokenClass>,
    /// Bytes of each ordinary token, for spelling forced text.
    pieces: Vec<Option<Vec<u8>>>,
    /// Ids of the ordinary tokens by their first byte, so that a constraint that allows few
    /// first bytes looks at few tokens.
    by_first_byte: Vec<Vec<u32>>,
    /// Piece bytes -> id (first id wins), for spelling forced text.
    by_piece: std::collections::HashMap<Vec<u8>, u32>,
    longest_piece: usize,
}

fn is_content_byte(b: u8) -> bool {
    b >= 0x20 && b != b'"' && b != b'\\'
}

impl TokenTable {
    /// Classifies `pieces` (from [`crate::chat::GemmaTokenizer::text_pieces`]).
    pub fn new(pieces: Vec<Option<Vec<u8>>>) -> Self {
        let class = pieces
            .iter()
            .map(|piece| {
                let Some(bytes) = piece.as_deref().filter(|b| !b.is_empty()) else {
                    return TokenClass::Forbidden;
                };
                let (body, closes) = match bytes.split_last() {
                    Some((b'"', body)) => (body, true),
                    _ => (bytes, false),
                };
                if !body.iter().all(|&b| is_content_byte(b)) {
                    return TokenClass::Forbidden;
                }
                let visible = body.iter().any(|b| !b.is_ascii_whitespace());
                match (closes, visible) {
                    (false, false) => TokenClass::BlankContent,
                    (false, true) => TokenClass::Content,
                    (true, false) => TokenClass::BlankCloser,
                    (true, true) => TokenClass::Closer,
                }
            })
            .collect();
        let mut by_piece = std::collections::HashMap::new();
        let mut by_first_byte = vec![Vec::new(); 256];
        let mut longest_piece = 0;
        for (id, piece) in pieces.iter().enumerate() {
            if let Some(bytes) = piece.as_ref().filter(|b| !b.is_empty()) {
                longest_piece = longest_piece.max(bytes.len());
                by_piece.entry(bytes.clone()).or_insert(id as u32);
                by_first_byte[usize::from(bytes[0])].push(id as u32);
            }
        }
        Self {
            class,
            pieces,
            by_first_byte,
            by_piece,
            longest_piece,
        }
    }

    /// Number of token ids classified.
    pub fn len(&self) -> usize {
        self.class.len()
    }

    /// True for an empty vocabulary.
    pub fn is_empty(&self) -> bool {
        self.class.is_empty()
    }

    /// The bytes of token `id`, if it is an ordinary token.
    pub(crate) fn piece(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id as usize)?.as_deref()
    }

    /// Ordinary tokens whose first byte is `byte`.
    pub(crate) fn starting_with(&self, byte: u8) -> &[u32] {
        &self.by_first_byte[usize::from(byte)]
    }

    /// How token `id` fits inside a JSON string: `None` if it cannot, `Some(false)` for
    /// content, `Some(true)` for content (possibly none) then the closing quote at its end.
    pub(crate) fn in_string(&self, id: u32) -> Option<bool> {
        match self.class.get(id as usize)? {
            TokenClass::Forbidden => None,
            TokenClass::BlankContent | TokenClass::Content => Some(false),
            TokenClass::BlankCloser | TokenClass::Closer => Some(true),
        }
    }

    /// Spells `text` with ordinary tokens, longest piece first.
    pub(crate) fn spell(&self, text: &[u8]) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let longest = self.longest_piece.min(text.len() - at);
            let id = (1..=longest)
                .rev()
                .find_map(|len| self.by_piece.get(&text[at..at + len]).map(|&id| (id, len)));
            let Some((id, len)) = id else {
                return Err(LlmError::Incompatible(format!(
                    "the tokenizer cannot spell {:?} of the letter's JSON",
                    String::from_utf8_lossy(&text[at..])
                )));
            };
            ids.push(id);
            at += len;
        }
        Ok(ids)
    }
}

/// Where the letter's JSON stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Skeleton text to feed before value `next` (or the end when `next` is past the last).
    Forced { next: usize },
    /// Inside value `section`.
    InValue { section: usize },
    /// The closing brace is written.
    Done,
}

/// The JSON constraint for one letter.
#[derive(Debug, Clone)]
pub struct LetterConstraint<'a> {
    table: &'a TokenTable,
    required: Vec<bool>,
    /// Forced token ids before each value (`{"k0":"`, `","k1":"` without its quote, ...), and
    /// the end (`}`) as the last entry.
    forced: Vec<Vec<u32>>,
    /// Tokens needed to finish from inside value i with every later value empty.
    finish_cost: Vec<usize>,
    max_value_tokens: usize,
    state: State,
    value_tokens: usize,
    value_visible: bool,
    truncated: bool,
    text: Vec<u8>,
}

impl<'a> LetterConstraint<'a> {
    /// A constraint for an object with `keys` (in order); values of `required` keys must have a
    /// visible character unless the budget forces them closed; each value is at most
    /// `max_value_tokens` tokens.
    pub fn new(
        table: &'a TokenTable,
        keys: &[(&str, bool)],
        max_value_tokens: usize,
    ) -> Result<Self> {
        if keys.is_empty() {
            return Err(LlmError::Template(
                "a letter needs at least one section".into(),
            ));
        }
        // The quote that ends a value is the model's token (a closer), so the skeleton after it
        // starts with the comma.
        let mut forced = Vec::with_capacity(keys.len() + 1);
        for (i, (key, _)) in keys.iter().enumerate() {
            let key_json = serde_json::to_string(key)
                .map_err(|e| LlmError::Internal(format!("section key: {e}")))?;
            let text = if i == 0 {
                format!("{{{key_json}:\"")
            } else {
                format!(",{key_json}:\"")
            };
            forced.push(table.spell(text.as_bytes())?);
        }
        forced.push(table.spell(b"}")?);
        if !table.class.contains(&TokenClass::BlankCloser) {
            return Err(LlmError::Incompatible(
                "the tokenizer has no token for a closing quote".into(),
            ));
        }
        let n = keys.len();
        let mut finish_cost = vec![0; n];
        for i in (0..n).rev() {
            finish_cost[i] = 1 + if i + 1 < n {
                forced[i + 1].len() + finish_cost[i + 1]
            } else {
                forced[n].len()
            };
        }
        Ok(Self {
            table,
            required: keys.iter().map(|(_, r)| *r).collect(),
            forced,
            finish_cost,
            max_value_tokens: max_value_tokens.max(1),
            state: State::Forced { next: 0 },
            value_tokens: 0,
            value_visible: false,
            truncated: false,
            text: Vec::new(),
        })
    }

    /// Fewest tokens a letter can take (all values empty): a token limit below this cannot give
    /// valid JSON.
    pub fn minimum_tokens(&self) -> usize {
        self.forced[0].len() + self.finish_cost[0]
    }

    /// True once the closing brace is written.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The section being written, if inside a value.
    pub fn current_section(&self) -> Option<usize> {
        match self.state {
            State::InValue { section } => Some(section),
            _ => None,
        }
    }

    /// True if some value was closed early by a budget.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The JSON written so far (bytes; byte-fallback tokens may split characters).
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// If the skeleton comes next: its tokens, taken as written (the caller feeds them to the
    /// model). Empty inside a value or when done.
    pub fn take_forced(&mut self) -> Vec<u32> {
        let State::Forced { next } = self.state else {
            return Vec::new();
        };
        let ids = self.forced[next].clone();
        for &id in &ids {
            if let Some(Some(piece)) = self.table.pieces.get(id as usize) {
                self.text.extend_from_slice(piece);
            }
        }
        self.state = if next < self.required.len() {
            self.value_tokens = 0;
            self.value_visible = false;
            State::InValue { section: next }
        } else {
            State::Done
        };
        ids
    }

    /// Whether the value must be closed now, given `remaining` tokens of the letter's budget.
    fn must_close(&self, section: usize, remaining: usize) -> bool {
        self.value_tokens >= self.max_value_tokens || remaining <= self.finish_cost[section]
    }

    /// Sets the logits of tokens that are not allowed now to -inf. `remaining` is how many tokens
    /// the letter may still take, this one included.
    pub fn mask(&self, logits: &mut [f32], remaining: usize) {
        let State::InValue { section } = self.state else {
            logits.iter_mut().for_each(|l| *l = f32::NEG_INFINITY);
            return;
        };
        let must_close = self.must_close(section, remaining);
        let need_visible = self.required[section] && !self.value_visible && !must_close;
        for (i, logit) in logits.iter_mut().enumerate() {
            let allowed = match self.table.class.get(i).copied() {
                Some(TokenClass::BlankContent | TokenClass::Content) => !must_close,
                Some(TokenClass::BlankCloser) => !need_visible,
                Some(TokenClass::Closer) => true,
                _ => false,
            };
            if !allowed {
                *logit = f32::NEG_INFINITY;
            }
        }
    }

    /// Takes the model's token (one the mask allowed).
    pub fn accept(&mut self, id: u32, remaining: usize) -> Result<()> {
        let State::InValue { section } = self.state else {
            return Err(LlmError::Internal(
                "constrained decoding: a token outside a value".into(),
            ));
        };
        let class = self
            .table
            .class
            .get(id as usize)
            .copied()
            .unwrap_or(TokenClass::Forbidden);
        let must_close = self.must_close(section, remaining);
        let closes = match class {
            TokenClass::BlankContent | TokenClass::Content if !must_close => false,
            TokenClass::Closer => true,
            TokenClass::BlankCloser
                if !(self.required[section] && !self.value_visible && !must_close) =>
            {
                true
            }
            _ => {
                return Err(LlmError::Internal(format!(
                    "constrained decoding: token {id} is not allowed here"
                )))
            }
        };
        if let Some(Some(piece)) = self.table.pieces.get(id as usize) {
            self.text.extend_from_slice(piece);
        }
        self.value_tokens += 1;
        self.value_visible |= matches!(class, TokenClass::Content | TokenClass::Closer);
        if closes {
            // Closed by a budget rather than by the model's choice.
            self.truncated |= must_close;
            self.state = State::Forced { next: section + 1 };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary with the awkward cases: quotes inside and at the end, backslashes,
    /// newlines, specials, whitespace, byte pieces.
    fn table() -> TokenTable {
        let pieces: Vec<Option<Vec<u8>>> = [
            Some("{"),
            Some("}"),
            Some("\""),
            Some(":"),
            Some(","),
            Some("a"),
            Some("b"),
            Some("_"),
            Some(" "),
            Some("the"),
            Some(" cat"),
            Some("x\""),
            Some("\",\""),
            Some("\\n"),
            Some("\n"),
            Some("say \"hi"),
            None,
            Some("  \""),
            Some("{\""),
            Some("\":\""),
            Some("plan"),
            Some("history"),
            Some(" "),
            Some("é"),
        ]
        .into_iter()
        .map(|p| p.map(|s| s.as_bytes().to_vec()))
        .chain([Some(vec![0xC3]), Some(vec![0x0A]), Some(vec![0x22])])
        .collect();
        TokenTable::new(pieces)
    }

    #[test]
    fn classes_follow_json_string_rules() {
        let t = table();
        use TokenClass::*;
        let class = |i: usize| t.class[i];
        assert_eq!(class(5), Content);
        assert_eq!(class(8), BlankContent);
        assert_eq!(class(2), BlankCloser);
        assert_eq!(class(11), Closer);
        assert_eq!(class(17), BlankCloser);
        assert_eq!(
            class(18),
            Closer,
            "an opening brace, then the closing quote"
        );
        assert_eq!(class(26), BlankCloser, "the byte piece of a quote");
        for forbidden in [12, 13, 14, 15, 16, 19, 25] {
            assert_eq!(class(forbidden), Forbidden, "token {forbidden}");
        }
        assert_eq!(class(24), Content, "a UTF-8 lead byte is content");
    }

    #[test]
    fn skeleton_is_spelled_and_a_walk_gives_json() {
        let t = table();
        let keys = [("history", true), ("plan", false)];
        let mut c = LetterConstraint::new(&t, &keys, 10).unwrap();
        assert!(c.minimum_tokens() > 0);
        let mut remaining = 100;
        let mut rng = 12345u64;
        while !c.is_done() {
            remaining -= c.take_forced().len();
            if c.current_section().is_none() {
                continue;
            }
            let mut logits = vec![0f32; t.class.len()];
            c.mask(&mut logits, remaining);
            let allowed: Vec<usize> = (0..logits.len()).filter(|&i| logits[i] == 0.0).collect();
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = allowed[(rng >> 33) as usize % allowed.len()];
            c.accept(id as u32, remaining).unwrap();
            remaining -= 1;
        }
        let text = String::from_utf8_lossy(c.text()).into_owned();
        let value: serde_json::Value = serde_json::from_str(&text).expect(&text);
        let object = value.as_object().unwrap();
        assert_eq!(object.keys().collect::<Vec<_>>(), ["history", "plan"]);
        assert!(!object["history"].as_str().unwrap().trim().is_empty());
    }

    #[test]
    fn forbidden_tokens_are_refused() {
        let t = table();
        let mut c = LetterConstraint::new(&t, &[("plan", true)], 10).unwrap();
        c.take_forced();
        assert!(c.accept(14, 50).is_err(), "a raw newline");
        assert!(
            c.accept(2, 50).is_err(),
            "closing a required value before any text"
        );
        c.accept(5, 50).unwrap();
        c.accept(2, 50).unwrap();
        assert_eq!(c.take_forced(), vec![1]);
        assert!(c.is_done());
        assert_eq!(c.text(), b"{\"plan\":\"a\"}");
    }
}
