"""The run's Accelerator (devices, processes, mixed precision, DDP options) and its experiment trackers
(MLflow): starting the tracked run, logging figures and the final model as artifacts."""

from __future__ import annotations

import importlib.util
import os

from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration

from .arguments import TrainingArguments


def build_accelerator(training: TrainingArguments, model_type: str) -> Accelerator:
    require_trackers(training)
    find_unused = training.ddp_find_unused_parameters
    if find_unused is None:
        find_unused = model_type in ("layoutlmv2", "layoutxlm")
    mixed_precision, why = training.mixed_precision, None
    if mixed_precision == "auto":
        from accelerate import PartialState

        from .precision import choose_mixed_precision

        mixed_precision, why = choose_mixed_precision(PartialState().device)
    accelerator = Accelerator(
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)],
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=training.report_to if training.with_tracking else None,
        project_config=ProjectConfiguration(project_dir=training.output_dir),
        # The same shuffle order on every run with the same seed, which resuming mid-epoch relies on. Each process
        # reads its own batches of a streamed corpus too (dispatching them from the main process, accelerate's
        # default for an IterableDataset, concatenates batches, which dynamic padding gives different lengths).
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, dispatch_batches=False),
    )
    if why:
        accelerator.print(f"--mixed_precision auto: {accelerator.mixed_precision} ({why})")
    return accelerator


def require_trackers(training: TrainingArguments) -> None:
    """Accelerate drops a tracker whose package is missing without a word (a run would log nothing): stop instead."""
    if training.with_tracking and "mlflow" in str(training.report_to) and importlib.util.find_spec("mlflow") is None:
        raise SystemExit("--with_tracking --report_to mlflow needs mlflow: pip install 'layoutkit[tracking]'")


def init_tracking(accelerator: Accelerator, training: TrainingArguments, flags: dict, default_experiment: str) -> None:
    """Start the trackers' run, with every flag of the run (`flags`, the token left out) as its parameters."""
    if not training.with_tracking:
        return
    config = {k: v for k, v in flags.items() if isinstance(v, (int, float, str, bool)) and k != "hub_token"}
    mlflow_options = {"run_name": os.path.basename(os.path.normpath(training.output_dir)),
                      # In a hyperparameter search, each trial is a child of the search's run.
                      "nested_run": mlflow_run_active()}
    if ("mlflow" in str(training.report_to) or training.report_to == "all") and use_local_mlflow_store(
            training.output_dir, accelerator):
        # A new experiment keeps its artifacts in the run's folder too (MLflow's default: ./mlruns).
        mlflow_options["logging_dir"] = os.path.abspath(os.path.join(training.output_dir, "mlruns"))
    accelerator.init_trackers(training.experiment_name or default_experiment, config,
                              init_kwargs={"mlflow": mlflow_options})


def use_local_mlflow_store(output_dir: str, accelerator: Accelerator | None = None) -> bool:
    """MLflow's store in the run's output folder (sqlite:///OUTPUT_DIR/mlflow.db), unless MLFLOW_TRACKING_URI names
    one or a run is already active (a search's trials nest in the search's store); whether it set the store.
    Also quietens the store's database set-up messages (alembic's schema migrations on a new mlflow.db)."""
    import logging

    for name in ("alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if os.environ.get("MLFLOW_TRACKING_URI") or mlflow_run_active():
        return False
    os.makedirs(output_dir, exist_ok=True)
    uri = "sqlite:///" + os.path.abspath(os.path.join(output_dir, "mlflow.db"))
    os.environ["MLFLOW_TRACKING_URI"] = uri
    message = (f"MLflow: this run's store is {output_dir}/mlflow.db (`mlflow ui --backend-store-uri {uri}`); "
               "MLFLOW_TRACKING_URI picks another")
    if accelerator is not None:
        accelerator.print(message)
    else:
        print(message)
    return True


def mlflow_run_active() -> bool:
    try:
        import mlflow
    except ImportError:
        return False
    return mlflow.active_run() is not None


def log_artifacts(accelerator: Accelerator, folder: str, artifact_path: str | None = None) -> None:
    """Log the files at the top of `folder` (the final model, not its checkpoint sub-folders) as
    artifacts of the MLflow run, if one is active."""
    if accelerator.is_main_process and "mlflow" in [t.name for t in accelerator.trackers]:
        tracker = accelerator.get_tracker("mlflow")
        for name in sorted(os.listdir(folder)):
            if os.path.isfile(os.path.join(folder, name)) and name != "mlflow.db":
                tracker.log_artifact(os.path.join(folder, name), artifact_path)


def log_figure(accelerator: Accelerator, figure, name: str) -> None:
    if accelerator.is_main_process and "mlflow" in [t.name for t in accelerator.trackers]:
        accelerator.get_tracker("mlflow").log_figure(figure, name)
