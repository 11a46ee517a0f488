"""The input side shared by the layout pipelines (token classification, document classification): reading an
image or `{"image", "words", "boxes"}` input (OCR when no words are given), the preprocessing settings the
training script recorded, the page's windows, and the batched forward pass over them.

Copied into every checkpoint beside the pipeline that imports it (see `layoutkit/pipelines/attach.py`), so, like the
pipelines, it imports only the standard library, PIL, torch, transformers and sibling modules (pytesseract only
when OCR runs, inside `ocr.py`).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any, Iterator

import torch
from PIL import Image
from transformers import Pipeline

from .boxes import load_page, resize_document
from .encoding import LayoutCollator, encode_pages
from .input_validation import FieldError, check_box, is_blank_word, normalised_boxes_problem, warn
from .modeling import model_family, pil_image_processor
from .ocr import DEFAULT_OCR_ENGINE, OcrEngine, get_ocr_engine
from .pdf_text import PDFIUM_LOCK, check_pdf_text_mode, import_pdfium, pdf_page_inputs

DEFAULT_WINDOW_BATCH_SIZE = 8
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def read_image(value) -> Image.Image:
    """A PIL image from a PIL image or a file path (first frame of a multi-page file)."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        with Image.open(value) as image:
            image.load()
            return image.copy()
    raise TypeError(f"expected an image path or a PIL image, got {type(value).__name__}")


def check_words(
    words, boxes, page_size: tuple[int, int], name: str = "boxes", page: Image.Image | None = None
) -> tuple[list[str], list[list[float]]]:
    """Given words and one pixel box per word on a page of `page_size` (width, height), checked as the dataset
    builder checks annotations (`validation.check_box`: 4 finite numbers, not inverted, inside the page within
    BOX_TOLERANCE, then clamped); words must be strings. `name` is the input key the boxes came from, for errors.
    Warns when the boxes look normalised (0-1 or 0-1000) rather than pixels (`page`, the page image, tells them
    apart by its ink)."""
    if not isinstance(words, (list, tuple)) or not isinstance(boxes, (list, tuple)):
        raise TypeError(f"'words' and '{name}' must be lists")
    if len(words) != len(boxes):
        raise ValueError(f"{len(words)} words but {len(boxes)} {name}: give one box per word")
    for index, word in enumerate(words):
        if not isinstance(word, str):
            # str() would turn None or 7 into the text "None" or "7" and the model would read it.
            raise FieldError(f"words[{index}]", f"{word!r} is {type(word).__name__}; every word must be a string")
    width, height = page_size
    checked = [[float(v) for v in check_box(box, f"{name}[{i}]", width, height)] for i, box in enumerate(boxes)]
    problem = normalised_boxes_problem(checked, width, height, page)
    if problem is not None:
        warn(f"{name}: {problem}", stacklevel=2)
    return list(words), checked


def visible_word_indices(words: list[str]) -> list[int]:
    """The indices of the words with visible text. Training drops the others (empty, whitespace, zero-width
    characters: `validation.is_blank_word`), which some tokenizers give no token, so inference drops them too."""
    kept = [index for index, word in enumerate(words) if not is_blank_word(word)]
    if len(kept) < len(words):
        warn(
            f"{len(words) - len(kept)} of {len(words)} given words have no visible text (empty, whitespace or "
            "zero-width characters) and were dropped with their boxes, as in training; word indices in the output "
            "(entity start/end) count the kept words",
            stacklevel=2,
        )
    return kept


def has_given_words(inputs) -> bool:
    """Whether the caller gave the words (and boxes) in a dict input, so OCR is skipped."""
    return isinstance(inputs, dict) and inputs.get("words") is not None


