//! Turns MedASR's spoken commands into written text (transformers' `models/lasr/`, "Output text
//! conventions"): `{period}` -> ".", `{new paragraph}` -> a blank line, `[FINDINGS]` -> a
//! "FINDINGS:" heading, and so on. Command spelling varies (`{Period}`, `{new_paragraph}`,
//! `{ period }`), so commands are matched after normalisation. An unknown `{...}` command is kept
//! as its words: text is never dropped.

/// What a spoken command does to the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Punctuation attached to the previous word; `ends_sentence` capitalises the next word.
    Attach {
        mark: &'static str,
        ends_sentence: bool,
    },
    /// A mark that joins the words on both sides (hyphen, slash).
    Join(&'static str),
    /// A mark that opens: spaced before, attached to the next word.
    Open(&'static str),
    /// A blank line.
    Paragraph,
    /// A line break.
    Line,
}

/// Normalised command spellings and their effect.
const COMMANDS: &[(&str, Command)] = &[
    (
        "period",
        Command::Attach {
            mark: ".",
            ends_sentence: true,
        },
    ),
    (
        "full stop",
        Command::Attach {
            mark: ".",
            ends_sentence: true,
        },
    ),
    (
        "question mark",
        Command::Attach {
            mark: "?",
            ends_sentence: true,
        },
    ),
    (
        "exclamation mark",
        Command::Attach {
            mark: "!",
            ends_sentence: true,
        },
    ),
    (
        "exclamation point",
        Command::Attach {
            mark: "!",
            ends_sentence: true,
        },
    ),
    (
        "comma",
        Command::Attach {
            mark: ",",
            ends_sentence: false,
        },
    ),
    (
        "colon",
        Command::Attach {
            mark: ":",
            ends_sentence: false,
        },
    ),
    (
        "semicolon",
        Command::Attach {
            mark: ";",
            ends_sentence: false,
        },
    ),
    (
        "semi colon",
        Command::Attach {
            mark: ";",
            ends_sentence: false,
        },
    ),
    (
        "ellipsis",
        Command::Attach {
            mark: "...",
            ends_sentence: false,
        },
    ),
    (
        "close quote",
        Command::Attach {
            mark: "\"",
            ends_sentence: false,
        },
    ),
    (
        "close quotes",
        Command::Attach {
            mark: "\"",
            ends_sentence: false,
        },
    ),
    (
        "end quote",
        Command::Attach {
            mark: "\"",
            ends_sentence: false,
        },
    ),
    (
        "unquote",
        Command::Attach {
            mark: "\"",
            ends_sentence: false,
        },
    ),
    (
        "close paren",
        Command::Attach {
            mark: ")",
            ends_sentence: false,
        },
    ),
    (
        "close parenthesis",
        Command::Attach {
            mark: ")",
            ends_sentence: false,
        },
    ),
    (
        "close bracket",
        Command::Attach {
            mark: ")",
            ends_sentence: false,
        },
    ),
    (
        "right paren",
        Command::Attach {
            mark: ")",
            ends_sentence: false,
        },
    ),
    (
        "percent",
        Command::Attach {
            mark: "%",
            ends_sentence: false,
        },
    ),
    ("open quote", Command::Open("\"")),
    ("open quotes", Command::Open("\"")),
    ("begin quote", Command::Open("\"")),
    ("quote", Command::Open("\"")),
    ("open paren", Command::Open("(")),
    ("open parenthesis", Command::Open("(")),
    ("open bracket", Command::Open("(")),
    ("left paren", Command::Open("(")),
    ("hyphen", Command::Join("-")),
    ("dash", Command::Join("-")),
    ("slash", Command::Join("/")),
    ("forward slash", Command::Join("/")),
    ("new paragraph", Command::Paragraph),
    ("next paragraph", Command::Paragraph),
    ("newparagraph", Command::Paragraph),
    ("new line", Command::Line),
    ("next line", Command::Line),
    ("newline", Command::Line),
    ("nextline", Command::Line),
];

/// A piece of raw dictation text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Word(&'a str),
    /// Inner text of `{...}`.
    Command(&'a str),
    /// Inner text of `[...]`.
    Section(&'a str),
}

fn normalise(command: &str) -> String {
    command
        .chars()
        .map(|c| {
            if c == '_' || c == '-' {
                ' '
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn lookup(command: &str) -> Option<Command> {
    let key = normalise(command);
    COMMANDS
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, c)| *c)
}

/// A section tag is `[` letters, digits, spaces, `_`, `-`, `/` `]` with at least one letter.
fn is_section_name(inner: &str) -> bool {
    inner.chars().any(|c| c.is_alphabetic())
        && inner
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '/' | '&'))
}

fn split_pieces(raw: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = raw;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let close = match rest.as_bytes()[0] {
            b'{' => Some('}'),
            b'[' => Some(']'),
            _ => None,
        };
        if let Some(close) = close {
            if let Some(end) = rest.find(close) {
                let inner = &rest[1..end];
                let nested = inner.contains(['{', '[']);
                if !nested && close == '}' && !inner.trim().is_empty() {
                    pieces.push(Piece::Command(inner.trim()));
                    rest = &rest[end + 1..];
                    continue;
                }
                if !nested && close == ']' && is_section_name(inner.trim()) {
                    pieces.push(Piece::Section(inner.trim()));
                    rest = &rest[end + 1..];
                    continue;
                }
            }
        }
        // A word runs to the next space or the next command opener.
        let end = rest
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c.is_whitespace() || c == '{' || c == '[')
            .map_or(rest.len(), |(i, _)| i);
        pieces.push(Piece::Word(&rest[..end]));
        rest = &rest[end..];
    }
    pieces
}

