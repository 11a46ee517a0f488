"""Augmentation: boxes follow the ink through the affine warp, runs are seeded, augment_split keeps the data."""


from dataclasses import replace

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image as ImageFeature, Sequence, Value
from PIL import Image, ImageDraw

from layoutkit.pipelines.boxes import reading_order
from layoutkit.train.augment import AugmentConfig, augment_page, augment_split

PAGE_SIZE = (320, 220)
# Word boxes [x0, y0, x1, y1] in pixels, kept clear of the page edges so a small warp keeps them on the page.
WORD_BOXES = [[30, 30, 90, 46], [100, 30, 170, 46], [200, 60, 290, 80], [40, 120, 60, 132], [150, 150, 260, 190]]
INK_THRESHOLD = 80  # a pixel darker than this (grayscale) is ink, whatever brightness/contrast/noise did
TOLERANCE = 3  # pixels: bilinear resampling, blur and jitter may put ink this close outside a box

FORCED = AugmentConfig(  # every step on, with non-trivial values
    brightness_range=(0.8, 0.8), contrast_range=(1.2, 1.2),
    blur_probability=1.0, blur_radius_range=(1.0, 1.0),
    noise_probability=1.0, noise_std_range=(8.0, 8.0),
    jpeg_probability=1.0, jpeg_quality_range=(50, 50),
    rotation_range=(-3.0, 3.0), scale_range=(0.93, 1.07), translate_range=(-0.03, 0.03),
    box_jitter_probability=1.0, box_jitter_pixels=2.0,
)
GEOMETRY_ONLY = AugmentConfig(
    brightness_range=(1.0, 1.0), contrast_range=(1.0, 1.0), blur_probability=0.0, noise_probability=0.0,
    jpeg_probability=0.0, rotation_range=(-3.0, 3.0), scale_range=(0.93, 1.07), translate_range=(-0.03, 0.03),
    box_jitter_probability=0.0,
)
IDENTITY = AugmentConfig(
    brightness_range=(1.0, 1.0), contrast_range=(1.0, 1.0), blur_probability=0.0, noise_probability=0.0,
    jpeg_probability=0.0, rotation_range=(0.0, 0.0), scale_range=(1.0, 1.0), translate_range=(0.0, 0.0),
    box_jitter_probability=0.0,
)


def draw_page(boxes, size=PAGE_SIZE) -> Image.Image:
    """A white RGB page with a solid black rectangle covering each box exactly."""
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill="black")  # PIL's rectangle includes its last pixel
    return page


def ink_box(image: Image.Image):
    """[x0, y0, x1, y1] around the ink pixels, or None if there is no ink."""
    ys, xs = np.nonzero(np.asarray(image.convert("L")) < INK_THRESHOLD)
    if len(xs) == 0:
        return None
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def assert_ordered_and_clamped(boxes, size=PAGE_SIZE):
    width, height = size
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height, (x0, y0, x1, y1)


def augment_each_word(config: AugmentConfig, seed: int):
    """Augment the full page, then a page holding only word k, for every k, with the same seed.

    augment_page draws its random choices from the rng alone, so every call applies the same warp and the
    ink of the single-word page shows where word k went."""
    _, boxes = augment_page(draw_page(WORD_BOXES), {"bboxes": WORD_BOXES}, np.random.default_rng(seed), config)
    single_word = []
    for box in WORD_BOXES:
        image, same_boxes = augment_page(draw_page([box]), {"bboxes": WORD_BOXES}, np.random.default_rng(seed), config)
        assert same_boxes == boxes
        single_word.append(image)
    return boxes["bboxes"], single_word


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ink_stays_inside_the_transformed_boxes(seed):
    boxes, images = augment_each_word(FORCED, seed)
    assert boxes != WORD_BOXES
    assert_ordered_and_clamped(boxes)
    for box, image in zip(boxes, images):
        assert image.mode == "RGB" and image.size == PAGE_SIZE
        ink = ink_box(image)
        assert ink is not None
        assert ink[0] >= box[0] - TOLERANCE and ink[1] >= box[1] - TOLERANCE
        assert ink[2] <= box[2] + TOLERANCE and ink[3] <= box[3] + TOLERANCE


@pytest.mark.parametrize("seed", [0, 1])
def test_transformed_boxes_are_tight_around_the_ink(seed):
    """Without jitter or blur, each box is the envelope of its moved word: every edge within tolerance of the ink."""
    boxes, images = augment_each_word(GEOMETRY_ONLY, seed)
    for box, image in zip(boxes, images):
        assert np.allclose(ink_box(image), box, atol=TOLERANCE), (ink_box(image), box)


