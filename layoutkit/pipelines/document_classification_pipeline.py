"""`image-classification` pipeline for LayoutLM-family checkpoints trained with run_doc_classification.py.

Saved into every checkpoint (see `layoutkit/pipelines/attach.py`), so a trained model runs with two lines:

    from transformers import pipeline
    classifier = pipeline("image-classification", model="runs/doctypes", trust_remote_code=True)
    classifier("scan.png")
    # [{"label": "invoice", "score": 0.97}, {"label": "receipt", "score": 0.02}, {"label": "letter", "score": 0.01}]

Input: an image (a path or a PIL image; words come from OCR: the engine the training data was read with, else
RapidOCR), or a dict
`{"image": ..., "words": [...], "boxes": [[x0, y0, x1, y1], ...]}` with boxes in the image's pixels (OCR is
skipped). A list of inputs returns a list of results.

Preprocessing repeats training exactly, with the same functions and the `document_preprocessing` the training
script recorded in config.json: `load_page`, `resize_document` (page resize), `normalize_boxes` (0-1000 grid),
`encode_documents` (overlapping windows of `max_seq_length` tokens with `stride`), `window_page_images` and
`LayoutCollator`. The document's class scores are the softmax of the MEAN of its windows' logits.

Output: like the stock image-classification pipeline, `[{"label", "score"}, ...]` sorted by score, best first,
`top_k` of them (default 5, at most the number of classes).

Call options: `top_k`, `ocr_engine` ("rapidocr", "tesseract" or an `OcrEngine`), `ocr_lang` ("eng"), `ocr_config`
(extra tesseract options), `min_ocr_confidence`, `ocr_options` (a dict of engine settings), `batch_size` (windows
per forward pass, default 8), `mixed_precision` ("no", "bf16" or "fp16" autocast).

This file and the modules it imports relatively use only the standard library, numpy, PIL, torch and
transformers (the OCR engine's package only when OCR runs), as required for code loaded with `trust_remote_code`.
The input
side (reading, OCR, resize, windows, batched forward) is `pipeline_inputs.py`, shared with the
token-classification pipeline.
"""

from __future__ import annotations

import numpy as np
import torch

from .encoding import document_words
from .pipeline_inputs import DEFAULT_WINDOW_BATCH_SIZE, WindowedLayoutPipeline, input_parameters, read_document

DEFAULT_TOP_K = 5


class LayoutDocumentClassificationPipeline(WindowedLayoutPipeline):
    """Document image classification with a LayoutLM, LayoutLMv2/LayoutXLM, LayoutLMv3 or LiLT sequence-classification
    checkpoint. See the module docstring for inputs, options and outputs."""

    def _sanitize_parameters(
        self, top_k=None, ocr_engine=None, ocr_lang=None, ocr_config=None, min_ocr_confidence=None, ocr_options=None,
        window_batch_size=None, mixed_precision=None, function_to_apply=None,
    ):
        preprocess, forward = input_parameters(ocr_engine, ocr_lang, ocr_config, min_ocr_confidence, ocr_options,
                                               window_batch_size, mixed_precision)
        postprocess = {}
        if top_k is not None:
            if int(top_k) < 1:
                raise ValueError(f"top_k must be at least 1, got {top_k}")
            postprocess["top_k"] = int(top_k)
        if function_to_apply not in (None, "softmax"):
            raise ValueError("document classes are scored with a softmax over the mean window logits")
        return preprocess, forward, postprocess

    # ------------------------------------------------------------------------------------- preprocess
    def preprocess(self, inputs, ocr: dict | None = None):
        document = read_document(inputs, self.ocr_engine(ocr))
        words = document["words"]
        resized, scaled = self._resize(document["page"], document["boxes"])
        # As in training: a page without words still gets one window ([CLS] [SEP] + image).
        return {"windows": self._windows(resized, *document_words(words, scaled))}

    # ---------------------------------------------------------------------------------------- forward
    def _forward(self, model_inputs, window_batch_size: int = DEFAULT_WINDOW_BATCH_SIZE, mixed_precision: str = "no"):
        windows = model_inputs["windows"]
        chunks = [logits.float().cpu() for _, logits in self._run_windows(windows, window_batch_size, mixed_precision)]
        # The document's logits: the mean over its windows (as in evaluation during training).
        return {"logits": torch.cat(chunks).mean(0), "windows": len(windows)}

    # ------------------------------------------------------------------------------------ postprocess
    def postprocess(self, model_outputs, top_k: int = DEFAULT_TOP_K):
        scores = model_outputs["logits"].softmax(-1).numpy()
        id2label = self.model.config.id2label
        top_k = min(top_k, len(scores))
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"label": id2label[int(i)], "score": float(scores[i])} for i in order]
