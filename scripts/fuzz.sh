#!/usr/bin/env bash
# Fuzzes every file reader medscribe has (WAV, GGUF, tokenizer.json, templates, images, session
# files) with cargo fuzz (libFuzzer), SECONDS each (default 300), and prints executions, coverage
# and findings per target.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Corpora start from the committed fixtures and fuzz/seeds/ and grow in fuzz/corpus/ (ignored by
# git). A crash, timeout or out-of-memory input is copied to fuzz/regressions/TARGET/: commit it
# with the fix, and tests/fuzz_regressions.rs replays it in the ordinary test suite. CI does not
# run the fuzzer.
#
# cargo-fuzz is installed from crates.io if missing. libFuzzer needs nightly compiler flags;
# RUSTC_BOOTSTRAP=1 lets the one stable toolchain here take them. FUZZ_SANITIZER picks the
# sanitizer (default address; `none` builds faster and still finds panics, hangs and huge
# allocations).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_EACH=${1:-300}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(wav gguf tokenizer template image session)
SANITIZER=${FUZZ_SANITIZER:-address}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

seed() { # target files...
    local dir=fuzz/corpus/$1
    shift
    mkdir -p "$dir"
    local file
    for file in "$@"; do
        [ -f "$file" ] && cp -n "$file" "$dir/seed-$(basename "$file")"
    done
    return 0
}
seed wav models/fixtures/audio/dictation-short.wav fuzz/seeds/wav/*
seed gguf models/fixtures/gemma3-mmproj/*.gguf fuzz/seeds/gguf/*
seed tokenizer models/fixtures/gemma3-tiny/tokenizer.json fuzz/seeds/tokenizer/*
seed template llm/templates/*.json
seed image models/fixtures/gemma3-expected/scan.png models/fixtures/gemma3-expected/photo.jpg
seed session fuzz/seeds/session/*

cargo fuzz build --release --sanitizer "$SANITIZER"

summary=()
status=0
for target in "${TARGETS[@]}"; do
    mkdir -p "fuzz/artifacts/$target" "fuzz/regressions/$target"
    log=$(mktemp)
    echo "fuzz: $target for ${SECONDS_EACH} s" >&2
    # Inputs up to 1 MB (the seeds are smaller); 2 GB of memory and 20 s per input at most: more
    # than that on a small file is itself a finding.
    set +e
    cargo fuzz run --release --sanitizer "$SANITIZER" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -max_len=1048576 -rss_limit_mb=2048 -timeout=20 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
    features=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
    found=0
    for artifact in "fuzz/artifacts/$target"/*; do
        [ -f "$artifact" ] || continue
        cp "$artifact" "fuzz/regressions/$target/"
        found=$((found + 1))
    done
    if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
        status=1
        tail -40 "$log" >&2
    fi
    summary+=("$(printf '%-10s %12s executions  coverage %6s edges  %6s features  %s finding(s)' \
        "$target" "${execs:-?}" "${cov:-?}" "${features:-?}" "$found")")
    rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit $status
