"""Line items: the synthetic generator's structure keys (entity ids, relations, row ids, multi-page tables), the
row-grouping rule on hand-made pages, links from a relation model, and line_items from predict.py and the pipeline."""

import json

import pytest

from dataset_loader.synth import ENTITY_TYPES, generate, make_pages
from layoutkit.pipelines.attach import ALLOWED_IMPORTS, pipeline_files, third_party_imports
from layoutkit.pipelines.labels import bio_spans
from layoutkit.pipelines.line_items import group_line_items, links_from_pairs


# ------------------------------------------------------------------------------------------ generator
@pytest.fixture(scope="module")
def linked_invoices(tmp_path_factory):
    """3 invoices with links; with seed 5, the second and third run over two pages."""
    return generate(tmp_path_factory.mktemp("linked"), 3, seed=5, workers=1, links=True, multi_page=0.5)


def _annotations(folder):
    return {p.stem: json.loads(p.read_text()) for p in sorted((folder / "annotations").glob("*.json"))}


def test_synth_links_are_consistent(linked_invoices):
    annotations = _annotations(linked_invoices)
    assert {"item_quantity", "item_unit_price"} <= set(ENTITY_TYPES)
    for stem, data in annotations.items():
        ids, rows, labels = data["entity_ids"], data["row_ids"], data["labels"]
        assert len(ids) == len(rows) == len(data["words"]), stem
        known = set(ids) - {None}
        # every relation endpoint exists, no self-links, no duplicates
        assert data["relations"] and all(head in known and tail in known and head != tail
                                         for head, tail in data["relations"]), stem
        assert len({tuple(pair) for pair in data["relations"]}) == len(data["relations"])
        # every labelled word belongs to an entity, and an entity is one type of word
        for index, label in enumerate(labels):
            if label != "O":
                assert ids[index] is not None, (stem, index)
        for entity in known:
            types = {labels[i][2:] for i, e in enumerate(ids) if e == entity}
            assert len(types) == 1, (stem, entity, types)
        # row ids only on line-item words, and every line-item word has one
        for index, label in enumerate(labels):
            assert (rows[index] is not None) == label[2:].startswith("item_"), (stem, index, label)
        # a line's description is linked to its quantity, unit price and amount, all in the same row
        for head, tail in data["relations"]:
            head_words = [i for i, e in enumerate(ids) if e == head]
            tail_words = [i for i, e in enumerate(ids) if e == tail]
            if labels[head_words[0]].endswith("item_description"):
                assert rows[head_words[0]] == rows[tail_words[0]]
            else:  # a keyword cue (labelled O) names a value (labelled, but for the PO number)
                assert all(labels[i] == "O" for i in head_words)
                cue = " ".join(data["words"][i] for i in head_words)
                assert labels[tail_words[0]] != "O" or cue.upper().startswith("PO"), (stem, cue)


def test_synth_multi_page_tables(linked_invoices):
    annotations = _annotations(linked_invoices)
    second_pages = [stem for stem in annotations if stem.endswith("_p2")]
    assert len(second_pages) == 2, "seed 5 with multi_page=0.5 continues two of the three tables"
    for stem in second_pages:
        first, second = annotations[stem[:-3]], annotations[stem]
        assert first["document_id"] == second["document_id"] == stem[:-3]
        assert (first["page"], second["page"]) == (1, 2)
        assert (linked_invoices / "images" / second["image"]).is_file()
        # the rows run on: page 2's rows follow page 1's, and entity ids are unique over the document
        rows_1 = {r for r in first["row_ids"] if r is not None}
        rows_2 = {r for r in second["row_ids"] if r is not None}
        assert rows_1 and rows_2 and max(rows_1) < min(rows_2)
        assert not (set(first["entity_ids"]) - {None}) & (set(second["entity_ids"]) - {None})
        # the totals are on the last page
        assert any(label == "B-total" for label in second["labels"])
        assert not any(label == "B-total" for label in first["labels"])
    # without the options, the same invoice is one page with the plain keys (and the same first page)
    image, plain = make_pages(5, int(second_pages[0][8:13]))[0]
    assert set(plain) == {"image", "words", "boxes", "labels", "segment_boxes"}


def _gold_entities(folder):
    """Entities from the gold labels of each document's pages, and the gold rows from row_ids."""
    documents = {}
    for stem, data in _annotations(folder).items():
        document, page = data.get("document_id", stem), data.get("page", 1)
        entities, rows = documents.setdefault(document, ([], {}))
        for span in bio_spans(data["labels"]):
            boxes = data["boxes"][span.start:span.end]
            entities.append({"entity_group": span.label, "word": " ".join(data["words"][span.start:span.end]),
                             "score": 1.0, "page": page,
                             "box": [min(b[0] for b in boxes), min(b[1] for b in boxes),
                                     max(b[2] for b in boxes), max(b[3] for b in boxes)]})
            row = data["row_ids"][span.start]
            if row is not None:
                rows.setdefault(row, {})[span.label] = entities[-1]["word"]
    return documents


