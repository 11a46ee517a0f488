"""HTTP service for a token-classification checkpoint: the JSON predict.py writes, for documents sent over HTTP.

    python -m layoutkit.serve --model runs/invoices --host 127.0.0.1 --port 8000

Endpoints (see docs/serving.md):
- `POST /v1/extract`: a multipart upload (field `file`: an image or a PDF), a raw image/PDF body, or JSON words and
  pixel boxes (`{"words": [...], "boxes": [...], "image": "<base64>"}` or `{"pages": [...]}`); returns predict.py's
  JSON for that document. Errors are JSON `{"error": {"status", "message", ...}}`: 413 above a limit (upload size,
  pixels, pages; the message names the option that raises it), 415 for a file that is neither an image nor a PDF,
  422 for a corrupt or invalid document, 500 for a failure of the server itself.
- `GET /health`, `GET /v1/model` (labels, model type, preprocessing, limits), `GET /` (an upload page).

How a request runs: the event loop only reads the body; decoding, OCR, tokenization and postprocessing run in a
thread pool of `--workers` threads, and every page's windows go to one `WindowBatcher` thread that fills a forward
batch from concurrent requests (up to `--max_batch_size` windows, waiting at most `--max_wait_ms` after the first).
Requires the `serve` extra: `pip install 'layoutkit[serve]'` (FastAPI, uvicorn, python-multipart).
"""

import argparse
import asyncio
import base64
import binascii
import functools
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

from .batching import BatchedTokenClassificationPipeline, WindowBatcher
from .documents import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    PDF_SUFFIXES,
    DocumentError,
    LimitError,
    check_pixels,
    check_words_pages,
    count_pages,
    image_pages,
    pdf_pages,
)
from .fields import FieldSchema
from .ocr import DEFAULT_OCR_ENGINE, OCR_ENGINES, parse_engine_option
from .postprocess import RULES, RuleConfig
from .prediction import predict_document
from .read_ahead import parallel_ocr_options

