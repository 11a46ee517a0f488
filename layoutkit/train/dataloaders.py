"""The training and evaluation dataloaders, with the length-grouped sampler of --group_by_length, and the training
batches of a streamed corpus (`StreamedBatches`, --streaming)."""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from .arguments import TrainingArguments


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


class StreamedBatches:
    """The training batches of a streamed corpus (windows of a `datasets.IterableDataset`), cut into the loop's
    "epochs": periods of `batches_per_period` batches (--eval_steps optimizer steps), after each of which the loop
    evaluates, keeps the best model and checkpoints, as after an epoch.

    A period goes on where the last one stopped (the stream is not restarted); when the corpus runs out it is read
    again, in a new order (the dataloader's `set_epoch(pass)` reshuffles the dataset). Every process draws the same
    number of batches per period, so processes with uneven shards stay in step. `prepare(accelerator)` wraps the
    dataloader accelerate prepares; resuming re-reads the stream up to the checkpoint's batch (`seek`).
    """

    def __init__(self, dataloader, batches_per_period: int):
        self.dataloader, self.batches_per_period = dataloader, batches_per_period
        self.passes = 0  # times the corpus has been started
        self.pass_batches = 0  # batches drawn in the current pass
        self.position = 0  # batches drawn since training started
        self.batches = None  # the current pass's iterator

    def prepare(self, accelerator) -> StreamedBatches:
        return StreamedBatches(accelerator.prepare(self.dataloader), self.batches_per_period)

    def __len__(self) -> int:
        return self.batches_per_period

    def set_epoch(self, period: int) -> None:
        self.seek(period * self.batches_per_period)

    def skip_first_batches(self, num_batches: int) -> StreamedBatches:
        """Resuming mid-period: the rest of the current period."""
        self.seek(self.position + num_batches)
        return self

    def seek(self, position: int) -> None:
        """Be at batch `position` of the training. Only a resumed run moves (an uninterrupted one is there
        already): it reads the stream again from its start under a forked random state, so whatever the reading
        draws from it (a collator of the user's), training goes on with the random state the checkpoint restored."""
        if position == self.position:
            return
        self.passes, self.pass_batches, self.position, self.batches = 0, 0, 0, None
        with torch.random.fork_rng(devices=[]):
            while self.position < position:
                self.next_batch()

    def next_batch(self):
        while True:
            if self.batches is None:
                set_epoch(self.dataloader, self.passes)
                self.batches, self.pass_batches = iter(self.dataloader), 0
            try:
                batch = next(self.batches)
            except StopIteration:
                if self.pass_batches == 0:
                    raise ValueError("the streamed training split gave no batch on this process: it is empty, or "
                                     "has fewer pages than processes") from None
                self.batches, self.passes = None, self.passes + 1
                continue
            self.pass_batches += 1
            self.position += 1
            return batch

    def __iter__(self):
        end = (self.position // self.batches_per_period + 1) * self.batches_per_period
        while self.position < end:
            yield self.next_batch()


def set_epoch(dataloader, epoch: int) -> None:
    """`dataloader.set_epoch(epoch)` (the sampler's order, a stream's shuffle), and the same for its collator where
    it draws per epoch (the masking collators of pretraining)."""
    dataloader.set_epoch(epoch)
    if hasattr(getattr(dataloader, "collate_fn", None), "set_epoch"):
        dataloader.collate_fn.set_epoch(epoch)


def skip_first_batches(accelerator, train_dataloader, num_batches: int):
    """The training batches after the first `num_batches` of an epoch (resuming mid-epoch)."""
    if isinstance(train_dataloader, StreamedBatches):
        return train_dataloader.skip_first_batches(num_batches)
    return accelerator.skip_first_batches(train_dataloader, num_batches)


def build_dataloaders(training: TrainingArguments, windows: dict, collator, eval_collator,
                      eval_steps: int | None = None):
    """(train dataloader, {"validation"/"test": dataloader}, the split evaluated after each epoch), collated by
    `collator` and `eval_collator`.

    The split evaluated after each epoch picks the model that is kept, so it is "validation" or None (no
    validation split: nothing is selected), never "test": a test score chosen on test is no test score. Streamed
    training windows (an IterableDataset, shuffled by the dataset itself) come in periods of `eval_steps`
    optimizer steps (default: all of --max_train_steps), the loop's epochs: `StreamedBatches`.
    """
    from torch.utils.data import DataLoader

    from .streaming import is_streamed

    streamed = is_streamed(windows["train"])
    order = dict(shuffle=True)
    if streamed:
        order = {}
    elif training.group_by_length:
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
    if streamed:
        period = (eval_steps or training.max_train_steps) * training.gradient_accumulation_steps
        train_dataloader = StreamedBatches(train_dataloader, period)
    eval_dataloaders = {
        split: DataLoader(windows[split], collate_fn=eval_collator, batch_size=training.per_device_eval_batch_size)
        for split in ("validation", "test") if split in windows
    }
    eval_split = "validation" if "validation" in windows else None
    return train_dataloader, eval_dataloaders, eval_split
