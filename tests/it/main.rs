//! End-to-end, parity and quality tests, linked as one test binary: each separate file used to
//! link candle and ONNX Runtime again, minutes of a cold build on a two-core machine.
//!
//! Plain `cargo test` is the fast tier. Tests that run the default models end to end, play
//! recordings in real time, use tmux or take minutes skip themselves unless `MEDSCRIBE_SLOW=1`
//! (`scripts/test.sh`, hence CI, sets it): see [`common::slow_tier`].

mod common;

mod cli_default_model;
mod cli_generate;
mod cli_memory;
mod cli_transcribe;
mod diarize;
mod fuzz_regressions;
mod hardening;
mod letter;
mod live;
mod parity_gemma3;
mod parity_gemma3_270m;
mod parity_medasr;
mod parity_moonshine;
mod quality_wer;
mod quantized_model;
mod serve;
mod tui_tmux;