logger = logging.getLogger("layoutkit.serve")
PAGE_HTML = Path(__file__).with_name("static") / "serve.html"


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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", dest="model_name_or_path", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="onnx: --model is a folder from `python -m layoutkit.export_onnx` (CPU, ONNX Runtime)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--mixed_precision", choices=["no", "bf16"], default="no", help="bf16 autocast")
    parser.add_argument("--max_batch_size", type=int, default=16, help="windows per forward pass, across requests")
    parser.add_argument("--max_wait_ms", type=float, default=5.0,
                        help="how long the first page of a batch waits for others to join it")
    parser.add_argument("--workers", type=int, default=4,
                        help="threads that decode, OCR and postprocess documents (requests in flight at once)")
    parser.add_argument("--max_upload_mb", type=float, default=20.0, help="largest request body, in MB")
    parser.add_argument("--max_image_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="pages above this many pixels are refused (decompression-bomb guard)")
    parser.add_argument("--max_pages", type=int, default=20, help="most pages per document")
    parser.add_argument("--dpi", type=int, default=200, help="resolution PDF pages are rendered at")
    parser.add_argument("--ocr_engine", choices=sorted(OCR_ENGINES),
                        help="OCR engine (default: the one the model's training data was read with, else rapidocr)")
    parser.add_argument("--ocr_lang", help='OCR language(s), e.g. "eng", "deu+eng" (default eng)')
    parser.add_argument("--ocr_config", help='extra tesseract options, e.g. "--oem 1"')
    parser.add_argument("--ocr_option", action="append", default=[], metavar="KEY=VALUE",
                        help="an OCR engine setting, repeatable (values read as JSON when they parse)")
    parser.add_argument("--schema", help="JSON file of field types (date, amount, number, text)")
    parser.add_argument("--rules",
                        help=f"post-processing rules: comma-separated ({', '.join(RULES)}, or all) or a JSON file")
    parser.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    for name in ("max_batch_size", "workers", "max_pages", "dpi", "max_image_pixels"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive")
    if args.max_upload_mb <= 0 or args.max_wait_ms < 0:
        parser.error("--max_upload_mb must be positive and --max_wait_ms not negative")
    if args.backend == "onnx" and (args.device == "cuda" or args.mixed_precision != "no"):
        parser.error("--backend onnx runs the exported fp32 graph on the CPU; drop --device cuda / --mixed_precision")
    try:
        args.rule_config = RuleConfig.from_value(args.rules)
        args.field_schema = FieldSchema.load(args.schema)
        args.ocr_options = dict(parse_engine_option(text) for text in args.ocr_option)
    except (ValueError, TypeError, OSError) as error:
        parser.error(str(error))
    return args


def build_extractor(args) -> BatchedTokenClassificationPipeline:
    """The checkpoint's pipeline with its window forward passes batched across requests.

    The model backend is the `run_windows` the batcher drives (`WindowedLayoutPipeline._run_windows` contract:
    windows in, (positions, logits) batches out); another backend (ONNX Runtime) plugs in by passing its own."""
    import torch

    from .predictor import load_predictor

    device = "cpu" if args.backend == "onnx" else args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    extractor = load_predictor(args.model_name_or_path, backend=args.backend, task="token-classification",
                               device=device, pipeline_class=BatchedTokenClassificationPipeline)
    extractor.attach_batcher(WindowBatcher(extractor.model_run_windows(), args.max_batch_size, args.max_wait_ms,
                                           args.mixed_precision))
    return extractor


class ExtractionService:
    """The documents side of the service: turns an upload or a words payload into predict.py's JSON. Its methods
    block (decoding, OCR, waiting for the forward batch) and run in the worker pool, never on the event loop."""

    def __init__(self, extractor, args):
        self.extractor = extractor
        self.args = args
        self.max_upload_bytes = int(args.max_upload_mb * 1_000_000)
        # predict_document's settings, as predict.py's command line gives them.
        self.settings = SimpleNamespace(
            model_name_or_path=args.model_name_or_path, ocr_engine=args.ocr_engine, ocr_lang=args.ocr_lang,
            ocr_config=args.ocr_config, ocr_options=args.ocr_options, batch_size=args.max_batch_size,
            mixed_precision=args.mixed_precision, rule_config=args.rule_config, draw=False, words_json="request",
            field_schema=args.field_schema, line_item_grouping="rule",
        )
        # Requests in flight OCR their pages at once (one RapidOCR instance each, cores / instances threads each)
        # instead of queueing for one engine.
        recorded = {"engine": args.ocr_engine, "lang": args.ocr_lang, "config": args.ocr_config,
                    "options": args.ocr_options}
        speed, _ = parallel_ocr_options(extractor.ocr_engine(recorded), min(args.workers, os.cpu_count() or 1))
        self.settings.ocr_options = {**args.ocr_options, **speed}
        self.pool = ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="extract")

    # ------------------------------------------------------------------------------------------- files
    def extract_file(self, data: bytes, filename: str | None, content_type: str | None) -> dict:
        name = Path(filename or "upload").name or "upload"
        suffix = Path(name).suffix.lower()
        content_type = (content_type or "").split(";")[0].strip().lower()
        is_pdf = data[:5] == b"%PDF-" or suffix in PDF_SUFFIXES or content_type == "application/pdf"
        if not is_pdf and not (suffix in IMAGE_SUFFIXES or content_type.startswith("image/") or _is_image(data)):
            raise ApiError(415, f"{name}: unsupported file (content type {content_type or 'none'!r}); send an image "
                                "(PNG, JPEG, TIFF, BMP, GIF, WebP) or a PDF")
        with tempfile.TemporaryDirectory(prefix="layoutkit-serve-") as folder:
            path = Path(folder) / ("document" + (".pdf" if is_pdf else suffix or ".image"))
            path.write_bytes(data)
            try:
                self._check_pages(count_pages(path, is_pdf), name)
                if is_pdf:
                    pages = pdf_pages(path, self.args.dpi, self.args.max_image_pixels)
                else:
                    pages = image_pages(path, self.args.max_image_pixels)
                result, _ = predict_document(self.extractor, Path(name), pages, None, self.settings)
            except DocumentError as error:
                # Messages name the file: the upload's name, not the temporary copy's.
                error.args = (str(error).replace(str(path), name),)
                raise error from None
        return result

    # ------------------------------------------------------------------------------------------- words
    def extract_words(self, payload) -> dict:
        words_pages = check_words_pages(payload, "request")
        self._check_pages(len(words_pages), "request")
        images = [self._page_image(page, number) for number, page in enumerate(words_pages, start=1)]
        source = payload.get("source") if isinstance(payload, dict) else None
        result, _ = predict_document(self.extractor, source, iter(images), words_pages, self.settings)
        return result

    def _page_image(self, page: dict, number: int) -> Image.Image:
        """The page image a words payload gives (base64), or for a model that reads no pixels a blank page of its
        `width` x `height` (the boxes are checked against it)."""
        limit = self.args.max_image_pixels
        if page.get("image"):
            try:
                data = base64.b64decode(page["image"], validate=True)
            except (binascii.Error, TypeError, ValueError) as error:
                raise DocumentError(f"request: page {number}: 'image' is not base64 ({error})") from None
            with tempfile.TemporaryDirectory(prefix="layoutkit-serve-") as folder:
                path = Path(folder) / "page.image"
                path.write_bytes(data)
                try:
                    return next(image_pages(path, limit))
                except DocumentError as error:
                    error.args = (str(error).replace(str(path), f"request: page {number}: image"),)
                    raise error from None
        if self.extractor.family.image_input:
            raise DocumentError(f"request: page {number}: this {self.extractor.family.model_type} model reads the "
                                "page image; send it base64-encoded as 'image'")
        width, height = page.get("width"), page.get("height")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise DocumentError(f"request: page {number}: give the page's 'image' (base64), or its 'width' and "
                                "'height' in pixels (the boxes' coordinate space)")
        check_pixels(Path("request"), width, height, limit, number)
        return Image.new("RGB", (width, height), "white")

    def _check_pages(self, count: int, name: str) -> None:
        if count > self.args.max_pages:
            raise LimitError(f"{name}: {count} pages, above the limit of {self.args.max_pages} pages per document; "
                             "start the server with a larger --max_pages", "--max_pages")

    # ------------------------------------------------------------------------------------------- model
    def model_info(self) -> dict:
        config = self.extractor.model.config
        labels = [config.id2label[i] for i in range(config.num_labels)]
        recorded_ocr = dict(self.extractor.recorded_ocr or {})
        return {
            "model": self.args.model_name_or_path,
            "model_type": config.model_type,
            "labels": labels,
            "entity_types": sorted({label[2:] for label in labels if label[:2] in ("B-", "I-")}),
            "reads_page_image": bool(self.extractor.family.image_input),
            "preprocessing": {key: list(value) if isinstance(value, tuple) else value
                              for key, value in self.extractor.preprocessing.items()},
            "ocr": {"engine": self.args.ocr_engine or recorded_ocr.pop("engine", DEFAULT_OCR_ENGINE),
                    "recorded_in_training": self.extractor.recorded_ocr, "lang": self.args.ocr_lang,
                    "options": self.args.ocr_options},
            "schema": self.args.field_schema.to_dict() if self.args.schema else None,
            "device": str(self.extractor.device),
            "batching": {"max_batch_size": self.args.max_batch_size, "max_wait_ms": self.args.max_wait_ms,
                         "workers": self.args.workers},
            "limits": {"max_upload_mb": self.args.max_upload_mb, "max_image_pixels": self.args.max_image_pixels,
                       "max_pages": self.args.max_pages, "dpi": self.args.dpi},
        }


def _is_image(data: bytes) -> bool:
    """Whether Pillow recognises the bytes as an image (header only; not decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)):
                return True
    except Image.DecompressionBombError:
        return True  # an image, refused for its size when read
    except Exception:
        return False


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

    async def run(job):
        """`job` in the worker pool; its document errors become 4xx answers, anything else a 500."""
        try:
            return await asyncio.get_running_loop().run_in_executor(service.pool, job)
        except ApiError:
            raise
        except LimitError as error:
            raise ApiError(413, str(error), limit=error.option.lstrip("-"), option=error.option) from None
        except DocumentError as error:
            raise ApiError(422, str(error)) from None
        except Exception as error:
            logger.exception("extraction failed")
            raise ApiError(500, f"the server failed on this document: {type(error).__name__}: {error}") from None

    @app.post("/v1/extract")
    async def extract(request: Request):
        body = await read_body(request, service.max_upload_bytes)
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
            job = functools.partial(service.extract_file, data, upload.filename, upload.content_type)
        elif content_type == "application/json":
            try:  # parsed in the pool: a large body (base64 pages) would hold the event loop
                payload = await asyncio.get_running_loop().run_in_executor(service.pool, json.loads, body)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ApiError(422, f"the JSON body does not parse ({error})") from None
            job = functools.partial(service.extract_words, payload)
        elif content_type.startswith("image/") or content_type in ("application/pdf", "application/octet-stream"):
            job = functools.partial(service.extract_file, body, request.query_params.get("filename"), content_type)
        else:
            raise ApiError(415, f"unsupported content type {content_type or 'none'!r}: send multipart/form-data (field "
                                "'file'), an image/* or application/pdf body, or application/json words and boxes")
        return await run(job)

    @app.get("/health")
    async def health():
        batcher = service.extractor.batcher
        alive = batcher is not None and batcher.is_alive()
        body = {"status": "ok" if alive else "error", "model": service.args.model_name_or_path,
                "batching": dict(batcher.stats) if batcher else None}
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/v1/model")
    async def model():
        return service.model_info()

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page_html

    return app


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        print("error: the service needs the serve extra: pip install 'layoutkit[serve]'", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # PIL refuses (above 2x) or warns about (above 1x) images over this size when opening them, as in predict.py.
    Image.MAX_IMAGE_PIXELS = args.max_image_pixels
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    service = ExtractionService(build_extractor(args), args)
    logger.info("model %s loaded (%s); serving on http://%s:%d", args.model_name_or_path,
                service.extractor.model.config.model_type, args.host, args.port)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
