"""LiLT (`SCUT-DLVCLab/lilt-roberta-en-base`, MIT: the commercially usable default for invoices) through every
path, on tiny from-scratch checkpoints: scratch configs, training (one and two processes; every trainable parameter
gets a gradient, as DistributedDataParallel needs), predict.py, both saved pipelines in a fresh process, document
classification, the model card. Windows over long documents are tested with the other families in test_encoding.py."""

import json
import sys

import pytest
import torch

from conftest import REPO_ROOT, python_module, run_command, run_fresh_python
from inference_fixtures import force_label
from learning import assert_learned, assert_ner_learned, majority_class_accuracy

# Learning rate 1e-2: a tiny LiLT from scratch learns the synthetic fixtures in tens of steps at it (see the floors).
TRAIN = ["--max_seq_length", 128, "--stride", 32, "--learning_rate", 1e-2, "--seed", 7]


@pytest.fixture(scope="module")
def lilt_ner_run(invoice_dataset, scratch_checkpoint, tmp_path_factory):
    """run_invoice_ner.py on a tiny LiLT from scratch: 3 epochs of 16 training documents in batches of 2 (84 steps:
    LiLT stays on all-O for its first ~50 steps; at batch 8 or 4, 14 to 66 steps, it never left it)."""
    output = tmp_path_factory.mktemp("lilt-ner") / "lilt-extractor"
    run_command([sys.executable, REPO_ROOT / "run_invoice_ner.py", "--dataset_path", invoice_dataset,
                 "--config_name", scratch_checkpoint("lilt"), "--output_dir", output, "--num_train_epochs", 3,
                 "--max_train_samples", 16, "--per_device_train_batch_size", 2, *TRAIN])
    return output


def test_scratch_cli_and_sizes(invoice_dataset, tmp_path, monkeypatch):
    """`python -m layoutkit.apps.scratch --model_type lilt`: a LiltConfig whose layout widths fit (hidden divisible by 6
    and by heads x channel_shrink_ratio) and the LayoutLMv3-style tokenizer LiLT's published checkpoint ships."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    from layoutkit.apps import scratch
    from layoutkit.pipelines.modeling import load_processing

    output = tmp_path / "scratch-lilt"
    # The command line's own main(), in this process (a new interpreter would add its imports to the test time).
    monkeypatch.setattr(sys, "argv", ["layoutkit.apps.scratch", "--model_type", "lilt", "--dataset_path",
                                      str(invoice_dataset), "--output_dir", str(output), "--size", "tiny",
                                      "--vocab_size", "500"])
    scratch.main()
    config = AutoConfig.from_pretrained(output)
    assert config.model_type == "lilt" and config.hidden_size == 48 and config.channel_shrink_ratio == 4
    assert config.max_2d_position_embeddings > 1000 and config.pad_token_id == 1
    tokenizer, image_processor, _ = load_processing(str(output))
    assert type(tokenizer).__name__.startswith("LayoutLMv3Tokenizer") and image_processor is None
    assert config.vocab_size == len(tokenizer)
    # Every size: the model builds and runs on boxes up to 1000 (the 2D tables cover the whole grid).
    assert [scratch.lilt_hidden_size(h, heads) for h, heads in ((32, 2), (128, 4), (768, 12))] == [48, 144, 768]
    model = AutoModelForTokenClassification.from_config(config)
    bbox = torch.tensor([[[0, 0, 0, 0], [0, 0, 1000, 1000], [990, 10, 1000, 990], [0, 0, 0, 0]]])
    logits = model(input_ids=torch.tensor([[0, 300, 301, 2]]), bbox=bbox).logits
    assert logits.shape == (1, 4, config.num_labels)


def test_published_checkpoint_layout_and_a_plain_roberta_tokenizer(scratch_checkpoint, tmp_path):
    """As on the Hub, LiLT's tokenizer config names `LayoutLMv3Processor` without an image processor file:
    the tokenizer alone is loaded. A LiLT paired with a plain RoBERTa tokenizer (words only) gets its boxes
    placed per token from the word ids, as LayoutLM v1's."""
    import shutil

    from transformers import RobertaTokenizerFast

    from layoutkit.pipelines.encoding import encode_documents
    from layoutkit.pipelines.modeling import FAMILIES, load_processing

    published = tmp_path / "published"
    shutil.copytree(scratch_checkpoint("lilt"), published)
    tokenizer_config = json.loads((published / "tokenizer_config.json").read_text())
    (published / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config,
                                                                 "processor_class": "LayoutLMv3Processor"}))
    tokenizer, image_processor, processor = load_processing(str(published))
    assert type(tokenizer).__name__.startswith("LayoutLMv3Tokenizer") and image_processor is None
    assert processor is tokenizer

    words, boxes = ["Invoice", "total", "99.95"], [[10, 10, 20, 20], [30, 30, 40, 40], [50, 50, 60, 60]]
    with_boxes = encode_documents([words], [boxes], tokenizer, FAMILIES["lilt"])
    roberta = RobertaTokenizerFast.from_pretrained(published, add_prefix_space=True)
    words_only = encode_documents([words], [boxes], roberta, FAMILIES["lilt"])
    assert words_only["input_ids"] == with_boxes["input_ids"] and words_only["word_ids"] == with_boxes["word_ids"]
    assert words_only["bbox"] == with_boxes["bbox"]


