"""layoutkit.apps.compare on hand-made run folders: real tiny models saved with save_pretrained (so the config and
safetensors are what training writes) plus hand-written metrics and predictions with known counts."""

import json

import numpy as np
import pytest

from layoutkit.apps.compare import RunFolderError, load_run, main

NER_LABELS = ["O", "B-date", "B-total", "I-total"]
# Two documents, 7 words. Hand count of (gold, predicted): (O, O) 2, (O, B-date) 1, (B-date, B-date) 1,
# (B-total, B-total) 2, (I-total, O) 1.
NER_RECORDS = [
    {"id": "doc-1", "words": ["Total", "12.50", "on", "2024-01-02"],
     "labels": ["B-total", "I-total", "O", "B-date"], "predictions": ["B-total", "O", "O", "B-date"],
     "scores": [0.9, 0.6, 0.99, 0.8]},
    {"id": "doc-2", "words": ["Thank", "you", "7.00"],
     "labels": ["O", "O", "B-total"], "predictions": ["O", "B-date", "B-total"], "scores": [0.9, 0.5, 0.7]},
]
NER_CONFUSION = [  # rows = gold, columns = predicted, in NER_LABELS order
    [2, 1, 0, 0],
    [0, 1, 0, 0],
    [0, 0, 2, 0],
    [1, 0, 0, 0],
]
TRAINING = {"best_epoch": 2, "train_steps": 30, "train_seconds": 41.256, "train_documents_per_second": 9.213}


def tiny_config(model_type: str, labels):
    from transformers import LayoutLMConfig, LayoutLMv3Config

    sizes = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64, id2label=dict(enumerate(labels)),
                 label2id={label: i for i, label in enumerate(labels)})
    if model_type == "layoutlm":
        return LayoutLMConfig(max_2d_position_embeddings=128, **sizes)
    # LayoutLMv3 concatenates 4 coordinate and 2 shape embeddings: 4 * 6 + 2 * 4 == hidden_size.
    return LayoutLMv3Config(coordinate_size=6, shape_size=4, input_size=32, patch_size=16, **sizes)


