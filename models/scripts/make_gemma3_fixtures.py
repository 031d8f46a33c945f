#!/usr/bin/env python3
"""Build the Gemma 3 / MedGemma parity fixtures: a tiny random Gemma3ForConditionalGeneration with
the architecture of MedGemma (sliding + full layers, linear RoPE scaling on full layers,
query_pre_attn_scalar != head_dim, GQA, GELU-tanh), a small BPE tokenizer with Gemma's special
tokens, and Hugging Face's outputs for a few prompts.

The Rust implementation (llm crate) is tested against these files (shared/specs/medgemma.md). The
weights are random: the generated text is noise by design, only equality with transformers matters.

    .venv-dev/bin/python models/scripts/make_gemma3_fixtures.py     (scripts/dev-venv.sh makes it)

Writes models/fixtures/gemma3-tiny/ (model, config, tokenizer) and gemma3-expected/ (references:
logits and greedy tokens of text-only, one-image and two-image prompts, the images as PNG/JPEG, the
pixel values of HF's PIL image processor, the vision tower's and the projector's outputs).

Images enter exactly as Gemma3Processor does it: each `<start_of_image>` in the text becomes
"\n\n<start_of_image>" + N x "<image_soft_token>" + "<end_of_image>\n\n" before tokenisation, and
token_type_ids mark the soft tokens (which switches on HF's same-image bidirectional mask).
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
from PIL import Image
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, PreTrainedTokenizerFast
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "fixtures" / "gemma3-tiny"
EXPECTED = ROOT / "models" / "fixtures" / "gemma3-expected"
DATA = ROOT.parent / "shared" / "data" / "aci-bench" / "valid.csv"
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
           "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
GREEDY_TOKENS = 20
IMAGE_SIZE = 56
TOKENS_PER_IMAGE = 4
# Deliberately not the model's size, nor square, and in two formats: preprocessing must resize.
IMAGES = {"scan.png": (90, 70), "photo.jpg": (40, 64)}

PROMPTS = {
    # The chat template of shared/specs/medgemma.md, system text folded into the user turn.
    "templated": "<bos><start_of_turn>user\nYou are a helpful medical assistant.\n\nWrite a short "
                 "referral for chest pain.<end_of_turn>\n<start_of_turn>model\n",
    "raw": "<bos>The patient is a 54 year old man",
    # Far longer than the sliding window (8): exercises the window in prefill and decode.
    "long": "<bos>Doctor: how are you feeling today? Patient: I have had a cough for three weeks and "
            "some chest pain when I breathe in deeply, and my temperature was high last night.",
    # One image in a templated turn, and two images in a raw prompt.
    "image1": "<bos><start_of_turn>user\n<start_of_image>Describe this X-ray.<end_of_turn>\n"
              "<start_of_turn>model\n",
    "image2": "<bos>Compare <start_of_image> with <start_of_image> and report",
}
PROMPT_IMAGES = {"image1": ["scan.png"], "image2": ["scan.png", "photo.jpg"]}


def expand_images(text: str) -> str:
    """Gemma3Processor's expansion of each <start_of_image>."""
    full = "\n\n<start_of_image>" + "<image_soft_token>" * TOKENS_PER_IMAGE + "<end_of_image>\n\n"
    return text.replace("<start_of_image>", full)


def make_images() -> dict[str, Image.Image]:
    """Deterministic pictures with structure (gradients, a disc, noise) so that pixels matter."""
    rng = np.random.default_rng(11)
    images = {}
    for name, (w, h) in IMAGES.items():
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        disc = ((x - w * 0.4) ** 2 + (y - h * 0.6) ** 2 < (min(w, h) * 0.3) ** 2) * 120.0
        rgb = np.stack([x / w * 255, y / h * 200 + disc * 0.3, 255 - disc - x / w * 60], axis=-1)
        rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
        images[name] = Image.fromarray(rgb, "RGB")
    return images


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-like BPE (metaspace) trained on ACI-Bench dialogue (CC BY 4.0). The alphabet
    includes JSON's punctuation so that constrained letter generation can run on the tiny model."""
    with DATA.open(newline="") as f:
        corpus = [row["dialogue"] for row in csv.DictReader(f)][:40]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(vocab_size=480, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=list("\n?:.,'0123456789{}\"_"))
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
                  image_size=IMAGE_SIZE, patch_size=14, layer_norm_eps=1e-6, vision_use_head=False)
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=TOKENS_PER_IMAGE,
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