def read_document(inputs, ocr_engine: OcrEngine) -> dict[str, Any]:
    """The upright RGB page and its words with pixel boxes, given or read by `ocr_engine`. `line_ids` and
    `confidences` come with OCR only (None for given words). Given words without visible text are dropped;
    `given_word_indices` says which given words were kept (None with OCR), so per-word inputs follow them.
    `words_source` says where the words came from: the input's own "words_source" (a PDF's text layer:
    "pdf_text", "pdf_invisible_text") or "given", else "ocr:ENGINE"."""
    if isinstance(inputs, dict) and "image" not in inputs:
        raise ValueError("a dict input needs 'image' (path or PIL image), plus optionally 'words' and 'boxes'")
    page = load_page(read_image(inputs["image"] if isinstance(inputs, dict) else inputs))
    if has_given_words(inputs):
        words, boxes = check_words(inputs["words"], inputs.get("boxes"), page.size, page=page)
        kept = visible_word_indices(words)
        return {"page": page, "words": [words[i] for i in kept], "boxes": [boxes[i] for i in kept], "line_ids": None,
                "confidences": None, "given_word_indices": kept,
                "words_source": str(inputs.get("words_source") or "given")}
    ocr = ocr_engine(page)
    return {"page": page, "words": ocr.words, "boxes": ocr.boxes, "line_ids": ocr.line_ids,
            "confidences": ocr.confidences, "given_word_indices": None, "words_source": f"ocr:{ocr_engine.name}"}


def resolve_ocr_engine(recorded: dict[str, Any] | None, overrides: dict[str, Any]) -> OcrEngine:
    """The OCR engine a pipeline reads pages with: the one the training data was read with (`recorded`, the
    `ocr` settings of `document_preprocessing`), else the default engine (RapidOCR); the caller's `overrides`
    (engine, lang, min_confidence, config, options) win. Another engine than the recorded one starts from its
    own defaults."""
    overrides = dict(overrides)
    engine = overrides.pop("engine", None)
    if isinstance(engine, OcrEngine):
        return engine
    options = dict(recorded or {})
    recorded_engine = options.pop("engine", DEFAULT_OCR_ENGINE)
    if engine is not None and engine != recorded_engine:
        options = {}
    options.update(overrides.pop("options", None) or {})
    options.update({name: value for name, value in overrides.items() if value is not None})
    return get_ocr_engine(engine or recorded_engine, **options)


def recorded_preprocessing(config) -> dict[str, Any]:
    """The `document_preprocessing` the training script recorded in config.json (empty when absent)."""
    return dict(getattr(config, "document_preprocessing", None) or {})


