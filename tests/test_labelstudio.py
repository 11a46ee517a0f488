"""Label Studio round trip: `python -m dataset_loader labelstudio` on hand-written exports, and predict.py's
`--labelstudio` pre-annotations imported back.

The exports in tests/data/labelstudio/ were written from Label Studio's documentation (see its README.md):
https://labelstud.io/guide/export, https://labelstud.io/guide/task_format,
https://labelstud.io/guide/predictions#Import-OCR-pre-annotations, https://labelstud.io/tags/rectanglelabels,
https://labelstud.io/tags/relations, https://labelstud.io/templates/optical_character_recognition.
"""

import json
from collections import Counter
from pathlib import Path

import pytest
from datasets import load_from_disk
from PIL import Image, ImageDraw

from dataset_loader.__main__ import main as dataset_loader_main
from dataset_loader.labelstudio import import_labelstudio, reference_names
from dataset_loader.ocr_build import OcrBuild
from layoutkit.apps.labelstudio_format import prediction_task, word_boxes
from layoutkit.pipelines import ocr
from layoutkit.pipelines.labels import bio_spans

DATA = Path(__file__).parent / "data" / "labelstudio"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """The two pages the exports name, with their text drawn where the regions are."""
    folder = tmp_path_factory.mktemp("labelstudio-images")
    page = Image.new("RGB", (800, 400), "white")
    draw = ImageDraw.Draw(page)
    for (x, y), text in {(44, 30): "ACME Corp", (404, 30): "Invoice No. 42", (404, 330): "Total:",
                         (564, 330): "$1,250.00"}.items():
        draw.text((x, y), text, fill="black")
    page.save(folder / "invoice_a.png")
    (folder / "scans").mkdir()
    Image.new("RGB", (600, 800), "white").save(folder / "scans" / "invoice_b.png")
    return folder


def build(export: Path, images: Path, output: Path, *options) -> tuple[int, dict, dict]:
    """Run the command in-process; returns its exit code, the build report and the links file (or {})."""
    code = dataset_loader_main(["labelstudio", "--input", str(export), "--images", str(images), "--output",
                                str(output), "--split", "1,0,0", *map(str, options)])
    report = json.loads((output / "build_report.json").read_text()) if (output / "build_report.json").exists() else {}
    links_path = output / "labelstudio_links.json"
    links = json.loads(links_path.read_text())["documents"] if links_path.exists() else {}
    return code, report, links


def rows_by_id(output: Path) -> dict[str, dict]:
    split = load_from_disk(str(output))["train"]
    names = split.features["ner_tags"].feature.names
    return {row["id"]: {**row, "labels": [names[t] for t in row["ner_tags"]]} for row in split}


def test_json_export_builds_the_typed_dataset_with_links(images, tmp_path):
    code, report, links = build(DATA / "export_json.json", images, tmp_path / "out")
    assert code == 0
    assert report["source_format"] == "labelstudio" and report["documents_kept"] == 2 and not report["skipped"]
    assert not report["warnings"]
    rows = rows_by_id(tmp_path / "out")

    # Task 11: read top to bottom, left to right; the unlabelled region is O; the cancelled annotation and the
    # prediction are ignored; the upload prefix "e875f554-" was removed to find invoice_a.png.
    first = rows["task-11"]
    assert first["words"] == ["ACME", "Corp", "Invoice", "No.", "42", "Total:", "$1,250.00"]
    assert first["labels"] == ["B-vendor", "I-vendor", "O", "O", "O", "B-question", "B-answer"]
    # 800x400 resized to fit 1000x1000: x1.25. "ACME" is 4 of the 9 characters of a region 40..280 x 20..60 px.
    assert first["bboxes"][0] == pytest.approx([50, 25, 183, 75], abs=1)
    assert first["segment_bboxes"][0] == first["segment_bboxes"][1] == pytest.approx([50, 25, 350, 75], abs=1)
    assert links["task-11"]["entity_ids"] == [0, 0, 1, 1, 1, 2, 3]
    assert links["task-11"]["relations"] == [[2, 3]]
    assert [e["region"] for e in links["task-11"]["entities"]] == ["v1", "n1", "q1", "a1"]
    # The links are dataset columns too (the annotation format's entity_ids / relations), for relation extraction.
    assert first["entity_ids"] == [0, 0, 1, 1, 1, 2, 3] and first["relations"] == [[2, 3]]

    # Task 12 (local-files path into a sub-folder): a rotated region, a two-line transcription, a polygon and a
    # bidirectional relation.
    second = rows["task-12"]
    assert second["words"] == ["Side", "note", "Line", "one", "Line", "two", "Paid"]
    assert second["labels"] == ["B-note", "I-note", "B-address", "I-address", "I-address", "I-address", "B-status"]
    assert links["task-12"]["relations"] == [[2, 1], [1, 2]] and links["task-12"]["relation_labels"] == [["pays"]] * 2
    assert len(links["task-12"]["entity_ids"]) == len(second["words"])


