"""Reading pages ahead of the model (layoutkit.apps.read_ahead): order, errors per document, bounded look-ahead."""

import threading
import time

import pytest
from PIL import Image

from layoutkit.apps.documents import DocumentError
from layoutkit.pipelines.ocr import OcrEngine, OcrResult
from layoutkit.apps.read_ahead import ReadWords, read_ahead


class SlowEngine(OcrEngine):
    """'Reads' a page's color as its word, slowly and slower for early pages, so results finish out of order."""

    name = "slow-test-engine"

    def __init__(self):
        super().__init__()
        self.running = self.most_running = 0
        self.lock = threading.Lock()

    def read(self, page):
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(0.05 if page.getpixel((0, 0))[0] % 2 else 0.01)
        with self.lock:
            self.running -= 1
        return OcrResult([str(page.getpixel((0, 0))[0])], [[0, 0, 1, 1]], [99.0], [0])


def pages_of(source):
    if source == "bad":
        raise DocumentError("bad: not a readable image")
    if source == "half":
        yield Image.new("RGB", (4, 4), (90, 0, 0))
        raise DocumentError("half: page 2 is corrupt")
    for index in range(source):
        yield Image.new("RGB", (4, 4), (10 * source + index, 0, 0))


def test_documents_come_back_in_order_with_their_errors():
    engine = SlowEngine()
    decoded = []

    def read_pages(source):
        for page in pages_of(source):
            decoded.append(page)
            yield page

    results = list(read_ahead([3, "bad", 1, "half", 2], read_pages, engine, workers=2, depth=3))
    assert [source for source, _, _ in results] == [3, "bad", 1, "half", 2]
    words = {source: [future.result().result.words[0] for _, future in pages] for source, pages, _ in results}
    assert words == {3: ["30", "31", "32"], "bad": [], 1: ["10"], "half": ["90"], 2: ["20", "21"]}
    errors = {source: str(error) for source, _, error in results if error is not None}
    assert errors == {"bad": "bad: not a readable image", "half": "half: page 2 is corrupt"}
    assert engine.most_running == 2  # two pages in OCR at once, never more


def test_look_ahead_is_bounded():
    """A consumer that has taken nothing yet holds at most `depth` decoded pages (plus the one being queued)."""
    engine, decoded = SlowEngine(), []

    def read_pages(source):
        for page in pages_of(source):
            decoded.append(page)
            yield page

    documents = read_ahead([50], read_pages, engine, workers=1, depth=4)
    time.sleep(0.5)
    assert len(decoded) <= 5
    ((_, pages, error),) = list(documents)
    assert len(pages) == 50 and error is None


def test_read_words_hands_the_pipeline_what_was_read():
    result = OcrResult(["Total", "12.00"], [[0, 0, 5, 5], [6, 0, 9, 5]], [91.0, 88.5], [0, 0])
    assert ReadWords(result)(Image.new("RGB", (10, 10))) == result


@pytest.mark.parametrize("workers", [1, 3])
def test_an_unexpected_reader_error_is_the_documents_error(workers):
    def read_pages(source):
        if source == "boom":
            raise OSError("disk gone")
        yield Image.new("RGB", (4, 4), (1, 0, 0))

    results = list(read_ahead(["a", "boom", "b"], read_pages, SlowEngine(), workers=workers))
    assert [(s, len(p), type(e).__name__ if e else None) for s, p, e in results] == [
        ("a", 1, None), ("boom", 0, "DocumentError"), ("b", 1, None)]
    assert "boom: OSError: disk gone" in str(results[1][2])


def test_predict_ocr_speed_flags(tmp_path):
    from layoutkit.apps import predict

    base = ["--model_name_or_path", "m", "--input", "x.png", "--output_dir", str(tmp_path)]
    settings, args = predict.parse_args([*base, "--ocr_preset", "accurate", "--ocr_workers", "3"])
    assert settings.ocr_options == {"preset": "accurate"} and args.ocr_workers == 3
    assert predict.parse_args(base)[1].ocr_workers is None  # min(2, cores) pages at once
    for wrong in (["--ocr_preset", "fast", "--ocr_engine", "tesseract"], ["--ocr_workers", "-1"]):
        with pytest.raises(SystemExit):
            predict.parse_args([*base, *wrong])


def test_parallel_ocr_options_never_outnumber_the_cores(monkeypatch):
    from layoutkit.apps import read_ahead as module
    from layoutkit.pipelines.ocr import get_ocr_engine

    monkeypatch.setattr(module.os, "cpu_count", lambda: 8)
    rapidocr = get_ocr_engine("rapidocr")
    assert module.parallel_ocr_options(rapidocr) == ({"workers": 2, "threads": 4}, 2)
    assert module.parallel_ocr_options(rapidocr, 4, processes=2) == ({"workers": 4, "threads": 1}, 4)
    assert module.parallel_ocr_options(get_ocr_engine("tesseract"), 3) == ({}, 3)
