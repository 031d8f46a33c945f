//! Generation held to a JSON schema (OpenAI's `response_format: {"type": "json_schema"}`): whatever
//! the model prefers and however sampling goes, the reply parses and validates against the schema.
//!
//! The schema is compiled into a small grammar, and a byte-level machine walks it while the model
//! writes. The layout is compact and canonical (no whitespace between tokens, every property of
//! an object written, in the order of `required` then the rest), so everything between values is
//! forced: fed to the model as tokens without asking it. At a free step, tokens inside a string
//! are judged from a table built once per vocabulary (as the letter constraint does); anywhere
//! else only the tokens whose first byte can come next are run through a copy of the machine.
//! A token budget is kept: once the remaining tokens only just suffice to finish the document the
//! cheapest way, that is what is written.
//!
//! Supported: `type` string, number, integer, boolean, null, object (`properties`, `required`;
//! extra properties are never written), array (`items`, `minItems`, `maxItems`); `enum`,
//! `const`; `anyOf`/`oneOf` and type lists whose branches start differently (`["string",
//! "null"]`); `$ref` into `$defs`/`definitions`. Anything the machine could not enforce
//! (`pattern`, `format`, lengths, ranges, recursion) is refused with a message, never ignored.

use serde_json::Value;

use crate::error::{LlmError, Result};
use crate::letter::constrain::TokenTable;

/// Deepest nesting of schemas (and of `$ref`s) compiled.
const MAX_DEPTH: usize = 32;
/// Most grammar nodes one schema may compile to.
const MAX_NODES: usize = 4096;
/// Longest number written, sign, point and exponent included.
const MAX_NUMBER_BYTES: u8 = 24;
/// Longest integer written, sign included: 18 digits always fit an i64.
const MAX_INTEGER_BYTES: u8 = 19;
/// Most literal choices of one `enum` (the machine tracks them in a 64-bit set).
const MAX_LITERALS: usize = 64;

/// Keywords that change what is valid in ways the machine does not enforce.
const UNENFORCED: &[&str] = &[
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "allOf",
    "not",
    "if",
    "patternProperties",
    "prefixItems",
    "contains",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "dependentSchemas",
];

#[derive(Debug, Clone)]
enum Node {
    String,
    Number {
        integer: bool,
    },
    /// One of these JSON texts (`enum`, `const`, booleans, null).
    Literal(Vec<Vec<u8>>),
    /// Properties in writing order: (index of the key text with no comma, index of the key text
    /// after a comma, value node).
    Object(Vec<(usize, usize, usize)>),
    Array {
        item: usize,
        min: usize,
        max: Option<usize>,
    },
    /// Branches told apart by their first byte.
    AnyOf(Vec<usize>),
}

/// A set of bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bytes([u64; 4]);

impl Bytes {
    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }
    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }
    fn union(&mut self, other: &Bytes) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }
    fn overlaps(&self, other: &Bytes) -> bool {
        self.0.iter().zip(other.0).any(|(a, b)| a & b != 0)
    }
    fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
    fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|&b| self.contains(b))
    }
}

fn is_string_content(b: u8) -> bool {
    b >= 0x20 && b != b'"' && b != b'\\'
}

const OPEN_BRACE: usize = 0;
const CLOSE_BRACE: usize = 1;
const OPEN_BRACKET: usize = 2;
const CLOSE_BRACKET: usize = 3;
const COMMA: usize = 4;
const QUOTE: usize = 5;

/// A JSON schema compiled for constrained generation.
#[derive(Debug, Clone)]
pub struct JsonSchema {
    nodes: Vec<Node>,
    /// Fixed texts the machine writes (punctuation, keys).
    texts: Vec<Vec<u8>>,
    first: Vec<Bytes>,
    min_len: Vec<usize>,
    root: usize,
}

impl JsonSchema {
    /// Compiles `schema`. The error says which part cannot be enforced, for a 400 reply.
    pub fn compile(schema: &Value) -> std::result::Result<Self, String> {
        let mut compiler = Compiler {
            root: schema,
            nodes: Vec::new(),
            texts: ["{", "}", "[", "]", ",", "\""]
                .iter()
                .map(|t| t.as_bytes().to_vec())
                .collect(),
        };
        let root = compiler.node(schema, "schema", 0)?;
        let Compiler { nodes, texts, .. } = compiler;
        let mut compiled = Self {
            first: vec![Bytes::default(); nodes.len()],
            min_len: vec![0; nodes.len()],
            nodes,
            texts,
            root,
        };
        // Children are compiled before their parents, so one pass in order fills both.
        for index in 0..compiled.nodes.len() {
            let (first, min_len) = compiled.first_and_min_len(index)?;
            compiled.first[index] = first;
            compiled.min_len[index] = min_len;
        }
        Ok(compiled)
    }

