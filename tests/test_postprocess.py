"""Post-processing rules on hand-made documents, their configuration, and the before/after measurement."""

import json

import pytest

from layoutkit.apps.rule_measurement import entity_scores, main, measure_rules
from layoutkit.pipelines.postprocess import (
    RuleConfig,
    apply_rules,
    company_first_lines_rule,
    currency_amount_rule,
    matches_keyword,
    repair_bio,
    total_keyword_rule,
    visual_rows,
)


def line(words, y, x=10, width=60, gap=10, height=20):
    """Words laid left to right on one line: (words, boxes)."""
    boxes = [[x + i * (width + gap), y, x + i * (width + gap) + width, y + height] for i in range(len(words))]
    return list(words), boxes


def page(*lines):
    words, boxes = [], []
    for line_words, line_boxes in lines:
        words += line_words
        boxes += line_boxes
    return words, boxes


# ------------------------------------------------------------------------------------------- keywords
@pytest.mark.parametrize("word, keyword, expected", [
    ("Total", "total", True), ("TOTAL:", "total", True), ("Subtotal", "total", True), ("Sub-total", "total", True),
    ("Amount(RM)", "amount", True), ("Totally", "total", True), ("10.00", "total", False),
    ("RM", "rm", True), ("RM12.50", "rm", True), ("Form", "rm", False), ("RMB", "rm", False),
    ("$", "$", True), ("$12.00", "$", True), ("12.00$", "$", False), ("", "total", False),
])
def test_matches_keyword(word, keyword, expected):
    assert matches_keyword(word, keyword) is expected


# --------------------------------------------------------------------------------------- total keyword
def test_total_right_of_keyword_kept_elsewhere_removed():
    words, boxes = page(line(["Item", "9.99"], 10), line(["Total:", "12.00"], 50), line(["Thanks", "99.00"], 90))
    tags = ["O", "B-total", "O", "B-total", "O", "B-total"]
    assert total_keyword_rule(words, boxes, tags) == ["O", "O", "O", "B-total", "O", "O"]


def test_total_below_keyword_in_same_column_kept():
    words, boxes = page(line(["Description", "Amount"], 10), line(["Widget", "45.00"], 40), line(["Other", "7.00"], 70))
    boxes[5] = [300, 70, 360, 90]  # a value far right of the Amount column, on a lower line
    tags = ["O", "O", "O", "B-total", "O", "B-total"]
    assert total_keyword_rule(words, boxes, tags) == ["O", "O", "O", "B-total", "O", "O"]


def test_total_keyword_must_be_another_word_and_bio_is_repaired():
    words, boxes = page(line(["TOTAL", "RM", "12.00"], 10))
    # The model tagged the keyword itself as the start of the total: it becomes O and RM starts the entity.
    tags = ["B-total", "I-total", "I-total"]
    assert total_keyword_rule(words, boxes, tags) == ["O", "B-total", "I-total"]
    # Left of the keyword is not enough.
    words, boxes = page(line(["12.00", "Total"], 10))
    assert total_keyword_rule(words, boxes, ["B-total", "O"]) == ["O", "O"]


def test_total_types_and_keywords_configurable():
    words, boxes = page(line(["Summe", "12.00", "Tax", "1.00"], 10))
    tags = ["O", "B-grand_sum", "O", "B-tax_total"]
    config = {"rules": ["total_keyword"], "total_keywords": ["summe"], "total_types": ["grand_sum"]}
    assert apply_rules(words, boxes, tags, config) == tags  # tax_total is not a chosen type: untouched
    # Default types: names containing "total"; "1.00" follows no total keyword.
    assert apply_rules(words, boxes, tags, {"rules": ["total_keyword"]}) == ["O", "B-grand_sum", "O", "O"]
    default_types = RuleConfig().types_for("total_keyword", {"total", "subtotal", "vendor", "date"})
    assert default_types == {"total", "subtotal"}


# ------------------------------------------------------------------------------------ company first lines
def test_company_only_on_first_lines():
    words, boxes = page(
        line(["INVOICE"], 10), line(["Acme", "Corp"], 40), line(["Bill", "to", "Acme"], 80), line(["Acme", "Corp"], 120)
    )
    tags = ["O", "B-company", "I-company", "O", "O", "B-company", "B-company", "I-company"]
    assert company_first_lines_rule(boxes, tags) == ["O", "B-company", "I-company", "O", "O", "O", "O", "O"]
    assert company_first_lines_rule(boxes, tags, max_lines=1) == ["O"] * 8
    assert apply_rules(words, boxes, tags, {"rules": "company_first_lines", "company_lines": 3}) == \
        ["O", "B-company", "I-company", "O", "O", "B-company", "O", "O"]


def test_rows_merge_segments_of_one_visual_line():
    # Two OCR lines side by side at the same height are one visual row; given line ids are used.
    boxes = [[10, 10, 60, 30], [400, 12, 460, 31], [10, 50, 60, 70]]
    assert visual_rows(boxes, [0, 1, 2]) == [0, 0, 1]
    assert visual_rows(boxes) == [0, 0, 1]
    tags = ["O", "B-vendor", "B-vendor"]
    assert apply_rules(["Date", "Globex", "Globex"], boxes, tags, "company_first_lines", line_ids=[0, 1, 2]) == \
        ["O", "B-vendor", "B-vendor"]
    assert apply_rules(["Date", "Globex", "Globex"], boxes, tags, {"rules": ["company_first_lines"], "company_lines": 1}) \
        == ["O", "B-vendor", "O"]


