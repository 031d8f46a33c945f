//! Finding facts in text, written or spoken: numbers and number words, units, dosing
//! frequencies, sides, medication names.

use super::*;

/// A word of text: lower-cased, with its byte span in the original.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub(super) text: String,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// Splits text into words, numbers (`38.4`, `1,000` as `1000`) and single symbols; a number and
/// the letters glued to it (`5mg`) are two tokens, as are the parts of `62-year-old`.
pub(super) fn tokens(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let c = text[at..].chars().next().unwrap_or(' ');
        let len = c.len_utf8();
        if c.is_ascii_digit() {
            let start = at;
            let mut value = String::new();
            while at < text.len() {
                let b = bytes[at];
                let next_is_digit = bytes.get(at + 1).is_some_and(u8::is_ascii_digit);
                if b.is_ascii_digit() {
                    value.push(b as char);
                } else if b == b'.' && next_is_digit && !value.contains('.') {
                    value.push('.');
                } else if b == b','
                    && bytes
                        .get(at + 1..at + 4)
                        .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
                    && !bytes.get(at + 4).is_some_and(u8::is_ascii_digit)
                {
                    // A thousands separator: 1,000.
                } else {
                    break;
                }
                at += 1;
            }
            out.push(Token {
                text: value,
                start,
                end: at,
            });
        } else if c.is_alphabetic() {
            let start = at;
            while at < text.len() {
                let c = text[at..].chars().next().unwrap_or(' ');
                // Apostrophes inside words (patient's) stay in the word, and so do digits after
                // letters: SpO2, HbA1c and B12 are names, not numbers.
                if c.is_alphanumeric() || (c == '\'' && at > start) {
                    at += c.len_utf8();
                } else {
                    break;
                }
            }
            let word = &text[start..at];
            // A lower-case word with a number glued on ("patient64", "room12", "covid19") is a
            // word and a number, so that the number has to have been said; a short or upper-case
            // stem (SpO2, BRCA1, FEV1, CO2) stays a name.
            let digits = word.bytes().rev().take_while(u8::is_ascii_digit).count();
            let stem = &word[..word.len() - digits];
            let body = stem
                .strip_prefix(|c: char| c.is_ascii_uppercase())
                .unwrap_or(stem);
            if digits > 0 && stem.len() >= 4 && body.bytes().all(|b| b.is_ascii_lowercase()) {
                let split = start + stem.len();
                out.push(Token {
                    text: stem.to_lowercase(),
                    start,
                    end: split,
                });
                out.push(Token {
                    text: text[split..at].to_owned(),
                    start: split,
                    end: at,
                });
            } else {
                out.push(Token {
                    text: word.to_lowercase(),
                    start,
                    end: at,
                });
            }
        } else {
            if !c.is_whitespace() {
                out.push(Token {
                    text: c.to_string(),
                    start: at,
                    end: at + len,
                });
            }
            at += len;
        }
    }
    out
}

use crate::letter::grounding::{TENS, UNITS as SMALL};

pub(super) fn small(word: &str) -> Option<f64> {
    match word {
        "a" | "an" => None,
        "oh" | "o" => Some(0.0),
        "single" => Some(1.0),
        _ => SMALL.iter().position(|w| *w == word).map(|n| n as f64),
    }
}

pub(super) fn tens(word: &str) -> Option<f64> {
    TENS.iter()
        .position(|w| *w == word)
        .map(|n| (n * 10 + 20) as f64)
}

pub(super) fn is_number_word(word: &str) -> bool {
    small(word).is_some() || tens(word).is_some() || matches!(word, "hundred" | "thousand")
}

