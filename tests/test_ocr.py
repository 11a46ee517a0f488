"""OCR engines (Tesseract, RapidOCR, a user's own), label transfer onto OCR words, OCR quality counts."""

import shutil
import sys

import pytest
from PIL import Image, ImageDraw, ImageFont

from layoutkit.pipelines import ocr
from layoutkit.pipelines.ocr import OcrEngine, OcrError, OcrResult, get_ocr_engine, register_ocr_engine
from layoutkit.train.ocr_alignment import ocr_quality, transfer_labels

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None,
                                     reason="tesseract is not installed (apt-get install tesseract-ocr)")

LINES = ["ACME Supplies Ltd", "Invoice No: INV-0042", "Total 125.50"]


def text_page(lines=LINES, size=(640, 260), font_size=32):
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    for row, text in enumerate(lines):
        draw.text((20, 20 + int(font_size * 2.4) * row), text, fill="black", font=font)
    return image


def words_of(lines=LINES):
    return [word for line in lines for word in line.split()]


class FixedEngine(OcrEngine):
    """An engine that 'reads' fixed words: what a user's own engine class looks like."""

    name = "fixed-test-engine"
    requirement = "nothing"
    calls = 0

    def __init__(self, lang="eng", min_confidence=0.0, words=(), boxes=(), line_ids=()):
        super().__init__(lang, min_confidence)
        self.words, self.boxes, self.line_ids = list(words), [list(b) for b in boxes], list(line_ids)

    def settings(self):
        return {**super().settings(), "words": self.words}

    def read(self, page):
        type(self).calls += 1
        return OcrResult(list(self.words), [list(b) for b in self.boxes], [90.0] * len(self.words), list(self.line_ids))


# --------------------------------------------------------------------------------------------- Tesseract
@needs_tesseract
def test_tesseract_upscales_small_pages_and_maps_boxes_back():
    page = text_page(font_size=16, size=(360, 140))
    small = get_ocr_engine("tesseract", min_height=0)(page)
    upscaled = get_ocr_engine("tesseract", min_height=1200)(page)
    assert upscaled.words == words_of()
    assert len(upscaled.words) >= len([w for w in small.words if w in words_of()])
    # Boxes are in the page's own pixels, not the upscaled image's.
    assert all(0 <= x0 < x1 <= 360 and 0 <= y0 < y1 <= 140 for x0, y0, x1, y1 in upscaled.boxes)
    assert upscaled.line_ids == [0, 0, 0, 1, 1, 1, 2, 2]
    assert all(0 <= c <= 100 for c in upscaled.confidences)


@needs_tesseract
@pytest.mark.parametrize("preprocess", ["gray", "threshold"])
def test_tesseract_preprocessing(preprocess):
    page = text_page()
    result = get_ocr_engine("tesseract", preprocess=preprocess)(page)
    assert result.words == words_of()


def test_tesseract_falls_back_to_other_page_segmentation(monkeypatch):
    """A page where automatic layout analysis (psm 3) finds nothing is read again with psm 6."""
    tried = []

    def fake_read(self, image, config):
        tried.append(config)
        if "--psm 6" in config:
            return OcrResult(["Total"], [[10, 10, 60, 30]], [95.0], [0])
        return OcrResult()

    monkeypatch.setattr(ocr.TesseractEngine, "_read", fake_read)
    result = ocr.TesseractEngine(min_height=0)(Image.new("RGB", (100, 50), "white"))
    assert tried == ["--psm 3", "--psm 6"] and result.words == ["Total"]


def test_min_confidence_drops_words_and_renumbers_lines():
    engine = FixedEngine(words=["a", "b", "c"], boxes=[[0, 0, 1, 1]] * 3, line_ids=[0, 1, 2], min_confidence=95)
    engine.read = lambda page: OcrResult(["a", "b", "c"], [[0, 0, 1, 1]] * 3, [99.0, 40.0, 96.0], [0, 1, 2])
    result = engine(Image.new("RGB", (4, 4)))
    assert result.words == ["a", "c"] and result.line_ids == [0, 1]


