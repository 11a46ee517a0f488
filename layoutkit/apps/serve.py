"""HTTP service for a token-classification checkpoint: the JSON predict.py writes, for documents sent over HTTP.

    python -m layoutkit.apps.serve --model runs/invoices --host 127.0.0.1 --port 8000

Endpoints (see docs/serving.md):
- `POST /v1/extract`: a multipart upload (field `file`: an image or a PDF), a raw image/PDF body, or JSON words and
  pixel boxes (`{"words": [...], "boxes": [...], "image": "<base64>"}` or `{"pages": [...]}`); returns predict.py's
  JSON for that document. Errors are JSON `{"error": {"status", "message", ...}}`: 413 above a limit (upload size,
  pixels, pages; the message names the option that raises it), 415 for a file that is neither an image nor a PDF,
  422 for a corrupt or invalid document, 500 for a failure of the server itself, 503 for a document not finished
  within `--shutdown_timeout` after SIGTERM. Every answer has `warnings` (the dataset builder's messages).
  `?draw=page` (or `?draw=panel`) adds `drawings`, each page drawn as `--draw` does (a PNG data URL), and `colours`,
  each field type's colour.
- `GET /health`, `GET /v1/model` (labels, model type, preprocessing, limits), `GET /` (an upload page).

How a request runs: the event loop reads the body and runs the cheap checks (layoutkit/apps/request_checks.py: file kind,
page count, header sizes, the words JSON), so a bad request never waits behind OCR; decoding (from memory: no upload
is written to disk), OCR, tokenization and postprocessing run in a thread pool of `--workers` threads, and every
page's windows go to one `WindowBatcher` thread that fills a forward batch from concurrent requests (up to
`--max_batch_size` windows, waiting at most `--max_wait_ms` after the first). What libraries write goes to the
process's private temporary folder (layoutkit/apps/process_tempdir.py). SIGTERM drains the requests in flight and exits 0.
Requires the `serve` extra: `pip install 'layoutkit[serve]'` (FastAPI, uvicorn, python-multipart).
"""

import asyncio
import base64
import contextlib
import copy
import functools
import io
import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from PIL import Image

from ..flags import flag
from ..pipelines.ocr import DEFAULT_OCR_ENGINE
from .document_prediction import predict_document
from .documents import DocumentError, LimitError, image_pages, pdf_page_inputs
from .process_tempdir import ProcessTempDir
from .read_ahead import parallel_ocr_options
from .request_checks import (
    CheckedUpload,
    CheckedWords,
    Limits,
    UnsupportedFile,
    check_upload,
    check_words_request,
    looks_like_pdf,
)
from .settings import InferenceSettings, parse_inference_args

if TYPE_CHECKING:
    from .serve_batching import BatchedTokenClassificationPipeline

logger = logging.getLogger("layoutkit.apps.serve")
PAGE_HTML = Path(__file__).with_name("static") / "serve.html"
# The cheap checks of a body up to this size run on the event loop itself (well under a millisecond per 100 KB:
# no thread hand-off, whose wait for the GIL behind busy workers would cost more); larger ones (parsing megabytes
# of JSON) and PDFs (PDFium's lock may be held by a worker rendering a page) in a pool of CHECK_THREADS of their
# own, never behind OCR.
INLINE_CHECK_BYTES = 1_000_000
CHECK_THREADS = 2


class ApiError(Exception):
    """An error answered as JSON with `status`; `limit` and `option` name the limit hit and how to raise it."""

    def __init__(self, status: int, message: str, limit: str | None = None, option: str | None = None):
        super().__init__(message)
        self.status, self.message, self.limit, self.option = status, message, limit, option

    def body(self) -> dict:
        error = {"status": self.status, "message": self.message}
        if self.limit:
            error.update(limit=self.limit, option=self.option)
        return {"error": error}


