"""Training-loop pieces of the task-agnostic driver (driver.py): the Accelerator set-up, tracking, optimizer and
schedule, dataloaders, the resumable training state with early stopping, the step loop with checkpointing, model
loading and saving. Each function takes the argument group (arguments.py) or the values it needs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration
from tqdm.auto import tqdm
from transformers import get_scheduler
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices, get_parameter_names

from model_card import write_model_card

from .arguments import ModelArguments, TrainingArguments

logger = get_logger(__name__)


# ----------------------------------------------------------------------------------------- accelerator
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
        # The same shuffle order on every run with the same seed, which resuming mid-epoch relies on.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
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


# ----------------------------------------------------------------------------------------- optimizer
# Normalisation layers whose weights get no weight decay (biases get none either), as in transformers' Trainer.
NORM_LAYERS = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)


def create_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and normalisation weights (transformers' `get_parameter_names`)."""
    decay_names = set(get_parameter_names(model, list(NORM_LAYERS), ["bias"]))
    decay, rest = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if name in decay_names else rest).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate)


def schedule(training: TrainingArguments, steps_per_epoch: int) -> tuple[int, int]:
    """(max_train_steps, num_train_epochs) from the flags: --max_train_steps wins over epochs."""
    if training.max_train_steps is None:
        return training.num_train_epochs * steps_per_epoch, training.num_train_epochs
    return training.max_train_steps, math.ceil(training.max_train_steps / steps_per_epoch)


def create_scheduler(training: TrainingArguments, optimizer, max_train_steps: int, num_processes: int):
    warmup = training.num_warmup_steps or int(training.warmup_ratio * max_train_steps)
    # The prepared scheduler steps once per process for each optimizer step, hence the scaling.
    return get_scheduler(
        training.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=warmup * num_processes,
        num_training_steps=max_train_steps * num_processes,
    )


class LengthGroupedEpochSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler (random groups of 4 batches or more, sorted by length inside), with the
    order drawn from `seed` + epoch: Accelerate's `set_epoch` gives each epoch its own order, the same on every
    run, which resuming mid-epoch relies on."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    @classmethod
    def for_windows(cls, windows, batch_size: int, seed: int) -> "LengthGroupedEpochSampler":
        """The sampler over encoded windows (a dataset with `input_ids`), grouped by their token counts."""
        return cls(batch_size, [len(ids) for ids in windows.with_format(None)["input_ids"]], seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def build_dataloaders(training: TrainingArguments, windows: dict, collator):
    """(train dataloader, {"validation"/"test": dataloader}, the split evaluated after each epoch).

    The split evaluated after each epoch picks the model that is kept, so it is "validation" or None (no
    validation split: nothing is selected), never "test": a test score chosen on test is no test score.
    """
    from torch.utils.data import DataLoader

    order = dict(shuffle=True)
    if training.group_by_length:
        order = dict(sampler=LengthGroupedEpochSampler.for_windows(
            windows["train"], training.per_device_train_batch_size, training.seed))
    train_dataloader = DataLoader(
        windows["train"], **order, collate_fn=collator, batch_size=training.per_device_train_batch_size,
        num_workers=training.dataloader_num_workers,
        # Creating an iterator draws the workers' base seed from this generator; without one it is drawn from
        # the global torch RNG, the stream dropout uses. A run resumed mid-epoch creates one iterator more
        # than an uninterrupted run at that point, and its dropout masks would all be shifted by one draw.
        generator=torch.Generator().manual_seed(training.seed),
    )
    eval_dataloaders = {
        split: DataLoader(windows[split], collate_fn=collator, batch_size=training.per_device_eval_batch_size)
        for split in ("validation", "test") if split in windows
    }
    eval_split = "validation" if "validation" in windows else None
    return train_dataloader, eval_dataloaders, eval_split


def prepare_training(accelerator: Accelerator, training: TrainingArguments, model, train_dataloader,
                     eval_dataloaders: dict):
    """Optimizer, accelerate's prepare and the LR schedule, in the order that sizes the schedule right.

    Returns (model, optimizer, lr_scheduler, train_dataloader, eval_dataloaders, steps_per_epoch,
    max_train_steps). The schedule is sized from the prepared (per-process) dataloader, so N processes
    take N times fewer steps of an N times larger global batch.
    """
    optimizer = create_optimizer(model, training.learning_rate, training.weight_decay)
    model, optimizer, train_dataloader = accelerator.prepare(model, optimizer, train_dataloader)
    steps_per_epoch = math.ceil(len(train_dataloader) / training.gradient_accumulation_steps)
    max_train_steps, _ = schedule(training, steps_per_epoch)
    lr_scheduler = accelerator.prepare(
        create_scheduler(training, optimizer, max_train_steps, accelerator.num_processes)
    )
    eval_dataloaders = {split: accelerator.prepare(dl) for split, dl in eval_dataloaders.items()}
    return model, optimizer, lr_scheduler, train_dataloader, eval_dataloaders, steps_per_epoch, max_train_steps


# ------------------------------------------------------------------------------------- training state
TRAINING_STATE_FILE = "training_state.json"
BEST_MODEL_FILE = "best_model.safetensors"


@dataclass
class TrainingState:
    """Everything the loop needs to continue exactly where a checkpoint left it.

    `save(folder)`/`load(folder)` write it beside accelerate's `save_state` files as JSON (training_state.json)
    plus the best model's weights as safetensors (best_model.safetensors): no pickle of ours to load. The best
    weights are kept with it (on the CPU), so a resumed run restores the same best model at the end as an
    uninterrupted one.
    """

    metric_name: str = "f1"
    completed_steps: int = 0
    epochs_done: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    best_metrics: dict = field(default_factory=dict)
    epochs_without_improvement: int = 0
    history: list = field(default_factory=list)
    train_seconds: float = 0.0  # training time of all runs that led here, resumed ones included
    best_state_dict: dict | None = None

    def save(self, folder: str) -> None:
        from safetensors.torch import save_file

        fields = asdict(self)
        fields.pop("best_state_dict")
        write_json(os.path.join(folder, TRAINING_STATE_FILE), fields)
        if self.best_state_dict is not None:
            tensors = {k: v.contiguous() for k, v in self.best_state_dict.items()}
            save_file(tensors, os.path.join(folder, BEST_MODEL_FILE))

    def load(self, folder: str) -> None:
        from safetensors.torch import load_file

        path = os.path.join(folder, TRAINING_STATE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{folder}: no {TRAINING_STATE_FILE}; this checkpoint was written by an older layoutkit (which "
                "pickled the training state) or is not a training checkpoint. Start the run again without "
                "--resume_from_checkpoint"
            )
        with open(path, encoding="utf-8") as handle:
            for key, value in json.load(handle).items():
                setattr(self, key, value)
        best = os.path.join(folder, BEST_MODEL_FILE)
        self.best_state_dict = load_file(best) if os.path.isfile(best) else None

    def record_epoch(self, epoch: int, metrics: dict, model: torch.nn.Module, patience: int | None) -> bool:
        """Store the epoch's validation metrics; returns True when early stopping says stop.

        Without validation metrics (no validation split) nothing is selected: the last epoch is kept.
        """
        self.history.append({"epoch": epoch, **metrics})
        self.epochs_done = epoch + 1
        if not metrics:
            return False
        value = metrics[self.metric_name]
        # `value > best` is False for NaN, but the first epoch is taken without comparing: check explicitly,
        # so a non-finite metric never picks the model that is kept.
        if math.isfinite(value) and (self.best_metric is None or value > self.best_metric):
            self.best_metric, self.best_epoch, self.best_metrics = value, epoch, dict(metrics)
            self.epochs_without_improvement = 0
            self.best_state_dict = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.epochs_without_improvement += 1
        return patience is not None and self.epochs_without_improvement >= patience


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


# ------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(accelerator: Accelerator, output_dir: str, name: str, state: TrainingState,
                    total_limit: int | None = None) -> None:
    """`save_state` plus our training state into a temporary folder renamed into place, so a run killed while
    saving never leaves a half-written checkpoint for `--resume_from_checkpoint latest` to pick; then, with
    `total_limit`, the oldest checkpoints beyond it are deleted.

    (accelerate's `ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)` would number the folders
    by save count in a folder it writes in place; the step/epoch names and the atomic rename are kept instead.)"""
    final = os.path.join(output_dir, name)
    partial = final + ".partial"
    accelerator.save_state(partial)
    if accelerator.is_main_process:
        state.save(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(partial, final)
        if total_limit:
            for old in checkpoint_folders(output_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def checkpoint_folders(output_dir: str) -> list[str]:
    """The step_N / epoch_N checkpoint folders in `output_dir`, oldest first."""
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    folders = [os.path.join(output_dir, n) for n in names if re.fullmatch(r"(step|epoch)_\d+", n)]
    return sorted(folders, key=os.path.getmtime)


def find_checkpoint(output_dir: str, requested: str) -> str:
    """The folder to resume from: `requested` itself, or with "latest" the newest step_N/epoch_N folder."""
    if requested != "latest":
        if not os.path.isdir(requested):
            raise FileNotFoundError(f"--resume_from_checkpoint {requested}: no such checkpoint folder")
        return requested
    candidates = checkpoint_folders(output_dir)
    if not candidates:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no step_N or epoch_N checkpoint in {output_dir}")
    return candidates[-1]


# ------------------------------------------------------------------------------------------- the loop
def fit(
    accelerator: Accelerator,
    training: TrainingArguments,
    model: torch.nn.Module,
    optimizer,
    lr_scheduler,
    train_dataloader,
    evaluate: Callable[[], dict] | None,
    state: TrainingState,
    model_inputs: Callable[[dict], dict] = lambda batch: batch,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> TrainingState:
    """Train with gradient accumulation, per-epoch evaluation, early stopping and checkpoints.

    `evaluate()` returns the validation metrics (including `state.metric_name`); None when there is no
    validation split: then no epoch is selected and the last one is kept. `model_inputs(batch)` picks the
    model's inputs out of a batch (batches may carry bookkeeping such as word ids). `loss_function(logits,
    labels)` replaces the model's own cross-entropy when given (focal loss, class weights).
    `on_epoch_end(epoch, metrics)` runs after each epoch's evaluation and checkpoint.
    The loss, and whether it or the gradient norm went NaN/infinite, are accumulated on the device and read on
    the host only at logging steps, checkpoints and epoch ends, so the step loop does not wait for the device;
    a non-finite value stops training with TrainingDivergedError before anything is saved or selected.
    """
    steps_per_epoch = math.ceil(len(train_dataloader) / training.gradient_accumulation_steps)
    max_train_steps, num_epochs = schedule(training, steps_per_epoch)
    checkpoint_every = training.checkpoint_every

    if training.resume_from_checkpoint:
        path = find_checkpoint(training.output_dir, training.resume_from_checkpoint)
        accelerator.print(f"Resuming from {path}")
        accelerator.load_state(path)
        state.load(path)
    start_epoch = state.completed_steps // steps_per_epoch
    skip_batches = (state.completed_steps - start_epoch * steps_per_epoch) * training.gradient_accumulation_steps
    stop = state.completed_steps >= max_train_steps or (
        training.early_stopping_patience is not None
        and state.epochs_without_improvement >= training.early_stopping_patience
    )

    if evaluate is None and training.early_stopping_patience is not None:
        accelerator.print("--early_stopping_patience is ignored: there is no validation split to stop on")
    # disable=None: a progress bar on a terminal only; in a log the epoch lines below say how training goes.
    progress = tqdm(
        total=max_train_steps, initial=state.completed_steps, disable=None if accelerator.is_local_main_process else True
    )
    running_loss = torch.zeros((), device=accelerator.device)
    running_batches = 0
    divergence = DivergenceCheck(accelerator, training, first_step=state.completed_steps + 1)
    clock = time.perf_counter()

    def save(name: str) -> None:
        nonlocal clock
        divergence.check(state.completed_steps)  # never checkpoint a model that went NaN
        now = time.perf_counter()
        # Elapsed time goes into the checkpoint, so a resumed run's train_seconds covers the steps before it.
        state.train_seconds, clock = state.train_seconds + now - clock, now
        save_checkpoint(accelerator, training.output_dir, name, state, training.checkpoints_total_limit)

    for epoch in range(start_epoch, num_epochs):
        if stop:
            break
        model.train()
        train_dataloader.set_epoch(epoch)
        batches = train_dataloader
        if skip_batches:
            batches = accelerator.skip_first_batches(train_dataloader, skip_batches)
            skip_batches = 0
        clock = time.perf_counter()
        for batch in batches:
            with accelerator.accumulate(model):
                loss = training_loss(model, model_inputs(batch), loss_function)
                running_loss += loss.detach()
                running_batches += 1
                divergence.add(loss.detach())
                accelerator.backward(loss)
                if accelerator.sync_gradients and training.max_grad_norm:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), training.max_grad_norm)
                    # With fp16's loss scaling an infinite norm is routine: the scaler skips that step itself.
                    if isinstance(grad_norm, torch.Tensor) and accelerator.scaler is None:
                        divergence.add(grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            state.completed_steps += 1
            progress.update(1)
            if state.completed_steps % training.logging_steps == 0:
                divergence.check(state.completed_steps)
                mean_loss = accelerator.reduce(running_loss, "mean").item() / running_batches
                accelerator.log(
                    {"train_loss": mean_loss, "learning_rate": lr_scheduler.get_last_lr()[0], "epoch": epoch},
                    step=state.completed_steps,
                )
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                running_loss.zero_()
                running_batches = 0
            end_of_epoch = state.completed_steps % steps_per_epoch == 0
            last_step = state.completed_steps >= max_train_steps
            # At the end of an epoch (or of training) the checkpoint is saved after the evaluation instead.
            due = checkpoint_every and state.completed_steps % checkpoint_every == 0
            if due and not end_of_epoch and not last_step:
                save(f"step_{state.completed_steps}")
            if last_step:
                break
        divergence.check(state.completed_steps)
        now = time.perf_counter()
        state.train_seconds, clock = state.train_seconds + now - clock, now

        metrics = evaluate() if evaluate is not None else {}
        should_stop = state.record_epoch(epoch, metrics, accelerator.unwrap_model(model),
                                         training.early_stopping_patience)
        headline = {k: v for k, v in metrics.items() if "_" not in k and isinstance(v, float)}
        if headline:
            accelerator.print(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in headline.items()))
        accelerator.log({f"eval_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                        step=state.completed_steps)
        clock = time.perf_counter()  # evaluation is not training time
        if training.checkpointing_steps == "epoch":
            save(f"epoch_{epoch}")
        elif checkpoint_every and state.completed_steps % checkpoint_every == 0:
            save(f"step_{state.completed_steps}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
        stop = should_stop or state.completed_steps >= max_train_steps
        if should_stop:
            accelerator.print(
                f"early stopping: no {state.metric_name} improvement for {state.epochs_without_improvement} epochs"
            )
    progress.close()
    return state


class DivergenceCheck:
    """Whether the loss or the gradient norm went NaN/infinite, kept as a flag on the device.

    `add` costs no host synchronisation; `check` (at logging steps, checkpoints and epoch ends) reads the flag,
    of every process, and raises TrainingDivergedError naming the steps since the previous check.
    """

    def __init__(self, accelerator: Accelerator, training: TrainingArguments, first_step: int):
        self.accelerator, self.training, self.first_step = accelerator, training, first_step
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)

    def add(self, value: torch.Tensor) -> None:
        self.nonfinite |= ~torch.isfinite(value)

    def check(self, last_step: int) -> None:
        if self.accelerator.reduce(self.nonfinite.float(), "sum").item():
            steps = f"step {last_step}" if last_step <= self.first_step else f"steps {self.first_step}-{last_step}"
            fp16 = ", or train in bf16/fp32 instead of fp16" if self.accelerator.mixed_precision == "fp16" else ""
            raise TrainingDivergedError(
                f"training diverged: the loss or the gradient norm became NaN or infinite in {steps}. Stopped: "
                "nothing from there on is checkpointed, saved or selected as the best model. Lower --learning_rate "
                f"(now {self.training.learning_rate:g}) or clip gradients with --max_grad_norm (now "
                f"{self.training.max_grad_norm:g}){fp16}"
            )
        self.first_step = last_step + 1


def training_loss(model, inputs: dict, loss_function=None) -> torch.Tensor:
    if loss_function is None:
        return model(**inputs).loss
    labels = inputs.pop("labels")  # so the model does not also compute its own cross-entropy
    return loss_function(model(**inputs).logits, labels)


def training_summary(state: TrainingState, num_train_documents: int, steps_per_epoch: int) -> dict:
    """The run's training figures for all_results.json (documents/s counts all processes)."""
    epochs_trained = state.completed_steps / steps_per_epoch
    return {
        "best_epoch": state.best_epoch,
        "train_steps": state.completed_steps,
        "train_seconds": round(state.train_seconds, 2),
        "train_documents_per_second": round(num_train_documents * epochs_trained / state.train_seconds, 3)
        if state.train_seconds else None,
    }


def restore_best(accelerator: Accelerator, model: torch.nn.Module, state: TrainingState) -> None:
    """Load the best epoch's weights into the model (the final model is the best one, not the last)."""
    if state.best_state_dict is not None:
        accelerator.unwrap_model(model).load_state_dict(state.best_state_dict)


def write_json(path: str, payload) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_jsonl(path: str, records) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------- model and saving
def load_config(model_args: ModelArguments):
    """The run's model config (--config_name, else the checkpoint's), with --attention_dropout applied."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_args.config_name or model_args.model_name_or_path,
                                        **model_args.hub_kwargs)
    if model_args.attention_dropout is not None:
        config.attention_probs_dropout_prob = model_args.attention_dropout
    return config


def load_model_and_processing(model_args: ModelArguments, config, max_seq_length: int, model_class, **config_kwargs):
    """(model, tokenizer, image_processor, processor) from the model flags and the run's `config` (`load_config`),
    updated with `config_kwargs` (the task's labels).

    With --model_name_or_path the checkpoint's weights are loaded; with only --config_name the model is
    built from the config with random weights (training from scratch).
    """
    from .modeling import load_processing

    hub = model_args.hub_kwargs
    config.update(config_kwargs)
    check_window_fits(config, max_seq_length)
    processing_source = model_args.tokenizer_name or model_args.model_name_or_path or model_args.config_name
    tokenizer, image_processor, processor = load_processing(processing_source, **hub)
    if model_args.model_name_or_path:
        model = model_class.from_pretrained(model_args.model_name_or_path, config=config,
                                            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **hub)
    else:
        model = model_class.from_config(config, trust_remote_code=model_args.trust_remote_code)
        init_scratch_classification_heads(model)
    freeze_parameters_without_gradient(model)
    return model, tokenizer, image_processor, processor


def init_scratch_classification_heads(model: torch.nn.Module) -> list[str]:
    """Give two-layer classification heads (LayoutLMv3's dense + tanh + projection, used for token classification
    with 10 labels or more and for sequence classification) fan-scaled weights when training from scratch.

    transformers draws them with std `initializer_range` (0.02) like every other layer. Behind a random body the
    gradient that reaches it through two such layers is about 5x weaker than through one linear head, Adam's
    normalised updates then move the body mostly at random, its feed-forward outputs grow (pre-LayerNorm std 1 ->
    3 within 20 steps) and each post-LN layer shrinks the gradient about 5x: within ten steps the word embeddings
    get 10^4 times less gradient and the head settles on the label prior (F1 0). Xavier-uniform weights (zero
    biases) keep the body learning as a linear head does. Pretrained checkpoints are untouched (their heads are
    loaded or trained from their own body) and the architecture is unchanged. Returns the heads re-initialised.
    """
    heads = []
    for name, module in model.named_modules():
        # LiLT's sequence head is the same RoBERTa-style dense + tanh + projection, behind a post-LN body.
        if type(module).__name__ in ("LayoutLMv3ClassificationHead", "LiltClassificationHead"):
            for layer in (module.dense, module.out_proj):
                torch.nn.init.xavier_uniform_(layer.weight)
                torch.nn.init.zeros_(layer.bias)
            heads.append(name)
    return heads


# Models whose position ids count up from padding_idx + 1, as RoBERTa's do (transformers'
# create_position_ids_from_input_ids), so padding_idx + 1 rows of the position table are never a token's.
POSITIONS_AFTER_PADDING_IDX = ("layoutlmv3", "lilt")


def text_positions(config) -> int:
    """How many tokens a window may hold: the rows of the position-embedding table a token can use."""
    if config.model_type in POSITIONS_AFTER_PADDING_IDX:
        return config.max_position_embeddings - config.pad_token_id - 1
    return config.max_position_embeddings


def check_window_fits(config, max_seq_length: int) -> None:
    """Stop before training when a window is longer than the model's position embeddings: the model itself
    would fail deep inside its embedding lookup with `IndexError: index out of range in self`."""
    limit = text_positions(config)
    if max_seq_length > limit:
        padding = (f", padding_idx {config.pad_token_id}" if config.model_type in POSITIONS_AFTER_PADDING_IDX
                   else "")
        raise ValueError(
            f"--max_seq_length {max_seq_length} does not fit this model: its position embeddings hold at most "
            f"{limit} tokens (max_position_embeddings {config.max_position_embeddings}{padding}); pass "
            f"--max_seq_length {limit} or less"
        )


# Parameters that a model's forward never gives a gradient. DistributedDataParallel stops with "Expected
# to have finished reduction" on those unless it searches the graph for unused parameters every step;
# freezing them changes nothing else, since the optimizer skips parameters without gradients anyway.
# - transformers' LayoutLMv3 looks its relative-position biases up under torch.no_grad();
# - token classification reads the sequence output, never the pooler;
# - LiLT's heads read the text stream only: the last layer's layout stream (its layout attention values and
#   output, its layout feed-forward) feeds nothing (earlier layers' layout streams feed the next layer).
def lilt_last_layout_stream(config) -> tuple[str, ...]:
    last = f"encoder.layer.{config.num_hidden_layers - 1}."
    return tuple(last + part for part in ("attention.self.layout_value.", "attention.layout_output.",
                                          "layout_intermediate.", "layout_output."))


NO_GRADIENT_PARAMETERS = {
    "LayoutLMv3": ("encoder.rel_pos_bias.", "encoder.rel_pos_x_bias.", "encoder.rel_pos_y_bias."),
    "LayoutLMForTokenClassification": ("pooler.",),
    "LayoutLMv2ForTokenClassification": ("pooler.",),
    "Lilt": lilt_last_layout_stream,  # prefixes that depend on the config: a function of it
    # Relation extraction (relation_model.py) reads its encoder's token states: never the pooler either.
    "LayoutRelationModel": ("pooler.", "encoder.rel_pos_bias.", "encoder.rel_pos_x_bias.", "encoder.rel_pos_y_bias."),
}


def freeze_parameters_without_gradient(model: torch.nn.Module) -> list[str]:
    """Set requires_grad=False on the parameters listed in NO_GRADIENT_PARAMETERS; returns their names."""
    class_name = type(model).__name__
    prefixes = tuple(
        prefix for key, names in NO_GRADIENT_PARAMETERS.items() if class_name.startswith(key)
        for prefix in (names(model.config) if callable(names) else names)
    )
    frozen = []
    for name, parameter in model.named_parameters():
        if prefixes and name.split(".", 1)[-1].startswith(prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def save_model(accelerator: Accelerator, model, processor, output_dir: str) -> None:
    """The final model and its processor, loadable with `Auto*.from_pretrained(output_dir)`."""
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(
        output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )
    if accelerator.is_main_process:
        processor.save_pretrained(output_dir)


def epoch_end_hook(accelerator: Accelerator, training: TrainingArguments, model, processor, task: str,
                   on_epoch_end=None):
    """The `fit(on_epoch_end=...)` callback: with --push_every_epoch, save and upload the model; then
    `on_epoch_end(epoch, metrics)` (a hyperparameter search's pruning report), if given."""
    from .export import attach_pipeline

    def end_of_epoch(epoch: int, metrics: dict) -> None:
        if training.push_to_hub and training.push_every_epoch:
            save_model(accelerator, model, processor, training.output_dir)  # every process: it waits for all
            if accelerator.is_main_process:
                attach_pipeline(training.output_dir, task)
                push_folder(training, training.output_dir, f"epoch {epoch}")
        if on_epoch_end is not None and metrics:  # a search prunes on validation metrics; none, nothing to report
            on_epoch_end(epoch, metrics)

    return end_of_epoch


def save_run(accelerator: Accelerator, training: TrainingArguments, flags: dict, model, processor, task: str,
             label_names, results: dict, state: TrainingState) -> None:
    """The final model folder: weights and processor, the task's custom pipeline, all_results.json,
    training_history.json and the model card; logged to MLflow and pushed with --push_to_hub.
    `flags` (every flag of the run) fill the card's hyperparameters. Task-specific reports must be written into
    the output folder before, so they are logged and pushed too."""
    from .export import attach_pipeline

    if accelerator.is_main_process:
        # The results first: a failure in a later, optional step (pipeline files, card, upload) cannot lose them.
        write_json(os.path.join(training.output_dir, "all_results.json"), results)
        write_json(os.path.join(training.output_dir, "training_history.json"), state.history)
    save_model(accelerator, model, processor, training.output_dir)
    if accelerator.is_main_process:
        write_model_card(training.output_dir, task=task, labels=label_names, metrics=results, history=state.history,
                         args=flags)
        attach_pipeline(training.output_dir, task)  # pipeline(task, model=output_dir, trust_remote_code=True)
        log_artifacts(accelerator, training.output_dir, "model")
        if training.push_to_hub:
            repo_id = push_folder(training, training.output_dir, "End of training")
            accelerator.print(f"pushed to https://huggingface.co/{repo_id}")


def push_folder(training: TrainingArguments, folder: str, commit_message: str) -> str:
    """Create the Hub repo if needed and upload `folder` (the token comes from --hub_token or HF_TOKEN)."""
    from huggingface_hub import HfApi

    api = HfApi(token=training.hub_token)
    repo_id = training.hub_model_id or os.path.basename(os.path.normpath(training.output_dir))
    repo_id = api.create_repo(repo_id, private=training.hub_private_repo, exist_ok=True).repo_id
    api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message=commit_message,
        # Checkpoints stay local; test predictions hold the test documents' words (possibly personal data).
        ignore_patterns=["step_*", "epoch_*", "*.partial", "mlflow.db", "mlruns/*", "mlartifacts/*",
                         "test_predictions.jsonl", "misclassified.jsonl"],
    )
    return repo_id
