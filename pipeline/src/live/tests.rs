use super::*;
use crate::datadir::DataDir;
use crate::recover::recover_session;
use crate::session::SessionState;
use medscribe_asr::ModelFamily;

/// A VAD that hears speech wherever the chunk is loud.
pub(crate) struct Loudness;

impl SpeechProbability for Loudness {
    fn probability(&mut self, chunk: &[f32]) -> Result<f32> {
        let mean = chunk.iter().map(|x| x.abs()).sum::<f32>() / chunk.len().max(1) as f32;
        Ok(if mean > 0.03 { 0.9 } else { 0.05 })
    }
    fn reset(&mut self) {}
}

/// A speech model that "transcribes" an utterance as its length, slowly if asked.
pub(crate) struct Counter {
    pub delay: Duration,
}

impl SpeechRecognizer for Counter {
    fn model_name(&self) -> &str {
        "counter"
    }
    fn family(&self) -> ModelFamily {
        ModelFamily::Moonshine
    }
    fn max_segment_samples(&self) -> usize {
        30 * 16_000
    }
    fn transcribe_segment(&mut self, samples: &[f32]) -> medscribe_asr::Result<String> {
        std::thread::sleep(self.delay);
        Ok(format!("utterance  of {} samples", samples.len()))
    }
    fn format_text(&self, raw: &str) -> String {
        // As Moonshine does: whitespace tidied.
        raw.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

fn run(seconds: f64, rate: u32, channels: u16, delay_ms: u64) -> (Session, Vec<LiveEvent>) {
    let root = tempfile::tempdir().unwrap().keep();
    let session = Session::create(&DataDir::at(&root), "2026-11-23T12:00:00Z").unwrap();
    let live = LiveSession::start(
        SourceSpec::Synthetic {
            seconds,
            sample_rate: rate,
            channels,
        },
        Box::new(Counter {
            delay: Duration::from_millis(delay_ms),
        }),
        Box::new(Loudness),
        session.clone(),
        LiveConfig::default(),
    )
    .unwrap();
    let events: Vec<LiveEvent> = live.events().iter().collect();
    live.join();
    (session, events)
}

fn finals(events: &[LiveEvent]) -> Vec<&TranscriptLine> {
    events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Final(line) => Some(line),
            _ => None,
        })
        .collect()
}

#[test]
fn every_stage_runs_and_leaves_complete_files() {
    let (session, events) = run(10.0, 48_000, 2, 0);
    let lines = finals(&events);
    // Tone bursts at 0, 4 and 8 s, each a separate utterance.
    let starts: Vec<i64> = lines.iter().map(|l| l.start_s.round() as i64).collect();
    assert_eq!(starts, vec![0, 4, 8], "{lines:?}");
    assert!(lines.iter().all(|l| l.text.starts_with("utterance of ")));
    assert!(matches!(
        events.last(),
        Some(LiveEvent::Stopped { error: None, recorded_s }) if (*recorded_s - 10.0).abs() < 1e-9
    ));
    let wav = hound::WavReader::open(session.audio_path()).unwrap();
    assert_eq!((wav.spec().sample_rate, wav.spec().channels), (48_000, 2));
    assert_eq!(wav.duration(), 480_000);
    assert_eq!(session.transcript().unwrap().len(), 3);
    let meta = session.meta().unwrap();
    assert_eq!(meta.state, SessionState::Complete);
    assert_eq!(meta.transcribed_s, 10.0);
    assert_eq!(meta.asr_model, "counter");
}

#[test]
fn a_slow_model_makes_utterances_wait_on_disk_in_order() {
    // Ten utterances delivered at once to a model that needs 150 ms for each.
    let (session, events) = run(40.0, 16_000, 1, 150);
    let starts: Vec<i64> = finals(&events)
        .iter()
        .map(|l| l.start_s.round() as i64)
        .collect();
    assert_eq!(starts, (0..10).map(|i| i * 4).collect::<Vec<_>>());
    let queue = session.queue_dir();
    assert!(queue.is_dir(), "utterances were spilled to disk");
    assert_eq!(
        std::fs::read_dir(queue).unwrap().count(),
        0,
        "and taken back"
    );
}

