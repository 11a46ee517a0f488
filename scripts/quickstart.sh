#!/usr/bin/env bash
# Offline quick start: set up, generate sample invoices, build the dataset, train a small LayoutLM
# from scratch, evaluate it on the held-out test split, extract the fields of an unseen invoice, and measure
# end to end (page images in, field values out) on test invoices, with the words given and with OCR.
#
# Which words it trains on: the annotated words (default), or with OCR=tesseract (or rapidocr) the words that
# OCR engine reads, with the gold labels carried over (what inference on scans will see; slower to build:
# about 1 s per page per core with Tesseract). See docs/ocr.md.
#
# LayoutLM v1 here: it reads no page image, so it trains several times faster than LayoutLMv3 on a CPU, and its
# weights are MIT (MODEL_TYPE=layoutlmv3 trains the same recipe on LayoutLMv3).
#
# 2000 invoices, 6 epochs: a model without pretraining learns the keyword -> value pairs (dates, subtotal,
# tax) from many documents, not from many passes over few (240 invoices plateau at F1 0.6 while the
# training loss goes to zero). fp32, not bf16: at this size (1.9M parameters) autocast's casts cost more
# than bf16 matrix products save on a CPU (measured 20.8 vs 13.3 documents/s).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
[ -x .venv/bin/python ] || bash scripts/setup.sh
source .venv/bin/activate

DATA=${DATA:-data}
RUNS=${RUNS:-runs}
python -m dataset_loader synth --output "$DATA/sample_invoices" --num_docs "${NUM_DOCS:-2000}" --seed 0
OCR_FLAGS=()
[ -n "${OCR:-}" ] && OCR_FLAGS=(--ocr "$OCR")
python -m dataset_loader build --data_dir "$DATA/sample_invoices" --output "$DATA/invoices" --seed 0 --overwrite \
    "${OCR_FLAGS[@]}"
MODEL_TYPE=${MODEL_TYPE:-layoutlm}
python -m layoutkit.apps.scratch --model_type "$MODEL_TYPE" --size small --vocab_size 4000 \
    --dataset_path "$DATA/invoices" --output_dir "$RUNS/scratch-$MODEL_TYPE-small"
accelerate launch --num_processes 1 --num_machines 1 --dynamo_backend no --mixed_precision "${MIXED_PRECISION:-no}" \
    run_invoice_ner.py \
    --dataset_path "$DATA/invoices" \
    --config_name "$RUNS/scratch-$MODEL_TYPE-small" \
    --output_dir "$RUNS/invoices-$MODEL_TYPE-small" \
    --num_train_epochs "${EPOCHS:-6}" --learning_rate 1e-3 --warmup_ratio 0.1 \
    --per_device_train_batch_size 8 --early_stopping_patience 3 --with_tracking

# An invoice the model has never seen, with its words and boxes given (no OCR needed).
python -m dataset_loader synth --output "$DATA/unseen_invoice" --num_docs 1 --seed 12345
python predict.py --model_name_or_path "$RUNS/invoices-$MODEL_TYPE-small" \
    --input "$DATA/unseen_invoice/images/invoice_00000.png" \
    --words_json "$DATA/unseen_invoice/annotations/invoice_00000.json" \
    --output_dir "$RUNS/predictions"
python - "$RUNS" "$MODEL_TYPE" <<'PY'
import json, sys
results = json.load(open(f"{sys.argv[1]}/invoices-{sys.argv[2]}-small/all_results.json"))
print(json.dumps({k: round(results[k], 4) for k in ("test_precision", "test_recall", "test_f1", "test_accuracy")}, indent=2))
prediction = json.load(open(f"{sys.argv[1]}/predictions/invoice_00000.json"))
print(json.dumps({name: {k: v for k, v in field.items() if k not in ("candidates", "box")}
                  for name, field in prediction["fields"].items()}, indent=2, ensure_ascii=False))
PY

# End to end on test invoices the model has never seen: page images in, one value per field out, compared with the
# gold values. "given" feeds the annotated words (what the test F1 above measures); "rapidocr" (the default OCR
# engine) reads the page, as predict.py does on a scan.
python benchmarks/end_to_end.py --model "$RUNS/invoices-$MODEL_TYPE-small" --data_dir "$DATA/sample_invoices" \
    --dataset_path "$DATA/invoices" --engines "given,${OCR:-rapidocr}" --max_docs "${E2E_DOCS:-50}"
