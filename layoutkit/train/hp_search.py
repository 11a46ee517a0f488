"""Hyperparameter search with Optuna for the training scripts (`--hp_search optuna --n_trials N`).

Each trial is a whole training run of the script into OUTPUT_DIR/trial_N, reported to MLflow as a child
run of the search's run. Trials are pruned on the validation metric after each epoch (median rule).
The best trial's flag values are written to OUTPUT_DIR/best_hyperparameters.json, a `--config_file`:
re-run it with `accelerate launch SCRIPT --config_file OUTPUT_DIR/best_hyperparameters.json ...`.

Under several processes the main process owns the study: it draws each trial's values and decides on
pruning, and broadcasts both, so every process trains the same trial.
"""

from __future__ import annotations

import json
import os
from typing import Callable

from accelerate import PartialState
from accelerate.utils import broadcast_object_list

# Flag name -> Optuna distribution. Overridden by --hp_space (a JSON file of the same form).
DEFAULT_SEARCH_SPACE = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "per_device_train_batch_size": {"type": "categorical", "choices": [4, 8, 16]},
    "num_train_epochs": {"type": "int", "low": 2, "high": 10},
    "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
    "weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
}
BEST_FILE = "best_hyperparameters.json"
# Flags a trial must not inherit from the search's command line.
SEARCH_ONLY_FLAGS = ("hp_search", "n_trials", "hp_space", "hp_pruner", "push_to_hub", "push_every_epoch",
                     "resume_from_checkpoint", "config_file")


def load_search_space(args) -> dict:
    if not args.hp_space:
        return DEFAULT_SEARCH_SPACE
    with open(args.hp_space, encoding="utf-8") as handle:
        space = json.load(handle)
    for flag, spec in space.items():
        if not hasattr(args, flag):
            raise ValueError(f"{args.hp_space}: '{flag}' is not a flag of this script")
        if spec.get("type") not in ("float", "int", "categorical"):
            raise ValueError(f"{args.hp_space}: '{flag}' needs \"type\": \"float\", \"int\" or \"categorical\"")
    return space


def suggest(trial, space: dict) -> dict:
    values = {}
    for flag, spec in space.items():
        if spec["type"] == "categorical":
            values[flag] = trial.suggest_categorical(flag, spec["choices"])
        elif spec["type"] == "int":
            values[flag] = trial.suggest_int(flag, spec["low"], spec["high"], log=spec.get("log", False))
        else:
            values[flag] = trial.suggest_float(flag, spec["low"], spec["high"], log=spec.get("log", False))
    return values


def broadcast(value):
    """`value` of the main process, on every process."""
    return broadcast_object_list([value])[0]


def run_hp_search(args, train_and_evaluate: Callable, metric_name: str, experiment_name: str) -> dict:
    """Run the search; returns the best trial's flag values. `train_and_evaluate(args, on_epoch_end)`
    is one training run; `on_epoch_end(epoch, metrics)` may raise optuna.TrialPruned."""
    try:
        import optuna
    except ImportError as error:
        raise SystemExit(f"--hp_search needs optuna: pip install 'layoutkit[hpo]' ({error})") from error

    state = PartialState()
    space = load_search_space(args)
    study = parent_run = None
    if state.is_main_process:
        pruner = optuna.pruners.MedianPruner(n_warmup_steps=1) if args.hp_pruner == "median" else optuna.pruners.NopPruner()
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed), pruner=pruner)
        parent_run = start_search_run(args, experiment_name, space)

    for number in range(args.n_trials):
        trial = study.ask() if state.is_main_process else None
        values = broadcast(suggest(trial, space) if trial else None)
        trial_args = trial_arguments(args, values, number)

        def report(epoch: int, metrics: dict) -> None:
            prune = False
            if trial is not None:
                trial.report(metrics[metric_name], epoch)
                prune = trial.should_prune()
            if broadcast(prune):
                raise optuna.TrialPruned(f"trial {number} pruned after epoch {epoch}")

        try:
            results = train_and_evaluate(trial_args, on_epoch_end=report)
        except optuna.TrialPruned:
            end_child_runs(parent_run)
            if study is not None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            state.print(f"trial {number}: pruned")
            continue
        value = results[f"eval_{metric_name}"]
        if study is not None:
            study.tell(trial, value)
        state.print(f"trial {number}: eval_{metric_name}={value:.4f} with {values}")

    best = None
    if state.is_main_process:
        record = write_best(args, study, metric_name)
        finish_search_run(parent_run, record, metric_name)
        best = record["flags"]
    return broadcast(best)