/// A number spelled out from `words[at..]`: its value and the words it used. With `alternative`,
/// the clinical reading of a digit followed by tens ("one fifty" = 150, "one twenty five" = 125)
/// is tried first; without, the words are read separately ("one", then "fifty").
pub(super) fn spoken_number(
    words: &[&str],
    at: usize,
    hundreds_reading: bool,
) -> Option<(f64, usize)> {
    let first = *words.get(at)?;
    if !is_number_word(first) || first == "oh" || first == "o" {
        return None;
    }
    if hundreds_reading {
        if let (Some(h), Some(next)) = (small(first), words.get(at + 1)) {
            if (1.0..10.0).contains(&h) {
                if let Some(t) = tens(next).or_else(|| small(next).filter(|&n| n >= 10.0)) {
                    let with_unit = words
                        .get(at + 2)
                        .and_then(|w| small(w))
                        .filter(|&n| (1.0..10.0).contains(&n) && t >= 20.0);
                    return Some(match with_unit {
                        Some(u) => (h * 100.0 + t + u, 3),
                        None => (h * 100.0 + t, 2),
                    });
                }
            }
        }
    }
    let mut total = 0.0;
    let mut current = 0.0;
    let mut used = 0;
    let mut last: Option<&str> = None; // "small", "tens", "big"
    while let Some(&word) = words.get(at + used) {
        if let Some(n) = small(word) {
            if matches!(last, Some("small")) || (matches!(last, Some("tens")) && n >= 10.0) {
                break;
            }
            current += n;
            last = Some("small");
        } else if let Some(t) = tens(word) {
            if matches!(last, Some("small") | Some("tens")) {
                break;
            }
            current += t;
            last = Some("tens");
        } else if word == "hundred" {
            current = if current == 0.0 {
                100.0
            } else {
                current * 100.0
            };
            last = Some("big");
        } else if word == "thousand" {
            total += if current == 0.0 {
                1000.0
            } else {
                current * 1000.0
            };
            current = 0.0;
            last = Some("big");
        } else if word == "and"
            && matches!(last, Some("big"))
            && words.get(at + used + 1).is_some_and(|w| is_number_word(w))
        {
            // "one hundred and twenty"
        } else {
            break;
        }
        used += 1;
    }
    if used == 0 {
        return None;
    }
    let mut value = total + current;
    // "thirty eight point four"
    if words.get(at + used) == Some(&"point") {
        let mut decimals = String::new();
        let mut more = used + 1;
        while let Some(d) = words
            .get(at + more)
            .and_then(|w| small(w))
            .filter(|&d| d < 10.0)
        {
            decimals.push(char::from(b'0' + d as u8));
            more += 1;
        }
        if let Ok(fraction) = format!("0.{decimals}").parse::<f64>() {
            if !decimals.is_empty() {
                value += fraction;
                used = more;
            }
        }
    }
    Some((value, used))
}

/// Units a number can carry, in one spelling each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Unit {
    Milligram,
    Microgram,
    Gram,
    Kilogram,
    Millilitre,
    Litre,
    Units,
    Millimole,
    MillimetreMercury,
    Percent,
    PerMinute,
    Degree,
    Centimetre,
    Millimetre,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
    Tablet,
    Puff,
    Drop,
    Times,
}

/// The unit named by `words[at..]`, and the words it used.
pub(super) fn unit_at(words: &[&str], at: usize) -> Option<(Unit, usize)> {
    let word = *words.get(at)?;
    let next = words.get(at + 1).copied();
    let two = |second: &str, unit: Unit| (next == Some(second)).then_some((unit, 2));
    if let Some(found) = match word {
        "per" => two("cent", Unit::Percent),
        "beats" | "breaths" => match next {
            Some("per") => Some((Unit::PerMinute, 3)),
            _ => Some((Unit::PerMinute, 1)),
        },
        "mm" => two("hg", Unit::MillimetreMercury).or(Some((Unit::Millimetre, 1))),
        "millimeters" | "millimetres" | "millimeter" | "millimetre" => {
            two("mercury", Unit::MillimetreMercury).or(Some((Unit::Millimetre, 1)))
        }
        "international" => two("units", Unit::Units),
        _ => None,
    } {
        return Some(found);
    }
    let unit = match word {
        "mg" | "mgs" | "milligram" | "milligrams" | "milligramme" | "milligrammes" => {
            Unit::Milligram
        }
        "mcg" | "µg" | "ug" | "microgram" | "micrograms" => Unit::Microgram,
        "g" | "gm" | "gram" | "grams" | "gramme" | "grammes" => Unit::Gram,
        "kg" | "kgs" | "kilo" | "kilos" | "kilogram" | "kilograms" => Unit::Kilogram,
        "ml" | "mls" | "milliliter" | "milliliters" | "millilitre" | "millilitres" | "cc" => {
            Unit::Millilitre
        }
        "l" | "liter" | "liters" | "litre" | "litres" => Unit::Litre,
        "units" | "unit" | "iu" | "u" => Unit::Units,
        "mmol" | "millimole" | "millimoles" | "millimolar" => Unit::Millimole,
        "mmhg" => Unit::MillimetreMercury,
        "%" | "percent" => Unit::Percent,
        "bpm" | "beats" | "breaths" | "rpm" => Unit::PerMinute,
        "°" | "degrees" | "degree" | "°c" | "°f" => Unit::Degree,
        "cm" | "cms" | "centimeter" | "centimeters" | "centimetre" | "centimetres" => {
            Unit::Centimetre
        }
        "min" | "mins" | "minute" | "minutes" => Unit::Minute,
        "h" | "hr" | "hrs" | "hour" | "hours" => Unit::Hour,
        "day" | "days" => Unit::Day,
        "wk" | "wks" | "week" | "weeks" => Unit::Week,
        "month" | "months" | "mo" => Unit::Month,
        "year" | "years" | "yr" | "yrs" | "yo" | "y" => Unit::Year,
        "tablet" | "tablets" | "tab" | "tabs" | "pill" | "pills" | "capsule" | "capsules" => {
            Unit::Tablet
        }
        "puff" | "puffs" => Unit::Puff,
        "drop" | "drops" => Unit::Drop,
        "times" | "x" => Unit::Times,
        _ => return None,
    };
    Some((unit, 1))
}

