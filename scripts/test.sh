#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: setup with the test recordings (a quick
# no-op when done), format and lint checks, then every test of every crate, the slow tier included (MEDSCRIBE_SLOW=1: the
# default models end to end, real-time playback, tmux, hours of audio). Tests build in the dev
# profile, which Cargo.toml optimises while keeping our debug assertions and overflow checks on.
# Plain `cargo test` is the fast tier. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh --test-data
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
MEDSCRIBE_SLOW=1 cargo test --workspace --locked
