#!/usr/bin/env python3
"""Independent reference for the default letter model (Gemma 3 270M, Q4_K_M GGUF): transformers
loads the GGUF (dequantising every tensor to float32) and continues a few prompts greedily for
16 tokens. Only token ids are stored (models/fixtures/gemma3-270m-expected.json), never weights.

    .venv-dev/bin/pip install gguf accelerate
    .venv-dev/bin/python models/scripts/make_gemma3_270m_reference.py [DATA_DIR]

DATA_DIR defaults to the medscribe data directory, where setup put the GGUF and tokenizer.json.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [
    "<bos>The capital of France is",
    "<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
    "<bos>Discharge summary. The patient was admitted with community acquired pneumonia and",
    "<bos>Referral letter\n\nDear Dr. Smith,\n\nI would be grateful if you could see",
]
STEPS = 16


def main() -> int:
    default = Path(os.environ.get("MEDSCRIBE_HOME") or Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "medscribe")
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else default) / "models" / "gemma3-270m"
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file="gemma-3-270m-q4_k_m.gguf",
                                                 torch_dtype=torch.float32).eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    out = {"made_by": f"transformers {transformers.__version__} loading gemma-3-270m-q4_k_m.gguf dequantised to float32, greedy",
           "steps": STEPS, "prompts": []}
    for text in PROMPTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        tokens, margins = list(ids), []
        with torch.no_grad():
            for _ in range(STEPS):
                logits = model(input_ids=torch.tensor([tokens])).logits[0, -1]
                top2 = torch.topk(logits, 2).values
                margins.append(round(float(top2[0] - top2[1]), 4))
                tokens.append(int(logits.argmax()))
        new = tokens[len(ids):]
        out["prompts"].append({"text": text, "ids": ids, "greedy": new, "margins": margins,
                               "greedy_text": tokenizer.decode(new)})
        print(repr(text[:40]), "->", repr(tokenizer.decode(new)), "min margin", min(margins))
    (ROOT / "models" / "fixtures" / "gemma3-270m-expected.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