#[test]
fn a_paused_start_records_nothing_until_resumed_and_edits_reach_the_file() {
    let root = tempfile::tempdir().unwrap();
    let session = Session::create(&DataDir::at(root.path()), "2026-11-23T12:00:00Z").unwrap();
    let live = LiveSession::start(
        SourceSpec::Synthetic {
            seconds: 10.0,
            sample_rate: 16_000,
            channels: 1,
        },
        Box::new(Counter {
            delay: Duration::from_millis(200),
        }),
        Box::new(Loudness),
        session.clone(),
        LiveConfig {
            start_paused: true,
            ..LiveConfig::default()
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        live.events().try_recv().is_err(),
        "nothing captured while paused"
    );
    assert_eq!(
        hound::WavReader::open(session.audio_path())
            .unwrap()
            .duration(),
        0
    );
    live.set_paused(false);
    let mut edited = false;
    for event in live.events().iter() {
        if let LiveEvent::Final(line) = event {
            if !edited {
                edited = live.edit(TranscriptLine {
                    text: "corrected by the doctor".into(),
                    ..line
                });
            }
        }
    }
    live.join();
    assert!(edited);
    let lines = session.transcript().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].text, "corrected by the doctor");
    assert!(lines[1].text.starts_with("utterance of"));
}

#[test]
fn a_spilled_utterance_is_taken_back_even_when_its_text_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("000-100.f32");
    std::fs::write(&file, [0u8; 400]).unwrap();
    let (jobs, jobs_rx) = bounded(4);
    let (out_tx, out) = bounded(4);
    let stage = std::thread::spawn(move || {
        asr_stage(
            Box::new(Counter {
                delay: Duration::ZERO,
            }),
            (jobs_rx, None),
            out_tx,
        )
    });
    jobs.send(AsrJob::Partial {
        start: 0,
        samples: vec![0.0; 100],
    })
    .unwrap();
    assert!(matches!(
        out.recv().unwrap(),
        Recognized::Partial { end: 100, .. }
    ));
    jobs.send(AsrJob::Spilled {
        start: 0,
        end: 100,
        file: file.clone(),
    })
    .unwrap();
    let Recognized::Final { raw, .. } = out.recv().unwrap() else {
        panic!("a final");
    };
    assert_eq!(raw, "utterance  of 100 samples");
    drop(jobs);
    stage.join().unwrap();
    assert!(!file.exists());
}

#[test]
fn a_source_that_cannot_open_records_nothing() {
    let root = tempfile::tempdir().unwrap();
    let session = Session::create(&DataDir::at(root.path()), "2026-11-23T12:00:00Z").unwrap();
    let error = LiveSession::start(
        SourceSpec::File {
            path: root.path().join("missing.wav"),
            paced: false,
        },
        Box::new(Counter {
            delay: Duration::ZERO,
        }),
        Box::new(Loudness),
        session.clone(),
        LiveConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("missing.wav"), "{error}");
    assert!(!session.audio_path().exists());
}

