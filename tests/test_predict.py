"""predict.py: images, multi-page PDF and TIFF, folders with bad files, words from JSON, rules, exit codes."""

import importlib.util
import json
import sys
import zlib

import pytest

from conftest import REPO_ROOT, run_command

# The default OCR engine (what a page without given words is read with).
DEFAULT_OCR = importlib.util.find_spec("rapidocr") is not None
needs_default_ocr = pytest.mark.skipif(not DEFAULT_OCR, reason="rapidocr, the default OCR engine, is not installed "
                                       "(pip install rapidocr onnxruntime)")


def text_page(*lines, size=(520, 240)):
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=28)
    for row, text in enumerate(lines):
        draw.text((20, 20 + 50 * row), text, fill="black", font=font)
    return image


def pdf_file(objects, trailer_extra=""):
    """A minimal PDF from object bodies (object 1 is the catalog)."""
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R {trailer_extra}>>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def encrypted_pdf():
    """A PDF under the standard security handler whose user password is not empty."""
    return pdf_file(
        ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
         f"<< /Filter /Standard /V 1 /R 2 /O <{'ab' * 32}> /U <{'cd' * 32}> /P -44 >>",
         "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"],
        "/Encrypt 3 0 R /ID [<00112233445566778899aabbccddeeff> <00112233445566778899aabbccddeeff>] ",
    )


