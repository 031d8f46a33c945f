#!/usr/bin/env python3
"""Quality yardstick for the letter writer: runs `medscribe letter` on public clinical dialogues
and compares the letters with the reference notes written by clinicians.

Data (CC BY 4.0, see ../shared/data/README.md): ACI-Bench (Yim et al. 2023) dialogue -> visit
note, and MTS-Dialog (Ben Abacha et al. 2023) dialogue -> one note section.

Figures per set:
  - ROUGE-L F1 (word LCS, lower-cased) of the whole letter against the reference note, and of
    two no-model baselines on the same rows: the clinician's own turns of the dialogue, and the
    whole dialogue;
  - unsupported facts per letter: numbers and medication names in the letter that the dialogue
    does not contain (checked here independently of medscribe's own guard: spoken numbers in
    the dialogue count, medication names come from setup's drug lexicon);
  - fact recall: of the dialogue's facts (numbers, medications) that the clinicians' note also
    states, the share that the letter states;
  - length: letter words over note words;
  - section coverage: share of the template's sections the letter filled, and of its required
    ones;
  - seconds per letter.

    python3 scripts/letter-yardstick.py [--set aci|mts] [-n 10] [--model PATH] [--template soap]
                                        [--style auto|grounded|completion|chat]
                                        [--roles keep|strip|labels]

Needs the release binary (cargo build --release) and setup's models. Model or prompt changes
should be measured with this before and after, on the same -n.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
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


SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def spoken_numbers(text: str) -> set[str]:
    """Numbers spelled out in `text` ("sixty two" -> 62, "one fifty" -> 150 and 1 and 50,
    "thirty eight point four" -> 38.4), as strings, with every written number."""
    words = re.findall(r"[a-z]+|\d+(?:\.\d+)?", text.lower())
    found = {w for w in words if w[0].isdigit()}
    found |= {w.split(".")[0] for w in found}
    value = None
    i = 0
    while i < len(words):
        w = words[i]
        if w in SMALL or w in TENS or w in ("hundred", "thousand"):
            total, current, j = 0, 0, i
            while j < len(words) and (words[j] in SMALL or words[j] in TENS
                                      or words[j] in ("hundred", "thousand", "and")):
                x = words[j]
                if x in SMALL:
                    current += SMALL.index(x)
                elif x in TENS:
                    current += 20 + 10 * TENS.index(x)
                elif x == "hundred":
                    current = max(current, 1) * 100
                elif x == "thousand":
                    total += max(current, 1) * 1000
                    current = 0
                found.add(str(SMALL.index(x)) if x in SMALL else
                          str(20 + 10 * TENS.index(x)) if x in TENS else "")
                j += 1
            value = total + current
            found.add(str(value))
            # "one fifty" is said for 150.
            if j - i == 2 and words[i] in SMALL[1:10] and (words[i + 1] in TENS
                                                         or words[i + 1] in SMALL[10:]):
                found.add(str(SMALL.index(words[i]) * 100 + (
                    20 + 10 * TENS.index(words[i + 1]) if words[i + 1] in TENS
                    else SMALL.index(words[i + 1]))))
            if j < len(words) - 1 and words[j] == "point" and words[j + 1] in SMALL[:10]:
                found.add(f"{value}.{SMALL.index(words[j + 1])}")
            i = j
        else:
            i += 1
    found.discard("")
    return found


def letter_numbers(text: str) -> list[str]:
    """Written numbers of a letter (identifiers such as dates are numbers too here)."""
    return re.findall(r"\d+(?:\.\d+)?", text.replace(",", ""))


def load_lexicon() -> set[str]:
    home = Path(os.environ.get("MEDSCRIBE_HOME") or Path(
        os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "medscribe")
    path = home / "lexicon" / "drugs.tsv"
    if not path.is_file():
        return set()
    return {line.split("\t")[0] for line in path.read_text().splitlines()
            if line and not line.startswith("#")}


def drugs(text: str, lexicon: set[str]) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z\-]*[a-z]", text.lower()) if w in lexicon}


def clinician_turns(dialogue: str) -> str:
    turns = []
    for line in dialogue.splitlines():
        tag = re.match(r"\s*(\[(\w+)\]|(\w+)\s*:)", line)
        if tag and (tag.group(2) or tag.group(3) or "").lower().startswith(("doctor", "dr")):
            turns.append(line[tag.end():])
    return "\n".join(turns)


ROLE_TAG = re.compile(r"^\s*\[([a-z_ ]+)\]\s*", re.IGNORECASE)


def with_roles(dialogue: str, roles: str) -> str:
    """The dialogue as medscribe would transcribe it: with its role tags (`keep`), without any
    (`strip`), or with speaker labels numbered by first appearance instead (`labels`)."""
    if roles == "keep":
        return dialogue
    labels: dict[str, str] = {}
    out = []
    for line in dialogue.splitlines():
        match = ROLE_TAG.match(line)
        if not match:
            out.append(line)
            continue
        rest = line[match.end():]
        if roles == "strip":
            out.append(rest)
        else:
            label = labels.setdefault(match.group(1).lower(), f"S{len(labels) + 1}")
            out.append(f"{label}: {rest}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=SETS, default="aci")
    parser.add_argument("-n", type=int, default=10, help="how many dialogues (from the start)")
    parser.add_argument("--template", default="soap")
    parser.add_argument("--model", help="letter model (default: setup's Gemma 3 270M)")
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "medscribe"))
    parser.add_argument("--style", default="auto", choices=["auto", "grounded", "completion", "chat"])
    parser.add_argument("--roles", default="keep", choices=["keep", "strip", "labels"],
                        help="the dialogue's [doctor]/[patient] tags: kept (a transcript with roles), "
                             "stripped (one undivided voice, as without --speakers), or replaced by "
                             "S1/S2 in order of appearance (speakers told apart, roles unknown)")
    args = parser.parse_args()

    path, dialogue_col, note_col = SETS[args.set]
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))[: args.n]
    lexicon = load_lexicon()
    if not lexicon:
        print("no drug lexicon (run scripts/setup.sh): medications are not counted", file=sys.stderr)
    scores, coverage, required, seconds, failures = [], [], [], [], 0
    turns_scores, dialogue_scores, unsupported_numbers, unsupported_drugs = [], [], [], []
    recalled, recallable, lengths = 0, 0, []
    for i, row in enumerate(rows):
        command = [args.binary, "letter", "--template", args.template, "--format", "json",
                   "--style", args.style, "--transcript", "-"]
        if args.model:
            command += ["--model", args.model]
        started = time.monotonic()
        spoken = with_roles(row[dialogue_col], args.roles)
        result = subprocess.run(command, input=spoken, capture_output=True, text=True)
        seconds.append(time.monotonic() - started)
        if result.returncode != 0:
            failures += 1
            print(f"{i}: failed: {result.stderr.strip()}", file=sys.stderr)
            continue
        letter = json.loads(result.stdout)
        sections = letter["sections"]
        text = "\n".join(s["text"] for s in sections)
        note, dialogue = row[note_col], row[dialogue_col]
        scores.append(rouge_l(text, note))
        turns_scores.append(rouge_l(clinician_turns(dialogue), note))
        dialogue_scores.append(rouge_l(dialogue, note))
        said_numbers = spoken_numbers(dialogue)
        unsupported_numbers.append(sum(n not in said_numbers and n.split(".")[0] not in said_numbers
                                       for n in letter_numbers(text)))
        said_drugs = drugs(dialogue, lexicon)
        unsupported_drugs.append(len(drugs(text, lexicon) - said_drugs))
        # Facts of the dialogue that the note states too, and whether the letter does.
        note_facts = ({n for n in letter_numbers(note) if n in said_numbers}
                      | (drugs(note, lexicon) & said_drugs))
        letter_facts = set(letter_numbers(text)) | spoken_numbers(text) | drugs(text, lexicon)
        recallable += len(note_facts)
        recalled += len(note_facts & letter_facts)
        lengths.append(len(words(text)) / max(1, len(words(note))))
        coverage.append(sum(bool(s["text"].strip()) for s in sections) / len(sections))
        needed = [s for s in sections if s["required"]]
        required.append(sum(bool(s["text"].strip()) for s in needed) / max(1, len(needed)))
        print(f"{i}: ROUGE-L {scores[-1]:.3f} (clinician's turns {turns_scores[-1]:.3f}), "
              f"unsupported {unsupported_numbers[-1]} numbers {unsupported_drugs[-1]} drugs, "
              f"length {lengths[-1]:.2f}, sections filled {coverage[-1]:.2f}, {seconds[-1]:.1f} s",
              file=sys.stderr)
    if not scores:
        print("no letter was written", file=sys.stderr)
        return 1
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(json.dumps({
        "set": args.set, "template": args.template, "model": args.model or "default",
        "roles": args.roles,
        "letters": len(scores), "failures": failures,
        "rouge_l_f1": round(mean(scores), 4),
        "baseline_clinician_turns_rouge_l_f1": round(mean(turns_scores), 4),
        "baseline_whole_dialogue_rouge_l_f1": round(mean(dialogue_scores), 4),
        "unsupported_numbers_per_letter": round(mean(unsupported_numbers), 3),
        "unsupported_drugs_per_letter": round(mean(unsupported_drugs), 3),
        "letters_with_unsupported_facts": sum(1 for n, d in zip(unsupported_numbers,
                                                               unsupported_drugs) if n or d),
        "fact_recall": round(recalled / recallable, 4) if recallable else None,
        "length_letter_over_note": round(mean(lengths), 3),
        "sections_filled": round(mean(coverage), 4),
        "required_sections_filled": round(mean(required), 4),
        "seconds_per_letter": round(mean(seconds), 2),
    }, indent=1))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
