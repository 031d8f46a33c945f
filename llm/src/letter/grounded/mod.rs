//! Transcript-grounded drafting, for base models that cannot be trusted to write freely (the 270M
//! default copies its prompt's example facts and invents findings). The letter is built from the
//! transcript's own statements:
//!
//! 1. the transcript is split into clean statements: speaker tags, fillers, false starts,
//!    pleasantries and questions removed; a patient's first person becomes "the patient";
//! 2. the model assigns each statement to a template section, a choice among the section titles
//!    scored by its next-token probabilities after a short few-shot prompt (the prompt's own
//!    examples only label sections; no example text can reach the letter);
//! 3. each section is its statements in transcript order.
//!
//! Nothing is written that was not said; the fact guard still checks the result.

use std::sync::atomic::{AtomicBool, Ordering};

use super::facts::DrugLexicon;
use super::grounding::{TENS, UNITS};
use super::template::Template;
use super::{LetterEvent, TranscriptSegment};
use crate::chat::user_text;
use crate::error::{LlmError, Result};
use crate::loader::LoadedModel;

mod statements;

pub use statements::{statements, Speaker, Statement};

/// Tokens of a statement that are scored: enough to tell sections apart, and a bound on the
/// work a long run-on sentence costs.
const SCORED_TOKENS: usize = 32;

/// How the model files and rates a transcript's statements.
#[derive(Debug, Clone, PartialEq)]
pub struct Filing {
    /// The section of each statement (template order index).
    pub sections: Vec<usize>,
    /// How much likelier the model finds each statement in the letter than in talk, per token
    /// (pointwise mutual information of statement and letter): high for findings and plans, low
    /// for chit-chat.
    pub letter_likeness: Vec<f32>,
}

