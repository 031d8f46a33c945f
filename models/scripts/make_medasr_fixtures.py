#!/usr/bin/env python3
"""Build the MedASR parity fixtures: a tiny random LasrForCTC, its tokenizer, both ONNX export
signatures, a few espeak-ng dictations and the Hugging Face reference outputs for them.

The Rust implementation (asr crate) is tested against these files; they are the proof that our
front end, ONNX session handling, CTC decoding and long-audio chunking compute what transformers
computes for google/medasr (see shared/specs/medasr.md). Weights here are random: the decoded
texts are noise by design, only the equality with the reference matters.

Needs: transformers >= 5.0, torch, onnx, onnxruntime, soundfile, espeak-ng and sox on PATH.
    scripts/dev-venv.sh            # creates .venv-dev with those packages
    .venv-dev/bin/python models/scripts/make_medasr_fixtures.py
Output goes to models/fixtures/ (well under 5 MB); CI never runs this script.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import soundfile as sf
import torch
import transformers
from transformers import LasrCTCConfig, LasrFeatureExtractor, LasrForCTC, LasrTokenizer, pipeline

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "models" / "fixtures"
AUDIO = FIXTURES / "audio"
HF_DIR = FIXTURES / "medasr-tiny-hf"
SHERPA_DIR = FIXTURES / "medasr-tiny-sherpa"
SHERPA_INT8_DIR = FIXTURES / "medasr-tiny-sherpa-int8"
EXPECTED = FIXTURES / "medasr-expected"
SEED = 1234

# Dictation sentences in the style MedASR is trained on: spoken punctuation and section commands.
DICTATIONS = {
    "dictation-short": (
        "en-us",
        160,
        "Findings colon the lungs are clear period no pleural effusion period",
    ),
    "dictation-medium": (
        "en-gb",
        175,
        "Patient is a fifty four year old man comma seen today for chest pain period "
        "new paragraph impression colon stable angina period",
    ),
}
LONG_TEXT = (
    "Discharge summary period new paragraph the patient was admitted with community acquired "
    "pneumonia comma treated with intravenous antibiotics for three days period "
    "she improved steadily and was switched to oral amoxicillin five hundred milligrams three times daily period "
    "new paragraph findings colon chest x ray shows resolving consolidation in the right lower lobe period "
    "no pleural effusion period heart size normal period "
    "impression colon resolving right lower lobe pneumonia period "
    "plan colon complete seven days of antibiotics comma review in clinic in six weeks with a repeat chest x ray period"
)

# Tokenizer with MedASR's id layout (shared/specs/medasr.md): 0 <epsilon> (blank and pad), 1 <s>,
# 2 </s>, 3 <unk>, then pieces, then <pad>, then <extra_id_N>. The CTC head covers ids < VOCAB.
PIECES = [
    "▁", "▁the", "▁patient", "▁no", "▁lungs", "▁clear", "▁pain", "▁chest", "s", "ed", "ing",
    "a", "e", "o", "▁{period}", "▁{comma}", "▁{colon}", "▁{new", "▁paragraph}", "▁[FINDINGS]",
    "▁[IMPRESSION]", "▁50", "▁mg", "▁of", "▁and", "▁with", "{", "}", "▁x", "▁ray",
    "▁acute", "▁effusion", "▁normal", "▁{next", "▁line}", "'s",
]
SPECIAL = ["<epsilon>", "<s>", "</s>", "<unk>"]
VOCAB = len(SPECIAL) + len(PIECES)  # 40 CTC outputs
EXTRA_IDS = 4


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


def synthesize(name: str, voice: str, speed: int, text: str) -> Path:
    """espeak-ng speaks at 22.05 kHz; sox converts to 16 kHz mono int16 with 0.3 s of leading silence."""
    AUDIO.mkdir(parents=True, exist_ok=True)
    out = AUDIO / f"{name}.wav"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text])
        run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer",
             str(out), "pad", "0.3", "0.3"])
    return out


def build_tokenizer() -> LasrTokenizer:
    vocab = [(tok, 0.0) for tok in SPECIAL]
    rng = np.random.default_rng(SEED)
    vocab += [(p, float(-2.0 - rng.random() * 5)) for p in PIECES]
    vocab += [("<pad>", 0.0)] + [(f"<extra_id_{i}>", 0.0) for i in range(EXTRA_IDS)]
    tok = LasrTokenizer(vocab=vocab, pad_token="<epsilon>", extra_ids=EXTRA_IDS,
                        additional_special_tokens=[f"<extra_id_{i}>" for i in range(EXTRA_IDS)])
    assert tok.pad_token_id == 0 and tok.eos_token_id == 2 and tok.unk_token_id == 3
    return tok


def build_model() -> LasrForCTC:
    torch.manual_seed(SEED)
    config = LasrCTCConfig(
        vocab_size=VOCAB,
        pad_token_id=0,
        encoder_config=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            conv_kernel_size=8, subsampling_conv_channels=32, num_mel_bins=128,
            dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, layerdrop=0.0,
        ),
    )
    model = LasrForCTC(config).eval()
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or name.endswith("weight")):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p.shape[-1]) ** 0.5))
        # BatchNorm running statistics start at 0/1: re-randomise them so the folding is exercised.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
        # Bias the CTC head so that blank wins about half of the frames: decodes are then
        # non-trivial (neither all blank nor one token per frame).
        head_bias = [p for n, p in model.named_parameters() if n.startswith("ctc_head") and n.endswith("bias")]
        if head_bias:
            head_bias[0][0] += 1.5
    return model


class HfSignature(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_features, attention_mask):
        return self.model(input_features=input_features, attention_mask=attention_mask).logits


class SherpaSignature(torch.nn.Module):
    """Same graph with sherpa-onnx's names: x, mask -> logits, logits_len."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, mask):
        logits = self.model(input_features=x, attention_mask=mask).logits
        lens = mask.sum(-1)
        # Subsampling: two conv1d k5 s2 without padding (shared/specs/medasr.md).
        lens = torch.div(lens - 5, 2, rounding_mode="floor") + 1
        lens = torch.div(lens - 5, 2, rounding_mode="floor") + 1
        return logits, lens.to(torch.int64)


