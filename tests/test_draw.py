"""--draw (layoutkit/pipelines/draw.py): tags hide no word and stay inside the page; colours per field type with a legend."""

import json

import numpy as np
import pytest
from PIL import Image

from dataset_loader.synth import ENTITY_TYPES
from layoutkit.pipelines.boxes import union_box
from layoutkit.pipelines.draw import PALETTE, draw_page_with_tags, label_colour
from layoutkit.pipelines.labels import bio_spans


def gold_page(folder, stem):
    """A synthetic invoice's page, its words and its gold entities shaped like the pipeline's."""
    annotation = json.loads((folder / "annotations" / f"{stem}.json").read_text())
    words = [{"text": text, "box": box} for text, box in zip(annotation["words"], annotation["boxes"])]
    entities = [{"entity_group": span.label, "score": 0.97, "word": " ".join(annotation["words"][span.start:span.end]),
                 "box": [round(v) for v in union_box(annotation["boxes"][span.start:span.end])]}
                for span in bio_spans(annotation["labels"])]
    return Image.open(folder / "images" / annotation["image"]), words, entities


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_tags_hide_no_word_and_stay_inside_the_page(synthetic_invoices):
    """On test invoices of the synthetic generator (gold entities: every field and line item), no tag overlaps any
    word box or another tag, every tag lies inside the page, and nearly every entity gets one."""
    stems = sorted(p.stem for p in (synthetic_invoices / "annotations").glob("*.json"))[:16]
    tagged = total = 0
    for stem in stems:
        page, words, entities = gold_page(synthetic_invoices, stem)
        drawing, tags = draw_page_with_tags(page, words, entities, labels=ENTITY_TYPES)
        assert drawing.width == page.width and drawing.height > page.height  # the legend strip below the page
        assert len(tags) == len(entities) and [t.entity for t in tags] == list(range(len(entities)))
        placed = [t.box for t in tags if t.box is not None]
        for box in placed:
            assert 0 <= box[0] < box[2] <= page.width and 0 <= box[1] < box[3] <= page.height, (stem, box)
            hidden = [w["text"] for w in words if overlaps(box, w["box"])]
            assert not hidden, f"{stem}: the tag at {box} hides {hidden}"
        for i, a in enumerate(placed):
            assert not any(overlaps(a, b) for b in placed[i + 1:]), f"{stem}: tags overlap at {a}"
        tagged += len(placed)
        total += len(entities)
    assert tagged >= 0.95 * total, f"only {tagged} of {total} entities tagged"


def test_tag_at_the_page_edge_moves_inside_and_colours_follow_the_model_labels():
    """An entity at the top-right corner: its tag is not clipped (it goes below, inside the page); each field type
    has its palette colour in the model's label order, and the legend shows every type on the page."""
    page = Image.new("RGB", (300, 200), "white")
    words = [{"text": "12.00", "box": [250, 0, 299, 14]}, {"text": "Total", "box": [10, 100, 60, 114]}]
    entities = [{"entity_group": "total", "score": 0.9, "box": [250, 0, 299, 14], "word": "12.00"},
                {"entity_group": "vendor", "score": 0.8, "box": [10, 100, 60, 114], "word": "Total"}]
    drawing, tags = draw_page_with_tags(page, words, entities, labels=["vendor", "total"])
    assert tags[0].box is not None and tags[0].box[1] >= 14 and tags[0].box[2] <= 300
    assert label_colour("vendor", ["vendor", "total"]) == PALETTE[0]
    assert label_colour("total", ["vendor", "total"]) == PALETTE[1]
    legend = np.asarray(drawing)[200:]
    for colour in PALETTE[:2]:
        assert (legend == colour).all(-1).any(), f"legend swatch {colour}"
    # The entity's outline is drawn in its type's colour.
    assert drawing.getpixel((250, 7)) == PALETTE[1]


def test_no_room_means_no_tag_rather_than_a_hidden_word():
    """A page packed with words leaves no room: the entity keeps its coloured box, and no tag covers a word."""
    page = Image.new("RGB", (120, 60), "white")
    words = [{"text": "w", "box": [x, y, x + 10, y + 10]} for x in range(0, 120, 11) for y in range(0, 60, 11)]
    entities = [{"entity_group": "total", "score": 0.9, "box": words[7]["box"], "word": "w"}]
    _, tags = draw_page_with_tags(page, words, entities)
    assert tags[0].box is None and tags[0].text is None


@pytest.mark.parametrize("panel", [False, True])
def test_side_panel_lists_the_entities(synthetic_invoices, panel):
    page, words, entities = gold_page(synthetic_invoices, "invoice_00000")
    drawing, _ = draw_page_with_tags(page, words, entities, labels=ENTITY_TYPES, panel=panel)
    if panel:  # the panel on the right; the page keeps its pixels and height
        assert drawing.height == page.height and drawing.width > page.width
        right = np.asarray(drawing)[:, page.width:]
        assert (right == label_colour(entities[0]["entity_group"], ENTITY_TYPES)).all(-1).any()
    else:
        assert drawing.width == page.width and drawing.height > page.height
