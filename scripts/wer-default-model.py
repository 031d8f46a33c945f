#!/usr/bin/env python3
"""Word error rate of the default speech model on synthetic dictation.

Speaks a fixed set of clinical dictation sentences with espeak-ng (several voices and speeds),
transcribes them with `medscribe transcribe` (default model: Moonshine base-en) and prints the
normalised WER: lowercase, punctuation stripped, numbers written as words, common abbreviations
spelled out (mg -> milligrams). Deterministic: same espeak-ng, same model, same figure.

    python3 scripts/wer-default-model.py [--binary target/release/medscribe] [--max-wer 0.10]

It also speaks sentences naming common medicines and prints the drug-name error rate: the share
of names said that the transcript does not spell right, before (--no-drug-correction) and after
the drug lexicon mends them.

With --max-wer, exits 1 when the WER is above it (tests/quality_wer.rs uses this).
Synthetic speech is easier than real dictation: this figure guards against regressions, it does
not predict accuracy on a doctor's voice.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SENTENCES = [
    "The patient is a fifty four year old man with chest pain radiating to the left arm.",
    "Blood pressure is one hundred and forty over ninety and the pulse is regular.",
    "She takes metformin five hundred milligrams twice daily for type two diabetes.",
    "The lungs are clear to auscultation and there is no peripheral edema.",
    "Chest x ray shows no focal consolidation and no pleural effusion.",
    "Plan to review in the clinic in six weeks with repeat blood tests.",
    "He was admitted with community acquired pneumonia and treated with antibiotics.",
    "There is a history of asthma and she uses a salbutamol inhaler as needed.",
    "The abdomen is soft and non tender with normal bowel sounds.",
    "Please refer to the cardiology team for further assessment.",
    "The wound is healing well with no signs of infection.",
    "Her hemoglobin is twelve point five and the white cell count is normal.",
]
# Medication names, for the drug-name error rate: a sentence each, with the names it holds.
DRUG_SENTENCES = [
    ("He takes amlodipine five milligrams daily.", ["amlodipine"]),
    ("Start atorvastatin forty milligrams at night.", ["atorvastatin"]),
    ("Continue lisinopril ten milligrams once daily.", ["lisinopril"]),
    ("He was given amoxicillin five hundred milligrams three times a day.", ["amoxicillin"]),
    ("Continue bisoprolol two point five milligrams daily.", ["bisoprolol"]),
    ("Omeprazole twenty milligrams before breakfast.", ["omeprazole"]),
    ("Apixaban five milligrams twice daily for atrial fibrillation.", ["apixaban"]),
    ("Levothyroxine one hundred micrograms every morning.", ["levothyroxine"]),
    ("Sertraline fifty milligrams daily for depression.", ["sertraline"]),
    ("Furosemide forty milligrams in the morning.", ["furosemide"]),
    ("Ramipril five milligrams daily.", ["ramipril"]),
    ("Clopidogrel seventy five milligrams daily.", ["clopidogrel"]),
    ("Prednisolone thirty milligrams for five days.", ["prednisolone"]),
    ("Gabapentin three hundred milligrams at night.", ["gabapentin"]),
    ("She takes warfarin and paracetamol.", ["warfarin", "paracetamol"]),
    ("He uses a tiotropium inhaler and takes montelukast at night.", ["tiotropium", "montelukast"]),
]
VOICES = [("en-us", 150), ("en-gb", 175), ("en-us+m3", 135)]

UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
ABBREVIATIONS = {"mg": "milligrams", "mr": "mister", "dr": "doctor", "ml": "milliliters", "x-ray": "x ray",
                 "xray": "x ray", "oedema": "edema", "haemoglobin": "hemoglobin", "%": " percent"}


def number_words(n: int) -> str:
    if n < 20:
        return UNITS[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + UNITS[n % 10])
    if n < 1000:
        rest = n % 100
        return UNITS[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))
    return " ".join(UNITS[int(d)] for d in str(n))


def normalise(text: str) -> list[str]:
    text = text.lower().replace("%", " percent")
    text = re.sub(r"(\d+)\.(\d+)", lambda m: f"{m.group(1)} point {' '.join(m.group(2))}", text)
    text = re.sub(r"\d+", lambda m: " " + number_words(int(m.group(0))) + " ", text)
    text = text.replace("-", " ")
    words = re.sub(r"[^a-z0-9' ]+", " ", text).split()
    out: list[str] = []
    for word in words:
        out.extend(ABBREVIATIONS.get(word, word).split())
    # "one hundred and forty" and "one hundred forty" are the same number.
    return out


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def transcribe(binary: str, audio: Path, out: Path, *extra: str) -> bool:
    out.mkdir()
    result = subprocess.run([binary, "transcribe", "--format", "json", "--output", str(out), *extra, str(audio)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
    return result.returncode == 0


def missed_drugs(out: Path, drug_references: dict[str, list[str]], verbose: bool) -> tuple[int, int]:
    """Medication names said and not written as a word of the transcript: (missed, said)."""
    missed = said = 0
    for name, drugs in sorted(drug_references.items()):
        words = set(re.findall(r"[a-z]+", json.loads((out / f"{name}.json").read_text())["text"].lower()))
        for drug in drugs:
            said += 1
            if drug not in words:
                missed += 1
                if verbose:
                    print(f"{out.name} {name}: {drug} missing")
    return missed, said


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/medscribe")
    parser.add_argument("--max-wer", type=float)
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "audio"
        audio.mkdir()
        references, drug_references = {}, {}
        texts = [(f"s{s:02d}", sentence, None) for s, sentence in enumerate(SENTENCES)]
        texts += [(f"d{d:02d}", sentence, drugs) for d, (sentence, drugs) in enumerate(DRUG_SENTENCES)]
        for v, (voice, speed) in enumerate(VOICES):
            for key, sentence, drugs in texts:
                name = f"v{v}-{key}"
                raw = Path(tmp) / f"{name}.raw.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), sentence], check=True)
                subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(audio / f"{name}.wav"),
                                "pad", "0.3", "0.3"], check=True)
                if drugs is None:
                    references[name] = sentence
                else:
                    drug_references[name] = drugs
        out, raw_out = Path(tmp) / "out", Path(tmp) / "out-uncorrected"
        if not transcribe(args.binary, audio, out) or not transcribe(args.binary, audio, raw_out, "--no-drug-correction"):
            return 2
        errors = words = 0
        for name, sentence in sorted(references.items()):
            hypothesis = json.loads((out / f"{name}.json").read_text())["text"]
            ref, hyp = normalise(sentence), normalise(hypothesis)
            e = edit_distance(ref, hyp)
            errors += e
            words += len(ref)
            if args.verbose and e:
                print(f"{name}: {e} errors\n  ref: {' '.join(ref)}\n  hyp: {' '.join(hyp)}")
        missed_before, said = missed_drugs(raw_out, drug_references, args.verbose)
        missed_after, _ = missed_drugs(out, drug_references, args.verbose)
    wer = errors / words
    print(f"utterances={len(references)} voices={len(VOICES)} words={words} errors={errors} wer={wer:.4f}")
    print(f"drug names said={said} missed before correction={missed_before} ({missed_before / said:.3f}) "
          f"after={missed_after} ({missed_after / said:.3f})")
    if args.max_wer is not None and wer > args.max_wer:
        print(f"WER {wer:.4f} is above the allowed {args.max_wer:.4f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