def export(module, path: Path, names_in, names_out, dummy) -> None:
    dyn = {names_in[0]: {0: "batch", 1: "frames"}, names_in[1]: {0: "batch", 1: "frames"},
           names_out[0]: {0: "batch", 1: "logit_frames"}}
    if len(names_out) > 1:
        dyn[names_out[1]] = {0: "batch"}
    torch.onnx.export(module, dummy, str(path), input_names=names_in, output_names=names_out,
                      dynamic_axes=dyn, opset_version=17, dynamo=False)


def write_f32(path: Path, array: np.ndarray) -> None:
    np.ascontiguousarray(array, dtype="<f4").tofile(path)


def write_unexpected_inputs_model() -> None:
    """A valid ONNX graph whose inputs match neither export signature (for the error test)."""
    from onnx import TensorProto, helper
    bad = FIXTURES / "bad-unexpected-inputs"
    bad.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["audio"], ["logits"])], "unexpected",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "samples"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime >= 1.14 reads
    onnx.save(model, str(bad / "model.onnx"))
    (bad / "tokens.txt").write_text((SHERPA_DIR / "tokens.txt").read_text())


def main() -> int:
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, onnxruntime {ort.__version__}")
    for d in (HF_DIR, SHERPA_DIR, SHERPA_INT8_DIR, EXPECTED):
        d.mkdir(parents=True, exist_ok=True)

    wavs = {name: synthesize(name, *spec) for name, spec in DICTATIONS.items()}
    wavs["dictation-long"] = synthesize("dictation-long", "en-us", 150, LONG_TEXT)

    tok = build_tokenizer()
    fe = LasrFeatureExtractor()
    model = build_model()
    model.save_pretrained(HF_DIR)  # config.json (+ weights, removed below: ONNX is what we ship)
    for f in HF_DIR.glob("*.safetensors"):
        f.unlink()
    tok.save_pretrained(HF_DIR)
    fe.save_pretrained(HF_DIR)

    dummy = (torch.randn(1, 200, 128), torch.ones(1, 200, dtype=torch.int64))
    # The wrappers must be in eval mode: torch.onnx.export restores the wrapper's mode afterwards,
    # and a fresh nn.Module is in training mode, which would switch BatchNorm to batch statistics
    # for every reference computed below.
    export(HfSignature(model).eval(), HF_DIR / "model.onnx", ["input_features", "attention_mask"], ["logits"], dummy)
    sherpa_path = SHERPA_DIR / "model.onnx"
    export(SherpaSignature(model).eval(), sherpa_path, ["x", "mask"], ["logits", "logits_len"], dummy)
    m = onnx.load(str(sherpa_path))
    for key, value in {"model_type": "medasr_ctc", "vocab_size": str(VOCAB)}.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(m, str(sherpa_path))
    vocab_lines = []
    for i in range(VOCAB):
        piece = tok.convert_ids_to_tokens(i)
        vocab_lines.append(f"{'<blk>' if i == 0 else piece} {i}")
    (SHERPA_DIR / "tokens.txt").write_text("\n".join(vocab_lines) + "\n")
    # int8 as sherpa-onnx does it: QUInt8 dynamic quantisation (QInt8 gave wrong results there).
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(sherpa_path), str(SHERPA_INT8_DIR / "model.int8.onnx"), weight_type=QuantType.QUInt8)
    (SHERPA_INT8_DIR / "tokens.txt").write_text((SHERPA_DIR / "tokens.txt").read_text())
    write_unexpected_inputs_model()

    model.eval()
    assert not any(module.training for module in model.modules())

    # Reference outputs.
    captured: list[np.ndarray] = []
    original_decode = tok.decode

    def capturing_decode(ids, *args, **kwargs):
        captured.append(np.asarray(ids).copy())
        return original_decode(ids, *args, **kwargs)

    asr = pipeline("automatic-speech-recognition", model=model, tokenizer=tok, feature_extractor=fe,
                   device="cpu")
    tok.decode = capturing_decode
    int8 = ort.InferenceSession(str(SHERPA_INT8_DIR / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    expected = {"transformers": transformers.__version__, "torch": torch.__version__, "files": {}}
    low_margin_frames = 0
    total_frames = 0
    for name, path in wavs.items():
        audio, sr = sf.read(path, dtype="float32")  # int16 / 32768, as HF's pipeline does
        assert sr == 16000 and audio.ndim == 1
        feats = fe(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
        features = feats["input_features"]
        with torch.no_grad():
            logits = model(input_features=features, attention_mask=feats["attention_mask"].long()).logits[0]
        top2 = torch.topk(logits, 2, dim=-1).values
        low_margin_frames += int(((top2[:, 0] - top2[:, 1]) < 1e-3).sum())
        total_frames += logits.shape[0]
        ids = logits.argmax(-1).numpy().astype(np.int64)
        entry = {
            "wav": f"audio/{path.name}",
            "samples": int(audio.shape[0]),
            "feature_frames": int(features.shape[1]),
            "features_file": None,
            "logit_frames": int(logits.shape[0]),
            "frame_ids": ids.tolist(),
            "text": original_decode(ids.tolist(), skip_special_tokens=True),
        }
        if name == "dictation-short":  # one file of features keeps the fixtures small
            write_f32(EXPECTED / f"{name}.features.f32", features[0].numpy())
            entry["features_file"] = f"{name}.features.f32"
        if name != "dictation-long":
            out = int8.run(None, {"x": features.numpy(), "mask": np.ones(features.shape[:2], dtype=np.int64)})
            entry["int8_frame_ids"] = out[0][0].argmax(-1).astype(np.int64).tolist()
            entry["int8_text"] = original_decode(entry["int8_frame_ids"], skip_special_tokens=True)
        # HF pipeline with MedASR's long-audio settings: 20 s chunks, 2 s stride each side.
        captured.clear()
        result = asr(audio.copy(), chunk_length_s=20, stride_length_s=2)
        pipeline_ids = captured[-1].astype(np.int64).tolist()
        entry["pipeline_ids"] = pipeline_ids
        entry["pipeline_text_raw"] = result["text"]  # skip_special_tokens=False, as the pipeline does for ctc
        entry["pipeline_text"] = original_decode(pipeline_ids, skip_special_tokens=True)
        expected["files"][name] = entry
        print(f"{name}: {audio.shape[0] / 16000:.1f} s, {logits.shape[0]} logit frames, "
              f"text {entry['pipeline_text'][:70]!r}")
    expected["low_margin_frames"] = low_margin_frames
    expected["total_frames"] = total_frames
    (EXPECTED / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"frames with top-1/top-2 logit margin < 1e-3: {low_margin_frames} of {total_frames}")
    size = sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file())
    print(f"fixtures: {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