def test_tesseract_missing_binary_is_a_clear_error(monkeypatch):
    import pytesseract

    def missing(*args, **kwargs):
        raise pytesseract.TesseractNotFoundError()

    monkeypatch.setattr(pytesseract, "image_to_data", missing)
    with pytest.raises(OcrError, match="apt-get install tesseract-ocr"):
        get_ocr_engine("tesseract")(Image.new("RGB", (10, 10)))


# ---------------------------------------------------------------------------------------------- RapidOCR
def test_rapidocr_reads_words_offline():
    """RapidOCR's models ship in its wheel: word boxes, line ids, 0-100 confidences with no network."""
    pytest.importorskip("rapidocr", reason="rapidocr is not installed (pip install rapidocr onnxruntime)")
    result = get_ocr_engine("rapidocr")(text_page())
    assert result.words == words_of()
    assert result.line_ids == [0, 0, 0, 1, 1, 1, 2, 2]
    assert all(0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 260 for x0, y0, x1, y1 in result.boxes)
    assert all(50 < c <= 100 for c in result.confidences)
    # Word boxes, not line boxes: the words of a line lie left to right without overlapping.
    first_line = result.boxes[:3]
    assert first_line[0][2] <= first_line[1][0] and first_line[1][2] <= first_line[2][0]


def test_missing_engine_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # import rapidocr -> ImportError
    with pytest.raises(OcrError, match="pip install rapidocr onnxruntime"):
        ocr.RapidOcrEngine()(Image.new("RGB", (10, 10)))


def test_unknown_engine_and_bad_options():
    with pytest.raises(ValueError, match="unknown OCR engine 'nope'; available: .*rapidocr.*tesseract"):
        get_ocr_engine("nope")
    with pytest.raises(ValueError, match="preprocess must be"):
        get_ocr_engine("tesseract", preprocess="sharpen")
    with pytest.raises(ValueError, match="OCR engine 'rapidocr'.*psm"):
        get_ocr_engine("rapidocr", psm=6)


def test_a_user_engine_is_one_registered_class():
    register_ocr_engine(FixedEngine)
    engine = get_ocr_engine("fixed-test-engine", words=["Hello"], boxes=[[1, 2, 3, 4]], line_ids=[0])
    assert engine is get_ocr_engine("fixed-test-engine", words=["Hello"], boxes=[[1, 2, 3, 4]], line_ids=[0])
    assert engine(Image.new("RGB", (10, 10))).words == ["Hello"]


# -------------------------------------------------------------------------------------------- label transfer
def test_transfer_labels_split_merged_and_missed_words():
    gold_words = ["Invoice", "No:", "INV-0042", "Total:", "$12.00", "Acme", "Corp"]
    gold_boxes = [[0, 0, 50, 10], [55, 0, 70, 10], [75, 0, 140, 10], [0, 20, 40, 30], [42, 20, 90, 30],
                  [0, 40, 30, 50], [35, 40, 70, 50]]
    gold_labels = ["O", "O", "B-invoice_number", "O", "B-total", "B-vendor", "I-vendor"]
    # OCR splits the invoice number, merges "Total:$12.00", misses "Acme".
    ocr_words = ["Invoice", "No:", "INV-", "0042", "Total:$12.00", "Corp"]
    ocr_boxes = [[0, 0, 50, 10], [55, 0, 70, 10], [75, 0, 100, 10], [102, 0, 140, 10], [0, 20, 90, 30],
                 [35, 40, 70, 50]]
    labels, stats = transfer_labels(gold_words, gold_boxes, gold_labels, ocr_words, ocr_boxes)
    assert labels == ["O", "O", "B-invoice_number", "I-invoice_number", "B-total", "B-vendor"]
    assert stats.to_dict() == {
        "invoice_number": {"entities": 1, "exact": 1, "partial": 0, "lost": 0},
        "total": {"entities": 1, "exact": 0, "partial": 1, "lost": 0},
        "vendor": {"entities": 1, "exact": 0, "partial": 1, "lost": 0},
    }
    assert {"label": "vendor", "gold": "Acme Corp", "ocr": "Corp", "kind": "partial"} in stats.lost_entities


