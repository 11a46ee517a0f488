"""Import a Label Studio export of the OCR labelling template into the same DatasetDict as the folder builder.

Label Studio's JSON export is a list of tasks (`data` with the image, `annotations[].result[]`); its JSON-MIN export
is a list of flat records (the task's data fields, then one key per control tag holding that tag's values). In the
OCR template one region is a `rectangle` (or `polygon`), a `labels` and a `textarea` result sharing an `id`;
relations are results of `type: "relation"` with `from_id`/`to_id` (https://labelstud.io/guide/export,
https://labelstud.io/guide/task_format, https://labelstud.io/guide/predictions#Import-OCR-pre-annotations).

Each task becomes an annotation record of the folder format (words, pixel boxes, BIO labels, the region box as every
word's segment box), checked by the same `validate_document` and written by the same build path
(`build.build_documents`), so a Label Studio dataset has the folder builder's features, splits, resize, `--ocr` and
report. A region's transcription is split into words, each taking a share of the region box
(`layoutkit.apps.labelstudio_format.word_boxes`); the first word of a labelled region is `B-<label>`, the rest `I-<label>`, the
words of an unlabelled region `O`. Relations are kept as links: every region is an entity, `entity_ids` gives each
word its entity and `relations` lists `[head, tail]` entity ids; they are written to `OUT/labelstudio_links.json`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, unquote, urlparse

from datasets import DatasetDict

from dataset_loader.annotations import AnnotationError, Document, image_size, parse_annotation, validate_document
from dataset_loader.build import build_documents
from dataset_loader.ocr_build import OcrBuild
from dataset_loader.preprocessing import DEFAULT_KEEP_ASPECT, DEFAULT_PAD, DEFAULT_SIZE
from dataset_loader.splits import DEFAULT_RATIOS
from dataset_loader.writer import BuildError, start_build
from layoutkit.apps.labelstudio_format import bounding_box, region_corners, word_boxes
from layoutkit.pipelines.input_validation import is_blank_word
from layoutkit.pipelines.labels import OUTSIDE, is_bio_tag
from layoutkit.train.ocr_alignment import overlap

LINKS_FILE = "labelstudio_links.json"
SHAPE_TYPES = ("rectangle", "polygon", "rectanglelabels", "polygonlabels", "labels", "textarea")
LABEL_KEYS = ("labels", "rectanglelabels", "polygonlabels")
# Keys of a JSON-MIN record that are neither task data nor results (label_studio_converter's convert_to_json_min).
MIN_META_KEYS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"}
IMAGE_KEYS = ("image", "ocr", "img", "page", "document")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
# Label Studio prefixes uploaded files with 8 hex digits and a dash ("e875f554-invoice.png").
UPLOAD_PREFIX = re.compile(r"^[0-9A-Za-z]+-")


class LabelStudioError(AnnotationError):
    """A task that cannot be used: the export file, the task id, the region id (when one is at fault), what is
    wrong and what to do. The build report lists `task` and `region` besides the folder builder's keys."""

    def __init__(self, file: str | Path, task: str, region: str | None, message: str, where: str | None = None):
        self.task, self.region = task, region
        field_name = f"task {task}" + (f", region {region!r}" if region is not None else "")
        if where:
            field_name += f" ({where})"
        super().__init__(file, field_name, message)

    def to_dict(self) -> dict[str, str | None]:
        return {**super().to_dict(), "task": self.task, "region": self.region}


@dataclass
class Region:
    id: str
    where: str  # the result that defined it, e.g. "annotations[0].result[3]"
    value: dict[str, Any] | None = None  # geometry (percent)
    labels: list[str] | None = None
    text: list[str] | None = None
    original_size: tuple[float, float] | None = None
    image_rotation: float = 0.0


@dataclass
class Task:
    id: str
    data: dict[str, Any]
    regions: dict[str, Region] = field(default_factory=dict)
    relations: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # why the task has nothing to import (no annotation, ...)


