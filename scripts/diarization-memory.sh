#!/usr/bin/env bash
# Peak memory and time of `medscribe speakers` on long recordings: the held-out case conference
# looped to each length given in minutes (default 10 60), one thread. Flat memory means the peak
# does not grow with the length. Usage: scripts/diarization-memory.sh [MINUTES...]
# Needs a release build (cargo build --release) and the models setup installs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
binary=target/release/medscribe
[[ -x $binary ]] || { echo "build first: cargo build --release" >&2; exit 1; }
minutes=("$@")
[[ ${#minutes[@]} -gt 0 ]] || minutes=(10 60)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for m in "${minutes[@]}"; do
    python3 - "$m" "$work/conference-${m}min.wav" <<'PY'
import sys, wave
minutes, out = float(sys.argv[1]), sys.argv[2]
with wave.open("samples/case-conference.wav", "rb") as w:
    params, data = w.getparams(), w.readframes(w.getnframes())
loops = int(minutes * 60 * params.framerate / params.nframes) + 1
with wave.open(out, "wb") as o:
    o.setparams(params)
    for _ in range(loops):
        o.writeframes(data)
PY
    /usr/bin/time -f "$m min: %e s wall, %M KB peak RSS" \
        "$binary" speakers --threads 1 --speakers 3 "$work/conference-${m}min.wav" > /dev/null
done
