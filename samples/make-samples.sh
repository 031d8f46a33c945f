#!/usr/bin/env bash
# Re-creates the sample dictations from their texts (espeak-ng and sox, installed by
# scripts/setup.sh): voice en-gb, 150 words per minute, 16 kHz mono 16-bit PCM, half a second of
# silence either side.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
tmp=$(mktemp --suffix .wav)
trap 'rm -f "$tmp"' EXIT
for name in referral-dictation discharge-dictation; do
    espeak-ng -v en-gb -s 150 -w "$tmp" "$(cat "$name.txt")"
    sox "$tmp" -r 16000 -c 1 -b 16 -e signed-integer "$name.wav" pad 0.5 0.5
done
