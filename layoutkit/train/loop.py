"""The training loop (`fit`), read top to bottom like transformers' run_ner_no_trainer.py: epochs of batches with
gradient accumulation, the NaN guard, logging, evaluation after each epoch with early stopping, checkpoints."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .arguments import TrainingArguments
from .checkpoints import TrainingState, resume, save_checkpoint
from .dataloaders import set_epoch, skip_first_batches
from .memory import release_free_memory
from .optimization import PreparedTraining


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class LoopHooks:
    """What a task plugs into the loop.

    `evaluate()` returns the validation metrics (including `state.metric_name`); None when there is no validation
    split: then no epoch is selected and the last one is kept. `model_inputs(batch)` picks the model's inputs out of
    a batch (batches may carry bookkeeping such as word ids). `loss_function(logits, labels)` replaces the model's
    own cross-entropy when given (focal loss, class weights). `on_epoch_end(epoch, metrics)` runs after each
    epoch's evaluation and checkpoint.
    """

    evaluate: Callable[[], dict] | None = None
    model_inputs: Callable[[dict], dict] = field(default=lambda batch: batch)
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    on_epoch_end: Callable[[int, dict], None] | None = None


def fit(accelerator: Accelerator, training: TrainingArguments, prepared: PreparedTraining, state: TrainingState,
        hooks: LoopHooks) -> TrainingState:
    """Train with gradient accumulation, per-epoch evaluation, early stopping and checkpoints.

    The loss, and whether it or the gradient norm went NaN/infinite, are accumulated on the device and read on
    the host only at logging steps, checkpoints and epoch ends, so the step loop does not wait for the device;
    a non-finite value stops training with TrainingDivergedError before anything is saved or selected.
    """
    model, optimizer, lr_scheduler = prepared.model, prepared.optimizer, prepared.lr_scheduler
    train_dataloader, steps_per_epoch = prepared.train_dataloader, prepared.steps_per_epoch
    max_train_steps, num_epochs = prepared.max_train_steps, prepared.num_epochs
    evaluate, model_inputs, loss_function = hooks.evaluate, hooks.model_inputs, hooks.loss_function
    checkpoint_every = training.checkpoint_every

    resume(accelerator, training, state)
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
    running_parts: dict[str, torch.Tensor] = {}  # a summed loss's terms, e.g. pretraining's mlm_loss and mim_loss
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
        set_epoch(train_dataloader, epoch)
        batches = train_dataloader
        if skip_batches:
            batches = skip_first_batches(accelerator, train_dataloader, skip_batches)
            skip_batches = 0
        clock = time.perf_counter()
        for batch in batches:
            with accelerator.accumulate(model):
                loss, parts = training_loss(model, model_inputs(batch), loss_function)
                running_loss += loss.detach()
                for name, part in parts.items():
                    running_parts[name] = running_parts.get(name, 0) + part.detach()
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
            if training.release_memory:  # the step's activations and gradients are freed by now
                release_free_memory()
            state.completed_steps += 1
            progress.update(1)
            if state.completed_steps % training.logging_steps == 0:
                divergence.check(state.completed_steps)
                mean_loss = accelerator.reduce(running_loss, "mean").item() / running_batches
                mean_parts = {f"train_{name}": accelerator.reduce(part, "mean").item() / running_batches
                              for name, part in running_parts.items()}
                accelerator.log(
                    {"train_loss": mean_loss, **mean_parts, "learning_rate": lr_scheduler.get_last_lr()[0],
                     "epoch": epoch},
                    step=state.completed_steps,
                )
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                running_loss.zero_()
                running_parts.clear()
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
        if training.release_memory:
            release_free_memory()
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
        if hooks.on_epoch_end is not None:
            hooks.on_epoch_end(epoch, metrics)
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


def training_loss(model, inputs: dict, loss_function=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The batch's loss, and the terms it sums when the model's output names them (`*_loss` fields beside `loss`,
    as pretraining's objectives give), to be logged each on its own."""
    if loss_function is None:
        outputs = model(**inputs)
        parts = {name: value for name, value in outputs.items()
                 if name.endswith("_loss") and isinstance(value, torch.Tensor)}
        return outputs.loss, parts
    labels = inputs.pop("labels")  # so the model does not also compute its own cross-entropy
    return loss_function(model(**inputs).logits, labels), {}
