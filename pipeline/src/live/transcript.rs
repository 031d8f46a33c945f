//! The last stage: recognised text becomes transcript lines, appended to `transcript.jsonl`
//! before they are sent as events; the user's corrections are written back; the session is
//! marked complete when every stage has drained.

use super::*;

/// What the transcript stage listens to, and where it asks for lines to be cut.
pub(super) struct TranscriptInputs {
    pub recognized: Receiver<Recognized>,
    pub edits: Receiver<TranscriptLine>,
    pub turns: Option<Receiver<super::speakers::TurnsSoFar>>,
    pub cuts: Option<Sender<CutJob>>,
}

pub(super) fn transcript_stage(
    TranscriptInputs {
        recognized: input,
        edits,
        turns: mut speakers,
        mut cuts,
    }: TranscriptInputs,
    (events, fatal): (&Sender<LiveEvent>, &Fatal),
    session: &Session,
    (mut meta, lock): (SessionMeta, crate::session::SessionLock),
) {
    // The session's transcript so far, to rewrite it when the user corrects a segment.
    let mut lines: Vec<TranscriptLine> = Vec::new();
    // Speaker turns while the recording goes on, if speakers are told apart; after the last
    // line, the stage waits for the speaker stage's last turns (it is behind by a few seconds of
    // audio at most) so that they reach the transcript too.
    let mut turns_so_far: Option<super::speakers::TurnsSoFar> = None;
    // Lines (by first sample) already looked at for a change of speaker inside, and those the
    // user corrected (never cut: the correction wins).
    let mut cutting = Cutting::default();
    let mut input_open = true;
    let (no_turns, no_input) = (crossbeam_channel::never(), crossbeam_channel::never());
    loop {
        if !input_open && speakers.is_none() {
            break;
        }
        let recognized = crossbeam_channel::select! {
            recv(speakers.as_ref().unwrap_or(&no_turns)) -> update => {
                match update {
                    Ok(update) => {
                        let changed = label_lines(&mut lines, &update);
                        if !changed.is_empty() {
                            if let Err(e) = session.write_transcript(&lines) {
                                let _ = events.send(LiveEvent::Warning(e.to_string()));
                            }
                            for line in changed {
                                let _ = events.send(LiveEvent::Speaker(line));
                            }
                        }
                        if update.until_s.is_finite() {
                            cutting.ask(&lines, &update, cuts.as_ref());
                        } else {
                            // The recording has ended; the final pass cuts what is left.
                            cuts = None;
                        }
                        turns_so_far = Some(update);
                    }
                    // The speaker stage has finished: nothing more comes from it.
                    Err(_) => {
                        speakers = None;
                        cuts = None;
                    }
                }
                continue;
            }
            recv(if input_open { &input } else { &no_input }) -> message => match message {
                Ok(recognized) => recognized,
                Err(_) => {
                    input_open = false;
                    continue;
                }
            },
            recv(edits) -> edit => {
                if let Ok(edit) = edit {
                    if cutting.correct(&mut lines, edit) {
                        if let Err(e) = session.write_transcript(&lines) {
                            let _ = events.send(LiveEvent::Warning(e.to_string()));
                        }
                    }
                }
                continue;
            }
        };
        match recognized {
            Recognized::Partial { start, end, text } => {
                let _ = events.try_send(LiveEvent::Partial {
                    start_s: seconds(start),
                    end_s: seconds(end),
                    text,
                });
            }
            Recognized::Final {
                start,
                end,
                raw,
                text,
            } => {
                let mut line = TranscriptLine {
                    speaker: None,
                    start_s: seconds(start),
                    end_s: seconds(end),
                    text,
                    raw_text: raw,
                };
                if let Some(so_far) = &turns_so_far {
                    line.speaker = speaker_in(so_far, &line);
                }
                if !line.text.is_empty() {
                    if let Err(e) = session.append_transcript(&line) {
                        fatal.set(LiveFailure::Session(e.to_string()));
                    }
                    lines.push(line.clone());
                }
                meta.transcribed_s = line.end_s;
                let _ = events.send(LiveEvent::Final(line));
                if let Some(so_far) = turns_so_far.as_ref().filter(|t| t.until_s.is_finite()) {
                    cutting.ask(&lines, so_far, cuts.as_ref());
                }
            }
            Recognized::Cut { start, end, parts } => {
                let labels = turns_so_far.as_ref();
                if let Some(replaced) = cutting.apply(&mut lines, (start, end, parts), labels) {
                    if let Err(e) = session.write_transcript(&lines) {
                        let _ = events.send(LiveEvent::Warning(e.to_string()));
                    }
                    let _ = events.send(LiveEvent::Split {
                        start_s: seconds(start),
                        lines: replaced,
                    });
                }
            }
            Recognized::Failed(failure) => {
                let _ = events.send(LiveEvent::Warning(failure.to_string()));
                fatal.set(failure);
            }
        }
    }
    // Every stage has drained: the recording is complete.
    let recorded_s = crate::wav::WavSource::open(&session.audio_path())
        .map(|wav| wav.info().duration_s())
        .unwrap_or(meta.transcribed_s);
    if fatal.get().is_none() {
        meta.transcribed_s = recorded_s;
        meta.state = SessionState::Complete;
    }
    if let Err(e) = session.write_meta(&meta) {
        fatal.set(LiveFailure::Session(e.to_string()));
    }
    // Released before anyone hears of the end, so that what they do next with the finished
    // session (tell its speakers apart, recover it) finds it free.
    drop(lock);
    let _ = events.send(LiveEvent::Stopped {
        recorded_s,
        error: fatal.get(),
    });
}

