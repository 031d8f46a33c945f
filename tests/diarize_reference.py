"""Reference for tests/it/diarize.rs: pyannote segmentation-3.0 over sliding windows, written
from pyannote's definitions with numpy and the onnxruntime Python package (setup's venv), so that
the Rust windowing, padding and powerset decoding are checked against an independent version.

Usage: python diarize_reference.py MODEL WAV  -> JSON {"windows": [[bits per frame], ...]}
       python diarize_reference.py --embed EMBEDDER WAV START END
           -> JSON {"log_mel": [[40 values] per frame], "embedding": [256 values]} of samples
              START..END, the VoiceFilter d-vector as its wheel computes it with librosa
              (librosa's mel filters and STFT written out here with numpy, so that the venv
              needs no librosa; checked against librosa 0.11.0 when this was written).
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


def slaney_mel_basis(sr=16000, n_fft=512, n_mels=40):
    # librosa.filters.mel(htk=False, norm="slaney"), float64 then float32 as librosa stores it.
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asanyarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def dvector_log_mel(audio):
    n_fft, hop, win = 512, 160, 400
    n = np.arange(win)
    window = np.zeros(n_fft, dtype=np.float32)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = 0.54 - 0.46 * np.cos(2 * np.pi * n / win)
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    frames = 1 + (len(audio) - n_fft) // hop
    stacked = np.stack([audio[t * hop : t * hop + n_fft] * window for t in range(frames)])
    power = np.abs(np.fft.rfft(stacked, axis=-1)) ** 2
    return np.log10(power @ slaney_mel_basis().T.astype(np.float64) + 1e-10).astype(np.float32)


def embed(model, path, start, end):
    feat = dvector_log_mel(read_wav(path)[start:end])
    if feat.shape[0] < 80:
        feat = np.concatenate([feat, np.zeros((80 - feat.shape[0], 40), dtype=np.float32)])
    windows = np.stack([feat[s : s + 80] for s in range(0, feat.shape[0] - 80 + 1, 40)])
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (emb,) = session.run(None, {"mel_window": windows.astype(np.float32)})
    emb = emb / (np.linalg.norm(emb, axis=-1, keepdims=True) + 1e-12)
    mean = emb.mean(axis=0)
    mean = mean / (np.linalg.norm(mean) + 1e-12)
    print(json.dumps({"log_mel": feat.tolist(), "embedding": mean.tolist()}))


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
