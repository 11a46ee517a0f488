#!/usr/bin/env bash
# Offline document-classification quick start: set up, generate a 3-class sample (invoice / receipt /
# letter), build the dataset, train a small LayoutLM from scratch (v1: see quickstart.sh on v3 from scratch), report test accuracy against the
# majority-class baseline, and classify an image with the saved pipeline in a fresh process.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
[ -x .venv/bin/python ] || bash scripts/setup.sh
source .venv/bin/activate

DATA=${DATA:-data}
RUNS=${RUNS:-runs}
python -m dataset_loader synth-classes --output "$DATA/sample_doctypes" --num_docs "${NUM_DOCS:-300}" --seed 42
python -m dataset_loader classify --data_dir "$DATA/sample_doctypes" --output "$DATA/doctypes" --seed 0 --overwrite
MODEL_TYPE=${MODEL_TYPE:-layoutlm}
python -m layoutkit.apps.scratch --model_type "$MODEL_TYPE" --size small --vocab_size 3000 \
    --dataset_path "$DATA/doctypes" --output_dir "$RUNS/scratch-doctypes-$MODEL_TYPE-small"
accelerate launch --num_processes 1 --num_machines 1 --dynamo_backend no --mixed_precision "${MIXED_PRECISION:-bf16}" \
    run_doc_classification.py \
    --dataset_path "$DATA/doctypes" \
    --config_name "$RUNS/scratch-doctypes-$MODEL_TYPE-small" \
    --output_dir "$RUNS/doctypes-$MODEL_TYPE-small" \
    --max_seq_length 256 --stride 64 \
    --num_train_epochs "${EPOCHS:-4}" --learning_rate 1e-3 --warmup_ratio 0.1 \
    --per_device_train_batch_size 8 --metric_for_best_model f1_macro

python - "$RUNS/doctypes-$MODEL_TYPE-small" <<'PY'
import json, os, sys
run = sys.argv[1]
results = json.load(open(f"{run}/all_results.json"))
print(json.dumps({k: round(results[k], 4) for k in ("test_accuracy", "test_f1_macro",
                                                      "test_majority_baseline_accuracy")}, indent=2))
misclassified = sum(1 for _ in open(f"{run}/misclassified.jsonl"))
print(f"confusion matrix: {run}/confusion_matrix.png; misclassified test documents: {misclassified}")
PY
# Documents the model has never seen, classified by the saved pipeline in a fresh interpreter that does
# not see this repository (-I: isolated mode). Their words come with them (no OCR needed).
python -m dataset_loader synth-classes --output "$DATA/unseen_doctypes" --num_docs 6 --seed 12345
model=$(realpath "$RUNS/doctypes-$MODEL_TYPE-small")
for image in $(ls "$DATA"/unseen_doctypes/*/*.png | head -n 3); do
    image=$(realpath "$image")
    (cd /tmp && "$OLDPWD/.venv/bin/python" -I -c "
import json, sys
from transformers import pipeline
classify = pipeline('image-classification', model=sys.argv[1], trust_remote_code=True)
words = json.load(open(sys.argv[2][:-4] + '.json'))
print(sys.argv[2].split('/')[-2], '->', classify({'image': sys.argv[2], **words}, top_k=3))
" "$model" "$image")
done
