//! Shared helpers of the end-to-end and parity tests.

use std::path::{Path, PathBuf};

use medscribe_pipeline::DataDir;

/// Whether the slow tier runs: tests that run the default models end to end, play recordings in
/// real time, drive tmux or take minutes. `MEDSCRIBE_SLOW=1` turns it on (`scripts/test.sh` and
/// so CI always do); otherwise such a test says it was skipped and passes, so that plain
/// `cargo test` stays fast while editing.
pub fn slow_tier() -> bool {
    let on = std::env::var_os("MEDSCRIBE_SLOW").is_some_and(|v| v == "1");
    if !on {
        eprintln!("skipped: a slow test (MEDSCRIBE_SLOW=1 runs it)");
    }
    on
}

/// Where the letter-model parity tests compute: `MEDSCRIBE_TEST_DEVICE` (`cpu`, `cuda`, `cuda:N`,
/// as users type it), the processor when unset. CI has no GPU; a build with `--features cuda` runs
/// the same parity tests, against the same references and bounds, on a GPU.
/// Opened once per test process, so every model and tensor of a test share one GPU context.
pub fn test_device() -> medscribe_llm::Device {
    static DEVICE: std::sync::OnceLock<medscribe_llm::Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let name = std::env::var("MEDSCRIBE_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
            name.parse::<medscribe_llm::letter::DeviceName>()
                .and_then(|device| device.open())
                .unwrap_or_else(|error| panic!("MEDSCRIBE_TEST_DEVICE={name}: {error}"))
        })
        .clone()
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `models/fixtures/...`.
pub fn fixture(relative: &str) -> PathBuf {
    repo().join("models").join("fixtures").join(relative)
}

/// Loads ONNX Runtime the way the binary does. Setup must have run (the test command runs it):
/// a missing runtime fails the test rather than skipping it.
pub fn init_runtime() {
    let data = DataDir::from_env();
    let lib = medscribe_asr::runtime::locate_runtime(None, &data.runtime_dir())
        .expect("ONNX Runtime library: run scripts/setup.sh first");
    medscribe_asr::runtime::init_runtime(&lib).expect("ONNX Runtime loads");
}

/// The 16 kHz samples of a fixture WAV, as the pipeline reads them.
pub fn samples(path: &Path) -> Vec<f32> {
    medscribe_pipeline::WavSource::open(path)
        .expect("fixture WAV opens")
        .read_all()
        .expect("fixture WAV reads")
}

/// Little-endian f32 values of a fixture file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .expect("fixture file")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The MedASR reference outputs (models/fixtures/medasr-expected/expected.json).
pub fn medasr_expected() -> serde_json::Value {
    let text =
        std::fs::read_to_string(fixture("medasr-expected/expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

/// The tiny Gemma 3 reference outputs (models/fixtures/gemma3-expected/expected.json).
pub fn gemma3_expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("gemma3-expected/expected.json"))
        .expect("gemma3 expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

/// A JSON array of integers as u32.
pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

/// `tokens` greedy tokens after `prompt`, with no stop tokens (the references generated a fixed
/// number), from the model's current state.
pub fn greedy(model: &mut medscribe_llm::Gemma3Text, prompt: &[u32], tokens: usize) -> Vec<u32> {
    greedy_with_images(model, prompt, None, tokens)
}

/// Like [`greedy`], with images bound to the prompt's soft tokens.
pub fn greedy_with_images(
    model: &mut medscribe_llm::Gemma3Text,
    prompt: &[u32],
    images: Option<&medscribe_llm::PromptImages>,
    tokens: usize,
) -> Vec<u32> {
    let sampling = medscribe_llm::Sampling {
        max_new_tokens: tokens,
        ..medscribe_llm::Sampling::default()
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    medscribe_llm::generate_with_images(model, prompt, images, &[], &sampling, &cancel, &mut |_| {
        true
    })
    .expect("generation runs")
    .0
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// Asserts that a command failed with exit status 1 and one stderr line containing `reason`.
pub fn assert_one_line_error(out: &std::process::Output, what: &str, reason: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
    assert!(
        stderr.contains(reason),
        "{what}: expected {reason:?} in {stderr}"
    );
}

/// Stdout of a command that must succeed (its stderr shown otherwise), final newline removed.
pub fn success_stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim_end_matches('\n')
        .to_string()
}

/// A fresh data directory for sessions that shares the installed models and runtime (links to
/// the real data directory), so tests never touch the user's sessions.
pub fn data_home_with_models() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("temp dir");
    let installed = DataDir::from_env();
    for name in ["models", "runtime"] {
        std::os::unix::fs::symlink(installed.root().join(name), home.path().join(name))
            .expect("link installed models");
    }
    home
}

/// The one session directory under a data directory.
pub fn only_session(home: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(home.join("sessions"))
        .expect("sessions dir")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// Peak resident set size of a running process, kB (Linux `VmHWM`).
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Waits for `child` to exit, polling its peak resident set size; returns it in kB.
pub fn peak_rss_until_exit(child: &mut std::process::Child, every: std::time::Duration) -> u64 {
    let pid = child.id();
    let mut peak = 0u64;
    while child.try_wait().expect("child status").is_none() {
        if let Some(kb) = peak_rss_kb(pid) {
            peak = peak.max(kb);
        }
        std::thread::sleep(every);
    }
    peak
}
