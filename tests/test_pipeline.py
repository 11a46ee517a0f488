"""The custom token-classification pipeline: shipped inside the checkpoint, loaded in a fresh process with
trust_remote_code, preprocessing identical to training, windows batched, boxes in original pixels, OCR."""

import importlib.util
import json
import shutil

import pytest

from conftest import REPO_ROOT, run_fresh_python
from inference_fixtures import force_label

TESSERACT = shutil.which("tesseract")
needs_tesseract = pytest.mark.skipif(TESSERACT is None, reason="tesseract is not installed (apt-get install tesseract-ocr)")
# The default OCR engine (what a page without given words is read with).
DEFAULT_OCR = importlib.util.find_spec("rapidocr") is not None
needs_default_ocr = pytest.mark.skipif(not DEFAULT_OCR, reason="rapidocr, the default OCR engine, is not installed "
                                       "(pip install rapidocr onnxruntime)")
PIPELINE_FILES = ["token_classification_pipeline.py", "boxes.py", "calibration.py", "draw.py", "encoding.py",
                  "field_checks.py", "fields.py", "input_validation.py", "labels.py", "line_items.py", "locale_data.py",
                  "modeling.py", "ocr.py", "pdf_text.py", "pipeline_inputs.py", "postprocess.py", "review.py", "windows.py"]


def synth_document(invoice_dataset, split="test", index=0):
    from datasets import load_from_disk

    row = load_from_disk(str(invoice_dataset))[split][index]
    return row


def load_pipeline(checkpoint):
    from transformers import pipeline

    from layoutkit.pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline

    return pipeline("token-classification", model=str(checkpoint), pipeline_class=LayoutTokenClassificationPipeline,
                    device="cpu")


# ------------------------------------------------------------------------------------------ the checkpoint
def test_checkpoint_ships_pipeline(trained_ner_checkpoint):
    from layoutkit.pipelines.attach import ALLOWED_IMPORTS, third_party_imports

    config = json.loads((trained_ner_checkpoint / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "token-classification": {
            "impl": "token_classification_pipeline.LayoutTokenClassificationPipeline",
            "pt": ["AutoModelForTokenClassification"],
            "type": "multimodal",
        }
    }
    assert config["document_preprocessing"]["max_seq_length"] == 128
    for name in PIPELINE_FILES:
        shipped = trained_ner_checkpoint / name
        assert shipped.read_bytes() == (REPO_ROOT / "layoutkit" / "pipelines" / name).read_bytes(), name
    assert third_party_imports("token-classification") <= ALLOWED_IMPORTS
    # Field confidence fitted on validation at the end of training, measured on test (field_trust.py).
    trust = config["field_trust"]
    assert set(trust) == {"calibration", "review_threshold", "review_precision", "review_confidence", "day_first"}
    assert trust["review_precision"] == 0.99 and trust["review_confidence"] == 0.95 and trust["calibration"]["method"] in ("none", "platt", "isotonic")
    results = json.loads((trained_ner_checkpoint / "all_results.json").read_text())
    assert {"eval_review_threshold", "eval_field_calibration_method", "test_field_ece", "test_field_ece_model",
            "test_auto_coverage"} <= set(results)
    assert (trained_ner_checkpoint / "field_reliability.png").is_file()


def test_attach_pipeline_keeps_other_tasks(tmp_path):
    from layoutkit.pipelines.attach import attach_pipeline, custom_pipeline_entry

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "layoutlmv3", "custom_pipelines": {
        "image-classification": {"impl": "x.Y", "pt": [], "type": "image"}}}))
    copied = attach_pipeline(tmp_path, "token-classification")
    assert sorted(copied) == sorted(PIPELINE_FILES)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["custom_pipelines"]) == {"image-classification", "token-classification"}
    assert config["custom_pipelines"]["token-classification"] == custom_pipeline_entry("token-classification")
    with pytest.raises(KeyError, match="no custom pipeline"):
        attach_pipeline(tmp_path, "summarization")
    with pytest.raises(FileNotFoundError, match="save the model"):
        attach_pipeline(tmp_path / "missing", "token-classification")


