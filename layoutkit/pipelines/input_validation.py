"""The input rules shared by the dataset builder and inference, so a page the builder would refuse is refused at
inference too, with the same message: what a box is, which words are blank, when boxes look normalised.

Copied into checkpoints beside the pipelines (imported relatively by `pipeline_inputs.py`): standard library only
(the normalised-box check reads a page image it is given through the image's own methods).
"""

from __future__ import annotations

import math
import numbers
import unicodedata
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Sequence

# Boxes may overshoot the page by this many pixels (rounding in annotation and OCR tools); they are clamped.
BOX_TOLERANCE = 2
# The grid LayoutLM models read boxes on: coordinates normalised for the model lie within [0, 1000].
NORMALISED_GRID = 1000


# The messages `warn` collects for the document being read in this thread (None: nobody collects). A context
# variable, not warnings.catch_warnings: that one swaps process-wide state and is not safe from several threads
# (the service reads documents in a thread pool), and its "once per location" filters would hide repeats.
_collected: ContextVar[list[str] | None] = ContextVar("layoutkit_collected_warnings", default=None)


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """The messages given to `warn` in this thread while the block runs, in order (for a document's `warnings`)."""
    messages: list[str] = []
    token = _collected.set(messages)
    try:
        yield messages
    finally:
        _collected.reset(token)


def warn(message: str, stacklevel: int = 2) -> None:
    """Report an input that is readable but almost surely wrong: to the collector of `collect_warnings`, if any, and
    as a Python warning (what a library caller sees)."""
    messages = _collected.get()
    if messages is not None:
        messages.append(message)
    warnings.warn(message, stacklevel=stacklevel + 1)