def test_json_min_export_gives_the_same_words_and_labels(images, tmp_path):
    build(DATA / "export_json.json", images, tmp_path / "json")
    code, report, links = build(DATA / "export_json_min.json", images, tmp_path / "min")
    assert code == 0 and report["documents_kept"] == 1
    full, minimal = rows_by_id(tmp_path / "json")["task-11"], rows_by_id(tmp_path / "min")["task-11"]
    assert minimal["words"] == full["words"] and minimal["labels"] == full["labels"]
    assert minimal["bboxes"] == full["bboxes"]
    assert links["task-11"]["relations"] == []  # JSON-MIN does not export relations


def test_bad_export_is_reported_per_task_and_region(images, tmp_path, capsys):
    options = ["--labels", "vendor,question,answer", "--unlabeled-regions", "error"]
    code, report, _ = build(DATA / "export_bad.json", images, tmp_path / "out", *options)
    assert code == 0 and report["documents_kept"] == 2
    shape = [w for w in report["warnings"] if "#task=28" in w["file"] and "aspect ratio" in w["message"]]
    assert shape and "drawn on a 400x400 image but the file is 800x400" in shape[0]["message"]
    skipped = {entry["task"]: entry for entry in report["skipped"]}
    assert set(skipped) == {"21", "22", "23", "24", "25", "26"}
    assert all(entry["file"] == str(DATA / "export_bad.json") for entry in skipped.values())
    expected = {
        "21": (None, "'/data/upload/1/abcd1234-missing.png' was not found under"),
        "22": ("notext", "no transcription"),
        "23": ("typo", "label 'totl' is not in --labels"),
        "24": ("nolabel", "the rectangle has no label"),
        "25": ("gone", "a relation points to region 'gone'"),
        "26": (None, "predictions only"),
    }
    for task, (region, reason) in expected.items():
        assert skipped[task]["region"] == region, skipped[task]
        assert reason in skipped[task]["reason"], skipped[task]
        if region is not None:
            assert f"region {region!r}" in skipped[task]["field"]
    assert "missing.png" in skipped["21"]["reason"] and "copy the image there" in skipped["21"]["reason"]

    capsys.readouterr()
    code, _, _ = build(DATA / "export_bad.json", images, tmp_path / "strict", *options, "--strict")
    assert code == 1
    assert "task 21" in capsys.readouterr().err


def test_region_geometry_and_image_references():
    # 90 degrees clockwise around the top-left corner: the region's width runs down the page.
    value = {"x": 10, "y": 10, "width": 50, "height": 5, "rotation": 90}
    (first, box), (second, box2) = word_boxes(value, ["Side note"], 600, 800)
    assert (first, second) == ("Side", "note")
    assert box == pytest.approx([20, 80, 60, 80 + 300 * 4 / 9])  # width: 50% of 600 px
    assert box2 == pytest.approx([20, 80 + 300 * 5 / 9, 60, 380])
    lines = word_boxes({"x": 0, "y": 0, "width": 100, "height": 100}, ["ab cd", "ef"], 100, 40)
    assert [[round(v, 6) for v in b] for _, b in lines] == [[0, 0, 40, 20], [60, 0, 100, 20], [0, 20, 100, 40]]
    assert reference_names("/data/upload/3/e875f554-scan 1.png") == ["e875f554-scan 1.png", "scan 1.png"]
    assert reference_names("/data/local-files/?d=batch%2Fa.png") == ["batch/a.png", "a.png"]
    assert reference_names("https://bucket.example/pages/b.jpg?sig=1") == ["b.jpg"]


def submitted(tasks: list[dict]) -> list[dict]:
    """What Label Studio exports after an annotator submits the pre-annotations unchanged."""
    return [{"id": number, **task, "annotations": [{"id": 1000 + number, "result": task["predictions"][0]["result"],
                                                     "was_cancelled": False}]}
            for number, task in enumerate(tasks, start=1)]


