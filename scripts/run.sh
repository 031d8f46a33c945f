#!/usr/bin/env bash
# The main job, end to end on a fresh machine: setup (a no-op when done), an optimised build,
# then medscribe. With no arguments it transcribes the committed sample dictation with the
# default model (Moonshine base-en + Silero VAD, installed by setup); with arguments it runs them
# as a medscribe command, e.g.
#   scripts/run.sh transcribe recordings/ --output transcripts/ --format txt,srt
#   scripts/run.sh transcribe --model ~/medasr-onnx dictation.wav
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo build -q --release --locked
if [ $# -eq 0 ]; then
    set -- transcribe samples/referral-dictation.wav
fi
exec target/release/medscribe "$@"