#[test]
fn a_killed_session_is_recovered_from_its_files() {
    let (session, _) = run(13.0, 16_000, 1, 0);
    // As a kill -9 after the first utterance would leave it: header stale, transcript
    // cut short with a torn line, state still recording by a process that is gone.
    let lines = session.transcript().unwrap();
    session.write_transcript(&lines[..1]).unwrap();
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(session.transcript_path())
        .unwrap();
    std::io::Write::write_all(&mut torn, b"{\"start_s\":4.").unwrap();
    let mut meta = session.meta().unwrap();
    meta.state = SessionState::Recording;
    meta.transcribed_s = 0.0;
    meta.pid = u32::MAX - 1;
    session.write_meta(&meta).unwrap();
    let audio = std::fs::OpenOptions::new()
        .write(true)
        .open(session.audio_path())
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&audio, &16_000u32.to_le_bytes(), 40).unwrap();

    let mut model = Counter {
        delay: Duration::ZERO,
    };
    let recovered = recover_session(&session, &mut model, &mut Loudness).unwrap();
    assert_eq!(recovered.repair.frames_before, 8_000);
    assert_eq!(recovered.repair.frames_after, 13 * 16_000);
    assert_eq!(recovered.resumed_at_s, lines[0].end_s);
    let starts: Vec<i64> = session
        .transcript()
        .unwrap()
        .iter()
        .map(|l| l.start_s.round() as i64)
        .collect();
    assert_eq!(starts, vec![0, 4, 8, 12]);
    assert_eq!(session.meta().unwrap().state, SessionState::Complete);
    let again = recover_session(&session, &mut model, &mut Loudness).unwrap_err();
    assert!(again.to_string().contains("already complete"), "{again}");
}

#[test]
fn the_speech_model_cuts_a_recent_utterance_into_its_parts_after_the_speech_queued() {
    // An utterance found to span a change of speaker comes back as its parts, each transcribed
    // from its own audio; an utterance no longer kept (or asked with the wrong bounds) gives
    // nothing; the stage ends when both inputs close.
    let (jobs_tx, jobs) = bounded::<AsrJob>(8);
    let (cuts_tx, cuts) = crossbeam_channel::unbounded::<CutJob>();
    let (out, results) = crossbeam_channel::unbounded::<Recognized>();
    let stage = std::thread::spawn(move || {
        asr_stage(
            Box::new(Counter {
                delay: Duration::ZERO,
            }),
            (jobs, Some(cuts)),
            out,
        )
    });
    let segment = |start: usize, len: usize| {
        AsrJob::Final(SpeechSegment {
            start,
            end: start + len,
            samples: vec![0.0; len],
        })
    };
    let cut_of_the_first = || CutJob {
        start: 16_000,
        end: 64_000,
        parts: vec![(16_000, 40_000, 0), (40_000, 64_000, 1)],
    };
    jobs_tx.send(segment(16_000, 48_000)).unwrap();
    let first = results.recv().unwrap();
    assert!(matches!(
        first,
        Recognized::Final {
            start: 16_000,
            end: 64_000,
            ..
        }
    ));
    cuts_tx.send(cut_of_the_first()).unwrap();
    cuts_tx
        .send(CutJob {
            start: 16_000,
            end: 60_000,
            parts: vec![(16_000, 30_000, 0), (30_000, 60_000, 1)],
        })
        .unwrap();
    let Recognized::Cut { start, end, parts } = results.recv().unwrap() else {
        panic!("expected the cut");
    };
    assert_eq!((start, end), (16_000, 64_000));
    let described: Vec<_> = parts
        .iter()
        .map(|p| (p.start, p.end, p.speaker, p.text.as_str()))
        .collect();
    assert_eq!(
        described,
        [
            (16_000, 40_000, 0, "utterance of 24000 samples"),
            (40_000, 64_000, 1, "utterance of 24000 samples"),
        ]
    );
    // Only 120 s of utterances are kept: the first is forgotten after 130 s more.
    for i in 0..13 {
        jobs_tx
            .send(segment(100_000 + i * 160_000, 160_000))
            .unwrap();
    }
    for _ in 0..13 {
        assert!(matches!(results.recv().unwrap(), Recognized::Final { .. }));
    }
    cuts_tx.send(cut_of_the_first()).unwrap();
    drop(jobs_tx);
    drop(cuts_tx);
    stage.join().unwrap();
    assert!(
        results.try_recv().is_err(),
        "nothing for unknown or forgotten audio"
    );
}
