#!/usr/bin/env bash
# Our diarization against sherpa-onnx's on the same audio, models and thread count: DER and
# real-time factor on built 2-, 3- and 4-speaker conversations and the committed case conference
# (scripts/diarization_bench.py says which voices). Not part of the tests (timings are noise on
# shared machines); run it after changing anything under asr/src/diarize.
#   scripts/diarization-bench.sh [--threshold D ...]   (our auto thresholds to try; default ours)
# Needs setup done, festival with its voices (see samples/make-conversation.sh), and the package
# registries once: sherpa-onnx 2.0.1 goes into a venv in the data directory, the LibriVox reader
# comes from Debian's pocketsphinx-testdata, a real telephone call from PyPI's pyannote.audio wheel.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${MEDSCRIBE_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/medscribe}
VENV=$DATA/sherpa-venv
WORK=$DATA/diarization-bench
say() { printf 'diarization-bench: %s\n' "$*" >&2; }

"$ROOT/scripts/setup.sh"
command -v text2wave >/dev/null || { say "festival is needed (apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)"; exit 1; }
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sherpa_onnx, onnx, numpy' 2>/dev/null; then
    say "creating $VENV with sherpa-onnx 2.0.1"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "sherpa-onnx==2.0.1" "numpy==2.2.6" "onnx==1.23.2"
fi
READER=$WORK/librivox
if [ ! -d "$READER" ]; then
    mkdir -p "$WORK" && tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -qq pocketsphinx-testdata 2>/dev/null) || { rm -rf "$tmp"; say "cannot download pocketsphinx-testdata"; exit 1; }
    dpkg -x "$tmp"/pocketsphinx-testdata_*.deb "$tmp/x"
    mkdir -p "$READER.partial" && cp "$tmp"/x/usr/share/pocketsphinx/test/data/librivox/*.wav "$READER.partial/"
    mv "$READER.partial" "$READER" && rm -rf "$tmp"
fi
(cd "$ROOT" && cargo build --release --quiet)
"$VENV/bin/python" "$ROOT/scripts/diarization_bench.py" "$ROOT/target/release/medscribe" \
    "$DATA/models" "$WORK" "$READER" "$@"
