"""OCR ahead of the model: pages are read and OCR'd in worker threads while the model runs on earlier pages.

    for source, pages, error in read_ahead(sources, read_pages, engine, workers=2):
        ...  # pages: [(page, future ReadWords or None)], in input order; error: the DocumentError reading the file

OCR is ~98% of a page's time on a CPU (benchmarks/page_latency.py), so predict.py over a folder or a multi-page PDF
keeps `workers` pages in OCR at once (the engine's own `workers`, e.g. RapidOCR instances) while the main thread
runs the model on the pages already read. At most `depth` decoded pages wait ahead of the model (memory stays
bounded on a long PDF). Results come back in input order.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .documents import DocumentError
from ..pipelines.ocr import OcrEngine, OcrResult


class ReadWords(OcrEngine):
    """An "engine" that returns the words the read-ahead threads already read (and filtered) for the page it is
    given, so the pipeline runs exactly as with OCR inside it (confidences, line ids, segment boxes)."""

    name = "read-ahead"

    def __init__(self, result: OcrResult, name: str = "read-ahead"):
        super().__init__()
        self.result = result
        self.name = name  # the engine that read the words: the page's words_source says "ocr:<name>"

    def read(self, page) -> OcrResult:
        return self.result


def parallel_ocr_options(engine: OcrEngine, workers: int | None = None, processes: int = 1) -> tuple[dict, int]:
    """Engine options that let `workers` pages (default: one per core, at most 2) be OCR'd at once, and that
    number. RapidOCR gets `workers` instances of cores / (workers x processes) ONNX Runtime threads each, so OCR
    threads never outnumber the cores (they spin while waiting for work, and more of them than cores slow every
    page: docs/performance.md); other engines need nothing (Tesseract runs a single-threaded subprocess per
    page)."""
    cores = max(1, (os.cpu_count() or 1) // max(1, processes))
    workers = workers or min(2, cores)
    if engine.name != "rapidocr":
        return {}, workers
    return {"workers": workers, "threads": max(1, cores // workers)}, workers


_END = object()


def read_ahead(sources: Iterable, read_pages: Callable[[Any], Iterable], engine: OcrEngine, workers: int = 1,
               depth: int | None = None) -> Iterator[tuple[Any, list[tuple[Any, Future | None]], Exception | None]]:
    """(source, [(page, future ReadWords)], error) per source, in order. `read_pages(source)` yields a document's
    pages: images, or PDF page inputs (dicts with the page's "image"; with "words" when the text layer gave them,
    and then no OCR: their future is None). A DocumentError reading the file is reported as `error`, with the pages
    read before it. One thread decodes pages in order; `workers` threads run `engine` on them; at most `depth`
    (default 2 x workers) pages wait decoded ahead of the consumer."""
    depth = depth or 2 * workers
    pending: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="ocr")

    def read(image) -> ReadWords:
        return ReadWords(engine(image), engine.name)

    def ocr_ahead(page) -> Future | None:
        if isinstance(page, dict):  # a PDF page: read by OCR only when its text layer was not taken
            return None if page.get("words") is not None else pool.submit(read, page["image"])
        return pool.submit(read, page)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            for source in sources:
                error = None
                try:
                    for page in read_pages(source):
                        if not put(("page", source, (page, ocr_ahead(page)))):
                            return
                except DocumentError as caught:
                    error = caught
                except Exception as caught:  # an unexpected file problem must not stop the other documents
                    error = DocumentError(f"{source}: {type(caught).__name__}: {caught}")
                if not put(("end", source, error)):
                    return
        finally:
            put(_END)

    decoder = threading.Thread(target=decode, name="decode-pages", daemon=True)
    decoder.start()
    finished = False
    try:
        pages: list = []
        while True:
            item = pending.get()
            if item is _END:
                finished = True
                return
            kind, source, value = item
            if kind == "page":
                pages.append(value)
            else:
                yield source, pages, value
                pages = []
    finally:
        # Every page handed out keeps its OCR; a consumer that stops early (an exception, a closed generator)
        # cancels the pages nobody will ask for.
        stop.set()
        pool.shutdown(wait=False, cancel_futures=not finished)
