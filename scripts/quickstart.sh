#!/usr/bin/env bash
# Offline quick start from the checkout: set up the virtual environment if there is none, then run
# `layoutkit quickstart` (layoutkit/apps/quickstart.py; a pip user runs that command from any folder): generate sample
# invoices, build the dataset, train a small LayoutLM from scratch, evaluate it on the held-out test split, extract
# the fields of an unseen invoice, and measure end to end (page images in, field values out) on test invoices, with
# the words given and with OCR. It ends with one summary table (also in $OUTPUT_DIR/summary.md).
#
# Variables: OUTPUT_DIR (default ./layoutkit-quickstart), NUM_DOCS (2000), EPOCHS (6), MODEL_TYPE (layoutlm),
# MIXED_PRECISION (no), OCR (train on the words an OCR engine reads: tesseract or rapidocr; docs/ocr.md),
# E2E_DOCS (50). Extra arguments go to `layoutkit quickstart` (e.g. --small for a one-minute check).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
[ -x .venv/bin/python ] || bash scripts/setup.sh
source .venv/bin/activate

OPTIONS=(--output_dir "${OUTPUT_DIR:-layoutkit-quickstart}" --num_docs "${NUM_DOCS:-2000}" --epochs "${EPOCHS:-6}"
         --model_type "${MODEL_TYPE:-layoutlm}" --mixed_precision "${MIXED_PRECISION:-no}" --e2e_docs "${E2E_DOCS:-50}")
[ -n "${OCR:-}" ] && OPTIONS+=(--ocr "$OCR" --e2e_engine "$OCR")
python -m layoutkit quickstart "${OPTIONS[@]}" "$@"
