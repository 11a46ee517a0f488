#!/usr/bin/env python
"""Line items: row-level exact match on held-out synthetic invoices, for the row-grouping rule and for links.

    python -m dataset_loader synth --output data/heldout_invoices --num_docs 200 --seed 1001 --links --multi_page 0.2
    python benchmarks/line_items.py --data_dir data/heldout_invoices --model runs/invoices-layoutlm-small

Documents: every annotation of `--data_dir` (pages of one document share "document_id" and are ordered by
"page"); the annotations must carry `row_ids` (`synth --links`). Gold rows come from the row ids: per row, the
description text and the quantity, unit price and amount typed by `fields.py` (what `line_items.py` returns).

Rows of the table:
- `gold labels + rule`: the annotated entities grouped by the rule (the rule's upper bound: errors are grouping
  errors only);
- `gold labels + gold links`: the annotated entities grouped by the annotated description -> quantity / unit
  price / amount relations (the `links=` path a relation model's predictions take);
- one row per `--model`: its predicted entities (words and boxes given, no OCR) grouped by the rule;
- with `--relation_model` (a run_relation_extraction.py checkpoint, loaded with trust_remote_code): the gold and
  each model's entities grouped by the links that model predicts between them (`line_items.links_from_pairs`).

A predicted row is exact when description, quantity, unit price and amount all equal a gold row's (each gold row
matches once). Reported: gold and predicted rows, precision (exact / predicted), recall (exact / gold) and the
share of documents whose rows are all exact (nothing missing, nothing extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from layoutkit.pipelines.boxes import union_box
from layoutkit.pipelines.fields import parse_amount, parse_number
from layoutkit.pipelines.labels import bio_spans
from layoutkit.pipelines.line_items import column_of, group_line_items, links_from_pairs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True, help="images/ + annotations/ written by synth --links")
    parser.add_argument("--model", action="append", default=[], help="token-classification checkpoint (repeatable)")
    parser.add_argument("--relation_model", help="relation-extraction checkpoint: also group by its predicted links")
    parser.add_argument("--max_docs", type=int, help="only the first N documents")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    return parser.parse_args(argv)


# -------------------------------------------------------------------------------------------- documents
def load_documents(data_dir: Path, max_docs: int | None) -> list[dict]:
    """[{"id", "pages": [annotation, ...]}] in id order, pages in page order."""
    documents: dict[str, list[dict]] = {}
    for path in sorted((data_dir / "annotations").glob("*.json")):
        annotation = json.loads(path.read_text(encoding="utf-8"))
        if "row_ids" not in annotation:
            raise SystemExit(f"{path}: no row_ids; generate the documents with "
                             "`python -m dataset_loader synth --links`")
        documents.setdefault(annotation.get("document_id", path.stem), []).append(annotation)
    ids = sorted(documents)[:max_docs]
    return [{"id": i, "pages": sorted(documents[i], key=lambda a: a.get("page", 1))} for i in ids]


def squeeze(text: str | None) -> str | None:
    return " ".join(text.split()) if text is not None else None


def typed(column: str, text: str) -> str | None:
    if column == "description":
        return squeeze(text)
    if column == "quantity":
        return parse_number(text)[0]
    parsed, _ = parse_amount(text)
    return parsed["amount"] if parsed else None


def gold_entities(document: dict) -> tuple[list[dict], list[tuple[int, int]], list[tuple]]:
    """The annotated entities of all pages (as the pipeline returns them, with "page"), the annotated line-item
    links as pairs of entity indices, and the gold rows (description, quantity, unit price, amount)."""
    entities, links, rows = [], [], {}
    for number, page in enumerate(document["pages"], start=1):
        index_of_id = {}
        for span in bio_spans(page["labels"]):
            text = " ".join(page["words"][span.start : span.end])
            entity_id = page["entity_ids"][span.start]
            index_of_id[entity_id] = len(entities)
            entities.append({"entity_group": span.label, "word": text, "score": 1.0, "page": page.get("page", number),
                             "start": span.start, "end": span.end,
                             "box": union_box(page["boxes"][span.start : span.end])})
            column = column_of(span.label)
            row = page["row_ids"][span.start]
            if column is not None and row is not None:
                rows.setdefault(row, {})[column] = typed(column, text)
        for head, tail in page["relations"]:
            if head in index_of_id and tail in index_of_id:
                if column_of(entities[index_of_id[head]]["entity_group"]) == "description":
                    links.append((index_of_id[head], index_of_id[tail]))
    columns = ("description", "quantity", "unit_price", "amount")
    gold = [tuple(row.get(column) for column in columns) for _, row in sorted(rows.items())]
    return entities, links, gold


def row_tuples(items: list[dict]) -> list[tuple]:
    return [(squeeze(item["description"]), item["quantity"], item["unit_price"], item["amount"]) for item in items]


class Tally:
    def __init__(self):
        self.gold = self.predicted = self.exact = self.documents = self.all_exact = 0
        self.seconds = 0.0

    def add(self, gold: list[tuple], predicted: list[tuple]) -> None:
        exact = sum((Counter(gold) & Counter(predicted)).values())
        self.gold += len(gold)
        self.predicted += len(predicted)
        self.exact += exact
        self.documents += 1
        self.all_exact += int(exact == len(gold) == len(predicted))

    def row(self, name: str) -> str:
        precision = self.exact / self.predicted if self.predicted else 0.0
        recall = self.exact / self.gold if self.gold else 0.0
        return (f"| {name} | {self.documents} | {self.gold} | {self.predicted} | {precision:.3f} | {recall:.3f} | "
                f"{self.all_exact / max(1, self.documents):.3f} | {self.seconds:.1f} |")


# ---------------------------------------------------------------------------------------------- models
def model_entities(extractor, data_dir: Path, document: dict, batch_size: int) -> list[dict]:
    entities = []
    for number, page in enumerate(document["pages"], start=1):
        for entity in extractor(page_inputs(data_dir, page), window_batch_size=batch_size):
            entities.append({**entity, "page": page.get("page", number)})
    return entities


def page_inputs(data_dir: Path, page: dict) -> dict:
    return {"image": str(data_dir / "images" / page["image"]), "words": page["words"], "boxes": page["boxes"],
            "segment_boxes": page.get("segment_boxes")}


def predicted_links(linker, data_dir: Path, document: dict, entities: list[dict], batch_size: int) -> list:
    """The relation model's links between `entities` (with start/end word indices and page), page by page."""
    links = []
    for number, page in enumerate(document["pages"], start=1):
        page_number = page.get("page", number)
        given = [{"start": e["start"], "end": e["end"], "label": e["entity_group"]} for e in entities
                 if e["page"] == page_number]
        if not given:
            continue
        inputs = {**page_inputs(data_dir, page), "entities": given}
        pairs = linker(inputs, window_batch_size=batch_size)
        links += links_from_pairs(entities, pairs, page=page_number)
    return links