@dataclass
class ServiceArguments:
    _argument_group_name = "the service"

    host: str = flag("address to listen on (default: loopback only)", "127.0.0.1")
    port: int = flag("port to listen on", 8000)
    max_batch_size: int = flag("windows per forward pass, across requests", 16)
    max_wait_ms: float = flag("how long the first page of a batch waits for others to join it", 5.0)
    workers: int = flag("threads that decode, OCR and postprocess documents (requests in flight at once)", 4)
    max_upload_mb: float = flag("largest request body, in MB", 20.0)
    max_pages: int = flag("most pages per document", 20)
    shutdown_timeout: float = flag("on SIGTERM/SIGINT, seconds the requests in flight may take to finish (new "
                                   "connections are refused at once); then the process exits 0", 30.0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = flag("log level", "info")

    def __post_init__(self):
        for name in ("max_batch_size", "workers", "max_pages"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be positive")
        if self.max_upload_mb <= 0 or self.max_wait_ms < 0 or self.shutdown_timeout < 0:
            raise ValueError("--max_upload_mb must be positive, --max_wait_ms and --shutdown_timeout not negative")


def parse_args(argv=None) -> tuple[InferenceSettings, ServiceArguments]:
    return parse_inference_args(ServiceArguments, argv, __doc__)


def build_extractor(settings: InferenceSettings, args: ServiceArguments) -> "BatchedTokenClassificationPipeline":
    """The checkpoint's pipeline with its window forward passes batched across requests.

    The model backend is the `run_windows` the batcher drives (`WindowedLayoutPipeline._run_windows` contract:
    windows in, (positions, logits) batches out); another backend (ONNX Runtime) plugs in by passing its own."""
    import torch

    from .pipeline_loader import load_predictor
    from .serve_batching import BatchedTokenClassificationPipeline, WindowBatcher

    device = ("cpu" if settings.backend == "onnx"
              else settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    extractor = load_predictor(settings.model_name_or_path, backend=settings.backend, task="token-classification",
                               device=device, pipeline_class=BatchedTokenClassificationPipeline)
    extractor.attach_batcher(WindowBatcher(extractor.model_run_windows(), args.max_batch_size, args.max_wait_ms,
                                           settings.mixed_precision))
    return extractor


class ExtractionService:
    """The documents side of the service: turns an upload or a words payload into predict.py's JSON.

    `check_upload` and `check_words` are the cheap checks (layoutkit/apps/request_checks.py), run on the event loop
    (or, for a large body, in a small pool of their own) so that a bad request is answered at once however many
    documents wait for a worker;
    `extract_file` and `extract_words` block (decoding, OCR, waiting for the forward batch) and run in the worker
    pool. Neither runs on the event loop. Uploads stay in memory: nothing is written to disk."""

    def __init__(self, extractor, settings: InferenceSettings, args: ServiceArguments):
        self.extractor = extractor
        self.settings, self.args = copy.copy(settings), args
        # Requests in flight OCR their pages at once (one RapidOCR instance each, cores / instances threads each)
        # instead of queueing for one engine.
        speed, _ = parallel_ocr_options(extractor.ocr_engine(settings.ocr_overrides()),
                                        min(args.workers, os.cpu_count() or 1))
        self.settings.ocr_options = {**settings.ocr_options, **speed}
        self.max_upload_bytes = int(args.max_upload_mb * 1_000_000)
        self.limits = Limits(args.max_pages, settings.max_image_pixels, settings.dpi)
        self.pool = ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="extract")
        self.checks = ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="check")

    def close(self, grace: float = 2.0) -> bool:
        """Drop the jobs still queued (the server has stopped: their clients are gone) and stop the batcher once the
        running ones end, waiting at most `grace` seconds. Returns whether some are still running (abandoned)."""
        self.checks.shutdown(wait=False, cancel_futures=True)
        stopper = threading.Thread(target=self.pool.shutdown, kwargs={"wait": True, "cancel_futures": True},
                                   daemon=True)
        stopper.start()
        stopper.join(timeout=grace)
        if self.extractor.batcher is not None:
            self.extractor.batcher.close()
        return stopper.is_alive()

    # ------------------------------------------------------------------------------------------- checks
    def check_upload(self, data: bytes, filename: str | None, content_type: str | None) -> CheckedUpload:
        return check_upload(data, filename, content_type, self.limits)

    def check_words(self, body: bytes) -> CheckedWords:
        family = self.extractor.family
        return check_words_request(body, family.model_type if family.image_input else None, self.limits)

    # ------------------------------------------------------------------------------------------- files
    def extract_file(self, upload: CheckedUpload, draw: str | None = None) -> dict:
        path = Path(upload.name)  # names the document in messages and `source`; nothing is read from disk
        if upload.is_pdf:
            pages = pdf_page_inputs(path, self.settings.dpi, self.settings.max_image_pixels, self.settings.pdf_text,
                                    upload.data)
        else:
            pages = image_pages(path, self.settings.max_image_pixels, upload.data)
        result, drawings = predict_document(self.extractor, path, pages, None, self.settings, self.args.max_batch_size,
                                            draw=draw)
        return self._with_drawings(result, drawings)

    # ------------------------------------------------------------------------------------------- words
    def extract_words(self, request: CheckedWords, draw: str | None = None) -> dict:
        images = (self._page_image(page, number) for number, page in enumerate(request.pages, start=1))
        result, drawings = predict_document(self.extractor, request.source, images, request.pages, self.settings,
                                            self.args.max_batch_size, draw=draw, words_source="request")
        result["warnings"][:0] = request.warnings
        return self._with_drawings(result, drawings)

    def _with_drawings(self, result: dict, drawings: list) -> dict:
        """`result` with each page's drawing as a PNG data URL and the field types' colours (`?draw=`)."""
        if not drawings:
            return result
        from ..pipelines.draw import colour_hex, label_colour

        urls = []
        for drawing in drawings:
            buffer = io.BytesIO()
            drawing.save(buffer, format="PNG")
            urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
        types = self.extractor.entity_types()
        return {**result, "drawings": urls, "colours": {name: colour_hex(label_colour(name, types)) for name in types}}

    def _page_image(self, page: dict, number: int) -> Image.Image:
        """The page image a words payload gives (base64, decoded by the checks), or for a model that reads no
        pixels a blank page of its `width` x `height` (the boxes' space; the checks made sure one is given)."""
        if page.get("image_data") is not None:
            name = Path(f"request: page {number}: image")
            return next(image_pages(name, self.settings.max_image_pixels, page["image_data"]))
        return Image.new("RGB", (page["width"], page["height"]), "white")

    # ------------------------------------------------------------------------------------------- model
    def model_info(self) -> dict:
        config = self.extractor.model.config
        labels = [config.id2label[i] for i in range(config.num_labels)]
        recorded_ocr = dict(self.extractor.recorded_ocr or {})
        return {
            "model": self.settings.model_name_or_path,
            "model_type": config.model_type,
            "labels": labels,
            "entity_types": sorted({label[2:] for label in labels if label[:2] in ("B-", "I-")}),
            "reads_page_image": bool(self.extractor.family.image_input),
            "preprocessing": {key: list(value) if isinstance(value, tuple) else value
                              for key, value in self.extractor.preprocessing.items()},
            "ocr": {"engine": self.settings.ocr_engine or recorded_ocr.pop("engine", DEFAULT_OCR_ENGINE),
                    "recorded_in_training": self.extractor.recorded_ocr, "lang": self.settings.ocr_lang,
                    "options": self.settings.ocr_options},
            "schema": self.settings.field_schema.to_dict() if self.settings.schema else None,
            "device": str(self.extractor.device),
            "batching": {"max_batch_size": self.args.max_batch_size, "max_wait_ms": self.args.max_wait_ms,
                         "workers": self.args.workers},
            "limits": {"max_upload_mb": self.args.max_upload_mb, "max_image_pixels": self.settings.max_image_pixels,
                       "max_pages": self.args.max_pages, "dpi": self.settings.dpi, "pdf_text": self.settings.pdf_text},
        }


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is larger than `limit` bytes (declared or streamed)."""
    too_large = ApiError(413, f"request body above the limit of {limit / 1e6:g} MB; start the server with a larger "
                              "--max_upload_mb", limit="max_upload_mb", option="--max_upload_mb")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: ExtractionService):
    """The FastAPI application over `service`. (This module has no `from __future__ import annotations`: FastAPI
    reads the endpoints' annotations, such as `Request`, at runtime.)"""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.datastructures import UploadFile
    from starlette.requests import Request as StarletteRequest

    app = FastAPI(title="layoutkit", description="Key-information extraction with a LayoutLM-family checkpoint")
    page_html = PAGE_HTML.read_text(encoding="utf-8")

    @app.exception_handler(ApiError)
    async def api_error(request, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status)

    async def run(pool, job):
        """`job` in `pool` (None: here, on the event loop); its document errors become 4xx answers, anything else
        a 500."""
        try:
            return job() if pool is None else await asyncio.get_running_loop().run_in_executor(pool, job)
        except ApiError:
            raise
        except UnsupportedFile as error:
            raise ApiError(415, str(error)) from None
        except LimitError as error:
            raise ApiError(413, str(error), limit=error.option.lstrip("-"), option=error.option) from None
        except DocumentError as error:
            raise ApiError(422, str(error)) from None
        except Exception as error:
            logger.exception("extraction failed")
            raise ApiError(500, f"the server failed on this document: {type(error).__name__}: {error}") from None

    @app.post("/v1/extract")
    async def extract(request: Request):
        # Everything that can refuse the request runs before it joins the worker queue (the body's size, then the
        # checks of request_checks.py), so a bad request is answered while OCR keeps the workers busy.
        draw = request.query_params.get("draw") or None
        if draw not in (None, "page", "panel"):
            raise ApiError(422, f"draw={draw!r}: use draw=page (the pages drawn, with a legend) or draw=panel")
        body = await read_body(request, service.max_upload_bytes)

        def checks_pool(data: bytes):
            inline = len(data) <= INLINE_CHECK_BYTES and not looks_like_pdf(data)
            return None if inline else service.checks

        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            async def replay():
                return {"type": "http.request", "body": body, "more_body": False}

            try:
                form = await StarletteRequest(request.scope, replay).form(max_files=1, max_fields=20)
            except Exception as error:
                raise ApiError(422, f"unreadable multipart body ({error})") from None
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "a multipart request needs a 'file' field with the image or PDF")
            data = await upload.read()
            await upload.close()
            checked = await run(checks_pool(data), functools.partial(service.check_upload, data, upload.filename,
                                                                     upload.content_type))
            job = functools.partial(service.extract_file, checked, draw)
        elif content_type == "application/json":
            checked = await run(checks_pool(body), functools.partial(service.check_words, body))
            job = functools.partial(service.extract_words, checked, draw)
        elif content_type.startswith("image/") or content_type in ("application/pdf", "application/octet-stream"):
            checked = await run(checks_pool(body), functools.partial(
                service.check_upload, body, request.query_params.get("filename"), content_type))
            job = functools.partial(service.extract_file, checked, draw)
        else:
            raise ApiError(415, f"unsupported content type {content_type or 'none'!r}: send multipart/form-data (field "
                                "'file'), an image/* or application/pdf body, or application/json words and boxes")
        try:
            return await run(service.pool, job)
        except asyncio.CancelledError:  # uvicorn gave up on it: SIGTERM, and --shutdown_timeout passed
            raise ApiError(503, "the server shut down before this document was read (--shutdown_timeout); send it "
                                "again") from None

    @app.get("/health")
    async def health():
        batcher = service.extractor.batcher
        alive = batcher is not None and batcher.is_alive()
        body = {"status": "ok" if alive else "error", "model": service.settings.model_name_or_path,
                "batching": dict(batcher.stats) if batcher else None}
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/v1/model")
    async def model():
        return service.model_info()

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page_html

    return app


def draining_server(config):
    """uvicorn's server, whose SIGTERM/SIGINT stop accepting connections, let the requests in flight finish (up to
    `--shutdown_timeout` seconds) and then return, so the process exits 0. (uvicorn's own `Server` raises the signal
    again after its graceful shutdown: the process would end by the signal, exit status -15.)"""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return DrainingServer(config)


def exit_on_signal(signum, frame):
    """Before and after serving, SIGTERM ends the process through SystemExit, so `finally` blocks (the private
    temporary folder's removal) still run."""
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    settings, args = parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        print("error: the service needs the serve extra: pip install 'layoutkit[serve]'", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # PIL refuses (above 2x) or warns about (above 1x) images over this size when opening them, as in predict.py.
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    signal.signal(signal.SIGTERM, exit_on_signal)
    # The event loop waits for the GIL behind workers running Python (tokenizing, postprocessing, OCR glue) at
    # every I/O step; a 1 ms switch interval instead of 5 ms lowered the 4xx answers' latency under OCR load
    # (p50 20-24 ms and p95 34-35 ms against 27-31 ms and 53-64 ms, docs/serving.md).
    sys.setswitchinterval(0.001)
    with ProcessTempDir() as scratch:
        logger.debug("temporary files of this process: %s", scratch)
        service = ExtractionService(build_extractor(settings, args), settings, args)
        logger.info("model %s loaded (%s); serving on http://%s:%d", settings.model_name_or_path,
                    service.extractor.model.config.model_type, args.host, args.port)
        server = draining_server(uvicorn.Config(create_app(service), host=args.host, port=args.port,
                                               log_level=args.log_level,
                                               timeout_graceful_shutdown=args.shutdown_timeout))
        try:
            server.run()
        finally:
            abandoned = service.close()
    logger.info("stopped")
    if abandoned:
        # Requests past --shutdown_timeout (uvicorn closed their connections): their worker threads would keep the
        # interpreter from exiting until their OCR ends. The temporary folder is already gone.
        logger.warning("requests still running after --shutdown_timeout %g s were abandoned", args.shutdown_timeout)
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