    /// Bytes of the shortest valid document: a reply needs at least as many tokens (the
    /// vocabulary may need one per byte).
    pub fn minimum_len(&self) -> usize {
        self.min_len[self.root]
    }

    fn first_and_min_len(&self, index: usize) -> std::result::Result<(Bytes, usize), String> {
        let mut first = Bytes::default();
        let min_len = match &self.nodes[index] {
            Node::String => {
                first.insert(b'"');
                2
            }
            Node::Number { .. } => {
                first.insert(b'-');
                (b'0'..=b'9').for_each(|d| first.insert(d));
                1
            }
            Node::Literal(options) => {
                options
                    .iter()
                    .filter_map(|o| o.first())
                    .for_each(|&b| first.insert(b));
                options.iter().map(Vec::len).min().unwrap_or(0)
            }
            Node::Object(properties) => {
                first.insert(b'{');
                2 + properties
                    .iter()
                    .enumerate()
                    .map(|(i, &(key, later_key, value))| {
                        let key = if i == 0 { key } else { later_key };
                        self.texts[key].len() + self.min_len[value]
                    })
                    .sum::<usize>()
            }
            Node::Array { item, min, .. } => {
                first.insert(b'[');
                2 + min
                    .saturating_mul(self.min_len[*item] + 1)
                    .saturating_sub(1)
            }
            Node::AnyOf(branches) => {
                for &branch in branches {
                    if first.overlaps(&self.first[branch]) {
                        return Err(
                            "anyOf/oneOf branches must start differently (say a string and null); \
                             two of these start alike"
                                .into(),
                        );
                    }
                    first.union(&self.first[branch]);
                }
                branches.iter().map(|&b| self.min_len[b]).min().unwrap_or(0)
            }
        };
        Ok((first, min_len))
    }
}

struct Compiler<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    texts: Vec<Vec<u8>>,
}

