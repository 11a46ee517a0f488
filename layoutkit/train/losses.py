"""Training losses: cross-entropy or focal loss, optionally class-weighted, for tokens and documents.

Focal loss (Lin et al., 2017) scales each position's cross-entropy by (1 - p_t)^gamma, where p_t is the
probability of the gold class: confident, easy positions (in invoices, the many `O` words) count less.
Class weights w_c multiply each position's loss by the weight of its gold class, and the mean is taken
over those weights, as `torch.nn.functional.cross_entropy(weight=...)` does, so gamma 0 is exactly
(weighted) cross-entropy.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

IGNORE_INDEX = -100


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 2.0,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean focal loss of `logits` [..., C] against `labels` [...]; positions labelled `ignore_index` are
    left out. With gamma 0 this equals `F.cross_entropy(logits, labels, weight=class_weights)`."""
    logits = logits.reshape(-1, logits.shape[-1]).float()
    labels = labels.reshape(-1)
    # Ignored positions are masked by a zero weight rather than dropped by boolean indexing, which would
    # wait for the device to learn the output size on every step.
    keep = labels != ignore_index
    labels = labels.masked_fill(~keep, 0)
    log_p_t = logits.log_softmax(-1).gather(1, labels[:, None]).squeeze(1)
    loss = -((1.0 - log_p_t.exp()) ** gamma) * log_p_t if gamma else -log_p_t
    weights = keep.to(loss.dtype)
    if class_weights is not None:
        weights = weights * class_weights.to(loss)[labels]
    # An all-ignored batch gives 0 (not NaN), so accumulation and logging stay finite.
    return (loss * weights).sum() / weights.sum().clamp(min=torch.finfo(loss.dtype).tiny)


def inverse_frequency_weights(label_ids: Sequence[int], num_labels: int) -> list[float]:
    """w_c proportional to 1 / count_c, normalised so that the weights of the labels present average 1.
    Labels absent from the training split get weight 0 (they have no positions to weigh)."""
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=num_labels).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_labels)
    weights[present] = 1.0 / counts[present]
    weights[present] /= weights[present].mean()
    return [round(float(w), 6) for w in weights]


def parse_class_weights(value: str | None, label_names: Sequence[str], train_label_ids: Callable[[], Sequence[int]]):
    """The --class_weights flag as a list of floats (or None). `train_label_ids()` is only called for
    "auto": it returns every training label id (every word's tag, or every document's class)."""
    if not value:
        return None
    if value == "auto":
        return inverse_frequency_weights(train_label_ids(), len(label_names))
    try:
        weights = [float(w) for w in value.split(",")]
    except ValueError:
        raise ValueError(f"--class_weights {value!r}: expected 'auto' or comma-separated numbers") from None
    if len(weights) != len(label_names):
        raise ValueError(
            f"--class_weights has {len(weights)} values but there are {len(label_names)} labels "
            f"({', '.join(label_names)}); give one weight per label in this order"
        )
    return weights


def build_loss(objective, class_weights: Sequence[float] | None):
    """A `loss(logits, labels)` for the training loop (`objective`: the --loss flags, arguments.LossArguments), or
    None to use the model's own cross-entropy."""
    if objective.loss == "cross_entropy" and class_weights is None:
        return None
    gamma = objective.focal_gamma if objective.loss == "focal" else 0.0
    weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        nonlocal weights
        if weights is not None and weights.device != logits.device:
            weights = weights.to(logits.device)  # once, not a host-to-device copy every step
        return focal_loss(logits, labels, gamma, weights)

    return loss