class FieldError(ValueError):
    """An input value that cannot be used: `field` names it (e.g. "boxes[3]"), `message` says what is wrong and
    what to do. The builder turns it into an AnnotationError (which adds the file); inference raises it as is."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def check_box(value: Any, field: str, width: float, height: float) -> list:
    """`value` as [x0, y0, x1, y1] pixels of a `width` x `height` page, clamped to the page; raises FieldError
    unless it is 4 finite real numbers (text and booleans are not numbers), not inverted, and inside the page
    within BOX_TOLERANCE pixels."""
    problem = _not_a_box(value)
    if problem is not None:
        raise FieldError(
            field, f"{value!r} is not a box ({problem}); {field} must be [x0, y0, x1, y1], 4 numbers in pixels"
        )
    x0, y0, x1, y1 = value
    box = list(value)
    if x1 < x0 or y1 < y0:
        raise FieldError(
            field, f"box {box} is inverted; boxes are [left, top, right, bottom] with x0 <= x1 and y0 <= y1"
        )
    if x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE or x1 > width + BOX_TOLERANCE or y1 > height + BOX_TOLERANCE:
        raise FieldError(
            field,
            f"box {box} lies outside the {width}x{height} image (tolerance {BOX_TOLERANCE} px); boxes must be "
            "pixel coordinates of the upright image (not normalised, not from another resolution)",
        )
    return [max(0, x0), max(0, y0), min(width, x1), min(height, y1)]


def _not_a_box(value: Any) -> str | None:
    """Why `value` is not 4 finite real numbers, or None when it is."""
    if not isinstance(value, (list, tuple)):
        return "not a list"
    if len(value) != 4:
        return f"{len(value)} values"
    for number in value:
        # bool is an int subclass and "10" converts silently: both hide a broken export, so neither is a number.
        if isinstance(number, bool) or not isinstance(number, numbers.Real):
            return f"{number!r} is not a number"
        if not math.isfinite(number):
            return f"{number!r} is not a finite number"
    return None


def normalised_boxes_problem(
    boxes: Sequence[Sequence[float]], width: float, height: float, page: Any = None
) -> str | None:
    """A message when the boxes are almost surely normalised, not pixels (the model would read the words squeezed
    into a corner of the page); None otherwise, and for a page without boxes.

    - Every box within [0, 1] on a page larger than 1 px: no page holds all its words in one pixel.
    - Every box within [0, 1000] on a page larger than 1000 px both ways is only a hint: real words can sit in the
      first 1000 px of a page (a receipt scanned on a 1080x1527 page). With the page image (`page`: a PIL image,
      or a function returning it, called only then), its ink decides: the boxes are normalised when, scaled from
      the 0-1000 grid to the page, they cover ink much more densely than as pixels (`INK_RATIO`). Without an image,
      or on a page without ink, their geometry does: normalised boxes spread over the grid as text over a page
      (over half of it, one way or the other) while, read as pixels, they leave the page empty beyond x = 1000 and
      y = 1000; flagged when the words end before the last quarter of the page both across and down.
    """
    if not boxes:
        return None
    if min(min(box) for box in boxes) < 0:
        return None
    largest = max(max(box) for box in boxes)
    if largest <= 1 < max(width, height):
        grid = "[0, 1]"
    elif largest <= NORMALISED_GRID < min(width, height) and _thousand_grid_boxes(boxes, width, height, page):
        grid = f"[0, {NORMALISED_GRID}]"
    else:
        return None
    return (
        f"every box lies within {grid} on a {width}x{height} page: the boxes look normalised, not pixels; give "
        f"pixel coordinates of the page (x from 0 to {width}, y from 0 to {height})"
    )


# Read as pixels, 0-1000 boxes leave at least this share of a page larger than 1000 px empty on the right and at
# the bottom when the page is a third larger than the grid; real words seldom end so early both ways.
EMPTY_PAGE_SHARE = 0.25
# Boxes that are normalised cover ink this many times more densely scaled to the page than read as pixels.
INK_RATIO = 1.5
INK_SAMPLE = 400  # boxes measured at most (evenly spread over the page's words)


def _thousand_grid_boxes(boxes: Sequence[Sequence[float]], width: float, height: float, page: Any) -> bool:
    """Whether boxes within [0, 1000] on a page larger than 1000 px both ways are normalised (see
    `normalised_boxes_problem`)."""
    if page is not None:
        ink = _ink_densities(boxes, width, height, page() if callable(page) else page)
        if ink is not None:
            as_pixels, as_grid = ink
            return as_grid > INK_RATIO * as_pixels
    left, top = min(box[0] for box in boxes), min(box[1] for box in boxes)
    right, bottom = max(box[2] for box in boxes), max(box[3] for box in boxes)
    spread = max(right - left, bottom - top) >= NORMALISED_GRID / 2
    return spread and right <= (1 - EMPTY_PAGE_SHARE) * width and bottom <= (1 - EMPTY_PAGE_SHARE) * height


def _ink_densities(boxes: Sequence[Sequence[float]], width: float, height: float, page: Any) -> tuple[float, float] | None:
    """The share of ink pixels (much darker than the paper: the page's most common grey) inside the boxes read as
    pixels, and inside them scaled from the 0-1000 grid to the page; None when neither covers any ink (a blank
    page) or the image is not the page the boxes measure."""
    if tuple(page.size) != (round(width), round(height)):
        return None
    gray = page.convert("L")
    histogram = gray.histogram()
    paper = max(range(256), key=histogram.__getitem__)
    ink = gray.point([255 if level < paper - 80 else 0 for level in range(256)])
    sample = boxes[:: max(1, len(boxes) // INK_SAMPLE)]
    scale_x, scale_y = width / NORMALISED_GRID, height / NORMALISED_GRID
    scaled = [[box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y] for box in sample]
    densities = []
    for reading in (sample, scaled):
        inked = area = 0.0
        for x0, y0, x1, y1 in reading:
            region = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
            if region[2] <= region[0] or region[3] <= region[1]:
                continue
            histogram = ink.crop(region).histogram()
            inked += histogram[255]
            area += sum(histogram)
        densities.append(inked / area if area else 0.0)
    return None if not any(densities) else (densities[0], densities[1])


def is_blank_word(word: str) -> bool:
    """True for a word with no visible text: empty, whitespace, or only invisible format characters (zero-width
    space/joiners U+200B-U+200D, word joiner U+2060, BOM U+FEFF, soft hyphen U+00AD: Unicode category Cf).
    Some tokenizers give such a word no token at all, so its label would be lost."""
    return all(char.isspace() or unicodedata.category(char) == "Cf" for char in word)