def test_transfer_labels_reading_order_and_lost_entities():
    """OCR reads a two-line entity with another column in between: each run starts again with B-; an entity
    with no OCR word is counted lost."""
    gold_words = ["Blue", "River", "Ltd", "Due:", "2024-01-31"]
    gold_boxes = [[0, 0, 30, 10], [35, 0, 70, 10], [0, 15, 20, 25], [200, 0, 230, 10], [200, 15, 260, 25]]
    gold_labels = ["B-vendor", "I-vendor", "I-vendor", "O", "B-due_date"]
    ocr_words = ["Blue", "River", "Due:", "Ltd"]
    ocr_boxes = [[0, 0, 30, 10], [35, 0, 70, 10], [200, 0, 230, 10], [0, 15, 20, 25]]
    labels, stats = transfer_labels(gold_words, gold_boxes, gold_labels, ocr_words, ocr_boxes)
    assert labels == ["B-vendor", "I-vendor", "O", "B-vendor"]
    assert stats.exact == {"vendor": 1} and stats.lost == {"due_date": 1}


def test_ocr_quality_counts():
    reference = ["Total", "125.50", "Acme"]
    reference_boxes = [[0, 0, 40, 10], [50, 0, 90, 10], [0, 20, 40, 30]]
    counts = ocr_quality(reference, reference_boxes, ["Total", "125,50", "Extra"],
                         [[0, 0, 40, 10], [50, 0, 90, 10], [100, 40, 120, 50]])
    assert (counts.found, counts.correct, counts.reference_words, counts.ocr_words) == (1, 1, 3, 3)
    assert counts.recall == pytest.approx(1 / 3) and counts.precision == pytest.approx(1 / 3)
    assert counts.char_errors == 1 and counts.chars == len("Total") + len("125.50")


def test_rapidocr_blank_page_has_no_words():
    pytest.importorskip("rapidocr", reason="rapidocr is not installed (pip install rapidocr onnxruntime)")
    result = get_ocr_engine("rapidocr")(Image.new("RGB", (300, 200), "white"))
    assert result.words == [] and result.boxes == [] and result.line_ids == []


@needs_tesseract
def test_tesseract_thread_limit_does_not_leak(monkeypatch):
    """OMP_THREAD_LIMIT=1 is set for tesseract's subprocess only: left in the environment it would reach torch and
    other child processes (measured: a LayoutLMv3 training subprocess then gets corrupt gradients in its
    patch-embedding convolution, with norms from 19 to inf where two threads give 19 to 2)."""
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    get_ocr_engine("tesseract", min_height=0)(text_page())
    import os

    assert "OMP_THREAD_LIMIT" not in os.environ
    monkeypatch.setenv("OMP_THREAD_LIMIT", "3")
    get_ocr_engine("tesseract", min_height=0)(text_page())
    assert os.environ["OMP_THREAD_LIMIT"] == "3"


# ----------------------------------------------------------------------------------- RapidOCR presets and speed
def test_rapidocr_presets_and_speed_settings():
    """A preset is a set of RapidOCR params, given params win key by key; the thread count goes to ONNX Runtime;
    the settings a dataset records name the preset and params but not the speed settings (same words)."""
    engine = ocr.RapidOcrEngine(preset="fast", params={"Rec.rec_batch_num": 8}, threads=1, workers=2)
    assert engine.rapidocr_params() == {"Global.use_cls": False, "Det.limit_type": "max", "Det.limit_side_len": 960,
                                        "Rec.rec_img_shape": [3, 48, 48], "Rec.rec_batch_num": 8,
                                        "EngineConfig.onnxruntime.intra_op_num_threads": 1}
    assert engine.settings() == {"engine": "rapidocr", "lang": "eng", "min_confidence": 0.0, "preset": "fast",
                                 "params": {"Rec.rec_batch_num": 8}}
    assert ocr.RapidOcrEngine(preset="accurate").rapidocr_params() == {}  # RapidOCR's own configuration
    assert ocr.RapidOcrEngine().rapidocr_params() == ocr.RAPIDOCR_PRESETS[ocr.default_rapidocr_preset()]
    with pytest.raises(ValueError, match="unknown RapidOCR preset 'quick'; available: accurate, fast, fast-openvino, "
                                         "fastest-openvino"):
        get_ocr_engine("rapidocr", preset="quick")
    with pytest.raises(ValueError, match="at least 1"):
        get_ocr_engine("rapidocr", workers=0)


