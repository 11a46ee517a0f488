"""Relation extraction over documents: the model built from an encoder, dataset windows with entity columns,
batching, distributed prediction of links and their evaluation (used by run_relation_extraction.py)."""

from __future__ import annotations

from typing import Sequence

import torch
from datasets import Dataset, Features, Sequence as SequenceFeature, Value

from .boxes import normalize_boxes
from .encoding import LayoutCollator, RelationCollator, encode_documents, window_page_images  # noqa: F401
from .labels import OUTSIDE
from .modeling import ModelFamily
from .ner import BOX_COLUMNS, window_features
from .relation_model import LayoutRelationConfig, LayoutRelationModel
from .relations import (
    Entity,
    PairScoreMerger,
    gold_entities,
    link_keys,
    oriented_pairs,
    relation_scores,
    span_entities,
    window_entity_columns,
)

ENTITY_COLUMNS = ("entity_index", "entity_labels", "entity_ids", "relation_pairs")
BOOKKEEPING = ("word_ids", "doc_index", "entity_ids")


# ------------------------------------------------------------------------------------------- label set
def entity_types_of(label_names: Sequence[str]) -> list[str]:
    """The entity types of a BIO label list, in label order."""
    return list(dict.fromkeys(name[2:] for name in label_names if name != OUTSIDE))


def parse_relation_types(value: str | None, entity_types: Sequence[str]) -> list[list[str]]:
    """`--relation_types QUESTION:ANSWER,HEADER:QUESTION` as [[head type, tail type], ...]."""
    if not value:
        return []
    pairs = []
    for item in value.split(","):
        parts = item.strip().split(":")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--relation_types: {item!r} must be HEAD_TYPE:TAIL_TYPE, e.g. QUESTION:ANSWER")
        unknown = [name for name in parts if name not in entity_types]
        if unknown:
            raise ValueError(f"--relation_types: {unknown} not among the dataset's entity types {list(entity_types)}")
        pairs.append(parts)
    return pairs


def relation_types_in(dataset: Dataset, label_names: Sequence[str]) -> list[list[str]]:
    """The (head type, tail type) pairs the dataset's relations link, sorted: the default candidates."""
    found = set()
    for entity_ids, tags, relations in zip(dataset["entity_ids"], dataset["ner_tags"], dataset["relations"]):
        entities = gold_entities(entity_ids, [label_names[t] for t in tags])
        for head, tail in oriented_pairs(entities, relations, []):
            found.add((entities[head].type, entities[tail].type))
    return [list(pair) for pair in sorted(found)]


def check_relation_columns(dataset: Dataset, split: str) -> None:
    missing = [name for name in ("entity_ids", "relations") if name not in dataset.column_names]
    if missing:
        raise ValueError(
            f"the {split} split has no {missing} column(s): relation extraction needs entities and their links "
            "(FORMAT.md: per-word 'entity_ids' and 'relations'; `python -m dataset_loader funsd` keeps FUNSD's)"
        )


# ----------------------------------------------------------------------------------------------- model
class RelationModelLoader:
    """What `training.load_model_and_processing` calls as `model_class`: the relation model around an encoder
    built from a config (from scratch) or loaded from a checkpoint (`AutoModel`), with this task's head."""

    def __init__(self, entity_types: Sequence[str], relation_candidates: Sequence[Sequence[str]], pooling: str):
        self.head = dict(entity_types=list(entity_types), relation_candidates=[list(p) for p in relation_candidates],
                         pooling=pooling)

    def from_config(self, config, **_) -> LayoutRelationModel:
        return LayoutRelationModel(LayoutRelationConfig(encoder=config, **self.head))

    def from_pretrained(self, name_or_path: str, config, **hub) -> LayoutRelationModel:
        from transformers import AutoModel

        model = self.from_config(config)
        encoder = AutoModel.from_pretrained(name_or_path, config=config, **hub)
        model.encoder.load_state_dict(encoder.state_dict())
        return model


def load_relation_pipeline(name_or_path: str, device=None):
    """The relation-extraction pipeline of a checkpoint, built from layoutkit's own classes (no remote code runs)."""
    from .modeling import load_processing
    from .relation_extraction_pipeline import LayoutRelationExtractionPipeline

    model = LayoutRelationModel.from_pretrained(name_or_path)
    tokenizer, image_processor, _ = load_processing(name_or_path)
    return LayoutRelationExtractionPipeline(model=model, tokenizer=tokenizer, image_processor=image_processor,
                                            device=device)


# ----------------------------------------------------------------------------------------- data windows
def document_entities(dataset: Dataset, label_names: Sequence[str]) -> list[dict[int, Entity]]:
    return [gold_entities(ids, [label_names[t] for t in tags])
            for ids, tags in zip(dataset["entity_ids"], dataset["ner_tags"])]


