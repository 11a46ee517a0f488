"""The training scripts' flags, as dataclasses parsed with transformers' `HfArgumentParser`.

Names follow the transformers `*_no_trainer.py` examples. Each group is a dataclass, so a function takes the group
(or the values) it needs instead of the whole command line; `RunArguments` holds the groups of one run. Values are
checked when parsed (`__post_init__`), so a typo stops the run before any work, with argparse's usage message.

A run can also be described in a JSON or YAML file: `--config_file run.json` supplies values that flags given on
the command line override (a hyperparameter search writes its best trial as such a file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import HfArgumentParser

from ..flags import HelpFormatter, flag, parse_dataclasses

DEFAULT_MODEL = "microsoft/layoutlmv3-base"


def parse_bool(value) -> bool:
    """A flag's true/false value; anything else is an error, not silently False."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false (or yes/no, on/off, 1/0), got {value!r}")


def check_checkpointing_steps(value: str | None) -> str | None:
    """`--checkpointing_steps`: a positive number of steps or "epoch" (a typo would silently never save)."""
    if value is None or value == "epoch" or (str(value).isdigit() and int(value) > 0):
        return None if value is None else str(value)
    raise ValueError(f'--checkpointing_steps: expected a positive number of steps or "epoch", got {value!r}')


@dataclass
class DataArguments:
    _argument_group_name = "data (long documents are split into overlapping windows, not truncated)"

    dataset_name: str | None = flag("a dataset on the Hub (parquet, e.g. pushed by dataset_loader)")
    dataset_config_name: str | None = flag("the Hub dataset's configuration, if it has several")
    dataset_path: str | None = flag("a dataset saved with `python -m dataset_loader ... --output`")
    max_train_samples: int | None = flag("truncate the training split (debugging)")
    max_eval_samples: int | None = flag("truncate the validation and test splits")
    preprocessing_num_workers: int | None = flag("processes for dataset.map")
    overwrite_cache: bool = flag("redo the cached preprocessing", False)
    text_column_name: str | None = flag(
        'the column of words per document; default "words", or "tokens" when there is no "words" column (as in '
        "LayoutLMv3 datasets on the Hub)"
    )
    max_seq_length: int = flag("tokens per window, special tokens included", 512)
    stride: int = flag("tokens shared by consecutive windows", 128)
    pad_to_multiple_of: int = flag("round padded lengths up to this", 8)

    def __post_init__(self):
        if self.dataset_name is None and self.dataset_path is None:
            raise ValueError("give --dataset_path (a saved dataset) or --dataset_name (a Hub dataset)")
        if self.stride >= self.max_seq_length - 2:
            raise ValueError("--stride must be smaller than --max_seq_length minus the two special tokens")


@dataclass
class ModelArguments:
    _argument_group_name = "model"

    model_name_or_path: str | None = flag(
        f"checkpoint to fine-tune (Hub id or folder); default {DEFAULT_MODEL} unless --config_name is given, in "
        "which case the model is trained from scratch from that config"
    )
    config_name: str | None = flag("config to train from scratch (or override the checkpoint's)")
    tokenizer_name: str | None = flag("processor/tokenizer if not the checkpoint's")
    cache_dir: str | None = flag("where to cache downloads from the Hub")
    revision: str = flag("checkpoint revision on the Hub", "main")
    trust_remote_code: bool = flag("allow code from the checkpoint's repo", False)
    attention_dropout: float | None = flag(
        "dropout on the attention probabilities, set as the config's attention_probs_dropout_prob (0.1 in the "
        "published checkpoints); 0 lets PyTorch's fused attention kernel run: 1.8x faster steps and 32%% less peak "
        "memory (docs/speed.md), but the quick start's model lost 2.6 test F1 points with it and --group_by_length "
        "together (docs/performance.md), so it is not the default"
    )

    ignore_mismatched_sizes: bool = flag(
        "load a checkpoint whose classification head has another number of labels (the head is then trained anew)",
        False,
    )

    def __post_init__(self):
        if self.model_name_or_path is None and self.config_name is None:
            self.model_name_or_path = DEFAULT_MODEL

    @property
    def hub_kwargs(self) -> dict:
        """What every `from_pretrained` of the run takes."""
        return dict(cache_dir=self.cache_dir, revision=self.revision, trust_remote_code=self.trust_remote_code)