def huge_png(path, width=20000, height=20000):
    """A valid PNG of width x height bilevel pixels (compressed to a few kB: a decompression bomb)."""
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Documents of every kind, good and bad."""
    folder = tmp_path_factory.mktemp("inputs")
    text_page("ACME Supplies Ltd", "Invoice No: 4711", "Total 125.50").save(folder / "receipt.png")
    first, second = text_page("Globex Corp", "Date 2024-05-01"), text_page("Subtotal 10.00", "Total 12.00")
    first.save(folder / "two_pages.pdf", save_all=True, append_images=[second], resolution=100)
    # Fresh copies: an image saved once keeps encoder settings that break the TIFF writer.
    first.copy().save(folder / "scan.tiff", save_all=True, append_images=[second.copy()])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    (folder / "encrypted.pdf").write_bytes(encrypted_pdf())
    (folder / "empty.pdf").write_bytes(pdf_file(["<< /Type /Catalog /Pages 2 0 R >>",
                                                 "<< /Type /Pages /Kids [] /Count 0 >>"]))
    huge_png(folder / "huge.png")
    text_page().save(folder / "blank.png")
    (folder / "notes.txt").write_text("not a document: ignored")
    return folder


def read_outputs(output_dir):
    summary = [json.loads(line) for line in (output_dir / "summary.jsonl").read_text().splitlines()]
    return {row["source"].rsplit("/", 1)[-1]: row for row in summary}


def check_document(path, model, pages):
    document = json.loads(path.read_text())
    assert set(document) >= {"model", "source", "pages", "fields", "entities", "words"}
    assert document["model"] == str(model) and document["status"] == "ok"
    assert [p["page"] for p in document["pages"]] == list(range(1, pages + 1))
    sizes = {p["page"]: (p["width"], p["height"]) for p in document["pages"]}
    for word in document["words"]:
        assert set(word) >= {"text", "box", "label", "score", "page"}
        width, height = sizes[word["page"]]
        x0, y0, x1, y1 = word["box"]
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    for entity in document["entities"]:
        assert set(entity) >= {"entity_group", "word", "box", "score", "page", "start", "end"}
    for name, field in document["fields"].items():
        assert field["type"] in ("text", "date", "amount", "number")
        candidates = field["values"] if field.get("multiple") else field["candidates"]
        assert candidates and all(set(c) >= {"text", "normalized", "box", "score", "page"} for c in candidates)
        if not field.get("multiple"):  # one value: the best-scoring candidate
            assert field["value"] == max(candidates, key=lambda c: c["score"])["text"]
    return document


@needs_default_ocr
def test_folder_with_bad_files(vendor_ner_checkpoint, mixed_folder, tmp_path):
    """The command line on a folder: an image, a 2-page PDF, a 2-page TIFF are predicted; a corrupt image, an
    encrypted PDF, a PDF without pages, a 20000x20000 image and a blank page are reported; exit code 0."""
    output = tmp_path / "out"
    result = run_command([sys.executable, REPO_ROOT / "predict.py", "--model_name_or_path", vendor_ner_checkpoint,
                          "--input", mixed_folder, "--output_dir", output, "--dpi", 100, "--device", "cpu"])
    rows = read_outputs(output)
    assert sorted(rows) == sorted(["blank.png", "corrupt.png", "empty.pdf", "encrypted.pdf", "huge.png", "receipt.png",
                                   "scan.tiff", "two_pages.pdf"])
    assert {name for name, row in rows.items() if row["status"] == "ok"} == {"receipt.png", "scan.tiff", "two_pages.pdf"}
    expected_errors = {
        "corrupt.png": "not a readable image",
        "encrypted.pdf": "encrypted (password protected)",
        "empty.pdf": "the PDF has no pages",
        "huge.png": "decompression-bomb",
        "blank.png": "no text found on any page",
    }
    for name, problem in expected_errors.items():
        assert rows[name]["status"] == "error"
        assert name in rows[name]["message"] and problem in rows[name]["message"], rows[name]["message"]
    assert "3/8 documents processed" in result.stderr

    receipt = check_document(output / "receipt.json", vendor_ner_checkpoint, 1)
    assert "Total" in [w["text"] for w in receipt["words"]]
    assert receipt["fields"]["vendor"]["page"] == 1
    pdf = check_document(output / "two_pages.json", vendor_ner_checkpoint, 2)
    # Rendered at --dpi 100 from a PDF saved at 100 dpi: the pages keep their pixel size (to rounding).
    for page in pdf["pages"]:
        assert abs(page["width"] - 520) <= 1 and abs(page["height"] - 240) <= 1
    assert [v["page"] for v in pdf["fields"]["vendor"]["candidates"]] == [1, 2]
    assert "Globex" in [w["text"] for w in pdf["words"] if w["page"] == 1]
    assert "Subtotal" in [w["text"] for w in pdf["words"] if w["page"] == 2]
    check_document(output / "scan.json", vendor_ner_checkpoint, 2)
    assert rows["receipt.png"]["fields"] == {"vendor": 1} and rows["two_pages.pdf"]["pages"] == 2


def test_words_json_with_rules(vendor_ner_checkpoint, synthetic_invoices, tmp_path):
    """Words and boxes from an annotation file (no OCR), image found next to it, rules and bf16 autocast."""
    from layoutkit.apps import predict

    annotation_path = synthetic_invoices / "annotations" / "invoice_00000.json"
    annotation = json.loads(annotation_path.read_text())
    output = tmp_path / "out"
    code = predict.main(["--model_name_or_path", str(vendor_ner_checkpoint), "--words_json", str(annotation_path),
                         "--output_dir", str(output), "--rules", "company_first_lines", "--batch_size", "2",
                         "--mixed_precision", "bf16", "--device", "cpu"])
    assert code == 0
    document = check_document(output / "invoice_00000.json", vendor_ner_checkpoint, 1)
    assert [w["text"] for w in document["words"]] == annotation["words"]
    assert [w["box"] for w in document["words"]] == annotation["boxes"]
    vendor_words = [w for w in document["words"] if w["label"] != "O"]
    assert vendor_words and len(vendor_words) < len(annotation["words"])
    assert all("model_label" in w for w in document["words"] if w["label"] == "O")
    assert document["fields"]["vendor"]["value"].startswith(annotation["words"][0])


def test_every_document_failing_exits_1(vendor_ner_checkpoint, tmp_path):
    from layoutkit.apps import predict

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.jpg").write_bytes(b"nope")
    output = tmp_path / "out"
    code = predict.main(["--model_name_or_path", str(vendor_ner_checkpoint), "--input", str(tmp_path / "in"),
                         "--output_dir", str(output), "--device", "cpu"])
    assert code == 1
    [row] = read_outputs(output).values()
    assert row["status"] == "error" and "bad.jpg: not a readable image" in row["message"]
    assert predict.main(["--model_name_or_path", str(vendor_ner_checkpoint), "--input", str(tmp_path / "empty"),
                         "--output_dir", str(output)]) == 1


def test_page_mismatch_and_argument_errors(vendor_ner_checkpoint, synthetic_invoices, tmp_path):
    from layoutkit.apps import predict

    words = tmp_path / "words.json"
    words.write_text(json.dumps({"words": ["a", "b"], "boxes": [[0, 0, 1, 1]]}))
    assert predict.main(["--model_name_or_path", str(vendor_ner_checkpoint), "--words_json", str(words),
                         "--output_dir", str(tmp_path / "o")]) == 1
    with pytest.raises(SystemExit) as error:
        predict.main(["--model_name_or_path", "x", "--output_dir", str(tmp_path / "o")])
    assert error.value.code == 2
    with pytest.raises(SystemExit):
        predict.main(["--model_name_or_path", "x", "--input", "y", "--output_dir", "z", "--rules", "bogus"])


def test_output_names_are_unique(tmp_path):
    from layoutkit.apps import predict

    from pathlib import Path

    names = predict.output_names([Path("a/x.png"), Path("a/x.pdf"), Path("a/y.png")])
    assert names == {Path("a/x.png"): "x.png.json", Path("a/x.pdf"): "x.pdf.json", Path("a/y.png"): "y.json"}


def test_draw_and_typed_fields_with_a_schema(vendor_ner_checkpoint, synthetic_invoices, tmp_path):
    """--draw writes one PNG per page (the page at its size, a legend below); --schema types the fields (here vendor as a date, which
    cannot parse: the raw text stays, with the reason)."""
    from PIL import Image

    from layoutkit.apps import predict

    annotation_path = synthetic_invoices / "annotations" / "invoice_00002.json"
    annotation = json.loads(annotation_path.read_text())
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"fields": {"vendor": {"type": "date"}}}))
    output = tmp_path / "out"
    assert predict.main(["--model_name_or_path", str(vendor_ner_checkpoint), "--words_json", str(annotation_path),
                         "--output_dir", str(output), "--draw", "--schema", str(schema), "--device", "cpu"]) == 0
    document = check_document(output / "invoice_00002.json", vendor_ner_checkpoint, 1)
    vendor = document["fields"]["vendor"]
    assert vendor["type"] == "date" and vendor["value"] == " ".join(annotation["words"])
    assert vendor["normalized"] is None and vendor["error"]
    drawing = Image.open(output / "invoice_00002.page1.png")
    page = Image.open(synthetic_invoices / "images" / annotation["image"])
    # The page at its own pixels, with the legend of the field colours in a strip below it.
    assert drawing.width == page.width and drawing.height > page.height
    # The entity box is drawn in its field type's colour over the page (colours in the model's label order).
    from layoutkit.pipelines.draw import label_colour

    id2label = json.loads((vendor_ner_checkpoint / "config.json").read_text())["id2label"]
    types = list(dict.fromkeys(id2label[i][2:] for i in sorted(id2label, key=int) if id2label[i] != "O"))
    x0, y0 = document["entities"][0]["box"][:2]
    assert drawing.getpixel((x0 + 1, y0 + 1))[:3] == label_colour("vendor", types)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fields": {"total": {"type": "money"}}}))
    with pytest.raises(SystemExit):
        predict.parse_args(["--model_name_or_path", "m", "--input", "x", "--output_dir", "o", "--schema", str(bad)])


def test_pdf_errors_do_not_leak_between_files(tmp_path):
    """PDFium keeps its last error code across files: a PDF without pages read after a malformed or an encrypted
    PDF must still be reported as having no pages, each file with its own problem (no model needed)."""
    from pathlib import Path

    from layoutkit.apps import predict
    from layoutkit.apps.settings import InferenceSettings

    (tmp_path / "malformed.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF body\n%%EOF\n")
    (tmp_path / "encrypted.pdf").write_bytes(encrypted_pdf())
    (tmp_path / "empty.pdf").write_bytes(pdf_file(["<< /Type /Catalog /Pages 2 0 R >>",
                                                   "<< /Type /Pages /Kids [] /Count 0 >>"]))
    text_page("Total 12.00").save(tmp_path / "good.pdf", resolution=100)
    settings = InferenceSettings(model_name_or_path="unused", dpi=100)

    def problem(name: str) -> str:
        path = Path(tmp_path / name)
        try:
            pages = list(predict.document_pages(path, settings))
        except predict.DocumentError as error:
            assert str(error).startswith(f"{path}: ")
            return str(error)[len(f"{path}: "):]
        return f"{len(pages)} page(s)"

    expected = {
        "malformed.pdf": "not a readable PDF (data format error); re-export or repair it",
        "encrypted.pdf": "the PDF is encrypted (password protected); decrypt it first",
        "empty.pdf": "the PDF has no pages",
        "good.pdf": "1 page(s)",
    }
    for order in (["malformed.pdf", "empty.pdf"], ["encrypted.pdf", "empty.pdf"], ["empty.pdf", "good.pdf"],
                  ["encrypted.pdf", "good.pdf", "empty.pdf", "malformed.pdf", "empty.pdf"]):
        assert [problem(name) for name in order] == [expected[name] for name in order], order


def test_words_json_with_a_box_outside_the_page(vendor_ner_checkpoint, tmp_path):
    """Boxes of --words_json are checked like training annotations: the summary names the page and the box."""
    from PIL import Image

    from layoutkit.apps import predict

    Image.new("RGB", (300, 200), "white").save(tmp_path / "scan.png")
    words = tmp_path / "words.json"
    words.write_text(json.dumps([
        {"image": "scan.png", "words": ["ACME", "Total"], "boxes": [[10, 10, 60, 25], [200, 150, 240, 165]]},
        {"image": "scan.png", "words": ["ACME", "Total"], "boxes": [[10, 10, 60, 25], [2000, 1500, 2400, 1650]]},
    ]))
    output = tmp_path / "out"
    code = predict.main(["--model_name_or_path", str(vendor_ner_checkpoint), "--words_json", str(words),
                         "--output_dir", str(output), "--device", "cpu"])
    assert code == 1
    [row] = read_outputs(output).values()
    assert row["status"] == "error"
    assert row["message"] == (
        f"{tmp_path / 'scan.png'}: page 2: boxes[1]: box [2000, 1500, 2400, 1650] lies outside the 300x200 image "
        "(tolerance 2 px); boxes must be pixel coordinates of the upright image (not normalised, not from another "
        "resolution)"
    ), row["message"]