def test_loading_without_trust_remote_code_raises(trained_ner_checkpoint):
    from transformers import pipeline

    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("token-classification", model=str(trained_ner_checkpoint))


# --------------------------------------------------------------------------------------- fresh process
FRESH_SCRIPT = """
import importlib.util, json, sys
assert importlib.util.find_spec("layoutkit") is None, "the project must not be importable here"
from transformers import pipeline
extractor = pipeline("token-classification", model=sys.argv[1], trust_remote_code=True)
doc = json.load(open(sys.argv[2]))
inputs = {"image": sys.argv[3], "words": doc["words"], "boxes": doc["boxes"]}
out = {"class": type(extractor).__module__, "entities": extractor(inputs),
       "ruled": extractor(inputs, rules="company_first_lines", batch_size=2),
       "words": extractor(inputs, return_words=True)["words"]}
drawn = extractor(inputs, return_fields=True, draw=True)
out["fields"], out["drawn_size"] = drawn["fields"], list(drawn["image"].size)
if len(sys.argv) > 4:  # OCR (the default engine), when it is installed
    out["ocr_entities"] = extractor(sys.argv[4])
    out["ocr_result"] = extractor(sys.argv[4], ocr_lang="eng", return_words=True)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fresh_process_results(vendor_ner_checkpoint, synthetic_invoices, tmp_path_factory):
    """One `python -I` process (no PYTHONPATH, no user site, cwd outside the project, offline) loading the
    checkpoint folder with trust_remote_code: a words + boxes input, then (with tesseract) an image with OCR."""
    tmp_path = tmp_path_factory.mktemp("fresh")
    annotation = synthetic_invoices / "annotations" / "invoice_00000.json"
    image = synthetic_invoices / "images" / json.loads(annotation.read_text())["image"]
    args = [vendor_ner_checkpoint, annotation, image]
    if DEFAULT_OCR:
        args.append(synthetic_invoices / "images" / "invoice_00001.png")
    return json.loads(annotation.read_text()), run_fresh_python(FRESH_SCRIPT, args, tmp_path)


def test_fresh_process_words_and_boxes(fresh_process_results, synthetic_invoices):
    """Dict input (words + pixel boxes, no OCR) through the code shipped in the checkpoint."""
    annotation, out = fresh_process_results
    assert out["class"].startswith("transformers_modules.")
    words, boxes = annotation["words"], annotation["boxes"]
    # Every word is I-vendor: one entity over the page, its box the union of the word boxes in original pixels,
    # opened by an I- tag (a continuation, with no earlier value to continue).
    assert out["entities"] == [{
        "entity_group": "vendor", "score": pytest.approx(out["entities"][0]["score"]), "word": " ".join(words),
        "start": 0, "end": len(words),
        "box": [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)],
        "continuation": True,
    }]
    assert 0 < out["entities"][0]["score"] <= 1
    assert [w["text"] for w in out["words"]] == words and [w["box"] for w in out["words"]] == boxes
    # One typed value per field, and the page drawn, from the modules shipped in the checkpoint.
    assert out["fields"]["vendor"]["value"] == " ".join(words) and out["fields"]["vendor"]["type"] == "text"
    from PIL import Image

    # The page at its own pixels, the legend of field colours in a strip below it.
    page_width, page_height = Image.open(synthetic_invoices / "images" / annotation["image"]).size
    assert out["drawn_size"][0] == page_width and out["drawn_size"][1] > page_height
    # rules="company_first_lines" keeps the vendor only on the two top lines.
    kept = [i for e in out["ruled"] for i in range(e["start"], e["end"])]
    assert kept and len(kept) < len(words)
    line_height = boxes[0][3] - boxes[0][1]
    assert all(boxes[i][1] < min(b[1] for b in boxes) + 3 * line_height for i in kept)


@needs_default_ocr
def test_fresh_process_image_with_ocr(fresh_process_results, synthetic_invoices):
    """A sample invoice image: OCR, entities with boxes inside the image."""
    from PIL import Image

    _, out = fresh_process_results
    width, height = Image.open(synthetic_invoices / "images" / "invoice_00001.png").size
    assert out["ocr_entities"], "the OCR found no words"
    for entity in out["ocr_entities"]:
        assert set(entity) == {"entity_group", "score", "word", "start", "end", "box", "continuation"}
        x0, y0, x1, y1 = entity["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    result = out["ocr_result"]
    assert (result["width"], result["height"]) == (width, height)
    texts = [w["text"] for w in result["words"]]
    assert any(t.lower().startswith(("total", "invoice", "due")) for t in texts), texts[:40]
    assert all("ocr_confidence" in w for w in result["words"])


# ------------------------------------------------------------------------------------------- OCR engines
def test_recorded_ocr_engine_is_the_default(vendor_ner_checkpoint, tmp_path):
    """A model trained on OCR words reads pages with the engine and settings recorded in its config; the
    caller can still choose another engine per call."""
    from PIL import Image

    from layoutkit.pipelines.ocr import register_ocr_engine
    from test_ocr import FixedEngine

    register_ocr_engine(FixedEngine)
    checkpoint = tmp_path / "ocr-trained"
    shutil.copytree(vendor_ner_checkpoint, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["document_preprocessing"]["ocr"] = {
        "engine": "fixed-test-engine", "lang": "eng", "min_confidence": 0.0, "words": ["Acme", "Ltd", "Total"],
        "boxes": [[10, 10, 60, 30], [65, 10, 90, 30], [10, 60, 60, 80]], "line_ids": [0, 0, 1],
    }
    (checkpoint / "config.json").write_text(json.dumps(config))
    extractor = load_pipeline(checkpoint)
    page = Image.new("RGB", (200, 100), "white")
    result = extractor(page, return_words=True)
    assert [w["text"] for w in result["words"]] == ["Acme", "Ltd", "Total"]
    assert extractor.ocr_engine().settings()["words"] == ["Acme", "Ltd", "Total"]
    # Overrides: options of the recorded engine, or another engine from its own defaults.
    assert extractor.ocr_engine({"options": {"words": ["X"], "boxes": [[0, 0, 5, 5]], "line_ids": [0]}}).words == ["X"]
    assert extractor.ocr_engine({"engine": "tesseract"}).settings() == {
        "engine": "tesseract", "lang": "eng", "min_confidence": 0.0, "psm": 3, "fallback_psms": [6],
        "min_height": 2000, "preprocess": "none", "config": ""}
    assert extractor.ocr_engine({"engine": "tesseract", "lang": "deu"}).lang == "deu"


# ---------------------------------------------------------------------------- same as training, in-process
def test_pipeline_reproduces_training_evaluation(trained_ner_checkpoint, invoice_dataset):
    """On test documents given as words + boxes, the pipeline's word labels and scores are those the training
    script's evaluation wrote (same resize, normalisation, windows and merging)."""
    extractor = load_pipeline(trained_ner_checkpoint)
    records = [json.loads(line) for line in (trained_ner_checkpoint / "test_predictions.jsonl").read_text().splitlines()]
    for index, record in enumerate(records[:2]):
        row = synth_document(invoice_dataset, "test", index)
        assert row["id"] == record["id"]
        out = extractor({"image": row["image"], "words": row["words"], "boxes": row["bboxes"]}, return_words=True)
        assert [w["label"] for w in out["words"]] == record["predictions"]
        assert [w["score"] for w in out["words"]] == pytest.approx(record["scores"], abs=2e-4)


