#!/usr/bin/env python3
"""Reference Moonshine base-en transcription with Python onnxruntime, for checking and timing
medscribe's Rust implementation on the same model files and audio (shared/specs/default-models.md).

    .venv/bin/python scripts/moonshine_reference.py [--threads 1] [--model DIR] FILE.wav...

Prints one line per file: `<seconds of compute>\t<text>`. Only 16 kHz mono 16-bit WAV input.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort

START, END = 1, 2
PAD_S = 0.25
TOKENS_PER_SECOND = 6.5


def data_dir() -> Path:
    if os.environ.get("MEDSCRIBE_HOME"):
        return Path(os.environ["MEDSCRIBE_HOME"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "medscribe"


def load_tokens(path: Path) -> list[bytes]:
    raw, pieces, i = path.read_bytes(), [], 0
    while i < len(raw):
        n = raw[i]
        pieces.append(raw[i + 1:i + 1 + n])
        i += 1 + n
    return pieces


def detokenize(pieces: list[bytes], ids: list[int]) -> str:
    out = bytearray()
    for t in ids:
        if t < 3 or t >= len(pieces):
            continue
        out += bytes([t - 3]) if t < 259 else pieces[t]
    return out.decode("utf-8", errors="replace").replace("\u2581", " ").strip()


def read_wav(path: str) -> np.ndarray:
    with wave.open(path) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", type=Path, default=data_dir() / "models" / "moonshine-base-en")
    ap.add_argument("--prepared", action="store_true",
                    help="use the .onnx graphs setup prepared (weights unpacked) instead of the shipped .ort")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    suffix = ".onnx" if args.prepared else ".ort"
    encoder = ort.InferenceSession(str(args.model / f"encoder_model{suffix}"), opts, providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(args.model / f"decoder_model_merged{suffix}"), opts, providers=["CPUExecutionProvider"])
    pieces = load_tokens(args.model / "tokenizer.bin")
    past_names = [i.name for i in decoder.get_inputs() if i.name.startswith("past_key_values.")]
    for path in args.files:
        audio = read_wav(path)
        pad = np.zeros(int(PAD_S * 16000), dtype=np.float32)
        audio = np.concatenate([pad, audio, pad])[None, :]
        start = time.perf_counter()
        hidden = encoder.run(None, {"input_values": audio})[0]
        cap = int(audio.shape[1] / 16000 * TOKENS_PER_SECOND) + 10
        past = {n: np.zeros((1, 8, 0, 52), dtype=np.float32) for n in past_names}
        tokens, ids = [START], []
        for step in range(cap):
            feed = {"input_ids": np.array([tokens[-1:]] if step else [tokens], dtype=np.int64),
                    "encoder_hidden_states": hidden, "use_cache_branch": np.array([step > 0])}
            feed.update(past)
            outs = decoder.run(None, feed)
            next_id = int(outs[0][0, -1].argmax())
            for name, value in zip([o.name for o in decoder.get_outputs()][1:], outs[1:]):
                key = name.replace("present.", "past_key_values.")
                if step == 0 or ".decoder." in key:
                    past[key] = value
            if next_id == END:
                break
            tokens.append(next_id)
            ids.append(next_id)
        print(f"{time.perf_counter() - start:.4f}\t{detokenize(pieces, ids)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
