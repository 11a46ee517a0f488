#!/usr/bin/env bash
# Create .venv with the project's dependencies. torch goes first, pinned, so that nothing pulls the
# CUDA build (on a GPU machine, install the CUDA torch build of your choice first instead).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -r requirements.txt
# The serve extra (FastAPI, uvicorn, python-multipart): the HTTP service and its tests.
.venv/bin/python -m pip install -q -r requirements-serve.txt