def forward(model, tokens: list[int], pixels, image_token: int):
    """Full logits of `tokens`; with images, token_type_ids mark the soft tokens as the processor does."""
    if pixels is None:
        return model(input_ids=torch.tensor([tokens])).logits[0]
    ids = torch.tensor([tokens])
    return model(input_ids=ids, pixel_values=pixels, token_type_ids=(ids == image_token).long()).logits[0]


@torch.no_grad()
def greedy(model, ids: list[int], steps: int, pixels=None, image_token=-1) -> tuple[list[int], float]:
    """Greedy continuation recomputed without a cache at every step (the plainest reference)."""
    tokens, margin = list(ids), float("inf")
    for _ in range(steps):
        logits = forward(model, tokens, pixels, image_token)[-1]
        top2 = torch.topk(logits, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        tokens.append(int(logits.argmax()))
    return tokens[len(ids):], margin


def main() -> int:
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    tok = build_tokenizer()
    image_token = tok.convert_tokens_to_ids("<image_soft_token>")
    encoded = {name: tok(expand_images(text), add_special_tokens=False)["input_ids"]
               for name, text in PROMPTS.items()}
    EXPECTED.mkdir(parents=True, exist_ok=True)
    for name, img in make_images().items():
        img.save(EXPECTED / name, quality=95) if name.endswith(".jpg") else img.save(EXPECTED / name)
    # References describe the files as written (JPEG is lossy).
    images = {name: Image.open(EXPECTED / name) for name in IMAGES}
    processor = Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    pixels = {name: processor(images=img, return_tensors="pt")["pixel_values"] for name, img in images.items()}
    prompt_pixels = {name: torch.cat([pixels[i] for i in PROMPT_IMAGES[name]]) if name in PROMPT_IMAGES else None
                     for name in PROMPTS}
    for seed in range(200):
        model = build_model(tok, seed)
        try:
            runs = {name: greedy(model, ids, GREEDY_TOKENS, prompt_pixels[name], image_token)
                    for name, ids in encoded.items()}
        except ValueError:   # greedy output produced an image token, which HF refuses: next seed
            continue
        # At least 8 different tokens in each 20 and no token repeated 5 times in a row.
        varied = all(len(set(tokens)) >= 8 and not any(len(set(tokens[i:i + 5])) == 1 for i in range(16))
                     for tokens, _ in runs.values())
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
    expected["images"] = {}
    with torch.no_grad():
        for name, pv in pixels.items():
            vision = model.model.vision_tower(pixel_values=pv).last_hidden_state[0]
            projected = model.model.get_image_features(pv).pooler_output[0]
            stem = name.replace(".", "_")
            for kind, t in (("pixels", pv[0]), ("vision", vision), ("projected", projected)):
                np.ascontiguousarray(t.numpy(), dtype="<f4").tofile(EXPECTED / f"{stem}.{kind}.f32")
            expected["images"][name] = {"pixels_shape": list(pv[0].shape), "vision_shape": list(vision.shape),
                                        "projected_shape": list(projected.shape)}
        for name, ids in encoded.items():
            logits = forward(model, ids, prompt_pixels[name], image_token)
            np.ascontiguousarray(logits.numpy(), dtype="<f4").tofile(EXPECTED / f"{name}.logits.f32")
            tokens, m = runs[name]
            expected["prompts"][name] = {
                "text": PROMPTS[name], "ids": ids, "logits_file": f"{name}.logits.f32",
                "logits_shape": list(logits.shape), "greedy": tokens, "greedy_margin": m,
                "greedy_text": tok.decode(tokens, skip_special_tokens=True),
                "images": PROMPT_IMAGES.get(name, []),
            }
            print(f"{name}: {len(ids)} prompt tokens -> {tokens}")
    (EXPECTED / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    size = sum(f.stat().st_size for d in (MODEL_DIR, EXPECTED) for f in d.iterdir())
    print(f"fixtures: {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
