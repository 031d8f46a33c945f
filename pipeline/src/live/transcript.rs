//! The last stage: recognised text becomes transcript lines, appended to `transcript.jsonl`
//! before they are sent as events; the user's corrections are written back; the session is
//! marked complete when every stage has drained.

use super::*;

pub(super) fn transcript_stage(
    (input, edits): (Receiver<Recognized>, Receiver<TranscriptLine>),
    (events, fatal): (&Sender<LiveEvent>, &Fatal),
    session: &Session,
    (mut meta, lock): (SessionMeta, crate::session::SessionLock),
) {
    // The session's transcript so far, to rewrite it when the user corrects a segment.
    let mut lines: Vec<TranscriptLine> = Vec::new();
    loop {
        let recognized = crossbeam_channel::select! {
            recv(input) -> message => match message {
                Ok(recognized) => recognized,
                Err(_) => break,
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
                let line = TranscriptLine {
                    speaker: None,
                    start_s: seconds(start),
                    end_s: seconds(end),
                    text,
                    raw_text: raw,
                };
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
