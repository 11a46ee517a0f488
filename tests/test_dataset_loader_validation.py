"""dataset_loader: validation of user annotations (bad inputs, lenient vs strict), image modes, EXIF."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hub from tests

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from dataset_loader.annotations import AnnotationError, image_size, read_annotation
from dataset_loader.build import build_dataset
from dataset_loader.writer import BuildError

SIZE = (120, 80)  # tiny resize: these tests are about validation, not pixels
LABELS = ["O", "B-total", "I-total", "B-vendor", "I-vendor"]
PAGE = (300, 200)


def write_image(path: Path, size: tuple[int, int] = PAGE, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, "white" if mode == "RGB" else 255).save(path)


def write_annotation(root: Path, name: str, data: Any, raw: str | None = None) -> Path:
    path = root / "annotations" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if raw is not None else json.dumps(data), encoding="utf-8")
    return path


def good_doc(root: Path, name: str, mode: str = "RGB", **changes: Any) -> Path:
    """A valid 3-word document on a 300x200 page; `changes` override annotation fields."""
    write_image(root / "images" / f"{name}.png", mode=mode)
    data = {
        "image": f"{name}.png",
        "words": ["ACME", "Total", "12.00"],
        "boxes": [[10, 10, 60, 25], [200, 150, 240, 165], [250, 150, 290, 165]],
        "labels": ["B-vendor", "O", "B-total"],
    }
    data.update(changes)
    return write_annotation(root, name, data)


# ------------------------------------------------------------------ the bad inputs


def _missing_image(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, image="nowhere.png")


def _corrupt_image(root: Path, name: str = "bad") -> Path:
    path = good_doc(root, name)
    (root / "images" / f"{name}.png").write_bytes(b"this is not an image")
    return path


def _truncated_image(root: Path, name: str = "bad") -> Path:
    """A PNG whose header reads fine but whose pixel data is cut: only decoding finds it."""
    path = good_doc(root, name)
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    noisy.save(root / "images" / f"{name}.png")
    data = (root / "images" / f"{name}.png").read_bytes()
    (root / "images" / f"{name}.png").write_bytes(data[: len(data) // 2])
    return path


def _image_escapes_folder(root: Path, name: str = "bad") -> Path:
    write_image(root / f"{name}_outside.png")  # exists, so only the escape is wrong
    return good_doc(root, name, image=f"../{name}_outside.png")


def _image_absolute_path(root: Path, name: str = "bad") -> Path:
    write_image(root / f"{name}_outside.png")
    return good_doc(root, name, image=str((root / f"{name}_outside.png").resolve()))


def _lengths_differ(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, boxes=[[10, 10, 60, 25], [200, 150, 240, 165]])


def _segment_lengths_differ(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, segment_boxes=[[10, 10, 60, 25]])


def _box_not_four_numbers(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, boxes=[[10, 10, 60, 25], [200, 150, 240], [250, 150, 290, 165]])


def _box_not_numbers(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, boxes=[["10", 10, 60, 25], [200, 150, 240, 165], [250, 150, 290, 165]])


def _box_inverted(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, boxes=[[10, 10, 60, 25], [240, 150, 200, 165], [250, 150, 290, 165]])


def _box_outside_image(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, boxes=[[10, 10, 60, 25], [200, 150, 240, 165], [250, 150, 310, 165]])


def _segment_box_outside_image(root: Path, name: str = "bad") -> Path:
    segments = [[10, 10, 60, 25], [200, 150, 290, 165], [200, 150, 290, 230]]
    return good_doc(root, name, segment_boxes=segments)


def _label_not_bio(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, labels=["B-vendor", "total", "B-total"])


def _label_bad_prefix(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, labels=["X-foo", "O", "B-total"])


def _label_not_in_list(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, labels=["B-vendor", "O", "B-tax"])


def _invalid_json(root: Path, name: str = "bad") -> Path:
    write_image(root / "images" / f"{name}.png")
    return write_annotation(root, name, None, raw='{"image": "' + name + '.png", "words": [')


def _missing_field(root: Path, name: str = "bad") -> Path:
    path = good_doc(root, name)
    data = json.loads(path.read_text())
    del data["labels"]
    return write_annotation(root, name, data)


def _words_not_a_list(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, words="ACME Total 12.00")


def _word_not_a_string(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, words=["ACME", 7, "12.00"])


def _boxes_not_a_list(root: Path, name: str = "bad") -> Path:
    return good_doc(root, name, boxes={"0": [10, 10, 60, 25]})


def _top_level_not_object(root: Path, name: str = "bad") -> Path:
    write_image(root / "images" / f"{name}.png")
    return write_annotation(root, name, [f"{name}.png"])


# (case id, writer, expected field, words expected in the message)
BAD_INPUTS: list[tuple[str, Callable[[Path], Path], str | None, str]] = [
    ("missing_image", _missing_image, "image", "does not exist"),
    ("corrupt_image", _corrupt_image, "image", "cannot be read"),
    ("truncated_image", _truncated_image, "image", "cannot be read"),
    ("image_escapes_folder", _image_escapes_folder, "image", "outside"),
    ("image_absolute_path", _image_absolute_path, "image", "outside"),
    ("lengths_differ", _lengths_differ, "words/boxes/labels", "lengths differ"),
    ("segment_lengths_differ", _segment_lengths_differ, "words/boxes/labels/segment_boxes", "lengths differ"),
    ("box_not_four_numbers", _box_not_four_numbers, "boxes[1]", "4 numbers"),
    ("box_not_numbers", _box_not_numbers, "boxes[0]", "4 numbers"),
    ("box_inverted", _box_inverted, "boxes[1]", "inverted"),
    ("box_outside_image", _box_outside_image, "boxes[2]", "outside the 300x200 image"),
    ("segment_box_outside_image", _segment_box_outside_image, "segment_boxes[2]", "outside"),
    ("label_not_bio", _label_not_bio, "labels[1]", "not a BIO tag"),
    ("label_bad_prefix", _label_bad_prefix, "labels[0]", "not a BIO tag"),
    ("label_not_in_list", _label_not_in_list, "labels[2]", "not in the label list"),
    ("invalid_json", _invalid_json, None, "not valid JSON"),
    ("missing_field", _missing_field, "labels", "required field is missing"),
    ("words_not_a_list", _words_not_a_list, "words", "must be a list"),
    ("word_not_a_string", _word_not_a_string, "words[1]", "must be a string"),
    ("boxes_not_a_list", _boxes_not_a_list, "boxes", "must be a list"),
    ("top_level_not_object", _top_level_not_object, None, "JSON object"),
]
CASE_IDS = [case[0] for case in BAD_INPUTS]


@pytest.fixture(scope="module")
def lenient_build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One lenient build of a folder holding every bad input (each document named after its case) and three
    good documents: an RGB page, a grayscale page and an empty page."""
    root = tmp_path_factory.mktemp("lenient") / "data"
    good_doc(root, "good_rgb")
    good_doc(root, "good_gray", mode="L")
    good_doc(root, "good_empty", words=[], boxes=[], labels=[])
    for case, writer, _, _ in BAD_INPUTS:
        writer(root, case)
    output = root.parent / "out"
    dataset = build_dataset(root, output, size=SIZE, labels=LABELS, ratios=(1, 0, 0))
    report = json.loads((output / "build_report.json").read_text())
    return {"root": root, "dataset": dataset, "report": report}


