//! Replays what the fuzzers found (fuzz/regressions/TARGET/, committed with each fix) and their
//! hand-made seeds (fuzz/seeds/TARGET/) through the same entry points the fuzz targets use
//! (scripts/fuzz.sh runs the fuzzers themselves; CI does not). Each input must be read without a
//! panic, a hang or an allocation out of proportion to its size.

use crate::common;

use common::*;

type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 6] = [
    ("wav", medscribe_pipeline::fuzzing::wav),
    ("gguf", medscribe_llm::fuzzing::gguf),
    ("tokenizer", medscribe_llm::fuzzing::tokenizer),
    ("template", medscribe_llm::fuzzing::template),
    ("image", medscribe_llm::fuzzing::image),
    ("session", medscribe_pipeline::fuzzing::session),
];

#[test]
fn every_committed_fuzz_input_is_read_without_a_crash() {
    let mut replayed = 0;
    for (target, harness) in TARGETS {
        for kind in ["regressions", "seeds"] {
            let dir = repo().join("fuzz").join(kind).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for file in files.into_iter().filter(|f| f.is_file()) {
                let bytes = std::fs::read(&file).unwrap();
                let started = std::time::Instant::now();
                harness(&bytes);
                eprintln!(
                    "{target}: {} ({} bytes) in {:.2} s",
                    file.display(),
                    bytes.len(),
                    started.elapsed().as_secs_f64()
                );
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 3, "the seeds are committed: {replayed} inputs");
}