def test_windows_batching_resize_and_mixed_precision(vendor_ner_checkpoint, trained_ner_checkpoint, invoice_dataset):
    """A long page (several windows): batch sizes agree, bf16 autocast runs, boxes come back in the original
    pixels of a page of a different size than the training resize."""
    from PIL import Image

    extractor = load_pipeline(trained_ner_checkpoint)
    row = synth_document(invoice_dataset, "train", 0)
    words = row["words"] * 2
    page = row["image"].resize((row["image"].width * 2, row["image"].height * 4))
    boxes = [[b[0] * 2, b[1] * 4, b[2] * 2, b[3] * 4] for b in row["bboxes"]] * 2
    inputs = {"image": page, "words": words, "boxes": boxes}
    one = extractor(inputs, batch_size=1, return_words=True)
    assert len(extractor.preprocess(inputs)["windows"]) > 2
    many = extractor(inputs, batch_size=16, return_words=True)
    assert [w["label"] for w in one["words"]] == [w["label"] for w in many["words"]]
    assert [w["score"] for w in one["words"]] == pytest.approx([w["score"] for w in many["words"]], abs=1e-4)
    assert [w["box"] for w in one["words"]] == boxes and (one["width"], one["height"]) == page.size
    bf16 = extractor(inputs, mixed_precision="bf16", return_words=True)
    assert len(bf16["words"]) == len(words)
    assert all(0 <= w["score"] <= 1 for w in bf16["words"])

    # Lists of inputs give lists of results; an empty page gives no entities.
    vendor = load_pipeline(vendor_ner_checkpoint)
    blank = {"image": Image.new("RGB", (300, 200), "white"), "words": [], "boxes": []}
    results = vendor([inputs, blank])
    assert len(results) == 2 and results[1] == [] and results[0][0]["end"] == len(words)