@dataclass
class Converted:
    """A task as an annotation record, plus its links and where each word came from."""

    record: dict[str, Any]
    word_regions: list[str]  # region id of every word
    entity_ids: list[int]
    relations: list[list[int]]
    relation_labels: list[list[str]]
    entities: list[dict[str, Any]]
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def by_region(self) -> "Converted":
        """One word per region (its whole transcription, its box), for --ocr: the OCR words inside a region take
        its label through `transfer_labels`, however the engine splits the text."""
        boxes = [e["box"] for e in self.entities]
        record = {**self.record, "words": [e["text"] for e in self.entities], "boxes": boxes, "segment_boxes": boxes,
                  "labels": [OUTSIDE if e["label"] is None else f"B-{e['label']}" for e in self.entities]}
        return Converted(record, [e["region"] for e in self.entities], [e["id"] for e in self.entities],
                         self.relations, self.relation_labels, self.entities, self.warnings)


# ---------------------------------------------------------------------------------------------- reading
def read_export(path: Path, textarea_name: str = "transcription") -> list[Task]:
    """The tasks of a JSON or JSON-MIN export (a list, or one task object as cloud storage writes them)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise BuildError(f"{path} is not valid JSON (line {error.lineno}: {error.msg}); export again as JSON") from None
    except OSError as error:
        raise BuildError(f"{path} cannot be read ({error})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise BuildError(f"{path}: a Label Studio export is a JSON list of tasks; use the JSON or JSON-MIN export")
    tasks = []
    for index, item in enumerate(data):
        task_id = str(item.get("id", index + 1))
        if "data" in item and isinstance(item["data"], dict):
            tasks.append(_json_task(item, task_id))
        else:
            tasks.append(_json_min_task(item, task_id, textarea_name))
    return tasks


def _json_task(item: dict[str, Any], task_id: str) -> Task:
    task = Task(task_id, item["data"])
    annotations = [a for a in item.get("annotations") or item.get("completions") or []
                   if isinstance(a, dict) and not (a.get("was_cancelled") or a.get("skipped"))]
    if not annotations:
        predictions = " (it has predictions only: review and submit them in Label Studio first)" \
            if item.get("predictions") else ""
        task.problem = f"has no submitted annotation{predictions}; annotate it or leave it out of the export"
        return task
    # The latest annotation, as label_studio_converter picks it.
    def recency(pair):
        return str(pair[1].get("updated_at") or pair[1].get("created_at") or ""), pair[0]

    number, annotation = max(enumerate(annotations), key=recency)
    for position, result in enumerate(annotation.get("result") or []):
        _add_result(task, result, f"annotations[{number}].result[{position}]")
    return task


def _add_result(task: Task, result: Any, where: str) -> None:
    if not isinstance(result, dict):
        return
    kind = result.get("type")
    if kind == "relation":
        task.relations.append({**result, "where": where})
        return
    if kind not in SHAPE_TYPES or "id" not in result:
        return  # choices, ratings...: not part of the OCR template's regions
    region = task.regions.setdefault(str(result["id"]), Region(str(result["id"]), where))
    _merge_value(region, result.get("value") or {})
    if "original_width" in result and "original_height" in result:
        region.original_size = (result["original_width"], result["original_height"])
    region.image_rotation = float(result.get("image_rotation") or 0)


def _merge_value(region: Region, value: dict[str, Any]) -> None:
    if region.value is None and ("points" in value or {"x", "y", "width", "height"} <= set(value)):
        region.value = {k: value[k] for k in ("x", "y", "width", "height", "rotation", "points") if k in value}
    for key in LABEL_KEYS:
        if key in value:
            region.labels = list(value[key])
    if "text" in value:
        text = value["text"]
        region.text = [text] if isinstance(text, str) else list(text)


def _json_min_task(item: dict[str, Any], task_id: str, textarea_name: str) -> Task:
    """JSON-MIN keeps no region ids: a region is a geometry shared by the shape and label values; a transcription
    that kept its geometry (several lines) joins by geometry, one reduced to its text joins by order."""
    data = {k: v for k, v in item.items() if k not in MIN_META_KEYS}
    task = Task(task_id, data)
    texts: list[str] = []
    for key, values in item.items():
        if key in MIN_META_KEYS:
            continue
        if key == textarea_name and isinstance(values, (str, list)):
            values = [values] if isinstance(values, str) else values
            for value in values:
                if isinstance(value, str):
                    texts.append(value)
        if not isinstance(values, list):
            continue
        for position, value in enumerate(values):
            if not isinstance(value, dict) or not ("points" in value or {"x", "y", "width", "height"} <= set(value)):
                continue
            try:
                geometry = _geometry_key(value)
            except (TypeError, ValueError):
                task.problem = f"{key}[{position}] has a geometry that is not numbers ({value}); export it again"
                continue
            region = task.regions.setdefault(geometry, Region(f"#{len(task.regions) + 1}", f"{key}[{position}]"))
            _merge_value(region, value)
            if "original_width" in value and "original_height" in value:
                region.original_size = (value["original_width"], value["original_height"])
            data.pop(key, None)
    data.pop(textarea_name, None)
    task.data = data
    without_text = [region for region in task.regions.values() if region.text is None]
    if texts and len(texts) != len(without_text):
        task.problem = (f"has {len(without_text)} regions without a positioned transcription but {len(texts)} "
                        f"'{textarea_name}' texts, so JSON-MIN cannot tell which text belongs to which region; "
                        "export in the JSON format (it keeps region ids)")
    else:
        for region, text in zip(without_text, texts):
            region.text = [text]
    task.regions = {region.id: region for region in task.regions.values()}
    return task


def _geometry_key(value: dict[str, Any]) -> str:
    """The same region's values compare equal whatever their number formatting (5 or 5.0, rotation left out)."""
    def number(v: Any) -> float:
        return round(float(v), 6)

    if "points" in value:
        return json.dumps([[number(c) for c in point] for point in value["points"]])
    return json.dumps([number(value[k]) for k in ("x", "y", "width", "height")] + [number(value.get("rotation") or 0)])


