//! Transcribes each WAV file as one utterance with Moonshine (no voice activity detection), to
//! compare with scripts/moonshine_reference.py on identical input.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = medscribe_pipeline::DataDir::from_env();
    let lib = medscribe_asr::runtime::locate_runtime(None, &data.runtime_dir())?;
    medscribe_asr::runtime::init_runtime(&lib)?;
    let mut model = medscribe_asr::moonshine::Moonshine::load(
        &medscribe_pipeline::models::default_asr_model(&data),
        1,
    )?;
    for path in std::env::args().skip(1) {
        let audio = medscribe_pipeline::WavSource::open(std::path::Path::new(&path))?.read_all()?;
        let started = std::time::Instant::now();
        let text = model.transcribe(&audio)?;
        eprintln!("{:.3} s", started.elapsed().as_secs_f64());
        println!("{text}");
    }
    Ok(())
}
