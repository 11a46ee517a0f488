"""The resumable training state and its checkpoints: what `--checkpointing_steps` writes and
`--resume_from_checkpoint` reads back (accelerate's `save_state` plus training_state.json and the best weights)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, field

import torch
from accelerate import Accelerator

from .arguments import TrainingArguments
from .publishing import write_json

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


def resume(accelerator: Accelerator, training: TrainingArguments, state: TrainingState) -> None:
    """With --resume_from_checkpoint: accelerate's state (model, optimizer, schedule, dataloader and RNG states)
    and the training state from the checkpoint, so the loop continues exactly where it stopped."""
    if not training.resume_from_checkpoint:
        return
    path = find_checkpoint(training.output_dir, training.resume_from_checkpoint)
    accelerator.print(f"Resuming from {path}")
    accelerator.load_state(path)
    state.load(path)


def restore_best(accelerator: Accelerator, model: torch.nn.Module, state: TrainingState) -> None:
    """Load the best epoch's weights into the model (the final model is the best one, not the last)."""
    if state.best_state_dict is not None:
        accelerator.unwrap_model(model).load_state_dict(state.best_state_dict)


def training_summary(state: TrainingState, num_train_documents: int | None, steps_per_epoch: int) -> dict:
    """The run's training figures for all_results.json (documents/s counts all processes; None for a streamed
    corpus, `num_train_documents` None, whose size is not known)."""
    epochs_trained = state.completed_steps / steps_per_epoch
    return {
        "best_epoch": state.best_epoch,
        "train_steps": state.completed_steps,
        "train_seconds": round(state.train_seconds, 2),
        "train_documents_per_second": round(num_train_documents * epochs_trained / state.train_seconds, 3)
        if state.train_seconds and num_train_documents is not None else None,
    }
