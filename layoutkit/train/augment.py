"""Training-data augmentation for document pages: small geometric and photometric changes, boxes kept in step.

Augmentation is offline: `augment_split` adds augmented copies of the training documents once with
`Dataset.map`, so they are cached next to the dataset, the step loop stays free of image work and resuming
from a checkpoint sees exactly the same data. Every copy is seeded by (seed, copy, document index), so the
result does not depend on `num_proc`.

Geometry: one affine transform per page (rotation about the centre, scale, translation) moves the image and
every box column with the same matrix; a box becomes the axis-aligned envelope of its four moved corners,
clamped to the page. Photometric changes touch the image only; box jitter touches the boxes only. Half of the
copies (`reading_order_probability`) list their words in reading order, as OCR returns them, instead of the
annotation's order.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, concatenate_datasets
from datasets import Image as ImageFeature
from PIL import Image, ImageEnhance, ImageFilter

from ..pipelines.boxes import reading_order

# Columns holding one [x0, y0, x1, y1] pixel box per word; whichever a dataset has are transformed.
BOX_COLUMNS = ("bboxes", "segment_bboxes")
# Columns with one value per word: reordered together when a copy's words are put in reading order.
WORD_COLUMNS = ("words", "ner_tags", "entity_ids", "row_ids", *BOX_COLUMNS)

Range = tuple[float, float]
Boxes = list[list[float]]


@dataclass
class AugmentConfig:
    """Ranges are (low, high), sampled uniformly per page; (v, v) fixes a value, probability 0 turns a step off.

    The defaults are mild on purpose: scans and phone photos of documents are slightly tilted, shifted,
    lighter or darker, blurred and compressed, but never mirrored or heavily warped.
    """

    # photometric (image only)
    brightness_range: Range = (0.8, 1.2)  # ImageEnhance.Brightness factor; 1 keeps the page as it is
    contrast_range: Range = (0.8, 1.2)  # ImageEnhance.Contrast factor; 1 keeps the page as it is
    blur_probability: float = 0.2  # chance of a Gaussian blur
    blur_radius_range: Range = (0.3, 1.0)  # blur radius in pixels
    noise_probability: float = 0.3  # chance of additive Gaussian pixel noise
    noise_std_range: Range = (2.0, 8.0)  # noise standard deviation, in 0-255 intensity levels
    jpeg_probability: float = 0.3  # chance of a JPEG re-encoding (compression artefacts)
    jpeg_quality_range: tuple[int, int] = (50, 90)  # JPEG quality, inclusive
    # geometric (image and every box column)
    rotation_range: Range = (-2.0, 2.0)  # degrees, counter-clockwise about the page centre
    scale_range: Range = (0.95, 1.05)  # zoom about the page centre
    translate_range: Range = (-0.02, 0.02)  # shift as a fraction of the page width (x) and height (y)
    # box jitter (boxes only): imitates loose or tight OCR boxes
    box_jitter_probability: float = 0.5  # chance that a page's boxes are jittered
    box_jitter_pixels: float = 2.0  # largest move of a box edge, in pixels
    # word order: annotations list words in the order their tool wrote them (a vendor block before the title left
    # of it, a description's two lines together); OCR returns them line by line. A copy in reading order teaches
    # the model the order it reads at inference.
    reading_order_probability: float = 0.5  # chance that a copy's words are put in reading order


@dataclass
class PageParams:
    """The random choices for one page, drawn up front so they depend only on the rng, not on the image."""

    angle: float
    scale: float
    shift_x: float
    shift_y: float
    brightness: float
    contrast: float
    blur_radius: float | None
    noise_std: float | None
    jpeg_quality: int | None
    jitter: bool


def sample_params(rng: np.random.Generator, config: AugmentConfig, size: tuple[int, int]) -> PageParams:
    width, height = size

    def maybe(probability: float, low_high: Range) -> float | None:
        return float(rng.uniform(*low_high)) if rng.random() < probability else None

    angle = float(rng.uniform(*config.rotation_range))
    scale = float(rng.uniform(*config.scale_range))
    shift_x = float(rng.uniform(*config.translate_range)) * width
    shift_y = float(rng.uniform(*config.translate_range)) * height
    brightness = float(rng.uniform(*config.brightness_range))
    contrast = float(rng.uniform(*config.contrast_range))
    blur_radius = maybe(config.blur_probability, config.blur_radius_range)
    noise_std = maybe(config.noise_probability, config.noise_std_range)
    jpeg_quality = None
    if rng.random() < config.jpeg_probability:
        low, high = config.jpeg_quality_range
        jpeg_quality = int(rng.integers(low, high + 1))
    jitter = bool(rng.random() < config.box_jitter_probability) and config.box_jitter_pixels > 0
    return PageParams(angle, scale, shift_x, shift_y, brightness, contrast, blur_radius, noise_std, jpeg_quality,
                      jitter)


# ------------------------------------------------------------------------------------------------ geometry
def affine_matrix(size: tuple[int, int], angle: float, scale: float, shift_x: float, shift_y: float) -> np.ndarray:
    """3x3 matrix taking a source pixel position to its place in the augmented page: rotate `angle` degrees
    counter-clockwise (as displayed, y pointing down) and scale about the centre, then shift."""
    width, height = size
    centre = np.array([width / 2, height / 2])
    radians = math.radians(angle)
    cos, sin = math.cos(radians) * scale, math.sin(radians) * scale
    linear = np.array([[cos, sin], [-sin, cos]])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre + np.array([shift_x, shift_y]) - linear @ centre
    return matrix


def transform_image(image: Image.Image, matrix: np.ndarray) -> Image.Image:
    """Warp the page with `matrix` into an image of the same size, filling uncovered corners with white."""
    # PIL maps each output position back to the input, so it takes the inverse matrix (top two rows).
    inverse = np.linalg.inv(matrix)[:2].flatten()
    return image.transform(image.size, Image.Transform.AFFINE, tuple(inverse), Image.Resampling.BILINEAR,
                           fillcolor="white")


def clamp_box(box, width: float, height: float) -> list[float]:
    """Order a box's corners and keep it inside [0, width] x [0, height]."""
    x0, y0, x1, y1 = box
    x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
    y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
    return [x0, y0, x1, y1]


