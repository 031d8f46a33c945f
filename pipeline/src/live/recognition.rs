//! Cutting the audio into utterances (VAD) and recognising them: finals in order, partials of
//! the utterance in progress only when the model is idle.

use super::*;

pub(super) fn segmenter_stage(
    mut segmenter: Segmenter<Box<dyn SpeechProbability + Send>>,
    input: Receiver<Audio>,
    out: Sender<AsrJob>,
    fatal: &Fatal,
    queue_dir: PathBuf,
    partial_every: usize,
) {
    let mut queue = AsrQueue {
        out,
        spilled: VecDeque::new(),
        dir: queue_dir,
    };
    // (start, end, made during a pause) of the newest partial job.
    let mut last_partial: Option<(usize, usize, bool)> = None;
    let warn = |error: PipelineError| {
        fatal.set(LiveFailure::Transcription(error.to_string()));
    };
    loop {
        let message = match input.recv_timeout(Duration::from_millis(50)) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => {
                queue.drain();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let finished = match message {
            Audio::Block(block) => segmenter.push(&block),
            Audio::Gap => segmenter.finish(),
        };
        match finished {
            Ok(segments) => {
                for segment in segments {
                    if let Err(error) = queue.push(segment) {
                        warn(error);
                    }
                }
            }
            Err(error) => warn(error),
        }
        if let Some(open) = segmenter.open_utterance() {
            let end = open.start + open.samples.len();
            // Partials every `partial_every` of speech, one as soon as a pause begins (the text
            // shows quickly), and one on exactly the audio the utterance will have if the pause
            // lasts (its text is then reused for the final).
            let due = match last_partial {
                Some((start, last_end, was_pausing)) if start == open.start => {
                    if open.settled {
                        end != last_end
                    } else {
                        (open.pausing && !was_pausing) || end >= last_end + partial_every
                    }
                }
                _ => open.samples.len() >= partial_every || open.pausing,
            };
            if due && queue.offer_partial(open.start, open.samples) {
                last_partial = Some((open.start, end, open.pausing));
            }
        }
    }
    match segmenter.finish() {
        Ok(segments) => {
            for segment in segments {
                if let Err(error) = queue.push(segment) {
                    warn(error);
                }
            }
        }
        Err(error) => warn(error),
    }
    queue.finish();
}

/// Seconds of recent utterances the speech model keeps, so that one found to span a change of
/// speaker can be cut and transcribed again. Speaker labels trail the audio by about 15 s; an
/// utterance gone from here is cut by the final pass instead.
const RECENT_AUDIO_S: usize = 120;

pub(super) fn asr_stage(
    mut recognizer: Box<dyn SpeechRecognizer>,
    (jobs, mut cuts): (Receiver<AsrJob>, Option<Receiver<CutJob>>),
    out: Sender<Recognized>,
) {
    // The newest partial transcript: when an utterance ends exactly where a settled partial
    // did, its text is already known.
    let mut last_partial: Option<(usize, usize, String)> = None;
    // Recent finished utterances (first sample, audio), kept only while lines may be cut.
    let mut recent: VecDeque<(usize, Vec<f32>)> = VecDeque::new();
    let mut jobs_open = true;
    let (no_jobs, no_cuts) = (crossbeam_channel::never(), crossbeam_channel::never());
    loop {
        if !jobs_open && cuts.is_none() {
            break;
        }
        // Speech first: a cut waits while utterances queue.
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(_) => crossbeam_channel::select! {
                recv(if jobs_open { &jobs } else { &no_jobs }) -> job => match job {
                    Ok(job) => job,
                    Err(_) => {
                        jobs_open = false;
                        continue;
                    }
                },
                recv(cuts.as_ref().unwrap_or(&no_cuts)) -> cut => {
                    match cut {
                        Ok(cut) => {
                            if let Some(result) = cut_again(&mut *recognizer, &recent, cut) {
                                if out.send(result).is_err() {
                                    return;
                                }
                            }
                        }
                        // The transcript stage asks for no more cuts.
                        Err(_) => cuts = None,
                    }
                    continue;
                }
            },
        };
        let result = match job {
            AsrJob::Partial { start, samples } => {
                if !jobs.is_empty() {
                    continue;
                }
                let end = start + samples.len();
                match recognizer.transcribe_segment(&samples) {
                    Ok(raw) => {
                        let text = recognizer.format_text(&raw);
                        last_partial = Some((start, end, raw));
                        Recognized::Partial { start, end, text }
                    }
                    Err(_) => continue,
                }
            }
            AsrJob::Final(segment) => {
                let (start, end) = (segment.start, segment.end);
                let samples = segment.samples;
                let raw = transcribe_final(&mut *recognizer, &mut last_partial, start, end, || {
                    Ok(samples.clone())
                });
                if cuts.is_some() {
                    remember(&mut recent, start, samples);
                }
                final_text(&*recognizer, start, end, raw)
            }
            AsrJob::Spilled { start, end, file } => {
                let read = || -> std::result::Result<Vec<f32>, String> {
                    let bytes = std::fs::read(&file).map_err(|e| e.to_string())?;
                    Ok(bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect())
                };
                // Read even when its text is known, if it is to be kept.
                let kept = cuts.is_some().then(read);
                let raw = transcribe_final(&mut *recognizer, &mut last_partial, start, end, || {
                    kept.clone().unwrap_or_else(read)
                });
                if let Some(Ok(samples)) = kept {
                    remember(&mut recent, start, samples);
                }
                // Taken back whether it was read or its text was already known.
                let _ = std::fs::remove_file(&file);
                final_text(&*recognizer, start, end, raw)
            }
        };
        if out.send(result).is_err() {
            return;
        }
    }
}

