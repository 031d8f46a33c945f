#!/usr/bin/env bash
# Default-model speed against a Python onnxruntime reference (scripts/moonshine_reference.py)
# on the same audio, one thread each, in one run: about 70 s of synthetic dictation as six
# utterance files. The reference runs twice: on the .ort files exactly as the package ships
# them, and on the graphs setup prepared (weights unpacked once), which medscribe uses.
# Prints real-time factors, wall-time ratios (model loading included for all) and whether the
# transcripts agree.
#   scripts/bench-moonshine-vs-python.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh >/dev/null 2>&1 || scripts/setup.sh
cargo build -q --release --locked
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/audio" "$work/out"
i=0
while IFS= read -r sentence; do
    espeak-ng -v en-us -s 150 -w "$work/raw.wav" "$sentence"
    sox "$work/raw.wav" -r 16000 -c 1 -b 16 "$work/audio/utterance-$i.wav" pad 0.3 0.3 2>/dev/null
    i=$((i + 1))
done <<'TEXT'
Referral to cardiology. Mister Jones is a sixty two year old man with exertional chest pain for three weeks. He has high blood pressure and takes amlodipine five milligrams daily.
His electrocardiogram shows no acute changes. Please assess for stable angina. He is a former smoker with a twenty pack year history and drinks little alcohol.
Discharge summary. The patient was admitted with community acquired pneumonia and treated with intravenous antibiotics for three days before switching to oral amoxicillin.
Chest x ray on discharge showed resolving consolidation in the right lower lobe and no pleural effusion. She was eating and drinking normally and walking without help.
Plan. Complete seven days of antibiotics in total. Review in the clinic in six weeks with a repeat chest x ray. Return sooner if the fever or breathlessness comes back.
Medications on discharge are amoxicillin five hundred milligrams three times daily, paracetamol one gram four times daily as needed, and her usual inhalers.
TEXT
audio_s=$(for f in "$work"/audio/*.wav; do soxi -D "$f"; done | awk '{ s += $1 } END { printf "%.2f", s }')
start=$(date +%s.%N)
target/release/medscribe transcribe --threads 1 --format json --output "$work/out" "$work/audio" 2>"$work/rust.log"
rust_s=$(echo "$(date +%s.%N) - $start" | bc)
start=$(date +%s.%N)
.venv/bin/python scripts/moonshine_reference.py --threads 1 "$work"/audio/*.wav >"$work/python.txt"
python_s=$(echo "$(date +%s.%N) - $start" | bc)
start=$(date +%s.%N)
.venv/bin/python scripts/moonshine_reference.py --prepared --threads 1 "$work"/audio/*.wav >"$work/python-prepared.txt"
prepared_s=$(echo "$(date +%s.%N) - $start" | bc)
agree=$(.venv/bin/python - "$work" <<'PY'
import json, sys, pathlib, re
work = pathlib.Path(sys.argv[1])
python = [line.split("\t", 1)[1] for line in (work / "python.txt").read_text().splitlines()]
files = sorted((work / "audio").glob("*.wav"))
norm = lambda t: re.sub(r"[^a-z0-9 ]", "", t.lower()).split()
same = sum(norm(json.loads((work / "out" / (f.stem + ".json")).read_text())["text"]) == norm(p) for f, p in zip(files, python))
print(f"{same}/{len(files)}")
PY
)
echo "audio: ${audio_s} s in $(ls "$work"/audio | wc -l) utterance files"
awk -v a="$audio_s" -v r="$rust_s" -v p="$python_s" -v q="$prepared_s" 'BEGIN {
    printf "medscribe (Rust, VAD + prepared Moonshine, 1 thread): %6.2f s wall, real-time factor %.3f\n", r, r / a
    printf "Python reference, shipped .ort files (1 thread):       %6.2f s wall, real-time factor %.3f\n", p, p / a
    printf "Python reference, prepared .onnx files (1 thread):     %6.2f s wall, real-time factor %.3f\n", q, q / a
    printf "ratio ours / Python on shipped files:  %.2fx\n", r / p
    printf "ratio ours / Python on prepared files: %.2fx\n", r / q }'
echo "transcripts identical (words): $agree"
tail -n1 "$work/rust.log"
