"""One training run for any task: arguments, data, model, loop, test, save.

The driver is the same for every task; a `Task` (token classification in ner_task.py, document classification in
classification_task.py, relation extraction in relation_task.py) supplies only what differs: its flags, the checks
and labels of its data, how documents become windows, how windows are batched, how a split is evaluated and what
is reported. The scripts (`run_invoice_ner.py`, ...) and the `layoutkit train-*` commands call `main` with a task.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from accelerate.utils import set_seed

from ..pipelines.encoding import LayoutCollator
from ..pipelines.modeling import model_family
from .accelerator_setup import build_accelerator, init_tracking
from .arguments import ALL_OPTIONAL_GROUPS, RunArguments, parse_run_arguments
from .augment import augment_training_split
from .checkpoints import TrainingState, restore_best, training_summary
from .data import carve_validation_split, dataset_preprocessing, load_raw_datasets
from .dataloaders import build_dataloaders
from .loop import LoopHooks, fit
from .losses import build_loss, parse_class_weights
from .memory import map_large_blocks, release_free_memory
from .model_setup import enable_gradient_checkpointing, load_config, load_model_and_processing
from .optimization import prepare_training
from .publishing import epoch_end_hook, save_run, write_jsonl
from .streaming import stream_training_split


@dataclass
class Evaluation:
    """A split's evaluation: flat metrics, one record per document (written as SPLIT_predictions.jsonl), and
    whatever else the task reports from (a confusion matrix)."""

    metrics: dict
    records: list = field(default_factory=list)
    extra: Any = None


@dataclass
class Processing:
    """The loaded model's preprocessing: tokenizer, image processor (None for text-only models), family."""

    tokenizer: Any
    image_processor: Any
    family: Any


class Task:
    """What one kind of training run supplies to the driver. Subclasses set the class attributes and implement
    `read_labels`, `model_class`, `encode` and `evaluate`; the other methods have defaults."""

    pipeline_task: str  # the custom pipeline saved with the model, e.g. "token-classification"
    script_name: str  # the default MLflow experiment
    arguments_class: type  # the task's flags (a dataclass in arguments.py)
    optional_groups: tuple = ALL_OPTIONAL_GROUPS  # shared flag groups the task takes
    collator_class = LayoutCollator  # batches windows with dynamic padding
    model_inputs: Callable[[dict], dict] = staticmethod(lambda batch: batch)

    def __init__(self, args: RunArguments):
        self.args = args
        self.label_names: list[str] = []

    @property
    def metric_name(self) -> str:
        """The validation metric that picks the best epoch."""
        return "f1"

    # ---- data
    def prepare_dataset(self, accelerator, raw):
        """Check and rename the task's columns (before the validation carve); returns the DatasetDict."""
        return raw

    stratify_column: str | None = None  # the class column a carved validation split keeps the proportions of

    def read_labels(self, raw) -> None:
        """Set `self.label_names` (and whatever else the task derives from the training split)."""
        raise NotImplementedError

    def model_class(self):
        """What `from_pretrained`/`from_config` is called on: an Auto* class or a loader."""
        raise NotImplementedError

    def config_kwargs(self) -> dict:
        id2label = dict(enumerate(self.label_names))
        return dict(num_labels=len(self.label_names), id2label=id2label, label2id={v: k for k, v in id2label.items()})

    def recorded_preprocessing(self) -> dict:
        """Task settings recorded in config.json's `document_preprocessing` beside the page resize and windows."""
        return {}

    def document_preprocessing(self) -> dict:
        """config.json's `document_preprocessing`: what inference (the pipelines) repeats exactly."""
        data = self.args.data
        return {**dataset_preprocessing(data.dataset_path), "max_seq_length": data.max_seq_length,
                "stride": data.stride, **self.recorded_preprocessing()}

    def configure_model(self, config) -> None:
        """Record further inference settings on the model's config."""

    def encode(self, raw, split: str, processing: Processing):
        """Split `split` of `raw` as windows (a `Dataset.map`, cached)."""
        raise NotImplementedError

    def collator(self, processing: Processing, evaluation: bool = False):
        """The batches' collator; `evaluation`: the one of the validation and test dataloaders (a task whose
        collator draws at random, as masking does, draws them the same way at every evaluation)."""
        return self.collator_class(processing.tokenizer.pad_token_id, self.args.data.pad_to_multiple_of,
                                   processing.family.image_input)

    def training_label_ids(self, raw) -> list[int]:
        """Every label id of the training split (for `--class_weights auto`)."""
        raise NotImplementedError

    def loss_function(self, raw):
        """A `loss(logits, labels)` replacing the model's own (`--loss`, `--class_weights`), or None."""
        objective = self.args.objective
        if objective is None:
            return None
        class_weights = parse_class_weights(objective.class_weights, self.label_names,
                                            lambda: self.training_label_ids(raw))
        return build_loss(objective, class_weights)

    def describe(self, raw, windows) -> str:
        return f"{len(raw['train'])} training documents in {len(windows['train'])} windows"

    # ---- evaluation and report
    def evaluate(self, accelerator, model, dataloader, raw, split: str, final: bool) -> Evaluation:
        """Metrics of `split` (`final`: the kept model's report, else an epoch's validation)."""
        raise NotImplementedError

    def headline(self, metrics: dict) -> str:
        return " ".join(f"{name}={metrics[name]:.4f}" for name in ("precision", "recall", "f1", "accuracy")
                        if name in metrics)

    def card_labels(self) -> list[str]:
        """The labels the model card lists."""
        return self.label_names

    def card_overrides(self, results: dict) -> dict:
        """Model-card fields the task words itself (`build_model_card` arguments: intended_use, usage, tags)."""
        return {}

    def run_results(self) -> dict:
        """Facts of the run for all_results.json (e.g. the metric that picked the epoch)."""
        return {}

    def fit_confidence(self, accelerator, model, dataloader, raw, split: str) -> dict:
        """After training, on the validation split: fit what the checkpoint records about its confidence (the
        token-classification task's field calibration and review threshold, into the model's config).
        Returns results for all_results.json."""
        return {}

    def report(self, accelerator, model, raw, split: str, prefix: str, evaluation: Evaluation,
               processing: Processing) -> dict:
        """Further results of the final evaluation (written into all_results.json) and report files; runs on
        every process (files, into the output folder, only on the main one)."""
        return {}