@pytest.mark.parametrize(("case", "writer", "field", "words"), BAD_INPUTS, ids=CASE_IDS)
def test_lenient_build_skips_and_reports(lenient_build, case, writer, field, words):
    report = lenient_build["report"]
    entries = [entry for entry in report["skipped"] if Path(entry["file"]).stem == case]
    assert len(entries) == 1, f"{case} not reported once: {report['skipped']}"
    assert entries[0]["field"] == field
    assert words in entries[0]["reason"]
    kept = set(lenient_build["dataset"]["train"]["id"])
    assert case not in kept
    assert {"good_rgb", "good_gray", "good_empty"} <= kept  # the others are kept


def test_lenient_report_counts(lenient_build):
    report = lenient_build["report"]
    assert report["documents_found"] == len(BAD_INPUTS) + 3
    assert report["documents_skipped"] == len(BAD_INPUTS)
    assert report["documents_kept"] == 3
    assert report["splits"] == {"train": 3, "validation": 0, "test": 0}
    assert list(lenient_build["dataset"]) == ["train"]  # splits without documents are left out
    assert report["empty_documents"] == 1 and report["empty_document_ids"] == ["good_empty"]


def test_empty_document_is_kept(lenient_build):
    train = lenient_build["dataset"]["train"]
    empty = train[train["id"].index("good_empty")]
    assert empty["words"] == [] and empty["bboxes"] == [] and empty["ner_tags"] == []
    assert empty["image"].size == SIZE


def test_grayscale_page_becomes_rgb_in_dataset(lenient_build):
    train = lenient_build["dataset"]["train"]
    assert train[train["id"].index("good_gray")]["image"].mode == "RGB"