impl Compiler<'_> {
    fn push(&mut self, node: Node) -> std::result::Result<usize, String> {
        if self.nodes.len() >= MAX_NODES {
            return Err(format!("the schema is too large (over {MAX_NODES} parts)"));
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn text(&mut self, text: Vec<u8>) -> usize {
        self.texts.push(text);
        self.texts.len() - 1
    }

    fn node(
        &mut self,
        schema: &Value,
        at: &str,
        depth: usize,
    ) -> std::result::Result<usize, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "{at}: nested more than {MAX_DEPTH} deep (recursive schemas are not supported)"
            ));
        }
        let Some(object) = schema.as_object() else {
            return Err(format!("{at}: a schema must be a JSON object"));
        };
        if let Some(keyword) = UNENFORCED.iter().find(|k| object.contains_key(**k)) {
            return Err(format!(
                "{at}: \"{keyword}\" cannot be enforced while generating; remove it and check the \
                 value afterwards"
            ));
        }
        if let Some(reference) = object.get("$ref") {
            let target = reference
                .as_str()
                .and_then(|r| {
                    r.strip_prefix("#/$defs/")
                        .map(|name| ("$defs", name))
                        .or_else(|| r.strip_prefix("#/definitions/").map(|n| ("definitions", n)))
                })
                .and_then(|(defs, name)| self.root.get(defs)?.get(name))
                .ok_or_else(|| {
                    format!("{at}: $ref {reference} is not a schema under #/$defs or #/definitions")
                })?;
            return self.node(target, &format!("{at}.$ref"), depth + 1);
        }
        if let Some(value) = object.get("const") {
            let text = serde_json::to_vec(value).map_err(|e| e.to_string())?;
            return self.push(Node::Literal(vec![text]));
        }
        if let Some(values) = object.get("enum") {
            let values = values
                .as_array()
                .filter(|v| !v.is_empty() && v.len() <= MAX_LITERALS)
                .ok_or_else(|| format!("{at}: enum must list 1 to {MAX_LITERALS} values"))?;
            let mut texts = Vec::new();
            for value in values {
                let text = serde_json::to_vec(value).map_err(|e| e.to_string())?;
                if !texts.contains(&text) {
                    texts.push(text);
                }
            }
            return self.push(Node::Literal(texts));
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(branches) = object.get(keyword) {
                let branches = branches
                    .as_array()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| format!("{at}: {keyword} must list schemas"))?;
                let mut ids = Vec::new();
                for (i, branch) in branches.iter().enumerate() {
                    ids.push(self.node(branch, &format!("{at}.{keyword}[{i}]"), depth + 1)?);
                }
                return self.push(Node::AnyOf(ids));
            }
        }
        let kind = match object.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(Value::Array(kinds)) => {
                let mut ids = Vec::new();
                for kind in kinds {
                    let Some(kind) = kind.as_str() else {
                        return Err(format!("{at}: type must name JSON types"));
                    };
                    let mut single = object.clone();
                    single.insert("type".into(), Value::String(kind.into()));
                    ids.push(self.node(
                        &Value::Object(single),
                        &format!("{at}.{kind}"),
                        depth + 1,
                    )?);
                }
                return match ids.as_slice() {
                    [] => Err(format!("{at}: type lists no types")),
                    [one] => Ok(*one),
                    _ => self.push(Node::AnyOf(ids)),
                };
            }
            None if object.contains_key("properties") => "object",
            None if object.contains_key("items") => "array",
            None => {
                return Err(format!(
                    "{at}: no type (any JSON value is not supported; give a type, enum or const)"
                ))
            }
            Some(_) => return Err(format!("{at}: type must be a string or a list")),
        };
        match kind {
            "string" => self.push(Node::String),
            "number" => self.push(Node::Number { integer: false }),
            "integer" => self.push(Node::Number { integer: true }),
            "boolean" => self.push(Node::Literal(vec![b"true".to_vec(), b"false".to_vec()])),
            "null" => self.push(Node::Literal(vec![b"null".to_vec()])),
            "object" => self.object(object, at, depth),
            "array" => {
                let item = object
                    .get("items")
                    .ok_or_else(|| format!("{at}: an array needs items"))?;
                let item = self.node(item, &format!("{at}.items"), depth + 1)?;
                let count = |key: &str| -> std::result::Result<Option<usize>, String> {
                    object
                        .get(key)
                        .map(|v| {
                            v.as_u64()
                                .and_then(|n| usize::try_from(n).ok())
                                .filter(|&n| n <= 100_000)
                                .ok_or_else(|| format!("{at}: {key} must be a count up to 100000"))
                        })
                        .transpose()
                };
                let min = count("minItems")?.unwrap_or(0);
                let max = count("maxItems")?;
                if max.is_some_and(|max| max < min) {
                    return Err(format!("{at}: maxItems is below minItems"));
                }
                self.push(Node::Array { item, min, max })
            }
            other => Err(format!("{at}: unknown type {other:?}")),
        }
    }

    fn object(
        &mut self,
        object: &serde_json::Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> std::result::Result<usize, String> {
        let empty = serde_json::Map::new();
        let properties = match object.get("properties") {
            Some(Value::Object(properties)) => properties,
            None => &empty,
            Some(_) => return Err(format!("{at}: properties must be an object")),
        };
        if properties.is_empty() && object.get("additionalProperties") != Some(&Value::Bool(false))
        {
            return Err(format!(
                "{at}: an object needs its properties listed (free-form objects are not supported)"
            ));
        }
        // Writing order: `required` as listed (clients list properties in declaration order
        // there), then the other properties.
        let mut order: Vec<&str> = Vec::new();
        if let Some(required) = object.get("required") {
            let required = required
                .as_array()
                .ok_or_else(|| format!("{at}: required must list property names"))?;
            for name in required {
                let name = name
                    .as_str()
                    .ok_or_else(|| format!("{at}: required must list property names"))?;
                if !properties.contains_key(name) {
                    return Err(format!(
                        "{at}: required property {name:?} is not in properties"
                    ));
                }
                if !order.contains(&name) {
                    order.push(name);
                }
            }
        }
        for name in properties.keys() {
            if !order.contains(&name.as_str()) {
                order.push(name);
            }
        }
        let mut compiled = Vec::new();
        for name in order {
            let value = self.node(&properties[name], &format!("{at}.{name}"), depth + 1)?;
            let key = serde_json::to_string(name).map_err(|e| e.to_string())?;
            let first = self.text(format!("{key}:").into_bytes());
            let later = self.text(format!(",{key}:").into_bytes());
            compiled.push((first, later, value));
        }
        self.push(Node::Object(compiled))
    }
}

/// Most bytes a number of this kind may take.
fn longest_number(integer: bool) -> u8 {
    if integer {
        MAX_INTEGER_BYTES
    } else {
        MAX_NUMBER_BYTES
    }
}

/// Where a number stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberState {
    Start,
    Minus,
    Zero,
    Digits,
    Point,
    Fraction,
    E,
    ESign,
    Exponent,
    /// Two exponent digits: an f64 goes no further than 1e308, so that is the last.
    Exponent2,
}

impl NumberState {
    fn complete(self) -> bool {
        matches!(
            self,
            Self::Zero | Self::Digits | Self::Fraction | Self::Exponent | Self::Exponent2
        )
    }

