"""dataset_loader: synthetic invoices, build end to end, splits, labels, FUNSD, dataset card and push, CLI."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hub from tests

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import ClassLabel, DatasetDict, Image as ImageFeature, Sequence, Value, load_from_disk
from huggingface_hub import DatasetCard
from PIL import Image

import dataset_loader
from dataset_loader.__main__ import main
from dataset_loader.annotations import read_annotation
from dataset_loader.build import build_dataset, parse_labels
from dataset_loader.card import make_dataset_card, push_dataset
from dataset_loader.features import ner_features
from dataset_loader.funsd import FUNSD_LABELS, import_funsd, read_funsd
from dataset_loader.preprocessing import load_preprocessing
from dataset_loader.splits import assign_splits, parse_ratios, split_counts
from dataset_loader.synth import ENTITY_TYPES, generate
from layoutkit.pipelines.boxes import group_lines, resize_document, segment_boxes
from layoutkit.pipelines.labels import bio_spans, label_list_from_types

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNSD_DIR = Path(os.environ.get("FUNSD_DIR", REPO_ROOT.parent / "shared" / "datasets" / "funsd"))
SYNTH_DOCS = 12
SYNTH_SEED = 7
INVOICE_LABELS = label_list_from_types(ENTITY_TYPES)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "invoices", SYNTH_DOCS, seed=SYNTH_SEED, workers=1)


@pytest.fixture(scope="module")
def built(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetDict]:
    output = tmp_path_factory.mktemp("built") / "dataset"
    return output, build_dataset(synth_dir, output, seed=42)


def _annotations(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((folder / "annotations").glob("*.json"))}


# ------------------------------------------------------------------ synthetic invoices


def test_synth_is_deterministic(synth_dir, tmp_path):
    again = generate(tmp_path / "again", 3, seed=SYNTH_SEED, workers=1)
    for index in range(3):
        name = f"invoice_{index:05d}"
        assert (again / "annotations" / f"{name}.json").read_bytes() == (
            synth_dir / "annotations" / f"{name}.json"
        ).read_bytes()
        assert (again / "images" / f"{name}.png").read_bytes() == (synth_dir / "images" / f"{name}.png").read_bytes()
    other = generate(tmp_path / "other", 1, seed=SYNTH_SEED + 1, workers=1)
    assert (other / "annotations" / "invoice_00000.json").read_bytes() != (
        synth_dir / "annotations" / "invoice_00000.json"
    ).read_bytes()


def test_synth_documents_follow_the_format(synth_dir):
    annotations = _annotations(synth_dir)
    assert len(annotations) == SYNTH_DOCS and len(list((synth_dir / "images").glob("*.png"))) == SYNTH_DOCS
    for stem, data in annotations.items():
        assert set(data) == {"image", "words", "boxes", "labels", "segment_boxes"}
        document = read_annotation(synth_dir / "annotations" / f"{stem}.json", synth_dir / "images", INVOICE_LABELS)
        assert document.boxes == data["boxes"] and document.dropped_words == 0  # exact, nothing clamped
        assert 55 <= len(data["words"]) <= 210
        with Image.open(synth_dir / "images" / data["image"]) as image:
            assert 800 <= image.width <= 900 and 1040 <= image.height <= 1160 and image.mode == "RGB"
        # every entity type appears, and every entity starts with B-
        spans = bio_spans(data["labels"])
        assert {span.label for span in spans} == set(ENTITY_TYPES)
        assert all(data["labels"][span.start].startswith("B-") for span in spans)
        # each word lies inside its segment (line) box
        for box, segment in zip(data["boxes"], data["segment_boxes"]):
            assert segment[0] <= box[0] and segment[1] <= box[1] and box[2] <= segment[2] and box[3] <= segment[3]


def test_synth_keyword_cues_are_outside_entities(synth_dir):
    """Cue words (Invoice, Total, Due, ...) are labelled O: the values carry the entity tags."""
    for data in _annotations(synth_dir).values():
        for word, label in zip(data["words"], data["labels"]):
            if word.rstrip(":.") in {"Invoice", "Subtotal", "Sub-total", "Total", "TOTAL", "Due", "Tax", "VAT"}:
                assert label == "O", (word, label)


def test_synth_workers_give_the_same_documents(synth_dir, tmp_path):
    parallel = generate(tmp_path / "parallel", 4, seed=SYNTH_SEED, workers=2)
    for index in range(4):
        name = f"invoice_{index:05d}.json"
        assert (parallel / "annotations" / name).read_bytes() == (synth_dir / "annotations" / name).read_bytes()


# ------------------------------------------------------------------ build end to end


def test_build_features_are_exact(built):
    _, dataset = built
    assert list(dataset) == ["train", "validation", "test"]
    expected = ner_features(INVOICE_LABELS)
    for part in dataset.values():
        assert part.features == expected
    features = dataset["train"].features
    assert features["id"] == Value("string")
    assert features["words"] == Sequence(Value("string"))
    assert features["bboxes"] == Sequence(Sequence(Value("int32"), length=4))
    assert features["segment_bboxes"] == Sequence(Sequence(Value("int32"), length=4))
    assert features["ner_tags"] == Sequence(ClassLabel(names=INVOICE_LABELS))
    assert features["image"] == ImageFeature()
    assert dataset_loader.label_names_of(features) == INVOICE_LABELS


def test_build_rows_match_annotations_resized(built, synth_dir):
    _, dataset = built
    annotations = _annotations(synth_dir)
    for part in dataset.values():
        for row in part:
            data = annotations[row["id"]]
            assert row["words"] == data["words"]
            assert [INVOICE_LABELS[tag] for tag in row["ner_tags"]] == data["labels"]
            with Image.open(synth_dir / "images" / data["image"]) as page:
                # The default resize fits the page inside 1000x1000 keeping its shape: a portrait page stays
                # portrait, its longest side 1000 pixels, no padding.
                resized, (boxes, segments) = resize_document(
                    page, [data["boxes"], data["segment_boxes"]], (1000, 1000), keep_aspect=True, pad=False)
                assert abs(resized.width / resized.height - page.width / page.height) < 0.01
            assert row["image"].size == resized.size and row["image"].mode == "RGB"
            assert max(row["image"].size) == 1000 and row["image"].height > row["image"].width
            assert row["bboxes"] == boxes and row["segment_bboxes"] == segments
            width, height = row["image"].size
            for x0, y0, x1, y1 in row["bboxes"] + row["segment_bboxes"]:
                assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height


def test_build_splits_are_seeded_and_complete(built, synth_dir):
    _, dataset = built
    ids = sorted(_annotations(synth_dir))
    expected = assign_splits(ids, (0.8, 0.1, 0.1), 42)
    assert {name: sorted(part["id"]) for name, part in dataset.items()} == expected
    assert [len(expected[name]) for name in ("train", "validation", "test")] == [10, 1, 1]
    assert assign_splits(ids, (0.8, 0.1, 0.1), 42) == expected  # same seed, same split
    assert assign_splits(ids, (0.8, 0.1, 0.1), 43) != expected


def test_build_writes_preprocessing_and_report(built):
    output, _ = built
    expected = {"resize": [1000, 1000], "keep_aspect": True, "pad": False}
    assert json.loads((output / "preprocessing.json").read_text()) == expected
    assert load_preprocessing(output) == expected
    assert load_preprocessing(output / "missing") is None
    assert load_preprocessing("someone/hub-dataset") is None
    report = json.loads((output / "build_report.json").read_text())
    assert report["splits"] == {"train": 10, "validation": 1, "test": 1}
    assert report["documents_found"] == SYNTH_DOCS and report["skipped"] == [] and report["empty_documents"] == 0
    assert report["labels"] == INVOICE_LABELS
    assert isinstance(load_from_disk(str(output)), DatasetDict)


def test_segment_boxes_default_to_lines(tmp_path, synth_dir):
    """Without segment_boxes in the annotation, each word gets its line's box (layoutkit.group_lines)."""
    data = _annotations(synth_dir)["invoice_00000"]
    del data["segment_boxes"]
    (tmp_path / "data" / "annotations").mkdir(parents=True)
    (tmp_path / "data" / "images").mkdir()
    (tmp_path / "data" / "annotations" / "doc.json").write_text(json.dumps(data))
    (tmp_path / "data" / "images" / data["image"]).write_bytes((synth_dir / "images" / data["image"]).read_bytes())
    row = build_dataset(tmp_path / "data", tmp_path / "out", ratios=(1, 0, 0), size=(500, 350))["train"][0]
    lines = segment_boxes(data["boxes"], group_lines(data["boxes"]))
    with Image.open(tmp_path / "data" / "images" / data["image"]) as page:
        _, (expected,) = resize_document(page, [lines], (500, 350), keep_aspect=True, pad=False)
    assert row["segment_bboxes"] == expected
    assert len(set(map(tuple, expected))) < len(expected)  # words really share line boxes