/// Cutting lines at changes of speaker while the recording goes on.
#[derive(Default)]
struct Cutting {
    /// Lines already looked at, by first sample.
    asked: std::collections::HashSet<usize>,
    /// Lines the user corrected, by first sample.
    corrected: std::collections::HashSet<usize>,
}

/// The recording's 16 kHz sample at `seconds`.
fn sample(seconds: f64) -> usize {
    (seconds * f64::from(TARGET_RATE)).round() as usize
}

impl Cutting {
    /// Asks the speech model to cut each line that the turns so far newly cover and that spans
    /// a change of speaker (by the rule of the final pass).
    fn ask(
        &mut self,
        lines: &[TranscriptLine],
        so_far: &super::speakers::TurnsSoFar,
        cuts: Option<&Sender<CutJob>>,
    ) {
        let Some(cuts) = cuts else { return };
        for job in self.jobs(lines, so_far) {
            if cuts.send(job).is_err() {
                return;
            }
        }
    }

    fn jobs(
        &mut self,
        lines: &[TranscriptLine],
        so_far: &super::speakers::TurnsSoFar,
    ) -> Vec<CutJob> {
        let mut jobs = Vec::new();
        for line in lines.iter().filter(|l| l.end_s <= so_far.until_s) {
            let start = sample(line.start_s);
            if self.corrected.contains(&start) || !self.asked.insert(start) {
                continue;
            }
            let parts = so_far.floor.parts(line.start_s, line.end_s);
            if parts.len() > 1 {
                jobs.push(CutJob {
                    start,
                    end: sample(line.end_s),
                    parts: parts
                        .iter()
                        .map(|&(from, to, speaker)| (sample(from), sample(to), speaker))
                        .collect(),
                });
            }
        }
        jobs
    }

    /// Replaces the line of samples `start..end` by its transcribed `parts` (those with text),
    /// each labelled by the newest turns (`labels`: the voices may have been clustered again
    /// since the cut was asked for); the new lines, or `None` when the line is gone, was
    /// corrected, or no part has text.
    fn apply(
        &mut self,
        lines: &mut Vec<TranscriptLine>,
        (start, end, parts): (usize, usize, Vec<CutPart>),
        labels: Option<&super::speakers::TurnsSoFar>,
    ) -> Option<Vec<TranscriptLine>> {
        if self.corrected.contains(&start) {
            return None;
        }
        let index = lines
            .iter()
            .position(|l| sample(l.start_s) == start && sample(l.end_s) == end)?;
        let replacement: Vec<TranscriptLine> = parts
            .into_iter()
            .filter(|part| !part.text.trim().is_empty())
            .map(|part| {
                let mut line = TranscriptLine {
                    speaker: Some(part.speaker),
                    start_s: seconds(part.start),
                    end_s: seconds(part.end),
                    text: part.text,
                    raw_text: part.raw,
                };
                if let Some(speaker) = labels.and_then(|so_far| speaker_in(so_far, &line)) {
                    line.speaker = Some(speaker);
                }
                line
            })
            .collect();
        if replacement.is_empty() {
            return None;
        }
        for line in &replacement {
            self.asked.insert(sample(line.start_s));
        }
        lines.splice(index..=index, replacement.iter().cloned());
        Some(replacement)
    }