def test_every_box_column_moves_with_the_same_matrix():
    segments = [[30, 30, 170, 46], [30, 30, 170, 46], [200, 60, 290, 80], [40, 120, 60, 132], [150, 150, 260, 190]]
    page = draw_page(WORD_BOXES)
    _, words_only = augment_page(page, {"bboxes": WORD_BOXES}, np.random.default_rng(5), GEOMETRY_ONLY)
    _, both = augment_page(page, {"bboxes": WORD_BOXES, "segment_bboxes": segments},
                           np.random.default_rng(5), GEOMETRY_ONLY)
    assert both["bboxes"] == words_only["bboxes"]
    _, segments_alone = augment_page(page, {"bboxes": segments}, np.random.default_rng(5), GEOMETRY_ONLY)
    assert both["segment_bboxes"] == segments_alone["bboxes"]


def test_jitter_keeps_words_of_one_segment_on_one_segment_box():
    segments = [[30, 30, 170, 46], [30, 30, 170, 46], [200, 60, 290, 80], [40, 120, 60, 132], [150, 150, 260, 190]]
    config = AugmentConfig(box_jitter_probability=1.0)
    _, boxes = augment_page(draw_page(WORD_BOXES), {"segment_bboxes": segments}, np.random.default_rng(0), config)
    assert boxes["segment_bboxes"][0] == boxes["segment_bboxes"][1]


def test_boxes_pushed_off_the_page_are_clamped_and_ordered():
    config = AugmentConfig(rotation_range=(10.0, 10.0), scale_range=(1.3, 1.3), translate_range=(0.2, 0.2),
                           box_jitter_probability=1.0)
    edge_boxes = [[0, 0, 20, 10], [300, 200, 320, 220], [5, 100, 315, 110], [310, 5, 320, 215]]
    for seed in range(5):
        _, boxes = augment_page(draw_page(edge_boxes), {"bboxes": edge_boxes}, np.random.default_rng(seed), config)
        assert len(boxes["bboxes"]) == len(edge_boxes)
        assert_ordered_and_clamped(boxes["bboxes"])


def test_identity_config_changes_nothing():
    page = draw_page(WORD_BOXES)
    image, boxes = augment_page(page, {"bboxes": WORD_BOXES}, np.random.default_rng(0), IDENTITY)
    assert boxes == {"bboxes": [[float(v) for v in box] for box in WORD_BOXES]}
    assert image.mode == "RGB" and image.size == page.size
    assert np.abs(np.asarray(image, dtype=int) - np.asarray(page, dtype=int)).max() <= 1


def test_grayscale_pages_keep_their_mode():
    page = draw_page(WORD_BOXES).convert("L")
    image, _ = augment_page(page, {"bboxes": WORD_BOXES}, np.random.default_rng(0), FORCED)
    assert image.mode == "L" and image.size == page.size


# ------------------------------------------------------------------------------------------- augment_split
LABELS = ["O", "B-total", "I-total"]


def tiny_dataset() -> Dataset:
    boxes = [WORD_BOXES[:2], WORD_BOXES[2:], WORD_BOXES]
    features = Features({
        "id": Value("string"),
        "words": Sequence(Value("string")),
        "bboxes": Sequence(Sequence(Value("int32"), length=4)),
        "segment_bboxes": Sequence(Sequence(Value("int32"), length=4)),
        "ner_tags": Sequence(ClassLabel(names=LABELS)),
        "image": ImageFeature(),
    })
    return Dataset.from_dict({
        "id": ["doc-a", "doc-b", "doc-c"],
        "words": [[f"w{i}" for i in range(len(b))] for b in boxes],
        "bboxes": boxes,
        "segment_bboxes": boxes,
        "ner_tags": [[i % 3 for i in range(len(b))] for b in boxes],
        "image": [draw_page(b) for b in boxes],
    }, features=features)


def rows(dataset: Dataset):
    """Comparable rows: images as arrays."""
    return [{**row, "image": np.asarray(row["image"])} for row in dataset]


def same_rows(left, right) -> bool:
    return all(
        a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) if k == "image" else a[k] == b[k] for k in a)
        for a, b in zip(left, right)
    ) and len(left) == len(right)


def test_augment_split_appends_copies_and_keeps_words_and_tags():
    dataset = tiny_dataset()
    augmented = augment_split(dataset, copies=2, seed=0)
    n = len(dataset)
    assert len(augmented) == 3 * n
    assert augmented.features == dataset.features
    assert list(augmented["words"]) == list(dataset["words"]) * 3
    assert list(augmented["ner_tags"]) == list(dataset["ner_tags"]) * 3
    ids = list(augmented["id"])
    assert ids == list(dataset["id"]) + [f"{i}#aug{k}" for k in (1, 2) for i in dataset["id"]]
    assert len(set(ids)) == len(augmented)
    assert same_rows(rows(augmented.select(range(n))), rows(dataset))  # the originals come first, unchanged
    for row in augmented:
        for column in ("bboxes", "segment_bboxes"):
            assert all(isinstance(v, int) for box in row[column] for v in box)
            assert_ordered_and_clamped(row[column], row["image"].size)
        assert row["image"].mode == "RGB" and row["image"].size == PAGE_SIZE