# ---------------------------------------------------------------------------------------------- images
def image_reference(task: Task, image_key: str | None) -> str | None:
    """The task's image: `data[image_key]`, else the first known image key, else the one string that looks like
    an image path or URL."""
    if image_key is not None:
        value = task.data.get(image_key)
        return value if isinstance(value, str) else None
    for key in IMAGE_KEYS:
        if isinstance(task.data.get(key), str):
            return task.data[key]
    candidates = [v for v in task.data.values() if isinstance(v, str) and _looks_like_image(v)]
    return candidates[0] if len(candidates) == 1 else None


def _looks_like_image(value: str) -> bool:
    return value.startswith(("/data/", "http://", "https://", "s3://", "gs://")) or \
        Path(urlparse(value).path).suffix.lower() in IMAGE_SUFFIXES


def reference_names(reference: str) -> list[str]:
    """Relative paths to look for under --images, most specific first: `/data/local-files/?d=dir/a.png` gives
    dir/a.png then a.png; `/data/upload/1/e875f554-a.png` gives e875f554-a.png then a.png (the upload prefix
    removed); a URL gives its file name."""
    parsed = urlparse(reference)
    names = []
    local = parse_qs(parsed.query).get("d")
    if local:
        path = unquote(local[0]).lstrip("/")
        names.append(path)
        names.append(Path(path).name)
    else:
        names.append(Path(unquote(parsed.path)).name)
    stripped = UPLOAD_PREFIX.sub("", names[-1], count=1)
    if stripped and stripped != names[-1]:
        names.append(stripped)
    return list(dict.fromkeys(name for name in names if name))


class ImageIndex:
    """Files under --images, found by relative path or by file name."""

    def __init__(self, images_dir: Path):
        self.images_dir = images_dir
        self.by_name: dict[str, list[Path]] = {}
        for path in sorted(images_dir.rglob("*")):
            if path.is_file():
                self.by_name.setdefault(path.name, []).append(path)

    def find(self, reference: str) -> tuple[Path | None, str]:
        """(the file, "") or (None, why not)."""
        names = reference_names(reference)
        for name in names:
            direct = self.images_dir / name
            if "/" in name and direct.is_file() and direct.resolve().is_relative_to(self.images_dir.resolve()):
                return direct, ""
            matches = self.by_name.get(Path(name).name, [])
            if len(matches) == 1:
                return matches[0], ""
            if len(matches) > 1:
                listed = ", ".join(str(m.relative_to(self.images_dir)) for m in matches)
                return None, f"{name!r} matches several files under {self.images_dir} ({listed}); keep one"
        return None, (f"image {reference!r} was not found under {self.images_dir} (looked for "
                      f"{', '.join(repr(n) for n in names)}); copy the image there or fix --images")


