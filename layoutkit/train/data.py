"""Loading the raw DatasetDict a training script works on."""

from __future__ import annotations

import os

from datasets import ClassLabel, DatasetDict, load_dataset, load_from_disk

from dataset_loader.preprocessing import load_preprocessing

from .arguments import DataArguments


def load_raw_datasets(args: DataArguments, cache_dir: str | None = None, streaming: bool = False) -> DatasetDict:
    """A saved dataset (`--dataset_path`) or a Hub dataset (`--dataset_name`), optionally truncated.

    With `streaming` (--streaming), a folder of parquet shards or a Hub dataset comes with its train split as an
    IterableDataset (streaming.py); a saved dataset is loaded as usual (memory-mapped), and streamed after the
    validation carve."""
    if streaming:
        from .streaming import load_streamed_corpus  # streaming.py imports this module

        streamed = load_streamed_corpus(args, cache_dir)
        if streamed is not None:
            return streamed
    if args.dataset_path:
        if not os.path.isdir(args.dataset_path):
            raise FileNotFoundError(
                f"--dataset_path {args.dataset_path}: no such folder; build one with "
                "`python -m dataset_loader build --data_dir DIR --output OUT`"
            )
        raw = load_from_disk(args.dataset_path)
    else:
        raw = load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=cache_dir)
    if not isinstance(raw, DatasetDict) or "train" not in raw:
        raise ValueError(f"{args.dataset_path or args.dataset_name}: expected a DatasetDict with a 'train' split")
    raw = standardize_text_column(raw, args.text_column_name)
    if args.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(args.max_train_samples, len(raw["train"]))))
    if args.max_eval_samples is not None:
        for split in ("validation", "test"):
            if split in raw:
                raw[split] = raw[split].select(range(min(args.max_eval_samples, len(raw[split]))))
    return raw


# Column names other datasets use for the words, tried in order when --text_column_name is not given.
TEXT_COLUMNS = ("words", "tokens")


def standardize_text_column(raw: DatasetDict, text_column: str | None) -> DatasetDict:
    """Rename the words column to `words`, the name the rest of the code uses.

    With `text_column` None, "words" is used when present, else "tokens" (LayoutLMv3 datasets on the Hub,
    e.g. FUNSD and CORD conversions); datasets with neither (an image folder) are left as they are.
    """
    columns = raw["train"].column_names
    if text_column is not None and text_column not in columns:
        raise ValueError(f"--text_column_name {text_column}: no such column; the dataset has {columns}")
    source = text_column or next((name for name in TEXT_COLUMNS if name in columns), None)
    if source is None or source == "words":
        return raw
    if "words" in columns:
        raise ValueError(f"--text_column_name {source}: the dataset also has a 'words' column; drop or rename it")
    return raw.rename_column(source, "words")


def standardize_label_column(raw: DatasetDict, label_column: str | None, canonical: str) -> DatasetDict:
    """Rename the label column given with --label_column_name to `canonical` (ner_tags for word labels)."""
    if label_column is None or label_column == canonical:
        return raw
    columns = raw["train"].column_names
    if label_column not in columns:
        raise ValueError(f"--label_column_name {label_column}: no such column; the dataset has {columns}")
    if canonical in columns:
        raise ValueError(f"--label_column_name {label_column}: the dataset also has a {canonical!r} column; drop "
                         "or rename it")
    return raw.rename_column(label_column, canonical)


VALIDATION_FRACTION = 0.1


def carve_validation_split(raw: DatasetDict, seed: int, fraction: float = VALIDATION_FRACTION,
                           stratify_by_column: str | None = None) -> str:
    """Make sure the model is selected on a validation split, never on test; returns where it came from.

    The epoch kept (and early stopping) follows the validation score, so a dataset without a "validation"
    split gets one carved from train: `fraction` of its documents (at least 1), shuffled with `seed`, taken
    out of train. With fewer than 2 training documents nothing can be carved; there is then no validation
    split and the training scripts keep the last epoch. The returned text goes into the log and into
    all_results.json ("validation_split"). With `stratify_by_column` (a ClassLabel column: document classes) the
    carve keeps the classes' proportions, unless a class has too few documents to be split.
    """
    if "validation" in raw:
        return "the dataset's validation split"
    documents = len(raw["train"])
    if documents < 2:
        return (f"none: train has {documents} document, too few to carve a validation split from; the last "
                "epoch's model is kept, no epoch is selected")
    size = max(1, round(fraction * documents))
    carved, how = None, ""
    if stratify_by_column and isinstance(raw["train"].features.get(stratify_by_column), ClassLabel):
        try:
            carved = raw["train"].train_test_split(test_size=size, seed=seed, stratify_by_column=stratify_by_column)
            how = f", stratified by {stratify_by_column}"
        except ValueError:  # a class with a single document, or fewer documents than classes in the carve
            how = f", not stratified (too few documents per {stratify_by_column})"
    if carved is None:
        carved = raw["train"].train_test_split(test_size=size, seed=seed)
    raw["train"], raw["validation"] = carved["train"], carved["test"]
    return (f"carved from train ({fraction:.0%}, seed {seed}{how}): {len(carved['test'])} of {documents} "
            "documents; the dataset has no validation split")


def dataset_preprocessing(dataset_path: str | None) -> dict:
    """The page resize the dataset was built with (`preprocessing.json` beside a saved dataset, read by
    dataset_loader's `load_preprocessing`), so inference can repeat it; Hub datasets carry none and inference then
    keeps pages as they are."""
    return (load_preprocessing(dataset_path) if dataset_path else None) or {"resize": None, "keep_aspect": False}
