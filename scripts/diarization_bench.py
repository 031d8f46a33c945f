#!/usr/bin/env python3
"""Speaker diarization measured against sherpa-onnx on the same audio and the same models.

Builds conversations of 2, 3 and 4 speakers with pauses and some overlap, then runs, one thread
each, `medscribe speakers --json` and sherpa-onnx's OfflineSpeakerDiarization (pyannote
segmentation-3.0 + the same CAM++ ONNX file) told the number of speakers and on their own, and
prints the diarization error rate (collar 0.25 s, overlap scored) and the real-time factor
(diarization alone; model loading excluded for both).

Voices (say which in any figure you quote):
  kal, ked   Festival's American English diphone voices (two men), Debian festvox-kallpc16k,
             festvox-kdlpc16k;
  slt        Festival's HTS voice trained on CMU ARCTIC's SLT (a woman), festvox-us-slt-hts;
  reader     a real person: the LibriVox reader of "Sense and Sensibility" in Debian's
             pocketsphinx-testdata (public-domain recording, BSD-2 package), five sentences.
Also a real conversation, held out like the case conference: the 30 s telephone call of two
women ("Diane in New Jersey", "Sheila in Texas") with its reference turns (RTTM) that ships in
the PyPI wheel pyannote.audio 4.0.7 (`pyannote/audio/sample/`, in an MIT-licensed package with
no separate notice for the recording; its source corpus is not stated, so it is fetched here,
never committed).
Lines are scripted here and differ from samples/case-conference.txt, which stays a held-out test.

Run by scripts/diarization-bench.sh (it makes the venv and fetches the recordings):
    diarization_bench.py MEDSCRIBE_BINARY MODELS_DIR WORK_DIR READER_DIR [--threshold D ...]
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

RATE = 16_000
VOICES = {
    "kal": "voice_kal_diphone",
    "ked": "voice_ked_diphone",
    "slt": "voice_cmu_us_slt_arctic_hts",
}
LINES = [
    "Good morning, what brings you in today?",
    "I have had a cough for about three weeks now, and it is not getting better.",
    "Is it a dry cough, or are you bringing anything up?",
    "Mostly dry, but in the mornings there is some clear phlegm.",
    "Any fever, night sweats, or weight loss?",
    "No fever, but I have been more tired than usual.",
    "Do you smoke, or have you ever smoked?",
    "I stopped ten years ago, after about twenty years.",
    "I would like to listen to your chest and arrange a chest x ray.",
    "The x ray from last week shows a small patch in the right lower lobe.",
    "Could that be an infection that has not cleared?",
    "It could. I would repeat the film in six weeks after a course of antibiotics.",
    "If it persists, we should get a CT of the chest.",
    "Her oxygen saturation was ninety four percent on room air.",
    "Let us keep the inhaler going and review in clinic.",
    "I agree with the plan, and I will write to the general practitioner.",
]
# Conversations: voices in order of first turn, and who says each line (indices into voices).
CONVERSATIONS = {
    "2-speakers-woman-man": (["slt", "kal"], [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]),
    "2-speakers-two-men": (["kal", "ked"], [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]),
    "3-speakers": (["ked", "slt", "kal"], [0, 1, 2, 0, 2, 1, 0, 1, 2, 1, 0, 2, 1]),
    "4-speakers": (["slt", "reader", "kal", "ked"], [0, 1, 2, 3, 0, 2, 1, 3, 0, 3, 2, 1, 0, 2, 3]),
}
# Pauses between turns (s); a negative one starts the next turn before the last has ended.
PAUSES = [0.5, 0.8, -0.4, 0.6, 1.2, 0.4, -0.6, 0.7]


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


def trimmed(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > 100 / 32768)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio


def synthesise(voice: str, text: str, work: Path) -> np.ndarray:
    raw, out = work / "raw.wav", work / "line.wav"
    subprocess.run(["text2wave", "-eval", f"({VOICES[voice]})", "-o", str(raw)], input=text.encode(), check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", str(out)], check=True)
    return trimmed(read_wav(out))


def build(name: str, work: Path, reader_dir: Path) -> tuple[Path, list[dict]]:
    voices, order = CONVERSATIONS[name]
    wav = work / f"{name}.wav"
    truth_path = work / f"{name}.turns.json"
    if wav.exists() and truth_path.exists():
        return wav, json.loads(truth_path.read_text())
    reader = iter(sorted(reader_dir.glob("*.wav")))
    lines = itertools.cycle(LINES)
    pieces, turns, at = [], [], 0.5
    for index, speaker in enumerate(order):
        voice = voices[speaker]
        audio = trimmed(read_wav(next(reader))) if voice == "reader" else synthesise(voice, next(lines), work)
        turns.append({"start_s": round(at, 4), "end_s": round(at + len(audio) / RATE, 4), "speaker": speaker})
        pieces.append((at, audio))
        at += len(audio) / RATE + PAUSES[index % len(PAUSES)]
    mix = np.zeros(int((turns[-1]["end_s"] + 0.5) * RATE) + 1, dtype=np.float32)
    for start, audio in pieces:
        first = int(round(start * RATE))
        mix[first : first + len(audio)] += audio
    pcm = (np.clip(mix, -1, 1) * 32767).astype("<i2")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    truth_path.write_text(json.dumps(turns, indent=1) + "\n")
    return wav, turns


REAL_CALL_WHEEL = "pyannote.audio==4.0.7"
REAL_CALL_SHA256 = "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e"


def real_call(work: Path) -> tuple[Path, list[dict]]:
    """The real two-person telephone call from pyannote.audio's wheel and its reference turns."""
    import hashlib
    import zipfile

    folder = work / "pyannote-sample"
    wav, rttm = folder / "sample.wav", folder / "sample.rttm"
    if not wav.exists() or not rttm.exists():
        download = work / "wheels"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
             "--only-binary", ":all:", "-d", str(download), REAL_CALL_WHEEL],
            check=True,
        )
        wheel = next(download.glob("pyannote_audio-4.0.7-*.whl"))
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for name, target in [("pyannote/audio/sample/sample.wav", wav), ("pyannote/audio/sample/sample.rttm", rttm)]:
                target.write_bytes(archive.read(name))
    if hashlib.sha256(wav.read_bytes()).hexdigest() != REAL_CALL_SHA256:
        raise SystemExit(f"{wav}: not the recording this bench was written for")
    turns = []
    for line in rttm.read_text().splitlines():
        fields = line.split()
        start, duration = float(fields[3]), float(fields[4])
        turns.append({"start_s": start, "end_s": start + duration, "speaker": fields[7]})
    return wav, turns