# ---------------------------------------------------------------------------------------------- conversion
@dataclass
class Converter:
    export: Path
    images: ImageIndex
    label_names: Sequence[str] | None = None
    image_key: str | None = None
    unlabeled: str = "outside"  # or "error"

    def error(self, task: Task, message: str, region: Region | None = None, where: str | None = None):
        return LabelStudioError(self.export, task.id, region.id if region else None, message,
                                where if where is not None else (region.where if region else None))

    def convert(self, task: Task) -> Converted:
        if task.problem:
            raise self.error(task, task.problem)
        reference = image_reference(task, self.image_key)
        if reference is None:
            keys = ", ".join(sorted(task.data)) or "none"
            raise self.error(task, f"no image reference in the task data (keys: {keys}); pass --image_key KEY",
                             where="data")
        image_file, why = self.images.find(reference)
        if image_file is None:
            raise self.error(task, why, where="data")
        try:
            width, height = image_size(image_file, Path(f"{self.export}#task={task.id}"))
        except AnnotationError as error:
            raise self.error(task, error.message, where="data") from None
        words: list[str] = []
        boxes: list[list[float]] = []
        labels: list[str] = []
        segments: list[list[float]] = []
        word_regions: list[str] = []
        entity_ids: list[int] = []
        entities: list[dict[str, Any]] = []
        entity_of_region: dict[str, int] = {}
        for region in self._regions_in_reading_order(task, width, height):
            label = self._label(task, region)
            region_words = [(w, b) for w, b in word_boxes(region.value, region.text, width, height)
                            if not is_blank_word(w)]
            if not region_words:
                raise self.error(task, "the region's transcription has no visible text; transcribe it in Label "
                                 "Studio or delete the region", region)
            entity = len(entities)
            entity_of_region[region.id] = entity
            segment = _clip(bounding_box(region_corners(region.value, width, height)), width, height)
            entities.append({"id": entity, "region": region.id, "label": label,
                             "text": " ".join(w for w, _ in region_words), "box": [round(v, 2) for v in segment]})
            for position, (word, box) in enumerate(region_words):
                words.append(word)
                boxes.append(_clip(box, width, height))
                labels.append(OUTSIDE if label is None else f"{'B' if position == 0 else 'I'}-{label}")
                segments.append(segment)
                word_regions.append(region.id)
                entity_ids.append(entity)
        relations, relation_labels = self._relations(task, entity_of_region)
        record = {"image": str(image_file.relative_to(self.images.images_dir)), "words": words, "boxes": boxes,
                  "labels": labels, "segment_boxes": segments}
        return Converted(record, word_regions, entity_ids, relations, relation_labels, entities,
                         _size_warnings(task, width, height))

    def _regions_in_reading_order(self, task: Task, width: int, height: int) -> list[Region]:
        regions = []
        for region in task.regions.values():
            if region.value is None:
                raise self.error(task, "the region has a label or text but no rectangle or polygon; redraw it in "
                                 "Label Studio", region)
            try:
                _geometry_key(region.value)
            except (TypeError, ValueError, KeyError):
                raise self.error(task, f"the region's geometry is not numbers ({region.value}); redraw it in Label "
                                 "Studio", region) from None
            if region.image_rotation:
                raise self.error(task, f"the image was rotated by {region.image_rotation} degrees in Label Studio; "
                                 "boxes of rotated images are not supported: rotate the image file upright, "
                                 "re-import it and annotate it unrotated", region)
            if region.text is None or not any(line.strip() for line in region.text):
                raise self.error(task, "the region has no transcription (textarea text); transcribe it in Label "
                                 "Studio or delete the region", region)
            box = bounding_box(region_corners(region.value, width, height))
            if _clip(box, width, height)[2:] == _clip(box, width, height)[:2] or box[0] >= width or box[1] >= height \
                    or box[2] <= 0 or box[3] <= 0:
                raise self.error(task, f"the region lies outside the {width}x{height} image ({region.value}); "
                                 "redraw it in Label Studio", region)
            regions.append((box, region))
        return reading_order(regions)

    def _label(self, task: Task, region: Region) -> str | None:
        labels = [label for label in (region.labels or []) if isinstance(label, str)]
        if not labels:
            if self.unlabeled == "error":
                raise self.error(task, "the rectangle has no label; pick a label in Label Studio (or build with "
                                 "--unlabeled_regions outside to read unlabelled regions as O)", region)
            return None
        if len(labels) > 1:
            raise self.error(task, f"the region has {len(labels)} labels {labels}; a word takes one label: keep "
                             "one in Label Studio", region)
        label = labels[0]
        if not is_bio_tag(f"B-{label}"):
            raise self.error(task, f"label {label!r} cannot be an entity type (empty, spaces at an end, or starting "
                             "with B-/I-); rename it in the labelling configuration", region)
        if self.label_names is not None and f"B-{label}" not in self.label_names:
            raise self.error(task, f"label {label!r} is not in --labels ({', '.join(self.label_names)}); fix the label "
                             "in Label Studio or add it to --labels", region)
        return label

    def _relations(self, task: Task, entity_of_region: dict[str, int]) -> tuple[list[list[int]], list[list[str]]]:
        relations, names = [], []
        for relation in task.relations:
            ends = [str(relation.get("from_id")), str(relation.get("to_id"))]
            for end in ends:
                if end not in entity_of_region:
                    raise LabelStudioError(
                        self.export, task.id, end,
                        f"a relation points to region {end!r}, which is not in the annotation (deleted?); remove the "
                        "relation in Label Studio", relation["where"])
            head, tail = (entity_of_region[e] for e in ends)
            direction = relation.get("direction", "right")
            pairs = {"left": [[tail, head]], "bi": [[head, tail], [tail, head]]}.get(direction, [[head, tail]])
            for pair in pairs:
                if pair not in relations:
                    relations.append(pair)
                    names.append(list(relation.get("labels") or []))
        return relations, names


