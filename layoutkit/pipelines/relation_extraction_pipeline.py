"""`relation-extraction` pipeline for checkpoints trained with run_relation_extraction.py: which value belongs to
which key (which answer to which question) on a page.

Saved into every relation checkpoint (see `layoutkit/pipelines/attach.py`; the model's own code, relation_model.py, is saved
beside it by `save_pretrained`), so a trained model runs with:

    from transformers import pipeline
    linker = pipeline("relation-extraction", model="runs/funsd-links", trust_remote_code=True)
    linker("form.png", ner_model="runs/funsd-ner")
    # [{"key": {"text": "Date:", "box": [...], "label": "QUESTION"},
    #   "value": {"text": "March 3, 1998", "box": [...], "label": "ANSWER"}, "score": 0.97}, ...]

Input: an image (a path or PIL image; words from OCR, the engine the training data was read with, else RapidOCR),
or a dict `{"image", "words", "boxes"}` (pixel boxes; OCR skipped). The entities to link come from, first found:
- the dict's `"entities"`: `[{"words": [word indices], "label": "QUESTION"}, ...]` (or `"start"`/`"end"`, end
  exclusive, instead of `"words"`), indices into the given words;
- the dict's per-word `"entity_ids"` (an id or None per word) with per-word BIO `"labels"`, as in the annotation
  format (dataset_loader/FORMAT.md);
- the `ner_model` call option: a token-classification pipeline (or a checkpoint folder, loaded with
  `trust_remote_code=True`) that predicts them on the same words.

Preprocessing repeats training (`document_preprocessing` in config.json): page resize, 0-1000 boxes, windows of
`max_seq_length` tokens with `stride`, each window's entity columns (`relations.window_entity_columns`). A pair's
score is the highest over the windows holding both entities; pairs scoring at least `threshold` (call option,
default: the training run's, else 0.5) are returned, best first, only the best head of each tail unless
`one_head_per_tail=False` (default: the training run's setting): `key` is the head entity, `value` the tail, each
`{"text", "box", "label", "words"}` (box: union of the words' boxes in the original image's pixels; words: word
indices). Call options: `ner_model`, `threshold`, `one_head_per_tail`, and the OCR/batching options of the other
layout pipelines (`ocr_engine`, `ocr_lang`, `ocr_config`, `min_ocr_confidence`, `ocr_options`, `batch_size`,
`mixed_precision`).

This file and the modules it imports relatively use only the standard library, numpy, PIL, torch and transformers.
"""

from __future__ import annotations

from typing import Any

import torch

from .boxes import union_box
from .encoding import RelationCollator
from .entity_links import Entity, PairScoreMerger, gold_entities, select_links, window_entity_columns
from .labels import is_bio_tag
from .pipeline_inputs import (
    DEFAULT_WINDOW_BATCH_SIZE,
    WindowedLayoutPipeline,
    has_given_words,
    input_parameters,
    read_document,
    recorded_preprocessing,
)

DEFAULT_THRESHOLD = 0.5