# ------------------------------------------------------------------------------------------------ config
def test_rule_config_from_values(tmp_path):
    assert RuleConfig.from_value(None).rules == ("currency_amount",)
    assert RuleConfig.from_value("none").rules == RuleConfig.from_value([]).rules == ()
    assert RuleConfig.from_value("total_keyword, company_first_lines").rules == ("total_keyword", "company_first_lines")
    assert RuleConfig.from_value("all").rules == ("currency_amount", "total_keyword", "company_first_lines")
    assert RuleConfig.from_value(["total_keyword"]).rules == ("total_keyword",)
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": ["company_first_lines"], "company_lines": 4, "company_types": ["seller"]}))
    config = RuleConfig.from_value(str(path))
    assert (config.rules, config.company_lines, config.company_types) == (("company_first_lines",), 4, ("seller",))
    assert RuleConfig.from_value(config) == config
    with pytest.raises(ValueError, match="unknown rule"):
        RuleConfig.from_value("total_keywords")
    with pytest.raises(ValueError, match="unknown rule settings"):
        RuleConfig.from_value({"rules": [], "lines": 3})
    with pytest.raises(ValueError, match="at least 1"):
        RuleConfig(company_lines=0)
    # The default rule leaves a lone amount alone; the keyword rule is off by default.
    assert apply_rules(["12.00"], [[0, 0, 10, 10]], ["B-total"]) == ["B-total"]


# ------------------------------------------------------------------------------------------ currency + amount
@pytest.mark.parametrize("words, tags, scores, expected", [
    # "USD" tagged subtotal, its number tagged tax (the model surer of the currency): one subtotal.
    (["Subtotal", "USD", "6,499.50"], ["O", "B-subtotal", "B-tax"], [0.9, 0.93, 0.80], ["O", "B-subtotal", "I-subtotal"]),
    # ... surer of the number: both are tax.
    (["Subtotal", "USD", "6,499.50"], ["O", "B-subtotal", "B-tax"], [0.9, 0.60, 0.95], ["O", "B-tax", "I-tax"]),
    # The number tagged O joins the currency's entity; a currency tagged O joins the number's.
    (["Tax", "EUR", "324,98"], ["O", "B-tax", "O"], [0.9] * 3, ["O", "B-tax", "I-tax"]),
    (["Total", "$", "12.00"], ["O", "O", "B-total"], [0.9] * 3, ["O", "B-total", "I-total"]),
    # The currency after its number ("2.506,20 €").
    (["Total", "2.506,20", "€"], ["O", "B-total", "O"], [0.9] * 3, ["O", "B-total", "I-total"]),
    # Two B- of one type become one entity; an entity already whole is kept.
    (["Total", "USD", "5.00"], ["O", "B-total", "B-total"], [0.9] * 3, ["O", "B-total", "I-total"]),
    (["Total", "USD", "5.00"], ["O", "B-total", "I-total"], [0.9] * 3, ["O", "B-total", "I-total"]),
    # A number that runs on into the next word of its old entity leaves that word to start its own.
    (["USD", "5.00", "net"], ["B-total", "B-tax", "I-tax"], [0.9, 0.5, 0.5], ["B-total", "I-total", "B-tax"]),
    # A marker already one entity with the number on its other side stays there.
    (["51,74", "€", "1.034,80", "€"], ["B-item_unit_price", "I-item_unit_price", "B-item_amount", "I-item_amount"],
     [0.9] * 4, ["B-item_unit_price", "I-item_unit_price", "B-item_amount", "I-item_amount"]),
    (["51,74", "€", "1.034,80", "€"], ["B-item_unit_price", "I-item_unit_price", "B-item_amount", "O"],
     [0.9] * 4, ["B-item_unit_price", "I-item_unit_price", "B-item_amount", "I-item_amount"]),
    # Not a currency, not a number, or both O: unchanged.
    (["Total", "Amount", "5.00"], ["O", "B-total", "B-tax"], [0.9] * 3, ["O", "B-total", "B-tax"]),
    (["USD", "due"], ["B-total", "O"], [0.9] * 2, ["B-total", "O"]),
    (["USD", "5.00"], ["O", "O"], [0.9] * 2, ["O", "O"]),
])
def test_currency_amount_rule(words, tags, scores, expected):
    _, boxes = line(words, 10)
    assert currency_amount_rule(words, boxes, tags, scores) == expected
    assert apply_rules(words, boxes, tags, scores=scores) == expected  # on by default


def test_currency_amount_rule_needs_one_line():
    words, boxes = page(line(["USD"], 10), line(["5.00"], 60))
    assert currency_amount_rule(words, boxes, ["B-total", "B-tax"]) == ["B-total", "B-tax"]
    assert apply_rules(words, boxes, ["B-total", "B-tax"], config="none") == ["B-total", "B-tax"]