def input_parameters(ocr_engine, ocr_lang, ocr_config, min_ocr_confidence, ocr_options, window_batch_size,
                     mixed_precision) -> tuple[dict[str, Any], dict[str, Any]]:
    """The preprocess (OCR) and forward (windows per pass, autocast) parameters every layout pipeline takes."""
    ocr = {"engine": ocr_engine, "lang": ocr_lang, "config": ocr_config, "min_confidence": min_ocr_confidence,
           "options": ocr_options}
    if ocr_options is not None and not isinstance(ocr_options, dict):
        raise TypeError(f"ocr_options must be a dict of engine settings, got {type(ocr_options).__name__}")
    preprocess = {"ocr": {name: value for name, value in ocr.items() if value is not None}}
    forward = {}
    if window_batch_size is not None:
        if int(window_batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {window_batch_size}")
        forward["window_batch_size"] = int(window_batch_size)
    if mixed_precision is not None:
        if mixed_precision not in ("no", *AUTOCAST_DTYPES):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {mixed_precision!r}")
        forward["mixed_precision"] = mixed_precision
    return preprocess, forward


class WindowedLayoutPipeline(Pipeline):
    """Base of the layout pipelines: a page is resized and encoded into overlapping windows exactly as in
    training, and the windows run through the model `window_batch_size` at a time. Subclasses say what the
    windows' logits mean (`_forward`, `postprocess`)."""

    _load_processor = False
    _load_image_processor = None
    _load_feature_extractor = False
    _load_video_processor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError("this pipeline needs the checkpoint's tokenizer")
        self.family = model_family(self.model.config)
        if self.image_processor is not None:
            # The same (PIL) image backend as training, whether or not torchvision is installed.
            self.image_processor = pil_image_processor(self.image_processor)
        if self.image_processor is not None and hasattr(self.image_processor, "apply_ocr"):
            # Words always come from our OCR step (or the caller), exactly as in training.
            self.image_processor.apply_ocr = False
        if self.family.image_input and self.image_processor is None:
            raise ValueError(
                f"{self.family.model_type} reads the page image but the checkpoint has no image processor "
                "(processor_config.json or preprocessor_config.json)"
            )
        settings = recorded_preprocessing(self.model.config)
        max_length = settings.get("max_seq_length") or min(
            512, getattr(self.model.config, "max_position_embeddings", 514) - 2
        )
        # The OCR engine and settings the training data was read with (datasets built with --ocr), if any.
        self.recorded_ocr = settings.get("ocr")
        self.preprocessing = {
            "resize": tuple(settings["resize"]) if settings.get("resize") else None,
            "keep_aspect": bool(settings.get("keep_aspect", False)),
            "pad": bool(settings.get("pad", True)),
            "max_seq_length": int(max_length),
            "stride": int(settings.get("stride", min(128, max_length // 4))),
        }
        # Pipeline batching (batch_size of pipeline()/__call__) means windows per forward pass here.
        self._window_batch_size = self._batch_size or DEFAULT_WINDOW_BATCH_SIZE
        self._batch_size = None

    def __call__(self, inputs, *args, **kwargs):
        batch_size = kwargs.pop("batch_size", None)
        kwargs["window_batch_size"] = batch_size or kwargs.get("window_batch_size") or self._window_batch_size
        return super().__call__(inputs, *args, batch_size=1, **kwargs)

    # ------------------------------------------------------------------------------------- preprocess
    def pdf_page_inputs(self, pdf, dpi: float = 200, pdf_text: str = "auto", where: str = "PDF") -> list[dict]:
        """The pages of a PDF (bytes, a path, or an open pypdfium2 PdfDocument) as inputs of this pipeline: each
        page's image rendered at `dpi` with, where its text layer covers it (`pdf_text`: auto, always, never;
        `pdf_text.py`), its words, so only the other pages are read by OCR. The Endpoints handler reads PDFs
        through it:

            outputs = [extractor(page, return_words=True) for page in extractor.pdf_page_inputs("invoice.pdf")]
        """
        check_pdf_text_mode(pdf_text)
        pdfium = import_pdfium()
        with PDFIUM_LOCK:
            document = pdf if isinstance(pdf, pdfium.PdfDocument) else pdfium.PdfDocument(
                pdf if isinstance(pdf, (bytes, bytearray)) else str(pdf))
            try:
                if len(document) == 0:
                    raise ValueError(f"{where}: the PDF has no pages")
                return list(pdf_page_inputs(document, dpi, pdf_text, where))
            finally:
                if document is not pdf:
                    document.close()

    def ocr_engine(self, overrides: dict[str, Any] | None = None) -> OcrEngine:
        """The engine this pipeline reads pages with (see `resolve_ocr_engine`)."""
        return resolve_ocr_engine(self.recorded_ocr, overrides or {})

    def _resize(self, page: Image.Image, boxes) -> tuple[Image.Image, list[list[float]]]:
        """The page and its boxes at the training resize (one resize path for both)."""
        settings = self.preprocessing
        resized, (scaled,) = resize_document(page, [boxes], settings["resize"], settings["keep_aspect"],
                                             settings["pad"])
        return resized, scaled

    def _windows(self, resized: Image.Image, words: list[str], scaled) -> list[dict]:
        """The model inputs of one resized page: overlapping windows of `max_seq_length` tokens, with the page
        image each window reads."""
        settings = self.preprocessing
        columns = encode_pages([resized], [words], [scaled], self.tokenizer, self.image_processor, self.family,
                               settings["max_seq_length"], settings["stride"])
        return [{key: values[i] for key, values in columns.items()} for i in range(len(columns["input_ids"]))]

    # ---------------------------------------------------------------------------------------- forward
    def _run_windows(self, windows: list[dict], window_batch_size: int, mixed_precision: str,
                     collator_class=LayoutCollator, bookkeeping=("word_ids", "doc_index"),
                     ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Each batch of windows through the model (dynamic padding, autocast when asked): yields the batch's
        position columns kept on the CPU (`bookkeeping`: `word_ids`, `doc_index`) and its logits."""
        collator = collator_class(self.tokenizer.pad_token_id, 8, self.family.image_input)
        dtype = AUTOCAST_DTYPES.get(mixed_precision)
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        image_input = self.family.image_input
        for start in range(0, len(windows), window_batch_size):
            batch = collator(windows[start : start + window_batch_size])
            positions = {key: batch.pop(key) for key in bookkeeping if key in batch}
            batch = {key: value.to(self.device) for key, value in batch.items()}
            if image_input in batch and batch[image_input].is_floating_point():
                batch[image_input] = batch[image_input].to(self.model.dtype)
            with autocast:
                logits = self.model(**batch).logits
            # Yielded outside the autocast block, so the caller's scoring runs in full precision.
            yield positions, logits