class LayoutRelationExtractionPipeline(WindowedLayoutPipeline):
    """Key -> value links between the entities of a page. See the module docstring for inputs, options, outputs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.preprocessing["box_level"] = recorded_preprocessing(self.model.config).get("box_level", "word")
        self.type_ids = {name: i for i, name in enumerate(self.model.config.entity_types)}
        self._ner_pipelines: dict[str, Any] = {}

    def _sanitize_parameters(self, ocr_engine=None, ocr_lang=None, ocr_config=None, min_ocr_confidence=None,
                             ocr_options=None, window_batch_size=None, mixed_precision=None, ner_model=None,
                             threshold=None, one_head_per_tail=None):
        preprocess, forward = input_parameters(ocr_engine, ocr_lang, ocr_config, min_ocr_confidence, ocr_options,
                                               window_batch_size, mixed_precision)
        if ner_model is not None:
            preprocess["ner_model"] = self._ner_pipeline(ner_model)
        postprocess = {}
        if threshold is not None:
            if not 0 <= float(threshold) <= 1:
                raise ValueError(f"threshold must be a probability in [0, 1], got {threshold}")
            postprocess["threshold"] = float(threshold)
        if one_head_per_tail is not None:
            postprocess["one_head_per_tail"] = bool(one_head_per_tail)
        return preprocess, forward, postprocess

    def _ner_pipeline(self, ner_model):
        if not isinstance(ner_model, str):
            return ner_model
        if ner_model not in self._ner_pipelines:
            from transformers import pipeline

            self._ner_pipelines[ner_model] = pipeline("token-classification", model=ner_model,
                                                      trust_remote_code=True, device=self.device)
        return self._ner_pipelines[ner_model]

    # ------------------------------------------------------------------------------------- preprocess
    def preprocess(self, inputs, ocr: dict | None = None, ner_model=None):
        document = read_document(inputs, self.ocr_engine(ocr))
        page, words, boxes = document["page"], document["words"], document["boxes"]
        entities = self._entities(inputs, document, ner_model)
        model_boxes = boxes
        if self.preprocessing["box_level"] == "segment":
            from .boxes import group_lines, segment_boxes

            lines = document["line_ids"] if document["line_ids"] is not None else group_lines(boxes)
            model_boxes = segment_boxes(boxes, lines)
        resized, scaled = self._resize(page, model_boxes)
        windows = self._windows(resized, words, scaled) if words else []
        for window in windows:
            window.update(window_entity_columns(window["word_ids"], entities, self.type_ids))
        windows = [window for window in windows if window["entity_labels"]]
        return {"windows": windows, "words": words, "boxes": boxes, "entities": entities}

    def _entities(self, inputs, document: dict, ner_model) -> dict[int, Entity]:
        """The page's entities, from the input (given words) or the NER model (see the module docstring)."""
        kept = document["given_word_indices"]
        if has_given_words(inputs) and inputs.get("entities") is not None:
            position = {given: i for i, given in enumerate(kept)}
            entities = {}
            for index, entity in enumerate(inputs["entities"]):
                given = entity.get("words")
                if given is None:
                    if "start" not in entity or "end" not in entity:
                        raise ValueError(f"entities[{index}]: give 'words' (word indices) or 'start' and 'end'")
                    given = range(int(entity["start"]), int(entity["end"]))
                if not isinstance(entity.get("label"), str):
                    raise ValueError(f"entities[{index}]: 'label' must be the entity type, e.g. 'QUESTION'")
                indices = tuple(position[int(w)] for w in given if int(w) in position)
                if indices:
                    entities[index] = Entity(indices, entity["label"])
            return entities
        if has_given_words(inputs) and inputs.get("entity_ids") is not None:
            ids, labels = inputs["entity_ids"], inputs.get("labels")
            if labels is None or len(labels) != len(ids) or len(ids) != len(inputs["words"]):
                raise ValueError("'entity_ids' needs 'labels' (BIO tags), both with one value per word")
            bad = [tag for tag in labels if not is_bio_tag(tag)]
            if bad:
                raise ValueError(f"'labels' must be BIO tags ('O', 'B-QUESTION', ...), got {bad[0]!r}")
            return gold_entities([ids[i] for i in kept], [labels[i] for i in kept])
        if ner_model is None:
            raise ValueError(
                "no entities to link: pass ner_model=... (a token-classification pipeline or checkpoint), or give "
                "'words', 'boxes' and 'entities' (or 'entity_ids' + 'labels') in a dict input"
            )
        predicted = ner_model({"image": document["page"], "words": document["words"], "boxes": document["boxes"]})
        return {i: Entity(tuple(range(e["start"], e["end"])), e["entity_group"]) for i, e in enumerate(predicted)}

    # ---------------------------------------------------------------------------------------- forward
    def _forward(self, model_inputs, window_batch_size: int = DEFAULT_WINDOW_BATCH_SIZE, mixed_precision: str = "no"):
        windows = model_inputs.pop("windows")
        merger = PairScoreMerger(1)
        for positions, logits in self._run_windows(windows, window_batch_size, mixed_precision, RelationCollator,
                                                   ("word_ids", "doc_index", "entity_ids")):
            merger.add(positions["doc_index"].numpy(), positions["entity_ids"].numpy(),
                       torch.sigmoid(logits.float()).cpu().numpy())
        return {**model_inputs, "scores": merger.scores[0]}

    # ------------------------------------------------------------------------------------ postprocess
    def postprocess(self, model_outputs, threshold: float | None = None, one_head_per_tail: bool | None = None):
        if threshold is None:
            threshold = float(getattr(self.model.config, "threshold", DEFAULT_THRESHOLD))
        if one_head_per_tail is None:
            one_head_per_tail = bool(getattr(self.model.config, "one_head_per_tail", True))
        words, boxes, entities = model_outputs["words"], model_outputs["boxes"], model_outputs["entities"]

        def describe(entity: Entity) -> dict:
            return {"text": " ".join(words[w] for w in entity.words), "label": entity.type, "words": list(entity.words),
                    "box": [round(v) for v in union_box([boxes[w] for w in entity.words])]}

        pairs = list(select_links(model_outputs["scores"], threshold, one_head_per_tail).items())
        return [{"key": describe(entities[head]), "value": describe(entities[tail]), "score": round(score, 4)}
                for (head, tail), score in sorted(pairs, key=lambda item: -item[1])]
