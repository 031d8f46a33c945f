#!/usr/bin/env bash
# What a portable (baseline x86-64) build would cost against today's x86-64-v3 build (issue 16,
# item 6): builds both in release, then runs the same commands with each, alternating, on the
# default models: generation from a 164-token prompt (prompt and decode tok/s from --verbose) and
# the main job (the referral sample dictation to a letter, loading included).
# Usage: scripts/bench-portable-build.sh [ROUNDS]   (setup must have run; ~10 min to build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds="${1:-3}"
cargo build -q --release --locked
CARGO_TARGET_DIR=target/baseline RUSTFLAGS="-C target-cpu=x86-64" cargo build -q --release --locked
today=target/release/medscribe
baseline=target/baseline/release/medscribe
prompt="$(cat samples/referral-dictation.txt samples/discharge-dictation.txt)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for round in $(seq "$rounds"); do
    for bin in "$today" "$baseline"; do
        echo "== $bin generate, round $round"
        "$bin" generate --raw --verbose --prompt "$prompt" --max-new-tokens 64 2>&1 >/dev/null | tail -1
    done
done
for round in $(seq "$rounds"); do
    for bin in "$today" "$baseline"; do
        start=$(date +%s.%N)
        "$bin" letter --audio samples/referral-dictation.wav --template referral \
            --out "$out/letter.md" --force 2>/dev/null
        end=$(date +%s.%N)
        echo "== $bin main job, round $round: $(echo "$end - $start" | bc) s"
    done
done
