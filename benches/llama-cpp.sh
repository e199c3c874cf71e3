#!/usr/bin/env bash
# Builds the llama.cpp anchor: llama-cpp-python 0.3.36 from PyPI, compiled
# from source for this CPU (-DGGML_NATIVE=ON), in a venv outside the clone.
# Idempotent; prints the venv's python on stdout.
#
# usage: benches/llama-cpp.sh            (venv under ~/.cache/shirabe/llama-cpp-0.3.36)
set -euo pipefail
venv=${SHIRABE_LLAMA_VENV:-$HOME/.cache/shirabe/llama-cpp-0.3.36}
if ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  echo "building llama-cpp-python 0.3.36 into $venv (10-20 minutes on 2 cores)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install -q --no-cache-dir \
    "llama-cpp-python==0.3.36" >&2
fi
echo "$venv/bin/python"
