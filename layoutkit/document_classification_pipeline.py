"""`image-classification` pipeline for LayoutLM-family checkpoints trained with run_doc_classification.py.

Saved into every checkpoint (see `layoutkit/export.py`), so a trained model runs with two lines:

    from transformers import pipeline
    classifier = pipeline("image-classification", model="runs/doctypes", trust_remote_code=True)
    classifier("scan.png")
    # [{"label": "invoice", "score": 0.97}, {"label": "receipt", "score": 0.02}, {"label": "letter", "score": 0.01}]

Input: an image (a path or a PIL image; words come from Tesseract OCR), or a dict
`{"image": ..., "words": [...], "boxes": [[x0, y0, x1, y1], ...]}` with boxes in the image's pixels (OCR is
skipped). A list of inputs returns a list of results.

Preprocessing repeats training exactly, with the same functions and the `document_preprocessing` the training
script recorded in config.json: `load_page`, `resize_document` (page resize), `normalize_boxes` (0-1000 grid),
`encode_documents` (overlapping windows of `max_seq_length` tokens with `stride`), `window_page_images` and
`LayoutCollator`. The document's class scores are the softmax of the MEAN of its windows' logits.

Output: like the stock image-classification pipeline, `[{"label", "score"}, ...]` sorted by score, best first,
`top_k` of them (default 5, at most the number of classes).

Call options: `top_k`, `ocr_lang` ("eng"), `ocr_config` (extra tesseract options), `batch_size` (windows per
forward pass, default 8), `mixed_precision` ("no", "bf16" or "fp16" autocast).

This file and the modules it imports relatively use only the standard library, numpy, PIL, torch and
transformers (pytesseract only when OCR runs), as required for code loaded with `trust_remote_code`.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline

from .boxes import load_page, normalize_boxes, resize_document
from .encoding import LayoutCollator, encode_documents, window_page_images
from .modeling import model_family
from .ocr import ocr_page

DEFAULT_WINDOW_BATCH_SIZE = 8
DEFAULT_TOP_K = 5
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


def _check_words(words, boxes) -> tuple[list[str], list[list[float]]]:
    if not isinstance(words, (list, tuple)) or not isinstance(boxes, (list, tuple)):
        raise TypeError("'words' and 'boxes' must be lists")
    if len(words) != len(boxes):
        raise ValueError(f"{len(words)} words but {len(boxes)} boxes: give one box per word")
    checked = []
    for index, box in enumerate(boxes):
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise ValueError(f"boxes[{index}] must be [x0, y0, x1, y1] in pixels, got {box!r}")
        checked.append([float(v) for v in box])
    return [str(w) for w in words], checked


class LayoutDocumentClassificationPipeline(Pipeline):
    """Document image classification with a LayoutLM, LayoutLMv2/LayoutXLM or LayoutLMv3 sequence-classification
    checkpoint. See the module docstring for inputs, options and outputs."""

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
        if self.image_processor is not None and hasattr(self.image_processor, "apply_ocr"):
            self.image_processor.apply_ocr = False  # words come from our OCR step (or the caller), as in training
        if self.family.image_input and self.image_processor is None:
            raise ValueError(
                f"{self.family.model_type} reads the page image but the checkpoint has no image processor "
                "(processor_config.json or preprocessor_config.json)"
            )
        settings = dict(getattr(self.model.config, "document_preprocessing", None) or {})
        max_length = settings.get("max_seq_length") or min(
            512, getattr(self.model.config, "max_position_embeddings", 514) - 2
        )
        self.preprocessing = {
            "resize": tuple(settings["resize"]) if settings.get("resize") else None,
            "keep_aspect": bool(settings.get("keep_aspect", False)),
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

    def _sanitize_parameters(
        self, top_k=None, ocr_lang=None, ocr_config=None, min_ocr_confidence=None, window_batch_size=None,
        mixed_precision=None, function_to_apply=None,
    ):
        preprocess = {}
        if ocr_lang is not None:
            preprocess["ocr_lang"] = ocr_lang
        if ocr_config is not None:
            preprocess["ocr_config"] = ocr_config
        if min_ocr_confidence is not None:
            preprocess["min_ocr_confidence"] = min_ocr_confidence
        forward = {}
        if window_batch_size is not None:
            if int(window_batch_size) < 1:
                raise ValueError(f"batch_size must be at least 1, got {window_batch_size}")
            forward["window_batch_size"] = int(window_batch_size)
        if mixed_precision is not None:
            if mixed_precision not in ("no", *AUTOCAST_DTYPES):
                raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {mixed_precision!r}")
            forward["mixed_precision"] = mixed_precision
        postprocess = {}
        if top_k is not None:
            if int(top_k) < 1:
                raise ValueError(f"top_k must be at least 1, got {top_k}")
            postprocess["top_k"] = int(top_k)
        if function_to_apply not in (None, "softmax"):
            raise ValueError("document classes are scored with a softmax over the mean window logits")
        return preprocess, forward, postprocess

    # ------------------------------------------------------------------------------------- preprocess
    def _read_document(self, inputs, ocr_lang: str, ocr_config: str, min_ocr_confidence: float) -> dict[str, Any]:
        given = isinstance(inputs, dict)
        if given and "image" not in inputs:
            raise ValueError("a dict input needs 'image' (path or PIL image), plus optionally 'words' and 'boxes'")
        page = load_page(read_image(inputs["image"] if given else inputs))
        if given and inputs.get("words") is not None:
            words, boxes = _check_words(inputs["words"], inputs.get("boxes"))
        else:
            ocr = ocr_page(page, lang=ocr_lang, config=ocr_config, min_confidence=min_ocr_confidence)
            words, boxes = ocr.words, ocr.boxes
        return {"page": page, "words": words, "boxes": boxes}

    def preprocess(self, inputs, ocr_lang: str = "eng", ocr_config: str = "", min_ocr_confidence: float = 0.0):
        document = self._read_document(inputs, ocr_lang, ocr_config, min_ocr_confidence)
        page, words, boxes = document["page"], document["words"], document["boxes"]
        settings = self.preprocessing
        resized, (scaled,) = resize_document(page, [boxes], settings["resize"], settings["keep_aspect"])
        if not words:  # as in training: a page without words still gets one window ([CLS] [SEP] + image)
            words, scaled = [""], [[0, 0, 0, 0]]
        normalized = normalize_boxes(scaled, resized.width, resized.height)
        columns = encode_documents(
            [words], [normalized], self.tokenizer, self.family, settings["max_seq_length"], settings["stride"]
        )
        count = len(columns["input_ids"])
        columns.update(window_page_images([resized], self.image_processor, self.family, [0] * count))
        return {"windows": [{key: values[i] for key, values in columns.items()} for i in range(count)]}

    # ---------------------------------------------------------------------------------------- forward
    def _forward(self, model_inputs, window_batch_size: int = DEFAULT_WINDOW_BATCH_SIZE, mixed_precision: str = "no"):
        windows = model_inputs["windows"]
        collator = LayoutCollator(self.tokenizer.pad_token_id, 8, self.family.image_input)
        dtype = AUTOCAST_DTYPES.get(mixed_precision)
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        chunks = []
        for start in range(0, len(windows), window_batch_size):
            batch = collator(windows[start : start + window_batch_size])
            batch.pop("word_ids", None)
            batch.pop("doc_index", None)
            batch = {key: value.to(self.device) for key, value in batch.items()}
            image_input = self.family.image_input
            if image_input in batch and batch[image_input].is_floating_point():
                batch[image_input] = batch[image_input].to(self.model.dtype)
            with autocast:
                chunks.append(self.model(**batch).logits.float().cpu())
        # The document's logits: the mean over its windows (as in evaluation during training).
        return {"logits": torch.cat(chunks).mean(0), "windows": len(windows)}

    # ------------------------------------------------------------------------------------ postprocess
    def postprocess(self, model_outputs, top_k: int = DEFAULT_TOP_K):
        scores = model_outputs["logits"].softmax(-1).numpy()
        id2label = self.model.config.id2label
        top_k = min(top_k, len(scores))
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"label": id2label[int(i)], "score": float(scores[i])} for i in order]