/// Files each statement under a section, the model acting as a noisy channel: for every section,
/// how likely it finds the statement's words written under that section's heading and
/// description, `log P(statement | section)`. Small models judge which text fits a heading far
/// better than they name a heading for a text. A neutral heading ("a clinical conversation")
/// gives each statement's likelihood as talk, for [`Filing::letter_likeness`]. Each heading is
/// read once; each statement is read after it from a checkpoint of the key/value caches, and
/// only the statements' own tokens are scored (the normaliser is taken over them), so the full
/// 262,144-row output head is never run. The choices are then smoothed to keep the transcript's
/// order ([`in_order`]).
pub fn assign_sections(
    loaded: &mut LoadedModel,
    template: &Template,
    statements: &[Statement],
    drugs: Option<&DrugLexicon>,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(LetterEvent),
) -> Result<Filing> {
    if statements.is_empty() {
        return Ok(Filing {
            sections: Vec::new(),
            letter_likeness: Vec::new(),
        });
    }
    let mut encoded = Vec::with_capacity(statements.len());
    for statement in statements {
        let mut ids = loaded.tokenizer.encode(&user_text(&statement.text))?;
        ids.truncate(SCORED_TOKENS);
        encoded.push(ids);
    }
    let mut headings: Vec<String> = template
        .sections
        .iter()
        .map(|section| {
            format!(
                "{}\n\n{} ({}):\n",
                template.title,
                section.title,
                section.instructions.trim().trim_end_matches('.')
            )
        })
        .collect();
    headings.push("Transcript of a conversation in a clinic:\n".into());
    let scores = channel_scores(loaded, &headings, &encoded, cancel, on_event)?;
    let sections = template.sections.len();
    let emissions: Vec<Vec<f32>> = scores
        .iter()
        .zip(statements)
        .map(|(s, statement)| {
            let words = cue_words(&statement.text);
            log_softmax(&s[..sections])
                .into_iter()
                .zip(&template.sections)
                .map(|(score, section)| {
                    let cued = section
                        .cues
                        .iter()
                        .any(|cue| cue_matches(cue, &words, drugs));
                    score + if cued { CUE_WEIGHT } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let letter_likeness = scores
        .iter()
        .zip(&encoded)
        .map(|(s, ids)| {
            let best = s[..sections].iter().copied().fold(f32::MIN, f32::max);
            (best - s[sections]) / ids.len().max(1) as f32
        })
        .collect();
    Ok(Filing {
        sections: in_order(&emissions, BACKWARD_PENALTY),
        letter_likeness,
    })
}

/// Log-probability weight of a template cue ("on examination", a medication name) for its
/// section. More than [`BACKWARD_PENALTY`] and a small model's usual doubt together: a referral
/// dictation that ends "please assess for angina" files the request under the reason for
/// referral, though that section comes first.
const CUE_WEIGHT: f32 = 6.0;

/// A statement's words for cue matching: lower case, numbers apart from the units glued to them
/// (`5mg` -> `5 mg`).
fn cue_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_digit = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        let digit = c.is_ascii_digit();
        if c.is_alphanumeric() || c == '\'' {
            if !current.is_empty() && digit != previous_digit && c != '\'' {
                words.push(std::mem::take(&mut current));
            }
            current.push(c);
            previous_digit = digit;
        } else if !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Whether `cue` (a word, a phrase, or `{medication}`) occurs in `words`.
fn cue_matches(cue: &str, words: &[String], drugs: Option<&DrugLexicon>) -> bool {
    if cue.trim() == "{medication}" {
        return drugs.is_some_and(|d| words.iter().any(|w| d.contains(w)));
    }
    let phrase = cue_words(cue);
    !phrase.is_empty()
        && words
            .windows(phrase.len())
            .any(|window| window == phrase.as_slice())
}

/// `log P(statement | heading)` for every statement (rows) and heading (columns).
fn channel_scores(
    loaded: &mut LoadedModel,
    headings: &[String],
    encoded: &[Vec<u32>],
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(LetterEvent),
) -> Result<Vec<Vec<f32>>> {
    // Candidates for the normaliser: every token the statements use. Comparing headings needs
    // the same normaliser for all; it need not be the whole vocabulary.
    let mut vocabulary: Vec<u32> = encoded.iter().flatten().copied().collect();
    vocabulary.sort_unstable();
    vocabulary.dedup();
    if vocabulary.is_empty() {
        return Ok(vec![vec![0.0; headings.len()]; encoded.len()]);
    }
    let column: std::collections::HashMap<u32, usize> = vocabulary
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    let log_probability = |row: &[f32], token: u32| -> f32 {
        let max = row.iter().copied().fold(f32::MIN, f32::max);
        let sum: f32 = row.iter().map(|l| (l - max).exp()).sum();
        column
            .get(&token)
            .and_then(|&c| row.get(c))
            .map_or(f32::MIN, |l| l - max - sum.ln())
    };
    let mut scores = vec![vec![0f32; headings.len()]; encoded.len()];
    let mut prompt_tokens = 0;
    for (index, heading) in headings.iter().enumerate() {
        let mut prompt = vec![loaded.tokenizer.bos];
        prompt.extend(loaded.tokenizer.encode(&user_text(heading))?);
        prompt_tokens += prompt.len();
        let model = &mut loaded.model;
        model.reset();
        let after_heading = model.forward_restricted(&prompt, &vocabulary)?;
        let first_row: Vec<f32> = after_heading
            .narrow(0, prompt.len() - 1, 1)?
            .squeeze(0)?
            .to_vec1()?;
        let checkpoint = model.checkpoint();
        for (statement, ids) in encoded.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(LlmError::Cancelled);
            }
            let Some((&first, rest)) = ids.split_first() else {
                continue;
            };
            if !model.restore(&checkpoint) {
                model.reset();
                model.forward_restricted(&prompt, &vocabulary)?;
            }
            let mut total = log_probability(&first_row, first);
            if !rest.is_empty() {
                // Row j predicts token j + 1; the last token predicts nothing we need.
                let rows: Vec<Vec<f32>> = model
                    .forward_restricted(&ids[..ids.len() - 1], &vocabulary)?
                    .to_vec2()?;
                for (row, &next) in rows.iter().zip(rest) {
                    total += log_probability(row, next);
                }
            }
            scores[statement][index] = total;
        }
    }
    on_event(LetterEvent::Prompt(prompt_tokens));
    Ok(scores)
}

/// Log-probability cost of filing a statement under an earlier section than the one before it.
/// Consultations and dictations mostly run in the order letters are written (history, findings,
/// assessment, plan); one statement's weak preference should not break that order, a strong one
/// may.
const BACKWARD_PENALTY: f32 = 3.0;

fn log_softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::MIN, f32::max);
    let sum: f32 = scores.iter().map(|s| (s - max).exp()).sum();
    scores.iter().map(|s| s - max - sum.ln()).collect()
}

/// The sections (one per statement) that maximise the statements' log-probabilities less
/// `penalty` for every step back to an earlier section (Viterbi).
fn in_order(emissions: &[Vec<f32>], penalty: f32) -> Vec<usize> {
    let Some(sections) = emissions.first().map(Vec::len) else {
        return Vec::new();
    };
    let mut best: Vec<f32> = emissions[0].clone();
    let mut back: Vec<Vec<usize>> = Vec::with_capacity(emissions.len());
    for emission in &emissions[1..] {
        let mut next = vec![f32::MIN; sections];
        let mut from = vec![0usize; sections];
        for (to, slot) in next.iter_mut().enumerate() {
            for (previous, &score) in best.iter().enumerate() {
                let step = if to < previous { penalty } else { 0.0 };
                let total = score - step + emission[to];
                if total > *slot {
                    *slot = total;
                    from[to] = previous;
                }
            }
        }
        back.push(from);
        best = next;
    }
    let mut state = best
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    let mut path = vec![state];
    for from in back.iter().rev() {
        state = from[state];
        path.push(state);
    }
    path.reverse();
    path
}