@pytest.mark.parametrize(("case", "writer", "field", "words"), BAD_INPUTS, ids=CASE_IDS)
def test_strict_build_fails_naming_file_and_field(tmp_path, case, writer, field, words):
    root = tmp_path / "data"
    good_doc(root, "a_good")
    bad = writer(root)
    with pytest.raises(AnnotationError) as caught:
        build_dataset(root, tmp_path / "out", size=SIZE, labels=LABELS, strict=True)
    error = caught.value
    assert error.file == str(bad) and error.field == field and words in error.message
    assert str(bad) in str(error) and (field is None or field in str(error))


def test_strict_build_stops_before_writing(tmp_path):
    root = tmp_path / "data"
    good_doc(root, "a_good")
    _box_inverted(root)
    with pytest.raises(AnnotationError):
        build_dataset(root, tmp_path / "out", size=SIZE, strict=True)
    assert not (tmp_path / "out" / "dataset_dict.json").exists()


def test_all_documents_invalid_is_an_error_with_report(tmp_path):
    root = tmp_path / "data"
    _box_inverted(root)
    with pytest.raises(BuildError, match="no valid document"):
        build_dataset(root, tmp_path / "out", size=SIZE)
    assert json.loads((tmp_path / "out" / "build_report.json").read_text())["documents_skipped"] == 1


def test_missing_folders_and_busy_output(tmp_path):
    with pytest.raises(BuildError, match="images"):
        build_dataset(tmp_path / "nothing", tmp_path / "out")
    root = tmp_path / "data"
    good_doc(root, "a_good")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(BuildError, match="not empty"):
        build_dataset(root, tmp_path / "busy", size=SIZE)
    with pytest.raises(BuildError, match="refusing"):
        build_dataset(root, tmp_path / "busy", size=SIZE, overwrite=True)
    assert (tmp_path / "busy" / "notes.txt").exists()


# ------------------------------------------------------------------ single-document rules


def test_box_within_tolerance_is_clamped(tmp_path):
    path = good_doc(tmp_path, "doc", boxes=[[-2, 0, 60, 25], [200, 150, 240, 165], [250, 150, 302, 201.5]])
    document = read_annotation(path, tmp_path / "images")
    assert document.boxes[0] == [0, 0, 60, 25] and document.boxes[2] == [250, 150, 300, 200]


def test_blank_words_are_dropped_and_counted(tmp_path):
    path = good_doc(
        tmp_path, "doc",
        words=["", "Corp", " ", "12.00"],
        boxes=[[10, 10, 20, 25], [22, 10, 60, 25], [200, 150, 240, 165], [250, 150, 290, 165]],
        labels=["B-vendor", "I-vendor", "O", "B-total"],
    )
    document = read_annotation(path, tmp_path / "images")
    assert document.words == ["Corp", "12.00"]
    assert document.labels == ["B-vendor", "B-total"]  # the entity still starts with B-
    assert document.boxes == [[22, 10, 60, 25], [250, 150, 290, 165]]
    assert document.dropped_words == 2


def test_unknown_field_is_a_warning_not_silent(tmp_path):
    root = tmp_path / "data"
    good_doc(root, "doc", segment_box=[[0, 0, 1, 1]] * 3)
    build_dataset(root, tmp_path / "out", size=SIZE)
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["documents_kept"] == 1
    assert "segment_box" in report["warnings"][0]["message"]


def test_image_in_subfolder_is_allowed(tmp_path):
    write_image(tmp_path / "images" / "scans" / "page.png")
    path = good_doc(tmp_path, "doc", image="scans/page.png")
    assert read_annotation(path, tmp_path / "images").image_file == tmp_path / "images" / "scans" / "page.png"


# ------------------------------------------------------------------ image modes and EXIF


def _two_tone(mode: str, dark: Any, light: Any) -> Image.Image:
    """Left half `dark`, right half `light`, in `mode`."""
    image = Image.new(mode, (40, 20), light)
    image.paste(dark, (0, 0, 20, 20))
    return image


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (40, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (20, 0, 40, 20))
    image.info["transparency"] = 1  # the right half is transparent: composited on white
    return image


def _sixteen_bit() -> Image.Image:
    image = Image.new("I;16", (40, 20))
    image.paste(0, (0, 0, 20, 20))
    image.paste(65535, (20, 0, 40, 20))
    return image