def test_keep_aspect_fits_and_pads(tmp_path, synth_dir):
    subset = tmp_path / "data"
    (subset / "annotations").mkdir(parents=True)
    (subset / "images").mkdir()
    for stem, data in list(_annotations(synth_dir).items())[:2]:
        (subset / "annotations" / f"{stem}.json").write_text(json.dumps(data))
        (subset / "images" / data["image"]).write_bytes((synth_dir / "images" / data["image"]).read_bytes())
    dataset = build_dataset(subset, tmp_path / "out", size=(1000, 700), keep_aspect=True, pad=True, ratios=(1, 0, 0))
    assert load_preprocessing(tmp_path / "out") == {"resize": [1000, 700], "keep_aspect": True, "pad": True}
    for row in dataset["train"]:
        data = _annotations(subset)[row["id"]]
        with Image.open(subset / "images" / data["image"]) as page:
            scale = 700 / page.height  # portrait page: height is the limit
            content_width = round(page.width * scale)
        assert row["image"].size == (1000, 700)
        assert row["image"].getpixel((999, 350)) == (255, 255, 255)  # white padding on the right
        assert max(box[2] for box in row["bboxes"]) <= content_width
        first = data["boxes"][0]
        assert row["bboxes"][0] == [round(value * scale) for value in first]


