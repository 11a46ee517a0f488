"""See what the model read: a page with its OCR words and predicted entities drawn on it.

Words are thin grey boxes; each entity a box in its label's colour, with the label and score above it. Colours are
fixed per label name (the same label has the same colour on every page and every run).

Copied into saved checkpoints beside the custom pipeline: imports only the standard library and PIL.
"""

from __future__ import annotations

import colorsys
import hashlib
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

WORD_COLOUR = (150, 150, 150)


def label_colour(label: str) -> tuple[int, int, int]:
    """A saturated, dark-enough colour derived from the label name."""
    hue = int(hashlib.md5(label.encode("utf-8")).hexdigest()[:6], 16) / 0xFFFFFF
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.8)
    return round(red * 255), round(green * 255), round(blue * 255)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def draw_page(page: Image.Image, words: Sequence[dict], entities: Sequence[dict]) -> Image.Image:
    """A copy of `page` with `words` ({"box"}) and `entities` ({"entity_group" or "label", "box", "score"}) drawn,
    boxes in the page's pixels."""
    image = page.convert("RGB").copy()
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width = max(1, round(max(image.size) / 800))
    font = _font(max(10, round(image.height / 90)))
    for word in words:
        draw.rectangle(word["box"], outline=WORD_COLOUR + (200,), width=1)
    for entity in entities:
        label = entity.get("entity_group") or entity.get("label")
        colour = label_colour(label)
        x0, y0, x1, y1 = entity["box"]
        draw.rectangle([x0, y0, x1, y1], fill=colour + (40,), outline=colour + (255,), width=2 * width)
        caption = f"{label} {entity['score']:.2f}" if entity.get("score") is not None else label
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        caption_top = max(0, y0 - (bottom - top) - 4)
        draw.rectangle([x0, caption_top, x0 + right - left + 4, caption_top + bottom - top + 4], fill=colour + (230,))
        draw.text((x0 + 2 - left, caption_top + 2 - top), caption, fill=(255, 255, 255, 255), font=font)
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