# (mode id, image, file suffix, expected left RGB, expected right RGB)
MODES = [
    ("L", lambda: _two_tone("L", 0, 255), ".png", (0, 0, 0), (255, 255, 255)),
    ("1", lambda: _two_tone("1", 0, 1), ".png", (0, 0, 0), (255, 255, 255)),
    ("LA", lambda: _two_tone("LA", (0, 255), (0, 0)), ".png", (0, 0, 0), (255, 255, 255)),
    ("RGBA", lambda: _two_tone("RGBA", (255, 0, 0, 255), (0, 0, 255, 0)), ".png", (255, 0, 0), (255, 255, 255)),
    ("CMYK", lambda: _two_tone("CMYK", (0, 0, 0, 255), (0, 0, 0, 0)), ".tiff", (0, 0, 0), (255, 255, 255)),
    ("P", lambda: _two_tone("RGB", (0, 128, 0), (255, 255, 255)).convert("P", palette=Image.Palette.ADAPTIVE),
     ".png", (0, 128, 0), (255, 255, 255)),
    ("P+transparency", _palette_with_transparency, ".png", (0, 0, 0), (255, 255, 255)),
    ("I;16", _sixteen_bit, ".png", (0, 0, 0), (255, 255, 255)),
]


@pytest.mark.parametrize(("mode", "make", "suffix", "left", "right"), MODES, ids=[m[0] for m in MODES])
def test_image_modes_become_rgb(tmp_path, mode, make, suffix, left, right):
    image_file = tmp_path / "images" / f"page{suffix}"
    image_file.parent.mkdir(parents=True)
    make().save(image_file)
    assert Image.open(image_file).mode == mode.split("+")[0]  # the file really is in that mode
    path = write_annotation(
        tmp_path, "page", {"image": image_file.name, "words": ["x"], "boxes": [[1, 1, 5, 5]], "labels": ["O"]}
    )
    page = read_annotation(path, tmp_path / "images").load_image()
    assert page.mode == "RGB" and page.size == (40, 20)
    assert page.getpixel((5, 10)) == left
    assert page.getpixel((35, 10)) == right


def test_exif_rotated_jpeg_uses_upright_coordinates(tmp_path):
    """The page as displayed is 200x100 with a black block at [150, 10, 190, 40]; the file stores it
    rotated with EXIF orientation 6 (display = rotate 90 degrees clockwise)."""
    upright = Image.new("RGB", (200, 100), "white")
    upright.paste((0, 0, 0), (150, 10, 190, 40))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    image_file = tmp_path / "data" / "images" / "photo.jpg"
    image_file.parent.mkdir(parents=True)
    stored.save(image_file, exif=exif, quality=95)
    assert Image.open(image_file).size == (100, 200)

    box = [150, 10, 190, 40]  # only valid in upright coordinates (x > the stored width of 100)
    path = write_annotation(
        tmp_path / "data", "photo", {"image": "photo.jpg", "words": ["BLOCK"], "boxes": [box], "labels": ["O"]}
    )
    assert image_size(image_file, path) == (200, 100)
    document = read_annotation(path, tmp_path / "data" / "images")
    page = document.load_image()
    assert page.size == (200, 100)
    assert sum(page.getpixel((170, 25))) < 60 and sum(page.getpixel((50, 50))) > 700

    # Stretched (different x and y scales), so a box read in the stored orientation could not match.
    dataset = build_dataset(tmp_path / "data", tmp_path / "out", size=(400, 300), keep_aspect=False, ratios=(1, 0, 0))
    row = dataset["train"][0]
    x0, y0, x1, y1 = row["bboxes"][0]
    assert [x0, y0, x1, y1] == [300, 30, 380, 120]  # scaled by 2 and 3
    assert sum(row["image"].getpixel(((x0 + x1) // 2, (y0 + y1) // 2))) < 60


def _fail_decoding_of(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make one document's image fail only when pass 2 decodes it (the file changed after the check)."""
    from dataset_loader.annotations import Document

    original = Document.load_image

    def load_image(self):
        if self.id == name:
            raise AnnotationError(self.annotation_file, "image", "could not be decoded (simulated)")
        return original(self)

    monkeypatch.setattr(Document, "load_image", load_image)


def test_decode_failure_while_writing_is_skipped_and_reported(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for name in ("a", "b", "c"):
        good_doc(root, name)
    _fail_decoding_of("b", monkeypatch)
    dataset = build_dataset(root, tmp_path / "out", size=SIZE, ratios=(1, 0, 0))
    assert sorted(dataset["train"]["id"]) == ["a", "c"]
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["splits"]["train"] == 2 and Path(report["skipped"][0]["file"]).name == "b.json"


def test_decode_failure_while_writing_stops_strict_build(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for name in ("a", "b"):
        good_doc(root, name)
    _fail_decoding_of("b", monkeypatch)
    with pytest.raises(AnnotationError, match="simulated") as caught:  # ours, not datasets' wrapper
        build_dataset(root, tmp_path / "out", size=SIZE, ratios=(1, 0, 0), strict=True)
    assert caught.value.field == "image"
