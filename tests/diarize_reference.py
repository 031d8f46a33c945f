"""Reference for tests/it/diarize.rs: pyannote segmentation-3.0 over sliding windows, written
from pyannote's definitions with numpy and the onnxruntime Python package (setup's venv), so that
the Rust windowing, padding and powerset decoding are checked against an independent version.

Usage: python diarize_reference.py MODEL WAV  -> JSON {"windows": [[bits per frame], ...]}
       python diarize_reference.py --embed CAMPPLUS_ONNX WAV START END
           -> JSON {"fbank": [[80 values] per frame], "embedding": [192 values]} of samples
              START..END: kaldi-native-fbank's filter banks (sherpa-onnx's front end) and the
              CAM++ embedding of them minus their mean, as sherpa-onnx computes it.
"""

import itertools
import json
import sys
import wave

import numpy as np
import onnxruntime as ort

WINDOW = 10 * 16000
SHIFT = 16000


def powerset_bits(speakers=3, max_set=2):
    # pyannote.audio.utils.powerset: the empty set, then every set of 1..max_set speakers in
    # itertools.combinations order.
    bits = []
    for size in range(0, max_set + 1):
        for combo in itertools.combinations(range(speakers), size):
            bits.append(sum(1 << s for s in combo))
    return bits


def read_wav(path):
    with wave.open(path) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1 and w.getframerate() == 16000
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def kaldi_fbank(audio):
    """kaldi-native-fbank (sherpa-onnx's front end) with CAM++'s options."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, audio.tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]).astype(np.float32)


def embed(model, path, start, end):
    feat = kaldi_fbank(read_wav(path)[start:end])
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (emb,) = session.run(None, {"x": (feat - feat.mean(axis=0, keepdims=True))[None]})
    print(json.dumps({"fbank": feat.tolist(), "embedding": emb[0].tolist()}))


def main():
    if sys.argv[1] == "--embed":
        model, path, start, end = sys.argv[2:6]
        embed(model, path, int(start), int(end))
        return
    model, path = sys.argv[1:3]
    audio = read_wav(path)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    n = len(audio)
    if n <= WINDOW:
        starts = [0]
    else:
        starts = list(range(0, n - WINDOW + 1, SHIFT))
        if (n - WINDOW) % SHIFT:
            starts.append(starts[-1] + SHIFT)
    mapping = powerset_bits()
    windows = []
    for start in starts:
        chunk = np.zeros(WINDOW, dtype=np.float32)
        piece = audio[start:start + WINDOW]
        chunk[: len(piece)] = piece
        (out,) = session.run(None, {"input": chunk[None, None, :]})
        windows.append([mapping[c] for c in out[0].argmax(axis=-1).tolist()])
    print(json.dumps({"windows": windows}))


if __name__ == "__main__":
    main()
