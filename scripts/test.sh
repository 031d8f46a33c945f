#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: setup (a quick no-op when done), format
# and lint checks, then every test of every crate. Model tests run optimised (they are 20-50x
# slower unoptimised; shared/specs/build.md). CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked --release -- -D warnings
cargo test --workspace --locked --release
