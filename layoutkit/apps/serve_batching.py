"""Forward batches filled across concurrent callers, for the HTTP service.

Each request thread preprocesses its page (OCR, resize, windows) on its own and hands the page's windows to one
`WindowBatcher`; the batcher's thread waits up to `max_wait_ms` after the first page arrives for more, up to
`max_batch_size` windows, runs them through the model in one forward pass and gives every page its own rows
back. Postprocessing (merging windows into words, entities, fields) runs again in the request's thread.

`BatchedTokenClassificationPipeline` is the checkpoint's pipeline (`LayoutTokenClassificationPipeline`) whose
window forward goes through such a batcher, so a page through the service runs the same preprocessing and
postprocessing code as predict.py.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Iterator

import torch

from ..pipelines.pipeline_inputs import WindowedLayoutPipeline
from ..pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline

# run_windows(windows, batch_size, mixed_precision) yields (positions, logits) per forward batch, as
# `WindowedLayoutPipeline._run_windows` does: the model backend the batcher drives.
RunWindows = Callable[[list, int, str], Iterator[tuple[dict, torch.Tensor]]]


class WindowBatcher:
    """One thread that runs the windows of pages submitted from many threads in shared forward batches."""

    def __init__(self, run_windows: RunWindows, max_batch_size: int = 16, max_wait_ms: float = 5.0,
                 mixed_precision: str = "no"):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be at least 1 and max_wait_ms not negative")
        self.run_windows = run_windows
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.mixed_precision = mixed_precision
        # forward_seconds: time spent in forward passes; over the wall time, how busy the model is (near 1: the
        # forward pass is the bottleneck and larger batches pay; near 0: OCR and Python dominate).
        self.stats = {"forward_batches": 0, "windows": 0, "pages": 0, "largest_batch_pages": 0, "forward_seconds": 0.0}
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="forward-batcher", daemon=True)
        self._thread.start()

    def submit(self, windows: list[dict]) -> Future:
        """A future of the page's (positions, logits) batches, rows in the order of `windows`."""
        future: Future = Future()
        if not windows:
            future.set_result([])
        else:
            self._queue.put((windows, future))
        return future

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pages, count = [first], len(first[0])
            deadline = time.monotonic() + self.max_wait
            stop = False
            while count < self.max_batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                pages.append(item)
                count += len(item[0])
            self._run(pages)
            if stop:
                return

    def _run(self, pages: list[tuple[list[dict], Future]]) -> None:
        windows = [window for page_windows, _ in pages for window in page_windows]
        owner = [index for index, (page_windows, _) in enumerate(pages) for _ in page_windows]
        results: list[list] = [[] for _ in pages]
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                start = 0
                for positions, logits in self.run_windows(windows, self.max_batch_size, self.mixed_precision):
                    rows = len(logits)
                    # A page's windows are consecutive rows: give each page its slice of this batch.
                    for index in sorted(set(owner[start : start + rows])):
                        first = owner.index(index, start, start + rows) - start
                        last = first + owner[start : start + rows].count(index)
                        results[index].append(({key: value[first:last] for key, value in positions.items()},
                                               logits[first:last]))
                    start += rows
                    self.stats["forward_batches"] += 1
        except Exception as error:  # the pages of this batch fail; the batcher keeps serving the next ones
            for _, future in pages:
                future.set_exception(error)
            return
        self.stats["forward_seconds"] += time.perf_counter() - started
        self.stats["windows"] += len(windows)
        self.stats["pages"] += len(pages)
        self.stats["largest_batch_pages"] = max(self.stats["largest_batch_pages"], len(pages))
        for (_, future), result in zip(pages, results):
            future.set_result(result)


class BatchedTokenClassificationPipeline(LayoutTokenClassificationPipeline):
    """The token-classification pipeline for concurrent callers: window forward passes go through a
    `WindowBatcher` (see `attach_batcher`), tokenization is serialised (a fast tokenizer is not safe to call
    from several threads at once: it changes its truncation settings per call)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._encode_lock = threading.Lock()
        self.batcher: WindowBatcher | None = None

    def model_run_windows(self) -> RunWindows:
        """The PyTorch forward over windows: what the batcher runs unless another backend is given."""
        return functools.partial(WindowedLayoutPipeline._run_windows, self)

    def attach_batcher(self, batcher: WindowBatcher) -> None:
        self.batcher = batcher

    def _windows(self, *args, **kwargs):
        with self._encode_lock:
            return super()._windows(*args, **kwargs)

    def _run_windows(self, windows, window_batch_size, mixed_precision):
        if self.batcher is None:
            return super()._run_windows(windows, window_batch_size, mixed_precision)
        return iter(self.batcher.submit(windows).result())
