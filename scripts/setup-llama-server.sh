#!/usr/bin/env bash
# Builds llama-cpp-python's OpenAI-compatible server (PyPI `llama-cpp-python[server]`, pinned)
# into the data directory, for the test of `--letter-server` against a real llama.cpp server
# (tests/it/serve.rs, letters_from_a_llama_cpp_server_over_http_and_https, run with
# MEDSCRIBE_LLAMA_SERVER=1). Nothing else needs it. Does nothing when it is already built.
#
# PyPI has only the sdist, so pip compiles llama.cpp: about 11 minutes on two cores, which is why
# CI does not run this. Built portable (GGML_NATIVE off, AMX off): a native build on CPUs that
# report AMX dies with SIGILL in llama.cpp's AMX kernel on some machines of ours.
set -euo pipefail

DATA=${MEDSCRIBE_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/medscribe}
VENV=$DATA/llama-server-venv
PYTHON=${PYTHON:-python3}
PACKAGE="llama-cpp-python[server]==0.3.36"

say() { printf 'setup-llama-server: %s\n' "$*" >&2; }

if [ -x "$VENV/bin/python" ] \
    && "$VENV/bin/python" -c 'import llama_cpp, llama_cpp.server; assert llama_cpp.__version__ == "0.3.36"' 2>/dev/null; then
    say "already built in $VENV"
    exit 0
fi
mkdir -p "$DATA" && chmod 700 "$DATA"
# A half-built venv (an interrupted run) fails the check above and is built again from scratch.
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
say "building $PACKAGE from its sdist (compiles llama.cpp; about 11 minutes on two cores)"
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    --no-binary llama-cpp-python "$PACKAGE"
"$VENV/bin/python" -c 'import llama_cpp.server' && say "built in $VENV"