def reading_order(boxed: list[tuple[list[float], Any]]) -> list[Any]:
    """Items with boxes, top to bottom and left to right: Label Studio keeps regions in drawing order. Items whose
    vertical centre falls within the first item of a row (by top edge) join that row."""
    rows: list[list[tuple[list[float], Any]]] = []
    for box, item in sorted(boxed, key=lambda pair: ((pair[0][1] + pair[0][3]) / 2, pair[0][0])):
        centre = (box[1] + box[3]) / 2
        if rows and rows[-1][0][0][1] <= centre <= rows[-1][0][0][3]:
            rows[-1].append((box, item))
        else:
            rows.append([(box, item)])
    return [item for row in rows for _, item in sorted(row, key=lambda pair: pair[0][0])]


def _size_warnings(task: Task, width: int, height: int) -> list[tuple[str, str]]:
    """A warning when the regions were drawn on an image of another shape than the file under --images: percent
    coordinates follow a resize, not a crop or a rotation."""
    for region in task.regions.values():
        if region.original_size is None:
            continue
        original_width, original_height = (float(v) for v in region.original_size)
        if original_width > 0 and original_height > 0 and \
                abs(original_width / original_height - width / height) > 0.01 * (width / height):
            return [("image", f"regions were drawn on a {original_width:g}x{original_height:g} image but the file "
                     f"is {width}x{height} with another aspect ratio (cropped or rotated?); boxes will be off: "
                     "use the image that was annotated")]
    return []


def _clip(box: Sequence[float], width: float, height: float) -> list[float]:
    x0, y0, x1, y1 = box
    return [min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height)]


