"""Loading the raw DatasetDict a training script works on."""

from __future__ import annotations

import json
import os

from datasets import DatasetDict, load_dataset, load_from_disk


def load_raw_datasets(args) -> DatasetDict:
    """A saved dataset (`--dataset_path`) or a Hub dataset (`--dataset_name`), optionally truncated."""
    if args.dataset_path:
        if not os.path.isdir(args.dataset_path):
            raise FileNotFoundError(
                f"--dataset_path {args.dataset_path}: no such folder; build one with "
                "`python -m dataset_loader build --data-dir DIR --output OUT`"
            )
        raw = load_from_disk(args.dataset_path)
    else:
        raw = load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir)
    if not isinstance(raw, DatasetDict) or "train" not in raw:
        raise ValueError(f"{args.dataset_path or args.dataset_name}: expected a DatasetDict with a 'train' split")
    if args.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(args.max_train_samples, len(raw["train"]))))
    if args.max_eval_samples is not None:
        for split in ("validation", "test"):
            if split in raw:
                raw[split] = raw[split].select(range(min(args.max_eval_samples, len(raw[split]))))
    return raw


def dataset_preprocessing(args) -> dict:
    """The page resize the dataset was built with (`preprocessing.json` beside a saved dataset), so
    inference can repeat it; Hub datasets carry none and inference then keeps pages as they are."""
    if args.dataset_path:
        path = os.path.join(args.dataset_path, "preprocessing.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
    return {"resize": None, "keep_aspect": False}
