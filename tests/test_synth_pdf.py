"""`python -m dataset_loader synth --format pdf`: born-digital PDFs whose text layer holds the annotation's words at
the annotated pixel boxes (at the PDF render DPI), scanned and mixed documents, multi-page invoices in one file."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from dataset_loader.__main__ import main as cli
from dataset_loader.synth import generate, synth_pages
from layoutkit.apps.documents import DEFAULT_PDF_DPI

pdfium = pytest.importorskip("pypdfium2")
pytest.importorskip("reportlab")

SEED, DOCS, MULTI_PAGE, SCANNED = 3, 14, 0.6, 0.5
# Pillow's word box reaches down to the baseline at least; the text layer's tight character boxes end at the ink.
# They agree within this many pixels for words with a letter or a digit (a lone "-" sits above the baseline).
BOX_TOLERANCE = 2.0


@pytest.fixture(scope="module")
def pdf_dir(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth_pdf"), DOCS, seed=SEED, workers=1, links=True,
                    multi_page=MULTI_PAGE, format="pdf", scanned_share=SCANNED)


def annotations_by_document(folder: Path) -> dict[str, list[dict]]:
    documents = defaultdict(list)
    for path in sorted((folder / "annotations").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        documents[data["document_id"]].append(data)
    return {name: sorted(pages, key=lambda page: page["page"]) for name, pages in documents.items()}


def text_layer_words(page) -> list[tuple[str, list[float]]]:
    """The page's text-layer words (characters split at whitespace) with their ink boxes in pixels at the render
    DPI, top-left origin."""
    scale, height = DEFAULT_PDF_DPI / 72, page.get_height()
    text_page = page.get_textpage()
    words, current, boxes = [], "", []
    for index in range(text_page.count_chars()):
        char = text_page.get_text_range(index, 1)
        if not char or char.isspace():
            if current:
                words.append((current, boxes))
            current, boxes = "", []
            continue
        # The annotation's boxes are Pillow's: x from the pen position to the advance (PDFium's loose box), y
        # from the ink's top to its bottom or the baseline (the glyph's tight box).
        left, _, right, _ = text_page.get_charbox(index, loose=True)
        _, bottom, _, top = text_page.get_charbox(index)
        current += char
        boxes.append((left * scale, (height - top) * scale, right * scale, (height - bottom) * scale))
    if current:
        words.append((current, boxes))
    return [(word, [min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs)])
            for word, bs in words]


def test_pdf_per_invoice_with_its_pages_and_truth(pdf_dir):
    documents = annotations_by_document(pdf_dir)
    assert len(documents) == DOCS and not list((pdf_dir / "images").glob("*.png"))
    sources = Counter()
    for name, pages in documents.items():
        pdf = pdfium.PdfDocument(pdf_dir / "images" / f"{name}.pdf")
        assert len(pdf) == len(pages) and [page["page"] for page in pages] == list(range(1, len(pages) + 1))
        assert {page["image"] for page in pages} == {f"{name}.pdf"}
        kinds = {page["source"] for page in pages}
        assert kinds <= {"pdf_text", "scanned"}
        sources["mixed" if len(kinds) > 1 else kinds.pop()] += 1
        sources["multi_page"] += len(pages) > 1
        # Rendered at the project's PDF resolution, every page is the page image the annotation's boxes measure.
        drawings = synth_pages(SEED, int(name[-5:]), links=True, multi_page=MULTI_PAGE)
        for index, drawing in enumerate(drawings):
            assert pdf[index].render(scale=DEFAULT_PDF_DPI / 72).to_pil().size == drawing.image.size
            assert drawing.annotation["words"] == pages[index]["words"]
    assert sources["mixed"] and sources["scanned"] and sources["pdf_text"] and sources["multi_page"], sources


def test_text_layer_holds_the_annotation_words_at_their_boxes(pdf_dir):
    checked = 0
    for name, pages in annotations_by_document(pdf_dir).items():
        pdf = pdfium.PdfDocument(pdf_dir / "images" / f"{name}.pdf")
        for annotation in pages:
            page = pdf[annotation["page"] - 1]
            found = text_layer_words(page)
            if annotation["source"] == "scanned":
                assert found == [] and page.get_textpage().count_chars() == 0, f"{name} page {annotation['page']}"
                assert any(obj.type == pdfium.raw.FPDF_PAGEOBJ_IMAGE for obj in page.get_objects())
                continue
            # The same words (the reading order is the reader's business: PDFium orders a line by position)...
            assert Counter(word for word, _ in found) == Counter(annotation["words"])
            # ... each at its annotated box: match every annotated word to the nearest text-layer word of its text.
            remaining = defaultdict(list)
            for word, box in found:
                remaining[word].append(box)
            for word, box in zip(annotation["words"], annotation["boxes"]):
                candidates = remaining[word]
                nearest = min(candidates, key=lambda other: max(abs(a - b) for a, b in zip(box, other)))
                candidates.remove(nearest)
                if any(char.isalnum() for char in word):
                    assert max(abs(a - b) for a, b in zip(box, nearest)) <= BOX_TOLERANCE, (name, word, box, nearest)
                checked += 1
    assert checked > 500


def test_pdf_generation_is_deterministic_and_draws_the_png_invoices(pdf_dir, tmp_path):
    again = generate(tmp_path / "again", 3, seed=SEED, workers=1, links=True, multi_page=MULTI_PAGE, format="pdf",
                     scanned_share=SCANNED)
    for path in sorted((again / "images").glob("*.pdf")):
        assert path.read_bytes() == (pdf_dir / "images" / path.name).read_bytes()
    png = generate(tmp_path / "png", 3, seed=SEED, workers=1, links=True, multi_page=MULTI_PAGE)
    for path in sorted((png / "annotations").glob("*.json")):
        as_png = json.loads(path.read_text())
        as_pdf = json.loads((pdf_dir / "annotations" / path.name).read_text())
        assert {key: as_pdf[key] for key in as_png if key != "image"} == {k: v for k, v in as_png.items() if k != "image"}


def test_scanned_share_needs_pdf_format(tmp_path, capsys):
    assert cli(["synth", "--output", str(tmp_path / "ok"), "--num_docs", "2", "--format", "pdf", "--scanned_share",
                "1", "--workers", "1"]) == 0
    assert sorted(path.name for path in (tmp_path / "ok" / "images").iterdir()) == ["invoice_00000.pdf",
                                                                                      "invoice_00001.pdf"]
    assert {json.loads(path.read_text())["source"] for path in (tmp_path / "ok" / "annotations").glob("*.json")} == {
        "scanned"}
    assert cli(["synth", "--output", str(tmp_path / "x"), "--num_docs", "2", "--scanned_share", "0.5"]) == 1
    assert "--scanned_share needs --format pdf" in capsys.readouterr().err
    assert cli(["synth", "--output", str(tmp_path / "y"), "--num_docs", "2", "--format", "pdf",
                "--scanned_share", "1.5"]) == 1
    assert "--scanned_share must be a share between 0 and 1" in capsys.readouterr().err


def test_the_project_reader_routes_every_page_and_reads_the_words(pdf_dir):
    """layoutkit.pipelines.pdf_text (what predict.py, the service and the builder read PDFs with) on the sample PDFs: every
    born-digital page by its text layer, with the annotation's words; every scanned page to OCR."""
    from layoutkit.pipelines.pdf_text import OCR_NEEDED, page_words

    routes = Counter()
    for name, pages in annotations_by_document(pdf_dir).items():
        pdf = pdfium.PdfDocument(pdf_dir / "images" / f"{name}.pdf")
        for annotation in pages:
            words = page_words(pdf, annotation["page"] - 1, "auto", engine=None, dpi=DEFAULT_PDF_DPI)
            routes[annotation["source"], words.source] += 1
            if annotation["source"] == "pdf_text":
                assert Counter(words.result.words) == Counter(annotation["words"]), (name, annotation["page"])
    assert set(routes) == {("pdf_text", "pdf_text"), ("scanned", OCR_NEEDED)}, routes
