"""The training and evaluation dataloaders, with the length-grouped sampler of --group_by_length."""

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


def build_dataloaders(training: TrainingArguments, windows: dict, collator):
    """(train dataloader, {"validation"/"test": dataloader}, the split evaluated after each epoch).

    The split evaluated after each epoch picks the model that is kept, so it is "validation" or None (no
    validation split: nothing is selected), never "test": a test score chosen on test is no test score.
    """
    from torch.utils.data import DataLoader

    order = dict(shuffle=True)
    if training.group_by_length:
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
    eval_dataloaders = {
        split: DataLoader(windows[split], collate_fn=collator, batch_size=training.per_device_eval_batch_size)
        for split in ("validation", "test") if split in windows
    }
    eval_split = "validation" if "validation" in windows else None
    return train_dataloader, eval_dataloaders, eval_split
