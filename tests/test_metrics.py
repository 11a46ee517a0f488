from layoutkit.metrics import field_exact_match, seqeval_scores
from layoutkit.pipelines.labels import Span, bio_spans, label_list_from_tags


def test_seqeval_scores_entity_level():
    gold = [["B-total", "I-total", "O", "B-date"]]
    pred = [["B-total", "I-total", "O", "O"]]
    scores = seqeval_scores(gold, pred)
    assert scores["overall_precision"] == 1.0
    assert scores["overall_recall"] == 0.5
    assert abs(scores["overall_f1"] - 2 / 3) < 1e-9
    assert scores["overall_accuracy"] == 0.75
    assert scores["total"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert scores["date"]["recall"] == 0.0


def test_bio_spans_and_label_list():
    tags = ["B-vendor", "I-vendor", "O", "I-total", "B-total", "B-total"]
    assert bio_spans(tags) == [Span("vendor", 0, 2), Span("total", 3, 4), Span("total", 4, 5), Span("total", 5, 6)]
    assert label_list_from_tags(tags) == ["O", "B-total", "I-total", "B-vendor", "I-vendor"]


def test_field_exact_match_with_and_without_spaces():
    words = [["Total", "1", "234.00", "ACME"], ["Total", "5.00", "ACME"]]
    gold = [["O", "B-total", "I-total", "B-vendor"], ["O", "B-total", "B-vendor"]]
    pred = [["O", "O", "B-total", "B-vendor"], ["O", "B-total", "B-vendor"]]
    em = field_exact_match(words, gold, pred)
    assert em["vendor_em"] == 1.0
    assert em["total_em"] == 0.5  # doc 1: "234.00" vs "1 234.00"
    assert em["total_em_no_space"] == 0.5
    assert em["em"] == 0.75
