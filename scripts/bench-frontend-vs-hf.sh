#!/usr/bin/env bash
# Front-end speed against Hugging Face's LasrFeatureExtractor on the same audio, in one run, one
# thread each: prints both throughputs and our speed-up ratio. Needs the dev venv
# (scripts/dev-venv.sh: transformers + torch); absolute times on shared machines are noise, the
# ratio is the figure to report.
#   scripts/bench-frontend-vs-hf.sh [FILE.wav] [REPEATS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
wav=${1:-models/fixtures/audio/dictation-long.wav}
repeats=${2:-20}
[ -x .venv-dev/bin/python ] || scripts/dev-venv.sh
cargo build -q --release --example frontend_speed
rust=$(target/release/examples/frontend_speed "$wav" "$repeats")
echo "$rust"
python=$(OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv-dev/bin/python - "$wav" "$repeats" <<'PY'
import sys, time
import soundfile as sf, torch
torch.set_num_threads(1)
from transformers import LasrFeatureExtractor
audio, rate = sf.read(sys.argv[1], dtype="float32")
assert rate == 16000 and audio.ndim == 1, "16 kHz mono WAV expected"
fe, repeats = LasrFeatureExtractor(), int(sys.argv[2])
fe(audio, sampling_rate=16000, return_tensors="np")  # warm-up
start = time.perf_counter()
for _ in range(repeats):
    fe(audio, sampling_rate=16000, return_tensors="np")
per_call = (time.perf_counter() - start) / repeats
print(f"hf_s_per_call={per_call:.6f}")
print(f"hf_frontend_audio_s_per_s={len(audio) / 16000 / per_call:.1f}")
PY
)
echo "$python"
ours=$(sed -n 's/^rust_frontend_audio_s_per_s=//p' <<<"$rust")
theirs=$(sed -n 's/^hf_frontend_audio_s_per_s=//p' <<<"$python")
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "speed-up over HF (same audio, one thread each): %.1fx\n", a / b }'