    fn step(self, b: u8, integer: bool) -> Option<Self> {
        use NumberState::*;
        let digit = b.is_ascii_digit();
        Some(match (self, b) {
            (Start, b'-') => Minus,
            (Start, b'0') => Zero,
            // "-0" is a float to some parsers (serde_json among them).
            (Minus, b'0') if !integer => Zero,
            (Start | Minus, b'1'..=b'9') => Digits,
            (Digits, _) if digit => Digits,
            (Zero | Digits, b'.') if !integer => Point,
            (Point | Fraction, _) if digit => Fraction,
            (Zero | Digits | Fraction, b'e' | b'E') if !integer => E,
            (E, b'+' | b'-') => ESign,
            (E | ESign, _) if digit => Exponent,
            (Exponent, _) if digit => Exponent2,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    /// A value of this node comes next.
    Value(usize),
    /// Fixed text, `pos` bytes of it written.
    Text { text: usize, pos: usize },
    /// An object, `next` properties begun.
    Object { node: usize, next: usize },
    /// An array, `count` items begun.
    Array { node: usize, count: usize },
    /// Inside a string's content.
    Str,
    Number {
        integer: bool,
        state: NumberState,
        len: u8,
    },
    /// One of the node's literals, `pos` bytes written; `alive` marks those still matching.
    Literal { node: usize, pos: usize, alive: u64 },
}

fn literal_options(schema: &JsonSchema, node: usize) -> &[Vec<u8>] {
    match &schema.nodes[node] {
        Node::Literal(options) => options,
        _ => &[],
    }
}

/// The byte-level walk of a schema's grammar.
#[derive(Debug, Clone)]
struct Machine<'s> {
    schema: &'s JsonSchema,
    stack: Vec<Frame>,
}

impl<'s> Machine<'s> {
    fn new(schema: &'s JsonSchema) -> Self {
        let mut machine = Self {
            schema,
            stack: vec![Frame::Value(schema.root)],
        };
        machine.settle();
        machine
    }

    fn is_done(&self) -> bool {
        self.stack.is_empty()
    }

    fn options(&self, node: usize) -> &'s [Vec<u8>] {
        literal_options(self.schema, node)
    }

    /// Expands frames that need no decision, so that the top is where the next byte is chosen.
    fn settle(&mut self) {
        let schema = self.schema;
        while let Some(top) = self.stack.last_mut() {
            match *top {
                Frame::Value(node) => match &schema.nodes[node] {
                    Node::String => {
                        *top = Frame::Str;
                        self.stack.push(Frame::Text {
                            text: QUOTE,
                            pos: 0,
                        });
                    }
                    Node::Number { integer } => {
                        *top = Frame::Number {
                            integer: *integer,
                            state: NumberState::Start,
                            len: 0,
                        };
                    }
                    Node::Literal(options) => {
                        *top = Frame::Literal {
                            node,
                            pos: 0,
                            alive: if options.len() >= 64 {
                                u64::MAX
                            } else {
                                (1u64 << options.len()) - 1
                            },
                        };
                    }
                    Node::Object(_) => {
                        *top = Frame::Object { node, next: 0 };
                        self.stack.push(Frame::Text {
                            text: OPEN_BRACE,
                            pos: 0,
                        });
                    }
                    Node::Array { .. } => {
                        *top = Frame::Array { node, count: 0 };
                        self.stack.push(Frame::Text {
                            text: OPEN_BRACKET,
                            pos: 0,
                        });
                    }
                    Node::AnyOf(_) => return,
                },
                Frame::Object { node, ref mut next } => {
                    let Node::Object(properties) = &schema.nodes[node] else {
                        return;
                    };
                    match properties.get(*next) {
                        Some(&(key, later_key, value)) => {
                            let text = if *next == 0 { key } else { later_key };
                            *next += 1;
                            self.stack.push(Frame::Value(value));
                            self.stack.push(Frame::Text { text, pos: 0 });
                        }
                        None => {
                            *top = Frame::Text {
                                text: CLOSE_BRACE,
                                pos: 0,
                            }
                        }
                    }
                }
                Frame::Array {
                    node,
                    ref mut count,
                } => {
                    let Node::Array { item, min, max } = schema.nodes[node] else {
                        return;
                    };
                    if *count < min {
                        *count += 1;
                        let comma = *count > 1;
                        self.stack.push(Frame::Value(item));
                        if comma {
                            self.stack.push(Frame::Text {
                                text: COMMA,
                                pos: 0,
                            });
                        }
                    } else if max == Some(*count) {
                        *top = Frame::Text {
                            text: CLOSE_BRACKET,
                            pos: 0,
                        };
                    } else {
                        return;
                    }
                }
                Frame::Text { text, pos } if pos >= schema.texts[text].len() => {
                    self.stack.pop();
                }
                Frame::Literal { node, pos, alive } => {
                    let options = self.options(node);
                    let single = alive.count_ones() == 1;
                    let finished = options
                        .iter()
                        .enumerate()
                        .any(|(i, o)| alive & (1 << i) != 0 && o.len() == pos);
                    if single && finished {
                        self.stack.pop();
                    } else {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Takes one byte; false (and no change) if the grammar does not allow it here.
    fn feed(&mut self, b: u8) -> bool {
        let schema = self.schema;
        // Ending a number or a literal early pops it and offers the byte to what follows; the
        // stack is restored if that refuses too (copied only then: most bytes pop nothing).
        let mut saved: Option<Vec<Frame>> = None;
        while let Some(top) = self.stack.last_mut() {
            match top {
                Frame::Text { text, pos } => {
                    if schema.texts[*text].get(*pos) == Some(&b) {
                        *pos += 1;
                        self.settle();
                        return true;
                    }
                }
                Frame::Str => {
                    if b == b'"' {
                        self.stack.pop();
                        self.settle();
                        return true;
                    }
                    if is_string_content(b) {
                        return true;
                    }
                }
                Frame::Number {
                    integer,
                    state,
                    len,
                } => {
                    let next = if *len < longest_number(*integer) {
                        state.step(b, *integer)
                    } else {
                        None
                    };
                    if let Some(next) = next {
                        *state = next;
                        *len += 1;
                        return true;
                    }
                    if state.complete() {
                        saved.get_or_insert_with(|| self.stack.clone());
                        self.stack.pop();
                        self.settle();
                        continue;
                    }
                }
                Frame::Literal { node, pos, alive } => {
                    let options = literal_options(schema, *node);
                    let mut matching = 0u64;
                    let mut finished = false;
                    for (i, option) in options.iter().enumerate() {
                        if *alive & (1 << i) == 0 {
                            continue;
                        }
                        finished |= option.len() == *pos;
                        if option.get(*pos) == Some(&b) {
                            matching |= 1 << i;
                        }
                    }
                    if matching != 0 {
                        *alive = matching;
                        *pos += 1;
                        self.settle();
                        return true;
                    }
                    if finished {
                        saved.get_or_insert_with(|| self.stack.clone());
                        self.stack.pop();
                        self.settle();
                        continue;
                    }
                }
                Frame::Array { node, count } => {
                    let Node::Array { item, .. } = schema.nodes[*node] else {
                        break;
                    };
                    if b == b']' {
                        self.stack.pop();
                        self.settle();
                        return true;
                    }
                    if *count > 0 && b == b',' {
                        *count += 1;
                        self.stack.push(Frame::Value(item));
                        self.settle();
                        return true;
                    }
                    // A node's first bytes are exactly those its value can start with, so the
                    // byte offered again below is taken.
                    if *count == 0 && schema.first[item].contains(b) {
                        *count += 1;
                        self.stack.push(Frame::Value(item));
                        self.settle();
                        continue;
                    }
                }
                Frame::Value(node) => {
                    if let Node::AnyOf(branches) = &schema.nodes[*node] {
                        if let Some(&branch) =
                            branches.iter().find(|&&br| schema.first[br].contains(b))
                        {
                            *top = Frame::Value(branch);
                            self.settle();
                            continue;
                        }
                    }
                }
                Frame::Object { .. } => {}
            }
            break;
        }
        if let Some(saved) = saved {
            self.stack = saved;
        }
        false
    }

    /// The bytes that may come next.
    fn next_bytes(&self) -> Bytes {
        let schema = self.schema;
        let mut bytes = Bytes::default();
        let Some(top) = self.stack.last() else {
            return bytes;
        };
        let mut then_below = false;
        match top {
            Frame::Text { text, pos } => {
                if let Some(&b) = schema.texts[*text].get(*pos) {
                    bytes.insert(b);
                }
            }
            Frame::Str => {
                (0x20..=0xFF)
                    .filter(|&b| is_string_content(b))
                    .for_each(|b| bytes.insert(b));
                bytes.insert(b'"');
            }
            Frame::Number {
                integer,
                state,
                len,
            } => {
                if *len < longest_number(*integer) {
                    (0..=255u8)
                        .filter(|&b| state.step(b, *integer).is_some())
                        .for_each(|b| bytes.insert(b));
                }
                then_below = state.complete();
            }
            Frame::Literal { node, pos, alive } => {
                for (i, option) in self.options(*node).iter().enumerate() {
                    if alive & (1 << i) != 0 {
                        match option.get(*pos) {
                            Some(&b) => bytes.insert(b),
                            None => then_below = true,
                        }
                    }
                }
            }
            Frame::Array { node, count } => {
                if let Node::Array { item, .. } = schema.nodes[*node] {
                    bytes.insert(b']');
                    if *count > 0 {
                        bytes.insert(b',');
                    } else {
                        bytes.union(&schema.first[item]);
                    }
                }
            }
            Frame::Value(node) => bytes.union(&schema.first[*node]),
            Frame::Object { .. } => {}
        }
        if then_below {
            let mut below = self.clone();
            below.stack.pop();
            below.settle();
            bytes.union(&below.next_bytes());
        }
        bytes
    }

    /// The shortest text that finishes the document from here.
    fn cheapest_end(&self) -> Vec<u8> {
        let schema = self.schema;
        let mut machine = self.clone();
        let mut out = Vec::new();
        while let Some(top) = machine.stack.last().cloned() {
            let text: Vec<u8> = match top {
                Frame::Text { text, pos } => schema.texts[text][pos..].to_vec(),
                Frame::Str => b"\"".to_vec(),
                Frame::Number { state, .. } if state.complete() => {
                    machine.stack.pop();
                    machine.settle();
                    continue;
                }
                Frame::Number { integer, state, .. } => {
                    // "-" then "1" for an integer, since "-0" is refused.
                    if state.step(b'0', integer).is_some() {
                        b"0".to_vec()
                    } else {
                        b"1".to_vec()
                    }
                }
                Frame::Literal { node, pos, alive } => {
                    let shortest = machine
                        .options(node)
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| alive & (1 << i) != 0)
                        .map(|(_, o)| o.get(pos..).unwrap_or_default())
                        .min_by_key(|rest| rest.len())
                        .unwrap_or_default();
                    if shortest.is_empty() {
                        machine.stack.pop();
                        machine.settle();
                        continue;
                    }
                    shortest.to_vec()
                }
                Frame::Array { .. } => b"]".to_vec(),
                Frame::Value(node) => match &schema.nodes[node] {
                    Node::AnyOf(branches) => {
                        let Some(&cheapest) = branches.iter().min_by_key(|&&b| schema.min_len[b])
                        else {
                            break;
                        };
                        if let Some(last) = machine.stack.last_mut() {
                            *last = Frame::Value(cheapest);
                        }
                        machine.settle();
                        continue;
                    }
                    _ => break,
                },
                Frame::Object { .. } => break,
            };
            for &b in &text {
                if !machine.feed(b) {
                    // Unreachable for a well-formed machine; stop rather than loop.
                    return out;
                }
                out.push(b);
            }
        }
        out
    }
}

/// The schema constraint for one reply.
#[derive(Debug, Clone)]
pub struct SchemaConstraint<'a> {
    table: &'a TokenTable,
    machine: Machine<'a>,
    text: Vec<u8>,
    truncated: bool,
}

impl<'a> SchemaConstraint<'a> {
    /// A constraint for `schema` over the vocabulary `table`.
    pub fn new(schema: &'a JsonSchema, table: &'a TokenTable) -> Self {
        Self {
            table,
            machine: Machine::new(schema),
            text: Vec::new(),
            truncated: false,
        }
    }

    /// Fewest tokens a reply can take (at most one per byte): a budget below this cannot hold a
    /// valid document.
    pub fn minimum_tokens(&self) -> usize {
        self.machine.cheapest_end().len()
    }

    /// True once the document is complete.
    pub fn is_done(&self) -> bool {
        self.machine.is_done()
    }

    /// True if the budget made the document end the cheapest way rather than as the model chose.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The JSON written so far.
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// Text that needs no decision, as tokens taken as written (the caller feeds them to the
    /// model): the skeleton between values, or, when only `remaining` tokens are left and they
    /// just suffice, the cheapest end of the document.
    pub fn take_forced(&mut self, remaining: usize) -> Result<Vec<u32>> {
        let end = self.machine.cheapest_end();
        let bytes = if !end.is_empty() && end.len() >= remaining {
            self.truncated = true;
            end
        } else {
            let mut probe = self.machine.clone();
            let mut bytes = Vec::new();
            loop {
                let next = probe.next_bytes();
                if next.len() != 1 {
                    break;
                }
                let Some(b) = next.iter().next() else { break };
                if !probe.feed(b) {
                    break;
                }
                bytes.push(b);
            }
            bytes
        };
        for &b in &bytes {
            if !self.machine.feed(b) {
                return Err(LlmError::Internal(
                    "constrained JSON: the machine refused its own forced text".into(),
                ));
            }
        }
        self.text.extend_from_slice(&bytes);
        self.table.spell(&bytes)
    }

    /// Sets the logits of tokens that are not allowed now to -inf. `remaining` is how many tokens
    /// the reply may still take, this one included.
    pub fn mask(&self, logits: &mut [f32], remaining: usize) {
        let mut allowed = vec![false; logits.len()];
        let cost = self.machine.cheapest_end().len();
        // One token can open an array item or an object, so its cost is checked exactly.
        let fits = |machine: &Machine<'_>| machine.cheapest_end().len() < remaining;
        if self.machine.stack.last() == Some(&Frame::Str) {
            // Content keeps the cost of finishing; a closing quote lowers it.
            let content_fits = cost < remaining;
            for (id, slot) in allowed.iter_mut().enumerate() {
                *slot = match self.table.in_string(id as u32) {
                    Some(true) => true,
                    Some(false) => content_fits,
                    None => false,
                };
            }
        } else {
            for first in self.machine.next_bytes().iter() {
                for &id in self.table.starting_with(first) {
                    let Some(slot) = allowed.get_mut(id as usize) else {
                        continue;
                    };
                    let Some(piece) = self.table.piece(id) else {
                        continue;
                    };
                    let mut probe = self.machine.clone();
                    *slot = piece.iter().all(|&b| probe.feed(b)) && fits(&probe);
                }
            }
        }
        for (logit, allowed) in logits.iter_mut().zip(allowed) {
            if !allowed {
                *logit = f32::NEG_INFINITY;
            }
        }
    }

    /// Takes the model's token (one the mask allowed).
    pub fn accept(&mut self, id: u32) -> Result<()> {
        let piece = self.table.piece(id).ok_or_else(|| {
            LlmError::Internal(format!("constrained JSON: token {id} is not text"))
        })?;
        let mut probe = self.machine.clone();
        if !piece.iter().all(|&b| probe.feed(b)) {
            return Err(LlmError::Internal(format!(
                "constrained JSON: token {id} is not allowed here"
            )));
        }
        self.machine = probe;
        self.text.extend_from_slice(piece);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine_accepts(schema: &JsonSchema, text: &str) -> bool {
        let mut machine = Machine::new(schema);
        text.bytes().all(|b| machine.feed(b)) && machine.is_done()
    }

    fn compile(schema: Value) -> JsonSchema {
        JsonSchema::compile(&schema).unwrap()
    }

    #[test]
    fn the_machine_takes_the_canonical_layout_and_nothing_else() {
        let schema = compile(json!({
            "type": "object",
            "properties": {
                "plan": {"type": "string"},
                "severity": {"enum": ["mild", "moderate", "severe"]},
                "dose_mg": {"type": "number"},
                "days": {"type": "integer"},
                "urgent": {"type": "boolean"},
                "drugs": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                "note": {"type": ["string", "null"]},
            },
            "required": ["severity", "plan", "dose_mg", "days", "urgent", "drugs", "note"],
        }));
        let good = r#"{"severity":"mild","plan":"rest","dose_mg":-2.5e3,"days":10,"urgent":false,"drugs":["a","b"],"note":null}"#;
        assert!(machine_accepts(&schema, good));
        let good = r#"{"severity":"severe","plan":"","dose_mg":0,"days":7,"urgent":true,"drugs":[],"note":"x"}"#;
        assert!(machine_accepts(&schema, good));
        for bad in [
            // Property order, whitespace, wrong types, enum, integers, leading zeros, extra
            // items, escapes, unfinished.
            r#"{"plan":"rest","severity":"mild","dose_mg":1,"days":1,"urgent":true,"drugs":[],"note":null}"#,
            r#"{ "severity":"mild","plan":"rest","dose_mg":1,"days":1,"urgent":true,"drugs":[],"note":null}"#,
            r#"{"severity":"mild","plan":3,"dose_mg":1,"days":1,"urgent":true,"drugs":[],"note":null}"#,
            r#"{"severity":"bad","plan":"x","dose_mg":1,"days":1,"urgent":true,"drugs":[],"note":null}"#,
            r#"{"severity":"mild","plan":"x","dose_mg":1,"days":1.5,"urgent":true,"drugs":[],"note":null}"#,
            r#"{"severity":"mild","plan":"x","dose_mg":01,"days":1,"urgent":true,"drugs":[],"note":null}"#,
            r#"{"severity":"mild","plan":"x","dose_mg":1,"days":1,"urgent":true,"drugs":["a","b","c","d"],"note":null}"#,
            r#"{"severity":"mild","plan":"a\"b","dose_mg":1,"days":1,"urgent":true,"drugs":[],"note":null}"#,
            r#"{"severity":"mild","plan":"x","dose_mg":1,"days":1,"urgent":true,"drugs":[],"note":null"#,
        ] {
            assert!(!machine_accepts(&schema, bad), "{bad}");
        }
    }

    #[test]
    fn unenforceable_schemas_are_refused_with_the_reason() {
        for (schema, expected) in [
            (json!({"type": "string", "pattern": "^a"}), "\"pattern\""),
            (json!({"type": "object"}), "free-form"),
            (json!({}), "no type"),
            (
                json!({"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}},
                              {"type": "object", "properties": {"b": {"type": "string"}}}]}),
                "start differently",
            ),
            (
                json!({"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"}),
                "recursive",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}),
                "\"b\" is not in properties",
            ),
            (
                json!({"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 2}),
                "below minItems",
            ),
            (json!("string"), "a JSON object"),
        ] {
            let error = JsonSchema::compile(&schema).unwrap_err();
            assert!(error.contains(expected), "{schema}: {error}");
        }
    }

    #[test]
    fn references_and_const_compile() {
        let schema = compile(json!({
            "$defs": {"Drug": {"type": "object", "properties": {"name": {"type": "string"}},
                               "required": ["name"], "additionalProperties": false}},
            "type": "object",
            "properties": {"kind": {"const": "letter"},
                           "drugs": {"type": "array", "items": {"$ref": "#/$defs/Drug"}, "minItems": 1}},
            "required": ["kind", "drugs"],
        }));
        assert!(machine_accepts(
            &schema,
            r#"{"kind":"letter","drugs":[{"name":"x"},{"name":""}]}"#
        ));
        assert!(
            !machine_accepts(&schema, r#"{"kind":"letter","drugs":[]}"#),
            "minItems"
        );
        assert_eq!(
            Machine::new(&schema).cheapest_end(),
            br#"{"kind":"letter","drugs":[{"name":""}]}"#.to_vec()
        );
    }

    /// A vocabulary of single bytes plus some longer pieces that cross JSON boundaries.
    fn table() -> TokenTable {
        let mut pieces: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
        for piece in [
            "\",\"", "true", "fal", "se", "12", "3.", "\"}", "rest", " well", "mild\"", "{\"",
        ] {
            pieces.push(Some(piece.as_bytes().to_vec()));
        }
        pieces.push(None);
        TokenTable::new(pieces)
    }

    /// Random walks over the allowed tokens always end in a valid document within the budget.
    #[test]
    fn random_walks_give_valid_json_within_every_budget() {
        let schema_json = json!({
            "type": "object",
            "properties": {
                "plan": {"type": "string"},
                "severity": {"enum": ["mild", "moderate"]},
                "dose": {"type": "number"},
                "ok": {"type": "boolean"},
                "items": {"type": "array", "items": {"type": "integer"}},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["plan", "severity", "dose", "ok", "items", "note"],
        });
        let schema = compile(schema_json);
        let table = table();
        let mut rng = 0x1234_5678u64;
        let minimum = SchemaConstraint::new(&schema, &table).minimum_tokens();
        assert_eq!(
            minimum,
            r#"{"plan":"","severity":"mild","dose":0,"ok":true,"items":[],"note":""}"#.len()
        );
        for budget in [minimum, minimum + 5, minimum + 20, 150, 400] {
            for _ in 0..20 {
                let mut c = SchemaConstraint::new(&schema, &table);
                let mut used = c.take_forced(budget).unwrap().len();
                while !c.is_done() {
                    assert!(used < budget, "over budget {budget}");
                    let mut logits = vec![0f32; table.len()];
                    c.mask(&mut logits, budget - used);
                    let allowed: Vec<usize> =
                        (0..logits.len()).filter(|&i| logits[i] == 0.0).collect();
                    assert!(!allowed.is_empty(), "nothing allowed after {:?}", c.text());
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let id = allowed[(rng >> 33) as usize % allowed.len()];
                    c.accept(id as u32).unwrap();
                    used += 1;
                    used += c.take_forced(budget - used).unwrap().len();
                }
                assert!(used <= budget, "{used} > {budget}");
                let text = String::from_utf8_lossy(c.text()).into_owned();
                let value: Value = serde_json::from_str(&text).expect(&text);
                let object = value.as_object().unwrap();
                assert_eq!(object.len(), 6, "{text}");
                assert!(["mild", "moderate"].contains(&object["severity"].as_str().unwrap()));
                assert!(
                    object["dose"].is_number() && object["ok"].is_boolean(),
                    "{text}"
                );
                assert!(
                    object["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(Value::is_i64),
                    "{text}"
                );
            }
        }
    }

    fn id_of(table: &TokenTable, piece: &[u8]) -> u32 {
        let first = piece[0];
        *table
            .starting_with(first)
            .iter()
            .find(|&&id| {
                table.piece(id) == Some(piece) && id > 255
                    || piece.len() == 1 && id == u32::from(first)
            })
            .unwrap()
    }

    #[test]
    fn the_skeleton_is_forced_and_a_token_may_cross_into_it() {
        let schema = compile(json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "boolean"}},
            "required": ["a", "b"],
        }));
        let table = table();
        let mut c = SchemaConstraint::new(&schema, &table);
        let forced = c.take_forced(100).unwrap();
        assert_eq!(c.text(), br#"{"a":""#);
        assert!(!forced.is_empty());
        c.accept(id_of(&table, b"rest")).unwrap();
        assert!(
            c.accept(id_of(&table, b"\"}")).is_err(),
            "the object goes on after the string"
        );
        c.accept(u32::from(b'"')).unwrap();
        c.take_forced(100).unwrap();
        assert_eq!(c.text(), br#"{"a":"rest","b":"#);
        c.accept(id_of(&table, b"fal")).unwrap();
        c.take_forced(100).unwrap();
        assert!(c.is_done());
        assert_eq!(c.text(), br#"{"a":"rest","b":false}"#);
    }
}