def test_output_overwrite(tmp_path, built, synth_dir):
    output, _ = built
    copy = tmp_path / "copy"
    build_dataset(synth_dir, copy, ratios=(1, 0, 0), size=(100, 70))
    with pytest.raises(dataset_loader.BuildError, match="--overwrite"):
        build_dataset(synth_dir, copy, ratios=(1, 0, 0), size=(100, 70))
    dataset = build_dataset(synth_dir, copy, ratios=(1, 0, 0), size=(120, 80), keep_aspect=False, overwrite=True)
    assert dataset["train"][0]["image"].size == (120, 80)


# ------------------------------------------------------------------ splits and labels


@pytest.mark.parametrize(
    ("total", "ratios", "expected"),
    [
        (12, (0.8, 0.1, 0.1), [10, 1, 1]),
        (100, (0.8, 0.1, 0.1), [80, 10, 10]),
        (3, (0.8, 0.1, 0.1), [1, 1, 1]),
        (2, (0.8, 0.1, 0.1), [1, 1, 0]),
        (1, (0.8, 0.1, 0.1), [1, 0, 0]),
        (10, (0.9, 0.1, 0.0), [9, 1, 0]),
        (10, (1.0, 0.0, 0.0), [10, 0, 0]),
    ],
)
def test_split_counts(total, ratios, expected):
    assert split_counts(total, ratios) == expected


