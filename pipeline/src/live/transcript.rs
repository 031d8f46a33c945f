//! The last stage: recognised text becomes transcript lines, appended to `transcript.jsonl`
//! before they are sent as events; the user's corrections are written back; the session is
//! marked complete when every stage has drained.

use super::*;

pub(super) fn transcript_stage(
    (input, edits, mut speakers): (
        Receiver<Recognized>,
        Receiver<TranscriptLine>,
        Option<Receiver<super::speakers::TurnsSoFar>>,
    ),
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
                        turns_so_far = Some(update);
                    }
                    // The speaker stage has finished: nothing more comes from it.
                    Err(_) => speakers = None,
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
                    if let Some(line) = lines.iter_mut().find(|l| l.start_s == edit.start_s) {
                        line.text = edit.text;
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

/// The speaker of `line` by the turns so far, once they cover all of it.
fn speaker_in(so_far: &super::speakers::TurnsSoFar, line: &TranscriptLine) -> Option<usize> {
    (line.end_s <= so_far.until_s)
        .then(|| crate::speakers::speaker_of(&so_far.turns, line.start_s, line.end_s))
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

    #[test]
    fn lines_in_labelled_audio_take_the_speaker_of_most_of_them() {
        let mut lines = vec![line(0.0, 5.0), line(5.0, 12.0), line(12.0, 30.0)];
        let turn = |start_s, end_s, speaker| SpeakerTurn {
            start_s,
            end_s,
            speaker,
        };
        let so_far = super::super::speakers::TurnsSoFar {
            turns: vec![turn(0.0, 6.0, 0), turn(6.0, 12.0, 1)],
            until_s: 12.0,
        };
        let changed = label_lines(&mut lines, &so_far);
        assert_eq!(changed.len(), 2);
        let speakers: Vec<_> = lines.iter().map(|l| l.speaker).collect();
        // The second line is 1 s of the first voice and 6 s of the second; the third ends in
        // audio not labelled yet.
        assert_eq!(speakers, [Some(0), Some(1), None]);
        assert!(label_lines(&mut lines, &so_far).is_empty(), "nothing new");
        // Later turns that change a label report that line only.
        let later = super::super::speakers::TurnsSoFar {
            turns: vec![turn(0.0, 6.0, 1), turn(6.0, 12.0, 1), turn(12.0, 30.0, 2)],
            until_s: f64::INFINITY,
        };
        let changed = label_lines(&mut lines, &later);
        let starts: Vec<f64> = changed.iter().map(|l| l.start_s).collect();
        assert_eq!(starts, [0.0, 12.0]);
    }
}