def test_boxes_only_augmentation_keeps_the_images_and_moves_the_boxes_as_with_images():
    """images=False (a model that reads no pixels): each copy keeps its page image byte for byte, and its boxes get
    the same warp as with images (the jitter draws from the rng after the photometry, so only unjittered pages are
    compared box for box)."""
    dataset = tiny_dataset()
    config = AugmentConfig(box_jitter_probability=0.0)
    n = len(dataset)
    boxes_only = augment_split(dataset, copies=2, seed=5, config=config, images=False)
    with_images = augment_split(dataset, copies=2, seed=5, config=config)
    assert boxes_only.features == dataset.features and len(boxes_only) == 3 * n
    assert list(boxes_only["id"]) == list(with_images["id"])
    for k in range(n, 3 * n):
        assert np.array_equal(np.asarray(boxes_only[k]["image"]), np.asarray(dataset[k % n]["image"]))
        assert boxes_only[k]["bboxes"] == with_images[k]["bboxes"] != dataset[k % n]["bboxes"]
        assert boxes_only[k]["segment_bboxes"] == with_images[k]["segment_bboxes"]
    jittered = augment_split(dataset, copies=1, seed=5, images=False)
    for row in jittered:
        assert_ordered_and_clamped(row["bboxes"], PAGE_SIZE)


def test_reading_order_copies_list_words_as_ocr_reads_them_with_their_tags_and_boxes():
    # The annotation lists the words out of reading order (the right-hand block first, as a labelling tool may).
    order = [2, 4, 0, 3, 1]
    words = [f"w{i}" for i in order]
    boxes = [WORD_BOXES[i] for i in order]
    tags = [i % 3 for i in order]
    features = Features({"id": Value("string"), "words": Sequence(Value("string")),
                         "bboxes": Sequence(Sequence(Value("int32"), length=4)),
                         "ner_tags": Sequence(ClassLabel(names=LABELS)), "image": ImageFeature()})
    dataset = Dataset.from_dict({"id": ["doc"], "words": [words], "bboxes": [boxes], "ner_tags": [tags],
                                 "image": [draw_page(boxes)]}, features=features)
    config = replace(IDENTITY, reading_order_probability=1.0)
    copy = augment_split(dataset, copies=1, seed=0, config=config, images=False)[1]
    assert copy["words"] == ["w0", "w1", "w2", "w3", "w4"]
    assert copy["ner_tags"] == [0, 1, 2, 0, 1]
    assert copy["bboxes"] == WORD_BOXES
    never = replace(IDENTITY, reading_order_probability=0.0)
    assert augment_split(dataset, copies=1, seed=0, config=never, images=False)[1]["words"] == words


def test_reading_order_groups_words_into_lines_top_to_bottom_then_left_to_right():
    # A title left of a taller vendor name on one line, a two-line block and a word below.
    boxes = [[530, 75, 674, 96], [684, 76, 766, 102], [70, 76, 180, 96], [60, 120, 120, 132],
             [60, 136, 140, 148], [600, 118, 640, 134]]
    assert reading_order(boxes) == [2, 0, 1, 3, 5, 4]


def test_augment_split_is_seeded_and_copies_differ():
    dataset = tiny_dataset()
    n = len(dataset)
    first = rows(augment_split(dataset, copies=2, seed=7))
    assert same_rows(first, rows(augment_split(dataset, copies=2, seed=7)))
    copy_1, copy_2 = first[n:2 * n], first[2 * n:]
    for a, b in zip(copy_1, copy_2):
        assert not np.array_equal(a["image"], b["image"])
        assert a["bboxes"] != b["bboxes"]
    other_seed = rows(augment_split(dataset, copies=2, seed=8))
    assert not np.array_equal(first[n]["image"], other_seed[n]["image"])


def test_augment_split_does_not_depend_on_num_proc():
    dataset = tiny_dataset()
    one = rows(augment_split(dataset, copies=1, seed=3))
    two = rows(augment_split(dataset, copies=1, seed=3, num_proc=2))
    assert same_rows(one, two)


def test_zero_copies_returns_the_dataset_unchanged():
    dataset = tiny_dataset()
    assert augment_split(dataset, copies=0, seed=0) is dataset
    with pytest.raises(ValueError):
        augment_split(dataset, copies=-1, seed=0)


def test_augment_flags():
    from dataclasses import asdict

    from transformers import HfArgumentParser

    from layoutkit.train.arguments import AugmentArguments

    parser = HfArgumentParser(AugmentArguments)
    (defaults,) = parser.parse_args_into_dataclasses([])
    assert asdict(defaults) == {"augment": False, "augment_copies": 2}
    (given,) = parser.parse_args_into_dataclasses(["--augment", "--augment_copies", "3"])
    assert asdict(given) == {"augment": True, "augment_copies": 3}
