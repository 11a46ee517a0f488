"""Document classification end to end: synth-classes -> classify -> run_doc_classification.py on a small
from-scratch LayoutLM -> document-level metrics, confusion matrix, misclassification report, beating the
majority class -> the image-classification pipeline shipped in the checkpoint, from a fresh process."""

import importlib.util
import json
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, run_command, run_fresh_python

SCRIPT = REPO_ROOT / "run_doc_classification.py"
DEFAULT_OCR = importlib.util.find_spec("rapidocr") is not None  # the default OCR engine


def cli(*args) -> int:
    from dataset_loader.__main__ import main

    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """60 synthetic documents (20 invoices, 20 receipts, 20 letters) with word JSONs."""
    folder = tmp_path_factory.mktemp("doctypes")
    assert cli("synth-classes", "--output", folder, "--num-docs", 60, "--seed", 3) == 0
    return folder


@pytest.fixture(scope="module")
def class_dataset(class_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("doctypes-dataset") / "doctypes"
    assert cli("classify", "--data-dir", class_folder, "--output", output, "--seed", 0) == 0
    return output


@pytest.fixture(scope="module")
def trained(class_dataset, tmp_path_factory):
    """A 2-layer, 128-wide LayoutLM trained from scratch for 3 epochs (the 32-wide "tiny" preset cannot tell
    letters from invoices in a few epochs)."""
    from layoutkit.apps.scratch import build_scratch_checkpoint, dataset_words

    checkpoint = tmp_path_factory.mktemp("scratch-cls")
    build_scratch_checkpoint(str(checkpoint), "layoutlm", dataset_words(str(class_dataset)), size="small",
                             vocab_size=1000)
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(num_hidden_layers=2, intermediate_size=256)
    (checkpoint / "config.json").write_text(json.dumps(config))
    output = tmp_path_factory.mktemp("run-cls") / "doctypes"
    run_command([sys.executable, SCRIPT, "--dataset_path", class_dataset, "--config_name", checkpoint,
                 "--output_dir", output, "--max_seq_length", 128, "--stride", 32, "--learning_rate", 1e-3,
                 "--num_train_epochs", 3, "--seed", 7, "--metric_for_best_model", "f1_macro",
                 "--checkpointing_steps", "epoch"])
    return output


def test_outputs_and_document_level_metrics(trained):
    results = json.loads((trained / "all_results.json").read_text())
    for key in ("eval_accuracy", "eval_f1_macro", "test_accuracy", "test_f1_macro", "test_f1_weighted",
                "test_letter_precision", "test_receipt_recall", "test_invoice_f1", "best_epoch"):
        assert key in results, key
    assert results["test_documents"] == 6 and results["test_invoice_number"] == 2  # documents, not windows
    assert results["metric_for_best_model"] == "f1_macro"
    assert (trained / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    matrix = json.loads((trained / "confusion_matrix.json").read_text())
    assert matrix["labels"] == ["invoice", "letter", "receipt"] and np.sum(matrix["matrix"]) == 6
    predictions = [json.loads(line) for line in (trained / "test_predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 and all(len(p["top"]) == 3 for p in predictions)
    wrong = [p for p in predictions if p["predicted"] != p["label"]]
    misclassified = [json.loads(line) for line in (trained / "misclassified.jsonl").read_text().splitlines()]
    assert [m["id"] for m in misclassified] == [p["id"] for p in wrong]
    config = json.loads((trained / "config.json").read_text())
    assert config["custom_pipelines"]["image-classification"]["impl"] == (
        "document_classification_pipeline.LayoutDocumentClassificationPipeline")
    assert config["document_preprocessing"]["resize"] == [1000, 1000]
    assert config["document_preprocessing"]["keep_aspect"] and not config["document_preprocessing"]["pad"]
    from layoutkit.pipelines.attach import ALLOWED_IMPORTS, third_party_imports

    assert third_party_imports("image-classification") <= ALLOWED_IMPORTS
    shipped = trained / "document_classification_pipeline.py"
    assert shipped.read_bytes() == (REPO_ROOT / "layoutkit" / "pipelines" / shipped.name).read_bytes()
    assert (trained / "epoch_2").is_dir() and "image-classification" in (trained / "README.md").read_text()


def test_beats_majority_class_baseline(trained, class_dataset):
    from datasets import load_from_disk

    results = json.loads((trained / "all_results.json").read_text())
    dataset = load_from_disk(str(class_dataset))
    train, test = np.asarray(dataset["train"]["label"]), np.asarray(dataset["test"]["label"])
    baseline = float(np.mean(test == np.bincount(train).argmax()))
    assert results["test_majority_baseline_accuracy"] == pytest.approx(baseline)
    assert results["test_accuracy"] > baseline + 0.3, results


def test_mean_of_window_logits_and_misclassification_report(tmp_path):
    from layoutkit.train.classification_task import mean_window_logits, prediction_records, softmax, write_reports

    logits = np.array([[2.0, 0.0], [0.0, 4.0], [1.0, 0.0]])
    means = mean_window_logits(np.array([0, 0, 1]), logits, 2)
    assert means.tolist() == [[1.0, 2.0], [1.0, 0.0]]
    records = prediction_records(["a", "b"], [0, 0], softmax(means), ["x", "y"], top=3)
    assert records[0]["predicted"] == "y" and len(records[0]["top"]) == 2
    write_reports(str(tmp_path), records, np.array([[1, 1], [0, 0]]), ["x", "y"], "test")
    lines = (tmp_path / "misclassified.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a"]
    with pytest.raises(ValueError, match="no window"):
        mean_window_logits(np.array([0]), logits[:1], 2)


FRESH_SCRIPT = """
import importlib.util, json, sys
assert importlib.util.find_spec("layoutkit") is None, "the project must not be importable here"
from transformers import pipeline
classifier = pipeline("image-classification", model=sys.argv[1], trust_remote_code=True)
doc = json.load(open(sys.argv[2]))
inputs = {"image": sys.argv[3], "words": doc["words"], "boxes": doc["boxes"]}
out = {"class": type(classifier).__module__, "all": classifier(inputs), "top1": classifier(inputs, top_k=1),
       "batch": classifier([inputs, inputs], batch_size=2)}
if len(sys.argv) > 4:
    out["ocr"] = classifier(sys.argv[4], top_k=2)
print(json.dumps(out))
"""


def test_pipeline_from_fresh_process(trained, class_folder, tmp_path):
    image = class_folder / "receipt" / "receipt_00001.png"
    args = [trained, image.with_suffix(".json"), image]
    if DEFAULT_OCR:
        args.append(class_folder / "letter" / "letter_00002.png")
    out = run_fresh_python(FRESH_SCRIPT, args, tmp_path)
    assert out["class"].startswith("transformers_modules.")
    scores = [row["score"] for row in out["all"]]
    assert [row["label"] for row in out["all"]][0] == "receipt"
    assert sorted(row["label"] for row in out["all"]) == ["invoice", "letter", "receipt"]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-4)
    assert out["top1"] == out["all"][:1]
    assert len(out["batch"]) == 2 and out["batch"][0][0]["label"] == "receipt"
    if DEFAULT_OCR:
        assert len(out["ocr"]) == 2 and out["ocr"][0]["label"] in ("invoice", "letter", "receipt")


def test_window_encoding_with_page_images_v2_v3(class_dataset, tmp_path):
    """Long documents become several windows, each with its document's label and page image (v2: `image`,
    v3: `pixel_values`); batches collate scalar labels. (The LayoutLMv2 model itself needs detectron2.)"""
    from datasets import load_from_disk

    from layoutkit.train.classification_task import ClassificationCollator, encode_classification_split
    from layoutkit.pipelines.modeling import FAMILIES, load_processing
    from layoutkit.apps.scratch import build_scratch_checkpoint

    docs = load_from_disk(str(class_dataset))["test"].select(range(3))
    words = [w for row in docs["words"] for w in row]
    for model_type, image_input in (("layoutlmv2", "image"), ("layoutlmv3", "pixel_values")):
        folder = build_scratch_checkpoint(str(tmp_path / model_type), model_type, words, size="tiny", vocab_size=300)
        tokenizer, image_processor, _ = load_processing(folder)
        windows = encode_classification_split(docs, tokenizer, image_processor, FAMILIES[model_type], 64, 16,
                                              load_from_cache_file=False)
        doc_index = [int(d) for d in windows["doc_index"]]
        assert len(windows) > len(docs) and sorted(set(doc_index)) == list(range(len(docs)))
        assert [docs[d]["label"] for d in doc_index] == [int(v) for v in windows["labels"]]
        batch = ClassificationCollator(tokenizer.pad_token_id, 8, image_input)([windows[i] for i in range(3)])
        assert batch["labels"].shape == (3,) and batch[image_input].shape[0] == 3
