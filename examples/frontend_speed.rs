//! Times the MedASR front end on a WAV file and prints audio seconds processed per second of
//! wall time, as one line `rust_frontend_audio_s_per_s=X`. Used by
//! scripts/bench-frontend-vs-hf.sh to compare with Hugging Face's extractor in the same run.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: frontend_speed FILE.wav [REPEATS]")?;
    let repeats: usize = std::env::args()
        .nth(2)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(20);
    let audio = medscribe_pipeline::WavSource::open(std::path::Path::new(&path))?.read_all()?;
    let mut front_end = medscribe_asr::features::FrontEnd::new();
    let mut frames = front_end.compute(&audio).frames; // warm-up
    let start = Instant::now();
    for _ in 0..repeats {
        frames = std::hint::black_box(front_end.compute(&audio)).frames;
    }
    let elapsed = start.elapsed().as_secs_f64() / repeats as f64;
    let seconds = audio.len() as f64 / 16_000.0;
    println!("frames={frames} audio_s={seconds:.3} rust_s_per_call={elapsed:.6}");
    println!("rust_frontend_audio_s_per_s={:.1}", seconds / elapsed);
    Ok(())
}