/// Dosing frequencies, one spelling each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Frequency {
    Daily,
    TwiceDaily,
    ThreeTimesDaily,
    FourTimesDaily,
    EveryHours(u32),
    AtNight,
    Weekly,
    AsNeeded,
}

/// The frequency named by `words[at..]` and the words it used (the longest spelling wins).
pub(super) fn frequency_at(words: &[&str], at: usize) -> Option<(Frequency, usize)> {
    let word = |i: usize| words.get(at + i).copied().unwrap_or("");
    let per_day = |i: usize| -> Option<usize> {
        match (word(i), word(i + 1)) {
            ("a" | "per" | "each" | "every", "day") => Some(2),
            ("daily", _) => Some(1),
            ("a" | "per", "24") if word(i + 2) == "hours" => Some(3),
            _ => None,
        }
    };
    // "once / twice / two times / 3 times" + "a day / daily".
    let (count, used) = match (word(0), word(1)) {
        ("once", _) => (Some(1), 1),
        ("twice", _) => (Some(2), 1),
        ("thrice", _) => (Some(3), 1),
        (n, "times") => (
            match n {
                "one" | "1" => Some(1),
                "two" | "2" => Some(2),
                "three" | "3" => Some(3),
                "four" | "4" => Some(4),
                _ => None,
            },
            2,
        ),
        _ => (None, 0),
    };
    if let Some(count) = count {
        if let Some(more) = per_day(used) {
            let frequency = match count {
                1 => Frequency::Daily,
                2 => Frequency::TwiceDaily,
                3 => Frequency::ThreeTimesDaily,
                _ => Frequency::FourTimesDaily,
            };
            return Some((frequency, used + more));
        }
        if count == 1 && matches!((word(1), word(2)), ("a" | "per", "week")) {
            return Some((Frequency::Weekly, 3));
        }
    }
    // "every 6 hours", "every six hours", "q6h", "q 6 h"
    if word(0) == "every" || word(0) == "q" {
        let (hours, used) = match word(1).parse::<u32>() {
            Ok(n) => (Some(n), 2),
            Err(_) => spoken_number(words, at + 1, false)
                .map(|(n, used)| (Some(n as u32), used + 1))
                .unwrap_or((None, 1)),
        };
        if let Some(hours) = hours {
            if matches!(word(used), "hours" | "hour" | "h" | "hrs" | "hourly") {
                return Some((Frequency::EveryHours(hours), used + 1));
            }
        }
        if word(0) == "every" && matches!(word(1), "morning" | "day") {
            return Some((Frequency::Daily, 2));
        }
        if word(0) == "every" && word(1) == "night" {
            return Some((Frequency::AtNight, 2));
        }
    }
    let single = match word(0) {
        "daily" | "od" | "qd" => Some(Frequency::Daily),
        "qds" | "qid" => Some(Frequency::FourTimesDaily),
        "bid" | "bd" => Some(Frequency::TwiceDaily),
        "tid" | "tds" => Some(Frequency::ThreeTimesDaily),
        "nightly" | "nocte" | "qhs" => Some(Frequency::AtNight),
        "weekly" => Some(Frequency::Weekly),
        "prn" => Some(Frequency::AsNeeded),
        _ => None,
    };
    if let Some(frequency) = single {
        return Some((frequency, 1));
    }
    // b.i.d. and friends arrive as letters between dots.
    let dotted: String = [word(0), word(2), word(4)].concat();
    if word(1) == "." && word(3) == "." {
        let frequency = match dotted.as_str() {
            "bid" => Some(Frequency::TwiceDaily),
            "tid" => Some(Frequency::ThreeTimesDaily),
            "qid" => Some(Frequency::FourTimesDaily),
            "qhs" => Some(Frequency::AtNight),
            "prn" => Some(Frequency::AsNeeded),
            _ => None,
        };
        if let Some(frequency) = frequency {
            let used = if word(5) == "." { 6 } else { 5 };
            return Some((frequency, used));
        }
    }
    match (word(0), word(1)) {
        ("at", "night" | "bedtime") => Some((Frequency::AtNight, 2)),
        ("as", "needed" | "required") => Some((Frequency::AsNeeded, 2)),
        ("when", "needed" | "required") => Some((Frequency::AsNeeded, 2)),
        ("once", "weekly") => Some((Frequency::Weekly, 2)),
        _ => None,
    }
}