def test_repair_bio():
    assert repair_bio(["O", "I-a", "I-a", "B-b", "I-a", "O", "I-b"]) == ["O", "B-a", "I-a", "B-b", "B-a", "O", "B-b"]


# ------------------------------------------------------------------------------------------- measurement
def documents():
    words, boxes = page(line(["ACME", "Ltd"], 10), line(["Date", "2024"], 40), line(["Total", "5.00"], 70),
                        line(["ACME", "9.00"], 100))
    gold = ["B-company", "I-company", "O", "O", "O", "B-total", "O", "O"]
    pred = ["B-company", "I-company", "O", "O", "O", "B-total", "B-company", "B-total"]
    return [{"id": "doc1", "words": words, "labels": gold, "predictions": pred, "scores": [0.9] * 8}], {"doc1": boxes}


def test_measure_rules_precision_recall_before_after():
    records, boxes = documents()
    effect = measure_rules(records, boxes, "all")
    table = effect.to_dict()
    assert table["words_changed"] == 2 and table["documents"] == 1
    assert table["labels"]["total"]["precision_before"] == 0.5 and table["labels"]["total"]["precision_after"] == 1.0
    assert table["labels"]["company"]["precision_before"] == 0.5 and table["labels"]["company"]["precision_after"] == 1.0
    assert table["labels"]["overall"]["recall_before"] == table["labels"]["overall"]["recall_after"] == 1.0
    markdown = effect.to_markdown()
    assert markdown.splitlines()[0].startswith("| label | support | precision before | precision after")
    assert "| total | 1 | 0.5000 | 1.0000 | 1.0000 | 1.0000 |" in markdown
    with pytest.raises(KeyError, match="not in the dataset"):
        measure_rules(records, {}, "all")


def test_entity_scores_conlleval_reading():
    scores = entity_scores([["B-a", "I-a", "O", "B-b"]], [["B-a", "I-a", "O", "I-b"]])
    assert scores["a"]["f1"] == scores["b"]["f1"] == 1.0  # a stray I- opens an entity
    assert scores["overall"]["precision"] == scores["overall"]["recall"] == 1.0 and scores["overall"]["support"] == 2


def exact_span_scores(references, predictions) -> dict:
    """Precision/recall/F1 counted by hand from exact (type, start, end) spans (layoutkit's bio_spans, conlleval's
    reading): what the measurement reported before it used seqeval."""
    from layoutkit.pipelines.labels import bio_spans

    counts = {}
    for gold_tags, pred_tags in zip(references, predictions):
        gold = {(s.label, s.start, s.end) for s in bio_spans(gold_tags)}
        pred = {(s.label, s.start, s.end) for s in bio_spans(pred_tags)}
        for label, *_ in gold | pred:
            counts.setdefault(label, [0, 0, 0])
        for group, index in ((gold & pred, 0), (pred - gold, 1), (gold - pred, 2)):
            for span in group:
                counts[span[0]][index] += 1
    counts["overall"] = [sum(c[i] for c in counts.values()) for i in range(3)]
    table = {}
    for label, (tp, fp, fn) in counts.items():
        precision, recall = tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return table


def test_entity_scores_equal_exact_span_counting_on_random_tags():
    """seqeval gives the numbers the hand-written counting gave, on tag sequences with every oddity BIO allows
    (stray I-, type changes inside a span, types only predicted or only gold)."""
    import random

    generator = random.Random(0)
    tags = ["O", "B-a", "I-a", "B-b", "I-b", "B-c", "I-c"]
    for _ in range(200):
        lengths = [generator.randint(0, 12) for _ in range(generator.randint(1, 4))]
        references = [[generator.choice(tags[:5]) for _ in range(n)] for n in lengths]
        predictions = [[generator.choice(tags) for _ in range(n)] for n in lengths]
        expected, got = exact_span_scores(references, predictions), entity_scores(references, predictions)
        assert got.keys() == expected.keys(), (references, predictions)
        for label, values in expected.items():
            assert got[label] == pytest.approx(values), (label, references, predictions)


def test_measure_command_prints_markdown(tmp_path, capsys):
    from datasets import Dataset, DatasetDict

    records, boxes = documents()
    predictions = tmp_path / "test_predictions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in records))
    DatasetDict(test=Dataset.from_dict({"id": ["doc1"], "bboxes": [boxes["doc1"]]})).save_to_disk(str(tmp_path / "ds"))
    main(["--predictions", str(predictions), "--dataset_path", str(tmp_path / "ds"),
          "--output_json", str(tmp_path / "effect.json")])
    out = capsys.readouterr().out
    assert "Rules: currency_amount, total_keyword, company_first_lines" in out
    assert "| **overall** | 2 |" in out
    assert json.loads((tmp_path / "effect.json").read_text())["labels"]["total"]["precision_after"] == 1.0
    main(["--predictions", str(predictions), "--dataset_path", str(tmp_path / "ds"), "--rules", "total_keyword",
          "--total_keywords", "sum"])
    assert "| total | 1 | 0.5000 | 0.0000 |" in capsys.readouterr().out
