"""The selection logic of benchmarks/active_learning.py, on hand-made documents (no model is trained)."""

import importlib.util
import random

import pytest

from conftest import REPO_ROOT
from layoutkit.apps.labelstudio_format import document_uncertainty

spec = importlib.util.spec_from_file_location("active_learning", REPO_ROOT / "benchmarks" / "active_learning.py")
active_learning = importlib.util.module_from_spec(spec)
spec.loader.exec_module(active_learning)


def document(*scores):
    """A predict.py document JSON whose fields have these (calibrated) scores; the last one is multi-valued."""
    fields = {f"field{i}": {"value": "x", "score": s} for i, s in enumerate(scores[:-1])}
    if scores:
        fields["items"] = {"multiple": True, "values": [{"value": "y", "score": scores[-1]}]}
    return {"fields": fields}


def test_uncertainty_picker_takes_the_documents_predict_would_put_first():
    documents = {
        "a": document(0.99, 0.98),  # sure of everything: 0.02
        "b": document(0.95, 0.40),  # one unsure value, the multi-valued one: 0.60
        "c": document(),  # nothing found: 1.0, the most uncertain
        "d": document(0.70, 0.99),  # 0.30
        "e": document(0.99, 0.40),  # 0.60, the same as b
    }
    uncertainty = {doc_id: document_uncertainty(doc) for doc_id, doc in documents.items()}
    assert uncertainty["c"] == 1.0 and uncertainty["b"] == pytest.approx(0.6)

    assert active_learning.pick_most_uncertain(list(documents), uncertainty, 3) == ["c", "b", "e"]
    # Ties keep the pool's order, as predict.py --order uncertainty keeps the input order.
    assert active_learning.pick_most_uncertain(["e", "d", "b", "a"], uncertainty, 2) == ["e", "b"]
    # Only unlabelled documents are candidates; asking for more than there are gives them all.
    assert active_learning.pick_most_uncertain(["a", "d"], uncertainty, 5) == ["d", "a"]


def test_uncertainty_picker_refuses_documents_without_a_score():
    with pytest.raises(KeyError, match="no uncertainty for 1 unlabelled"):
        active_learning.pick_most_uncertain(["a", "b"], {"a": 0.5}, 1)


def test_random_picker_is_seeded_and_draws_unlabelled_documents_once():
    pool = [f"doc{i}" for i in range(50)]
    first = active_learning.pick_random(pool, 10, random.Random(3))
    assert first == active_learning.pick_random(pool, 10, random.Random(3))
    assert first != active_learning.pick_random(pool, 10, random.Random(4))
    assert len(set(first)) == 10 and set(first) <= set(pool)
    assert sorted(active_learning.pick_random(pool[:4], 10, random.Random(3))) == pool[:4]


def test_share_counts_and_the_share_reaching_the_target():
    assert active_learning.share_counts(400, [0.1, 0.2, 0.35, 0.5]) == [40, 80, 140, 200]
    with pytest.raises(ValueError, match="must increase"):
        active_learning.share_counts(400, [0.2, 0.1])
    with pytest.raises(ValueError, match="distinct counts"):
        active_learning.share_counts(10, [0.1, 0.12])
    shares = [0.1, 0.2, 0.35, 0.5]
    assert active_learning.first_share_reaching(shares, [0.5, 0.61, 0.60, 0.7], 0.6) == 0.2
    assert active_learning.first_share_reaching(shares, [0.5, 0.55, 0.58, 0.59], 0.6) is None


def test_report_compares_every_measure_with_random_order():
    args = type("Args", (), {"seeds": [1, 2], "measures": ["lowest_score", "expected_corrections"], "ceiling": False,
                             "target_share": 0.5, "bar_share": 0.35})()
    curves = {"random": [0.40, 0.50, 0.55, 0.60], "uncertainty-lowest_score": [0.40, 0.49, 0.56, 0.59],
              "uncertainty-expected_corrections": [0.40, 0.55, 0.61, 0.64]}
    by_seed = {seed: {strategy: [{"test_f1": f1 + (seed - 1.5) / 100} for f1 in f1s] for strategy, f1s in curves.items()}
               for seed in args.seeds}
    table = active_learning.report(args, 400, [40, 80, 140, 200], by_seed)
    assert active_learning.strategies(args) == list(curves)
    assert "| 140 (35%) | 0.5500 +- 0.0071 | 0.5600 +- 0.0071 | +1.0 | 0.6100 +- 0.0071 | +6.0 |" in table
    assert "uncertainty-lowest_score first reaches random's mean F1 at 50% (0.6000) at no measured share" in table
    assert "uncertainty-expected_corrections first reaches random's mean F1 at 50% (0.6000) at 35% of the pool; " \
           "bar (<= 35%): met." in table


def test_saved_pool_scores_are_reused_only_for_the_same_documents(tmp_path, monkeypatch):
    """A re-run reads pool_uncertainty-MEASURE.json instead of scoring the pool again, but only when it covers exactly
    the unlabelled documents of this round; otherwise the pool is scored and the file rewritten."""
    calls = []

    def score(checkpoint, data_dir, doc_ids, measure):
        calls.append(list(doc_ids))
        return {doc_id: [0.5, 0.1] for doc_id in doc_ids}

    monkeypatch.setattr(active_learning, "pool_uncertainty", score)
    first, done = active_learning.saved_or_scored(tmp_path, tmp_path, ["a", "b"], "word_errors")
    assert done == "scored" and calls == [["a", "b"]]
    assert (tmp_path / "pool_uncertainty-word_errors.json").is_file()
    again, done = active_learning.saved_or_scored(tmp_path, tmp_path, ["b", "a"], "word_errors")
    assert done == "read the scores of" and again == first and len(calls) == 1
    _, done = active_learning.saved_or_scored(tmp_path, tmp_path, ["a", "b", "c"], "word_errors")
    assert done == "scored" and calls[-1] == ["a", "b", "c"]
    _, done = active_learning.saved_or_scored(tmp_path, tmp_path, ["a", "b"], "lowest_score")
    assert done == "scored" and len(calls) == 3
