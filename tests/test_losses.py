"""Focal loss and class weights against a direct computation of the formula on hand-made logits."""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from layoutkit.train.losses import build_loss, focal_loss, inverse_frequency_weights, parse_class_weights

# Two documents x three tokens x three classes; -100 marks a padding / non-first sub-token position.
LOGITS = torch.tensor([
    [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]],
    [[0.0, 0.0, 0.0], [1.5, -0.5, 2.5], [4.0, -2.0, 1.0]],
])
LABELS = torch.tensor([[0, 2, 1], [1, -100, 2]])


def direct_focal(logits, labels, gamma, weights=None):
    """-sum_i w_{y_i} (1 - p_i)^gamma log p_i / sum_i w_{y_i}, written out position by position."""
    numerator = denominator = 0.0
    for row_logits, row_labels in zip(logits.tolist(), labels.tolist()):
        for position_logits, label in zip(row_logits, row_labels):
            if label == -100:
                continue
            total = sum(math.exp(z) for z in position_logits)
            p = math.exp(position_logits[label]) / total
            w = weights[label] if weights is not None else 1.0
            numerator += -w * (1 - p) ** gamma * math.log(p)
            denominator += w
    return numerator / denominator


@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("weights", [None, [0.2, 1.0, 3.0]])
def test_focal_loss_matches_the_formula(gamma, weights):
    weight_tensor = torch.tensor(weights) if weights else None
    assert focal_loss(LOGITS, LABELS, gamma, weight_tensor).item() == pytest.approx(
        direct_focal(LOGITS, LABELS, gamma, weights), rel=1e-5
    )


@pytest.mark.parametrize("weights", [None, [0.2, 1.0, 3.0]])
def test_gamma_zero_is_cross_entropy(weights):
    weight_tensor = torch.tensor(weights) if weights else None
    expected = F.cross_entropy(LOGITS.reshape(-1, 3), LABELS.reshape(-1), weight=weight_tensor, ignore_index=-100)
    assert focal_loss(LOGITS, LABELS, 0.0, weight_tensor).item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_loss_down_weights_easy_positions_and_has_gradients():
    logits = LOGITS.clone().requires_grad_(True)
    loss = focal_loss(logits, LABELS, 2.0)
    assert loss.item() < focal_loss(LOGITS, LABELS, 0.0).item()
    loss.backward()
    assert torch.all(logits.grad[1, 1] == 0)  # the ignored position gets no gradient
    assert focal_loss(LOGITS, torch.full_like(LABELS, -100), 2.0).item() == 0.0  # all ignored: 0, not NaN


def test_document_labels_work_too():
    logits, labels = LOGITS[:, 0], torch.tensor([0, 2])  # [batch, classes] against [batch]
    assert focal_loss(logits, labels, 0.0).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_inverse_frequency_weights():
    weights = inverse_frequency_weights([0, 0, 0, 1, 2, 2], num_labels=4)
    # counts 3, 1, 2, 0 -> 1/3, 1, 1/2 normalised to mean 1 over the present labels; absent label 3 -> 0.
    scale = 3 / (1 / 3 + 1 + 1 / 2)
    assert weights == pytest.approx([scale / 3, scale, scale / 2, 0.0], rel=1e-5)


def test_parse_class_weights():
    labels = ["O", "B-total", "I-total"]
    assert parse_class_weights(None, labels, lambda: []) is None
    assert parse_class_weights("1,2.5,4", labels, lambda: []) == [1.0, 2.5, 4.0]
    assert parse_class_weights("auto", labels, lambda: [0, 0, 1, 2]) == pytest.approx(
        inverse_frequency_weights([0, 0, 1, 2], 3)
    )
    with pytest.raises(ValueError, match="2 values but there are 3 labels"):
        parse_class_weights("1,2", labels, lambda: [])
    with pytest.raises(ValueError, match="comma-separated numbers"):
        parse_class_weights("heavy", labels, lambda: [])


def test_build_loss_uses_the_model_loss_for_plain_cross_entropy():
    args = argparse.Namespace(loss="cross_entropy", focal_gamma=2.0)
    assert build_loss(args, None) is None
    weighted = build_loss(args, [0.2, 1.0, 3.0])
    expected = F.cross_entropy(LOGITS.reshape(-1, 3), LABELS.reshape(-1), weight=torch.tensor([0.2, 1.0, 3.0]))
    assert weighted(LOGITS, LABELS).item() == pytest.approx(expected.item(), rel=1e-6)
    focal = build_loss(argparse.Namespace(loss="focal", focal_gamma=2.0), None)
    assert focal(LOGITS, LABELS).item() == pytest.approx(direct_focal(LOGITS, LABELS, 2.0), rel=1e-5)
