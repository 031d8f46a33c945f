//! Speed of the default transcription path on one thread: Silero VAD over a minute of audio
//! (its share of the work must stay around 1%) and Moonshine base-en on the 19 s sample
//! dictation. Needs setup's models. `scripts/bench-moonshine-vs-python.sh` compares with a
//! Python onnxruntime reference in one run.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medscribe_asr::moonshine::Moonshine;
use medscribe_asr::vad::{SileroVad, CHUNK_SAMPLES};
use medscribe_pipeline::{models, DataDir, WavSource};

fn sample() -> Vec<f32> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/referral-dictation.wav");
    WavSource::open(&path)
        .and_then(WavSource::read_all)
        .expect("sample dictation")
}

fn default_model(c: &mut Criterion) {
    let data = DataDir::from_env();
    let lib = medscribe_asr::runtime::locate_runtime(None, &data.runtime_dir())
        .expect("run scripts/setup.sh first");
    medscribe_asr::runtime::init_runtime(&lib).expect("ONNX Runtime loads");
    let audio = sample();
    let minute: Vec<f32> = audio.iter().copied().cycle().take(60 * 16_000).collect();

    let mut vad = SileroVad::load(&models::default_vad_model(&data)).expect("VAD model");
    let mut group = c.benchmark_group("vad");
    group.sample_size(10);
    group.throughput(Throughput::Elements(minute.len() as u64));
    group.bench_function("silero_60s", |b| {
        b.iter(|| {
            vad.reset();
            minute
                .chunks(CHUNK_SAMPLES)
                .map(|chunk| vad.probability(chunk).expect("vad"))
                .sum::<f32>()
        })
    });
    group.finish();

    let mut model = Moonshine::load(&models::default_asr_model(&data), 1).expect("default model");
    let mut group = c.benchmark_group("moonshine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(audio.len() as u64));
    group.bench_function("base_en_19s_sample", |b| {
        b.iter(|| model.transcribe(&audio).expect("transcribe").len())
    });
    group.finish();
}

criterion_group!(benches, default_model);
criterion_main!(benches);