SCHEDULERS = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"]


@dataclass
class TrainingArguments:
    _argument_group_name = "training"

    output_dir: str = field(metadata={"help": "where the model, results and checkpoints go"})
    per_device_train_batch_size: int = flag("training windows per process", 8)
    per_device_eval_batch_size: int = flag("evaluation windows per process", 16)
    learning_rate: float = flag("peak learning rate of AdamW", 5e-5)
    weight_decay: float = flag("AdamW weight decay (not on biases, norms)", 0.0)
    max_grad_norm: float = flag("clip gradients to this norm; 0: no clipping", 1.0)
    num_train_epochs: int = flag("passes over the training windows", 3)
    max_train_steps: int | None = flag("overrides --num_train_epochs")
    gradient_accumulation_steps: int = flag("batches per optimizer step", 1)
    lr_scheduler_type: SCHEDULERS = flag("learning-rate schedule", "linear")
    num_warmup_steps: int = flag("linear warm-up steps of the schedule", 0)
    warmup_ratio: float = flag("used when --num_warmup_steps is 0", 0.0)
    seed: int = flag("seeds the model init, shuffling, validation carve and pretraining masks", 42)
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] | None = flag(
        "autocast precision; auto: bf16 where the device multiplies bf16 faster than fp32 (measured once at start), "
        "else none; default: what `accelerate launch`/`accelerate config` set"
    )
    early_stopping_patience: int | None = flag("epochs without improvement before stopping")
    checkpointing_steps: str | None = flag('save the training state every N steps, or "epoch"')
    checkpoints_total_limit: int | None = flag(
        "keep only the newest N checkpoints (accelerate's ProjectConfiguration.total_limit); default: all"
    )
    resume_from_checkpoint: str | None = flag('a checkpoint folder, or "latest" in --output_dir')
    logging_steps: int = flag("log loss and learning rate every N steps", 10)
    dataloader_num_workers: int = flag("DataLoader worker processes", 0)
    group_by_length: bool = flag(
        "batch training windows of similar length together (shuffled in groups, as transformers' Trainer does), "
        "so dynamic padding pads little: 1.65x faster steps (docs/speed.md); not the default, since with "
        "--attention_dropout 0 it cost the quick start's model 2.6 test F1 points (docs/performance.md)",
        False,
    )

    gradient_checkpointing: bool = flag(
        "keep only each encoder layer's inputs in the forward pass and recompute the rest in the backward pass "
        "(transformers' own where the model supports it, else layoutkit wraps the encoder layers, as for "
        "LayoutLMv3): less memory per step, for about one more forward pass (docs/speed.md)",
        False,
    )

    release_memory: bool = flag(
        "hand the memory freed by the encoding, by each optimizer step and by each evaluation back to the system, "
        "and map blocks of 4 MiB or more on their own (glibc's malloc_trim and mallopt; does nothing on other C "
        "libraries): lower peak memory with dynamic padding, whose changing tensor shapes fragment the heap "
        "(docs/speed.md)",
        False,
    )

    # Given as text (true/false, yes/no, on/off, 1/0) and a bool once parsed; argparse's own bool reads any
    # non-empty text as True.
    ddp_find_unused_parameters: str | None = flag(
        "let DistributedDataParallel search for parameters without gradient each step (true/false); default: on "
        "for LayoutLMv2/LayoutXLM (its detectron2 backbone has unused FPN levels), off otherwise"
    )

    # tracking and sharing
    with_tracking: bool = flag("log to the trackers of --report_to", False)
    report_to: str = flag(
        '"mlflow" (local store unless MLFLOW_TRACKING_URI), "tensorboard", "wandb", ... or "all"', "mlflow"
    )
    experiment_name: str | None = flag("MLflow experiment; default: the script's name")
    push_to_hub: bool = flag("upload the final model folder to the Hub", False)
    hub_model_id: str | None = flag("repo to push to; default: the output folder's name")
    hub_private_repo: bool = flag("create the Hub repo as private", False)
    hub_token: str | None = flag("default: the HF_TOKEN environment variable / cached login")
    push_every_epoch: bool = flag("also upload after each epoch", False)

    def __post_init__(self):
        self.checkpointing_steps = check_checkpointing_steps(self.checkpointing_steps)
        if self.ddp_find_unused_parameters is not None:
            try:
                self.ddp_find_unused_parameters = parse_bool(self.ddp_find_unused_parameters)
            except ValueError as error:
                raise ValueError(f"--ddp_find_unused_parameters: {error}") from None

    @property
    def checkpoint_every(self) -> int | None:
        """--checkpointing_steps as a number of steps, None for "epoch" or none."""
        return int(self.checkpointing_steps) if str(self.checkpointing_steps).isdigit() else None