def test_rule_groups_the_generated_tables(linked_invoices):
    """Gold labels + the rule give back every generated row (wrapped, reordered, two-page tables)."""
    for document, (entities, rows) in _gold_entities(linked_invoices).items():
        items = group_line_items(entities)
        expected = [(row["item_description"], row["item_amount"]) for _, row in sorted(rows.items())]
        assert [(item["cells"]["description"]["text"], item["cells"]["amount"]["text"]) for item in items] == expected


# ------------------------------------------------------------------------------------------ the rule
def cell(kind, text, box, page=1, score=0.9):
    return {"entity_group": kind, "word": text, "box": list(box), "page": page, "score": score}


def test_wrapped_description_and_swapped_columns():
    """Columns amount, quantity, description, unit price; the first description wraps onto a second line."""
    entities = [
        cell("item_amount", "$20.00", (40, 100, 110, 114)), cell("item_quantity", "2", (140, 100, 150, 114)),
        cell("item_description", "Premium Web", (200, 100, 300, 114)),
        cell("item_unit_price", "$10.00", (500, 100, 560, 114)),
        cell("item_description", "Hosting (12 months)", (200, 118, 340, 132)),
        cell("item_amount", "$7.50", (40, 150, 100, 164)), cell("item_quantity", "1", (140, 150, 150, 164)),
        cell("item_description", "Cable", (200, 150, 260, 164)),
        cell("item_unit_price", "$7.50", (500, 150, 560, 164)),
        cell("total", "$27.50", (500, 300, 560, 314)),  # not a line item
    ]
    items = group_line_items(entities)
    assert [{k: item[k] for k in ("description", "quantity", "unit_price", "amount", "currency", "page")}
            for item in items] == [
        {"description": "Premium Web Hosting (12 months)", "quantity": "2", "unit_price": "10.00",
         "amount": "20.00", "currency": "USD", "page": 1},
        {"description": "Cable", "quantity": "1", "unit_price": "7.50", "amount": "7.50", "currency": "USD",
         "page": 1},
    ]
    assert items[0]["box"] == [40, 100, 560, 132]
    assert items[0]["cells"]["amount"] == {"text": "$20.00", "score": 0.9, "box": [40, 100, 110, 114],
                                           "normalized": "20.00", "currency": "USD"}


def test_missing_quantity_and_unparsable_amount():
    entities = [
        cell("item_description", "Consulting", (50, 100, 150, 114)),
        cell("item_amount", "1.250,00 €", (500, 100, 580, 114)),
        cell("item_description", "Travel", (50, 130, 110, 144)), cell("item_quantity", "3", (300, 130, 310, 144)),
        cell("item_amount", "n/a", (500, 130, 530, 144)),
    ]
    first, second = group_line_items(entities)
    assert (first["description"], first["quantity"], first["amount"], first["currency"]) == \
        ("Consulting", None, "1250.00", "EUR")
    assert "quantity" not in first["cells"]
    assert (second["description"], second["quantity"], second["amount"]) == ("Travel", "3", None)
    assert second["cells"]["amount"]["error"]


def test_two_pages_and_a_description_without_numbers():
    entities = [
        cell("item_description", "Desk", (50, 700, 100, 714)), cell("item_amount", "90.00", (500, 700, 560, 714)),
        # page 2 starts higher up than page 1's row: rows never cross pages
        cell("item_description", "Chair", (50, 90, 100, 104), page=2),
        cell("item_amount", "45.00", (500, 90, 560, 104), page=2),
        cell("item_description", "Delivery notes", (50, 400, 150, 414), page=2),  # far below: a row of its own
    ]
    items = group_line_items(entities)
    assert [(i["description"], i["amount"], i["page"]) for i in items] == [
        ("Desk", "90.00", 1), ("Chair", "45.00", 2), ("Delivery notes", None, 2)]


