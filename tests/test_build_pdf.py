"""`python -m dataset_loader build` on PDFs: one annotation per page (`image` a PDF, `page`), pages rendered at the
project's PDF resolution, the pages of a document kept in one split, and with `--ocr` the text layer where a page has
one (the engine reads the scanned pages), with the same label-transfer report."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest

from dataset_loader.annotations import AnnotationError, read_annotation
from dataset_loader.build import build_dataset
from dataset_loader.ocr_build import OcrBuild
from dataset_loader.synth import generate, synth_pages
from layoutkit.pipelines import ocr

pytest.importorskip("pypdfium2")
pytest.importorskip("reportlab")

SEED, MULTI_PAGE, SCANNED = 3, 0.5, 0.5  # seed 3: invoice 0 scanned, 1 born-digital, 2 mixed (page 2 scanned)


@pytest.fixture(scope="module")
def pdf_invoices(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("pdfs"), 6, seed=SEED, workers=1, multi_page=MULTI_PAGE, format="pdf",
                    scanned_share=SCANNED)


def annotations(folder: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((folder / "annotations").glob("*.json"))}


def test_build_reads_pdf_pages_with_their_annotations(pdf_invoices, tmp_path):
    truth = annotations(pdf_invoices)
    dataset = build_dataset(pdf_invoices, tmp_path / "ds", size=(1000, 1000), seed=0, ratios=(0.5, 0.25, 0.25))
    report = json.loads((tmp_path / "ds" / "build_report.json").read_text())
    assert report["documents_kept"] == len(truth) and report["warnings"] == []  # pages of one PDF: no duplicates
    rows = {row["id"]: (split, row) for split in dataset for row in dataset[split]}
    assert set(rows) == set(truth)
    for page_id, (split, row) in rows.items():
        assert row["words"] == truth[page_id]["words"]
        # The page as rendered at 200 DPI is the page image the boxes measure, stored fitted inside 1000x1000.
        drawing = synth_pages(SEED, int(page_id[8:13]), multi_page=MULTI_PAGE)[truth[page_id]["page"] - 1].drawing
        scale = 1000 / max(drawing.image.size)
        assert row["image"].size == (round(drawing.image.width * scale), round(drawing.image.height * scale))
        assert abs(row["bboxes"][0][2] - truth[page_id]["boxes"][0][2] * scale) <= 1
        # The pages of one invoice are in one split.
        assert all(rows[other][0] == split for other in rows if other[:13] == page_id[:13])


def test_pages_of_one_pdf_stay_in_one_split_without_document_id(pdf_invoices, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(pdf_invoices, folder)
    for path in (folder / "annotations").glob("*.json"):
        data = json.loads(path.read_text())
        del data["document_id"]
        path.write_text(json.dumps(data))
    for seed in range(4):
        dataset = build_dataset(folder, tmp_path / f"ds{seed}", seed=seed, ratios=(0.4, 0.3, 0.3))
        split_of = {row_id: split for split in dataset for row_id in dataset[split]["id"]}
        for page_id, split in split_of.items():
            assert split_of.get(f"{page_id[:13]}_p2", split) == split, (seed, page_id)


def test_pdf_page_annotation_errors_name_the_field(pdf_invoices, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(pdf_invoices, folder)
    path = folder / "annotations" / "invoice_00002.json"
    data = json.loads(path.read_text())
    for page, message in ((None, "has 2 pages; say which one"), (3, "is 3, but"), (0, "must be the page number")):
        path.write_text(json.dumps({**data, "page": page}))
        with pytest.raises(AnnotationError) as caught:
            read_annotation(path, folder / "images")
        assert caught.value.field == "page" and message in caught.value.message
    (folder / "images" / "invoice_00002.pdf").write_bytes(b"%PDF-1.7 broken")
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError) as caught:
        read_annotation(path, folder / "images")
    assert caught.value.field == "image" and "invoice_00002.pdf" in str(caught.value)


class PagesRead(ocr.TesseractEngine):
    """Tesseract, counting the pages it is asked to read."""

    name = "tesseract"
    pages: ClassVar[list] = []

    def read(self, page):
        PagesRead.pages.append(page.size)
        return super().read(page)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")
def test_build_with_ocr_takes_the_text_layer_and_reads_scans(tmp_path):
    folder = generate(tmp_path / "pdfs", 3, seed=SEED, workers=1, multi_page=MULTI_PAGE, format="pdf",
                      scanned_share=SCANNED)
    truth = annotations(folder)
    sources = Counter(page["source"] for page in truth.values())
    assert sources == {"pdf_text": 2, "scanned": 2}  # invoice 0 scanned, 1 born-digital, 2 mixed
    build = OcrBuild(PagesRead(), cache_dir=tmp_path / "cache", workers=2)
    PagesRead.pages = []
    dataset = build_dataset(folder, tmp_path / "ds", ocr=build, ratios=(1, 0, 0), seed=0)
    assert len(PagesRead.pages) == sources["scanned"]  # only the scanned pages reached the engine

    section = json.loads((tmp_path / "ds" / "build_report.json").read_text())["ocr"]
    assert section["pages_by_words_source"] == {"ocr:tesseract": 2, "pdf_text": 2}
    assert section["pdf_text"] == "auto"
    names = dataset["train"].features["ner_tags"].feature.names
    for row in dataset["train"]:
        gold = truth[row["id"]]
        if gold["source"] == "pdf_text":  # the text layer's words are the annotation's, labels carried exactly
            assert Counter(row["words"]) == Counter(gold["words"])
            entities = Counter(tag for tag in (names[t] for t in row["ner_tags"]) if tag != "O")
            assert entities == Counter(tag for tag in gold["labels"] if tag != "O")
            assert row["id"] not in section["changed_entities_by_document"]
    table = section["entities_by_label"]
    assert sum(r["exact"] for r in table.values()) >= 0.8 * sum(r["entities"] for r in table.values())


def whole_pdf_annotations(folder: Path, output: Path) -> Path:
    """The per-page annotations of `folder` merged into one annotation per PDF, with `word_pages`."""
    shutil.copytree(folder / "images", output / "images")
    (output / "annotations").mkdir()
    documents: dict[str, list[dict]] = {}
    for page in annotations(folder).values():
        documents.setdefault(page["document_id"], []).append(page)
    for name, pages in documents.items():
        merged = {"image": f"{name}.pdf", "word_pages": []}
        for page in sorted(pages, key=lambda page: page["page"]):
            for key in ("words", "boxes", "labels", "segment_boxes", "entity_ids", "row_ids"):
                merged.setdefault(key, []).extend(page[key])
            merged["word_pages"] += [page["page"]] * len(page["words"])
            merged.setdefault("relations", []).extend(page["relations"])
        (output / "annotations" / f"{name}.json").write_text(json.dumps(merged))
    return output


def test_build_reads_an_annotation_of_a_whole_pdf_page_by_page(tmp_path):
    per_page = generate(tmp_path / "pages", 4, seed=SEED, workers=1, multi_page=MULTI_PAGE, format="pdf", links=True)
    folder = whole_pdf_annotations(per_page, tmp_path / "documents")
    # A link from the first page's vendor to the second page's invoice number: no page can hold it.
    path = folder / "annotations" / "invoice_00002.json"
    data = json.loads(path.read_text())
    vendor = data["entity_ids"][data["labels"].index("B-vendor")]
    second = data["word_pages"].index(2)
    number = next(i for i in range(second, len(data["words"])) if data["labels"][i] == "B-invoice_number")
    data["relations"].append([vendor, data["entity_ids"][number]])
    path.write_text(json.dumps(data))

    expected = build_dataset(per_page, tmp_path / "expected", ratios=(1, 0, 0), seed=0)["train"]
    dataset = build_dataset(folder, tmp_path / "ds", ratios=(0.5, 0.25, 0.25), seed=0)
    rows = {row["id"]: (split, row) for split in dataset for row in dataset[split]}
    assert sorted(rows) == ["invoice_00000#page=1", "invoice_00001#page=1", "invoice_00002#page=1",
                            "invoice_00002#page=2", "invoice_00003#page=1", "invoice_00003#page=2"]
    assert rows["invoice_00002#page=1"][0] == rows["invoice_00002#page=2"][0]  # one document, one split
    for row in expected:
        name, page = (row["id"][:-3], row["id"][-1]) if "_p" in row["id"] else (row["id"], "1")
        _, got = rows[f"{name}#page={page}"]
        for column in ("words", "bboxes", "ner_tags", "entity_ids", "row_ids", "relations"):
            assert got[column] == row[column], (row["id"], column)
    report = json.loads((tmp_path / "ds" / "build_report.json").read_text())
    assert report["dropped_relations_by_document"] == {"invoice_00002#page=1": 1}

    data["word_pages"] = data["word_pages"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError) as caught:
        read_annotation(Path(f"{path}#page=1"), folder / "images")
    assert caught.value.field == "word_pages" and "as long as 'words'" in caught.value.message
