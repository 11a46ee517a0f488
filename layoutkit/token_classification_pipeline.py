"""`token-classification` pipeline for LayoutLM-family checkpoints trained with run_invoice_ner.py.

Saved into every checkpoint (see `layoutkit/export.py`), so a trained model runs with two lines:

    from transformers import pipeline
    extractor = pipeline("token-classification", model="runs/invoices", trust_remote_code=True)
    extractor("invoice.png")
    # [{"entity_group": "total", "score": 0.98, "word": "1,250.00", "start": 41, "end": 42,
    #   "box": [612, 880, 701, 902]}, ...]

Input: an image (a path or a PIL image; words come from Tesseract OCR), or a dict
`{"image": ..., "words": [...], "boxes": [[x0, y0, x1, y1], ...]}` with boxes in the image's pixels (OCR
is skipped; optional "segment_boxes" or "line_ids"). A list of inputs returns a list of results.

Preprocessing repeats training exactly, with the same functions and the `document_preprocessing` the
training script recorded in config.json: `load_page`, `resize_document` (page resize), `normalize_boxes`
(0-1000 grid), segment boxes for `box_level == "segment"` (OCR line boxes, or `group_lines` for given
words), `encode_documents` (overlapping windows of `max_seq_length` tokens with `stride`),
`window_page_images`, `LayoutCollator` (windows batched `batch_size` at a time with dynamic padding), and
`WordPredictionMerger` (one label and score per word).

Output: entity groups shaped like the stock pipeline's `aggregation_strategy="simple"`: `entity_group`,
`score` (mean of the word scores), `word` (the words joined with spaces), `start` and `end` (word indices,
end exclusive) plus `box`, the union of the words' boxes in the original image's pixels. With
`return_words=True`: `{"entities": [...], "words": [{"text", "box", "label", "score"}, ...],
"width", "height"}`.

Call options: `ocr_lang` ("eng"), `ocr_config` (extra tesseract options), `batch_size` (windows per
forward pass, default 8), `mixed_precision` ("no" or "bf16" autocast), `rules` (post-processing rules,
see `postprocess.py`), `return_words`.

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

from .boxes import group_lines, load_page, normalize_boxes, resize_document, segment_boxes, union_box
from .encoding import LayoutCollator, encode_documents, window_page_images
from .labels import OUTSIDE, bio_spans
from .modeling import model_family
from .ocr import ocr_page
from .postprocess import RuleConfig, apply_rules
from .windows import WordPredictionMerger

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


def _check_words(words, boxes, name: str = "boxes") -> tuple[list[str], list[list[float]]]:
    if not isinstance(words, (list, tuple)) or not isinstance(boxes, (list, tuple)):
        raise TypeError(f"'words' and '{name}' must be lists")
    if len(words) != len(boxes):
        raise ValueError(f"{len(words)} words but {len(boxes)} {name}: give one box per word")
    checked = []
    for index, box in enumerate(boxes):
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise ValueError(f"{name}[{index}] must be [x0, y0, x1, y1] in pixels, got {box!r}")
        checked.append([float(v) for v in box])
    return [str(w) for w in words], checked


class LayoutTokenClassificationPipeline(Pipeline):
    """Key-information extraction from a page image with a LayoutLM, LayoutLMv2/LayoutXLM or LayoutLMv3
    token-classification checkpoint. See the module docstring for inputs, options and outputs."""

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
            # Words always come from our OCR step (or the caller), exactly as in training.
            self.image_processor.apply_ocr = False
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
            "box_level": settings.get("box_level", "word"),
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
        self,
        ocr_lang=None,
        ocr_config=None,
        min_ocr_confidence=None,
        window_batch_size=None,
        mixed_precision=None,
        rules=None,
        return_words=None,
        aggregation_strategy=None,
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
        if rules is not None:
            postprocess["rules"] = RuleConfig.from_value(rules)
        if return_words is not None:
            postprocess["return_words"] = bool(return_words)
        if aggregation_strategy not in (None, "simple"):
            raise ValueError(
                "this pipeline always groups words into entities (aggregation_strategy='simple'); "
                "pass return_words=True for the label and score of every word"
            )
        return preprocess, forward, postprocess

    # ------------------------------------------------------------------------------------- preprocess
    def _read_document(self, inputs, ocr_lang: str, ocr_config: str, min_ocr_confidence: float) -> dict[str, Any]:
        """The upright RGB page and its words with pixel boxes (given, or from OCR)."""
        given = isinstance(inputs, dict)
        if given and "image" not in inputs:
            raise ValueError("a dict input needs 'image' (path or PIL image), plus optionally 'words' and 'boxes'")
        page = load_page(read_image(inputs["image"] if given else inputs))
        document = {"page": page, "line_ids": None, "segment_boxes": None, "confidences": None}
        if given and inputs.get("words") is not None:
            document["words"], document["boxes"] = _check_words(inputs["words"], inputs.get("boxes"))
            if inputs.get("segment_boxes") is not None:
                _, document["segment_boxes"] = _check_words(inputs["words"], inputs["segment_boxes"], "segment_boxes")
            if inputs.get("line_ids") is not None:
                if len(inputs["line_ids"]) != len(document["words"]):
                    raise ValueError("give one line id per word in 'line_ids'")
                document["line_ids"] = [int(v) for v in inputs["line_ids"]]
        else:
            ocr = ocr_page(page, lang=ocr_lang, config=ocr_config, min_confidence=min_ocr_confidence)
            document.update(words=ocr.words, boxes=ocr.boxes, line_ids=ocr.line_ids, confidences=ocr.confidences)
        return document

    def preprocess(self, inputs, ocr_lang: str = "eng", ocr_config: str = "", min_ocr_confidence: float = 0.0):
        document = self._read_document(inputs, ocr_lang, ocr_config, min_ocr_confidence)
        page, words, boxes = document["page"], document["words"], document["boxes"]
        settings = self.preprocessing
        model_boxes = boxes
        if settings["box_level"] == "segment":
            if document["segment_boxes"] is not None:
                model_boxes = document["segment_boxes"]
            else:
                lines = document["line_ids"] if document["line_ids"] is not None else group_lines(boxes)
                model_boxes = segment_boxes(boxes, lines)
        resized, (scaled,) = resize_document(page, [model_boxes], settings["resize"], settings["keep_aspect"])
        windows: list[dict] = []
        if words:
            normalized = normalize_boxes(scaled, resized.width, resized.height)
            columns = encode_documents(
                [words], [normalized], self.tokenizer, self.family, settings["max_seq_length"], settings["stride"]
            )
            count = len(columns["input_ids"])
            columns.update(window_page_images([resized], self.image_processor, self.family, [0] * count))
            windows = [{key: values[i] for key, values in columns.items()} for i in range(count)]
        return {
            "windows": windows,
            "words": words,
            "boxes": boxes,
            "line_ids": document["line_ids"],
            "confidences": document["confidences"],
            "size": page.size,
        }

    # ---------------------------------------------------------------------------------------- forward
    def _forward(self, model_inputs, window_batch_size: int = DEFAULT_WINDOW_BATCH_SIZE, mixed_precision: str = "no"):
        windows = model_inputs.pop("windows")
        words = model_inputs["words"]
        default_label = int(self.model.config.label2id.get(OUTSIDE, 0))
        merger = WordPredictionMerger([len(words)], default_label)
        collator = LayoutCollator(self.tokenizer.pad_token_id, 8, self.family.image_input)
        dtype = AUTOCAST_DTYPES.get(mixed_precision)
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        for start in range(0, len(windows), window_batch_size):
            batch = collator(windows[start : start + window_batch_size])
            word_ids = batch.pop("word_ids")
            doc_index = batch.pop("doc_index")
            batch = {key: value.to(self.device) for key, value in batch.items()}
            image_input = self.family.image_input
            if image_input in batch and batch[image_input].is_floating_point():
                batch[image_input] = batch[image_input].to(self.model.dtype)
            with autocast:
                logits = self.model(**batch).logits
            scores, labels = logits.float().softmax(-1).max(-1)
            merger.add(doc_index.numpy(), word_ids.numpy(), labels.cpu().numpy(), scores.cpu().numpy())
        label_ids, scores = merger.result(0)
        return {**model_inputs, "label_ids": label_ids, "scores": scores}

    # ------------------------------------------------------------------------------------ postprocess
    def postprocess(self, model_outputs, rules: RuleConfig | None = None, return_words: bool = False):
        words, boxes = model_outputs["words"], model_outputs["boxes"]
        scores = [float(s) for s in model_outputs["scores"]]
        id2label = self.model.config.id2label
        labels = [id2label[int(i)] for i in model_outputs["label_ids"]]
        predicted = labels
        if rules is not None and rules.rules:
            labels = apply_rules(words, boxes, labels, rules, model_outputs["line_ids"])
        entities = []
        for span in bio_spans(labels):
            entities.append({
                "entity_group": span.label,
                "score": float(np.mean(scores[span.start : span.end])),
                "word": " ".join(words[span.start : span.end]),
                "start": span.start,
                "end": span.end,
                "box": [round(v) for v in union_box(boxes[span.start : span.end])],
            })
        if not return_words:
            return entities
        word_rows = []
        for i, word in enumerate(words):
            row = {"text": word, "box": [round(v) for v in boxes[i]], "label": labels[i], "score": round(scores[i], 4)}
            if labels[i] != predicted[i]:
                row["model_label"] = predicted[i]
            if model_outputs["confidences"] is not None:
                row["ocr_confidence"] = model_outputs["confidences"][i]
            word_rows.append(row)
        width, height = model_outputs["size"]
        return {"entities": entities, "words": word_rows, "width": width, "height": height}
