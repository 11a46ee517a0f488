"""Model card (README.md) written by run_invoice_ner.py, and what --push_to_hub would upload (Hub calls faked)."""

import json
from argparse import Namespace

import pytest
import yaml

from inference_fixtures import HUB_MODEL_ID, push_log_of

PIPELINE_FILES = {"token_classification_pipeline.py", "boxes.py", "encoding.py", "labels.py", "modeling.py", "ocr.py",
                  "pipeline_inputs.py", "postprocess.py", "windows.py"}

METRICS = {
    "eval_f1": 0.81, "best_epoch": 1, "train_steps": 40, "train_seconds": 12.5,
    "test_precision": 0.8, "test_recall": 0.7, "test_f1": 0.7467, "test_accuracy": 0.95,
    "test_total_precision": 0.9, "test_total_recall": 0.85, "test_total_f1": 0.874, "test_total_number": 20,
    "test_em": 0.5, "test_em_no_space": 0.55,
}
HISTORY = [{"epoch": 0, "f1": 0.4, "precision": 0.5, "recall": 0.33, "accuracy": 0.9},
           {"epoch": 1, "f1": 0.81, "precision": 0.8, "recall": 0.82, "accuracy": 0.96}]
LABELS = ["O", "B-total", "I-total"]


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def model_index_metrics(metadata: dict) -> dict:
    [result] = metadata["model-index"][0]["results"]
    assert result["task"]["type"] == "token-classification"
    return {metric["type"]: metric["value"] for metric in result["metrics"]}


def args(**values):
    defaults = dict(model_name_or_path="microsoft/layoutlmv3-base", config_name=None, dataset_name="me/invoices",
                    dataset_path=None, dataset_config_name=None, hub_model_id="me/invoice-model", output_dir="runs/x",
                    learning_rate=5e-5, per_device_train_batch_size=8, num_train_epochs=3, max_seq_length=512,
                    stride=128, box_level="segment", seed=42, label_all_tokens=False, mixed_precision=None)
    return Namespace(**{**defaults, **values})


def test_card_metadata_and_body(tmp_path):
    from huggingface_hub import ModelCard

    from model_card import write_model_card

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "layoutlmv3", "document_preprocessing": {
        "resize": [1000, 700], "keep_aspect": True, "box_level": "segment", "max_seq_length": 512, "stride": 128}}))
    write_model_card(tmp_path, task="token-classification", labels=LABELS, metrics=METRICS, history=HISTORY, args=args())
    text = (tmp_path / "README.md").read_text()
    metadata = front_matter(text)
    assert model_index_metrics(metadata) == {"f1": 0.7467, "precision": 0.8, "recall": 0.7, "accuracy": 0.95}
    assert metadata["model-index"][0]["name"] == "invoice-model"
    assert metadata["license"] == "cc-by-nc-sa-4.0"
    assert metadata["base_model"] == "microsoft/layoutlmv3-base"
    assert metadata["datasets"] == ["me/invoices"]
    assert metadata["pipeline_tag"] == "token-classification" and metadata["library_name"] == "transformers"
    # huggingface_hub reads the same metadata back.
    card = ModelCard.load(tmp_path / "README.md")
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["f1"] == 0.7467
    for expected in ("CC BY-NC-SA 4.0", "`B-total`", "| total | 0.9000 | 0.8500 | 0.8740 | 20 |",
                     "| 1 | 0.8100 | 0.8000 | 0.8200 | 0.9600 |", "![Validation metrics per epoch](training_curve.png)",
                     'pipeline("token-classification", model="me/invoice-model", trust_remote_code=True)',
                     "python predict.py --model_name_or_path me/invoice-model", "| learning_rate | 5e-05 |",
                     "1000x700 pixels keeping the aspect ratio", "Windows of 512 tokens with a stride of 128",
                     "## Intended use", "## Limitations and licence"):
        assert expected in text, expected
    assert (tmp_path / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("model_type, base, licence", [
    ("layoutlm", "microsoft/layoutlm-base-uncased", "mit"),
    ("layoutlmv2", "microsoft/layoutxlm-base", "cc-by-nc-sa-4.0"),
    ("layoutlmv3", None, None),
    ("lilt", "SCUT-DLVCLab/lilt-roberta-en-base", "mit"),
    ("layoutlmv3", "someone/layoutlmv3-finetuned-cord", "cc-by-nc-sa-4.0"),  # every v3 checkpoint is share-alike
    ("lilt", "someone/lilt-xlm-roberta-base", None),  # LiLT's licence depends on the checkpoint: unknown
    ("layoutlm", "runs/my-layoutlm", None),
])
def test_licence_follows_the_base_checkpoint(model_type, base, licence):
    from model_card import build_model_card

    card = build_model_card(task="token-classification", labels=LABELS, metrics=METRICS, model_type=model_type,
                            base_model=base, model_name="m")
    assert front_matter(str(card)).get("license") == licence
    if base is None:
        assert "trained from scratch" in str(card) and "licence is yours to choose" in str(card)
    elif licence is None:
        assert "| Licence | unknown" in str(card) and "layoutkit does not know: check it" in str(card)
    if base == "SCUT-DLVCLab/lilt-roberta-en-base":
        assert "`SCUT-DLVCLab/lilt-roberta-en-base` is released under the MIT licence" in str(card)


def test_card_is_task_agnostic_and_tolerates_missing_parts():
    from model_card import build_model_card

    card = build_model_card(task="image-classification", labels=["invoice", "receipt"], model_name="doc-classifier",
                            metrics={"eval_accuracy": 0.9, "eval_f1": 0.88, "eval_invoice_f1": 0.9},
                            usage="```python\nclassify('scan.png')\n```")
    metadata = front_matter(str(card))
    [result] = metadata["model-index"][0]["results"]
    assert result["dataset"]["split"] == "validation"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"f1": 0.88, "accuracy": 0.9}
    assert "| invoice |  |  | 0.9000 |  |" in str(card) and "classify('scan.png')" in str(card)
    assert "No per-epoch validation history" in str(card)
    empty = build_model_card(task="token-classification", labels=[], metrics={}, model_name="m")
    assert "model-index" not in front_matter(str(empty))