def test_links_take_precedence_over_the_rule():
    """Numbers printed lower than their description's first line (vertically centred over two lines): the rule
    puts the first description alone and pairs the second with the first row's numbers; links fix it."""
    entities = [
        cell("item_description", "Alpha", (50, 100, 100, 114)),
        cell("item_description", "Beta service", (50, 120, 150, 134)),
        cell("item_amount", "10.00", (500, 118, 560, 132)),  # Alpha's amount, printed lower
        cell("item_quantity", "1", (300, 118, 310, 132)),
        cell("item_description", "Gamma", (50, 160, 110, 174)),
        cell("item_amount", "5.00", (500, 160, 560, 174)),
    ]
    by_rule = group_line_items(entities)
    assert [(i["description"], i["amount"]) for i in by_rule] == [
        ("Alpha", None), ("Beta service", "10.00"), ("Gamma", "5.00")]
    linked = group_line_items(entities, links=[(0, 2), (0, 3)])
    assert [(i["description"], i["quantity"], i["amount"]) for i in linked] == [
        ("Alpha", "1", "10.00"), ("Beta service", None, None), ("Gamma", None, "5.00")]
    # an unlinked wrapped line below a linked description joins its row
    wrapped = [cell("item_description", "Alpha", (50, 100, 100, 114)),
               cell("item_amount", "10.00", (500, 100, 560, 114)),
               cell("item_description", "and more", (50, 118, 120, 132))]
    assert [i["description"] for i in group_line_items(wrapped, links=[(0, 1)])] == ["Alpha and more"]
    # links to entities that are not line-item cells, or across pages, are ignored
    other_page = entities + [cell("item_amount", "1.00", (500, 100, 560, 114), page=2)]
    assert group_line_items(entities + [cell("total", "15.00", (500, 300, 560, 314))], links=[(0, 6)]) == by_rule
    assert group_line_items(other_page, links=[(0, 6)])[:3] == by_rule


def test_links_from_relation_pairs():
    """A relation pipeline's pairs (word indices of key and value) become entity-index links, per page."""
    entities = [dict(cell("item_description", "Alpha", (50, 100, 100, 114)), start=3, end=5),
                dict(cell("item_amount", "10.00", (500, 118, 560, 132)), start=5, end=6),
                dict(cell("item_amount", "9.00", (500, 118, 560, 132), page=2), start=5, end=6)]
    pairs = [{"key": {"words": [3, 4]}, "value": {"words": [5]}, "score": 0.9},
             {"key": {"words": [40]}, "value": {"words": [5]}, "score": 0.8}]  # no entity holds word 40
    assert links_from_pairs(entities, pairs) == [(0, 1)]
    assert links_from_pairs(entities, pairs, page=2) == []
    assert links_from_pairs(entities, [{**pairs[0], "page": 1}], page=2) == [(0, 1)]


def test_line_items_ship_with_the_pipeline():
    names = {path.name for path in pipeline_files("token-classification")}
    assert {"line_items.py", "fields.py", "boxes.py"} <= names
    assert third_party_imports("token-classification") <= ALLOWED_IMPORTS


# ----------------------------------------------------------------------------------- predict and pipeline
def _table_words(tmp_path):
    from PIL import Image

    image = tmp_path / "table.png"
    Image.new("RGB", (600, 300), "white").save(image)
    words = {"image": str(image), "words": ["$10.00", "$20.00", "$7.50"],
             "boxes": [[300, 50, 360, 64], [450, 50, 510, 64], [450, 90, 500, 104]]}
    path = tmp_path / "words.json"
    path.write_text(json.dumps(words))
    return image, words, path


@pytest.fixture(scope="module")
def amount_checkpoint(trained_ner_checkpoint, tmp_path_factory):
    """The trained checkpoint with every word predicted B-item_amount."""
    from inference_fixtures import force_label

    return force_label(trained_ner_checkpoint, tmp_path_factory.mktemp("amount") / "amounts", "B-item_amount")


def test_predict_and_pipeline_return_line_items(amount_checkpoint, tmp_path):
    """Every word an amount: two visual rows; the row with two amounts keeps the higher-scoring one."""
    from layoutkit.apps import predict
    from transformers import pipeline

    from layoutkit.pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline

    image, words, words_path = _table_words(tmp_path)
    assert predict.main(["--model_name_or_path", str(amount_checkpoint), "--words_json", str(words_path),
                         "--output_dir", str(tmp_path / "out")]) == 0
    document = json.loads((tmp_path / "out" / "table.json").read_text())
    items = document["line_items"]
    assert [(item["amount"], item["currency"], item["page"]) for item in items] == [
        (items[0]["amount"], "USD", 1), ("7.50", "USD", 1)]
    assert items[0]["amount"] in ("10.00", "20.00") and len(items[0]["cells"]["amount"]["others"]) == 1

    extractor = pipeline("token-classification", model=str(amount_checkpoint),
                         pipeline_class=LayoutTokenClassificationPipeline)
    inputs = {"image": str(image), "words": words["words"], "boxes": words["boxes"]}
    assert extractor(inputs, return_fields=True)["line_items"] == items
    only = extractor(inputs, return_line_items=True)
    assert only["line_items"] == items and "fields" not in only
    assert isinstance(extractor(inputs), list)  # plain calls still return the entities only


def test_grouping_by_relations_needs_a_relation_model(tmp_path, capsys):
    from layoutkit.apps import predict

    with pytest.raises(SystemExit):
        predict.parse_args(["--model_name_or_path", "model", "--input", str(tmp_path), "--output_dir",
                            str(tmp_path / "out"), "--line_item_grouping", "relations"])
    assert "--line_item_grouping relations needs --relation_model" in capsys.readouterr().err
