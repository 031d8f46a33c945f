#!/usr/bin/env python3
"""Write a random-weight llama.cpp `mmproj` GGUF with the exact vision part of Gemma 3 4B /
MedGemma 4B, for benchmarking image encoding against llama.cpp's `llama-mtmd-cli` at the scale
doctors run. Nothing it writes is committed: the file goes to .bench/ (git-ignored).

    python models/scripts/make_gemma3_bench_mmproj.py --out .bench/gemma3-4b/mmproj-4b-f16.gguf

Shape (Gemma 3 4B config.json, vision_config): SigLIP so400m, 27 layers, width 1152, MLP 4304,
16 heads, patch 14, image 896 (64x64 = 4096 patches), pooled 4x4 into 256 soft tokens and
projected to the language model's 2560.

Layout, types and metadata follow what llama.cpp's converter (`convert_hf_to_gguf.py --mmproj
--outtype f16`) writes for Gemma 3, as in the committed tiny fixture
models/fixtures/gemma3-mmproj/mmproj-gemma3-tiny-f16.gguf (made by make_gemma3_mmproj_fixture.py):
`v.blk.N.*` matrices f16, biases, norms, patch and position embeddings f32, the projector's
matrix f16 and its norm f32 (already 1 + w). The converter itself needs torch and a Hugging Face
checkpoint, 1.6 GB of f32 for this size; writing the same layout directly needs only numpy.
Matrices are N(0, 0.02) (Hugging Face's initializer range), norms ones, biases zeros: speed and
memory do not depend on the values.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if (ROOT / ".bench/llama.cpp/gguf-py").is_dir():
    sys.path.insert(0, str(ROOT / ".bench/llama.cpp/gguf-py"))
import gguf  # noqa: E402  (the vendored copy above, or an installed gguf package)

LAYERS, WIDTH, MLP, HEADS, PATCH, IMAGE = 27, 1152, 4304, 16, 14, 896


def tensor_plan(text_width: int) -> list[tuple[str, tuple[int, ...], type]]:
    """Name, numpy shape (rows first, as gguf-py takes them) and dtype of every tensor."""
    f16, f32 = np.float16, np.float32
    patches = (IMAGE // PATCH) ** 2
    plan = [
        ("mm.input_projection.weight", (WIDTH, text_width), f16),
        ("mm.soft_emb_norm.weight", (WIDTH,), f32),
        ("v.patch_embd.bias", (WIDTH,), f32),
        ("v.patch_embd.weight", (WIDTH, 3, PATCH, PATCH), f32),
        ("v.position_embd.weight", (patches, WIDTH), f32),
    ]
    for layer in range(LAYERS):
        block = f"v.blk.{layer}"
        for norm in ("ln1", "ln2"):
            plan += [(f"{block}.{norm}.bias", (WIDTH,), f32), (f"{block}.{norm}.weight", (WIDTH,), f32)]
        plan += [
            (f"{block}.ffn_up.bias", (MLP,), f32),
            (f"{block}.ffn_up.weight", (MLP, WIDTH), f16),
            (f"{block}.ffn_down.bias", (WIDTH,), f32),
            (f"{block}.ffn_down.weight", (WIDTH, MLP), f16),
        ]
        for part in ("attn_k", "attn_out", "attn_q", "attn_v"):
            plan += [(f"{block}.{part}.bias", (WIDTH,), f32), (f"{block}.{part}.weight", (WIDTH, WIDTH), f16)]
    plan += [("v.post_ln.bias", (WIDTH,), f32), ("v.post_ln.weight", (WIDTH,), f32)]
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--text-width", type=int, default=2560,
                        help="the language model's hidden size (4B: 2560, 27B: 5376)")
    args = parser.parse_args()

    writer = gguf.GGUFWriter(args.out, "clip")
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_name("gemma3-4b-shaped random bench vision tower")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_uint32("clip.vision.projection_dim", args.text_width)
    writer.add_uint32("clip.vision.image_size", IMAGE)
    writer.add_uint32("clip.vision.patch_size", PATCH)
    writer.add_uint32("clip.vision.embedding_length", WIDTH)
    writer.add_uint32("clip.vision.feed_forward_length", MLP)
    writer.add_uint32("clip.vision.block_count", LAYERS)
    writer.add_uint32("clip.vision.attention.head_count", HEADS)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_string("clip.projector_type", "gemma3")
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_bool("clip.use_gelu", True)
    # The converter writes clip.vision.projector.scale_factor only when the pooling is not 4.

    plan = tensor_plan(args.text_width)
    for name, dims, dtype in plan:
        size = int(np.prod(dims)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(name, dims, np.dtype(dtype), size)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for index, (name, dims, dtype) in enumerate(plan):
        if len(dims) == 1:
            value = 1.0 if name.endswith(("ln1.weight", "ln2.weight", "post_ln.weight", "norm.weight")) else 0.0
            data = np.full(dims, value, dtype=np.float32)
        else:
            data = (rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)).astype(dtype)
        writer.write_tensor_data(data)
        print(f"\r{index + 1}/{len(plan)} {name:<40}", end="", file=sys.stderr, flush=True)
    writer.close()
    print(f"\nwrote {args.out} ({args.out.stat().st_size / 1e6:.0f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
