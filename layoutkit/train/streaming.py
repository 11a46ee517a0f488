"""A training split read as a stream (`--streaming`): a `datasets.IterableDataset` that is shuffled in a buffer,
encoded as it is read and never written to disk, so the corpus can exceed memory and disk.

    train = Dataset.to_iterable_dataset(num_shards)            # a saved dataset (--dataset_path)
          | load_dataset("parquet", data_dir, streaming=True)   # a folder of parquet shards (--dataset_path)
          | load_dataset(name, streaming=True)                  # a Hub dataset (--dataset_name)
    train.shuffle(seed, buffer_size)  ->  task.encode (IterableDataset.map: lazy)  ->  dataloaders.StreamedBatches

The validation split stays a regular dataset, held in memory (it is read whole after every evaluation period, and
encoding it in memory writes no cache file beside the corpus). Accelerate shares the stream's shards out across
processes (its dataloader's `IterableDataset.shard`, or every process reads all and keeps its batches when there are
fewer shards than processes).
"""

from __future__ import annotations

import glob
import os

from datasets import Dataset, DatasetDict, IterableDataset, load_dataset

from .arguments import DataArguments, StreamingArguments
from .data import standardize_text_column

# Shards of a saved dataset's stream per reader (process x dataloader worker): the shuffle permutes shards and
# mixes pages within its buffer, so more shards than readers spread a reader's pages over the whole corpus.
SHARDS_PER_READER = 8


def is_streamed(dataset) -> bool:
    return isinstance(dataset, IterableDataset)


def parquet_shards(folder: str) -> list[str]:
    """The parquet files under `folder` (a dataset pushed to the Hub, downloaded), or [] for a saved dataset."""
    return sorted(glob.glob(os.path.join(folder, "**", "*.parquet"), recursive=True))


def load_streamed_corpus(args: DataArguments, cache_dir: str | None = None) -> DatasetDict | None:
    """The splits of a parquet-shard folder (--dataset_path) or Hub dataset (--dataset_name), streamed: train an
    IterableDataset, validation read into memory. None for a saved dataset (`load_from_disk` reads it as usual,
    its train split is turned into a stream after the driver's validation carve: `stream_training_split`)."""
    if args.dataset_path:
        if os.path.isfile(os.path.join(args.dataset_path, "dataset_dict.json")):
            return None
        if not parquet_shards(args.dataset_path):
            raise FileNotFoundError(
                f"--dataset_path {args.dataset_path}: neither a saved dataset (no dataset_dict.json) nor a folder of "
                "parquet shards; build one with `python -m dataset_loader build` or `layoutkit pretraining-corpus`"
            )
        # Split names come from the file names (train-00000-of-00004.parquet, validation-..., as push_to_hub writes).
        streamed = load_dataset("parquet", data_dir=args.dataset_path, streaming=True, cache_dir=cache_dir)
    else:
        streamed = load_dataset(args.dataset_name, args.dataset_config_name, streaming=True, cache_dir=cache_dir)
    where = args.dataset_path or args.dataset_name
    streamed = standardize_text_column(streamed, args.text_column_name)
    if "train" not in streamed or "validation" not in streamed:
        raise ValueError(
            f"{where}: a streamed corpus needs a train and a validation split (found {sorted(streamed)}): a stream "
            "cannot be carved into two without reading it. Name the files train-*.parquet and validation-*.parquet, "
            "or give a saved dataset, from whose train split a validation split is carved"
        )
    validation = streamed["validation"]
    if args.max_eval_samples is not None:
        validation = validation.take(args.max_eval_samples)
    train = streamed["train"]
    if args.max_train_samples is not None:
        train = train.take(args.max_train_samples)
    return DatasetDict(train=train, validation=Dataset.from_list(list(validation), features=validation.features))


def stream_training_split(raw: DatasetDict, streaming: StreamingArguments, seed: int, readers: int) -> None:
    """Turn `raw`'s train split into the shuffled stream training reads (in place), and hold validation in memory.

    `readers`: processes x dataloader workers, each of which reads its own shards of the stream.
    """
    train = raw["train"]
    if not is_streamed(train):
        train = train.to_iterable_dataset(num_shards=max(1, min(len(train), SHARDS_PER_READER * readers)))
    # The dataset's set_epoch (called by the dataloader each time the corpus is read again) reshuffles with seed + pass.
    raw["train"] = train.shuffle(seed=seed, buffer_size=streaming.shuffle_buffer_size)
    if "validation" in raw and raw["validation"].cache_files:
        # In memory, so that encoding it writes no cache file into the corpus's folder.
        raw["validation"] = raw["validation"].flatten_indices(keep_in_memory=True)
