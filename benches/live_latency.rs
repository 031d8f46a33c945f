//! Live latency of the default model (issue 6): how long after the speaker stops the text is on
//! screen. A dictation is played at real time through the whole live pipeline (file source,
//! recorder, resampler, VAD, Moonshine, formatter); its pauses are lengthened to 2 s so it holds
//! several utterances, and it is played three times. For every utterance:
//! - first text: end of speech -> the first partial whose audio reaches the end of speech (made
//!   as soon as the VAD hears a pause; its last word may still change);
//! - final text shown: end of speech -> the first event whose text is the final text (a partial
//!   made after the speech ended, or the final itself);
//! - settled: end of speech -> the final event (an utterance ends after 1.5 s of silence);
//! - after close: the final event's delay after the segmenter could close the utterance.
//!
//! End of speech is taken as the utterance's end minus its 250 ms padding; the stream's clock
//! comes from the level events (time received minus seconds recorded, the earliest of them).
//! Latency is a distribution, not a throughput, so this is a plain harness reporting median and
//! p95 rather than a criterion group. Needs setup's models: `cargo bench --bench live_latency`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use medscribe_asr::vad::SileroVad;
use medscribe_pipeline::live::{LiveConfig, LiveEvent, LiveSession};
use medscribe_pipeline::session::Session;
use medscribe_pipeline::source::SourceSpec;
use medscribe_pipeline::{models, DataDir, WavSource};

const RATE: usize = 16_000;
const PAD_S: f64 = 0.25;
const CLOSE_AFTER_S: f64 = 1.5;

/// The sample dictation with every pause of 200 ms or more lengthened to 2 s, three times.
fn dictation_with_pauses() -> Vec<f32> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/referral-dictation.wav");
    let audio = WavSource::open(&path)
        .and_then(WavSource::read_all)
        .expect("sample dictation");
    let frame = RATE / 50;
    let quiet: Vec<bool> = audio
        .chunks(frame)
        .map(|c| (c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32).sqrt() < 0.005)
        .collect();
    let mut out = Vec::with_capacity(audio.len() * 4);
    let mut run = 0;
    for (index, chunk) in audio.chunks(frame).enumerate() {
        out.extend_from_slice(chunk);
        run = if quiet[index] { run + 1 } else { 0 };
        if run == 10 {
            out.extend(std::iter::repeat_n(0.0, 2 * RATE));
        }
    }
    let once = out.clone();
    for _ in 0..2 {
        out.extend(std::iter::repeat_n(0.0, RATE));
        out.extend_from_slice(&once);
    }
    out
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index.min(values.len() - 1)]
}

fn main() {
    let data = DataDir::from_env();
    let lib = medscribe_asr::runtime::locate_runtime(None, &data.runtime_dir())
        .expect("run scripts/setup.sh first");
    medscribe_asr::runtime::init_runtime(&lib).expect("ONNX Runtime loads");
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("dictation.wav");
    let audio = dictation_with_pauses();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE as u32,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&wav, spec).expect("bench WAV");
    for x in &audio {
        writer
            .write_sample((x * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
            .expect("bench WAV");
    }
    writer.finalize().expect("bench WAV");

    let recognizer =
        medscribe_asr::load_recognizer(&models::default_asr_model(&data), 1).expect("model");
    let vad = SileroVad::load(&models::default_vad_model(&data)).expect("VAD");
    let session = Session::create(&DataDir::at(dir.path()), "bench").expect("session");
    eprintln!(
        "playing {:.0} s of dictation at real time through the live pipeline",
        audio.len() as f64 / RATE as f64
    );
    let live = LiveSession::start(
        SourceSpec::File {
            path: wav,
            paced: true,
        },
        recognizer,
        Box::new(vad),
        session,
        LiveConfig::default(),
    )
    .expect("live session");
    let mut events: Vec<(Instant, LiveEvent)> = Vec::new();
    while let Ok(event) = live.events().recv_timeout(Duration::from_secs(120)) {
        let stopped = matches!(event, LiveEvent::Stopped { .. });
        events.push((Instant::now(), event));
        if stopped {
            break;
        }
    }
    live.join();

    let origin = events
        .iter()
        .filter_map(|(at, event)| match event {
            LiveEvent::Level { recorded_s, .. } if *recorded_s > 0.0 => {
                at.checked_sub(Duration::from_secs_f64(*recorded_s))
            }
            _ => None,
        })
        .min()
        .expect("level events");
    let since = |at: &Instant, stream_s: f64| at.duration_since(origin).as_secs_f64() - stream_s;
    let (mut first, mut text, mut settled, mut after_close) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (index, (at, event)) in events.iter().enumerate() {
        let LiveEvent::Final(line) = event else {
            continue;
        };
        if line.text.is_empty() {
            continue;
        }
        let speech_end = line.end_s - PAD_S;
        // Partials since the previous final, newest first.
        let partials: Vec<(&Instant, f64, &str)> = events[..index]
            .iter()
            .rev()
            .take_while(|(_, e)| !matches!(e, LiveEvent::Final(_)))
            .filter_map(|(partial_at, e)| match e {
                LiveEvent::Partial { end_s, text, .. } => Some((partial_at, *end_s, text.as_str())),
                _ => None,
            })
            .collect();
        let earliest = |keep: &dyn Fn(f64, &str) -> bool| {
            partials
                .iter()
                .filter(|(_, end_s, text)| keep(*end_s, text))
                .map(|(partial_at, _, _)| *partial_at)
                .next_back()
                .unwrap_or(at)
        };
        first.push(since(
            earliest(&|end_s, _| end_s >= speech_end - 0.05),
            speech_end,
        ));
        // The words on screen are final from the first partial with the final's text.
        text.push(since(
            earliest(&|end_s, text| end_s >= speech_end - 0.05 && text == line.text),
            speech_end,
        ));
        settled.push(since(at, speech_end));
        after_close.push(since(at, speech_end + CLOSE_AFTER_S));
    }
    println!("utterances: {}", text.len());
    for (name, values) in [
        ("end of speech -> first text", &mut first),
        ("end of speech -> final text shown", &mut text),
        ("end of speech -> settled", &mut settled),
        ("utterance closed -> final text", &mut after_close),
    ] {
        println!(
            "{name}: median {:.0} ms, p95 {:.0} ms",
            percentile(values, 0.5) * 1e3,
            percentile(values, 0.95) * 1e3
        );
    }
}
