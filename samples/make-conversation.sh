#!/usr/bin/env bash
# Re-creates the three-speaker case-conference sample from its script (NAME.txt: one
# "speaker|sentence" per line) for the diarization tests, with Festival's voices recorded from
# three real people (Debian: festival festvox-kallpc16k festvox-us-slt-hts festvox-kdlpc16k):
# speaker 1 is Kal (American man, diphones), 2 is SLT (American woman, HTS, CMU ARCTIC), 3 is
# Ked (American man, diphones). Each sentence is synthesised, trimmed of silence, and the
# sentences joined with pauses of 0.4-0.8 s. Writes NAME.wav (16 kHz mono 16-bit)
# and NAME.turns.json, the true turns (start, end in seconds, speaker from 0).
# Usage: samples/make-conversation.sh [NAME]   (default case-conference)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
name=${1:-case-conference}
python=../.venv/bin/python
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
i=0
while IFS='|' read -r speaker text; do
    case $speaker in
        1) voice=voice_kal_diphone ;;
        2) voice=voice_cmu_us_slt_arctic_hts ;;
        3) voice=voice_ked_diphone ;;
        *) echo "unknown speaker $speaker" >&2; exit 1 ;;
    esac
    printf '%s\n' "$text" | text2wave -eval "($voice)" -o "$tmp/raw.wav"
    sox "$tmp/raw.wav" -r 16000 -c 1 -b 16 -e signed-integer "$tmp/$(printf %03d $i)-$speaker.wav"
    i=$((i + 1))
done <"$name.txt"
"$python" - "$tmp" "$name" <<'PY'
import json, pathlib, sys, wave
import numpy as np

folder, name = pathlib.Path(sys.argv[1]), sys.argv[2]
rate, parts, turns, at = 16000, [np.zeros(8000, dtype=np.int16)], [], 0.5
pauses = [0.4, 0.6, 0.8, 0.5, 0.7]
for index, path in enumerate(sorted(folder.glob("*-*.wav"))):
    speaker = int(path.stem.split("-")[1]) - 1
    with wave.open(str(path)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    loud = np.flatnonzero(np.abs(audio) > 100)
    audio = audio[loud[0] : loud[-1] + 1]
    turns.append({"start_s": round(at, 4), "end_s": round(at + len(audio) / rate, 4), "speaker": speaker})
    pause = pauses[index % len(pauses)]
    parts += [audio, np.zeros(int(pause * rate), dtype=np.int16)]
    at += len(audio) / rate + pause
with wave.open(f"{name}.wav", "wb") as w:
    w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
    w.writeframes(np.concatenate(parts).astype("<i2").tobytes())
pathlib.Path(f"{name}.turns.json").write_text(json.dumps(turns, indent=1) + "\n")
PY