def main(argv=None) -> int:
    args = parse_args(argv)
    documents = load_documents(args.data_dir, args.max_docs)
    if not documents:
        raise SystemExit(f"no annotations in {args.data_dir / 'annotations'}")
    tallies = {"gold labels + rule": Tally(), "gold labels + gold links": Tally()}
    gold_cache = [gold_entities(document) for document in documents]
    for (entities, links, gold) in gold_cache:
        started = time.perf_counter()
        tallies["gold labels + rule"].add(gold, row_tuples(group_line_items(entities)))
        tallies["gold labels + rule"].seconds += time.perf_counter() - started
        started = time.perf_counter()
        tallies["gold labels + gold links"].add(gold, row_tuples(group_line_items(entities, links=links)))
        tallies["gold labels + gold links"].seconds += time.perf_counter() - started

    from tqdm.auto import tqdm
    from transformers import pipeline

    linker = None
    if args.relation_model:
        linker = pipeline("relation-extraction", model=args.relation_model, trust_remote_code=True)
        tally = tallies["gold labels + relation model links"] = Tally()
        for document, (entities, _, gold) in tqdm(list(zip(documents, gold_cache)), desc="links", unit="doc"):
            started = time.perf_counter()
            links = predicted_links(linker, args.data_dir, document, entities, args.batch_size)
            tally.add(gold, row_tuples(group_line_items(entities, links=links)))
            tally.seconds += time.perf_counter() - started

    from layoutkit.pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline

    for model in args.model:
        extractor = pipeline("token-classification", model=model, pipeline_class=LayoutTokenClassificationPipeline)
        name = Path(model).name
        tally = tallies[f"`{name}` + rule"] = Tally()
        linked = None
        if linker:
            linked = tallies[f"`{name}` + relation model links"] = Tally()
        for document, (_, _, gold) in tqdm(list(zip(documents, gold_cache)), desc=name, unit="doc"):
            started = time.perf_counter()
            entities = model_entities(extractor, args.data_dir, document, args.batch_size)
            tally.add(gold, row_tuples(group_line_items(entities)))
            tally.seconds += time.perf_counter() - started
            if linker:
                started = time.perf_counter()
                links = predicted_links(linker, args.data_dir, document, entities, args.batch_size)
                linked.add(gold, row_tuples(group_line_items(entities, links=links)))
                linked.seconds += time.perf_counter() - started

    pages = sum(len(document["pages"]) for document in documents)
    multi = sum(len(document["pages"]) > 1 for document in documents)
    print(f"{len(documents)} documents, {pages} pages ({multi} documents over two pages or more), {args.data_dir}")
    print()
    print("| entities + grouping | documents | gold rows | predicted rows | row precision | row recall | "
          "documents all rows exact | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, tally in tallies.items():
        print(tally.row(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