def test_fast_openvino_preset_runs_detection_on_openvino_from_the_wheels_onnx_file():
    """"fast-openvino" is "fast" with detection on OpenVINO: the threads go to both backends, the backend stays a
    string in what a dataset records, RapidOCR gets its enum and the ONNX file ONNX Runtime would run (offline)."""
    pytest.importorskip("rapidocr", reason="rapidocr is not installed (pip install rapidocr onnxruntime)")
    from rapidocr import EngineType

    engine = ocr.RapidOcrEngine(preset="fast-openvino", threads=1)
    params = engine.rapidocr_params()
    assert params == {**ocr.RAPIDOCR_PRESETS["fast"], "Det.engine_type": "openvino",
                      "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                      "EngineConfig.openvino.inference_num_threads": 1}
    without_openvino = ocr.RapidOcrEngine(preset="fast", threads=1).rapidocr_params()
    assert "EngineConfig.openvino.inference_num_threads" not in without_openvino
    given = ocr.with_backends(params)
    if given["Det.engine_type"] == EngineType.OPENVINO:  # openvino installed
        assert given["Det.model_path"].endswith(".onnx") and "Rec.model_path" not in given
        from pathlib import Path

        assert Path(given["Det.model_path"]).is_file()
    assert "Rec.engine_type" not in given
    with pytest.raises(ValueError, match="'tensorflow': not a RapidOCR backend"):
        ocr.with_backends({"Rec.engine_type": "tensorflow"})


def test_fast_openvino_without_openvino_falls_back_to_onnxruntime_with_a_warning(monkeypatch, caplog):
    pytest.importorskip("rapidocr", reason="rapidocr is not installed (pip install rapidocr onnxruntime)")
    import importlib.util

    from rapidocr import EngineType

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "openvino" else find_spec(name, *args))
    given = ocr.with_backends(ocr.RapidOcrEngine(preset="fast-openvino").rapidocr_params())
    assert given["Det.engine_type"] == EngineType.ONNXRUNTIME and "Det.model_path" not in given
    assert "pip install openvino" in caplog.text and "runs on ONNX Runtime instead" in caplog.text
    given = ocr.with_backends(ocr.RapidOcrEngine(preset="fastest-openvino").rapidocr_params())
    assert given["Det.engine_type"] == given["Rec.engine_type"] == EngineType.ONNXRUNTIME


def test_fast_openvino_reads_the_words_of_fast():
    """Detection in bfloat16 (where the CPU has it) finds the same lines on a clean page."""
    pytest.importorskip("rapidocr", reason="rapidocr is not installed (pip install rapidocr onnxruntime)")
    pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")
    page = text_page()
    openvino_reader = get_ocr_engine("rapidocr", preset="fast-openvino", threads=1)
    result = openvino_reader(page)
    assert result.words == get_ocr_engine("rapidocr", preset="fast", threads=1)(page).words == words_of()
    assert type(openvino_reader._idle[0].text_det.session).__name__ == "OpenVINOInferSession"


