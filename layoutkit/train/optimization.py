"""The optimizer and the learning-rate schedule, and accelerate's `prepare` of everything the loop steps through
(`prepare_training` -> `PreparedTraining`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from transformers import get_scheduler
from transformers.trainer_pt_utils import get_parameter_names

from .arguments import TrainingArguments
from .dataloaders import StreamedBatches

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


@dataclass
class PreparedTraining:
    """What the loop steps through, after accelerate's `prepare`: the model (wrapped for several processes), the
    optimizer and schedule, the dataloaders (each process's share) and the schedule's sizes in optimizer steps."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    train_dataloader: object
    eval_dataloaders: dict
    steps_per_epoch: int
    max_train_steps: int
    num_epochs: int


def prepare_training(accelerator: Accelerator, training: TrainingArguments, model, train_dataloader,
                     eval_dataloaders: dict) -> PreparedTraining:
    """Optimizer, accelerate's prepare and the LR schedule, in the order that sizes the schedule right.

    The schedule is sized from the prepared (per-process) dataloader, so N processes take N times fewer steps of an
    N times larger global batch. A streamed corpus's "epoch" is a period of --eval_steps (`StreamedBatches`).
    """
    optimizer = create_optimizer(model, training.learning_rate, training.weight_decay)
    model, optimizer, train_dataloader = accelerator.prepare(model, optimizer, train_dataloader)
    if isinstance(train_dataloader, StreamedBatches):  # passed through by `prepare`: its dataloader is prepared
        train_dataloader = train_dataloader.prepare(accelerator)
    steps_per_epoch = math.ceil(len(train_dataloader) / training.gradient_accumulation_steps)
    max_train_steps, num_epochs = schedule(training, steps_per_epoch)
    lr_scheduler = accelerator.prepare(
        create_scheduler(training, optimizer, max_train_steps, accelerator.num_processes)
    )
    eval_dataloaders = {split: accelerator.prepare(dl) for split, dl in eval_dataloaders.items()}
    return PreparedTraining(model, optimizer, lr_scheduler, train_dataloader, eval_dataloaders, steps_per_epoch,
                            max_train_steps, num_epochs)
