"""`python -m dataset_loader classify` and `synth-classes`: imagefolder layout, labels, stratified seeded split,
bad inputs (unreadable image, empty class folder, single class), OCR once."""

import json
import shutil

import pytest
from PIL import Image, ImageDraw, ImageFont


@pytest.fixture(scope="module")
def class_sample(tmp_path_factory):
    """12 synthetic documents, 4 per class, with word JSONs beside the images."""
    folder = tmp_path_factory.mktemp("classes")
    assert cli("synth-classes", "--output", folder, "--num-docs", 12, "--seed", 0) == 0
    return folder


def cli(*args) -> int:
    """`python -m dataset_loader ...` in this process (the same code path, without the start-up cost)."""
    from dataset_loader.__main__ import main

    return main([str(a) for a in args])


def build(data_dir, output, *extra, check=True):
    code = cli("classify", "--data-dir", data_dir, "--output", output, "--resize", "500x350",
               "--resize-mode", "stretch", *extra)
    if check:
        assert code == 0
    return code


def test_synth_classes_layout_and_determinism(class_sample, tmp_path):
    assert sorted(p.name for p in class_sample.iterdir()) == ["invoice", "letter", "receipt"]
    for name in ("invoice", "letter", "receipt"):
        images = sorted((class_sample / name).glob("*.png"))
        assert len(images) == 4
        for image in images:
            words = json.loads(image.with_suffix(".json").read_text())
            assert len(words["words"]) == len(words["boxes"]) > 5
    receipt = Image.open(next((class_sample / "receipt").glob("*.png")))
    assert receipt.height > 1.5 * receipt.width  # narrow and long
    again = tmp_path / "again"
    assert cli("synth-classes", "--output", again, "--num-docs", 12, "--seed", 0) == 0
    for path in class_sample.rglob("*.json"):
        assert (again / path.relative_to(class_sample)).read_text() == path.read_text()


def test_classify_builds_labels_words_and_stratified_seeded_split(class_sample, tmp_path):
    from datasets import load_from_disk

    build(class_sample, tmp_path / "a", "--seed", 3)
    build(class_sample, tmp_path / "b", "--seed", 3)
    build(class_sample, tmp_path / "c", "--seed", 4)
    a, b, c = (load_from_disk(str(tmp_path / name)) for name in "abc")
    assert a["train"].features["label"].names == ["invoice", "letter", "receipt"]
    assert set(a) == {"train", "validation", "test"}
    ids = {split: a[split]["id"] for split in a}
    assert ids == {split: b[split]["id"] for split in b}  # same seed, same split
    assert ids != {split: c[split]["id"] for split in c}  # another seed, another split
    assert sum(len(v) for v in ids.values()) == 12
    for split in a:  # stratified: every class in every split
        assert sorted(set(a[split]["label"])) == [0, 1, 2]
    row = a["train"][0]
    assert row["image"].size == (500, 350)
    label = a["train"].features["label"].names[row["label"]]
    assert row["id"].startswith(label + "/")
    source = json.loads((class_sample / f"{row['id']}.json").read_text())
    assert row["words"] == source["words"]
    assert all(0 <= x0 <= x1 <= 500 and 0 <= y0 <= y1 <= 350 for x0, y0, x1, y1 in row["bboxes"])
    assert json.loads((tmp_path / "a" / "preprocessing.json").read_text()) == {"resize": [500, 350],
                                                                                "keep_aspect": False, "pad": True}
    report = json.loads((tmp_path / "a" / "build_report.json").read_text())
    assert report["class_counts"] == {"invoice": 4, "letter": 4, "receipt": 4}


def test_bad_inputs_reported_or_fatal(class_sample, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(class_sample, data)
    (data / "letter" / "broken.png").write_bytes(b"not an image")
    (data / "empty_class").mkdir()
    build(data, tmp_path / "lenient")
    report = json.loads((tmp_path / "lenient" / "build_report.json").read_text())
    assert report["documents_skipped"] == 1 and "broken.png" in report["skipped"][0]["file"]
    assert report["empty_classes"] == ["empty_class"]
    assert report["labels"] == ["invoice", "letter", "receipt"]

    capsys.readouterr()
    assert build(data, tmp_path / "strict", "--strict", check=False) == 1
    assert "broken.png" in capsys.readouterr().err

    single = tmp_path / "single"
    shutil.copytree(class_sample / "invoice", single / "invoice")
    (single / "letter").mkdir()
    assert build(single, tmp_path / "single_out", check=False) == 1
    error = capsys.readouterr().err
    assert "nothing to learn" in error and str(single / "invoice") in error


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")
def test_ocr_once_on_two_images(tmp_path):
    from datasets import load_from_disk

    data = tmp_path / "data"
    for name, text in (("memo", "MEMO TO STAFF"), ("bill", "TOTAL DUE 42")):
        (data / name).mkdir(parents=True)
        image = Image.new("RGB", (600, 200), "white")
        ImageDraw.Draw(image).text((40, 70), text, fill="black", font=ImageFont.load_default(size=40))
        image.save(data / name / f"{name}.png")
    build(data, tmp_path / "out", "--ocr", "--split", "1,0,0")
    train = load_from_disk(str(tmp_path / "out"))["train"]
    words = {row["id"]: row["words"] for row in train}
    assert "MEMO" in words["memo/memo"] and "TOTAL" in words["bill/bill"]
    row = train[0]
    assert all(x1 <= 500 and y1 <= 350 for _, _, x1, y1 in row["bboxes"])  # boxes of the resized page
    assert json.loads((tmp_path / "out" / "build_report.json").read_text())["ocr_documents"] == 2
