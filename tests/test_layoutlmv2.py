"""LayoutLMv2 and LayoutXLM on tiny from-scratch checkpoints (ResNet-18 FPN visual backbone): scratch configs,
a LayoutXLM tokenizer that reads Cyrillic, training (1 and 2 processes), resume, evaluation, predict.py on an
image and a PDF, both pipelines from a fresh process, document classification.

The model tests need detectron2 (`bash scripts/install_detectron2.sh`, which .ci/run runs) and skip without it.
"""

import importlib.util
import json
import shutil
import sys

import pytest

from conftest import REPO_ROOT, python_module, run_command, run_fresh_python

HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
needs_detectron2 = pytest.mark.skipif(
    not HAS_DETECTRON2, reason="LayoutLMv2/LayoutXLM models need detectron2: bash scripts/install_detectron2.sh")
DEFAULT_OCR = importlib.util.find_spec("rapidocr") is not None
FAST = ["--max_seq_length", 128, "--stride", 32, "--learning_rate", 2e-3, "--per_device_eval_batch_size", 8,
        "--seed", 7]
XLM_RUN = ["--num_train_epochs", 2, "--max_train_samples", 8, "--per_device_train_batch_size", 4,
           "--checkpointing_steps", "epoch"]


def train_ner(dataset, checkpoint, output_dir, *extra, launcher=None, env=None):
    command = (launcher or [sys.executable]) + [REPO_ROOT / "run_invoice_ner.py", "--dataset_path", dataset,
                                                "--config_name", checkpoint, "--output_dir", output_dir, *FAST, *extra]
    return run_command(command, env=env)


def results(output_dir):
    return json.loads((output_dir / "all_results.json").read_text())