def der(reference: list[dict], hypothesis: list[dict], collar: float = 0.25, step: float = 0.01) -> float:
    """Frame-based DER: missed + false alarm + confusion over reference speech, each frame scoring
    min/max of speaker counts as NIST does, after the best one-to-one speaker mapping; frames
    within `collar` of a reference boundary are not scored."""
    end = max([t["end_s"] for t in reference + hypothesis] + [0.0])
    frames = int(np.ceil(end / step)) + 1
    ref_speakers = sorted({t["speaker"] for t in reference})
    hyp_speakers = sorted({t["speaker"] for t in hypothesis})
    r = np.zeros((frames, max(len(ref_speakers), 1)), bool)
    h = np.zeros((frames, max(len(hyp_speakers), 1)), bool)
    for t in reference:
        r[int(t["start_s"] / step) : int(t["end_s"] / step), ref_speakers.index(t["speaker"])] = True
    for t in hypothesis:
        h[int(t["start_s"] / step) : int(t["end_s"] / step), hyp_speakers.index(t["speaker"])] = True
    scored = np.ones(frames, bool)
    for t in reference:
        for edge in (t["start_s"], t["end_s"]):
            scored[max(0, int((edge - collar) / step)) : int((edge + collar) / step)] = False
    r, h = r[scored], h[scored]
    overlap = r.astype(np.int64).T @ h.astype(np.int64)
    best = 0
    n_ref, n_hyp = overlap.shape
    for perm in itertools.permutations(range(max(n_ref, n_hyp)), n_ref):
        best = max(best, sum(overlap[i, j] for i, j in enumerate(perm) if j < n_hyp))
    n_r, n_h = r.sum(1), h.sum(1)
    total = n_r.sum()
    errors = np.maximum(n_r, n_h).sum() - best
    return float(errors / total) if total else 0.0


