"""See what the model read: a page with its OCR words and predicted entities drawn on it.

Words are thin grey boxes; each entity a box in its field type's colour, tagged with its type and score. A tag is
placed where it hides no word: above, below or beside its box (nearest first), inside the page, clear of the other
tags; where the full tag fits nowhere near its box a shorter one is tried (the type, then the score), and an entity
whose tag fits nowhere keeps only its coloured box (the legend names the colour). Under the page a legend gives
each field type's colour; `panel=True` adds a side panel listing every entity (type, text, score) instead.
The page keeps its pixel coordinates: the legend and panel extend the image below and to the right.

Colours come from one palette of distinct colours: in the order of `labels` (the model's field types) when given,
so every field type on a page has its own colour, else picked by the label name's hash (stable across runs).

Copied into saved checkpoints beside the custom pipeline: imports only the standard library, numpy and PIL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WORD_COLOUR = (160, 160, 160)
# Distinct colours (Tableau 10, navy, teal, then Tableau 20's light ones; greys left out for the words); text on a tag is black or white,
# whichever reads better on it.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194),
    (188, 189, 34), (23, 190, 207), (57, 59, 121), (0, 128, 128), (255, 187, 120), (152, 223, 138), (174, 199, 232),
    (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229),
)
BACKGROUND = (255, 255, 255)


def label_colour(label: str, labels: Sequence[str] | None = None) -> tuple[int, int, int]:
    """The colour of field type `label`: the palette in the order of `labels` when it names it, else by hash."""
    if labels is not None and label in labels:
        return PALETTE[list(labels).index(label) % len(PALETTE)]
    return PALETTE[int(hashlib.md5(label.encode("utf-8")).hexdigest()[:8], 16) % len(PALETTE)]


def colour_hex(colour: Sequence[int]) -> str:
    return "#" + "".join(f"{round(c):02x}" for c in colour[:3])


def text_colour(background: Sequence[int]) -> tuple[int, int, int]:
    red, green, blue = background[:3]
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def entity_label(entity: dict) -> str:
    return entity.get("entity_group") or entity.get("label")


@dataclass
class Tag:
    """One entity's tag: its text and where it goes (`box`, page pixels); `text` is None when it fits nowhere."""

    entity: int
    text: str | None
    box: tuple[int, int, int, int] | None
    adjacent: bool = True  # touching its entity's box; else the drawing adds a leader line