def transform_boxes(boxes, matrix: np.ndarray, size: tuple[int, int]) -> Boxes:
    """Move every box with `matrix`: the axis-aligned envelope of its four moved corners, clamped to the page."""
    if len(boxes) == 0:
        return []
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = array.T
    corners = np.stack([np.stack([x, y, np.ones_like(x)], axis=-1)
                        for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))], axis=1)  # boxes x 4 x 3
    moved = corners @ matrix[:2].T  # boxes x 4 x 2
    envelopes = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)
    width, height = size
    return [clamp_box(box, width, height) for box in envelopes.tolist()]


# ------------------------------------------------------------------------------------------------ photometric
def adjust_photometry(image: Image.Image, params: PageParams, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast, then optional blur, noise and JPEG re-encoding; the image keeps its mode."""
    mode = image.mode
    image = ImageEnhance.Brightness(image).enhance(params.brightness)
    image = ImageEnhance.Contrast(image).enhance(params.contrast)
    if params.blur_radius is not None:
        image = image.filter(ImageFilter.GaussianBlur(params.blur_radius))
    if params.noise_std is not None:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + rng.normal(0.0, params.noise_std, size=pixels.shape)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode=mode)
    if params.jpeg_quality is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=params.jpeg_quality)
        buffer.seek(0)
        # convert() gives a plain in-memory image, so datasets stores it losslessly rather than as JPEG again.
        image = Image.open(buffer).convert(mode)
    return image


# ------------------------------------------------------------------------------------------------ box jitter
def jitter_boxes(boxes: Boxes, rng: np.random.Generator, max_pixels: float, size: tuple[int, int]) -> Boxes:
    """Move each box edge by up to `max_pixels`, then clamp.

    Identical boxes get the same move, so the words of one segment keep sharing one segment box. An edge
    moves inward by at most a quarter of the box's size, so small boxes (punctuation) never collapse.
    """
    width, height = size
    moves: dict[tuple, np.ndarray] = {}
    jittered = []
    for box in boxes:
        key = tuple(box)
        if key not in moves:
            moves[key] = rng.uniform(-max_pixels, max_pixels, size=4)
        dx0, dy0, dx1, dy1 = moves[key]
        x0, y0, x1, y1 = box
        inward_x, inward_y = (x1 - x0) / 4, (y1 - y0) / 4
        jittered.append(clamp_box(
            [x0 + min(dx0, inward_x), y0 + min(dy0, inward_y), x1 + max(dx1, -inward_x), y1 + max(dy1, -inward_y)],
            width, height,
        ))
    return jittered


# ------------------------------------------------------------------------------------------------ one page
def augment_page(
    image: Image.Image, box_columns: dict[str, Boxes], rng: np.random.Generator, config: AugmentConfig
) -> tuple[Image.Image, dict[str, Boxes]]:
    """Augment one page: a random affine warp of the image and of every box column (same matrix), then
    photometric changes (image only), then box jitter (boxes only). The page keeps its size and mode.

    `box_columns` maps a column name to one [x0, y0, x1, y1] pixel box per word; the result has the same
    keys with float boxes, ordered (x0 <= x1, y0 <= y1) and clamped to the page.
    """
    size = image.size
    params = sample_params(rng, config, size)
    matrix = affine_matrix(size, params.angle, params.scale, params.shift_x, params.shift_y)
    augmented = adjust_photometry(transform_image(image, matrix), params, rng)
    return augmented, move_boxes(box_columns, matrix, params, rng, config, size)


def augment_boxes(size: tuple[int, int], box_columns: dict[str, Boxes], rng: np.random.Generator,
                  config: AugmentConfig) -> dict[str, Boxes]:
    """`augment_page` for a model that never sees the page: the same warp and jitter of the boxes, no pixels."""
    params = sample_params(rng, config, size)
    matrix = affine_matrix(size, params.angle, params.scale, params.shift_x, params.shift_y)
    return move_boxes(box_columns, matrix, params, rng, config, size)


def move_boxes(box_columns: dict[str, Boxes], matrix: np.ndarray, params: PageParams, rng: np.random.Generator,
               config: AugmentConfig, size: tuple[int, int]) -> dict[str, Boxes]:
    """Every box column warped by `matrix`, then jittered when the page's `params` say so."""
    moved = {name: transform_boxes(boxes, matrix, size) for name, boxes in box_columns.items()}
    if params.jitter:
        moved = {name: jitter_boxes(boxes, rng, config.box_jitter_pixels, size) for name, boxes in moved.items()}
    return moved


# ------------------------------------------------------------------------------------------------ datasets
def _integer_valued(feature) -> bool:
    """Whether a (nested) box feature stores integers, e.g. List(List(Value("int32"), length=4))."""
    while hasattr(feature, "feature"):
        feature = feature.feature
    return str(getattr(feature, "dtype", "")).startswith(("int", "uint"))


def _round_outward(boxes: Boxes, width: int, height: int) -> list[list[int]]:
    """Integer boxes that still cover the float boxes (the epsilon absorbs float noise such as 9.9999999)."""
    epsilon = 1e-6
    return [
        [max(0, math.floor(x0 + epsilon)), max(0, math.floor(y0 + epsilon)),
         min(width, math.ceil(x1 - epsilon)), min(height, math.ceil(y1 - epsilon))]
        for x0, y0, x1, y1 in boxes
    ]


def in_reading_order(document: dict, update: dict) -> dict:
    """The per-word columns of a document (the moved boxes from `update`) reordered as OCR reads the page
    (`boxes.reading_order` of the word boxes). Labels stay on their words: the second line of a description
    read after the first line's amounts starts with an I- tag, as the model sees it at inference."""
    order = reading_order(update["bboxes"])
    columns = {}
    for name in WORD_COLUMNS:
        values = update.get(name, document.get(name))
        if values is not None and len(values) == len(order):
            columns[name] = [values[i] for i in order]
    return columns


def augment_document(
    document: dict, index: int, *, copy_number: int, seed: int, config: AugmentConfig,
    box_columns: list[str], integer_columns: list[str], images: bool = True,
) -> dict:
    """`Dataset.map` function: one augmented copy of one document (other columns pass through unchanged).
    `images=False`: the boxes only; the image column arrives undecoded and only its size is read."""
    rng = np.random.default_rng([seed, copy_number, index])
    present = {name: document[name] for name in box_columns if document[name] is not None}
    if images:
        image, boxes = augment_page(document["image"], present, rng, config)
        size, update = image.size, {"image": image}
    else:
        stored = document["image"]
        with Image.open(io.BytesIO(stored["bytes"]) if stored.get("bytes") else stored["path"]) as page:
            size = page.size  # the header only; the pixels are never decoded
        boxes, update = augment_boxes(size, present, rng, config), {}
    for name, column_boxes in boxes.items():
        update[name] = _round_outward(column_boxes, *size) if name in integer_columns else column_boxes
    if "bboxes" in update and rng.random() < config.reading_order_probability:
        update.update(in_reading_order(document, update))
    if "id" in document:
        update["id"] = f"{document['id']}#aug{copy_number}"
    return update


def augment_split(
    dataset: Dataset,
    copies: int,
    seed: int,
    config: AugmentConfig | None = None,
    num_proc: int | None = None,
    load_from_cache_file: bool = True,
    images: bool = True,
) -> Dataset:
    """The documents followed by `copies` augmented copies of every document (for the training split only).

    Each copy is one cached `Dataset.map` (so it is computed once and reused while the data, seed and config
    are unchanged); copy k of document i uses `numpy.random.default_rng([seed, k, i])`. Words, tags and any
    other column are kept; ids get `#aug{k}` appended so they stay unique; features are unchanged.
    `images=False` (a model that reads no pixels: LayoutLM v1, LiLT) moves and jitters the boxes only and keeps
    each copy's page image as it is, undecoded: the same layout augmentation in a fraction of the time.
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    if copies == 0:
        return dataset
    if "image" not in dataset.column_names:
        raise ValueError(f"augmentation needs an 'image' column; the dataset has {dataset.column_names}")
    config = config or AugmentConfig()
    box_columns = [name for name in BOX_COLUMNS if name in dataset.column_names]
    integer_columns = [name for name in box_columns if _integer_valued(dataset.features[name])]
    source = dataset if images else dataset.cast_column("image", ImageFeature(decode=False))
    augmented = [
        source.map(
            augment_document,
            with_indices=True,
            fn_kwargs={"copy_number": copy_number, "seed": seed, "config": config,
                       "box_columns": box_columns, "integer_columns": integer_columns, "images": images},
            features=source.features,
            num_proc=num_proc,
            load_from_cache_file=load_from_cache_file,
            desc=f"Augmenting training documents (copy {copy_number}/{copies}{'' if images else ', boxes only'})",
        )
        for copy_number in range(1, copies + 1)
    ]
    if not images:
        augmented = [copy.cast_column("image", dataset.features["image"]) for copy in augmented]
    return concatenate_datasets([dataset, *augmented])


def augment_training_split(accelerator, copies: int, raw, seed: int, num_proc: int | None = None,
                           load_from_cache_file: bool = True, images: bool = True) -> None:
    """Replace raw["train"] by the originals plus `copies` augmented copies of each (cached; the main process
    builds the cache first). `images=False`: boxes only (`augment_split`)."""
    with accelerator.main_process_first():
        raw["train"] = augment_split(raw["train"], copies, seed, num_proc=num_proc,
                                     load_from_cache_file=load_from_cache_file, images=images)
