"""`layoutkit calibrate` (layoutkit/train/ocr_calibration.py): field confidence fitted on validation pages read by
OCR, written to config.json under `field_trust.words_sources`, and picked by the words source at inference."""

import hashlib
import json
import shutil
from typing import ClassVar

import numpy as np
import pytest

from dataset_loader.annotations import read_annotation
from layoutkit.pipelines import ocr
from layoutkit.pipelines.review import document_words_source, trust_for_words
from layoutkit.train.ocr_calibration import main as calibrate


def page_key(page) -> str:
    return hashlib.sha1(np.asarray(page.convert("RGB")).tobytes()).hexdigest()


class AnnotatedWordsEngine(ocr.OcrEngine):
    """Stands for an OCR engine on the synthetic invoices: it "reads" a page's annotated words, in reading order
    (line by line), with the last digit of every other amount-like word misread, as OCR misreads digits."""

    name = "calibration-test-engine"
    pages: ClassVar[dict[str, ocr.OcrResult]] = {}

    def read(self, page):
        return self.pages[page_key(page)]


@pytest.fixture()
def engine(synthetic_invoices):
    from layoutkit.pipelines.boxes import reading_order

    for path in sorted((synthetic_invoices / "annotations").glob("*.json")):
        document = read_annotation(path, synthetic_invoices / "images")
        order = reading_order(document.boxes)
        words = [document.words[i] for i in order]
        misread = [i for i, word in enumerate(words) if word[-1:].isdigit()][::2]
        for i in misread:
            words[i] = words[i][:-1] + str((int(words[i][-1]) + 1) % 10)
        AnnotatedWordsEngine.pages[page_key(document.load_image())] = ocr.OcrResult(
            words, [document.boxes[i] for i in order], [95.0] * len(words), list(range(len(words))))
    ocr.register_ocr_engine(AnnotatedWordsEngine)
    return AnnotatedWordsEngine.name


def test_calibrate_writes_an_ocr_fit_beside_the_training_one(trained_ner_checkpoint, synthetic_invoices,
                                                             invoice_dataset, engine, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAYOUTKIT_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(trained_ner_checkpoint, model)
    before = json.loads((model / "config.json").read_text())["field_trust"]

    assert calibrate(["--model", str(model), "--data_dir", str(synthetic_invoices), "--dataset_path",
                      str(invoice_dataset), "--split", "validation", "--ocr_engine", engine]) == 0

    trust = json.loads((model / "config.json").read_text())["field_trust"]
    fitted = trust["words_sources"][f"ocr:{engine}"]
    assert {key: trust[key] for key in before} == before  # the training-time fit is kept for given words
    assert fitted["fitted_on"]["split"] == "validation" and fitted["fitted_on"]["documents"] > 0
    assert fitted["fitted_on"]["ocr"]["engine"] == engine
    assert fitted["review_precision"] == before["review_precision"]
    report = json.loads(capsys.readouterr().out)
    # The misread digits make values wrong that the annotation's words would have made right.
    assert report["words_source"] == f"ocr:{engine}" and report["field_values"] > 0
    assert report["field_accuracy"] < 1.0
    assert trust_for_words(trust, f"ocr:{engine}")["calibration"] == fitted["calibration"]
    assert trust_for_words(trust, "given")["calibration"] == before["calibration"]


def test_calibrate_refuses_the_test_split(trained_ner_checkpoint, synthetic_invoices, tmp_path):
    with pytest.raises(SystemExit):
        calibrate(["--model", str(trained_ner_checkpoint), "--data_dir", str(synthetic_invoices), "--split", "test"])


def test_trust_is_picked_by_the_words_source():
    trust = {"calibration": {"method": "none"}, "review_threshold": 0.9, "day_first": True,
             "words_sources": {"ocr:rapidocr": {"calibration": {"method": "platt", "a": 1.0, "b": 0.0},
                                                "review_threshold": 0.95}}}
    assert trust_for_words(trust, "ocr:rapidocr")["review_threshold"] == 0.95
    assert trust_for_words(trust, "ocr:rapidocr")["day_first"] is True  # what the OCR fit does not hold is kept
    assert trust_for_words(trust, "ocr:tesseract") is trust  # another engine: the training-time fit
    assert trust_for_words(trust, None) is trust and trust_for_words(None, "given") is None
    assert document_words_source(["pdf_text", "ocr:rapidocr", "given"]) == "ocr:rapidocr"
    assert document_words_source(["pdf_text", "pdf_text"]) == "pdf_text"
    assert document_words_source([None]) is None