def test_parse_ratios():
    assert parse_ratios("8,1,1") == pytest.approx((0.8, 0.1, 0.1))
    for bad in ("0.8,0.2", "a,b,c", "0,0.5,0.5", "0.8,-0.1,0.3"):
        with pytest.raises(ValueError):
            parse_ratios(bad)


def test_parse_labels(tmp_path):
    assert parse_labels("total,vendor") == ["O", "B-total", "I-total", "B-vendor", "I-vendor"]
    assert parse_labels("O,B-x,I-x") == ["O", "B-x", "I-x"]  # BIO lists keep their order
    (tmp_path / "labels.json").write_text(json.dumps(["O", "B-b", "I-b", "B-a", "I-a"]))
    assert parse_labels(str(tmp_path / "labels.json")) == ["O", "B-b", "I-b", "B-a", "I-a"]
    (tmp_path / "labels.txt").write_text("total\nvendor\n")
    assert parse_labels(str(tmp_path / "labels.txt")) == ["O", "B-total", "I-total", "B-vendor", "I-vendor"]
    for bad in ("O,total", "B-x,I-x", "x,x", ""):
        with pytest.raises(ValueError):
            parse_labels(bad)


# ------------------------------------------------------------------ FUNSD


def test_read_funsd_tags_segments_and_blank_words(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("L", (100, 100), 255).save(tmp_path / "images" / "form.png")
    form = {
        "form": [
            {"id": 0, "label": "question", "box": [10, 10, 60, 20], "linking": [[0, 1]],
             "words": [{"text": " ", "box": [10, 10, 20, 20]}, {"text": "Date", "box": [22, 10, 40, 20]},
                       {"text": "sent:", "box": [42, 10, 60, 20]}]},
            {"id": 1, "label": "answer", "box": [70, 10, 90, 20], "linking": [[0, 1]],
             "words": [{"text": "today", "box": [70, 10, 90, 20]}]},
            {"id": 2, "label": "other", "box": [10, 50, 30, 60], "linking": [],
             "words": [{"text": "p.1", "box": [10, 50, 30, 60]}]},
        ]
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "form.json").write_text(json.dumps(form))
    document = read_funsd(tmp_path / "annotations" / "form.json")
    assert document.words == ["Date", "sent:", "today", "p.1"]
    assert document.labels == ["B-QUESTION", "I-QUESTION", "B-ANSWER", "O"]
    assert document.segment_boxes == [[10, 10, 60, 20], [10, 10, 60, 20], [70, 10, 90, 20], [10, 50, 30, 60]]
    assert document.dropped_words == 1


def test_read_funsd_errors_name_the_funsd_field(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("L", (100, 100), 255).save(tmp_path / "images" / "form.png")
    form = {"form": [{"id": 0, "label": "question", "box": [10, 10, 60, 20], "linking": [],
                      "words": [{"text": "A", "box": [10, 10, 20, 20]}, {"text": "B", "box": [40, 10, 30, 20]}]}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "form.json").write_text(json.dumps(form))
    with pytest.raises(dataset_loader.AnnotationError) as caught:
        read_funsd(tmp_path / "annotations" / "form.json")
    assert caught.value.field == "form[0].words[1].box"


@pytest.mark.skipif(not FUNSD_DIR.is_dir(), reason=f"FUNSD not found at {FUNSD_DIR} (set FUNSD_DIR)")
def test_funsd_import(tmp_path):
    dataset = import_funsd(FUNSD_DIR, tmp_path / "funsd", max_docs=3, seed=42)
    assert {name: len(part) for name, part in dataset.items()} == {"train": 2, "validation": 1, "test": 3}
    # FUNSD's entity ids and links come along as the optional relation columns (docs/relations.md).
    assert dataset["train"].features == ner_features(FUNSD_LABELS, ["entity_ids", "relations"])
    assert FUNSD_LABELS == ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]

    # Compare one form with its source file: tags, entity boxes as segments, blank words counted.
    row = dataset["test"][0]
    source = json.loads((FUNSD_DIR / "testing_data" / "annotations" / f"{row['id']}.json").read_text())
    words, tags, segments = [], [], []
    for entity in source["form"]:
        kept = [word for word in entity["words"] if word["text"].strip()]
        kind = {"question": "QUESTION", "answer": "ANSWER", "header": "HEADER"}.get(entity["label"])
        for index, word in enumerate(kept):
            words.append(word["text"])
            tags.append("O" if kind is None else f"{'B' if index == 0 else 'I'}-{kind}")
            segments.append(entity["box"])
    assert row["words"] == words
    assert [FUNSD_LABELS[tag] for tag in row["ner_tags"]] == tags
    with Image.open(FUNSD_DIR / "testing_data" / "images" / f"{row['id']}.png") as page:
        _, (expected_segments,) = resize_document(page, [segments], (1000, 1000), keep_aspect=True, pad=False)
    assert row["segment_bboxes"] == expected_segments and row["image"].mode == "RGB"

    report = json.loads((tmp_path / "funsd" / "build_report.json").read_text())
    blank = 0
    for folder in ("training_data", "testing_data"):
        for path in sorted((FUNSD_DIR / folder / "annotations").glob("*.json"))[:3]:
            form = json.loads(path.read_text())["form"]
            blank += sum(1 for entity in form for word in entity["words"] if not word["text"].strip())
    assert report["dropped_blank_words"] == blank and report["source_format"] == "funsd"


# ------------------------------------------------------------------ dataset card and push


def test_dataset_card(built):
    output, dataset = built
    report = json.loads((output / "build_report.json").read_text())
    card = make_dataset_card(dataset, load_preprocessing(output), report, repo_id="me/invoices")
    metadata = card.data.to_dict()
    assert metadata["task_categories"] == ["token-classification"]
    assert {"invoices", "layoutlm"} <= set(metadata["tags"])
    assert [entry["split"] for entry in metadata["configs"][0]["data_files"]] == ["train", "validation", "test"]
    names = metadata["dataset_info"]["features"][4]["list"]["class_label"]["names"]
    assert list(names.values()) == INVOICE_LABELS  # the Hub keeps the label names
    text = card.text
    for label in INVOICE_LABELS:
        assert f"`{label}`" in text
    train_entities = sum(1 for row in dataset["train"] for tag in row["ner_tags"] if INVOICE_LABELS[tag] == "B-total")
    assert f"| train | 10 | {sum(len(w) for w in dataset['train']['words'])} |" in text
    assert str(train_entities) in text
    assert "1000x1000" in text and "width x height" in text and "aspect ratio kept" in text
    assert '"segment_boxes"' in text  # the annotation format
    assert 'load_dataset("me/invoices")' in text
    assert "`SCUT-DLVCLab/lilt-roberta-en-base`) and LayoutLM v1 weights are MIT" in text  # base-model licences
    assert DatasetCard(str(card)).data.task_categories == ["token-classification"]  # round-trips


def test_push_is_mocked_end_to_end(built, monkeypatch):
    output, _ = built
    calls = []
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(DatasetDict, "push_to_hub", lambda self, repo, **kw: calls.append(("data", repo, self, kw)))
    monkeypatch.setattr(DatasetCard, "push_to_hub", lambda self, repo, **kw: calls.append(("card", repo, self, kw)))
    card = push_dataset(output, "me/invoices", private=True)
    assert [call[:2] for call in calls] == [("data", "me/invoices"), ("card", "me/invoices")]
    _, _, pushed, kwargs = calls[0]
    assert list(pushed) == ["train", "validation", "test"] and kwargs["private"] is True
    assert kwargs["token"] == "hf_test_token" and calls[1][3]["token"] == "hf_test_token"
    assert calls[1][2] is card and "me/invoices" in card.text

    calls.clear()  # the CLI runs the same push
    assert main(["push", "--dataset", str(output), "--repo", "me/other"]) == 0
    assert [call[:2] for call in calls] == [("data", "me/other"), ("card", "me/other")]


def test_push_without_token_fails_clearly(built, monkeypatch, capsys):
    output, _ = built
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("dataset_loader.card.get_token", lambda: None)
    monkeypatch.setattr(DatasetDict, "push_to_hub", lambda *a, **k: pytest.fail("must not push"))
    assert main(["push", "--dataset", str(output), "--repo", "me/invoices"]) == 1
    assert "HF_TOKEN" in capsys.readouterr().err


# ------------------------------------------------------------------ command line


def _cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "dataset_loader", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_synth_then_build(tmp_path, built, synth_dir):
    result = _cli("synth", "--output", str(tmp_path / "inv"), "--num-docs", "2", "--seed", str(SYNTH_SEED),
                  "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "inv" / "annotations" / "invoice_00001.json").read_bytes() == (
        synth_dir / "annotations" / "invoice_00001.json"
    ).read_bytes()

    result = _cli("build", "--data-dir", str(synth_dir), "--output", str(tmp_path / "out"), "--seed", "42",
                  "--resize", "200x140")
    assert result.returncode == 0, result.stderr
    assert "saved" in result.stdout and "build_report.json" in result.stdout
    _, dataset = built
    again = load_from_disk(str(tmp_path / "out"))
    assert {name: part["id"] for name, part in again.items()} == {name: part["id"] for name, part in dataset.items()}


def test_cli_strict_failure_names_file_and_field(tmp_path, synth_dir):
    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    (data / "images").mkdir()
    annotation = _annotations(synth_dir)["invoice_00000"]
    annotation["labels"][3] = "total"
    (data / "annotations" / "broken.json").write_text(json.dumps(annotation))
    (data / "images" / annotation["image"]).write_bytes((synth_dir / "images" / annotation["image"]).read_bytes())
    result = _cli("build", "--data-dir", str(data), "--output", str(tmp_path / "out"), "--strict")
    assert result.returncode == 1
    assert "broken.json" in result.stderr and "labels[3]" in result.stderr and "not a BIO tag" in result.stderr


def test_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["build", "--data-dir", "x", "--output", "y", "--resize", "1000"])
    assert caught.value.code == 2 and "WIDTHxHEIGHT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build", "--data-dir", "x", "--output", "y", "--split", "0.5,0.5"])