# ---------------------------------------------------------------------------------------------- build
def import_labelstudio(
    export: str | Path,
    images_dir: str | Path,
    output: str | Path,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    keep_aspect: bool = DEFAULT_KEEP_ASPECT,
    pad: bool = DEFAULT_PAD,
    seed: int = 42,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    labels: Sequence[str] | None = None,
    strict: bool = False,
    overwrite: bool = False,
    ocr: OcrBuild | None = None,
    image_key: str | None = None,
    textarea_name: str = "transcription",
    unlabeled: str = "outside",
) -> DatasetDict:
    """Build the DatasetDict of a Label Studio export at `output` (see the module docstring); the links go to
    `output/labelstudio_links.json`. Lenient by default: a bad task is skipped and reported, `strict` stops."""
    export, images_dir, output = Path(export), Path(images_dir), Path(output)
    if not images_dir.is_dir():
        raise BuildError(f"--images {images_dir} is not a folder; give the folder holding the tasks' images")
    report = start_build(export, "labelstudio", output, size=size, keep_aspect=keep_aspect, seed=seed, strict=strict,
                         overwrite=overwrite, pad=pad)
    tasks = read_export(export, textarea_name)
    if not tasks:
        raise BuildError(f"{export} holds no task")
    label_names = list(labels) if labels is not None else None
    converter = Converter(export, ImageIndex(images_dir), label_names, image_key, unlabeled)
    by_key: dict[Path, Task] = {}
    for task in tasks:
        key = Path(f"{export}#task={task.id}")
        while key in by_key:  # the same task id twice (merged exports): the copy is reported, not merged
            key = Path(f"{key}+")
            task.problem = task.problem or "has the same id as an earlier task; remove one of them from the export"
        by_key[key] = task
    converted: dict[str, Converted] = {}

    def read(key: Path) -> Document:
        task = by_key[key]
        result = converter.convert(task)
        if ocr is not None:
            result = result.by_region()
        record = dict(result.record)
        if ocr is None:  # with --ocr the words change, so per-word links are recomputed on the OCR words (below)
            record.update(entity_ids=result.entity_ids, relations=result.relations)
        document = parse_annotation(record, key, images_dir)
        document.id = f"task-{task.id}"
        document.unknown_fields = [n for n in document.unknown_fields if n not in ("entity_ids", "relations")]
        document.warnings.extend(result.warnings)
        try:
            document = validate_document(document, label_names)
        except AnnotationError as error:
            raise _region_error(converter, task, result, error) from None
        converted[document.id] = result
        return document

    dataset = build_documents(list(by_key), read, report, output, source_name=str(export), size=size,
                              keep_aspect=keep_aspect, seed=seed, ratios=ratios, labels=label_names, strict=strict,
                              ocr=ocr)
    write_links(output, dataset, converted, by_key, read, ocr)
    return dataset


def _region_error(converter: Converter, task: Task, result: Converted, error: AnnotationError) -> LabelStudioError:
    """A validation error of the flattened record ("boxes[3]") pointed at the region of that word."""
    match = re.fullmatch(r"(?:boxes|segment_boxes|labels)\[(\d+)\]", error.field or "")
    region = task.regions.get(result.word_regions[int(match.group(1))]) if match else None
    return converter.error(task, error.message, region, where=None if region else error.field)


def write_links(output: Path, dataset: DatasetDict, converted: dict[str, Converted], by_key: dict[Path, Task],
                read, ocr: OcrBuild | None) -> Path:
    """`labelstudio_links.json`: per document of the dataset, its task, regions as entities, each word's entity id
    (aligned with the dataset's `words`) and the relations as [head, tail] entity ids."""
    keys = {f"task-{task.id}": key for key, task in by_key.items()}
    documents = {}
    for split in dataset.values():
        for document_id, words in zip(split["id"], split["words"]):
            result = converted[document_id]
            entity_ids: list[int | None] = list(result.entity_ids)
            if ocr is not None:
                document = read(keys[document_id])
                entity_ids = ocr_entity_ids(ocr.read(document).boxes, [e["box"] for e in result.entities])
            documents[document_id] = {
                "task": by_key[keys[document_id]].id, "image": result.record["image"], "words": len(words),
                "entity_ids": entity_ids, "relations": result.relations, "relation_labels": result.relation_labels,
                "entities": result.entities,
            }
    path = output / LINKS_FILE
    path.write_text(json.dumps({"documents": documents}, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def ocr_entity_ids(ocr_boxes: Sequence[Sequence[float]], region_boxes: Sequence[Sequence[float]]) -> list[int | None]:
    """The entity (region) of each OCR word: the region it overlaps most (layoutkit.train.ocr_alignment's overlap:
    intersection over the smaller box, so 1.0 for a word inside its region), None when none covers half of it."""
    ids: list[int | None] = []
    for box in ocr_boxes:
        best, best_overlap = None, 0.5
        for entity, region_box in enumerate(region_boxes):
            value = overlap(box, region_box)
            if value >= best_overlap:
                best, best_overlap = entity, value
        ids.append(best)
    return ids
