"""Geometry shared by training and inference: page resizing, box scaling, 0-1000 normalisation, line boxes.

This module is copied into every saved checkpoint beside the custom pipeline, so it imports only the
standard library, numpy and PIL.
"""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageOps

Box = Sequence[float]

# LayoutLM-family models embed coordinates on a 0-1000 grid whatever the page size.
GRID = 1000


RESIZE_MODES = {  # --resize_mode -> (keep_aspect, pad)
    "fit": (True, False),  # scaled to fit inside WIDTHxHEIGHT, aspect and orientation kept
    "pad": (True, True),  # fit, then padded with white to exactly WIDTHxHEIGHT
    "stretch": (False, True),  # stretched to exactly WIDTHxHEIGHT
}


def parse_size(text: str) -> tuple[int, int]:
    """Parse "WIDTHxHEIGHT" (e.g. "1000x700") into (width, height)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 1000x700") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return width, height


def load_page(image: Image.Image) -> Image.Image:
    """Return the page as an upright RGB image: applies the EXIF orientation and converts any mode
    (grayscale, RGBA over white, CMYK, palette, 16-bit) to RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping.
        image = image.point(lambda value: value * (255 / 65535)).convert("L")
    return image.convert("RGB")


def scale_boxes(boxes: Sequence[Box], scale_x: float, scale_y: float) -> list[list[int]]:
    return [
        [round(x0 * scale_x), round(y0 * scale_y), round(x1 * scale_x), round(y1 * scale_y)]
        for x0, y0, x1, y1 in boxes
    ]


def resize_page(
    image: Image.Image, size: tuple[int, int] | None, keep_aspect: bool = False, pad: bool = True
) -> tuple[Image.Image, float, float]:
    """Resize a page to `size` = (width, height) and return it with the x and y scale factors.

    With `keep_aspect`, the page is scaled to fit inside `size` (its aspect ratio kept); with `pad` it is then
    padded with white on the right and bottom to exactly `size` (box coordinates need no offset), without `pad`
    it keeps its own shape (a portrait page stays portrait: "fit"). `size=None` keeps the page as it is.
    """
    if size is None:
        return image, 1.0, 1.0
    width, height = size
    if not keep_aspect:
        return image.resize((width, height), Image.Resampling.BILINEAR), width / image.width, height / image.height
    scale = min(width / image.width, height / image.height)
    fitted = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
    )
    if not pad:
        return fitted, fitted.width / image.width, fitted.height / image.height
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(fitted, (0, 0))
    return canvas, scale, scale


def resize_document(
    image: Image.Image, boxes_list: Sequence[Sequence[Box]], size: tuple[int, int] | None, keep_aspect: bool = False,
    pad: bool = True,
) -> tuple[Image.Image, list[list[list[int]]]]:
    """Resize a page and every list of boxes on it (word boxes, segment boxes) consistently.

    The one resize code path used when building datasets and at inference.
    """
    resized, scale_x, scale_y = resize_page(image, size, keep_aspect, pad)
    return resized, [scale_boxes(boxes, scale_x, scale_y) for boxes in boxes_list]


def normalize_box(box: Box, width: int, height: int) -> list[int]:
    """Map a pixel box on a `width` x `height` page to the 0-1000 grid, clamped and ordered."""
    x0, y0, x1, y1 = box
    grid = [
        int(GRID * x0 / width),
        int(GRID * y0 / height),
        int(GRID * x1 / width),
        int(GRID * y1 / height),
    ]
    x0, y0, x1, y1 = (min(max(value, 0), GRID) for value in grid)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def normalize_boxes(boxes: Sequence[Box], width: int, height: int) -> list[list[int]]:
    return [normalize_box(box, width, height) for box in boxes]


def union_box(boxes: Sequence[Box]) -> list[int]:
    return [
        min(box[0] for box in boxes),
        min(box[1] for box in boxes),
        max(box[2] for box in boxes),
        max(box[3] for box in boxes),
    ]


def group_lines(boxes: Sequence[Box], gap_factor: float = 1.5) -> list[int]:
    """Assign each word box a line id: words in reading order that overlap vertically and sit at most
    `gap_factor` word heights apart horizontally share a line. Used to make segment boxes when neither
    the annotation nor the OCR engine provides lines."""
    line_ids: list[int] = []
    previous: Box | None = None
    line = -1
    for box in boxes:
        if previous is None:
            line += 1
        else:
            overlap = min(previous[3], box[3]) - max(previous[1], box[1])
            height = max(1.0, min(previous[3] - previous[1], box[3] - box[1]))
            gap = box[0] - previous[2]
            if not (overlap > 0.5 * height and -height <= gap <= gap_factor * height):
                line += 1
        line_ids.append(line)
        previous = box
    return line_ids


def reading_order(boxes: Sequence[Box]) -> list[int]:
    """The indices of `boxes` in the order OCR engines return words: text lines top to bottom (a box joins the
    line whose first box's vertical band holds its middle), each line left to right."""
    by_middle = sorted(range(len(boxes)), key=lambda i: (boxes[i][1] + boxes[i][3]) / 2)
    lines: list[tuple[float, float, list[int]]] = []  # (top, bottom, members)
    for index in by_middle:
        middle = (boxes[index][1] + boxes[index][3]) / 2
        if lines and lines[-1][0] <= middle <= lines[-1][1]:
            lines[-1][2].append(index)
        else:
            lines.append((boxes[index][1], boxes[index][3], [index]))
    return [index for _, _, members in lines for index in sorted(members, key=lambda i: (boxes[i][0], i))]


def segment_boxes(boxes: Sequence[Box], segment_ids: Sequence[int]) -> list[list[int]]:
    """Give every word the union box of all words sharing its segment (line or entity) id."""
    members: dict[int, list[Box]] = {}
    for box, segment in zip(boxes, segment_ids):
        members.setdefault(segment, []).append(box)
    unions = {segment: union_box(group) for segment, group in members.items()}
    return [list(unions[segment]) for segment in segment_ids]
