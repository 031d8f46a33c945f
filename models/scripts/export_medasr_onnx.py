#!/usr/bin/env python3
"""Export Google MedASR to an ONNX model directory that `medscribe transcribe --model DIR` reads.

For users who have accepted the Health AI Developer Foundations terms for google/medasr on
Hugging Face (the weights are gated; medscribe never ships them). On a machine with internet:

    python3 -m venv medasr-export && . medasr-export/bin/activate
    pip install "transformers>=5.0.0" torch onnx onnxruntime onnxscript sentencepiece
    huggingface-cli login            # a token of the account that accepted the terms
    python3 export_medasr_onnx.py --out ~/medasr-onnx [--int8]

Then copy the output directory to the medscribe machine. The export follows
shared/specs/medasr.md: torch.onnx.export (opset 17, dynamic batch and frames, dynamo=False) of a
wrapper returning `.logits`, Hugging Face input names; the fp32 file is about 421 MB. `--source`
also takes a local directory holding a saved LasrForCTC (how this script is tested).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer, LasrForCTC


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_features, attention_mask):
        return self.model(input_features=input_features, attention_mask=attention_mask).logits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="google/medasr", help="Hugging Face repo id or local directory")
    parser.add_argument("--out", required=True, type=Path, help="output model directory")
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic QUInt8)")
    args = parser.parse_args()

    model = LasrForCTC.from_pretrained(args.source, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.source)
    feature_extractor = AutoFeatureExtractor.from_pretrained(args.source)
    args.out.mkdir(parents=True, exist_ok=True)

    # eval() on the wrapper too: export restores the wrapper's mode afterwards, and a fresh
    # module is in training mode (BatchNorm would switch to batch statistics).
    wrapper = Logits(model).eval()
    dummy = (torch.randn(1, 400, feature_extractor.feature_size), torch.ones(1, 400, dtype=torch.int64))
    onnx_path = args.out / "model.onnx"
    torch.onnx.export(
        wrapper, dummy, str(onnx_path), input_names=["input_features", "attention_mask"],
        output_names=["logits"], opset_version=17, dynamo=False,
        dynamic_axes={"input_features": {0: "batch", 1: "frames"},
                      "attention_mask": {0: "batch", 1: "frames"},
                      "logits": {0: "batch", 1: "logit_frames"}},
    )
    model.config.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    feature_extractor.save_pretrained(args.out)

    # Check the export against PyTorch on random features of another length.
    import onnxruntime as ort
    features = torch.randn(1, 733, feature_extractor.feature_size)
    mask = torch.ones(1, 733, dtype=torch.int64)
    with torch.no_grad():
        expected = wrapper(features, mask).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_features": features.numpy(), "attention_mask": mask.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    same_argmax = bool((got.argmax(-1) == expected.argmax(-1)).all())
    print(f"ONNX Runtime vs PyTorch: max abs diff {diff:.2e}, identical argmax: {same_argmax}")
    if not same_argmax:
        print("error: the export does not reproduce PyTorch", file=sys.stderr)
        return 1

    if args.int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        int8_dir = args.out.with_name(args.out.name + "-int8")
        int8_dir.mkdir(exist_ok=True)
        # QUInt8, as sherpa-onnx found (QInt8 gave wrong results for this model).
        quantize_dynamic(str(onnx_path), str(int8_dir / "model.int8.onnx"), weight_type=QuantType.QUInt8)
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
            if (args.out / name).exists():
                shutil.copy(args.out / name, int8_dir / name)
        print(f"wrote {int8_dir}")
    print(f"wrote {args.out}; use: medscribe transcribe --model {args.out} FILE.wav")
    return 0


if __name__ == "__main__":
    sys.exit(main())
