"""One set of input rules for training and inference: the box validator shared by the dataset builder and the
pipelines, boxes that look normalised, labels that are not BIO tags, words with no visible text, duplicate pages.

No model here: inference inputs are checked through `read_document` / `_read_document` / `predict_document`
directly, so these tests stay fast (the pipeline and predict.py runs are in test_pipeline.py / test_predict.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hub from tests

import json
import math
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from dataset_loader.annotations import AnnotationError, read_annotation
from dataset_loader.build import build_dataset, parse_labels
from dataset_loader.splits import assign_splits
from layoutkit.pipelines.labels import is_bio_tag
from layoutkit.pipelines.pipeline_inputs import check_words, read_document
from layoutkit.pipelines.input_validation import BOX_TOLERANCE, FieldError, check_box, is_blank_word
from test_dataset_loader_validation import PAGE, SIZE, good_doc, write_annotation, write_image

ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", " \u200b\t\ufeff "]


# ------------------------------------------------------------------ the shared box validator

# (case id, box on the 300x200 page, words expected in the message)
HOSTILE_BOXES = [
    ("outside_page", [250, 150, 310, 165], "outside the 300x200 image"),
    ("ten_times_too_large", [2500, 1500, 2900, 1650], "outside the 300x200 image"),
    ("inverted", [240, 150, 200, 165], "inverted"),
    ("string_number", ["10", 10, 60, 25], "'10' is not a number"),
    ("boolean", [True, 10, 60, 25], "True is not a number"),
    ("nan", [float("nan"), 10, 60, 25], "nan is not a finite number"),
    ("infinite", [10, 10, math.inf, 25], "inf is not a finite number"),
    ("three_values", [10, 10, 60], "3 values"),
    ("text", "10 10 60 25", "not a list"),
    ("null", None, "not a list"),
]
HOSTILE_IDS = [case[0] for case in HOSTILE_BOXES]


@pytest.mark.parametrize(("case", "box", "words"), HOSTILE_BOXES, ids=HOSTILE_IDS)
def test_check_box_refuses_with_field_and_advice(case, box, words):
    with pytest.raises(FieldError) as caught:
        check_box(box, "boxes[3]", *PAGE)
    error = caught.value
    assert isinstance(error, ValueError) and error.field == "boxes[3]" and words in error.message
    assert str(error).startswith("boxes[3]: ")
    # Every message says what to do, not only what is wrong.
    assert any(advice in error.message for advice in ("must be", "boxes are", "x0 <= x1"))


def test_check_box_clamps_within_tolerance():
    assert check_box([-BOX_TOLERANCE, 0, 60, 25], "boxes[0]", *PAGE) == [0, 0, 60, 25]
    assert check_box((250, 150, 302, 201.5), "boxes[0]", *PAGE) == [250, 150, 300, 200]
    with pytest.raises(FieldError, match="outside"):
        check_box([250, 150, 300 + BOX_TOLERANCE + 0.5, 165], "boxes[0]", *PAGE)


@pytest.mark.parametrize(("case", "box", "words"), HOSTILE_BOXES, ids=HOSTILE_IDS)
def test_builder_and_inference_give_the_same_message(tmp_path, case, box, words):
    """The builder's AnnotationError and inference's error come from one validator: same field, same message."""
    boxes = [[10, 10, 60, 25], [200, 150, 240, 165], [250, 150, 290, 165]]
    boxes[1] = box
    path = good_doc(tmp_path, "doc", boxes=boxes)
    with pytest.raises(AnnotationError) as built:
        read_annotation(path, tmp_path / "images")
    with pytest.raises(ValueError) as inferred:
        check_words(["ACME", "Total", "12.00"], boxes, PAGE)
    assert built.value.field == inferred.value.field == "boxes[1]"
    assert built.value.message == inferred.value.message
    assert str(inferred.value) == f"boxes[1]: {built.value.message}"


def distinct_doc(root: Path, name: str, shade: int, **changes: Any) -> Path:
    """A valid document whose page differs from every other shade (good_doc's pages are all identical)."""
    path = good_doc(root, name, **changes)
    Image.new("RGB", PAGE, (shade, shade, shade)).save(root / "images" / f"{name}.png")
    return path


def page_input(words, boxes, size=PAGE, **extra) -> dict[str, Any]:
    return {"image": Image.new("RGB", size, "white"), "words": words, "boxes": boxes, **extra}


@pytest.mark.parametrize(("case", "box", "words"), HOSTILE_BOXES, ids=HOSTILE_IDS)
def test_dict_input_refuses_hostile_boxes(case, box, words):
    """The pipelines' dict input (`read_document`, shared by both pipelines) applies the builder's box rule."""
    with pytest.raises(ValueError, match=r"boxes\[1\]: ") as caught:
        read_document(page_input(["ACME", "Total"], [[10, 10, 60, 25], box]), ocr_engine=None)
    assert words in str(caught.value)


def test_dict_input_words_must_be_strings():
    with pytest.raises(ValueError, match=r"words\[1\]: 7 is int; every word must be a string"):
        read_document(page_input(["ACME", 7], [[10, 10, 60, 25], [70, 10, 90, 25]]), ocr_engine=None)
    with pytest.raises(ValueError, match=r"words\[0\]: None is NoneType"):
        read_document(page_input([None], [[10, 10, 60, 25]]), ocr_engine=None)


def test_dict_input_clamps_within_tolerance():
    document = read_document(page_input(["ACME"], [[-1, 0, 301, 201]]), ocr_engine=None)
    assert document["boxes"] == [[0.0, 0.0, 300.0, 200.0]]


def token_pipeline_read(inputs: dict[str, Any]) -> dict[str, Any]:
    """`LayoutTokenClassificationPipeline._read_document` without a model (it only needs the OCR engine)."""
    from layoutkit.pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline

    return LayoutTokenClassificationPipeline._read_document(SimpleNamespace(ocr_engine=lambda ocr: None), inputs, None)


def test_token_pipeline_checks_segment_boxes_against_the_page():
    words, boxes = ["Total", "12.00"], [[10, 10, 60, 25], [70, 10, 120, 25]]
    with pytest.raises(ValueError, match=r"segment_boxes\[1\]: box \[10, 10, 400, 25\] lies outside the 300x200"):
        token_pipeline_read(page_input(words, boxes, segment_boxes=[[10, 10, 120, 25], [10, 10, 400, 25]]))
    with pytest.raises(ValueError, match=r"segment_boxes\[0\]: .* is not a finite number"):
        token_pipeline_read(page_input(words, boxes, segment_boxes=[[float("nan"), 10, 120, 25], [10, 10, 120, 25]]))


# ------------------------------------------------------------------ boxes that look normalised


def no_warnings(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return function(*args, **kwargs)


@pytest.mark.parametrize(
    ("size", "boxes"),
    [
        (PAGE, [[0.1, 0.1, 0.3, 0.15], [0.6, 0.7, 0.9, 0.8]]),  # 0-1 on a 300x200 page
        ((2480, 3508), [[100, 40, 300, 60], [600, 900, 990, 1000]]),  # 0-1000 on an A4 scan at 300 dpi
    ],
    ids=["unit", "thousand"],
)
def test_normalised_boxes_warn_at_inference(size, boxes):
    with pytest.warns(UserWarning, match=r"boxes: every box lies within \[0, 1(000)?\] .*look normalised.*pixel"):
        document = read_document(page_input(["ACME", "Total"], boxes, size=size), ocr_engine=None)
    assert len(document["words"]) == 2  # a warning, not a failure


def test_pixel_boxes_do_not_warn():
    no_warnings(read_document, page_input(["ACME", "Total"], [[10, 10, 60, 25], [200, 150, 240, 165]]), None)
    # A page not larger than 1000 px both ways: boxes within 0-1000 are ordinary pixels.
    no_warnings(read_document, page_input(["ACME"], [[100, 900, 500, 990]], size=(1200, 1000)), None)
    no_warnings(read_document, page_input([], []), None)


def test_normalised_boxes_warn_in_build_report_and_strict_refuses(tmp_path):
    root = tmp_path / "data"
    distinct_doc(root, "pixels", 255)
    distinct_doc(root, "unit", 250, boxes=[[0.03, 0.05, 0.2, 0.12], [0.66, 0.75, 0.8, 0.82], [0.83, 0.75, 0.96, 0.82]])
    build_dataset(root, tmp_path / "out", size=SIZE, ratios=(1, 0, 0))
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["documents_kept"] == 2  # lenient: kept, with a warning
    [warning] = report["warnings"]
    assert Path(warning["file"]).name == "unit.json"
    assert "boxes: every box lies within [0, 1] on a 300x200 page" in warning["message"]
    assert "pixel coordinates" in warning["message"]

    with pytest.raises(AnnotationError) as caught:
        build_dataset(root, tmp_path / "strict", size=SIZE, ratios=(1, 0, 0), strict=True)
    assert Path(caught.value.file).name == "unit.json" and caught.value.field == "boxes"
    assert "look normalised" in caught.value.message


def test_boxes_within_thousand_on_a_large_page_are_flagged(tmp_path):
    write_image(tmp_path / "images" / "scan.png", size=(1700, 2200))
    path = write_annotation(tmp_path, "scan", {"image": "scan.png", "words": ["ACME", "Total"],
                                               "boxes": [[80, 30, 200, 50], [700, 940, 800, 960]],
                                               "labels": ["B-vendor", "O"]})
    [(field, message)] = read_annotation(path, tmp_path / "images").warnings
    assert field == "boxes" and "within [0, 1000] on a 1700x2200 page" in message


RECEIPT_PAGE = (1080, 1527)


def scanned_receipt(page=RECEIPT_PAGE) -> tuple[Image.Image, list[str], list[list[int]]]:
    """An 80 mm receipt scanned on an A4 page a little larger than 1000 px (1080x1527): a narrow strip of text
    (x 330-730) ending above y = 1000, so every pixel box lies within [0, 1000]: the shop's name and address, eight
    items with right-aligned prices, the total."""
    from PIL import ImageDraw, ImageFont

    from dataset_loader.synth import font_families

    image = Image.new("RGB", page, (246, 246, 246))  # the scanner's lid
    draw = ImageDraw.Draw(image)
    scale = page[0] / RECEIPT_PAGE[0]
    draw.rectangle([round(310 * scale), round(40 * scale), round(750 * scale), round(1000 * scale)], fill="white")
    size = round(22 * scale)
    font = ImageFont.truetype(font_families()[0][0], size) if font_families() else ImageFont.load_default(size)
    lines = [("GROCERY MART", None), ("12 Station Road", None)] + [
        (f"Item {number} pack", f"{number * 1.25:.2f}") for number in range(1, 9)] + [("TOTAL", "56.25")]
    words, boxes = [], []
    for row, (text, price) in enumerate(lines):
        y = round((70 + row * 82) * scale)
        x = 330 * scale
        for word in text.split():
            boxes.append(list(draw.textbbox((x, y), word, font=font)))
            draw.text((x, y), word, font=font, fill="black")
            words.append(word)
            x += font.getlength(word + " ")
        if price:
            right = 730 * scale
            boxes.append(list(draw.textbbox((right, y), price, font=font, anchor="ra")))
            draw.text((right, y), price, font=font, fill="black", anchor="ra")
            words.append(price)
    return image, words, boxes


def to_grid(boxes, size, grid):
    return [[value * grid / side for value, side in zip(box, size * 2)] for box in boxes]


def test_pixel_boxes_of_a_receipt_inside_the_first_1000_px_do_not_warn(tmp_path):
    """Real receipts: text inside the first 1000 px of a 1080x1527 scan is pixels, not the 0-1000 grid: the page's
    ink lies under the boxes as given, not under them scaled from the grid."""
    image, words, boxes = scanned_receipt()
    assert max(max(box) for box in boxes) <= 1000 < min(image.size)
    no_warnings(read_document, {"image": image, "words": words, "boxes": boxes}, ocr_engine=None)
    image.save(tmp_path / "receipt.png")
    path = write_annotation(tmp_path, "receipt", {"image": "receipt.png", "words": words, "boxes": boxes,
                                                  "labels": ["O"] * len(words)})
    assert read_annotation(path, tmp_path).warnings == []

    # The same receipt with normalised boxes warns: 0-1 and 0-1000 on this page, 0-1000 on a finer scan of it.
    for grid in (1, 1000):
        with pytest.warns(UserWarning, match=rf"within \[0, {grid}\] on a 1080x1527 page.*look normalised"):
            read_document({"image": image, "words": words, "boxes": to_grid(boxes, image.size, grid)}, ocr_engine=None)
    fine, _, fine_boxes = scanned_receipt((1700, 2404))
    thousand = to_grid(fine_boxes, fine.size, 1000)
    with pytest.warns(UserWarning, match=r"within \[0, 1000\] on a 1700x2404 page.*look normalised"):
        read_document({"image": fine, "words": words, "boxes": thousand}, ocr_engine=None)
    fine.save(tmp_path / "fine.png")
    path = write_annotation(tmp_path, "fine", {"image": "fine.png", "words": words, "boxes": thousand,
                                               "labels": ["O"] * len(words)})
    [(field, message)] = read_annotation(path, tmp_path).warnings
    assert field == "boxes" and "within [0, 1000] on a 1700x2404 page" in message


def test_few_words_near_the_top_left_of_a_large_page_do_not_warn():
    """A sparse page (a stamp, a heading): words within 0-1000 that do not spread like a page of text."""
    no_warnings(read_document, page_input(["PAID", "2024-03-01"], [[120, 80, 260, 120], [120, 140, 400, 170]],
                                          size=(2480, 3508)), None)


# ------------------------------------------------------------------ labels


@pytest.mark.parametrize("tag", ["B- ", "B-B-total", "I-I-total", "I-", "B-", "B- total", "B-total ", "I-\ttotal",
                                 "b-total", "total", ""])
def test_malformed_bio_tags_are_refused(tmp_path, tag):
    assert not is_bio_tag(tag)
    path = good_doc(tmp_path, "doc", labels=["B-vendor", "O", tag])
    with pytest.raises(AnnotationError) as caught:
        read_annotation(path, tmp_path / "images")
    assert caught.value.field == "labels[2]" and "not a BIO tag" in caught.value.message


@pytest.mark.parametrize("tag", ["O", "B-total", "I-total", "B-HEADER", "I-line item", "B-O"])
def test_well_formed_bio_tags_are_accepted(tag):
    assert is_bio_tag(tag)


def test_labels_option_refuses_doubled_prefixes():
    with pytest.raises(ValueError, match="neither a BIO tag nor an entity type"):
        parse_labels("B-B-total,I-B-total")
    assert parse_labels("total,vendor") == ["O", "B-total", "I-total", "B-vendor", "I-vendor"]


# ------------------------------------------------------------------ words with no visible text


@pytest.mark.parametrize("word", ZERO_WIDTH + ["", " ", "\n"])
def test_invisible_words_are_blank(word):
    assert is_blank_word(word)


@pytest.mark.parametrize("word", ["a", "\u200bTotal", "-", "12.00\ufeff", "\u00e9"])
def test_visible_words_are_not_blank(word):
    assert not is_blank_word(word)


def test_builder_drops_zero_width_words_like_blank_words(tmp_path):
    path = good_doc(
        tmp_path, "doc",
        words=["\u200b", "Corp", "\u00ad", "\ufeff \u2060", "12.00"],
        boxes=[[10, 10, 20, 25], [22, 10, 60, 25], [62, 10, 70, 25], [200, 150, 240, 165], [250, 150, 290, 165]],
        labels=["B-vendor", "I-vendor", "O", "B-total", "I-total"],
    )
    document = read_annotation(path, tmp_path / "images")
    assert document.words == ["Corp", "12.00"]
    assert document.labels == ["B-vendor", "B-total"]  # both entities still start with B-
    assert document.boxes == [[22, 10, 60, 25], [250, 150, 290, 165]]
    assert document.dropped_words == 3


def test_inference_drops_zero_width_words_with_their_boxes():
    inputs = page_input(["\u200b", "Total", "\u2060\u00ad", "12.00"],
                        [[1, 1, 5, 5], [10, 10, 60, 25], [61, 10, 65, 25], [70, 10, 120, 25]],
                        segment_boxes=[[1, 1, 120, 25]] * 4, line_ids=[0, 1, 2, 3])
    with pytest.warns(UserWarning, match="2 of 4 given words have no visible text"):
        document = token_pipeline_read(inputs)
    assert document["words"] == ["Total", "12.00"]
    assert document["boxes"] == [[10, 10, 60, 25], [70, 10, 120, 25]]
    assert document["segment_boxes"] == [[1, 1, 120, 25]] * 2 and document["line_ids"] == [1, 3]


# ------------------------------------------------------------------ the same page annotated twice


def test_assign_splits_keeps_groups_together():
    ids = [f"doc{i:02d}" for i in range(20)]
    groups = [["doc03", "doc11"], ["doc05", "doc06", "doc19"]]
    for seed in range(10):
        splits = assign_splits(ids, (0.5, 0.25, 0.25), seed, together=groups)
        assert sorted(i for chosen in splits.values() for i in chosen) == ids
        for group in groups:
            assert len({name for name, chosen in splits.items() if set(group) & set(chosen)}) == 1, (seed, splits)
    # Groups of one change nothing.
    assert assign_splits(ids, (0.5, 0.25, 0.25), 3, together=[["doc01"]]) == assign_splits(ids, (0.5, 0.25, 0.25), 3)
    # Groups that share an id (a page annotated twice, in a document of several pages) are one group.
    chained = [["doc01", "doc02"], ["doc02", "doc07"], ["doc09", "doc07"]]
    for seed in range(10):
        splits = assign_splits(ids, (0.5, 0.25, 0.25), seed, together=chained)
        assert sorted(i for chosen in splits.values() for i in chosen) == ids
        assert len({name for name, chosen in splits.items() if {"doc01", "doc02", "doc07", "doc09"} & set(chosen)}) == 1


def test_duplicate_images_are_reported_and_kept_in_one_split(tmp_path):
    """a and b name the same image file, c and d are byte-identical copies under two names, e and f are other
    pages; with a 50/50 split each pair is cut in two without grouping (seed 0)."""
    root = tmp_path / "data"
    distinct_doc(root, "a", 250)
    good_doc(root, "b", image="a.png")
    (root / "images" / "b.png").unlink()  # only a.png exists: b names it
    distinct_doc(root, "c", 240)
    distinct_doc(root, "d", 0)
    shutil.copy(root / "images" / "c.png", root / "images" / "d.png")
    distinct_doc(root, "e", 230)
    distinct_doc(root, "f", 220)
    dataset = build_dataset(root, tmp_path / "out", size=SIZE, ratios=(0.5, 0.5, 0), seed=0)
    splits = {name: set(part["id"]) for name, part in dataset.items()}
    for pair in ({"a", "b"}, {"c", "d"}):
        assert any(pair <= chosen for chosen in splits.values()), splits
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    messages = {Path(w["file"]).name: w["message"] for w in report["warnings"]}
    assert set(messages) == {"a.json", "c.json"}
    assert "same image file" in messages["a.json"] and "b.json" in messages["a.json"]
    assert "identical images" in messages["c.json"] and "d.json" in messages["c.json"]
    assert "kept in one split" in messages["c.json"]


def test_two_documents_of_one_image_are_not_split_apart(tmp_path):
    """The smallest case: 2 documents and a 50/50 split put them in train and validation today."""
    root = tmp_path / "data"
    good_doc(root, "first")
    good_doc(root, "second", image="first.png")
    dataset = build_dataset(root, tmp_path / "out", size=SIZE, ratios=(0.5, 0.5, 0))
    assert sorted(dataset["train"]["id"]) == ["first", "second"] and "validation" not in dataset


# ------------------------------------------------------------------ predict.py: the page and the field


def test_predict_names_page_and_box_field(tmp_path):
    """predict.py turns the pipeline's ValueError into the document's error: file, page, box field, problem."""
    from layoutkit.apps import predict
    from layoutkit.apps.settings import InferenceSettings

    def extractor(inputs, **call):  # the pipeline's input side, without a model
        read_document(inputs, ocr_engine=None)
        return {"width": 300, "height": 200, "words": [], "entities": []}

    pages = [Image.new("RGB", PAGE, "white")] * 2
    words_pages = [{"words": ["ACME"], "boxes": [[10, 10, 60, 25]]},
                   {"words": ["ACME", "Total"], "boxes": [[10, 10, 60, 25], [float("nan"), 10, 60, 25]]}]
    settings = InferenceSettings(model_name_or_path="model")
    with pytest.raises(predict.DocumentError) as caught:
        predict.predict_document(extractor, Path("scan.png"), pages, words_pages, settings, 1,
                                 words_source="words.json")
    assert str(caught.value).startswith("scan.png: page 2: boxes[1]: [nan, 10, 60, 25] is not a box")