    /// Applies the user's correction of the line starting at `edit.start_s`; when that line has
    /// been cut since the user began (the correction spans its parts), the parts become the
    /// corrected line again. Whether anything changed.
    fn correct(&mut self, lines: &mut Vec<TranscriptLine>, edit: TranscriptLine) -> bool {
        let Some(index) = lines.iter().position(|l| l.start_s == edit.start_s) else {
            return false;
        };
        let parts_end = lines[index..]
            .iter()
            .take_while(|l| l.end_s <= edit.end_s)
            .count()
            .max(1);
        self.corrected.insert(sample(edit.start_s));
        let speaker = lines[index].speaker;
        let text = edit.text;
        let merged = if parts_end > 1 {
            TranscriptLine {
                speaker,
                text,
                ..edit
            }
        } else {
            TranscriptLine {
                text,
                ..lines[index].clone()
            }
        };
        lines.splice(index..index + parts_end, [merged]);
        true
    }
}

/// The speaker of `line` by the turns so far, once they cover all of it.
fn speaker_in(so_far: &super::speakers::TurnsSoFar, line: &TranscriptLine) -> Option<usize> {
    (line.end_s <= so_far.until_s)
        .then(|| so_far.floor.speaker_of(line.start_s, line.end_s))
        .flatten()
}

/// Gives each line the turns so far cover its speaker; the lines whose speaker changed.
fn label_lines(
    lines: &mut [TranscriptLine],
    so_far: &super::speakers::TurnsSoFar,
) -> Vec<TranscriptLine> {
    let mut changed = Vec::new();
    for line in lines.iter_mut() {
        let speaker = speaker_in(so_far, line);
        if speaker.is_some() && speaker != line.speaker {
            line.speaker = speaker;
            changed.push(line.clone());
        }
    }
    changed
}

#[cfg(test)]
mod label_tests {
    use super::*;
    use medscribe_asr::diarize::SpeakerTurn;

    fn line(start_s: f64, end_s: f64) -> TranscriptLine {
        TranscriptLine {
            speaker: None,
            start_s,
            end_s,
            text: "x".into(),
            raw_text: "x".into(),
        }
    }

    fn turns_so_far(until_s: f64) -> super::super::speakers::TurnsSoFar {
        turns_of_speakers(until_s, [0, 1])
    }

    /// Speaker `first` for 0-6 s, then `second` to 20 s.
    fn turns_of_speakers(
        until_s: f64,
        [first, second]: [usize; 2],
    ) -> super::super::speakers::TurnsSoFar {
        let turn = |start_s, end_s, speaker| SpeakerTurn {
            start_s,
            end_s,
            speaker,
        };
        super::super::speakers::TurnsSoFar::new(
            &[turn(0.0, 6.0, first), turn(6.0, 20.0, second)],
            until_s,
        )
    }

    fn part(start: usize, end: usize, speaker: usize, text: &str) -> CutPart {
        CutPart {
            start,
            end,
            speaker,
            raw: text.into(),
            text: text.into(),
        }
    }

