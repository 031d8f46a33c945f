#!/usr/bin/env python3
"""Quality yardstick for the letter writer: runs `medscribe letter` on public clinical dialogues
and compares the letters with the reference notes written by clinicians.

Data (CC BY 4.0, see ../shared/data/README.md): ACI-Bench (Yim et al. 2023) dialogue -> visit
note, and MTS-Dialog (Ben Abacha et al. 2023) dialogue -> one note section.

Figures per set:
  - ROUGE-L F1 (word LCS, lower-cased) of the whole letter against the reference note;
  - section coverage: share of the template's sections the letter filled, and of its required
    ones;
  - seconds per letter.

    python3 scripts/letter-yardstick.py [--set aci|mts] [-n 10] [--model PATH] [--template soap]

Needs the release binary (cargo build --release) and setup's models. Model or prompt changes
should be measured with this before and after, on the same -n.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SETS = {
    "aci": (DATA / "aci-bench" / "valid.csv", "dialogue", "note"),
    "mts": (DATA / "mts-dialog" / "MTS-Dialog-ValidationSet.csv", "dialogue", "section_text"),
}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l(candidate: str, reference: str) -> float:
    a, b = words(candidate), words(reference)
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=SETS, default="aci")
    parser.add_argument("-n", type=int, default=10, help="how many dialogues (from the start)")
    parser.add_argument("--template", default="soap")
    parser.add_argument("--model", help="letter model (default: setup's Gemma 3 270M)")
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "medscribe"))
    args = parser.parse_args()

    path, dialogue_col, note_col = SETS[args.set]
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))[: args.n]
    scores, coverage, required, seconds, failures = [], [], [], [], 0
    for i, row in enumerate(rows):
        command = [args.binary, "letter", "--template", args.template, "--format", "json",
                   "--transcript", "-"]
        if args.model:
            command += ["--model", args.model]
        started = time.monotonic()
        result = subprocess.run(command, input=row[dialogue_col], capture_output=True, text=True)
        seconds.append(time.monotonic() - started)
        if result.returncode != 0:
            failures += 1
            print(f"{i}: failed: {result.stderr.strip()}", file=sys.stderr)
            continue
        letter = json.loads(result.stdout)
        sections = letter["sections"]
        text = "\n".join(s["text"] for s in sections)
        scores.append(rouge_l(text, row[note_col]))
        coverage.append(sum(bool(s["text"].strip()) for s in sections) / len(sections))
        needed = [s for s in sections if s["required"]]
        required.append(sum(bool(s["text"].strip()) for s in needed) / max(1, len(needed)))
        print(f"{i}: ROUGE-L {scores[-1]:.3f}, sections filled {coverage[-1]:.2f}, {seconds[-1]:.1f} s",
              file=sys.stderr)
    if not scores:
        print("no letter was written", file=sys.stderr)
        return 1
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(json.dumps({
        "set": args.set, "template": args.template, "model": args.model or "default",
        "letters": len(scores), "failures": failures,
        "rouge_l_f1": round(mean(scores), 4),
        "sections_filled": round(mean(coverage), 4),
        "required_sections_filled": round(mean(required), 4),
        "seconds_per_letter": round(mean(seconds), 2),
    }, indent=1))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