@pytest.mark.parametrize("head", ["AutoModelForTokenClassification", "AutoModelForSequenceClassification"])
def test_every_trainable_parameter_gets_a_gradient(head, scratch_checkpoint):
    """DistributedDataParallel (2+ processes) fails on parameters without gradient: the last layer's layout
    stream feeds nothing and is frozen; everything else trains."""
    import transformers

    from layoutkit.train.model_setup import freeze_parameters_without_gradient

    config = transformers.AutoConfig.from_pretrained(scratch_checkpoint("lilt"), num_labels=3)
    model = getattr(transformers, head).from_config(config)
    frozen = freeze_parameters_without_gradient(model)
    assert frozen and all(".layer.1." in name for name in frozen)
    input_ids = torch.tensor([[0, 300, 301, 302, 2]])
    bbox = torch.tensor([[[0, 0, 0, 0], [1, 2, 3, 4], [10, 20, 30, 40], [500, 500, 600, 520], [0, 0, 0, 0]]])
    labels = torch.tensor([[0, 1, 2, 1, 0]]) if "Token" in head else torch.tensor([2])
    model(input_ids=input_ids, bbox=bbox, labels=labels).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_train_evaluate_save_reload(lilt_ner_run, invoice_dataset):
    from datasets import load_from_disk
    from transformers import AutoModelForTokenClassification

    from layoutkit.pipelines.modeling import load_processing, model_family, tokenizer_takes_boxes

    results = json.loads((lilt_ner_run / "all_results.json").read_text())
    assert 0.0 <= results["test_f1"] <= 1.0 and results["train_steps"] > 0
    test_docs = load_from_disk(str(invoice_dataset))["test"]
    # All-O scores entity F1 0 and word accuracy 0.64 on this test split; measured F1 0.23, accuracy 0.73;
    # shuffled training labels: F1 0.0, accuracy 0.64 (all-O).
    assert_ner_learned(results, test_docs, f1_floor=0.1, accuracy_margin=0.03)
    rows = [json.loads(line) for line in (lilt_ner_run / "test_predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == test_docs["id"]
    assert all(len(row["predictions"]) == len(row["words"]) for row in rows)
    model = AutoModelForTokenClassification.from_pretrained(lilt_ner_run)
    assert type(model).__name__ == "LiltForTokenClassification"
    tokenizer, image_processor, _ = load_processing(str(lilt_ner_run))
    assert image_processor is None and tokenizer_takes_boxes(tokenizer, model_family(model.config))
    # The model card: LiLT from scratch inherits no licence; it names the MIT base checkpoint for reference.
    card = (lilt_ner_run / "README.md").read_text()
    assert "| Model type | `lilt` |" in card and "none inherited (trained from scratch" in card
    assert "LiLT (`SCUT-DLVCLab/lilt-roberta-en-base`) weights are MIT" in card


def test_two_processes_train(invoice_dataset, scratch_checkpoint, tmp_path):
    """Two CPU processes under DistributedDataParallel (which stops on a parameter without gradient)."""
    output = tmp_path / "two"
    log = run_command(
        python_module("accelerate.commands.launch", "--multi_gpu", "--num_processes", 2, "--num_machines", 1,
                      "--mixed_precision", "no", "--dynamo_backend", "no", REPO_ROOT / "run_invoice_ner.py")
        + ["--dataset_path", invoice_dataset, "--config_name", scratch_checkpoint("lilt"), "--output_dir", output,
           "--max_train_steps", 3, "--max_train_samples", 8, "--max_eval_samples", 2,
           "--per_device_train_batch_size", 2, *TRAIN],
        env={"ACCELERATE_USE_CPU": "1"},
    )
    assert "on 2 processes" in log.stdout
    assert json.loads((output / "all_results.json").read_text())["train_steps"] == 3


@pytest.fixture(scope="module")
def vendor_lilt(lilt_ner_run, tmp_path_factory):
    """The trained LiLT with every word predicted I-vendor (deterministic entities)."""
    return force_label(lilt_ner_run, tmp_path_factory.mktemp("lilt-vendor") / "lilt-vendor", "I-vendor")


def test_predict_on_an_image(vendor_lilt, synthetic_invoices, tmp_path):
    from layoutkit.apps import predict

    annotation_path = synthetic_invoices / "annotations" / "invoice_00000.json"
    annotation = json.loads(annotation_path.read_text())
    output = tmp_path / "out"
    assert predict.main(["--model_name_or_path", str(vendor_lilt), "--words_json", str(annotation_path),
                         "--output_dir", str(output), "--device", "cpu"]) == 0
    document = json.loads((output / "invoice_00000.json").read_text())
    assert document["status"] == "ok" and [w["text"] for w in document["words"]] == annotation["words"]
    assert [w["box"] for w in document["words"]] == annotation["boxes"]
    assert {w["label"] for w in document["words"]} == {"I-vendor"}
    assert document["fields"]["vendor"]["value"] == " ".join(annotation["words"])


@pytest.fixture(scope="module")
def lilt_classifier(invoice_dataset, scratch_checkpoint, tmp_path_factory):
    """run_doc_classification.py on a tiny LiLT: 15 synthetic documents of 3 classes, 3 epochs."""
    from dataset_loader.__main__ import main as dataset_cli

    root = tmp_path_factory.mktemp("lilt-cls")
    assert dataset_cli(["synth-classes", "--output", str(root / "docs"), "--num-docs", "15", "--seed", "3"]) == 0
    assert dataset_cli(["classify", "--data-dir", str(root / "docs"), "--output", str(root / "data"),
                        "--seed", "0"]) == 0
    output = root / "doctypes"
    run_command([sys.executable, REPO_ROOT / "run_doc_classification.py", "--dataset_path", root / "data",
                 "--config_name", scratch_checkpoint("lilt"), "--output_dir", output, "--num_train_epochs", 3,
                 "--per_device_train_batch_size", 4, *TRAIN])
    return root, output


def test_doc_classification(lilt_classifier):
    from datasets import load_from_disk

    root, output = lilt_classifier
    results = json.loads((output / "all_results.json").read_text())
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["train_steps"] > 0
    # The three classes differ in every word and in layout: 3 epochs (30 steps) get all 3 test documents right; the
    # majority class gets 1 of 3; shuffled training labels (5 of 9 still right by chance) got 2 of 3.
    test = load_from_disk(str(root / "data"))["test"]
    assert_learned("test_accuracy", results["test_accuracy"], majority_class_accuracy(test), floor=1.0)
    config = json.loads((output / "config.json").read_text())
    assert config["architectures"] == ["LiltForSequenceClassification"]
    assert "image-classification" in config["custom_pipelines"]


FRESH_SCRIPT = """
import importlib.util, json, sys
assert importlib.util.find_spec("layoutkit") is None, "the project must not be importable here"
from transformers import pipeline
doc = json.load(open(sys.argv[2]))
inputs = {"image": sys.argv[3], "words": doc["words"], "boxes": doc["boxes"]}
extractor = pipeline("token-classification", model=sys.argv[1], trust_remote_code=True)
out = {"model": type(extractor.model).__name__, "entities": extractor(inputs)}
classifier = pipeline("image-classification", model=sys.argv[4], trust_remote_code=True)
out["classes"] = classifier(inputs)
print(json.dumps(out))
"""


def test_both_pipelines_from_a_fresh_process(vendor_lilt, lilt_classifier, synthetic_invoices, tmp_path):
    annotation = synthetic_invoices / "annotations" / "invoice_00000.json"
    document = json.loads(annotation.read_text())
    image = synthetic_invoices / "images" / document["image"]
    out = run_fresh_python(FRESH_SCRIPT, [vendor_lilt, annotation, image, lilt_classifier[1]], tmp_path)
    assert out["model"] == "LiltForTokenClassification"
    assert [(e["entity_group"], e["start"], e["end"]) for e in out["entities"]] == [
        ("vendor", 0, len(document["words"]))]
    assert sorted(row["label"] for row in out["classes"]) == ["invoice", "letter", "receipt"]
    assert sum(row["score"] for row in out["classes"]) == pytest.approx(1.0, abs=1e-4)
