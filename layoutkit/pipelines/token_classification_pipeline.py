"""`token-classification` pipeline for LayoutLM-family checkpoints trained with run_invoice_ner.py.

Saved into every checkpoint (see `layoutkit/pipelines/attach.py`), so a trained model runs with two lines:

    from transformers import pipeline
    extractor = pipeline("token-classification", model="runs/invoices", trust_remote_code=True)
    extractor("invoice.png")
    # [{"entity_group": "total", "score": 0.98, "word": "1,250.00", "start": 41, "end": 42,
    #   "box": [612, 880, 701, 902], "continuation": False}, ...]

Input: an image (a path or a PIL image; words come from OCR: the engine and settings the training data was read
with, recorded in config.json, else RapidOCR), or a dict
`{"image": ..., "words": [...], "boxes": [[x0, y0, x1, y1], ...]}` with boxes in the image's pixels (OCR
is skipped; optional "segment_boxes" or "line_ids"). A list of inputs returns a list of results. A PDF's pages:
`extractor.pdf_page_inputs(pdf, dpi=200, pdf_text="auto")` gives one input per page, with the words of its text
layer where that covers the page (`pdf_text.py`).

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
"width", "height", "words_source"}` (where the words came from: "given", the input's own "words_source" such as
"pdf_text" for a PDF's text layer, or "ocr:ENGINE"); `return_fields=True` adds `"fields"`, one typed value per field
(`fields.py`, types from `schema`) with its calibrated `score` and `needs_review`, `"line_items"`, the rows of the
item table (`line_items.py`; alone with `return_line_items=True`), and `"checks"`, `"review_status"`,
`"review_reasons"` (`review.py`); `draw=True` adds `"image"`, the page with its words and entities drawn and a legend
of the field types' colours (`draw.py`); `draw="panel"` with a side panel listing the entities instead of the legend.

Call options: `ocr_engine` ("rapidocr", "tesseract" or an `OcrEngine`), `ocr_lang` ("eng"), `ocr_config` (extra
tesseract options), `min_ocr_confidence`, `ocr_options` (a dict of engine settings), `batch_size` (windows per
forward pass, default 8), `mixed_precision` ("no" or "bf16" autocast), `rules` (post-processing rules, see
`postprocess.py`), `return_words`, `return_fields`, `return_line_items`, `schema` (a `FieldSchema`, dict or JSON
path), `locale` and `day_first` (override the schema's: how dates and amounts are read), `draw`.

This file and the modules it imports relatively use only the standard library, numpy, PIL, torch and
transformers (the OCR engine's package only when OCR runs), as required for code loaded with `trust_remote_code`.
The input
side (reading, OCR, resize, windows, batched forward) is `pipeline_inputs.py`, shared with the
document-classification pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .boxes import group_lines, segment_boxes, union_box
from .draw import draw_page
from .fields import FieldSchema
from .labels import OUTSIDE, bio_spans
from .line_items import group_line_items
from .pipeline_inputs import (
    DEFAULT_WINDOW_BATCH_SIZE,
    WindowedLayoutPipeline,
    check_words,
    has_given_words,
    input_parameters,
    read_document,
    recorded_preprocessing,
)
from .postprocess import RuleConfig, apply_rules
from .review import assess_document, trust_settings
from .windows import WordPredictionMerger


class LayoutTokenClassificationPipeline(WindowedLayoutPipeline):
    """Key-information extraction from a page image with a LayoutLM, LayoutLMv2/LayoutXLM, LayoutLMv3 or LiLT
    token-classification checkpoint. See the module docstring for inputs, options and outputs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # What the model reads as a word's box: its own ("word") or its line's ("segment"), as in training.
        self.preprocessing["box_level"] = recorded_preprocessing(self.model.config).get("box_level", "word")

    def _sanitize_parameters(
        self,
        ocr_engine=None,
        ocr_lang=None,
        ocr_config=None,
        min_ocr_confidence=None,
        ocr_options=None,
        window_batch_size=None,
        mixed_precision=None,
        rules=None,
        return_words=None,
        return_fields=None,
        schema=None,
        draw=None,
        aggregation_strategy=None,
        return_line_items=None,
        locale=None,
        day_first=None,
    ):
        preprocess, forward = input_parameters(ocr_engine, ocr_lang, ocr_config, min_ocr_confidence, ocr_options,
                                               window_batch_size, mixed_precision)
        postprocess = {}
        if rules is not None:
            postprocess["rules"] = RuleConfig.from_value(rules)
        if return_words is not None:
            postprocess["return_words"] = bool(return_words)
        if return_fields is not None or schema is not None or locale is not None or day_first is not None:
            postprocess["return_fields"] = bool(return_fields) or schema is not None
            settings = FieldSchema.load(schema).to_dict()
            if locale is not None:
                settings["locale"] = locale
            if day_first is not None:
                settings["day_first"] = bool(day_first)
            postprocess["schema"] = FieldSchema.load(settings)
        if draw is not None:
            postprocess["draw"] = draw if draw == "panel" else bool(draw)
        if return_line_items is not None:
            postprocess["return_line_items"] = bool(return_line_items)
        if aggregation_strategy not in (None, "simple"):
            raise ValueError(
                "this pipeline always groups words into entities (aggregation_strategy='simple'); "
                "pass return_words=True for the label and score of every word"
            )
        return preprocess, forward, postprocess

    # ------------------------------------------------------------------------------------- preprocess
    def _read_document(self, inputs, ocr: dict | None) -> dict[str, Any]:
        """The page and its words with pixel boxes (given, or from OCR), plus the optional line structure a
        dict input may give: `segment_boxes` or `line_ids`."""
        document = read_document(inputs, self.ocr_engine(ocr))
        document["segment_boxes"] = None
        if has_given_words(inputs):
            kept = document["given_word_indices"]  # the given words with visible text: per-word inputs follow
            if inputs.get("segment_boxes") is not None:
                _, segments = check_words(inputs["words"], inputs["segment_boxes"], document["page"].size,
                                          "segment_boxes")
                document["segment_boxes"] = [segments[i] for i in kept]
            if inputs.get("line_ids") is not None:
                if len(inputs["line_ids"]) != len(inputs["words"]):
                    raise ValueError("give one line id per word in 'line_ids'")
                document["line_ids"] = [int(inputs["line_ids"][i]) for i in kept]
        return document

    def preprocess(self, inputs, ocr: dict | None = None):
        document = self._read_document(inputs, ocr)
        page, words, boxes = document["page"], document["words"], document["boxes"]
        model_boxes = boxes
        if self.preprocessing["box_level"] == "segment":
            if document["segment_boxes"] is not None:
                model_boxes = document["segment_boxes"]
            else:
                lines = document["line_ids"] if document["line_ids"] is not None else group_lines(boxes)
                model_boxes = segment_boxes(boxes, lines)
        resized, scaled = self._resize(page, model_boxes)
        windows = self._windows(resized, words, scaled) if words else []
        return {
            "windows": windows,
            "words": words,
            "boxes": boxes,
            "line_ids": document["line_ids"],
            "confidences": document["confidences"],
            "words_source": document["words_source"],
            "size": page.size,
            "page": page,
        }

    # ---------------------------------------------------------------------------------------- forward
    def _forward(self, model_inputs, window_batch_size: int = DEFAULT_WINDOW_BATCH_SIZE, mixed_precision: str = "no"):
        windows = model_inputs.pop("windows")
        words = model_inputs["words"]
        default_label = int(self.model.config.label2id.get(OUTSIDE, 0))
        merger = WordPredictionMerger([len(words)], default_label)
        for positions, logits in self._run_windows(windows, window_batch_size, mixed_precision):
            scores, labels = logits.float().softmax(-1).max(-1)
            merger.add(positions["doc_index"].numpy(), positions["word_ids"].numpy(), labels.cpu().numpy(),
                       scores.cpu().numpy())
        label_ids, scores = merger.result(0)
        return {**model_inputs, "label_ids": label_ids, "scores": scores}

    # ------------------------------------------------------------------------------------ postprocess
    def entity_types(self) -> list[str]:
        """The model's field types in label-id order (B-/I- prefixes dropped): the order of the drawing's colours."""
        id2label = self.model.config.id2label
        names = (id2label[i] for i in sorted(id2label, key=int))
        return list(dict.fromkeys(name[2:] if name[:2] in ("B-", "I-") else name for name in names if name != OUTSIDE))

    def postprocess(self, model_outputs, rules: RuleConfig | None = None, return_words: bool = False,
                    return_fields: bool = False, schema: FieldSchema | None = None, draw: bool | str = False,
                    return_line_items: bool = False):
        words, boxes = model_outputs["words"], model_outputs["boxes"]
        scores = [float(s) for s in model_outputs["scores"]]
        id2label = self.model.config.id2label
        labels = [id2label[int(i)] for i in model_outputs["label_ids"]]
        predicted = labels
        rules = rules if rules is not None else RuleConfig()  # the default rules
        if rules.rules:
            labels = apply_rules(words, boxes, labels, rules, model_outputs["line_ids"], scores)
        entities = []
        for span in bio_spans(labels):
            entities.append({
                "entity_group": span.label,
                "score": float(np.mean(scores[span.start : span.end])),
                "word": " ".join(words[span.start : span.end]),
                "start": span.start,
                "end": span.end,
                "box": [round(v) for v in union_box(boxes[span.start : span.end])],
                # Opened by an I- tag after no span of its type: the rest of an earlier value (fields.py merges it).
                "continuation": labels[span.start].startswith("I-"),
            })
        if not (return_words or return_fields or return_line_items or draw):
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
        output = {"entities": entities, "words": word_rows, "width": width, "height": height,
                  "words_source": model_outputs["words_source"]}
        if return_fields:
            # Calibrated scores, cross-field checks and the review decision: review.py.
            output.update(assess_document(entities, schema, trust_settings(self.model.config),
                                          words_source=model_outputs["words_source"]))
        elif return_line_items:
            output["line_items"] = group_line_items(entities)
        if draw:
            output["image"] = draw_page(model_outputs["page"], word_rows, entities, labels=self.entity_types(),
                                        panel=draw == "panel")
        return output
