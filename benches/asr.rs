//! Speed of the MedASR path: front end (throughput in audio samples; divide by 16000 for audio
//! seconds per second), greedy CTC decoding, and end-to-end transcription on the tiny parity
//! model. `scripts/bench-frontend-vs-hf.sh` compares the front end with Hugging Face's in one run.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use medscribe_asr::ctc::{argmax_rows, collapse};
use medscribe_asr::features::FrontEnd;
use medscribe_asr::medasr::{MedAsr, MedAsrOptions};
use medscribe_asr::WindowedRecognizer;
use medscribe_pipeline::{DataDir, WavSource};

fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/fixtures")
        .join(relative)
}

fn long_dictation() -> Vec<f32> {
    WavSource::open(&fixture("audio/dictation-long.wav"))
        .and_then(WavSource::read_all)
        .expect("fixture audio (run from the repository)")
}

fn front_end(c: &mut Criterion) {
    let audio = long_dictation();
    let mut group = c.benchmark_group("front_end");
    for seconds in [5usize, 30] {
        let clip = &audio[..(seconds * 16_000).min(audio.len())];
        group.throughput(Throughput::Elements(clip.len() as u64));
        let mut fe = FrontEnd::new();
        group.bench_with_input(
            BenchmarkId::new("log_mel", format!("{seconds}s")),
            clip,
            |b, clip| b.iter(|| fe.compute(clip)),
        );
    }
    group.finish();
}

fn ctc_decode(c: &mut Criterion) {
    // One minute of MedASR output: 1500 frames x 512 logits, a plausible mix of blank and tokens.
    let (frames, vocab) = (1_500usize, 512usize);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let logits: Vec<f32> = (0..frames * vocab)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32;
            if i % vocab == 0 && (i / vocab) % 3 != 0 {
                5.0 + noise
            } else {
                noise
            }
        })
        .collect();
    let positions: Vec<usize> = (0..frames).collect();
    let mut group = c.benchmark_group("ctc");
    group.throughput(Throughput::Elements(frames as u64));
    group.bench_function("greedy_1min", |b| {
        b.iter(|| {
            let ids = argmax_rows(&logits, vocab);
            collapse(&ids, &positions, 0).len()
        })
    });
    group.finish();
}

fn end_to_end(c: &mut Criterion) {
    let data = DataDir::from_env();
    let lib = medscribe_asr::runtime::locate_runtime(None, &data.runtime_dir())
        .expect("run scripts/setup.sh first");
    medscribe_asr::runtime::init_runtime(&lib).expect("ONNX Runtime loads");
    let mut model =
        MedAsr::load(&fixture("medasr-tiny-hf"), MedAsrOptions::default()).expect("tiny model");
    let audio = long_dictation();
    let mut group = c.benchmark_group("transcribe_tiny_model");
    group.sample_size(10);
    group.throughput(Throughput::Elements(audio.len() as u64));
    group.bench_function("dictation_long_38s", |b| {
        b.iter(|| {
            for block in audio.chunks(16_384) {
                model.accept(block).expect("accept");
            }
            model.finish().expect("finish").raw_text.len()
        })
    });
    group.finish();
}

criterion_group!(benches, front_end, ctc_decode, end_to_end);
criterion_main!(benches);
