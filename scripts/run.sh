#!/usr/bin/env bash
# The main job, end to end on a fresh machine: setup (a no-op when done), an optimised build,
# then medscribe. With no arguments it turns the committed sample dictation into a referral letter
# with the default models (Moonshine base-en + Silero VAD for speech, Gemma 3 270M for the letter,
# all installed by setup), written to letter.md; with arguments it runs them as a medscribe
# command, e.g.
#   scripts/run.sh transcribe recordings/ --output transcripts/ --format txt,srt
#   scripts/run.sh transcribe --model ~/medasr-onnx dictation.wav
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo build -q --release --locked
if [ $# -eq 0 ]; then
    set -- letter --audio samples/referral-dictation.wav --template referral --out letter.md --force
fi
exec target/release/medscribe "$@"