/// Section texts (template order) of a grounded draft of `transcript`.
pub fn draft(
    loaded: &mut LoadedModel,
    template: &Template,
    transcript: &[TranscriptSegment],
    drugs: Option<&DrugLexicon>,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(LetterEvent),
) -> Result<Vec<String>> {
    let statements = statements(transcript);
    let filing = assign_sections(loaded, template, &statements, drugs, cancel, on_event)?;
    let kept = keep(&statements, &filing.letter_likeness, drugs);
    let mut texts = vec![String::new(); template.sections.len()];
    for (index, section) in template.sections.iter().enumerate() {
        on_event(LetterEvent::Section(section.key.clone()));
        let body: Vec<&str> = statements
            .iter()
            .zip(&filing.sections)
            .zip(&kept)
            .filter(|((_, s), keep)| **s == index && **keep)
            .map(|((statement, _), _)| statement.text.as_str())
            .collect();
        let text = body.join(" ");
        if !text.is_empty() {
            on_event(LetterEvent::Text(text.clone()));
        }
        texts[index] = text;
    }
    Ok(texts)
}

/// Whether a statement carries a number (in digits or words) or a medication name: the facts a
/// letter must not lose.
fn carries_fact(text: &str, drugs: Option<&DrugLexicon>) -> bool {
    text.split(|c: char| !c.is_alphanumeric()).any(|word| {
        let word = word.to_ascii_lowercase();
        word.starts_with(|c: char| c.is_ascii_digit())
            || UNITS[1..].contains(&word.as_str())
            || TENS.contains(&word.as_str())
            || drugs.is_some_and(|d| d.contains(&word))
    })
}

/// Share of a conversation's statement words a letter keeps besides those that carry facts
/// (which are all kept), for a short exchange and for a long visit, and the statement word
/// counts between which it goes from one to the other. A short exchange is mostly content; a
/// long visit is mostly talk, and its fact-carrying statements are most of what a clinician's
/// note says: on ACI-Bench (visits of 700-1,800 words) a share of 0.6 made letters 1.8 times
/// the clinicians' notes, 0.45 1.6 times, 0.3 1.4 times.
const SHORT_TALK_SHARE: f32 = 0.6;
const LONG_TALK_SHARE: f32 = 0.3;
const SHORT_TALK_WORDS: f32 = 150.0;
const LONG_TALK_WORDS: f32 = 250.0;

/// The share of a conversation of `words` statement words that a letter keeps beyond its facts.
fn conversation_share(words: usize) -> f32 {
    let t =
        ((words as f32 - SHORT_TALK_WORDS) / (LONG_TALK_WORDS - SHORT_TALK_WORDS)).clamp(0.0, 1.0);
    SHORT_TALK_SHARE + t * (LONG_TALK_SHARE - SHORT_TALK_SHARE)
}

