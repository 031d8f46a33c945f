#!/usr/bin/env bash
# Re-creates the sample dictation from its text (espeak-ng and sox, installed by scripts/setup.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
tmp=$(mktemp --suffix .wav)
espeak-ng -v en-gb -s 150 -w "$tmp" "$(cat referral-dictation.txt)"
sox "$tmp" -r 16000 -c 1 -b 16 -e signed-integer referral-dictation.wav pad 0.5 0.5
rm -f "$tmp"
