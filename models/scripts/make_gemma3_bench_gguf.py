#!/usr/bin/env python3
"""Write a random-weight GGUF with the exact Gemma 3 4B (MedGemma 4B) or 27B text architecture, for
benchmarking the letter engine against llama.cpp at the scale doctors run. Nothing it writes is
committed: the files go to .bench/ (git-ignored).

    python models/scripts/make_gemma3_bench_gguf.py --shape 4b --out .bench/gemma3-4b-f16.gguf

Shapes (Gemma 3 4B / 27B config.json):
  4b:  34 layers, hidden 2560, 8 query / 4 key-value heads, head_dim 256, intermediate 10240
  27b: 62 layers, hidden 5376, 32 / 16 heads, head_dim 128, intermediate 21504
both with a 1024-token sliding window, every 6th layer global, RoPE bases 10k (local) and 1M
(global, linear scaling 8), vocabulary 262144, tied output head.

Metadata and tensor names are llama.cpp's (`gemma3.*`, `blk.N.attn_q.weight`, ...), written with
the gguf-py package vendored in the same llama.cpp sources as the bench build; the tokenizer
(`tokenizer.ggml.*`) is copied from the default 270M GGUF, which has the same Gemma 3 vocabulary.
Matrices are f16 from N(0, 0.02), written one tensor at a time so a 27B file never sits in memory;
norm gains are f32 ones (llama.cpp stores 1 + w, and w = 0). Quantize the result with the bench build's
`llama-quantize FILE OUT Q4_K_M` (scripts/bench-gemma3-vs-llamacpp.sh --model 4b does all this).

`--random-q4-k-m` skips the f16 file and llama-quantize where no llama.cpp build is at hand (a GPU
machine that reaches no registry): it writes random blocks straight in llama.cpp's Q4_K_M mix
(Q6_K for token_embd and for attn_v / ffn_down of the layers llama.cpp gives more bits, Q4_K for
the rest), with block scales chosen so the weights stay within about +-0.25. Speed and memory do
not depend on the values. `--tokenizer-from` may then be a tokenizer.json: only its pieces are
written (tokenizer.ggml.tokens), so the loader needs that tokenizer.json beside the GGUF.
The vendored gguf-py is used where present, else an installed `gguf` package.
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

SHAPES = {
    "4b": dict(layers=34, hidden=2560, heads=8, kv_heads=4, head_dim=256, intermediate=10240),
    "27b": dict(layers=62, hidden=5376, heads=32, kv_heads=16, head_dim=128, intermediate=21504),
}
VOCAB = 262144
SLIDING_WINDOW = 1024
GLOBAL_EVERY = 6


def tensor_plan(shape: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor's llama.cpp name and numpy shape ([out, in] for matrices), in file order."""
    h, hd = shape["hidden"], shape["head_dim"]
    q, kv, ff = shape["heads"] * hd, shape["kv_heads"] * hd, shape["intermediate"]
    plan: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (VOCAB, h))]
    for i in range(shape["layers"]):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (h,)),
            (b + "attn_q.weight", (q, h)),
            (b + "attn_k.weight", (kv, h)),
            (b + "attn_v.weight", (kv, h)),
            (b + "attn_q_norm.weight", (hd,)),
            (b + "attn_k_norm.weight", (hd,)),
            (b + "attn_output.weight", (h, q)),
            (b + "post_attention_norm.weight", (h,)),
            (b + "ffn_norm.weight", (h,)),
            (b + "ffn_gate.weight", (ff, h)),
            (b + "ffn_up.weight", (ff, h)),
            (b + "ffn_down.weight", (h, ff)),
            (b + "post_ffw_norm.weight", (h,)),
        ]
    plan.append(("output_norm.weight", (h,)))
    return plan


def copy_tokenizer(writer: gguf.GGUFWriter, source: Path) -> None:
    if source.suffix == ".json":
        import json
        model = json.loads(source.read_text())
        pieces = {**model["model"]["vocab"], **{t["content"]: t["id"] for t in model["added_tokens"]}}
        tokens = [""] * len(pieces)
        for piece, index in pieces.items():
            tokens[index] = piece
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        return
    reader = gguf.GGUFReader(source)
    copied = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type)
        copied += 1
    if copied == 0:
        raise SystemExit(f"{source}: no tokenizer.* metadata to copy")


# Bytes of one 256-value block.
Q4_K_BLOCK, Q6_K_BLOCK = 144, 210