def test_text_only_layoutlm_v1_with_segment_boxes(scratch_checkpoint, tmp_path):
    """LayoutLM v1 (no image input, no image processor) and box_level "segment": given words are grouped into
    lines, whose boxes the model reads."""
    from PIL import Image
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    from layoutkit.pipelines.attach import attach_pipeline

    labels = ["O", "B-total", "I-total"]
    config = AutoConfig.from_pretrained(scratch_checkpoint("layoutlm"), num_labels=3,
                                        id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    config.document_preprocessing = {"resize": [500, 350], "keep_aspect": True, "box_level": "segment",
                                     "max_seq_length": 32, "stride": 8}
    AutoModelForTokenClassification.from_config(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(scratch_checkpoint("layoutlm")).save_pretrained(tmp_path)
    attach_pipeline(tmp_path, "token-classification")
    checkpoint = force_label(tmp_path, tmp_path.parent / "v1-total", "B-total")

    extractor = load_pipeline(checkpoint)
    assert extractor.image_processor is None and extractor.preprocessing["box_level"] == "segment"
    words = ["Total", "12.00", "Date", "2024-01-01"] * 6
    boxes = [[10 + 80 * (i % 4), 10 + 30 * (i // 4), 80 + 80 * (i % 4), 30 + 30 * (i // 4)] for i in range(len(words))]
    inputs = {"image": Image.new("RGB", (400, 300), "white"), "words": words, "boxes": boxes}
    entities = extractor(inputs)
    assert [(e["start"], e["end"]) for e in entities] == [(i, i + 1) for i in range(len(words))]
    assert [e["box"] for e in entities] == boxes
    windows = extractor.preprocess(inputs)["windows"]
    assert len(windows) > 1 and "pixel_values" not in windows[0] and "image" not in windows[0]
    # The first line's words all carry the line's box on the grid (segment level), resized with keep_aspect.
    first = windows[0]
    line_boxes = [first["bbox"][p] for p, w in enumerate(first["word_ids"]) if 0 <= w < 4]
    assert len({tuple(b) for b in line_boxes}) == 1
    # total_keyword: the top-left "Total" has no keyword left of or above it; "12.00" is right of it.
    kept = {e["start"] for e in extractor(inputs, rules="total_keyword")}
    assert 0 not in kept and 1 in kept


def test_bad_inputs_raise_clear_errors(trained_ner_checkpoint):
    from PIL import Image

    extractor = load_pipeline(trained_ner_checkpoint)
    image = Image.new("RGB", (100, 100), "white")
    with pytest.raises(ValueError, match="2 words but 1 boxes"):
        extractor({"image": image, "words": ["a", "b"], "boxes": [[0, 0, 1, 1]]})
    with pytest.raises(ValueError, match=r"boxes\[0\] must be \[x0, y0, x1, y1\]"):
        extractor({"image": image, "words": ["a"], "boxes": [[0, 0, 1]]})
    with pytest.raises(ValueError, match="needs 'image'"):
        extractor({"words": ["a"], "boxes": [[0, 0, 1, 1]]})
    with pytest.raises(ValueError, match="unknown rule"):
        extractor({"image": image, "words": ["a"], "boxes": [[0, 0, 1, 1]]}, rules="no_such_rule")


def test_dict_input_is_checked_like_training_data(trained_ner_checkpoint):
    """Boxes outside the page, inverted, text or NaN are refused naming the box; normalised boxes are warned
    about; words without visible text are dropped with their boxes, as the dataset builder drops them."""
    from PIL import Image

    extractor = load_pipeline(trained_ner_checkpoint)
    image = Image.new("RGB", (300, 200), "white")
    refused = {
        "outside the 300x200 image": [2000, 1500, 2400, 1650],
        "inverted": [240, 150, 200, 165],
        "'10' is not a number": ["10", 150, 240, 165],
        "nan is not a finite number": [float("nan"), 150, 240, 165],
    }
    for problem, box in refused.items():
        with pytest.raises(ValueError, match=r"^boxes\[1\]: ") as caught:
            extractor({"image": image, "words": ["ACME", "Total"], "boxes": [[10, 10, 60, 25], box]})
        assert problem in str(caught.value)
    with pytest.warns(UserWarning, match="look normalised"):
        extractor({"image": image, "words": ["ACME", "Total"], "boxes": [[0.03, 0.05, 0.2, 0.1], [0.6, 0.7, 0.8, 0.8]]})
    with pytest.warns(UserWarning, match="no visible text"):
        out = extractor({"image": image, "words": ["ACME", "\u200b", "Total"],
                         "boxes": [[10, 10, 60, 25], [61, 10, 62, 25], [200, 150, 240, 165]]}, return_words=True)
    assert [w["text"] for w in out["words"]] == ["ACME", "Total"]
    assert [w["box"] for w in out["words"]] == [[10, 10, 60, 25], [200, 150, 240, 165]]


# ----------------------------------------------------------------------------------------------- OCR
@needs_tesseract
def test_ocr_page_words_boxes_lines():
    from PIL import Image, ImageDraw, ImageFont

    from layoutkit.pipelines.ocr import ocr_page

    image = Image.new("RGB", (640, 200), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=32)
    draw.text((20, 20), "ACME Supplies Ltd", fill="black", font=font)
    draw.text((20, 110), "Total 125.50", fill="black", font=font)
    result = ocr_page(image, "tesseract", lang="eng")
    assert result.words == ["ACME", "Supplies", "Ltd", "Total", "125.50"]
    assert result.line_ids == [0, 0, 0, 1, 1]
    assert len(result.boxes) == len(result.confidences) == 5
    assert all(0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 200 for x0, y0, x1, y1 in result.boxes)
    assert result.boxes[3][1] > result.boxes[0][3]  # the second line is below the first


def test_ocr_error_is_clear_without_tesseract(monkeypatch):
    from PIL import Image

    from layoutkit.pipelines import ocr

    import pytesseract

    def missing(*args, **kwargs):
        raise pytesseract.TesseractNotFoundError()

    monkeypatch.setattr(pytesseract, "image_to_data", missing)
    with pytest.raises(ocr.OcrError, match="tesseract binary is not installed"):
        ocr.ocr_page(Image.new("RGB", (10, 10)), "tesseract")

