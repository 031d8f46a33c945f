//! The audio stages: capture from the source, the recorder that writes every sample to the
//! session's WAV first, and resampling to 16 kHz mono.

use super::*;

pub(super) fn capture_stage(
    spec: &SourceSpec,
    opened: Sender<Result<(String, AudioFormat)>>,
    out: Sender<Audio>,
    (events, fatal): (&Sender<LiveEvent>, &Fatal),
    stop: &AtomicBool,
    paused: &AtomicBool,
    max_duration_s: Option<f64>,
) {
    let mut source = match spec.open() {
        Ok(source) => source,
        Err(error) => {
            let _ = opened.send(Err(error));
            return;
        }
    };
    let format = source.format();
    if opened.send(Ok((source.name().to_owned(), format))).is_err() {
        return;
    }
    let channels = usize::from(format.channels);
    let rate = f64::from(format.sample_rate);
    let max_frames = max_duration_s.map(|s| (s * rate).round() as usize);
    let mut frames = 0usize;
    let mut was_paused = false;
    let mut reported_dropped = 0;
    let mut last_drop_warning: Option<Instant> = None;
    let mut last_level = Instant::now() - Duration::from_secs(1);
    while !stop.load(Ordering::SeqCst) {
        if paused.load(Ordering::SeqCst) && !source.is_live() {
            if !was_paused && out.send(Audio::Gap).is_err() {
                break;
            }
            was_paused = true;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut block = match source.read() {
            Ok(Some(block)) => block,
            Ok(None) => break,
            Err(error) => {
                stop.store(true, Ordering::SeqCst);
                fatal.set(LiveFailure::Capture(error.to_string()));
                break;
            }
        };
        if paused.load(Ordering::SeqCst) {
            if !was_paused && out.send(Audio::Gap).is_err() {
                break;
            }
            was_paused = true;
            continue;
        }
        was_paused = false;
        let dropped = source.dropped_samples();
        if dropped > reported_dropped
            && last_drop_warning.is_none_or(|at| at.elapsed() >= DROP_WARNING_EVERY)
        {
            reported_dropped = dropped;
            last_drop_warning = Some(Instant::now());
            let _ = events.send(LiveEvent::Warning(format!(
                "the audio device delivered faster than it was read: {:.1} s of audio lost so far",
                dropped as f64 / channels as f64 / rate
            )));
        }
        block.truncate(block.len() / channels * channels);
        // A misbehaving driver must not poison the recording or the models downstream.
        for sample in &mut block {
            *sample = if sample.is_finite() {
                sample.clamp(-1.0, 1.0)
            } else {
                0.0
            };
        }
        if let Some(max) = max_frames {
            block.truncate((max - frames.min(max)) * channels);
        }
        if block.is_empty() {
            if max_frames.is_some_and(|max| frames >= max) {
                break;
            }
            continue;
        }
        frames += block.len() / channels;
        if last_level.elapsed().as_secs_f64() >= 1.0 / LEVELS_PER_SECOND {
            last_level = Instant::now();
            let _ = events.try_send(LiveEvent::Level {
                dbfs: rms_dbfs(&block),
                recorded_s: frames as f64 / rate,
            });
        }
        if out.send(Audio::Block(block)).is_err() {
            break;
        }
    }
}

pub(super) fn recorder_stage(
    mut recorder: WavRecorder,
    input: Receiver<Audio>,
    out: Sender<Audio>,
    (events, fatal): (&Sender<LiveEvent>, &Fatal),
    stop: &AtomicBool,
) {
    let mut failed = None;
    for message in input {
        if let Audio::Block(block) = &message {
            if failed.is_none() {
                if let Err(error) = recorder.append(block) {
                    // Without the recording nothing is safe: stop capturing.
                    stop.store(true, Ordering::SeqCst);
                    failed = Some(error.to_string());
                    continue;
                }
            } else {
                continue;
            }
        }
        let _ = out.send(message);
    }
    let duration = recorder.duration_s();
    let finished = recorder.finish().err().map(|e| e.to_string());
    if let Some(error) = failed.or(finished) {
        fatal.set(LiveFailure::Recording(error));
    }
    let _ = events.send(LiveEvent::Level {
        dbfs: -100.0,
        recorded_s: duration,
    });
}

pub(super) fn resampler_stage(
    format: AudioFormat,
    input: Receiver<Audio>,
    (out, mut speakers): (Sender<Audio>, Option<Sender<Vec<f32>>>),
    fatal: &Fatal,
) {
    // The speaker stage gets a copy of the 16 kHz audio; if it has gone, it gets no more.
    let mut tee = |block: &[f32]| {
        if let Some(to) = &speakers {
            if to.send(block.to_vec()).is_err() {
                speakers = None;
            }
        }
    };
    let channels = usize::from(format.channels);
    let mut resampler = if format.sample_rate == TARGET_RATE {
        None
    } else {
        match StreamResampler::new(format.sample_rate, TARGET_RATE) {
            Ok(resampler) => Some(resampler),
            Err(error) => {
                fatal.set(LiveFailure::Resampling {
                    rate: format.sample_rate,
                    reason: error.to_string(),
                });
                for _ in input {}
                return;
            }
        }
    };
    let mut mono = Vec::new();
    for message in input {
        let block = match message {
            Audio::Gap => {
                if out.send(Audio::Gap).is_err() {
                    return;
                }
                continue;
            }
            Audio::Block(block) => block,
        };
        mono.clear();
        mono.extend(
            block
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
        let converted = match resampler.as_mut() {
            Some(resampler) => {
                let mut converted = Vec::with_capacity(mono.len());
                resampler.push(&mono, &mut converted);
                converted
            }
            None => std::mem::take(&mut mono),
        };
        if converted.is_empty() {
            continue;
        }
        tee(&converted);
        if out.send(Audio::Block(converted)).is_err() {
            return;
        }
    }
    if let Some(resampler) = resampler.as_mut() {
        let mut tail = Vec::new();
        resampler.finish(&mut tail);
        if !tail.is_empty() {
            tee(&tail);
            let _ = out.send(Audio::Block(tail));
        }
    }
}
