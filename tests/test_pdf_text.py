"""Words from a PDF's text layer (layoutkit/pipelines/pdf_text.py) and the per-page routing between it and OCR: boxes on the
rendered page (rotation, crop box), NFKC, soft hyphens, zero-size and off-page characters, invisible OCR layers,
broken font maps, scans with a stamp, 20,000 characters, encrypted and zero-size pages, mixed PDFs; through
predict.py (one JSON per document, words_source per page, the batch going on) and the Endpoints handler."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pdf_samples as samples
import pytest
from conftest import REPO_ROOT, run_command, run_fresh_python

pytest.importorskip("reportlab")
pytest.importorskip("pypdfium2")
DEFAULT_OCR = importlib.util.find_spec("rapidocr") is not None
needs_default_ocr = pytest.mark.skipif(not DEFAULT_OCR, reason="rapidocr, the default OCR engine, is not installed")
DPI = 200


def pages_of(path: Path, pdf_text: str = "auto", dpi: int = DPI) -> list[dict]:
    from layoutkit.apps.documents import pdf_page_inputs

    return list(pdf_page_inputs(path, dpi, 10**9, pdf_text))


def words_of(lines) -> list[str]:
    return [word for line in lines for word in line.split()]


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_words_and_boxes_lie_on_the_rendered_page(tmp_path, rotation):
    """Every word of the text layer, with a box around its ink on the image the model sees (/Rotate applied):
    no ink outside the boxes, ink inside each."""
    (page,) = pages_of(samples.born_digital(tmp_path / "invoice.pdf", rotation=rotation))
    assert page["words_source"] == "pdf_text" and page["route"] == "text layer covers the page"
    assert sorted(page["words"]) == sorted(words_of(samples.LINES))
    assert page["image"].size == (1653, 2339)  # A4 at 200 dpi, portrait (ceil of 595 and 842 pt x 200/72)
    assert samples.ink_outside(page["image"], page["boxes"]) < 0.002
    assert min(samples.ink_inside(page["image"], box) for box in page["boxes"]) > 0.1
    if rotation == 0:  # the first word starts at x = 72 pt and its line's baseline is y = 842 - 760 pt
        x0, _, _, y1 = page["boxes"][0]
        scale = page["image"].width / samples.PAGE[0]
        assert abs(x0 - 72 * scale) < 2 * scale and abs(y1 - (samples.PAGE[1] - 760) * scale) < 2 * scale  # ink, not bearings
        assert page["line_ids"][:4] == [0, 0, 1, 1]


def test_crop_box_and_off_page_characters(tmp_path):
    """A crop box: the image is the cropped page, boxes follow it; a word outside the crop box is not drawn, so it is
    dropped and said (dropped_chars, a warning naming the file and page)."""
    path = tmp_path / "cropped.pdf"
    c = samples.canvas(path)
    samples.draw_lines(c)
    c.drawString(500, 100, "outside")
    c.setCropBox((50, 300, 450, 800))
    c.showPage()
    c.save()
    (page,) = pages_of(path)
    assert page["image"].size == (round(400 * DPI / 72) + 1, round(500 * DPI / 72) + 1) or abs(
        page["image"].width - 400 * DPI / 72) <= 1
    assert "outside" not in page["words"] and "INVOICE" in page["words"]
    assert page["dropped_chars"] == {"off_page": len("outside")}
    assert f"{path}: page 1" in page["warnings"][0] and "7 text-layer character(s) left out" in page["warnings"][0]
    assert samples.ink_outside(page["image"], page["boxes"]) < 0.002
    x0 = page["boxes"][0][0]
    assert abs(x0 - (72 - 50) * DPI / 72) < 2 * DPI / 72  # x measured from the crop box's left edge


def test_nfkc_soft_hyphens_and_zero_size_characters(tmp_path):
    """Ligatures and compatibility characters come out NFKC (oﬃce -> office, x² -> x2); a soft hyphen inside a
    line is dropped, at a line end it is the "-" drawn there; characters of zero height or below a pixel are not
    drawn: dropped and counted."""
    path = tmp_path / "typography.pdf"
    c = samples.canvas(path)
    c.setFont(samples.dejavu(), 14)
    c.drawString(72, 760, "o\ufb03ce \ufb01nal x\u00b2 pay\u00adment")
    c.drawString(72, 730, "invoi\u00ad")
    c.drawString(72, 700, "ce number")
    for number, matrix in enumerate([(1, 0, 0, 0), (0.001, 0, 0, 0.001)]):  # flattened, and below a pixel
        text = c.beginText()
        text.setFont("Helvetica", 12)
        text.setTextTransform(*matrix, 72, 600 - 30 * number)
        text.textOut("ghost")
        c.drawText(text)
    c.showPage()
    c.save()
    (page,) = pages_of(path)
    assert page["words"] == ["office", "final", "x2", "payment", "invoi-", "ce", "number"]
    assert page["dropped_chars"] == {"zero_size": 10}
    assert page["line_ids"] == [0, 0, 0, 0, 1, 2, 2]


def test_invisible_ocr_layer_over_a_scan_is_its_own_source(tmp_path):
    """A scan under an invisible text layer (render mode 3): its words are used, reported as pdf_invisible_text."""
    path = tmp_path / "ocred_scan.pdf"
    c = samples.canvas(path)
    samples.scan_with_invisible_layer(c)
    c.showPage()
    c.save()
    (page,) = pages_of(path)
    assert page["words_source"] == "pdf_invisible_text" and page["words"] == words_of(samples.LINES)
    assert pages_of(path, "never")[0]["words_source"] is None  # never: OCR, even over a text layer


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed")
def test_invisible_layer_written_by_tesseract(tmp_path):
    """The layer a real OCR program writes (`tesseract page.png out pdf`): routed to its words, pdf_invisible_text."""
    samples.text_image().save(tmp_path / "page.png", dpi=(150, 150))
    run_command(["tesseract", tmp_path / "page.png", tmp_path / "out", "pdf"], env={"OMP_THREAD_LIMIT": "1"})
    (page,) = pages_of(tmp_path / "out.pdf")
    assert page["words_source"] == "pdf_invisible_text"
    assert {"INVOICE", "Total", "1,250.00"} <= set(page["words"])


def test_garbage_text_layer_falls_back_to_ocr_with_a_warning(tmp_path):
    """A font without a usable unicode map: the page goes to OCR, with a warning naming the file and the page;
    with --pdf_text always its (garbled) words are used, still with the warning."""
    path = samples.broken_font_map(tmp_path / "broken.pdf")
    (page,) = pages_of(path)
    assert page["words_source"] is None and page["words"] is None and page["route"] == "garbage text layer"
    assert page["warnings"][0].startswith(f"{path}: page 1: the text layer is garbage")
    assert "read by OCR instead" in page["warnings"][0]
    (always,) = pages_of(path, "always")
    assert always["words_source"] == "pdf_text" and "used anyway" in always["warnings"][0]


def test_scans_with_a_stamp_go_to_ocr_and_backgrounds_do_not(tmp_path):
    """A full-page image with a few born-digital words on it (a stamp) is a scan: OCR. Text over a full-page
    background image (a letterhead) covers the page: text layer. A small logo changes nothing."""
    path = tmp_path / "three.pdf"
    c = samples.canvas(path)
    samples.draw_scan(c, samples.text_image())
    c.setFont("Helvetica", 9)
    c.drawString(480, 20, "Page 1 of 3")
    c.showPage()
    samples.draw_scan(c, samples.text_image(lines=[]))  # a blank letterhead image under the text
    samples.draw_lines(c)
    c.showPage()
    from reportlab.lib.utils import ImageReader
    c.drawImage(ImageReader(samples.text_image(lines=["LOGO"], size=(200, 100))), 400, 760, width=120, height=60)
    samples.draw_lines(c)
    c.showPage()
    c.save()
    assert [(p["words_source"], p["route"]) for p in pages_of(path)] == [
        (None, "scan with a few text-layer words"), ("pdf_text", "text layer covers the page"),
        ("pdf_text", "text layer covers the page")]


def test_a_page_of_20000_characters(tmp_path):
    """Every word of a page holding 20,000 characters (in order)."""
    path = tmp_path / "dense.pdf"
    c = samples.canvas(path)
    c.setFont("Helvetica", 4)
    lines = [" ".join(f"w{row}x{column}" for column in range(20)) for row in range(180)]
    for row, line in enumerate(lines):
        c.drawString(20, 830 - row * 4.5, line)
    c.showPage()
    c.save()
    assert sum(len(line.replace(" ", "")) for line in lines) >= 20_000
    (page,) = pages_of(path)
    assert page["words_source"] == "pdf_text" and page["words"] == words_of(lines)
    assert len(set(page["line_ids"])) == len(lines)


def test_encrypted_and_zero_size_pages_are_clear_errors(tmp_path):
    from layoutkit.apps.documents import DocumentError, pdf_page_inputs

    with pytest.raises(DocumentError, match="encrypted.pdf: the PDF is encrypted"):
        pages_of(samples.encrypted(tmp_path / "encrypted.pdf"))
    pages = pdf_page_inputs(samples.zero_size_page(tmp_path / "zero.pdf"), DPI, 10**9, "auto")
    assert next(pages)["words_source"] == "pdf_text"
    with pytest.raises(DocumentError, match=r"zero.pdf: page 2: the page has zero size \(MediaBox \[0 0 0 0\]\)"):
        next(pages)


def test_mixed_pdf_routes_each_page(tmp_path):
    """Born-digital, image-only, scan under an OCR layer, scan with a stamp: text, OCR, invisible text, OCR."""
    path = samples.mixed(tmp_path / "mixed.pdf")
    assert [p["words_source"] for p in pages_of(path)] == ["pdf_text", None, "pdf_invisible_text", None]
    assert [p["words_source"] for p in pages_of(path, "never")] == [None] * 4
    assert [p["words_source"] for p in pages_of(path, "always")] == ["pdf_text", "pdf_text", "pdf_invisible_text",
                                                                     "pdf_text"]
    assert pages_of(path, "always")[1]["words"] == []


def test_page_words_for_the_dataset_builder(tmp_path):
    """`page_words`: the text layer where it covers the page, else the engine's words; without an engine the page is
    marked ocr:needed."""
    from layoutkit.pipelines.ocr import OcrEngine, OcrResult
    from layoutkit.pipelines.pdf_text import page_words

    class OneWord(OcrEngine):  # stands for an OCR engine: what matters here is which pages reach it
        name = "one-word"

        def read(self, page):
            return OcrResult(["scanned"], [[10, 10, 60, 30]], [90.0], [0])

    path = samples.mixed(tmp_path / "mixed.pdf")
    first = page_words(path, 0, engine=OneWord())
    assert first.source == "pdf_text" and first.result.words == words_of(samples.LINES)
    assert first.result.confidences == [100.0] * len(first.result.words) and first.image.size[1] == 2339
    second = page_words(path, 1, engine=OneWord())
    assert second.source == "ocr:one-word" and second.result.words == ["scanned"]
    assert page_words(path, 1).source == "ocr:needed"
    assert page_words(path, 0, pdf_text="never", engine=OneWord(), dpi=100, image=first.image.resize((827, 1170))
                      ).result.words == ["scanned"]


@needs_default_ocr
def test_predict_routes_pages_and_goes_on_past_bad_pdfs(vendor_ner_checkpoint, tmp_path):
    """predict.py on a folder: the mixed PDF is one JSON whose pages say where their words came from; the garbage
    PDF is read by OCR with its warning; the encrypted PDF and the one with a zero-size page are errors naming the
    file (and page); the batch goes on."""
    folder = tmp_path / "in"
    folder.mkdir()
    path = tmp_path / "mixed_src.pdf"
    c = samples.canvas(path)
    samples.draw_lines(c)
    c.showPage()
    samples.draw_scan(c, samples.text_image())
    c.showPage()
    c.save()
    shutil.copy(path, folder / "mixed.pdf")
    samples.broken_font_map(folder / "broken.pdf")
    samples.encrypted(folder / "encrypted.pdf")
    samples.zero_size_page(folder / "zero.pdf")
    output = tmp_path / "out"
    result = run_command([sys.executable, REPO_ROOT / "predict.py", "--model_name_or_path", vendor_ner_checkpoint,
                          "--input", folder, "--output_dir", output, "--dpi", 100, "--device", "cpu"])
    rows = {Path(row["source"]).name: row for row in map(json.loads, (output / "summary.jsonl").read_text().splitlines())}
    assert {name: row["status"] for name, row in rows.items()} == {
        "broken.pdf": "ok", "encrypted.pdf": "error", "mixed.pdf": "ok", "zero.pdf": "error"}
    assert "encrypted.pdf: the PDF is encrypted" in rows["encrypted.pdf"]["message"]
    assert "zero.pdf: page 2: the page has zero size" in rows["zero.pdf"]["message"]
    assert "2/4 documents processed" in result.stderr

    mixed = json.loads((output / "mixed.json").read_text())
    assert [(p["page"], p["words_source"]) for p in mixed["pages"]] == [(1, "pdf_text"), (2, "ocr:rapidocr")]
    first_page = [w["text"] for w in mixed["words"] if w["page"] == 1]
    assert first_page == words_of(samples.LINES)  # exactly the text layer's words
    assert "Total" in [w["text"] for w in mixed["words"] if w["page"] == 2]
    assert mixed["fields"]["vendor"]["page"] in (1, 2)
    broken = json.loads((output / "broken.json").read_text())
    assert broken["pages"][0]["words_source"] == "ocr:rapidocr" and broken["pages"][0]["route"] == "garbage text layer"
    assert broken["pages"][0]["warnings"][0].startswith(f"{folder / 'broken.pdf'}: page 1: the text layer is garbage")
    assert f"[warning] {folder / 'broken.pdf'}: page 1: the text layer is garbage" in result.stderr
    assert rows["mixed.pdf"]["words_source"] == ["pdf_text", "ocr:rapidocr"] and rows["mixed.pdf"]["warnings"] == []


HANDLER_PDF_SCRIPT = """
import base64, importlib.util, json, sys
assert importlib.util.find_spec("layoutkit") is None, "the project must not be importable here"
path, pdf_path = sys.argv[1:3]
sys.path.insert(0, path)
spec = importlib.util.spec_from_file_location("handler", path + "/handler.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
handler = module.EndpointHandler(path)
pdf = base64.b64encode(open(pdf_path, "rb").read()).decode()
out = handler({"inputs": pdf, "parameters": {"return_words": True, "dpi": 100}})
try:
    handler({"inputs": pdf, "parameters": {"pdf_text": "sometimes"}})
except ValueError as error:
    out.append(str(error))
print(json.dumps(out))
"""


def test_endpoint_handler_reads_the_text_layer(vendor_ner_checkpoint, tmp_path):
    """The handler in a fresh process without layoutkit (the checkpoint's own pdf_text.py): a born-digital PDF's
    page is read from its text layer, no OCR."""
    assert (vendor_ner_checkpoint / "pdf_text.py").is_file()
    path = samples.born_digital(tmp_path / "invoice.pdf")
    page, error = run_fresh_python(HANDLER_PDF_SCRIPT, [vendor_ner_checkpoint, path], tmp_path)
    assert page["words_source"] == "pdf_text" and [w["text"] for w in page["words"]] == words_of(samples.LINES)
    assert "pdf_text must be one of auto, always, never" in error


def test_service_reads_the_text_layer(vendor_ner_checkpoint, tmp_path):
    """The HTTP service's document path (`ExtractionService.extract_file`, what POST /v1/extract runs in its pool)
    with --pdf_text: a born-digital upload is read from its text layer; --pdf_text never sends it to OCR."""
    pytest.importorskip("fastapi")
    from layoutkit.apps import serve

    data = samples.born_digital(tmp_path / "invoice.pdf").read_bytes()
    settings, args = serve.parse_args(["--model", str(vendor_ner_checkpoint), "--device", "cpu", "--dpi", "100"])
    assert settings.pdf_text == "auto"
    service = serve.ExtractionService(serve.build_extractor(settings, args), settings, args)
    try:
        result = service.extract_file(service.check_upload(data, "invoice.pdf", "application/pdf"))
        assert result["source"] == "invoice.pdf" and [p["words_source"] for p in result["pages"]] == ["pdf_text"]
        assert [w["text"] for w in result["words"]] == words_of(samples.LINES)
        with pytest.raises(SystemExit):
            serve.parse_args(["--model", str(vendor_ner_checkpoint), "--pdf_text", "sometimes"])
    finally:
        service.close()