def predictions(output_dir):
    return [json.loads(line) for line in (output_dir / "test_predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def multilingual_folder(synthetic_invoices, tmp_path_factory):
    """10 English and 8 Russian (Cyrillic) synthetic invoices in one annotation folder."""
    from dataset_loader.synth_multilingual import generate_russian

    folder = tmp_path_factory.mktemp("multilingual")
    (folder / "images").mkdir()
    (folder / "annotations").mkdir()
    for annotation in sorted((synthetic_invoices / "annotations").glob("*.json"))[:10]:
        image = json.loads(annotation.read_text())["image"]
        shutil.copy(annotation, folder / "annotations")
        shutil.copy(synthetic_invoices / "images" / image, folder / "images")
    generate_russian(folder, 8, seed=1)
    return folder


@pytest.fixture(scope="module")
def multilingual_dataset(multilingual_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("multilingual-dataset") / "invoices"
    run_command(python_module("dataset_loader", "build", "--data-dir", multilingual_folder, "--output", output,
                              "--seed", 0))
    return output


@pytest.fixture(scope="module")
def xlm_checkpoint(multilingual_dataset, tmp_path_factory):
    from layoutkit.apps.scratch import build_scratch_checkpoint, dataset_words

    folder = tmp_path_factory.mktemp("scratch-layoutxlm")
    return build_scratch_checkpoint(str(folder), "layoutxlm", dataset_words(str(multilingual_dataset)), size="tiny",
                                    vocab_size=400)


# ----------------------------------------------------------------------------- without detectron2 as well
@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_scratch_layoutlmv2_config_widths(size, tmp_path):
    """The four coordinate and two shape embeddings add up to the hidden size (they are summed with the token
    embeddings), and tiny/small get a small detectron2 backbone whose FPN width the pooled features use."""
    from transformers import AutoConfig

    from layoutkit.apps.scratch import build_scratch_checkpoint

    words = ["Invoice", "Total", "Date:", "2024-01-03", "€123.45"] * 20
    config = AutoConfig.from_pretrained(build_scratch_checkpoint(str(tmp_path), "layoutlmv2", words, size=size,
                                                                 vocab_size=200))
    assert 4 * config.coordinate_size + 2 * config.shape_size == config.hidden_size
    backbone = config.detectron2_config_args
    if size == "base":  # the published checkpoints' ResNeXt-101 FPN
        assert backbone["MODEL.RESNETS.DEPTH"] == 101 and config.image_feature_pool_shape[-1] == 256
    else:
        assert backbone["MODEL.RESNETS.DEPTH"] == 18
        assert config.image_feature_pool_shape[-1] == backbone["MODEL.FPN.OUT_CHANNELS"] <= 64


def test_layoutxlm_tokenizer_reads_cyrillic_words(xlm_checkpoint, multilingual_dataset):
    """The SentencePiece (Unigram) tokenizer trained on the sample loads as LayoutXLM (tokenizer and processor)
    and turns the Russian pages' words into pieces, not <unk>."""
    from datasets import load_from_disk
    from transformers import AutoConfig, AutoProcessor, LayoutXLMProcessor, LayoutXLMTokenizerFast

    from layoutkit.pipelines.modeling import load_processing, model_family

    tokenizer = LayoutXLMTokenizerFast.from_pretrained(xlm_checkpoint)
    assert type(LayoutXLMProcessor.from_pretrained(xlm_checkpoint).tokenizer) is type(tokenizer)
    assert type(AutoProcessor.from_pretrained(xlm_checkpoint)).__name__ == "LayoutXLMProcessor"
    special = (tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id)
    assert special == (0, 1, 2, 3)  # XLM-RoBERTa's ids
    config = AutoConfig.from_pretrained(xlm_checkpoint)
    assert config.model_type == "layoutlmv2" and config.vocab_size == len(tokenizer)
    assert model_family(config).image_input == "image"

    docs = load_from_disk(str(multilingual_dataset))["train"]
    russian = [words for doc_id, words in zip(docs["id"], docs["words"]) if doc_id.startswith("invoice_ru")]
    assert russian, "no Russian invoice in the training split"
    words = [w for page in russian for w in page]
    assert any("\u0400" <= ch <= "\u04ff" for w in words for ch in w)
    encoded = tokenizer(words, boxes=[[0, 0, 10, 10]] * len(words), add_special_tokens=False)
    assert tokenizer.unk_token_id not in encoded["input_ids"]
    # load_processing (training and evaluation) uses the LayoutXLM tokenizer and the PIL image backend.
    loaded, image_processor, _ = load_processing(xlm_checkpoint)
    assert type(loaded).__name__ == "LayoutXLMTokenizer" and type(image_processor).__name__.endswith("Pil")


# --------------------------------------------------------------------------------------- with detectron2
@pytest.fixture(scope="module")
def xlm_run(multilingual_dataset, xlm_checkpoint, tmp_path_factory):
    """run_invoice_ner.py on the tiny LayoutXLM: 2 epochs of 2 steps, a checkpoint per epoch."""
    output = tmp_path_factory.mktemp("xlm-run") / "xlm"
    train_ner(multilingual_dataset, xlm_checkpoint, output, *XLM_RUN)
    return output


@needs_detectron2
def test_scratch_layoutlmv2_is_small_and_runs(scratch_checkpoint):
    """A tiny v2 from scratch builds with its small backbone (not the 90M-parameter ResNeXt-101 FPN) and a
    forward pass runs (the 2D position widths used to break the first step)."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(scratch_checkpoint("layoutlmv2"), num_labels=3)
    model = AutoModelForTokenClassification.from_config(config).eval()
    assert sum(p.numel() for p in model.parameters()) < 15_000_000
    bbox = torch.tensor([[[0, 0, 0, 0], [10, 10, 50, 20], [60, 10, 90, 20], [1000, 1000, 1000, 1000]]])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[2, 10, 11, 3]]), bbox=bbox,
                       image=torch.randint(0, 255, (1, 3, 224, 224), dtype=torch.uint8)).logits
    assert logits.shape == (1, 4, 3)


@needs_detectron2
def test_layoutxlm_trains_evaluates_and_saves(xlm_run, multilingual_dataset):
    from datasets import load_from_disk
    from transformers import AutoModelForTokenClassification, AutoProcessor

    scores = results(xlm_run)
    for key in ("eval_f1", "test_f1", "test_precision", "test_recall", "test_accuracy"):
        assert 0.0 <= scores[key] <= 1.0, key
    test_docs = load_from_disk(str(multilingual_dataset))["test"]
    rows = predictions(xlm_run)
    assert [row["id"] for row in rows] == test_docs["id"]
    assert all(len(row["predictions"]) == len(words) for row, words in zip(rows, test_docs["words"]))
    assert type(AutoProcessor.from_pretrained(xlm_run)).__name__ == "LayoutXLMProcessor"
    model = AutoModelForTokenClassification.from_pretrained(xlm_run)
    assert model.config.model_type == "layoutlmv2" and (xlm_run / "epoch_1").is_dir()


@needs_detectron2
def test_layoutxlm_resume_matches_uninterrupted_run(xlm_run, multilingual_dataset, xlm_checkpoint, tmp_path):
    """Resumed from its epoch_0 checkpoint, the run ends with the metrics and predictions of the run that
    was never stopped."""
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(xlm_run / "epoch_0", resumed / "epoch_0")
    log = train_ner(multilingual_dataset, xlm_checkpoint, resumed, *XLM_RUN, "--resume_from_checkpoint", "latest")
    assert "Resuming from" in log.stdout + log.stderr
    expected, got = results(xlm_run), results(resumed)
    for key in ("eval_f1", "test_f1", "test_accuracy", "train_steps"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    assert [r["predictions"] for r in predictions(resumed)] == [r["predictions"] for r in predictions(xlm_run)]


@needs_detectron2
def test_layoutxlm_two_processes(multilingual_dataset, xlm_checkpoint, tmp_path):
    """Two CPU ranks (DDP with find_unused_parameters for the backbone's unused FPN levels)."""
    two = python_module("accelerate.commands.launch", "--multi_gpu", "--num_processes", 2, "--num_machines", 1,
                        "--mixed_precision", "no", "--dynamo_backend", "no")
    log = train_ner(multilingual_dataset, xlm_checkpoint, tmp_path / "two", "--max_train_steps", 2,
                    "--per_device_train_batch_size", 2, launcher=two, env={"ACCELERATE_USE_CPU": "1"})
    assert "2 processes" in log.stdout
    assert results(tmp_path / "two")["train_steps"] == 2 and "test_f1" in results(tmp_path / "two")


@needs_detectron2
@pytest.mark.skipif(not DEFAULT_OCR, reason="rapidocr, the default OCR engine, is not installed")
def test_predict_image_and_pdf(xlm_run, multilingual_folder, tmp_path):
    from PIL import Image

    pages = tmp_path / "pages"
    pages.mkdir()
    image = multilingual_folder / "images" / "invoice_ru_00000.png"
    shutil.copy(image, pages / "page.png")
    Image.open(image).convert("RGB").save(pages / "scan.pdf", resolution=100)
    output = tmp_path / "out"
    run_command([sys.executable, REPO_ROOT / "predict.py", "--model_name_or_path", xlm_run, "--input", pages,
                 "--output_dir", output, "--dpi", 100])
    summary = [json.loads(line) for line in (output / "summary.jsonl").read_text().splitlines()]
    assert [row["status"] for row in summary] == ["ok", "ok"], summary
    for name in ("page.json", "scan.json"):
        document = json.loads((output / name).read_text())
        assert {"entities", "fields"} <= set(document), name


TOKEN_SCRIPT = """
import importlib.util, json, sys
assert importlib.util.find_spec("layoutkit") is None, "the project must not be importable here"
from transformers import pipeline
extractor = pipeline("token-classification", model=sys.argv[1], trust_remote_code=True)
doc = json.load(open(sys.argv[2]))
out = extractor({"image": sys.argv[3], "words": doc["words"], "boxes": doc["boxes"]}, return_words=True)
print(json.dumps({"class": type(extractor).__module__, "image_processor": type(extractor.image_processor).__name__,
                  "tokenizer": type(extractor.tokenizer).__name__, "words": [w["text"] for w in out["words"]],
                  "entities": out["entities"]}))
"""


@needs_detectron2
def test_layoutxlm_token_pipeline_from_fresh_process(xlm_run, multilingual_folder, tmp_path):
    annotation = multilingual_folder / "annotations" / "invoice_ru_00001.json"
    doc = json.loads(annotation.read_text())
    out = run_fresh_python(TOKEN_SCRIPT, [xlm_run, annotation, multilingual_folder / "images" / doc["image"]],
                           tmp_path)
    assert out["class"].startswith("transformers_modules.")
    assert out["tokenizer"] == "LayoutXLMTokenizer" and out["image_processor"] == "LayoutLMv2ImageProcessorPil"
    assert out["words"] == doc["words"]
    assert isinstance(out["entities"], list)


CLASSIFY_SCRIPT = """
import importlib.util, json, sys
assert importlib.util.find_spec("layoutkit") is None, "the project must not be importable here"
from transformers import pipeline
classifier = pipeline("image-classification", model=sys.argv[1], trust_remote_code=True)
doc = json.load(open(sys.argv[2]))
print(json.dumps({"class": type(classifier).__module__,
                  "all": classifier({"image": sys.argv[3], "words": doc["words"], "boxes": doc["boxes"]})}))
"""


@needs_detectron2
def test_layoutlmv2_document_classification_and_fresh_pipeline(tmp_path):
    from dataset_loader.__main__ import main as dataset_loader
    from layoutkit.apps.scratch import build_scratch_checkpoint, dataset_words

    folder, dataset = tmp_path / "doctypes", tmp_path / "doctypes-dataset"
    assert dataset_loader(["synth-classes", "--output", str(folder), "--num-docs", "12", "--seed", "3"]) == 0
    assert dataset_loader(["classify", "--data-dir", str(folder), "--output", str(dataset), "--seed", "0"]) == 0
    checkpoint = build_scratch_checkpoint(str(tmp_path / "scratch"), "layoutlmv2", dataset_words(str(dataset)),
                                          size="tiny", vocab_size=400)
    output = tmp_path / "run"
    run_command([sys.executable, REPO_ROOT / "run_doc_classification.py", "--dataset_path", dataset,
                 "--config_name", checkpoint, "--output_dir", output, "--max_seq_length", 128, "--stride", 32,
                 "--learning_rate", 1e-3, "--num_train_epochs", 1, "--per_device_train_batch_size", 4, "--seed", 7])
    scores = results(output)
    assert 0.0 <= scores["test_accuracy"] <= 1.0

    image = folder / "receipt" / "receipt_00001.png"
    out = run_fresh_python(CLASSIFY_SCRIPT, [output, image.with_suffix(".json"), image], tmp_path)
    assert out["class"].startswith("transformers_modules.")
    assert sorted(row["label"] for row in out["all"]) == ["invoice", "letter", "receipt"]
    assert sum(row["score"] for row in out["all"]) == pytest.approx(1.0, abs=1e-4)
