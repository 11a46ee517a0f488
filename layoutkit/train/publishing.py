"""The run's output folder: the final model and processor, its custom pipeline, all_results.json,
training_history.json, the model card, and the upload to the Hub (--push_to_hub, --push_every_epoch)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from accelerate import Accelerator

from model_card import write_model_card

from .accelerator_setup import log_artifacts
from .arguments import TrainingArguments

if TYPE_CHECKING:
    from .checkpoints import TrainingState


def write_json(path: str, payload) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_jsonl(path: str, records) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


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
    from ..pipelines.attach import PIPELINES, attach_pipeline

    def end_of_epoch(epoch: int, metrics: dict) -> None:
        if training.push_to_hub and training.push_every_epoch:
            save_model(accelerator, model, processor, training.output_dir)  # every process: it waits for all
            if accelerator.is_main_process:
                if task in PIPELINES:
                    attach_pipeline(training.output_dir, task)
                push_folder(training, training.output_dir, f"epoch {epoch}")
        if on_epoch_end is not None and metrics:  # a search prunes on validation metrics; none, nothing to report
            on_epoch_end(epoch, metrics)

    return end_of_epoch


def save_run(accelerator: Accelerator, training: TrainingArguments, flags: dict, model, processor, task: str,
             label_names, results: dict, state: TrainingState, card_overrides: dict | None = None) -> None:
    """The final model folder: weights and processor, the task's custom pipeline, all_results.json,
    training_history.json and the model card; logged to MLflow and pushed with --push_to_hub.
    `flags` (every flag of the run) fill the card's hyperparameters. Task-specific reports must be written into
    the output folder before, so they are logged and pushed too. A task without a shipped pipeline (pretraining)
    gets none."""
    from ..pipelines.attach import PIPELINES, attach_pipeline

    if accelerator.is_main_process:
        # The results first: a failure in a later, optional step (pipeline files, card, upload) cannot lose them.
        write_json(os.path.join(training.output_dir, "all_results.json"), results)
        write_json(os.path.join(training.output_dir, "training_history.json"), state.history)
    save_model(accelerator, model, processor, training.output_dir)
    if accelerator.is_main_process:
        write_model_card(training.output_dir, task=task, labels=label_names, metrics=results, history=state.history,
                         args=flags, **(card_overrides or {}))
        if task in PIPELINES:
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
