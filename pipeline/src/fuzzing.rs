//! Entry points for the fuzz targets in `fuzz/` and for the regression tests that replay what
//! they found (`tests/fuzz_regressions.rs`): arbitrary bytes as a WAV file or as a session's
//! files, read exactly as the commands read them. None may panic, hang or allocate beyond what
//! the bytes justify.

use std::path::PathBuf;

/// A scratch directory of this process (the fuzzer runs one input at a time).
fn scratch_dir() -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("medscribe-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// A WAV file, opened and read to the end as 16 kHz mono.
pub fn wav(data: &[u8]) {
    let Some(dir) = scratch_dir() else {
        return;
    };
    let path = dir.join("input.wav");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(source) = crate::WavSource::open(&path) {
        let _ = source.read_all();
    }
}

/// The bytes as a session's `session.json` and, split at the first NUL byte, `transcript.jsonl`,
/// read as `sessions list`, `show` and `export` read them.
pub fn session(data: &[u8]) {
    let Some(dir) = scratch_dir() else {
        return;
    };
    let session_dir = dir.join("session");
    let _ = std::fs::remove_dir_all(&session_dir);
    if std::fs::create_dir_all(&session_dir).is_err() {
        return;
    }
    let (meta, transcript) = match data.iter().position(|&b| b == 0) {
        Some(split) => (&data[..split], &data[split + 1..]),
        None => (data, data),
    };
    if std::fs::write(session_dir.join("session.json"), meta).is_err()
        || std::fs::write(session_dir.join("transcript.jsonl"), transcript).is_err()
    {
        return;
    }
    if let Ok(session) = crate::session::Session::open(&session_dir) {
        if let Ok(meta) = session.meta() {
            let _ = session.is_interrupted(&meta);
        }
        let _ = session.transcript();
    }
}