def _overlaps(candidates: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """For each candidate rectangle (C, 4), whether it overlaps any of `boxes` (N, 4) (shared edges do not count)."""
    if len(boxes) == 0:
        return np.zeros(len(candidates), dtype=bool)
    c, b = candidates[:, None, :], boxes[None, :, :]
    return ((c[..., 0] < b[..., 2]) & (b[..., 0] < c[..., 2]) & (c[..., 1] < b[..., 3]) & (b[..., 1] < c[..., 3])).any(1)


def _gap(candidates: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Distance from each candidate rectangle to `box` (0 where they touch or overlap)."""
    dx = np.maximum(0, np.maximum(box[0] - candidates[:, 2], candidates[:, 0] - box[2]))
    dy = np.maximum(0, np.maximum(box[1] - candidates[:, 3], candidates[:, 1] - box[3]))
    return np.hypot(dx, dy)


def place_tags(size: tuple[int, int], word_boxes: Sequence[Sequence[float]], entities: Sequence[dict],
               measure, texts_of=None, reach: float = 3.0,
               shorter_cost: float = 8.0) -> list[Tag]:
    """Where each entity's tag goes on a page of `size` (width, height): a rectangle inside the page that overlaps
    no word box, no other tag and no other entity's box where possible, as near its entity's box as it can be
    (above first, then below, then beside), within `reach` tag heights of it.

    `measure(text)` is a tag's (width, height) in pixels; `texts_of(entity)` the tag texts to try, longest first
    (default: "type score", "type", "score")."""
    width, height = size
    texts_of = texts_of or _tag_texts
    words = np.asarray([[int(v) for v in box] for box in word_boxes], dtype=np.int64).reshape(-1, 4)
    words = words + np.array([-1, -1, 1, 1])  # a pixel of air around every word
    entity_boxes = np.asarray([[int(v) for v in e["box"]] for e in entities], dtype=np.int64).reshape(-1, 4)
    placed: list[tuple[int, int, int, int]] = []
    tags = []
    # Entities in reading order, so the tags of a table's rows are placed row after row.
    for index in sorted(range(len(entities)), key=lambda i: (entity_boxes[i][1], entity_boxes[i][0])):
        box = entity_boxes[index]
        others = np.delete(entity_boxes, index, axis=0)
        tag, tag_cost = Tag(index, None, None), np.inf
        # Each shorter text costs as much as moving the tag `shorter_cost` pixels away: a short tag right at its
        # box reads better than a long one further off.
        for level, text in enumerate(texts_of(entities[index])):
            tag_width, tag_height = measure(text)
            if tag_width > width or tag_height > height:
                continue
            candidates = _candidates(box, tag_width, tag_height, reach)
            inside = ((candidates[:, 0] >= 0) & (candidates[:, 1] >= 0) & (candidates[:, 2] <= width)
                      & (candidates[:, 3] <= height))
            candidates = candidates[inside]
            free = ~_overlaps(candidates, words) & ~_overlaps(candidates, box[None, :])
            if placed:
                free &= ~_overlaps(candidates, np.asarray(placed) + np.array([-1, -1, 1, 1]))
            candidates = candidates[free]
            if not len(candidates):
                continue
            gap = _gap(candidates, box)
            # Prefer above, then below, then beside; left-aligned with the box; off the other entities' boxes.
            above = candidates[:, 3] <= box[1]
            below = candidates[:, 1] >= box[3]
            side = np.where(above, 0, np.where(below, 2, 4))
            cost = (gap + side + 0.02 * np.abs(candidates[:, 0] - box[0]) + 40 * _overlaps(candidates, others)
                    + level * shorter_cost)
            best = int(np.argmin(cost))
            if cost[best] < tag_cost:
                tag_cost = cost[best]
                tag = Tag(index, text, tuple(int(v) for v in candidates[best]), adjacent=bool(gap[best] <= 2))
        if tag.box is not None:
            placed.append(tag.box)
        tags.append(tag)
    return sorted(tags, key=lambda t: t.entity)


def _tag_texts(entity: dict) -> list[str]:
    label = entity_label(entity)
    if entity.get("score") is None:
        return [label]
    return [f"{label} {entity['score']:.2f}", label, f"{entity['score']:.2f}"]


def _candidates(box: Sequence[int], tag_width: int, tag_height: int, reach: float) -> np.ndarray:
    """Tag rectangles around `box`: touching it on each side at a few alignments, and on a grid out to `reach`
    tag heights from it."""
    x0, y0, x1, y1 = (int(v) for v in box)
    w, h = tag_width, tag_height
    far = int(reach * h)
    step = max(2, h // 4)
    xs = {x0, x1 - w, x1 + 1, x0 - w - 1, (x0 + x1 - w) // 2, *range(x0 - w - far, x1 + far + 1, step)}
    ys = {y0 - h - 1, y1 + 1, y0, y1 - h, (y0 + y1 - h) // 2, *range(y0 - h - far, y1 + far + 1, step)}
    grid = np.array([(x, y) for x in xs for y in ys], dtype=np.int64).reshape(-1, 2)
    return np.concatenate([grid, grid + np.array([w, h])], axis=1)


def draw_page(page: Image.Image, words: Sequence[dict], entities: Sequence[dict], labels: Sequence[str] | None = None,
              panel: bool = False) -> Image.Image:
    """A copy of `page` with `words` ({"box"}) and `entities` ({"entity_group" or "label", "box", "score", and for
    the panel "word"}) drawn, boxes in the page's pixels; a legend of the field types' colours below the page, or
    with `panel` a side panel listing the entities. `labels`: the model's field types, in order (their colours)."""
    image, _ = draw_page_with_tags(page, words, entities, labels, panel)
    return image


def draw_page_with_tags(page: Image.Image, words: Sequence[dict], entities: Sequence[dict],
                        labels: Sequence[str] | None = None, panel: bool = False) -> tuple[Image.Image, list[Tag]]:
    """`draw_page`, also returning where each entity's tag went (for tests and callers that lay out more)."""
    base = page.convert("RGB")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    line = max(1, round(max(base.size) / 800))
    font = _font(max(10, round(base.height / 90)))
    pad = 2

    def measure(text: str) -> tuple[int, int]:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        return right - left + 2 * pad, bottom - top + 2 * pad

    for word in words:
        draw.rectangle(list(word["box"]), outline=WORD_COLOUR + (190,), width=1)
    colours = [label_colour(entity_label(e), labels) for e in entities]
    for entity, colour in zip(entities, colours):
        draw.rectangle(list(entity["box"]), fill=colour + (40,), outline=colour + (255,), width=2 * line)
    tags = place_tags(base.size, [w["box"] for w in words], entities, measure)
    for tag in tags:
        if tag.box is None:
            continue
        colour = colours[tag.entity]
        if not tag.adjacent:
            draw.line([_centre(tag.box), _nearest(entities[tag.entity]["box"], _centre(tag.box))],
                      fill=colour + (200,), width=line)
        draw.rectangle(tag.box, fill=colour + (235,))
        left, top, _, _ = draw.textbbox((0, 0), tag.text, font=font)
        draw.text((tag.box[0] + pad - left, tag.box[1] + pad - top), tag.text, fill=text_colour(colour) + (255,),
                  font=font)
    drawn = Image.alpha_composite(base.convert("RGBA"), overlay).convert("RGB")
    kinds = _kinds(entities, labels)
    if panel:
        drawn = _with_panel(drawn, entities, kinds, labels, font)
    elif kinds:
        drawn = _with_legend(drawn, kinds, labels, font)
    return drawn, tags


def _kinds(entities: Sequence[dict], labels: Sequence[str] | None) -> list[str]:
    """The field types on the page: in the model's order when known, else by first appearance."""
    found = list(dict.fromkeys(entity_label(e) for e in entities))
    order = list(labels or [])
    return sorted(found, key=lambda k: (order.index(k) if k in order else len(order), found.index(k)))


def _centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _nearest(box, point) -> tuple[float, float]:
    return min(max(point[0], box[0]), box[2]), min(max(point[1], box[1]), box[3])


def _with_legend(page: Image.Image, kinds: list[str], labels, font) -> Image.Image:
    """`page` above a strip naming each field type's colour, wrapped over as many rows as the page's width needs."""
    probe = ImageDraw.Draw(page)
    _, top, _, bottom = probe.textbbox((0, 0), "Ag", font=font)
    row_height = bottom - top + 10
    swatch = bottom - top
    items, x, rows = [], 8, 0
    for kind in kinds:
        text_width = probe.textlength(kind, font=font)
        item_width = swatch + 6 + text_width + 18
        if x + item_width > page.width and x > 8:
            x, rows = 8, rows + 1
        items.append((kind, x, rows))
        x += item_width
    strip = (rows + 1) * row_height + 8
    image = Image.new("RGB", (page.width, page.height + strip), BACKGROUND)
    image.paste(page, (0, 0))
    draw = ImageDraw.Draw(image)
    draw.line([(0, page.height), (page.width, page.height)], fill=WORD_COLOUR, width=1)
    for kind, x, row in items:
        y = page.height + 8 + row * row_height
        draw.rectangle([x, y, x + swatch, y + swatch], fill=label_colour(kind, labels))
        draw.text((x + swatch + 6, y - top), kind, fill=(30, 30, 30), font=font)
    return image


def _with_panel(page: Image.Image, entities: Sequence[dict], kinds: list[str], labels, font) -> Image.Image:
    """`page` beside a panel listing its entities by field type (colour, type, text, score), in reading order."""
    probe = ImageDraw.Draw(page)
    _, top, _, bottom = probe.textbbox((0, 0), "Ag", font=font)
    row_height = bottom - top + 8
    swatch = bottom - top
    width = max(260, page.width // 2)
    image = Image.new("RGB", (page.width + width, page.height), BACKGROUND)
    image.paste(page, (0, 0))
    draw = ImageDraw.Draw(image)
    draw.line([(page.width, 0), (page.width, page.height)], fill=WORD_COLOUR, width=1)
    rows = []
    for kind in kinds:
        found = sorted((e for e in entities if entity_label(e) == kind), key=lambda e: (e["box"][1], e["box"][0]))
        for entity in found:
            score = f"  {entity['score']:.2f}" if entity.get("score") is not None else ""
            rows.append((kind, f"{kind}: {entity.get('word', '')}{score}"))
    capacity = max(1, (page.height - 16) // row_height)
    if len(rows) > capacity:
        rows = rows[: capacity - 1] + [(None, f"... {len(rows) - capacity + 1} more")]
    x = page.width + 10
    for number, (kind, text) in enumerate(rows):
        y = 8 + number * row_height
        if kind is not None:
            draw.rectangle([x, y, x + swatch, y + swatch], fill=label_colour(kind, labels))
        room = image.width - (x + swatch + 6) - 6
        while len(text) > 1 and draw.textlength(text, font=font) > room:
            text = text[:-2] + "…"
        draw.text((x + swatch + 6, y - top), text, fill=(30, 30, 30), font=font)
    return image