def q4_k_m_type(name: str, layers: int) -> "gguf.GGMLQuantizationType":
    """llama.cpp's Q4_K_M choice (llama-quant.cpp, use_more_bits): Q6_K for the embedding and for
    attn_v / ffn_down in the first and last eighth of the layers and every third layer between."""
    Q = gguf.GGMLQuantizationType
    if name == "token_embd.weight":
        return Q.Q6_K
    if name.endswith(("attn_v.weight", "ffn_down.weight")):
        i = int(name.split(".")[1])
        if i < layers // 8 or i >= 7 * layers // 8 or (i - layers // 8) % 3 == 2:
            return Q.Q6_K
    return Q.Q4_K


def random_blocks(rng: np.random.Generator, rows: int, cols: int, kind) -> np.ndarray:
    """`rows` rows of random Q4_K or Q6_K blocks, as bytes, with small super-block scales."""
    Q = gguf.GGMLQuantizationType
    size = Q4_K_BLOCK if kind == Q.Q4_K else Q6_K_BLOCK
    blocks = rng.integers(0, 256, (rows, cols // 256, size), dtype=np.uint8)
    if kind == Q.Q4_K:  # d, dmin (f16) then 12 scale bytes and 128 nibble bytes
        blocks[..., 0:4] = np.array([1 / 4096, 1 / 4096], dtype=np.float16).view(np.uint8)
    else:  # 128 + 64 quant bytes, 16 int8 scales, then d (f16)
        blocks[..., 208:210] = np.array([1 / 65536], dtype=np.float16).view(np.uint8)
    return blocks.reshape(rows, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="4b")
    parser.add_argument("--tokenizer-from", type=Path, required=True,
                        help="a Gemma 3 GGUF whose tokenizer.* metadata is copied (the default 270M)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--random-q4-k-m", action="store_true",
                        help="write random Q4_K_M blocks directly (no f16 file, no llama-quantize)")
    args = parser.parse_args()
    shape = SHAPES[args.shape]

    writer = gguf.GGUFWriter(args.out, "gemma3")
    writer.add_name(f"gemma3-{args.shape}-shaped random bench model")
    writer.add_context_length(131072)
    writer.add_embedding_length(shape["hidden"])
    writer.add_block_count(shape["layers"])
    writer.add_feed_forward_length(shape["intermediate"])
    writer.add_head_count(shape["heads"])
    writer.add_head_count_kv(shape["kv_heads"])
    writer.add_key_length(shape["head_dim"])
    writer.add_value_length(shape["head_dim"])
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(8.0)
    writer.add_sliding_window(SLIDING_WINDOW)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M if args.random_q4_k_m
                         else gguf.LlamaFileType.MOSTLY_F16)
    copy_tokenizer(writer, args.tokenizer_from)

    plan = tensor_plan(shape)
    for name, dims in plan:
        if args.random_q4_k_m and len(dims) == 2:
            kind = q4_k_m_type(name, shape["layers"])
            size = Q4_K_BLOCK if kind == gguf.GGMLQuantizationType.Q4_K else Q6_K_BLOCK
            byte_shape = (dims[0], dims[1] // 256 * size)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8),
                                   byte_shape[0] * byte_shape[1], raw_dtype=kind)
            continue
        dtype = np.dtype(np.float32 if len(dims) == 1 else np.float16)
        writer.add_tensor_info(name, dims, dtype, int(np.prod(dims)) * dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    total = sum(int(np.prod(d)) for _, d in plan)
    done = 0
    for name, dims in plan:
        if len(dims) == 1:
            # Norms stay f32, as llama.cpp's converter writes them (its CPU kernels need that).
            data = np.ones(dims, dtype=np.float32)
        elif args.random_q4_k_m:
            kind = q4_k_m_type(name, shape["layers"])
            data = random_blocks(rng, dims[0], dims[1], kind)
        else:
            # Row blocks keep the float32 temporaries small for the 262144-row table.
            data = np.empty(dims, dtype=np.float16)
            step = max(1, (1 << 24) // dims[1])
            for start in range(0, dims[0], step):
                rows = min(step, dims[0] - start)
                block = rng.standard_normal((rows, dims[1]), dtype=np.float32) * np.float32(0.02)
                data[start:start + rows] = block.astype(np.float16)
        writer.write_tensor_data(data)
        done += int(np.prod(dims))
        print(f"\r{done / total:6.1%} {name:<40}", end="", file=sys.stderr, flush=True)
    writer.close()
    print(f"\nwrote {args.out} ({total / 1e9:.2f} B parameters)", file=sys.stderr)


if __name__ == "__main__":
    main()