    #[test]
    fn a_labelled_line_spanning_a_change_of_speaker_is_cut_once() {
        let mut lines = vec![line(0.0, 5.0), line(5.0, 12.0), line(12.0, 30.0)];
        let mut cutting = Cutting::default();
        // The second line is 1 s of the first voice and 6 s of the second; the first is one
        // voice; the third is not labelled to its end yet.
        let jobs = cutting.jobs(&lines, &turns_so_far(20.0));
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].start, jobs[0].end), (80_000, 192_000));
        assert_eq!(jobs[0].parts, [(80_000, 96_000, 0), (96_000, 192_000, 1)]);
        assert!(
            cutting.jobs(&lines, &turns_so_far(20.0)).is_empty(),
            "asked once"
        );
        let parts = vec![
            part(80_000, 96_000, 0, "yes."),
            part(96_000, 192_000, 1, "So"),
        ];
        let new = cutting
            .apply(&mut lines, (80_000, 192_000, parts), None)
            .unwrap();
        assert_eq!(new.len(), 2);
        let shown: Vec<_> = lines
            .iter()
            .map(|l| (l.start_s, l.end_s, l.speaker, l.text.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                (0.0, 5.0, None, "x"),
                (5.0, 6.0, Some(0), "yes."),
                (6.0, 12.0, Some(1), "So"),
                (12.0, 30.0, None, "x"),
            ]
        );
        // The parts are never cut again, and a result for a line gone changes nothing.
        assert!(cutting.jobs(&lines, &turns_so_far(20.0)).is_empty());
        let again = vec![part(80_000, 96_000, 0, "a"), part(96_000, 192_000, 1, "b")];
        assert!(cutting
            .apply(&mut lines, (80_000, 192_000, again), None)
            .is_none());
        // Parts without text leave the line whole.
        let mut whole = vec![line(5.0, 12.0)];
        let silent = vec![part(80_000, 96_000, 0, " "), part(96_000, 192_000, 1, "")];
        assert!(Cutting::default()
            .apply(&mut whole, (80_000, 192_000, silent), None)
            .is_none());
        assert_eq!(whole.len(), 1);
        // Voices clustered again since the cut was asked for: the parts take the newest labels.
        let mut lines = vec![line(5.0, 12.0)];
        let reclustered = turns_of_speakers(20.0, [2, 3]);
        let parts = vec![part(80_000, 96_000, 0, "a"), part(96_000, 192_000, 1, "b")];
        let new = Cutting::default()
            .apply(&mut lines, (80_000, 192_000, parts), Some(&reclustered))
            .unwrap();
        let speakers: Vec<_> = new.iter().map(|l| l.speaker).collect();
        assert_eq!(speakers, [Some(2), Some(3)]);
        assert_eq!(lines, new);
    }

    #[test]
    fn the_users_correction_wins_over_a_cut() {
        // Corrected before the cut comes back: the cut is dropped, and never asked again.
        let mut lines = vec![line(5.0, 12.0)];
        let mut cutting = Cutting::default();
        let edit = TranscriptLine {
            text: "corrected".into(),
            ..line(5.0, 12.0)
        };
        assert!(cutting.correct(&mut lines, edit));
        let parts = vec![part(80_000, 96_000, 0, "a"), part(96_000, 192_000, 1, "b")];
        assert!(cutting
            .apply(&mut lines, (80_000, 192_000, parts), None)
            .is_none());
        assert!(cutting.jobs(&lines, &turns_so_far(20.0)).is_empty());
        assert_eq!(lines[0].text, "corrected");
        // Cut while the user was correcting the whole line: the parts become that line again.
        let mut lines = vec![line(0.0, 5.0), line(5.0, 12.0), line(12.0, 30.0)];
        let mut cutting = Cutting::default();
        let parts = vec![part(80_000, 96_000, 0, "a"), part(96_000, 192_000, 1, "b")];
        cutting
            .apply(&mut lines, (80_000, 192_000, parts), None)
            .unwrap();
        assert_eq!(lines.len(), 4);
        let edit = TranscriptLine {
            text: "whole, corrected".into(),
            ..line(5.0, 12.0)
        };
        assert!(cutting.correct(&mut lines, edit));
        let shown: Vec<_> = lines
            .iter()
            .map(|l| (l.start_s, l.end_s, l.text.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                (0.0, 5.0, "x"),
                (5.0, 12.0, "whole, corrected"),
                (12.0, 30.0, "x")
            ]
        );
        // A correction of a line not there changes nothing.
        assert!(!cutting.correct(&mut lines, line(40.0, 41.0)));
    }

    #[test]
    fn lines_in_labelled_audio_take_the_speaker_of_most_of_them() {
        let mut lines = vec![line(0.0, 5.0), line(5.0, 12.0), line(12.0, 30.0)];
        let turn = |start_s, end_s, speaker| SpeakerTurn {
            start_s,
            end_s,
            speaker,
        };
        let so_far =
            super::super::speakers::TurnsSoFar::new(&[turn(0.0, 6.0, 0), turn(6.0, 12.0, 1)], 12.0);
        let changed = label_lines(&mut lines, &so_far);
        assert_eq!(changed.len(), 2);
        let speakers: Vec<_> = lines.iter().map(|l| l.speaker).collect();
        // The second line is 1 s of the first voice and 6 s of the second; the third ends in
        // audio not labelled yet.
        assert_eq!(speakers, [Some(0), Some(1), None]);
        assert!(label_lines(&mut lines, &so_far).is_empty(), "nothing new");
        // Later turns that change a label report that line only.
        let later = super::super::speakers::TurnsSoFar::new(
            &[turn(0.0, 6.0, 1), turn(6.0, 12.0, 1), turn(12.0, 30.0, 2)],
            f64::INFINITY,
        );
        let changed = label_lines(&mut lines, &later);
        let starts: Vec<f64> = changed.iter().map(|l| l.start_s).collect();
        assert_eq!(starts, [0.0, 12.0]);
    }
}
