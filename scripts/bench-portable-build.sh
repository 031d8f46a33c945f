#!/usr/bin/env bash
# Whether the portable default build (baseline x86-64, every kernel's instructions picked at run
# time) is as fast as a build for x86-64-v3 (AVX2 and FMA allowed everywhere at compile time),
# which was the default until issue 16: builds both in release, then runs the same commands with
# each, alternating, on the default models: generation from a 164-token prompt (prompt and decode
# tok/s from --verbose) and the main job (the referral sample dictation to a letter, loading
# included). Medians of the rounds are printed at the end.
#
# Usage: scripts/bench-portable-build.sh [--rounds N] [--model GGUF] [--also BINARY]...
#   --model  generate with this model too (e.g. the MedGemma-4B-shaped bench GGUF)
#   --also   time another medscribe binary alongside (e.g. an older build)
# Setup must have run; about 10 min to build the second copy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=3
models=("")
binaries=()
while (($#)); do
    case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --model) models+=("$2"); shift 2 ;;
    --also) binaries+=("$2"); shift 2 ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
cargo build -q --release --locked
CARGO_TARGET_DIR=target/v3 RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build -q --release --locked
binaries=(target/release/medscribe target/v3/release/medscribe "${binaries[@]}")
prompt="$(cat samples/referral-dictation.txt samples/discharge-dictation.txt)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
results="$out/results"
for model in "${models[@]}"; do
    for round in $(seq "$rounds"); do
        for bin in "${binaries[@]}"; do
            line=$("$bin" generate ${model:+--model "$model"} --raw --verbose --prompt "$prompt" \
                --max-new-tokens 64 2>&1 >/dev/null | tail -1)
            echo "== $bin ${model:-default model}, round $round: $line"
            echo "generate ${model:-default} $bin $line" >>"$results"
        done
    done
done
for round in $(seq "$rounds"); do
    for bin in "${binaries[@]}"; do
        start=$(date +%s.%N)
        "$bin" letter --audio samples/referral-dictation.wav --template referral \
            --out "$out/letter.md" --force 2>/dev/null
        end=$(date +%s.%N)
        seconds=$(echo "$end - $start" | bc)
        echo "== $bin main job, round $round: $seconds s"
        echo "mainjob - $bin $seconds" >>"$results"
    done
done
echo
echo "Medians over $rounds rounds:"
python3 - "$results" <<'PY'
import re, statistics, sys
from collections import defaultdict
runs = defaultdict(lambda: defaultdict(list))
for line in open(sys.argv[1]):
    kind, model, binary, rest = line.split(" ", 3)
    if kind == "mainjob":
        runs[("main job, s", "")][binary].append(float(rest))
        continue
    for label, pattern in (
        ("load s", r"loaded in ([\d.]+) s"),
        ("prompt tok/s", r"prompt \d+ tokens in [\d.]+ s \(([\d.]+) tok/s\)"),
        ("decode tok/s", r"generated \(([\d.]+) tok/s\)"),
    ):
        found = re.search(pattern, rest)
        if found:
            runs[(label, model)][binary].append(float(found.group(1)))
for (label, model), by_binary in runs.items():
    cells = "  ".join(f"{b}: {statistics.median(v):.2f}" for b, v in by_binary.items())
    print(f"{label:14} {model:30} {cells}")
PY