def test_resize_modes_from_the_command_line(tmp_path, synth_dir):
    """fit (default) keeps a portrait page portrait; pad fits then pads to the size; stretch fills it."""
    subset = tmp_path / "data"
    (subset / "annotations").mkdir(parents=True)
    (subset / "images").mkdir()
    stem, data = next(iter(_annotations(synth_dir).items()))
    (subset / "annotations" / f"{stem}.json").write_text(json.dumps(data))
    (subset / "images" / data["image"]).write_bytes((synth_dir / "images" / data["image"]).read_bytes())
    with Image.open(subset / "images" / data["image"]) as page:
        width, height = page.size
    sizes = {}
    for mode in ("fit", "pad", "stretch"):
        output = tmp_path / mode
        assert main(["build", "--data-dir", str(subset), "--output", str(output), "--split", "1,0,0",
                     "--resize", "800x800", *(["--resize-mode", mode] if mode != "fit" else [])]) == 0
        sizes[mode] = load_from_disk(str(output))["train"][0]["image"].size
        settings = load_preprocessing(output)
        assert (settings["keep_aspect"], settings["pad"]) == {"fit": (True, False), "pad": (True, True),
                                                              "stretch": (False, True)}[mode]
    assert sizes["fit"] == (round(width * 800 / height), 800)
    assert sizes["pad"] == sizes["stretch"] == (800, 800)
    assert main(["build", "--data-dir", str(subset), "--output", str(tmp_path / "old"), "--split", "1,0,0",
                 "--keep-aspect"]) == 0
    assert load_preprocessing(tmp_path / "old")["pad"] is True
