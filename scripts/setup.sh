#!/usr/bin/env bash
# Create .venv with the project installed (editable) and its dependencies, every extra (OCR, OpenVINO, serve, ONNX,
# MLflow, Optuna) and the test tools. torch goes first, pinned, so that nothing pulls the CUDA build (on a GPU machine,
# install the CUDA torch build of your choice first instead).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
# requirements.txt is `-e .[all,dev]`: the `layoutkit` command, and imports of layoutkit, dataset_loader and model_card
# from any folder (benchmarks/ need no PYTHONPATH).
.venv/bin/python -m pip install -q -r requirements.txt