/// Which statements go into the letter. A dictation is the letter's content: all of it. Of a
/// conversation, the statements the model rates most letter-like, up to [`conversation_share`]
/// of the words, and every statement that carries a number (in digits or words) or names a
/// medication, whatever its rating.
fn keep(statements: &[Statement], likeness: &[f32], drugs: Option<&DrugLexicon>) -> Vec<bool> {
    if !statements.iter().any(|s| s.conversation) {
        return vec![true; statements.len()];
    }
    let words = |s: &Statement| s.text.split_whitespace().count();
    let total: usize = statements.iter().map(words).sum();
    let budget = (total as f32 * conversation_share(total)) as usize;
    let mut order: Vec<usize> = (0..statements.len()).collect();
    order.sort_by(|&a, &b| likeness[b].total_cmp(&likeness[a]));
    let mut kept = vec![false; statements.len()];
    let mut used = 0;
    for i in order {
        if used < budget || carries_fact(&statements[i].text, drugs) {
            kept[i] = true;
            used += words(&statements[i]);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_follow_the_transcript_unless_the_evidence_is_strong() {
        let p = |v: [f32; 3]| v.iter().map(|x| x.ln()).collect::<Vec<f32>>();
        // A weak pull back to section 0 in the middle is overruled; a strong one is not.
        let weak = [p([0.1, 0.8, 0.1]), p([0.5, 0.4, 0.1]), p([0.1, 0.1, 0.8])];
        assert_eq!(in_order(&weak, 3.0), [1, 1, 2]);
        let strong = [
            p([0.01, 0.98, 0.01]),
            p([0.998, 0.001, 0.001]),
            p([0.1, 0.1, 0.8]),
        ];
        assert_eq!(in_order(&strong, 3.0), [1, 0, 2]);
        assert!(in_order(&[], 3.0).is_empty());
    }

    #[test]
    fn cues_match_whole_words_phrases_and_medication_names() {
        let words =
            cue_words("On examination, BP 150/90; he takes Amlodipine 5mg. Patient's x-ray");
        assert!(cue_matches("on examination", &words, None));
        assert!(cue_matches("mg", &words, None));
        assert!(cue_matches("x ray", &words, None));
        assert!(cue_matches("patient's", &words, None));
        assert!(
            !cue_matches("exam", &words, None),
            "a part of a word is no cue"
        );
        assert!(
            !cue_matches("examination on", &words, None),
            "words in order"
        );
        assert!(!cue_matches("", &words, None));
        let drugs = DrugLexicon::from_names(["amlodipine"]);
        assert!(cue_matches("{medication}", &words, Some(&drugs)));
        assert!(!cue_matches("{medication}", &words, None));
        assert!(!cue_matches(
            "{medication}",
            &cue_words("He has angina."),
            Some(&drugs)
        ));
    }

    #[test]
    fn long_visits_keep_a_smaller_share_of_their_talk() {
        assert_eq!(conversation_share(40), SHORT_TALK_SHARE);
        assert_eq!(conversation_share(5_000), LONG_TALK_SHARE);
        let middle = conversation_share(200);
        assert!(LONG_TALK_SHARE < middle && middle < SHORT_TALK_SHARE);
    }

    fn statement_texts(transcript: &[TranscriptSegment]) -> Vec<String> {
        statements(transcript).into_iter().map(|s| s.text).collect()
    }

    fn segment(text: &str) -> TranscriptSegment {
        TranscriptSegment {
            start_s: None,
            end_s: None,
            text: text.into(),
            raw_text: None,
        }
    }

    #[test]
    fn a_sentence_cut_by_a_pause_is_one_statement() {
        let transcript = [
            segment("Her C reactive protein"),
            segment("was 96 and her white cell count was 14.2."),
            segment("Please repeat the x-ray."),
        ];
        let texts = statement_texts(&transcript);
        assert_eq!(
            texts,
            [
                "Her C reactive protein was 96 and her white cell count was 14.2.",
                "Please repeat the x-ray."
            ]
        );
        let sources: Vec<usize> = statements(&transcript).iter().map(|s| s.segment).collect();
        assert_eq!(sources, [0, 2]);
    }

    #[test]
    fn dialogue_becomes_clean_third_person_statements() {
        let transcript = [segment(
            "[doctor] hi , brian . how are you ?\n\
             [patient] hi , good to see you .\n\
             [doctor] so , brian is a 58 year old male with a past medical history of hypertension .\n\
             [patient] i , i just feel out of sorts lately . um , i'm so tired and fatigued .\n\
             [doctor] okay . are you taking your medications ?\n\
             [patient] mm-hmm .\n\
             [doctor] i want you to take lisinopril 20 mg a day .",
        )];
        let texts = statement_texts(&transcript);
        assert_eq!(
            texts,
            [
                "Brian is a 58 year old male with a past medical history of hypertension.",
                "The patient reports that they just feel out of sorts lately.",
                "The patient reports that they're so tired and fatigued.",
                "I want the patient to take lisinopril 20 mg a day.",
            ]
        );
    }

    #[test]
    fn dictation_keeps_its_own_voice() {
        let transcript = [segment(
            "Referral to cardiology. Mister Jones is a sixty two year old man with exertional \
             chest pain for three weeks. He takes amlodipine five milligrams daily.",
        )];
        let texts = statement_texts(&transcript);
        assert_eq!(
            texts,
            [
                "Referral to cardiology.",
                "Mister Jones is a sixty two year old man with exertional chest pain for three weeks.",
                "He takes amlodipine five milligrams daily.",
            ]
        );
    }

    #[test]
    fn mts_style_tags_and_questions() {
        let transcript = [segment(
            "Doctor: When did your pain begin? \nPatient: I've had low back pain for about eight years now.\nDoctor: Okay.",
        )];
        let found = statements(&transcript);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].text,
            "The patient reports that they've had low back pain for about eight years now."
        );
        assert_eq!(found[0].speaker, Speaker::Patient);
    }
}
