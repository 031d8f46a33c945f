#!/usr/bin/env python3
"""Build the Gemma 3 / MedGemma parity fixtures: a tiny random Gemma3ForConditionalGeneration with
the architecture of MedGemma (sliding + full layers, linear RoPE scaling on full layers,
query_pre_attn_scalar != head_dim, GQA, GELU-tanh), a small BPE tokenizer with Gemma's special
tokens, and Hugging Face's outputs for a few prompts.

The Rust implementation (llm crate) is tested against these files (shared/specs/medgemma.md). The
weights are random: the generated text is noise by design, only equality with transformers matters.

    .venv-dev/bin/python models/scripts/make_gemma3_fixtures.py     (scripts/dev-venv.sh makes it)

Writes models/fixtures/gemma3-tiny/ (model, config, tokenizer) and gemma3-expected/ (references).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "fixtures" / "gemma3-tiny"
EXPECTED = ROOT / "models" / "fixtures" / "gemma3-expected"
DATA = ROOT.parent / "shared" / "data" / "aci-bench" / "valid.csv"
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
           "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
GREEDY_TOKENS = 20

PROMPTS = {
    # The chat template of shared/specs/medgemma.md, system text folded into the user turn.
    "templated": "<bos><start_of_turn>user\nYou are a helpful medical assistant.\n\nWrite a short "
                 "referral for chest pain.<end_of_turn>\n<start_of_turn>model\n",
    "raw": "<bos>The patient is a 54 year old man",
    # Far longer than the sliding window (8): exercises the window in prefill and decode.
    "long": "<bos>Doctor: how are you feeling today? Patient: I have had a cough for three weeks and "
            "some chest pain when I breathe in deeply, and my temperature was high last night.",
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-like BPE (metaspace) trained on ACI-Bench dialogue (CC BY 4.0)."""
    with DATA.open(newline="") as f:
        corpus = [row["dialogue"] for row in csv.DictReader(f)][:40]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(vocab_size=480, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=list("\n?:.,'0123456789"))
    tokenizer.train_from_iterator(corpus, trainer)
    bos = tokenizer.token_to_id("<bos>")
    # Like Gemma's tokenizer.json: the post-processor adds <bos> itself.
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                             special_tokens=[("<bos>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=SPECIAL[4:])
    return fast


def build_model(tok: PreTrainedTokenizerFast, seed: int) -> Gemma3ForConditionalGeneration:
    text = dict(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        sliding_window=8, layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
        max_position_embeddings=1024, rms_norm_eps=1e-6,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=56, patch_size=14, layer_norm_eps=1e-6)
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4,
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("language_model.norm.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * 2.0 - 1.0)   # gain centred near zero
            elif "q_norm" in name or "k_norm" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 1.5)
            elif "norm" in name and p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            else:
                fan_in = p.shape[-1] if p.dim() > 1 else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / fan_in ** 0.5))
    return model


@torch.no_grad()
def greedy(model, ids: list[int], steps: int) -> tuple[list[int], float]:
    """Greedy continuation recomputed without a cache at every step (the plainest reference)."""
    tokens, margin = list(ids), float("inf")
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([tokens])).logits[0, -1]
        top2 = torch.topk(logits, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        tokens.append(int(logits.argmax()))
    return tokens[len(ids):], margin


def main() -> int:
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    tok = build_tokenizer()
    encoded = {name: tok(text, add_special_tokens=False)["input_ids"] for name, text in PROMPTS.items()}
    for seed in range(200):
        model = build_model(tok, seed)
        runs = {name: greedy(model, ids, GREEDY_TOKENS) for name, ids in encoded.items()}
        varied = all(len(set(tokens)) >= 6 for tokens, _ in runs.values())
        distinct = len({tuple(tokens) for tokens, _ in runs.values()}) == len(runs)
        margin = min(m for _, m in runs.values())
        if varied and distinct and margin >= 0.01:
            break
    else:
        print("no seed gave varied greedy output", file=sys.stderr)
        return 1
    print(f"seed {seed}: min top-1/top-2 margin {margin:.4f}")
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    EXPECTED.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(MODEL_DIR, safe_serialization=True)
    tok.save_pretrained(MODEL_DIR)
    expected = {"transformers": transformers.__version__, "seed": seed, "greedy_tokens": GREEDY_TOKENS,
                "prompts": {}}
    with torch.no_grad():
        for name, ids in encoded.items():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            np.ascontiguousarray(logits.numpy(), dtype="<f4").tofile(EXPECTED / f"{name}.logits.f32")
            tokens, m = runs[name]
            expected["prompts"][name] = {
                "text": PROMPTS[name], "ids": ids, "logits_file": f"{name}.logits.f32",
                "logits_shape": list(logits.shape), "greedy": tokens, "greedy_margin": m,
                "greedy_text": tok.decode(tokens, skip_special_tokens=True),
            }
            print(f"{name}: {len(ids)} prompt tokens -> {tokens}")
    (EXPECTED / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    size = sum(f.stat().st_size for d in (MODEL_DIR, EXPECTED) for f in d.iterdir())
    print(f"fixtures: {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
