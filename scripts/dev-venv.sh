#!/usr/bin/env bash
# The developer venv (.venv-dev, git-ignored) for making parity fixtures and running Python
# reference benchmarks: transformers + torch + onnx from PyPI. CI never needs it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 -m venv .venv-dev
.venv-dev/bin/pip install -q --disable-pip-version-check \
    "transformers==5.23.0" torch onnx "onnxruntime==1.31.1" onnxscript soundfile numpy \
    "pillow==11.3.0"
