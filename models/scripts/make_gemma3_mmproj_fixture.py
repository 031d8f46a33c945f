#!/usr/bin/env python3
"""Convert the tiny Gemma 3 fixture's vision tower and projector to a llama.cpp `mmproj` GGUF with
llama.cpp's own converter, the way public MedGemma GGUF releases ship their vision part.

The converter (convert_hf_to_gguf.py --mmproj) comes from the llama.cpp sources vendored in the
PyPI sdist of llama-cpp-python (the same copy scripts/bench-gemma3-vs-llamacpp.sh builds), so the
file is an independent reference for how such files are laid out: tensor names, shapes, which
norm already holds 1 + w, which weights are f16. Our loader is tested on it against the HF outputs
in gemma3-expected/ (tests/parity_gemma3.rs).

    .venv-dev/bin/python models/scripts/make_gemma3_mmproj_fixture.py   (scripts/dev-venv.sh)

Two adaptations, neither touching a value: transformers 5 names the tower `vision_tower.*`, while
the converter (like the released MedGemma checkpoints) expects `vision_tower.vision_model.*`; and
the tiny fixture has no preprocessor_config.json, so Gemma3ImageProcessor's defaults are written.
Writes models/fixtures/gemma3-mmproj/mmproj-gemma3-tiny-f16.gguf.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "models/fixtures/gemma3-tiny"
OUT = ROOT / "models/fixtures/gemma3-mmproj/mmproj-gemma3-tiny-f16.gguf"
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
BENCH = ROOT / ".bench"


def converter() -> Path:
    """convert_hf_to_gguf.py from the llama-cpp-python sdist, fetched from PyPI once."""
    script = BENCH / "llama.cpp/convert_hf_to_gguf.py"
    if script.exists():
        return script
    BENCH.mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
         LLAMA_CPP_PYTHON, "-d", str(BENCH)],
        check=True,
    )
    sdist = next(BENCH.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(BENCH, filter="data")
    vendored = next(BENCH.glob("llama_cpp_python-*/vendor/llama.cpp"))
    shutil.rmtree(BENCH / "llama.cpp", ignore_errors=True)
    vendored.rename(BENCH / "llama.cpp")
    return script


def main() -> None:
    config = json.loads((TINY / "config.json").read_text())
    vision = config["vision_config"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(TINY / name, tmp / name)
        tensors = {}
        for name, tensor in load_file(TINY / "model.safetensors").items():
            if name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model."):
                name = "vision_tower.vision_model." + name[len("vision_tower."):]
            tensors[name] = tensor.contiguous()
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "Gemma3ImageProcessor",
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "image_seq_length": config["mm_tokens_per_image"],
            "size": {"height": vision["image_size"], "width": vision["image_size"]},
            "do_normalize": True,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "resample": 2,
        }))
        OUT.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(converter()), str(tmp), "--mmproj", "--outtype", "f16",
             "--outfile", str(OUT)],
            check=True,
        )
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