def save_tiny_model(folder, model_type: str, labels, model_class) -> int:
    """Save a random tiny model into `folder`; returns its parameter count."""
    config = tiny_config(model_type, labels)
    config.document_preprocessing = {"max_seq_length": 64, "stride": 16}
    model = model_class.from_config(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def write_json(path, payload):
    path.write_text(json.dumps(payload))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def make_ner_run(folder, model_type: str, results: dict, with_predictions=True) -> int:
    from transformers import AutoModelForTokenClassification

    folder.mkdir(parents=True)
    parameters = save_tiny_model(folder, model_type, NER_LABELS, AutoModelForTokenClassification)
    write_json(folder / "all_results.json", {**results, **TRAINING})
    write_json(folder / "training_history.json", [{"epoch": 1, "f1": 0.2}, {"epoch": 2, "f1": 0.4}])
    if with_predictions:
        write_jsonl(folder / "test_predictions.jsonl", NER_RECORDS)
    return parameters


def table_rows(report: str) -> dict[str, list[str]]:
    """Table rows of a Markdown report, by run name (the first cell)."""
    rows = {}
    for line in report.splitlines():
        if line.startswith("| ") and not line.startswith("| run |") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def ner_runs(tmp_path_factory):
    """A LayoutLM run with a test split and a LayoutLMv3 run with validation metrics only (no predictions)."""
    root = tmp_path_factory.mktemp("runs")
    v1_parameters = make_ner_run(root / "v1-run", "layoutlm", {
        "eval_f1": 0.5, "test_precision": 0.7, "test_recall": 0.6, "test_f1": 0.654321, "test_accuracy": 0.8,
        "test_em": 0.5, "test_em_no_space": 0.75,
    })
    v3_parameters = make_ner_run(root / "v3-run", "layoutlmv3", {
        "eval_f1": 0.25, "eval_em": 0.125, "eval_em_no_space": 0.5,
    }, with_predictions=False)
    return root, v1_parameters, v3_parameters


def test_report_table_parameters_and_word_confusion(ner_runs, tmp_path, capsys):
    root, v1_parameters, v3_parameters = ner_runs
    report_dir = tmp_path / "report"
    assert main([str(root / "v1-run"), str(root / "v3-run"), "--output", str(report_dir),
                 "--names", "LayoutLM v1", "LayoutLMv3"]) == 0

    report = (report_dir / "report.md").read_text()
    rows = table_rows(report)
    # run | model | split | F1 | em | em_no_space | parameters | steps | best epoch | training time (s) | documents/s
    assert rows["LayoutLM v1"] == ["layoutlm", "test", "0.6543", "0.5000", "0.7500", f"{v1_parameters / 1e6:.1f}M",
                                   "30", "2", "41.3", "9.2"]
    assert rows["LayoutLMv3"][:5] == ["layoutlmv3", "validation", "0.2500", "0.1250", "0.5000"]
    assert "| run | model | split | F1 | em | em_no_space |" in capsys.readouterr().out

    # Parameters come from the safetensors header and match the model's own count.
    assert load_run(root / "v1-run").parameters == v1_parameters
    assert load_run(root / "v3-run").parameters == v3_parameters

    # Word-level confusion over all words, in config id2label order, O included.
    run = load_run(root / "v1-run")
    assert run.task == "token-classification" and run.name == "v1-run"
    assert run.confusion.labels == NER_LABELS and run.confusion.unit == "words"
    np.testing.assert_array_equal(run.confusion.matrix, NER_CONFUSION)

    # One figure per run with predictions, linked from the report; the run without one says why.
    assert (report_dir / "confusion_LayoutLM_v1.png").stat().st_size > 0
    assert "![Confusion matrix of LayoutLM v1](confusion_LayoutLM_v1.png)" in report
    assert not list(report_dir.glob("confusion_LayoutLMv3*"))
    assert "only when the dataset has a test split" in report


def test_classification_run_next_to_ner_run(ner_runs, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from layoutkit.train.classification_task import prediction_records

    root, _, _ = ner_runs
    labels = ["invoice", "letter", "receipt"]
    folder = tmp_path / "doctypes"
    folder.mkdir()
    parameters = save_tiny_model(folder, "layoutlm", labels, AutoModelForSequenceClassification)
    write_json(folder / "all_results.json", {"test_accuracy": 0.75, "test_f1_macro": 0.6, "test_f1_weighted": 0.7,
                                             "test_majority_baseline_accuracy": 0.5, **TRAINING})
    gold = [0, 0, 1, 2]
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    write_jsonl(folder / "test_predictions.jsonl",
                prediction_records(["a", "b", "c", "d"], gold, probabilities, labels))

    run = load_run(folder)
    assert (run.task, run.parameters, run.metrics_split) == ("document-classification", parameters, "test")
    assert run.confusion.unit == "documents"
    np.testing.assert_array_equal(run.confusion.matrix, [[1, 0, 1], [0, 1, 0], [0, 0, 1]])

    report_dir = tmp_path / "report"
    main([str(root / "v1-run"), str(folder), "--output", str(report_dir)])
    report = (report_dir / "report.md").read_text()
    assert "## Token classification (NER)" in report and "## Document classification" in report
    assert "| run | model | split | accuracy | F1 macro |" in report
    assert table_rows(report)["doctypes"][:5] == ["layoutlm", "test", "0.7500", "0.6000", f"{parameters / 1e6:.1f}M"]
    assert (report_dir / "confusion_doctypes.png").exists() and (report_dir / "confusion_v1-run.png").exists()

    # Without a predictions file the counts come from confusion_matrix.json.
    (folder / "test_predictions.jsonl").unlink()
    write_json(folder / "confusion_matrix.json", {"split": "test", "labels": labels, "matrix": [[2, 0, 0], [0, 1, 1],
                                                                                              [0, 0, 3]]})
    run = load_run(folder)
    assert run.confusion.source == "confusion_matrix.json" and int(run.confusion.matrix.sum()) == 7


def test_unfinished_or_missing_run_folder_is_explained(tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    with pytest.raises(RunFolderError, match="run training to completion first") as error:
        load_run(unfinished)
    assert str(unfinished) in str(error.value) and "all_results.json" in str(error.value)

    with pytest.raises(SystemExit) as exit_info:
        main([str(unfinished), "--output", str(tmp_path / "report")])
    assert exit_info.value.code == 2
    assert "run training to completion first" in capsys.readouterr().err

    with pytest.raises(RunFolderError, match="no such folder"):
        load_run(tmp_path / "missing")


def test_duplicate_names_are_refused(ner_runs, tmp_path):
    root, _, _ = ner_runs
    with pytest.raises(SystemExit):
        main([str(root / "v1-run"), str(root / "v3-run"), "--output", str(tmp_path), "--names", "same", "same"])
    with pytest.raises(SystemExit):
        main([str(root / "v1-run"), "--output", str(tmp_path), "--names", "a", "b"])