def trial_arguments(args, values: dict, number: int):
    """The run arguments (arguments.RunArguments) of trial `number`: the search's, with the trial's values."""
    reset = {flag: None if flag != "push_to_hub" else False for flag in SEARCH_ONLY_FLAGS if flag in args.flags()}
    return args.replace(**reset, **values, output_dir=os.path.join(args.output_dir, f"trial_{number}"),
                        with_tracking=True)  # every trial is an MLflow child run


def write_best(args, study, metric_name: str) -> dict:
    """best_hyperparameters.json: the search's flags with the best trial's values, usable as --config_file."""
    completed = [t for t in study.trials if t.value is not None]
    if not completed:
        raise RuntimeError(f"all {len(study.trials)} trials were pruned; raise --n_trials or use --hp_pruner none")
    best_trial = study.best_trial
    flags = {k: v for k, v in args.flags().items() if k not in SEARCH_ONLY_FLAGS and k != "output_dir"}
    flags.update(best_trial.params)
    best = {
        "flags": flags,
        "best_trial": best_trial.number,
        f"best_eval_{metric_name}": best_trial.value,
        "trials": [
            {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params} for t in study.trials
        ],
    }
    os.makedirs(args.output_dir, exist_ok=True)
    # The file is a --config_file (flags at the top level); the search's record sits beside it.
    with open(os.path.join(args.output_dir, BEST_FILE), "w", encoding="utf-8") as handle:
        json.dump(flags, handle, indent=2)
        handle.write("\n")
    with open(os.path.join(args.output_dir, "hp_search.json"), "w", encoding="utf-8") as handle:
        json.dump(best, handle, indent=2)
        handle.write("\n")
    print(f"best trial {best_trial.number}: eval_{metric_name}={best_trial.value:.4f} {best_trial.params}; "
          f"re-run with --config_file {os.path.join(args.output_dir, BEST_FILE)}")
    return best


# ----------------------------------------------------------------------------------------------- MLflow
def start_search_run(args, experiment_name: str, space: dict):
    """The search's own MLflow run; the trials' runs nest under it (see training.init_tracking)."""
    if "mlflow" not in str(args.report_to) and args.report_to != "all":
        return None
    import mlflow

    from .accelerator_setup import use_local_mlflow_store

    name = args.experiment_name or experiment_name
    if use_local_mlflow_store(args.output_dir) and mlflow.get_experiment_by_name(name) is None:
        # artifacts in the search's folder too, not in ./mlruns
        mlflow.create_experiment(name, artifact_location=os.path.abspath(os.path.join(args.output_dir, "mlruns")))
    mlflow.set_experiment(name)
    run = mlflow.start_run(run_name=f"{os.path.basename(os.path.normpath(args.output_dir))}-search")
    mlflow.log_params({"n_trials": args.n_trials, "hp_pruner": args.hp_pruner, "hp_space": json.dumps(space)})
    return run


def end_child_runs(parent_run) -> None:
    """A pruned trial leaves its MLflow run open (training stopped mid-way): close it as KILLED."""
    if parent_run is None:
        return
    import mlflow

    while mlflow.active_run() is not None and mlflow.active_run().info.run_id != parent_run.info.run_id:
        mlflow.end_run(status="KILLED")


def finish_search_run(parent_run, record: dict, metric_name: str) -> None:
    if parent_run is None:
        return
    import mlflow

    mlflow.log_metric(f"best_eval_{metric_name}", record[f"best_eval_{metric_name}"])
    mlflow.log_params({f"best_{k}": v for k, v in record["flags"].items() if k in record["trials"][0]["params"]})
    mlflow.log_dict(record, "hp_search.json")
    mlflow.end_run()
