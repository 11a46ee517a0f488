"""End to end: page images in, field values out, compared with the gold values (benchmarks/end_to_end.py and the
quick start).

A gold value is the text of an annotated entity. It is extracted exactly when a predicted value of the same field
(`layoutkit.pipelines.fields.extract_fields`: one value per single-valued field, every value of a multiple one) has the same
text, whitespace collapsed; each predicted value matches one gold value. Per field and overall: exact-match recall
(extracted exactly / gold values) and precision (exact / predicted values).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from ..pipelines.labels import bio_spans


def split_ids(dataset_path, split: str = "test", max_docs: int | None = None) -> list[str]:
    """The `id`s of a saved dataset's `split` (its first `max_docs`): the documents a benchmark measures."""
    from datasets import load_from_disk

    return list(load_from_disk(str(dataset_path))[split]["id"][:max_docs])


def annotation_files(data_dir: Path, dataset_path=None, split: str = "test", max_docs: int | None = None) -> list[Path]:
    """The annotation files of `data_dir` (images/ + annotations/) to measure: those of the `split` of the dataset
    built from it (`dataset_path`), else the folder's first `max_docs` in name order."""
    if dataset_path:
        return [data_dir / "annotations" / f"{i}.json" for i in split_ids(dataset_path, split, max_docs)]
    return sorted((data_dir / "annotations").glob("*.json"))[:max_docs]


def squeeze(text: str) -> str:
    return " ".join(text.split())


def gold_values(document) -> dict[str, list[str]]:
    """The annotated entities' texts per field of a `dataset_loader` document (words and BIO labels)."""
    values: dict[str, list[str]] = {}
    for span in bio_spans(document.labels):
        values.setdefault(span.label, []).append(squeeze(" ".join(document.words[span.start : span.end])))
    return values


def predicted_values(fields: dict) -> dict[str, list[str]]:
    values = {}
    for name, field in fields.items():
        texts = [v["text"] for v in field["values"]] if field.get("multiple") else [field["value"]]
        values[name] = [squeeze(text) for text in texts]
    return values


class Tally:
    """Gold, predicted and exactly extracted values per field, and the seconds spent on `pages` pages."""

    def __init__(self):
        self.gold, self.predicted, self.exact = Counter(), Counter(), Counter()
        self.seconds, self.pages = 0.0, 0

    def add(self, gold: dict[str, list[str]], predicted: dict[str, list[str]]) -> None:
        for name in set(gold) | set(predicted):
            expected, found = Counter(gold.get(name, [])), Counter(predicted.get(name, []))
            self.gold[name] += sum(expected.values())
            self.predicted[name] += sum(found.values())
            self.exact[name] += sum((expected & found).values())

    def row(self, name: str | None = None) -> dict:
        gold = sum(self.gold.values()) if name is None else self.gold[name]
        predicted = sum(self.predicted.values()) if name is None else self.predicted[name]
        exact = sum(self.exact.values()) if name is None else self.exact[name]
        return {"gold": gold, "predicted": predicted, "exact": exact,
                "recall": exact / gold if gold else 0.0, "precision": exact / predicted if predicted else 0.0}


def measure(extractor, documents: Iterable, inputs_of: Callable, progress: Callable | None = None) -> Tally:
    """Run `extractor` (a token-classification pipeline) with fields on each document's inputs (`inputs_of(document)`:
    the pipeline's dict input) and tally its values against the gold ones. `progress(done)` after each document."""
    tally = Tally()
    for done, document in enumerate(documents, start=1):
        started = time.perf_counter()
        inputs = inputs_of(document)
        output = extractor(inputs, return_fields=True) if inputs["words"] else {"fields": {}}
        tally.seconds += time.perf_counter() - started
        tally.pages += 1
        tally.add(gold_values(document), predicted_values(output["fields"]))
        if progress is not None:
            progress(done)
    return tally
