"""`dataset_loader build/funsd --ocr ENGINE`: datasets of OCR words with the gold labels carried over, the build
report's survival counts, the OCR cache, and the engine settings recorded for inference."""

import json
import pickle
import shutil

import pytest
from datasets import load_from_disk

from conftest import FUNSD_DIR, python_module, run_command
from dataset_loader.build import build_dataset
from dataset_loader.ocr_build import OcrBuild
from layoutkit.pipelines import ocr
from layoutkit.pipelines.boxes import segment_boxes

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None,
                                     reason="tesseract is not installed (apt-get install tesseract-ocr)")


@pytest.fixture
def few_invoices(synthetic_invoices, tmp_path):
    """Six of the synthetic invoices in a folder of their own."""
    folder = tmp_path / "few"
    for sub in ("images", "annotations"):
        (folder / sub).mkdir(parents=True)
    for path in sorted((synthetic_invoices / "annotations").glob("*.json"))[:6]:
        shutil.copy(path, folder / "annotations" / path.name)
        image = json.loads(path.read_text())["image"]
        shutil.copy(synthetic_invoices / "images" / image, folder / "images" / image)
    return folder


@needs_tesseract
def test_build_on_tesseract_words(few_invoices, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    output = tmp_path / "ds"
    build = OcrBuild.create("tesseract", cache_dir=cache, workers=2)
    dataset = build_dataset(few_invoices, output, ocr=build, ratios=(0.67, 0.33, 0), seed=0)

    report = json.loads((output / "build_report.json").read_text())
    section = report["ocr"]
    assert section["settings"] == build.engine.settings() and section["settings"]["engine"] == "tesseract"
    table = section["entities_by_label"]
    assert set(table) >= {"vendor", "invoice_number", "invoice_date", "due_date", "total"}
    entities = sum(row["entities"] for row in table.values())
    exact = sum(row["exact"] for row in table.values())
    assert section["entities_exact"] == f"{exact}/{entities}" and exact >= 0.8 * entities
    for row in table.values():
        assert row["entities"] == row["exact"] + row["partial"] + row["lost"]
    assert section["documents_with_changed_entities"] == len(section["changed_entities_by_document"])
    # Recorded for training, and from there for inference.
    assert json.loads((output / "preprocessing.json").read_text())["ocr"] == build.engine.settings()

    # The rows hold what Tesseract read: OCR words, their line boxes as segment boxes, transferred labels.
    row = dataset["train"][0]
    annotation = json.loads((few_invoices / "annotations" / f"{row['id']}.json").read_text())
    page = ocr.Image.open(few_invoices / "images" / annotation["image"]).convert("RGB")
    read = build.engine(page)
    assert row["words"] == read.words
    names = dataset["train"].features["ner_tags"].feature.names
    tags = [names[t] for t in row["ner_tags"]]
    vendor = " ".join(w for w, t in zip(row["words"], tags) if t.endswith("-vendor"))
    gold_vendor = " ".join(w for w, t in zip(annotation["words"], annotation["labels"]) if t.endswith("-vendor"))
    assert vendor == gold_vendor
    scale_x = row["image"].width / page.width  # the page as stored (fitted inside 1000x1000 by default)
    expected_segments = segment_boxes(read.boxes, read.line_ids)
    assert abs(row["segment_bboxes"][0][2] - expected_segments[0][2] * scale_x) <= 1

    # A rebuild (here with another page size) reads every page from the cache.
    assert len(list(cache.rglob("*.json"))) == 6

    def no_ocr(self, page):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(ocr.TesseractEngine, "read", no_ocr)
    again = build_dataset(few_invoices, tmp_path / "ds2", ocr=OcrBuild.create("tesseract", cache_dir=cache),
                          ratios=(0.67, 0.33, 0), seed=0, size=(800, 600))
    assert again["train"][0]["words"] == row["words"]


class FailingEngine(ocr.OcrEngine):
    name = "failing-test-engine"

    def read(self, page):
        raise ocr.OcrError("language data 'xyz' is not installed")


def test_ocr_failure_skips_the_document_with_its_reason(few_invoices, tmp_path):
    ocr.register_ocr_engine(FailingEngine)
    build = OcrBuild.create("failing-test-engine", cache_dir=tmp_path / "cache")
    with pytest.raises(Exception, match="no document could be written to the train split"):
        build_dataset(few_invoices, tmp_path / "ds", ocr=build, ratios=(1, 0, 0))
    report = json.loads((tmp_path / "ds" / "build_report.json").read_text())
    assert len(report["skipped"]) == 6
    assert report["skipped"][0]["field"] == "image"
    assert "OCR failed: language data 'xyz' is not installed" in report["skipped"][0]["reason"]


def test_cli_rejects_bad_ocr_options(few_invoices, tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "dataset_loader", "build", "--data-dir", str(few_invoices),
               "--output", str(tmp_path / "x"), "--ocr", "tesseract", "--ocr-option"]
    result = subprocess.run([*command, "no_equals_sign"], capture_output=True, text=True)
    assert result.returncode == 2 and "'no_equals_sign' is not KEY=VALUE" in result.stderr
    result = subprocess.run([*command, "sharpness=3"], capture_output=True, text=True)
    assert result.returncode == 1 and "--ocr tesseract: OCR engine 'tesseract'" in result.stderr
    assert "sharpness" in result.stderr


@needs_tesseract
@pytest.mark.skipif(not FUNSD_DIR.is_dir(), reason="FUNSD is not in ../shared/datasets/funsd")
def test_funsd_import_on_ocr_words(tmp_path):
    output = tmp_path / "funsd"
    run_command(python_module("dataset_loader", "funsd", "--input", FUNSD_DIR, "--output", output, "--max-docs", 1,
                              "--ocr", "tesseract", "--ocr-option", "min_height=0", "--ocr-cache", tmp_path / "cache"))
    report = json.loads((output / "build_report.json").read_text())
    assert report["ocr"]["settings"]["min_height"] == 0
    assert set(report["ocr"]["entities_by_label"]) <= {"HEADER", "QUESTION", "ANSWER"}
    dataset = load_from_disk(str(output))
    names = dataset["test"].features["ner_tags"].feature.names
    assert any(names[t] != "O" for t in dataset["test"][0]["ner_tags"])
    # Entity ids follow the OCR words (the annotated word each overlaps most); links only between kept entities.
    row = dataset["test"][0]
    assert len(row["entity_ids"]) == len(row["words"]) and any(i >= 0 for i in row["entity_ids"])
    assert row["relations"] and all(h in row["entity_ids"] and t in row["entity_ids"] for h, t in row["relations"])


def small_pages(folder, count: int = 2, height: int = 320):
    """`count` small pages: the top `height` px of synthetic invoices (vendor, title, invoice number), with the
    words that lie inside."""
    from dataset_loader.synth import make_document

    for sub in ("images", "annotations"):
        (folder / sub).mkdir(parents=True)
    for index in range(count):
        image, annotation = make_document(0, index)
        keep = [i for i, box in enumerate(annotation["boxes"]) if box[3] < height]
        record = {"image": f"top_{index}.png", **{key: [annotation[key][i] for i in keep]
                                                 for key in ("words", "boxes", "labels", "segment_boxes")}}
        image.crop((0, 0, image.width, height)).save(folder / "images" / record["image"])
        (folder / "annotations" / f"top_{index}.json").write_text(json.dumps(record))
    return folder


def test_build_on_rapidocr_words(tmp_path):
    """The default engine: its loaded reader (ONNX Runtime sessions) cannot be pickled, and datasets hashes the
    build's arguments, so a first build (nothing in the OCR cache) used to crash after reading every page."""
    pytest.importorskip("rapidocr", reason="rapidocr is not installed (pip install rapidocr onnxruntime)")
    folder = small_pages(tmp_path / "pages")
    build = OcrBuild.create("rapidocr", cache_dir=tmp_path / "cache", workers=1)
    dataset = build_dataset(folder, tmp_path / "ds", ocr=build, ratios=(1, 0, 0), seed=0)
    assert build.engine._idle, "the pages were read now (a loaded reader kept), not taken from a cache"
    rows = list(dataset["train"])
    assert len(rows) == 2 and all(row["words"] for row in rows)
    names = dataset["train"].features["ner_tags"].feature.names
    for row in rows:
        annotation = json.loads((folder / "annotations" / f"{row['id']}.json").read_text())
        tags = [names[t] for t in row["ner_tags"]]
        assert any(tag.endswith("-vendor") for tag in tags)
        assert " ".join(w for w, t in zip(row["words"], tags) if t.endswith("-invoice_number")) == " ".join(
            w for w, t in zip(annotation["words"], annotation["labels"]) if t.endswith("-invoice_number"))
    report = json.loads((tmp_path / "ds" / "build_report.json").read_text())
    assert report["ocr"]["settings"]["engine"] == "rapidocr"
    # The engine pickles as its settings; a copy loads its own reader when it reads a page.
    copy = pickle.loads(pickle.dumps(build.engine))
    assert copy._idle == [] and copy.settings() == build.engine.settings()
