"""Box normalisation, label alignment to sub-tokens, windows over long documents, dynamic padding."""

import numpy as np
import pytest
import torch

from layoutkit.pipelines.boxes import group_lines, normalize_box, resize_document, segment_boxes
from layoutkit.pipelines.encoding import IGNORE_INDEX, LayoutCollator, b_to_i_label_ids, encode_documents
from layoutkit.pipelines.modeling import FAMILIES, load_processing
from layoutkit.apps.scratch import build_scratch_checkpoint
from layoutkit.pipelines.windows import WordPredictionMerger
from PIL import Image

LABELS = ["O", "B-total", "I-total", "B-vendor", "I-vendor"]
VOCABULARY = "invoice total amount due acme corporation limited subtotal tax date number".split()


@pytest.fixture(scope="module", params=["layoutlm", "layoutlmv3", "lilt"])
def tokenizer_and_family(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    build_scratch_checkpoint(str(folder), request.param, VOCABULARY * 50, size="tiny", vocab_size=400)
    tokenizer, _, _ = load_processing(str(folder))
    return tokenizer, FAMILIES[request.param]


@pytest.mark.parametrize(
    "box, size, expected",
    [
        ([10, 20, 30, 40], (100, 200), [100, 100, 300, 200]),
        ([-5, -5, 150, 250], (100, 200), [0, 0, 1000, 1000]),  # clamped to the grid
        ([30, 40, 10, 20], (100, 200), [100, 100, 300, 200]),  # inverted corners are reordered
        ([0, 0, 4000, 3000], (4000, 3000), [0, 0, 1000, 1000]),  # any page size
    ],
)
def test_normalize_box(box, size, expected):
    assert normalize_box(box, *size) == expected


def test_resize_document_scales_boxes_with_the_page():
    page = Image.new("RGB", (2000, 1000))
    resized, (words,) = resize_document(page, [[[100, 100, 200, 150]]], (1000, 700))
    assert resized.size == (1000, 700)
    assert words == [[50, 70, 100, 105]]
    kept, (words,) = resize_document(page, [[[100, 100, 200, 150]]], (1000, 700), keep_aspect=True)
    assert kept.size == (1000, 700) and words == [[50, 50, 100, 75]]


def test_segment_boxes_from_lines():
    boxes = [[0, 0, 10, 10], [12, 0, 30, 10], [0, 50, 10, 60]]
    lines = group_lines(boxes)
    assert lines == [0, 0, 1]
    assert segment_boxes(boxes, lines) == [[0, 0, 30, 10], [0, 0, 30, 10], [0, 50, 10, 60]]


def test_first_subtoken_labelled_rest_ignored(tokenizer_and_family):
    tokenizer, family = tokenizer_and_family
    words = ["corporationlimited", "total", "99.95"]
    labels = [3, 0, 1]
    boxes = [[1, 1, 2, 2]] * 3
    window = {k: v[0] for k, v in encode_documents([words], [boxes], tokenizer, family, word_labels=[labels]).items()}
    first_seen = {}
    for position, word in enumerate(window["word_ids"]):
        if word >= 0 and word not in first_seen:
            first_seen[word] = position
            assert window["labels"][position] == labels[word]
        else:
            assert window["labels"][position] == IGNORE_INDEX
    assert sorted(first_seen) == [0, 1, 2]
    assert len(window["word_ids"]) > 5  # the long word and the number split into several sub-tokens


def test_label_all_tokens_turns_b_into_i(tokenizer_and_family):
    tokenizer, family = tokenizer_and_family
    words, labels = ["corporationlimited"], [3]
    window = encode_documents(
        [words], [[[1, 1, 2, 2]]], tokenizer, family, word_labels=[labels],
        label_all_tokens=True, b_to_i=b_to_i_label_ids(LABELS),
    )
    text_labels = [label for label, word in zip(window["labels"][0], window["word_ids"][0]) if word >= 0]
    assert text_labels[0] == 3 and set(text_labels[1:]) == {4}


def test_boxes_follow_words(tokenizer_and_family):
    tokenizer, family = tokenizer_and_family
    boxes = [[10, 10, 20, 20], [30, 30, 40, 40]]
    window = encode_documents([["invoice", "corporationlimited"]], [boxes], tokenizer, family)
    for word, box in zip(window["word_ids"][0], window["bbox"][0]):
        if word >= 0:
            assert box == boxes[word]


def test_document_three_windows_long_gets_every_word_labelled(tokenizer_and_family):
    """A document of about 3x the window: every word is covered, and merging windows that predict the
    gold labels gives back exactly the gold label of every word."""
    tokenizer, family = tokenizer_and_family
    rng = np.random.default_rng(0)
    max_length, stride = 32, 8
    words = [VOCABULARY[i] for i in rng.integers(0, len(VOCABULARY), size=3 * max_length)]
    labels = rng.integers(0, len(LABELS), size=len(words)).tolist()
    boxes = [[i % 1000, 0, i % 1000 + 1, 1] for i in range(len(words))]
    windows = encode_documents([words], [boxes], tokenizer, family, max_length, stride, word_labels=[labels])
    assert len(windows["input_ids"]) >= 3
    assert max(len(ids) for ids in windows["input_ids"]) <= max_length

    collator = LayoutCollator(tokenizer.pad_token_id)
    batch = collator([{k: windows[k][i] for k in windows} for i in range(len(windows["input_ids"]))])
    # A "model" that predicts the gold word label on every sub-token of the word.
    word_ids = batch["word_ids"].numpy()
    predicted = np.where(word_ids >= 0, np.asarray(labels)[np.clip(word_ids, 0, None)], 0)
    merger = WordPredictionMerger([len(words)])
    merger.add(batch["doc_index"].numpy(), word_ids, predicted, np.ones_like(predicted, dtype=np.float32))
    assert merger.uncovered(0).size == 0
    assert merger.result(0)[0].tolist() == labels


def test_merge_prefers_the_window_where_the_word_is_central():
    merger = WordPredictionMerger([6])
    # Window A holds words 0-4, window B words 2-5. Distance to the nearer edge: word 2 is 2 in A and
    # 0 in B; word 3 is 1 in both (a tie keeps the first); word 4 is 0 in A and 1 in B.
    merger.add([0], [[-1, 0, 1, 2, 3, 4, -1]], [[0, 1, 1, 1, 1, 1, 0]], np.ones((1, 7)))
    merger.add([0], [[-1, 2, 3, 4, 5, -1, -1]], [[0, 2, 2, 2, 2, 0, 0]], np.ones((1, 7)))
    labels, _ = merger.result(0)
    assert labels.tolist() == [1, 1, 1, 1, 2, 2]


def test_collator_pads_dynamically_to_a_multiple_of_8():
    collator = LayoutCollator(pad_token_id=1, pad_to_multiple_of=8)
    features = [
        {"input_ids": [0, 5, 2], "attention_mask": [1, 1, 1], "bbox": [[0] * 4] * 3, "labels": [-100, 1, -100],
         "word_ids": [-1, 0, -1], "doc_index": 0},
        {"input_ids": [0, 5, 6, 7, 8, 9, 10, 11, 2], "attention_mask": [1] * 9, "bbox": [[1] * 4] * 9,
         "labels": [-100] + [0] * 7 + [-100], "word_ids": [-1] + list(range(7)) + [-1], "doc_index": 1},
    ]
    batch = collator(features)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0, 3:].eq(1).all() and batch["attention_mask"][0, 3:].eq(0).all()
    assert batch["labels"][0, 3:].eq(-100).all() and batch["word_ids"][0, 3:].eq(-1).all()
    assert batch["bbox"].shape == (2, 16, 4) and batch["bbox"][0, 3:].eq(0).all()
    assert batch["doc_index"].tolist() == [0, 1]
    assert batch["input_ids"].dtype == torch.long