def test_padded_width_recognizer_pads_to_a_multiple_and_cuts_the_columns_back():
    """The recogniser sees widths in steps of 64 px (zeros on the right); RapidOCR's decoder gets the columns of the
    line's own width, (width + 3) // 8 as PP-OCR's recognisers give them."""
    import numpy as np

    seen = []

    def session(batch):  # one column per 8 px, numbered, as a PP-OCR recogniser's [batch, columns, classes]
        seen.append(batch.copy())
        columns = (batch.shape[3] + 3) // 8
        return np.arange(columns, dtype=np.float32)[None, :, None].repeat(batch.shape[0], 0)

    padded = ocr.PaddedWidthRecognizer(session, multiple=64)
    line = np.ones((2, 3, 48, 100), np.float32)
    output = padded(line)
    assert seen[-1].shape == (2, 3, 48, 128) and seen[-1][..., 100:].sum() == 0 and seen[-1][..., :100].all()
    assert output.shape == (2, 12, 1) and output[0, :, 0].tolist() == list(range(12))  # 100 px: 12 columns
    assert padded(np.ones((1, 3, 48, 128), np.float32)).shape == (1, 16, 1) and seen[-1].shape[3] == 128
    with pytest.raises(OcrError, match="not one per 8 px"):
        ocr.PaddedWidthRecognizer(lambda batch: np.zeros((1, 5, 1), np.float32))(line[:1])


def test_fastest_openvino_reads_the_words_of_fast():
    """Both models on OpenVINO, recognition padded to 64 px steps: the same words on a clean page, boxes within a
    few pixels (detection in bfloat16 draws a line's box 1-6 px off, as in "fast-openvino")."""
    pytest.importorskip("rapidocr", reason="rapidocr is not installed (pip install rapidocr onnxruntime)")
    pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")
    page = text_page()
    engine = get_ocr_engine("rapidocr", preset="fastest-openvino", threads=1)
    result, expected = engine(page), get_ocr_engine("rapidocr", preset="fast", threads=1)(page)
    assert result.words == expected.words == words_of()
    for box, expected_box in zip(result.boxes, expected.boxes):
        assert max(abs(a - b) for a, b in zip(box, expected_box)) <= 8, (box, expected_box)
    assert isinstance(engine._idle[0].text_rec.session, ocr.PaddedWidthRecognizer)


def test_rapidocr_reads_pages_in_parallel_like_one_at_a_time():
    """Two workers (one RapidOCR instance each, one ONNX Runtime thread each) read the same words as one."""
    pytest.importorskip("rapidocr", reason="rapidocr is not installed (pip install rapidocr onnxruntime)")
    from concurrent.futures import ThreadPoolExecutor

    pages = [text_page(), text_page(LINES[::-1])]
    single = [get_ocr_engine("rapidocr", preset="fast")(page) for page in pages]
    parallel_engine = get_ocr_engine("rapidocr", preset="fast", workers=2, threads=1)
    with ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(parallel_engine, pages * 2))
    assert len(parallel_engine._idle) <= 2
    for result, expected in zip(parallel, single * 2):
        assert result.words == expected.words and result.line_ids == expected.line_ids
    assert single[0].words == words_of()


def test_default_rapidocr_preset_follows_openvinos_precision_on_this_cpu(monkeypatch):
    """No preset named: "fastest-openvino" where OpenVINO is installed and runs in bfloat16 on the CPU, else "fast";
    the engine records the preset it resolved to."""
    import importlib.util
    import sys
    import types

    def resolve(openvino_module):
        ocr.default_rapidocr_preset.cache_clear()
        with monkeypatch.context() as patch:
            real_find_spec = importlib.util.find_spec
            patch.setattr(importlib.util, "find_spec",
                          lambda name, *a: (object() if openvino_module else None) if name == "openvino"
                          else real_find_spec(name, *a))
            patch.setitem(sys.modules, "openvino", openvino_module)
            try:
                return ocr.default_rapidocr_preset(), ocr.RapidOcrEngine().settings()["preset"]
            finally:
                ocr.default_rapidocr_preset.cache_clear()

    def fake_openvino(precision: str):
        core = types.SimpleNamespace(get_property=lambda device, name: precision)
        return types.SimpleNamespace(Core=lambda: core)

    assert resolve(None) == ("fast", "fast")
    assert resolve(fake_openvino("<Type: 'bfloat16'>")) == ("fastest-openvino", "fastest-openvino")
    assert resolve(fake_openvino("<Type: 'float32'>")) == ("fast", "fast")
    assert ocr.RapidOcrEngine(preset="accurate").settings()["preset"] == "accurate"