/// Output under construction.
struct Writer {
    out: String,
    capitalise_next: bool,
    glue_next: bool,
}

impl Writer {
    fn trim_trailing_spaces(&mut self) {
        let kept = self.out.trim_end_matches([' ', '\t']).len();
        self.out.truncate(kept);
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    fn space_before_word(&mut self) {
        if !self.at_line_start() && !self.glue_next && !self.out.ends_with(' ') {
            self.out.push(' ');
        }
    }

    fn word(&mut self, word: &str) {
        self.space_before_word();
        let mut chars = word.chars();
        match chars.next() {
            Some(first) if self.capitalise_next && first.is_lowercase() => {
                self.out.extend(first.to_uppercase());
                self.out.push_str(chars.as_str());
            }
            _ => self.out.push_str(word),
        }
        self.capitalise_next = false;
        self.glue_next = false;
    }

    /// Ends the current line with `newlines` line breaks in total (none at the very start).
    fn break_lines(&mut self, newlines: usize) {
        self.trim_trailing_spaces();
        if self.out.is_empty() {
            return;
        }
        let existing = self.out.len() - self.out.trim_end_matches('\n').len();
        for _ in existing..newlines {
            self.out.push('\n');
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Attach {
                mark,
                ends_sentence,
            } => {
                self.trim_trailing_spaces();
                self.out.push_str(mark);
                if ends_sentence {
                    self.capitalise_next = true;
                }
                self.glue_next = false;
            }
            Command::Join(mark) => {
                self.trim_trailing_spaces();
                self.out.push_str(mark);
                self.glue_next = true;
            }
            Command::Open(mark) => {
                self.space_before_word();
                self.out.push_str(mark);
                self.glue_next = true;
            }
            Command::Paragraph => {
                self.break_lines(2);
                self.capitalise_next = true;
                self.glue_next = false;
            }
            Command::Line => {
                self.break_lines(1);
                self.capitalise_next = true;
                self.glue_next = false;
            }
        }
    }

    fn section(&mut self, name: &str) {
        self.break_lines(2);
        let heading = name.replace('_', " ").to_uppercase();
        self.out.push_str(heading.trim());
        self.out.push_str(":\n");
        self.capitalise_next = true;
        self.glue_next = false;
    }
}

/// Formats raw MedASR text: commands become punctuation, line breaks and section headings;
/// sentences start with a capital letter; whitespace is tidied.
pub fn format_dictation(raw: &str) -> String {
    let mut writer = Writer {
        out: String::with_capacity(raw.len()),
        capitalise_next: true,
        glue_next: false,
    };
    for piece in split_pieces(raw) {
        match piece {
            Piece::Word(word) => writer.word(word),
            Piece::Command(inner) => match lookup(inner) {
                Some(command) => writer.command(command),
                // Unknown command: keep what was said, as words.
                None => {
                    for word in inner.split_whitespace() {
                        writer.word(word);
                    }
                }
            },
            Piece::Section(name) => writer.section(name),
        }
    }
    writer.out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::format_dictation;

    #[test]
    fn dictation_commands_table() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("   ", ""),
            ("the lungs are clear {period}", "The lungs are clear."),
            (
                "no effusion {period} heart normal {period}",
                "No effusion. Heart normal.",
            ),
            ("pain {comma} fever {colon} none", "Pain, fever: none"),
            ("a {semicolon} b", "A; b"),
            (
                "is it {question mark} yes {exclamation mark}",
                "Is it? Yes!",
            ),
            ("first {new paragraph} second", "First\n\nSecond"),
            ("first {next line} second", "First\nSecond"),
            ("first {new line} {new line} second", "First\nSecond"),
            (
                "first {new paragraph} {new paragraph} second",
                "First\n\nSecond",
            ),
            (
                "said {open quote} no pain {close quote} today",
                "Said \"no pain\" today",
            ),
            (
                "bp {open paren} sitting {close paren} normal",
                "Bp (sitting) normal",
            ),
            ("well {hyphen} being", "Well-being"),
            ("120 {slash} 80", "120/80"),
            ("{Period}", "."),
            ("a { period } b", "A. B"),
            ("x {new_paragraph} y", "X\n\nY"),
            ("x {NEW PARAGRAPH} y", "X\n\nY"),
            ("{new paragraph} start", "Start"),
            ("end {new paragraph}", "End"),
            ("[FINDINGS] lungs clear {period}", "FINDINGS:\nLungs clear."),
            (
                "history {period} [FINDINGS] clear {period} [IMPRESSION] normal study {period}",
                "History.\n\nFINDINGS:\nClear.\n\nIMPRESSION:\nNormal study.",
            ),
            ("[past_medical_history] none", "PAST MEDICAL HISTORY:\nNone"),
            // Unknown commands are kept as words, never dropped.
            ("take {foo bar} now", "Take foo bar now"),
            ("{unknown}", "Unknown"),
            // Stray braces and brackets are ordinary characters.
            ("a { b", "A { b"),
            ("a } b", "A } b"),
            ("value [3] here", "Value [3] here"),
            ("{}", "{}"),
            ("word{period}next", "Word. Next"),
            ("already Capital {period} iPhone", "Already Capital. IPhone"),
            ("50 mg daily {period}", "50 mg daily."),
            ("  spaced   out  words ", "Spaced out words"),
        ];
        for (raw, expected) in cases {
            assert_eq!(format_dictation(raw), *expected, "raw: {raw:?}");
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        for raw in [
            "{",
            "}",
            "[",
            "]",
            "{{}}",
            "[[x]]",
            "{[}]",
            "é{period}ü",
            "\u{2581}",
            "{\u{2581}}",
        ] {
            let _ = format_dictation(raw);
        }
    }
}
