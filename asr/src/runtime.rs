//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! `ort` is built with `load-dynamic`: the library comes from the PyPI `onnxruntime` wheel that
//! setup installs into the data directory (no prebuilt download: the CDN `ort` fetches from is out of reach). Plain `ort::init()` panics when
//! no library is found, so every path here goes through `ort::init_from` and returns an error.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::error::{AsrError, Result};

/// Environment variable that names the ONNX Runtime library explicitly (the `ort` convention).
pub const ORT_LIB_ENV: &str = "ORT_DYLIB_PATH";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Picks the ONNX Runtime library: an explicit path wins, then `ORT_DYLIB_PATH`, then the newest
/// `libonnxruntime.so*` in `runtime_dir` (where setup puts it).
pub fn locate_runtime(explicit: Option<&Path>, runtime_dir: &Path) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(ORT_LIB_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(runtime_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib")
        })
        .collect();
    // Version suffixes sort as text well enough for 1.2x/1.3x; the newest wins.
    candidates.sort();
    candidates.pop().ok_or_else(|| AsrError::RuntimeNotFound {
        looked_in: format!("--ort-lib, ${ORT_LIB_ENV}, {}", runtime_dir.display()),
    })
}

/// Loads the library at `path` (first call only) and returns the process-wide environment.
/// Telemetry is switched off: nothing leaves the machine.
pub fn init_runtime(path: &Path) -> Result<&'static Environment> {
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    if !path.is_file() {
        return Err(AsrError::RuntimeLoad {
            path: path.to_path_buf(),
            reason: "no such file; run `scripts/setup.sh` or pass --ort-lib PATH".into(),
        });
    }
    let builder = ort::init_from(path).map_err(|e| AsrError::RuntimeLoad {
        path: path.to_path_buf(),
        reason: crate::error::one_line(e),
    })?;
    let env = builder
        .with_name("medscribe")
        .with_telemetry(false)
        .build()
        .map_err(|e| AsrError::RuntimeLoad {
            path: path.to_path_buf(),
            reason: crate::error::one_line(e),
        })?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// Opens an ONNX model with `threads` intra-op threads (one inter-op thread: our graphs are
/// sequential), naming the file when it cannot be loaded.
pub(crate) fn open_session(path: &Path, threads: usize) -> Result<ort::session::Session> {
    ort::session::Session::builder(environment()?)
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
        .map_err(|e| AsrError::Inference(crate::error::one_line(e)))?
        .commit_from_file(path)
        .map_err(|e| AsrError::ModelFile {
            path: path.to_path_buf(),
            reason: format!("not a loadable ONNX model ({})", crate::error::one_line(e)),
        })
}

/// The environment, if [`init_runtime`] succeeded earlier.
pub fn environment() -> Result<&'static Environment> {
    ENVIRONMENT.get().ok_or_else(|| AsrError::RuntimeNotFound {
        looked_in: "nowhere: init_runtime was not called".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_wins() {
        let dir = std::env::temp_dir();
        let got = locate_runtime(Some(Path::new("/x/libonnxruntime.so.1")), &dir).unwrap();
        assert_eq!(got, PathBuf::from("/x/libonnxruntime.so.1"));
    }

    #[test]
    fn newest_library_in_runtime_dir_is_chosen() {
        if std::env::var_os(ORT_LIB_ENV).is_some() {
            return; // the variable legitimately overrides the directory
        }
        let dir = tempdir();
        for name in [
            "libonnxruntime.so.1.24.1",
            "libonnxruntime.so.1.31.1",
            "README",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let got = locate_runtime(None, &dir).unwrap();
        assert_eq!(got.file_name().unwrap(), "libonnxruntime.so.1.31.1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_library_is_an_error_naming_setup() {
        if std::env::var_os(ORT_LIB_ENV).is_some() {
            return;
        }
        let dir = tempdir();
        let err = locate_runtime(None, &dir).unwrap_err().to_string();
        assert!(err.contains("scripts/setup.sh"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_library_is_a_clean_error() {
        let dir = tempdir();
        let fake = dir.join("libonnxruntime.so.1.31.1");
        std::fs::write(&fake, b"not a shared library").unwrap();
        // Loading may only be tried once per process; a failed try leaves nothing behind.
        let err = init_runtime(&fake).unwrap_err().to_string();
        assert!(err.contains("cannot load ONNX Runtime"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "medscribe-asr-runtime-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