def parse_args(task_class: type[Task], argv=None, description: str | None = None) -> RunArguments:
    """The flags of `task_class`'s script: the shared groups, the task's own, and the optional ones it takes."""
    return parse_run_arguments(task_class.arguments_class, argv, description or task_class.__doc__,
                               task_class.optional_groups)


def main(task_class: type[Task], argv=None, description: str | None = None) -> dict:
    """Parse the flags of `task_class`'s script and run it: one training run, or a hyperparameter search."""
    args = parse_args(task_class, argv, description)
    if args.search is not None and args.search.hp_search:
        from .hp_search import run_hp_search

        def train(trial_args, on_epoch_end=None):
            return train_and_evaluate(task_class(trial_args), on_epoch_end)

        probe = task_class(args)
        return run_hp_search(args, train, metric_name=probe.metric_name, experiment_name=task_class.script_name)
    return train_and_evaluate(task_class(args), None)


def train_and_evaluate(task: Task, on_epoch_end=None) -> dict:
    """One training run: data, model, loop, test, save. Returns all_results.json's content."""
    args = task.args
    data, training = args.data, args.training
    if training.release_memory:  # before the encoding and the model allocate anything large
        map_large_blocks()
    config = load_config(args.model)
    accelerator = build_accelerator(training, config.model_type)
    set_seed(training.seed)
    if accelerator.is_main_process:
        os.makedirs(training.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()

    # ---- data
    streaming = args.streaming if args.streaming is not None and args.streaming.streaming else None
    raw = task.prepare_dataset(accelerator, load_raw_datasets(data, args.model.cache_dir, streaming is not None))
    # Before augmentation, so no augmented copy of a validation document ends up in train.
    validation_split = carve_validation_split(raw, training.seed, stratify_by_column=task.stratify_column)
    accelerator.print(f"validation split: {validation_split}")
    num_train_documents = None if streaming else len(raw["train"])
    if streaming:  # train read as a shuffled stream from here on (streaming.py)
        stream_training_split(raw, streaming, training.seed,
                              accelerator.num_processes * max(1, training.dataloader_num_workers))
    task.read_labels(raw)

    # ---- model
    model, tokenizer, image_processor, processor = load_model_and_processing(
        args.model, config, data.max_seq_length, task.model_class(), **task.config_kwargs()
    )
    if training.gradient_checkpointing:
        accelerator.print(enable_gradient_checkpointing(model))
    if args.augmentation is not None and args.augmentation.augment:
        # A model without an image processor (LayoutLM v1, LiLT) reads no pixels: only its boxes are augmented.
        augment_training_split(accelerator, args.augmentation.augment_copies, raw, training.seed,
                               data.preprocessing_num_workers, load_from_cache_file=not data.overwrite_cache,
                               images=image_processor is not None)
    processing = Processing(tokenizer, image_processor, model_family(config))
    model.config.document_preprocessing = task.document_preprocessing()
    task.configure_model(model.config)

    with accelerator.main_process_first():
        windows = {split: task.encode(raw, split, processing) for split in raw}
    train_dataloader, eval_dataloaders, eval_split = build_dataloaders(
        training, windows, task.collator(processing), task.collator(processing, evaluation=True),
        streaming.eval_steps if streaming else None)
    loss_function = task.loss_function(raw)
    if training.release_memory:  # what the encoding freed, before training allocates anew
        release_free_memory()

    # ---- optimizer, schedule, accelerate
    prepared = prepare_training(accelerator, training, model, train_dataloader, eval_dataloaders)
    model, eval_dataloaders = prepared.model, prepared.eval_dataloaders
    state = TrainingState(metric_name=task.metric_name)
    init_tracking(accelerator, training, args.flags(), task.script_name)
    accelerator.print(
        f"{task.describe(raw, windows)}; model {processing.family.model_type}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; {prepared.max_train_steps} steps on "
        f"{accelerator.num_processes} processes"
    )

    # ---- train, evaluating on validation (never on test) after every epoch
    def evaluate_validation() -> dict:
        return task.evaluate(accelerator, model, eval_dataloaders[eval_split], raw, eval_split, final=False).metrics

    hooks = LoopHooks(evaluate=evaluate_validation if eval_split else None, model_inputs=task.model_inputs,
                      loss_function=loss_function,
                      on_epoch_end=epoch_end_hook(accelerator, training, model, processor, task.pipeline_task,
                                                  on_epoch_end))
    fit(accelerator, training, prepared, state, hooks)

    # ---- final model = best validation epoch (the last one without validation); report on test
    restore_best(accelerator, model, state)
    results = {f"eval_{k}": v for k, v in state.best_metrics.items()}
    results.update(task.run_results())
    results["validation_split"] = validation_split
    results.update(training_summary(state, num_train_documents, prepared.steps_per_epoch))
    # Before the test report and the save: the confidence fitted on validation goes into the saved config.
    if eval_split is not None:
        results.update(task.fit_confidence(accelerator, model, eval_dataloaders[eval_split], raw, eval_split))
    # Without a test split the kept model is reported on validation (its numbers are then not a test score).
    report_split = "test" if "test" in eval_dataloaders else eval_split
    if report_split is not None:
        evaluation = task.evaluate(accelerator, model, eval_dataloaders[report_split], raw, report_split, final=True)
        prefix = "test" if report_split == "test" else "eval"
        results.update({f"{prefix}_{k}": v for k, v in evaluation.metrics.items()})
        accelerator.print(f"{report_split}: {task.headline(evaluation.metrics)}")
        results.update(task.report(accelerator, model, raw, report_split, prefix, evaluation, processing))
        accelerator.log({k: v for k, v in results.items() if k.startswith(f"{prefix}_")
                         and isinstance(v, (int, float))}, step=state.completed_steps)
        if accelerator.is_main_process:
            write_jsonl(os.path.join(training.output_dir, f"{report_split}_predictions.jsonl"), evaluation.records)

    save_run(accelerator, training, args.flags(), model, processor, task.pipeline_task, task.card_labels(), results,
             state, card_overrides=task.card_overrides(results))
    accelerator.end_training()
    return results