def run_ours(binary: str, wav: Path, speakers: str, threshold: float | None) -> tuple[list[dict], float, int]:
    args = [binary, "speakers", "--json", "--threads", "1", "--speakers", speakers]
    if threshold is not None:
        args += ["--threshold", str(threshold)]
    out = subprocess.run(args + [str(wav)], capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    return result["turns"], result["seconds"] / result["duration_s"], result["speakers"]


class Sherpa:
    def __init__(self, models: Path, work: Path):
        import onnx

        self.segmentation = work / "segmentation-3.0-sherpa.onnx"
        if not self.segmentation.exists():
            # sherpa-onnx reads the window and receptive field from metadata its own export adds.
            model = onnx.load(models / "pyannote-segmentation-3.0" / "segmentation-3.0.onnx")
            for key, value in {
                "model_type": "pyannote-segmentation-3.0", "version": "1", "maintainer": "k2-fsa",
                "num_speakers": "3", "powerset_max_classes": "2", "num_classes": "7",
                "sample_rate": "16000", "window_size": "160000", "receptive_field_size": "991",
                "receptive_field_shift": "270",
            }.items():
                model.metadata_props.add(key=key, value=value)
            onnx.save(model, self.segmentation)
        self.embedding = models / "campplus" / "campplus.onnx"

    def run(self, wav: Path, count: int, threshold: float) -> tuple[list[dict], float, int]:
        import sherpa_onnx

        config = sherpa_onnx.OfflineSpeakerDiarizationConfig(
            segmentation=sherpa_onnx.OfflineSpeakerSegmentationModelConfig(
                pyannote=sherpa_onnx.OfflineSpeakerSegmentationPyannoteModelConfig(model=str(self.segmentation)),
                num_threads=1,
            ),
            embedding=sherpa_onnx.SpeakerEmbeddingExtractorConfig(model=str(self.embedding), num_threads=1),
            clustering=sherpa_onnx.FastClusteringConfig(num_clusters=count, threshold=threshold),
            min_duration_on=0.3,
            min_duration_off=0.5,
        )
        if not config.validate():
            raise SystemExit("sherpa-onnx refused its configuration")
        diarizer = sherpa_onnx.OfflineSpeakerDiarization(config)
        audio = read_wav(wav)
        started = time.perf_counter()
        result = diarizer.process(audio).sort_by_start_time()
        seconds = time.perf_counter() - started
        turns = [{"start_s": r.start, "end_s": r.end, "speaker": r.speaker} for r in result]
        return turns, seconds / (len(audio) / RATE), len({t["speaker"] for t in turns})


def main() -> None:
    binary, models, work, reader_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    extra = sys.argv[5:]
    ours_thresholds = (
        [float(x) for x in extra[extra.index("--threshold") + 1 :] if not x.startswith("--")]
        if "--threshold" in extra
        else [None]
    )
    work.mkdir(parents=True, exist_ok=True)
    sherpa = Sherpa(models, work)
    cases = [(name, *build(name, work, reader_dir)) for name in CONVERSATIONS]
    held_out = Path(__file__).resolve().parent.parent / "samples" / "case-conference.wav"
    cases.append(("case-conference (held out)", held_out, json.loads(held_out.with_suffix(".turns.json").read_text())))
    cases.append(("real telephone call (held out)", *real_call(work)))
    print("| conversation | speakers | mode | medscribe DER | found | RTF | sherpa-onnx DER | found | RTF |")
    print("|---|---|---|---|---|---|---|---|---|")
    totals: dict[str, list[float]] = {}
    for name, wav, truth in cases:
        n = len({t["speaker"] for t in truth})
        for mode in ["told", "auto"]:
            for threshold in ours_thresholds if mode == "auto" else [None]:
                ours, ours_rtf, ours_found = run_ours(binary, wav, str(n) if mode == "told" else "auto", threshold)
                if "--ours-only" in extra:
                    theirs, their_rtf, their_found = [], float("nan"), 0
                else:
                    theirs, their_rtf, their_found = sherpa.run(wav, n if mode == "told" else -1, 0.5)
                label = mode if threshold is None else f"auto {threshold}"
                d_ours, d_theirs = der(truth, ours), der(truth, theirs)
                if "held out" not in name:
                    totals.setdefault(label, []).append(d_ours)
                    totals.setdefault(f"sherpa {mode}", []).append(d_theirs)
                print(
                    f"| {name} | {n} | {label} | {100 * d_ours:.1f}% | {ours_found} | {ours_rtf:.3f} "
                    f"| {100 * d_theirs:.1f}% | {their_found} | {their_rtf:.3f} |",
                    flush=True,
                )
    for label, values in totals.items():
        print(f"mean DER {label} (built conversations): {100 * np.mean(values):.1f}%")


if __name__ == "__main__":
    main()