@dataclass
class LossArguments:
    _argument_group_name = "loss"

    loss: Literal["cross_entropy", "focal"] = flag("training loss", "cross_entropy")
    focal_gamma: float = flag("focusing parameter of --loss focal", 2.0)
    class_weights: str | None = flag(
        '"auto" (inverse label frequency in the training split, normalised to mean 1) or one weight per label, '
        "comma-separated in label-id order"
    )


@dataclass
class AugmentArguments:
    _argument_group_name = "augmentation"

    augment: bool = flag("add augmented copies of the training documents (training split only)", False)
    augment_copies: int = flag("augmented copies per training document with --augment", 2)


@dataclass
class HpSearchArguments:
    _argument_group_name = "hyperparameter search"

    hp_search: Literal["optuna"] | None = flag("search hyperparameters instead of one run")
    n_trials: int = flag("trials of --hp_search", 10)
    hp_space: str | None = flag(
        'JSON file: {"flag": {"type": "float"|"int"|"categorical", "low", "high", "log"|"choices"}}; default: '
        "learning rate, batch size, epochs, warmup ratio, weight decay"
    )
    hp_pruner: Literal["median", "none"] = flag(
        "stop trials whose validation metric trails the median of earlier trials", "median"
    )


@dataclass
class StreamingArguments:
    _argument_group_name = "streaming (a corpus read as it is trained on: it may exceed memory and disk)"

    streaming: bool = flag(
        "read the training split as a datasets.IterableDataset: pages shuffled in a buffer, encoded as they are "
        "read (no encoding cache is written), shared out across processes; the corpus is read again, in a new "
        "order, when it runs out. Needs --max_train_steps (a stream has no length). --dataset_path: a saved "
        "dataset, or a folder of parquet shards (train-*.parquet, validation-*.parquet, as push_to_hub writes them); "
        "--dataset_name: a Hub dataset, streamed. The validation split is read whole (keep it small: "
        "--max_eval_samples)",
        False,
    )
    shuffle_buffer_size: int = flag("with --streaming: pages in the shuffle buffer (memory: that many pages)", 1000)
    eval_steps: int | None = flag(
        "with --streaming: evaluate on validation every N optimizer steps (the kept model, early stopping and "
        '--checkpointing_steps epoch follow these evaluations); default: once, after --max_train_steps'
    )

    def __post_init__(self):
        if self.shuffle_buffer_size < 1:
            raise ValueError(f"--shuffle_buffer_size must be at least 1, got {self.shuffle_buffer_size}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"--eval_steps must be at least 1, got {self.eval_steps}")

    def problem_with(self, training: TrainingArguments) -> str | None:
        """What the other flags of the run ask that a stream cannot give, or None."""
        if not self.streaming:
            return "--eval_steps is for --streaming runs (the others evaluate after each epoch)" if self.eval_steps \
                else None
        if training.max_train_steps is None:
            return ("--streaming needs --max_train_steps: a streamed corpus has no length, so neither epochs nor "
                    "the learning-rate schedule can be sized from it")
        if training.group_by_length:
            return "--group_by_length needs every window's length up front; a streamed corpus has none: drop one"
        return None


@dataclass
class RunArguments:
    """The argument groups of one training run. `args.learning_rate` reads a value by its flag name, whichever
    group holds it (handy in logs and tests); code that uses a value takes its group (`args.training`)."""

    data: DataArguments
    model: ModelArguments
    training: TrainingArguments
    task: Any  # the task's own dataclass
    objective: LossArguments | None = None
    augmentation: AugmentArguments | None = None
    search: HpSearchArguments | None = None
    streaming: StreamingArguments | None = None

    def groups(self) -> dict[str, Any]:
        """The groups this run has, by field name (optional groups the script does not take are left out)."""
        # Read from __dict__: `__getattr__` below calls this, and must not recurse on a half-built instance.
        return {f.name: self.__dict__[f.name] for f in dataclasses.fields(RunArguments)
                if self.__dict__.get(f.name) is not None}

    def __getattr__(self, name: str):
        # Only called when `name` is not one of the groups: look the flag up in them.
        for group in self.groups().values():
            if name in {f.name for f in dataclasses.fields(group)}:
                return getattr(group, name)
        raise AttributeError(f"no flag {name!r}")

    def flags(self) -> dict[str, Any]:
        """Every flag's value by name (tracking parameters, the model card, a search's best values)."""
        return {f.name: getattr(group, f.name) for group in self.groups().values() for f in dataclasses.fields(group)}

    def replace(self, **values) -> RunArguments:
        """A copy with some flags changed (a search trial's), each in the group that holds it."""
        unknown = set(values) - set(self.flags())
        if unknown:
            raise ValueError(f"not flags of this script: {sorted(unknown)}")
        changed = {}
        for name, group in self.groups().items():
            changes = {k: v for k, v in values.items() if k in {f.name for f in dataclasses.fields(group)}}
            if changes:
                changed[name] = dataclasses.replace(group, **changes)
        return dataclasses.replace(self, **changed)


GROUP_CLASSES = {"data": DataArguments, "model": ModelArguments, "training": TrainingArguments}
OPTIONAL_GROUPS = {"objective": LossArguments, "augmentation": AugmentArguments, "search": HpSearchArguments,
                   "streaming": StreamingArguments}
# The groups a task takes unless it says otherwise; streaming only where the task encodes a stream (pretraining).
ALL_OPTIONAL_GROUPS = ("objective", "augmentation", "search")


def build_parser(task_arguments, optional_groups=ALL_OPTIONAL_GROUPS, description=None) -> HfArgumentParser:
    """The HfArgumentParser of a training script: the shared groups, the task's dataclass, `--config_file`."""
    classes = [*GROUP_CLASSES.values(), task_arguments, *(OPTIONAL_GROUPS[name] for name in optional_groups)]
    parser = HfArgumentParser(classes, description=description, formatter_class=HelpFormatter)
    parser.add_argument("--config_file", help="a JSON or YAML file of flag values (flags given on the command "
                        "line win)")
    return parser


def read_config_file(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        if path.endswith((".yaml", ".yml")):
            import yaml

            return yaml.safe_load(handle) or {}
        return json.load(handle)


def parse_run_arguments(task_arguments, argv=None, description=None,
                        optional_groups=ALL_OPTIONAL_GROUPS) -> RunArguments:
    """Parse a training script's command line into RunArguments; errors exit with argparse's usage message."""
    parser = build_parser(task_arguments, optional_groups, description)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config_file")
    config_file = pre.parse_known_args(argv)[0].config_file
    if config_file:
        values = read_config_file(config_file)
        fields = {f.name for cls in parser.dataclass_types for f in dataclasses.fields(cls)} | {"config_file"}
        unknown = sorted(set(values) - fields)
        if unknown:
            parser.error(f"{config_file}: unknown keys {unknown}")
        parser.set_defaults(**values)
        for action in parser._actions:  # a value from the file satisfies a required flag (--output_dir)
            if action.dest in values:
                action.required = False
    groups = [g for g in parse_dataclasses(parser, argv) if dataclasses.is_dataclass(g)]  # drop the namespace of --config_file
    data, model, training, task, *optional = groups
    run = RunArguments(data=data, model=model, training=training, task=task, **dict(zip(optional_groups, optional)))
    problem = run.streaming.problem_with(training) if run.streaming is not None else None
    if problem:
        parser.error(problem)
    return run


# ------------------------------------------------------------------------------------------------ the tasks' flags
BOX_LEVELS = Literal["word", "segment"]
BOX_LEVEL_HELP = ("word boxes, or segment boxes (each word carries its line's or entity's box, as LayoutLMv3's "
                  "published FUNSD/CORD results do; at inference the OCR line box plays that role)")


@dataclass
class TokenClassificationArguments:
    _argument_group_name = "token classification"

    label_column_name: str | None = flag("the column of word labels (a ClassLabel sequence); default ner_tags")
    label_all_tokens: bool = flag(
        "label every sub-token of a word (B- becomes I- after the first), not only the first", False
    )
    box_level: BOX_LEVELS = flag(BOX_LEVEL_HELP, "word")
    return_entity_level_metrics: bool = flag(
        "also record each entity type's precision/recall/F1 after every epoch (training_history.json, trackers); "
        "the final evaluation in all_results.json and the model card always has them",
        False,
    )
    review_precision: float = flag(
        "after training, the calibrated field score above which values are accepted without review is picked on "
        "validation so that the accepted values reach this precision (recorded in config.json's field_trust)",
        0.99,
    )
    review_confidence: float = flag(
        "the confidence with which the accepted values' precision must reach --review_precision (the lower bound "
        "of the validation values' precision, so that new documents reach it too; 0: the validation share itself)",
        0.95,
    )

    def __post_init__(self):
        if not 0 < self.review_precision <= 1:
            raise ValueError(f"--review_precision must be in (0, 1], got {self.review_precision}")
        if not 0 <= self.review_confidence < 1:
            raise ValueError(f"--review_confidence must be in [0, 1), got {self.review_confidence}")


@dataclass
class DocumentClassificationArguments:
    _argument_group_name = "document classification"

    metric_for_best_model: Literal["accuracy", "f1_macro"] = flag(
        "validation metric that picks the best epoch and drives early stopping", "accuracy"
    )
    label_column_name: str = flag("the ClassLabel column", "label", aliases=["--label_column"])
    ocr_lang: str = flag(
        "Tesseract language for datasets without words (a Hub imagefolder): OCR runs once, then is cached", "eng"
    )


@dataclass
class RelationExtractionArguments:
    _argument_group_name = "relation extraction"

    label_column_name: str | None = flag(
        "the column of word labels (a ClassLabel sequence) that types the entities; default ner_tags"
    )
    relation_types: str | None = flag(
        "candidate links as HEAD:TAIL entity types, comma-separated (e.g. QUESTION:ANSWER, the published "
        "FUNSD/XFUND key-value setting); default: every type pair the training relations link"
    )
    pooling: Literal["first", "mean"] = flag("an entity's vector: its first token's state or the mean of its tokens'",
                                             "first")
    threshold: float = flag("link probability from which a pair is a link", 0.5)
    all_heads_per_tail: bool = flag(
        "keep every head above --threshold for a tail; default: only its best one (an answer belongs to one "
        "question, a value to one key)",
        False,
    )
    box_level: BOX_LEVELS = flag(BOX_LEVEL_HELP, "word")
    ner_model_name_or_path: str | None = flag(
        "a token-classification checkpoint (run_invoice_ner.py) whose predicted entities the test split is also "
        "scored on (end to end); its entity types must be the dataset's"
    )