def test_prediction_tasks_import_back_to_the_same_words_and_labels(images, tmp_path):
    words = ["ACME", "Corp", "Invoice", "No.", "42", "Total:", "$1,250.00"]
    boxes = [[40, 20, 146, 60], [160, 20, 280, 60], [400, 20, 500, 60], [510, 20, 560, 60], [570, 20, 600, 60],
             [400, 320, 500, 352], [560, 320, 720, 352]]
    labels = ["B-vendor", "I-vendor", "O", "B-number", "I-number", "O", "B-total"]
    scores = [0.9, 0.8, 0.99, 0.7, 0.6, 0.95, 0.85]
    word_rows = [{"text": w, "box": b, "label": label, "score": s}
                 for w, b, label, s in zip(words, boxes, labels, scores)]
    entities = [{"entity_group": span.label, "start": span.start, "end": span.end,
                 "score": sum(scores[span.start : span.end]) / (span.end - span.start)} for span in bio_spans(labels)]
    task = prediction_task("/data/local-files/?d=invoice_a.png", 800, 400, word_rows, entities, "tiny")
    results = task["predictions"][0]["result"]
    by_id: dict[str, list[str]] = {}
    for result in results:
        by_id.setdefault(result["id"], []).append(result["type"])
        assert 0 <= result["value"]["x"] <= 100 and 0 < result["value"]["width"] <= 100 and "score" in result
    assert by_id["e0"] == ["rectangle", "labels", "textarea"] and by_id["w2"] == ["rectangle", "textarea"]
    assert task["predictions"][0]["score"] == pytest.approx((0.85 + 0.65 + 0.85) / 3, abs=1e-3)

    export = tmp_path / "export.json"
    export.write_text(json.dumps(submitted([task])))
    code, _, _ = build(export, images, tmp_path / "out")
    assert code == 0
    row = rows_by_id(tmp_path / "out")["task-1"]
    assert row["words"] == words and row["labels"] == labels
    assert row["bboxes"][0] == pytest.approx([b * 1.25 for b in boxes[0]], abs=1)


def test_predict_labelstudio_round_trip(vendor_ner_checkpoint, synthetic_invoices, tmp_path):
    """predict.py --labelstudio on an invoice; the tasks, submitted unchanged, import back to the predicted words
    and entities."""
    from layoutkit.apps import predict

    annotation = synthetic_invoices / "annotations" / "invoice_00000.json"
    tasks_file = tmp_path / "tasks.json"
    code = predict.main(["--model_name_or_path", str(vendor_ner_checkpoint), "--words_json", str(annotation),
                         "--output_dir", str(tmp_path / "pred"), "--labelstudio", str(tasks_file), "--device", "cpu"])
    assert code == 0
    document = json.loads((tmp_path / "pred" / "invoice_00000.json").read_text())
    tasks = json.loads(tasks_file.read_text())
    assert len(tasks) == 1 and tasks[0]["data"]["image"] == "/data/local-files/?d=invoice_00000.png"
    assert tasks[0]["predictions"][0]["model_version"] == str(vendor_ner_checkpoint)

    export = tmp_path / "export.json"
    export.write_text(json.dumps(submitted(tasks)))
    code, report, _ = build(export, synthetic_invoices / "images", tmp_path / "out")
    assert code == 0 and not report["skipped"]
    row = rows_by_id(tmp_path / "out")["task-1"]
    assert Counter(row["words"]) == Counter(w["text"] for w in document["words"])
    imported = Counter((s.label, " ".join(row["words"][s.start : s.end])) for s in bio_spans(row["labels"]))
    assert imported == Counter((e["entity_group"], e["word"]) for e in document["entities"])
    assert sum(imported.values()) > 0


class FixedWordsEngine(ocr.OcrEngine):
    """An OCR engine that reads invoice_a.png as a real engine might: one word split in two, one word outside
    every region."""

    name = "labelstudio-test-engine"

    def read(self, page):
        words = ["ACME", "Corp", "Invoice", "No.", "42", "Total:", "$1,250", ".00", "Page", "1"]
        boxes = [[42, 22, 140, 58], [150, 22, 270, 58], [402, 22, 520, 58], [530, 22, 600, 58], [610, 22, 700, 58],
                 [402, 322, 515, 350], [562, 322, 680, 350], [682, 322, 715, 350], [20, 380, 60, 396],
                 [64, 380, 72, 396]]
        return ocr.OcrResult(words, boxes, [90.0] * len(words), [0, 0, 1, 1, 1, 2, 3, 3, 4, 4])


def test_ocr_words_take_the_region_labels_and_links(images, tmp_path):
    ocr.register_ocr_engine(FixedWordsEngine)
    build_with_ocr = OcrBuild.create("labelstudio-test-engine", cache_dir=tmp_path / "cache")
    dataset = import_labelstudio(DATA / "export_json.json", images, tmp_path / "out", ocr=build_with_ocr,
                                 ratios=(1, 0, 0))
    names = dataset["train"].features["ner_tags"].feature.names
    row = next(r for r in dataset["train"] if r["id"] == "task-11")
    assert row["words"] == ["ACME", "Corp", "Invoice", "No.", "42", "Total:", "$1,250", ".00", "Page", "1"]
    assert [names[t] for t in row["ner_tags"]] == ["B-vendor", "I-vendor", "O", "O", "O", "B-question", "B-answer",
                                                   "I-answer", "O", "O"]
    links = json.loads((tmp_path / "out" / "labelstudio_links.json").read_text())["documents"]["task-11"]
    assert links["entity_ids"] == [0, 0, 1, 1, 1, 2, 3, 3, None, None]
    assert links["relations"] == [[2, 3]]
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["ocr"]["settings"]["engine"] == "labelstudio-test-engine"
