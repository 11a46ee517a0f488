"""Relation extraction over documents: the model built from an encoder, dataset windows with entity columns,
batching, distributed prediction of links and their evaluation (used by run_relation_extraction.py)."""

from __future__ import annotations

from typing import Sequence

import torch
from datasets import Dataset, Features, Value
from datasets import Sequence as SequenceFeature

from ..pipelines.encoding import LayoutCollator, RelationCollator, encode_pages  # noqa: F401
from ..pipelines.entity_links import (
    Entity,
    PairScoreMerger,
    gold_entities,
    link_keys,
    oriented_pairs,
    relation_scores,
    span_entities,
    window_entity_columns,
)
from ..pipelines.labels import OUTSIDE
from ..pipelines.modeling import ModelFamily
from ..pipelines.relation_model import LayoutRelationConfig, LayoutRelationModel
from .arguments import RelationExtractionArguments
from .data import standardize_label_column
from .driver import Evaluation, Task
from .ner_task import BOX_COLUMNS, window_features

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
        columns = encode_pages(batch["image"], batch["words"], batch[box_column], tokenizer, image_processor, family,
                               max_length, stride, doc_indices=indices)
        for name in ENTITY_COLUMNS:
            columns[name] = []
        for word_ids, doc in zip(columns["word_ids"], columns["doc_index"]):
            window = window_entity_columns(word_ids, entities[doc], type_ids, pairs[doc])
            for name in ENTITY_COLUMNS:
                columns[name].append(window[name])
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


def predicted_entities(accelerator, ner_name_or_path: str, dataset: Dataset, max_seq_length: int, stride: int,
                       pad_to_multiple_of: int | None, batch_size: int) -> list[dict[int, Entity]]:
    """The entities a token-classification checkpoint (run_invoice_ner.py) finds in each document of `dataset`,
    with the windows and box level it was trained with (the given window settings when it recorded none): the
    entities of the end-to-end evaluation."""
    from torch.utils.data import DataLoader
    from transformers import AutoModelForTokenClassification

    from ..pipelines.modeling import load_processing, model_family
    from .ner_task import encode_ner_split, predict_words

    ner = AutoModelForTokenClassification.from_pretrained(ner_name_or_path).to(accelerator.device)
    tokenizer, image_processor, _ = load_processing(ner_name_or_path)
    family = model_family(ner.config)
    settings = dict(getattr(ner.config, "document_preprocessing", None) or {})
    label_names = [ner.config.id2label[i] for i in range(len(ner.config.id2label))]
    documents = dataset.remove_columns([c for c in ("ner_tags",) if c in dataset.column_names])
    windows = encode_ner_split(
        documents, tokenizer, image_processor, family, label_names, settings.get("max_seq_length", max_seq_length),
        settings.get("stride", stride), box_level=settings.get("box_level", "word"),
    )
    collator = LayoutCollator(tokenizer.pad_token_id, pad_to_multiple_of, family.image_input)
    dataloader = accelerator.prepare(DataLoader(windows, collate_fn=collator, batch_size=batch_size))
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


# ------------------------------------------------------------------------------------------ the training task
class RelationExtractionTask(Task):
    """Train a LayoutLM-family encoder with a biaffine pair head to link entities: which answer belongs to which
    question, which value to which key. Metrics are link precision/recall/F1 on gold entities, and end to end on
    the entities of --ner_model_name_or_path."""

    pipeline_task = "relation-extraction"
    script_name = "run_relation_extraction"
    arguments_class = RelationExtractionArguments
    optional_groups = ()
    collator_class = RelationCollator
    model_inputs = staticmethod(model_inputs)

    def prepare_dataset(self, accelerator, raw):
        raw = standardize_label_column(raw, self.args.task.label_column_name, "ner_tags")
        for split in raw:
            check_relation_columns(raw[split], split)
        return raw

    def read_labels(self, raw) -> None:
        """Entity types, candidate links, and each split's gold entities and links."""
        self.label_names = raw["train"].features["ner_tags"].feature.names
        self.entity_types = entity_types_of(self.label_names)
        self.candidates = (parse_relation_types(self.args.task.relation_types, self.entity_types)
                           or relation_types_in(raw["train"], self.label_names))
        self.entities = {split: document_entities(raw[split], self.label_names) for split in raw}
        self.pairs = {split: [oriented_pairs(e, r, self.candidates)
                              for e, r in zip(self.entities[split], raw[split]["relations"])] for split in raw}
        self.gold_links = {split: [link_keys(e, p) for e, p in zip(self.entities[split], self.pairs[split])]
                           for split in raw}

    def model_class(self):
        return RelationModelLoader(self.entity_types, self.candidates, self.args.task.pooling)

    def config_kwargs(self) -> dict:
        return {}

    def recorded_preprocessing(self) -> dict:
        return {"box_level": self.args.task.box_level}

    def configure_model(self, config) -> None:
        config.threshold = self.args.task.threshold
        config.one_head_per_tail = not self.args.task.all_heads_per_tail

    def encode(self, raw, split: str, processing, entities=None, pairs=None):
        data = self.args.data
        return encode_relation_split(
            raw[split], self.entities[split] if entities is None else entities,
            self.pairs[split] if pairs is None else pairs, processing.tokenizer, processing.image_processor,
            processing.family, self.entity_types, data.max_seq_length, data.stride, box_level=self.args.task.box_level,
            num_proc=data.preprocessing_num_workers, load_from_cache_file=not data.overwrite_cache,
        )

    def describe(self, raw, windows) -> str:
        return (f"{super().describe(raw, windows)}, {sum(len(p) for p in self.pairs['train'])} links; candidate links "
                f"{', '.join(f'{h} -> {t}' for h, t in self.candidates)}")

    def card_labels(self) -> list[str]:
        return self.entity_types

    def evaluate(self, accelerator, model, dataloader, raw, split: str, final: bool, entities=None) -> Evaluation:
        metrics, records = evaluate_relations(
            accelerator, model, dataloader, raw[split], self.entities[split] if entities is None else entities,
            self.gold_links[split], threshold=self.args.task.threshold,
            one_head_per_tail=not self.args.task.all_heads_per_tail,
        )
        return Evaluation(metrics, records)

    def run_results(self) -> dict:
        return {"relation_types": [f"{h}:{t}" for h, t in self.candidates]}

    def report(self, accelerator, model, raw, split: str, prefix: str, evaluation: Evaluation,
               processing) -> dict:
        """With --ner_model_name_or_path, the links found among the entities that model predicts (end to end)."""
        ner_model = self.args.task.ner_model_name_or_path
        if not ner_model:
            return {}
        from torch.utils.data import DataLoader

        data, training = self.args.data, self.args.training
        predicted = predicted_entities(accelerator, ner_model, raw[split], data.max_seq_length, data.stride,
                                       data.pad_to_multiple_of, training.per_device_eval_batch_size)
        windows = self.encode(raw, split, processing, entities=predicted, pairs=[set()] * len(predicted))
        dataloader = accelerator.prepare(DataLoader(windows, collate_fn=self.collator(processing, evaluation=True),
                                                    batch_size=training.per_device_eval_batch_size))
        end_to_end = self.evaluate(accelerator, model, dataloader, raw, split, final=True, entities=predicted).metrics
        accelerator.print(f"{split} (predicted entities): {self.headline(end_to_end)}")
        return {f"{prefix}_end_to_end_{k}": v for k, v in end_to_end.items()}


def main(argv=None, description: str | None = None) -> dict:
    from .driver import main as run

    return run(RelationExtractionTask, argv, description)
