#!/usr/bin/env bash
# FUNSD, a small LayoutLMv3 trained from scratch, same seed and the same step budget for every run:
# cross-entropy (defaults) vs focal loss, augmentation vs none, and the best trial of a short Optuna
# search vs the defaults. Ends with the comparison report (Markdown table + confusion matrices).
#
#   bash benchmarks/funsd_quality.sh            # FUNSD from ../shared/datasets/funsd
#   FUNSD=/path/to/funsd STEPS=400 bash benchmarks/funsd_quality.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
source .venv/bin/activate

FUNSD=${FUNSD:-../shared/datasets/funsd}
OUT=${OUT:-runs/funsd-quality}
STEPS=${STEPS:-120}             # optimizer steps per run (the shared budget)
SEARCH_STEPS=${SEARCH_STEPS:-40}
TRIALS=${TRIALS:-3}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/$OUT/mlflow.db}
mkdir -p "$OUT"

# Built once; a re-run reuses the dataset, the from-scratch config and the cached encodings.
[ -d "$OUT/data" ] || python -m dataset_loader funsd --input "$FUNSD" --output "$OUT/data"
[ -d "$OUT/scratch-layoutlmv3-small" ] || python -m layoutkit.apps.scratch --model_type layoutlmv3 --size small --vocab_size 8000 \
    --dataset_path "$OUT/data" --output_dir "$OUT/scratch-layoutlmv3-small"

launch() {
    accelerate launch --num_processes 1 --num_machines 1 --dynamo_backend no --mixed_precision bf16 \
        run_invoice_ner.py --dataset_path "$OUT/data" --config_name "$OUT/scratch-layoutlmv3-small" \
        --box_level segment --seed 42 --per_device_eval_batch_size 16 --with_tracking \
        --experiment_name funsd-quality "$@"
}
DEFAULTS=(--learning_rate 1e-3 --warmup_ratio 0.1 --per_device_train_batch_size 8)

launch "${DEFAULTS[@]}" --max_train_steps "$STEPS" --output_dir "$OUT/cross_entropy"
launch "${DEFAULTS[@]}" --max_train_steps "$STEPS" --output_dir "$OUT/focal" --loss focal --focal_gamma 2
launch "${DEFAULTS[@]}" --max_train_steps "$STEPS" --output_dir "$OUT/augment" --augment --augment_copies 1

# A short search (fewer steps per trial), then its best values at the full budget.
cat > "$OUT/search_space.json" <<'JSON'
{
  "learning_rate": {"type": "float", "low": 2e-4, "high": 3e-3, "log": true},
  "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
  "weight_decay": {"type": "float", "low": 0.0, "high": 0.1}
}
JSON
launch "${DEFAULTS[@]}" --max_train_steps "$SEARCH_STEPS" --output_dir "$OUT/search" \
    --hp_search optuna --n_trials "$TRIALS" --hp_space "$OUT/search_space.json"
launch --config_file "$OUT/search/best_hyperparameters.json" --max_train_steps "$STEPS" \
    --output_dir "$OUT/best_trial"

python -m layoutkit.apps.compare "$OUT/cross_entropy" "$OUT/focal" "$OUT/augment" "$OUT/best_trial" \
    --output "$OUT/report" --names cross-entropy focal augment search-best