/// Left, right or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Side {
    Left,
    Right,
    Both,
}

pub(super) fn side(word: &str) -> Option<Side> {
    match word {
        "left" | "lt" => Some(Side::Left),
        "right" | "rt" => Some(Side::Right),
        "bilateral" | "bilaterally" => Some(Side::Both),
        _ => None,
    }
}

/// Words that join a side to what it qualifies, skipped when looking for that part.
pub(super) const SIDE_FILLERS: [&str; 6] = ["sided", "side", "-", "the", "upper", "lower"];

/// A fact found in text, with the token range it spans.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Fact {
    Number { value: f64, unit: Option<Unit> },
    Pressure { systolic: f64, diastolic: f64 },
    Frequency(Frequency),
    Medication(String),
    Side { side: Side, part: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Found {
    pub(super) fact: Fact,
    pub(super) first: usize,
    pub(super) last: usize,
}

/// A number at `at`, written or spoken: value, tokens used. `hundreds` asks for the clinical
/// reading of "one fifty".
pub(super) fn number_at(words: &[&str], at: usize, hundreds: bool) -> Option<(f64, usize)> {
    let word = *words.get(at)?;
    if word.starts_with(|c: char| c.is_ascii_digit()) {
        return word.parse::<f64>().ok().map(|v| (v, 1));
    }
    spoken_number(words, at, hundreds)
}

/// Every fact in `tokens`. `generous` (for the transcript) also records the other readings of
/// ambiguous spoken numbers, so that either reading in a letter counts as said.
pub(super) fn facts(tokens: &[Token], lexicon: Option<&DrugLexicon>, generous: bool) -> Vec<Found> {
    let words: Vec<&str> = tokens.iter().map(|t| t.text.as_str()).collect();
    let mut found = Vec::new();
    let mut at = 0;
    while at < words.len() {
        if let Some((frequency, used)) = frequency_at(&words, at) {
            found.push(Found {
                fact: Fact::Frequency(frequency),
                first: at,
                last: at + used - 1,
            });
            at += used;
            continue;
        }
        let readings: Vec<(f64, usize)> = if generous {
            [true, false]
                .iter()
                .filter_map(|&h| number_at(&words, at, h))
                .collect()
        } else {
            number_at(&words, at, true).into_iter().collect()
        };
        if let Some(&(value, used)) = readings.first() {
            // A blood pressure: N / N or N over N.
            let after = at + used;
            if matches!(words.get(after), Some(&"/") | Some(&"over")) {
                if let Some((diastolic, more)) = number_at(&words, after + 1, true) {
                    found.push(Found {
                        fact: Fact::Pressure {
                            systolic: value,
                            diastolic,
                        },
                        first: at,
                        last: after + more,
                    });
                    if generous {
                        for (v, _) in readings.iter().skip(1) {
                            found.push(Found {
                                fact: Fact::Number {
                                    value: *v,
                                    unit: None,
                                },
                                first: at,
                                last: at,
                            });
                        }
                        // Each half stands as a number too.
                        for v in [value, diastolic] {
                            found.push(Found {
                                fact: Fact::Number {
                                    value: v,
                                    unit: None,
                                },
                                first: at,
                                last: at,
                            });
                        }
                    }
                    at = after + 1 + more;
                    continue;
                }
            }
            for &(value, used) in &readings {
                let mut next = at + used;
                // "62-year-old", "5-day course"
                if words.get(next) == Some(&"-") {
                    next += 1;
                }
                let unit = unit_at(&words, next);
                let last = unit.map_or(at + used - 1, |(_, n)| next + n - 1);
                found.push(Found {
                    fact: Fact::Number {
                        value,
                        unit: unit.map(|(u, _)| u),
                    },
                    first: at,
                    last,
                });
            }
            at += readings.iter().map(|r| r.1).max().unwrap_or(1);
            continue;
        }
        let word = words[at];
        if let Some(side) = side(word) {
            let part = words[at + 1..]
                .iter()
                .take(4)
                .find(|w| !SIDE_FILLERS.contains(w))
                .filter(|w| w.chars().all(char::is_alphabetic) && w.len() > 2)
                .map(|w| w.to_string());
            found.push(Found {
                fact: Fact::Side { side, part },
                first: at,
                last: at,
            });
        } else if lexicon.is_some_and(|l| l.contains(word)) {
            found.push(Found {
                fact: Fact::Medication(word.to_string()),
                first: at,
                last: at,
            });
        }
        at += 1;
    }
    found
}
