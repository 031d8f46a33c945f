#!/usr/bin/env bash
# The main job, end to end on a fresh machine: setup (a no-op when done), an optimised build,
# then medscribe. With no arguments it transcribes the committed sample dictation; with
# arguments it runs them as a medscribe command, e.g.
#   scripts/run.sh transcribe --model ~/medasr-onnx dictation.wav
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo build -q --release --locked
if [ $# -eq 0 ]; then
    cat >&2 <<'NOTE'
run.sh: no default speech model ships yet (that is issue 3, Moonshine base-en). This demo runs the
        real MedASR code path on the tiny RANDOM parity model in models/fixtures: its words are
        noise by design. For real transcripts, export MedASR (README.md, "MedASR") and run
        scripts/run.sh transcribe --model DIR FILE.wav
NOTE
    set -- transcribe --model models/fixtures/medasr-tiny-hf --format json models/fixtures/audio/dictation-short.wav
fi
exec target/release/medscribe "$@"