def test_training_run_writes_card(trained_ner_checkpoint):
    results = json.loads((trained_ner_checkpoint / "all_results.json").read_text())
    text = (trained_ner_checkpoint / "README.md").read_text()
    metadata = front_matter(text)
    assert model_index_metrics(metadata) == {
        name: round(results[f"test_{name}"], 4) for name in ("f1", "precision", "recall", "accuracy")
    }
    assert metadata["model-index"][0]["name"] == "invoice-extractor"
    assert "license" not in metadata  # trained from scratch: nothing inherited
    history = json.loads((trained_ner_checkpoint / "training_history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1]
    assert "| 1 | " in text and "`B-vendor`" in text and f'model="{HUB_MODEL_ID}"' in text
    assert (trained_ner_checkpoint / "training_curve.png").is_file()


def test_push_uploads_model_processor_pipeline_card_and_metrics(trained_ner_checkpoint):
    log = push_log_of(trained_ner_checkpoint)
    creates = [c for c in log if c["call"] == "create_repo"]
    uploads = [c for c in log if c["call"] == "upload_folder"]
    assert creates and all(c["repo_id"] == HUB_MODEL_ID and c["private"] is True and c["exist_ok"] for c in creates)
    # One upload per epoch (--push_every_epoch) and one at the end.
    assert [u["commit_message"] for u in uploads] == ["epoch 0", "epoch 1", "End of training"]
    for upload in uploads:
        assert upload["repo_id"] == HUB_MODEL_ID and upload["folder_path"] == str(trained_ner_checkpoint)
        assert PIPELINE_FILES <= set(upload["uploaded"]), "every pushed revision carries the pipeline"
        assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= set(upload["uploaded"])
    final = uploads[-1]
    assert {"README.md", "training_curve.png", "all_results.json", "training_history.json",
            } <= set(final["uploaded"])
    # Test predictions hold the test documents' words: they stay local.
    assert "test_predictions.jsonl" not in final["uploaded"]
    # Training checkpoints are in the folder but excluded by the ignore patterns.
    assert any(name.startswith("epoch_") for name in final["files"])
    assert not any(name.startswith(("epoch_", "step_")) or ".partial" in name for name in final["uploaded"])
    assert {"step_*", "epoch_*", "*.partial"} <= set(final["ignore_patterns"])
