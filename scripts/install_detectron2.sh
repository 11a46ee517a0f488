#!/usr/bin/env bash
# Install detectron2 (the visual backbone of LayoutLMv2 / LayoutXLM) into .venv, CPU only.
# No package registry ships detectron2, so it is compiled from source (~2 min on 2 cores); the built
# wheel is cached so later runs on the same machine skip the compile. See docs/layoutlmv2.md.
#
#   bash scripts/install_detectron2.sh
#   DETECTRON2_SRC=git+https://github.com/facebookresearch/detectron2.git bash scripts/install_detectron2.sh
#
# Environment: PYTHON (default .venv/bin/python), DETECTRON2_SRC (source tarball, folder or pip URL;
# default ../shared/third_party/detectron2-02b5c4e2.tar.gz), LAYOUTKIT_WHEEL_CACHE (default
# ~/.cache/layoutkit/wheels), MAX_JOBS (compile jobs, default: number of CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
SRC=${DETECTRON2_SRC:-../shared/third_party/detectron2-02b5c4e2.tar.gz}
CACHE_ROOT=${LAYOUTKIT_WHEEL_CACHE:-$HOME/.cache/layoutkit/wheels}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.28.0}

if [[ "$SRC" != git+* && "$SRC" != http* && ! -e "$SRC" ]]; then
  echo "install_detectron2.sh: detectron2 source not found at '$SRC'." >&2
  echo "  Set DETECTRON2_SRC to a source tarball/folder, or to" >&2
  echo "  git+https://github.com/facebookresearch/detectron2.git" >&2
  exit 1
fi

# detectron2's runtime dependencies (pins: newer fvcore/iopath releases break detectron2's imports).
"$PY" -m pip install -q -U pip
"$PY" -m pip install -q "fvcore<0.1.6" "iopath<0.1.10" omegaconf hydra-core pycocotools yacs
# torchvision without its dependencies so that pip does not replace the pinned torch build.
"$PY" -m pip install -q "torchvision==${TORCHVISION_VERSION}" --no-deps

# The registry's torchvision has no compiled ops for this torch build, and its _meta_registrations.py
# registers fake kernels for nms/qnms at import time, which fails ("operator torchvision::nms does not
# exist"). Guard those two registrations with torchvision's own check (idempotent).
"$PY" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchvision")
path = pathlib.Path(spec.submodule_search_locations[0]) / "_meta_registrations.py"
text = path.read_text()
guard = " if torchvision.extension._has_ops() else (lambda f: f))"
for op in ("nms", "qnms"):
    old = f'@torch.library.register_fake("torchvision::{op}")\n'
    new = f'@(torch.library.register_fake("torchvision::{op}"){guard}\n'
    text = text.replace(old, new)
path.write_text(text)
EOF
"$PY" -c "import torchvision" || { echo "install_detectron2.sh: torchvision does not import" >&2; exit 1; }

# One cache folder per (python, torch, source) so a wheel is never reused against another ABI.
KEY=$("$PY" -c "import sys, torch; print(f'py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}')")
CACHE="$CACHE_ROOT/$KEY/$(basename "${SRC%.tar.gz}")"
mkdir -p "$CACHE"
WHEEL=$(ls "$CACHE"/detectron2-*.whl 2>/dev/null | head -n 1 || true)
if [[ -z "$WHEEL" ]]; then
  echo "install_detectron2.sh: compiling detectron2 from $SRC (a few minutes) ..."
  START=$SECONDS
  FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$CACHE" "$SRC"
  echo "install_detectron2.sh: compiled in $((SECONDS - START)) s; wheel cached in $CACHE"
  WHEEL=$(ls "$CACHE"/detectron2-*.whl | head -n 1)
else
  echo "install_detectron2.sh: using cached wheel $WHEEL"
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$WHEEL"
"$PY" -c "from transformers.utils import is_detectron2_available as ok; assert ok(), 'detectron2 not importable'"
echo "install_detectron2.sh: detectron2 installed"