def encode_relation_split(
    dataset: Dataset,
    entities: Sequence[dict[int, Entity]],
    pairs: Sequence[set[tuple[int, int]]],
    tokenizer,
    image_processor,
    family: ModelFamily,
    entity_types: Sequence[str],
    max_length: int,
    stride: int,
    box_level: str = "word",
    num_proc: int | None = None,
    load_from_cache_file: bool = True,
) -> Dataset:
    """Windows of a split (as `ner.encode_ner_split`) with the entity columns of `relations.window_entity_columns`:
    `entities[i]` are document i's entities (gold or predicted), `pairs[i]` its gold links (for the loss)."""
    box_column = BOX_COLUMNS[box_level]
    type_ids = {name: i for i, name in enumerate(entity_types)}
    entities, pairs = list(entities), [sorted(p) for p in pairs]

    def encode(batch, indices):
        images = batch["image"]
        boxes = [normalize_boxes(b, image.width, image.height) for b, image in zip(batch[box_column], images)]
        columns = encode_documents(batch["words"], boxes, tokenizer, family, max_length, stride, doc_indices=indices)
        for name in ENTITY_COLUMNS:
            columns[name] = []
        for word_ids, doc in zip(columns["word_ids"], columns["doc_index"]):
            window = window_entity_columns(word_ids, entities[doc], type_ids, pairs[doc])
            for name in ENTITY_COLUMNS:
                columns[name].append(window[name])
        position = {doc: i for i, doc in enumerate(indices)}
        columns.update(window_page_images(images, image_processor, family, [position[d] for d in columns["doc_index"]]))
        return columns

    features = Features({
        **window_features(family, image_processor, with_labels=False),
        "entity_index": SequenceFeature(Value("int32")),
        "entity_labels": SequenceFeature(Value("int32")),
        "entity_ids": SequenceFeature(Value("int32")),
        "relation_pairs": SequenceFeature(SequenceFeature(Value("int32"), length=2)),
    })
    windows = dataset.map(
        encode, batched=True, batch_size=32, with_indices=True, remove_columns=dataset.column_names,
        features=features, num_proc=num_proc, load_from_cache_file=load_from_cache_file,
        desc="Encoding documents and entities into windows",
    )
    return windows.with_format("numpy")


def model_inputs(batch: dict) -> dict:
    """The model's inputs: a batch without the bookkeeping columns used to merge windows."""
    return {k: v for k, v in batch.items() if k not in BOOKKEEPING}


def predicted_entities(accelerator, args, ner_name_or_path: str, dataset: Dataset) -> list[dict[int, Entity]]:
    """The entities a token-classification checkpoint (run_invoice_ner.py) finds in each document of `dataset`,
    with the windows and box level it was trained with: the entities of the end-to-end evaluation."""
    from torch.utils.data import DataLoader
    from transformers import AutoModelForTokenClassification

    from .modeling import load_processing, model_family
    from .ner import encode_ner_split, predict_words

    ner = AutoModelForTokenClassification.from_pretrained(ner_name_or_path).to(accelerator.device)
    tokenizer, image_processor, _ = load_processing(ner_name_or_path)
    family = model_family(ner.config)
    settings = dict(getattr(ner.config, "document_preprocessing", None) or {})
    label_names = [ner.config.id2label[i] for i in range(len(ner.config.id2label))]
    documents = dataset.remove_columns([c for c in ("ner_tags",) if c in dataset.column_names])
    windows = encode_ner_split(
        documents, tokenizer, image_processor, family, label_names, settings.get("max_seq_length", args.max_seq_length),
        settings.get("stride", args.stride), box_level=settings.get("box_level", "word"),
    )
    collator = LayoutCollator(tokenizer.pad_token_id, args.pad_to_multiple_of, family.image_input)
    dataloader = accelerator.prepare(
        DataLoader(windows, collate_fn=collator, batch_size=args.per_device_eval_batch_size)
    )
    merger = predict_words(accelerator, ner, dataloader, [len(w) for w in dataset["words"]],
                           label_names.index(OUTSIDE))
    return [span_entities([label_names[i] for i in merger.result(doc)[0]]) for doc in range(len(dataset))]


# ------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_pairs(accelerator, model, dataloader, num_documents: int) -> PairScoreMerger:
    """Link probabilities of every candidate pair of every document (windows sharded across processes)."""
    model.eval()
    merger = PairScoreMerger(num_documents)
    for batch in dataloader:
        inputs = model_inputs(batch)
        inputs.pop("relation_pairs", None)
        scores = torch.sigmoid(model(**inputs).logits.float())  # -inf (no candidate) -> 0
        entity_ids = accelerator.pad_across_processes(batch["entity_ids"], dim=1, pad_index=-1)
        scores = accelerator.pad_across_processes(scores, dim=1, pad_index=0)
        scores = accelerator.pad_across_processes(scores, dim=2, pad_index=0)
        gathered = accelerator.gather_for_metrics((batch["doc_index"], entity_ids, scores))
        merger.add(*(tensor.cpu().numpy() for tensor in gathered))
    return merger


def evaluate_relations(accelerator, model, dataloader, documents: Dataset, entities, gold_links,
                       threshold: float = 0.5, one_head_per_tail: bool = True):
    """Relation precision/recall/F1 of a split. `entities[i]`: the entities document i's windows were encoded with
    (gold or predicted); `gold_links[i]`: its gold links as `relations.link_keys`. Returns (metrics, records)."""
    merger = predict_pairs(accelerator, model, dataloader, len(documents))
    words = documents["words"]
    ids = documents["id"] if "id" in documents.column_names else [str(i) for i in range(len(documents))]
    predicted, records = [], []
    for doc in range(len(documents)):
        found = merger.pairs(doc, threshold, one_head_per_tail)
        predicted.append(link_keys(entities[doc], found))
        records.append({
            "id": ids[doc],
            "links": [
                {"head": " ".join(words[doc][w] for w in entities[doc][h].words), "head_type": entities[doc][h].type,
                 "tail": " ".join(words[doc][w] for w in entities[doc][t].words), "tail_type": entities[doc][t].type,
                 "score": round(score, 4),
                 "correct": (entities[doc][h].key(), entities[doc][t].key()) in gold_links[doc]}
                for (h, t), score in sorted(found.items(), key=lambda item: -item[1])
            ],
            "gold_links": len(gold_links[doc]),
        })
    return relation_scores(gold_links, predicted), records