/// Keeps a finished utterance's audio, forgetting the oldest beyond [`RECENT_AUDIO_S`].
fn remember(recent: &mut VecDeque<(usize, Vec<f32>)>, start: usize, samples: Vec<f32>) {
    recent.push_back((start, samples));
    let limit = RECENT_AUDIO_S * TARGET_RATE as usize;
    while recent.iter().map(|(_, s)| s.len()).sum::<usize>() > limit && recent.len() > 1 {
        recent.pop_front();
    }
}

/// The parts of a recent utterance, transcribed again; `None` when its audio is no longer
/// kept, or the model fails on a part (the final pass cuts it then).
fn cut_again(
    recognizer: &mut dyn SpeechRecognizer,
    recent: &VecDeque<(usize, Vec<f32>)>,
    cut: CutJob,
) -> Option<Recognized> {
    let (_, audio) = recent
        .iter()
        .find(|(start, audio)| *start == cut.start && start + audio.len() == cut.end)?;
    let mut parts = Vec::with_capacity(cut.parts.len());
    for (start, end, speaker) in cut.parts {
        let samples = audio.get(start.checked_sub(cut.start)?..end.checked_sub(cut.start)?)?;
        let raw = recognizer.transcribe_segment(samples).ok()?;
        parts.push(CutPart {
            start,
            end,
            speaker,
            text: recognizer.format_text(&raw),
            raw,
        });
    }
    Some(Recognized::Cut {
        start: cut.start,
        end: cut.end,
        parts,
    })
}

/// The model's text of a finished utterance: the settled partial's when it covered exactly
/// this audio, else a fresh transcription.
pub(super) fn transcribe_final(
    recognizer: &mut dyn SpeechRecognizer,
    last_partial: &mut Option<(usize, usize, String)>,
    start: usize,
    end: usize,
    samples: impl FnOnce() -> std::result::Result<Vec<f32>, String>,
) -> std::result::Result<String, String> {
    if let Some((_, _, raw)) = last_partial
        .take()
        .filter(|(s, e, _)| (*s, *e) == (start, end))
    {
        return Ok(raw);
    }
    samples().and_then(|samples| {
        recognizer
            .transcribe_segment(&samples)
            .map_err(|e| e.to_string())
    })
}

pub(super) fn final_text(
    recognizer: &dyn SpeechRecognizer,
    start: usize,
    end: usize,
    raw: std::result::Result<String, String>,
) -> Recognized {
    match raw {
        Ok(raw) => Recognized::Final {
            start,
            end,
            text: recognizer.format_text(&raw),
            raw,
        },
        Err(error) => Recognized::Failed(LiveFailure::Utterance {
            start_s: seconds(start),
            end_s: seconds(end),
            reason: error.to_string(),
        }),
    }
}
