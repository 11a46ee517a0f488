"""The Inference Endpoints handler saved into every checkpoint: imported from the folder in a fresh process the way
the endpoint toolkit does it, its answers equal the pipeline's for base64, raw-bytes, PIL, words + boxes and PDF
inputs (base64 through the words + boxes request and the PDF)."""

import importlib.util
import json

import pytest

from conftest import REPO_ROOT, run_fresh_python

DEFAULT_OCR = importlib.util.find_spec("rapidocr") is not None
needs_default_ocr = pytest.mark.skipif(not DEFAULT_OCR, reason="rapidocr, the default OCR engine, is not installed "
                                       "(pip install rapidocr onnxruntime)")

# What the endpoint toolkit does: the checkpoint folder on sys.path, handler.py imported from it, EndpointHandler(path).
HANDLER_SCRIPT = """
import base64, importlib.util, json, sys
from PIL import Image
assert importlib.util.find_spec("layoutkit") is None, "the project must not be importable here"
path, image_path, annotation_path, pdf_path = sys.argv[1:5]
sys.path.insert(0, path)
spec = importlib.util.spec_from_file_location("handler", path + "/handler.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
handler = module.EndpointHandler(path)
png = open(image_path, "rb").read()
annotation = json.load(open(annotation_path))
words = {"image": "data:image/png;base64," + base64.b64encode(png).decode(), "words": annotation["words"],
         "boxes": annotation["boxes"]}
out = {"task": handler.task,
       "words": handler({"inputs": words, "parameters": {"return_words": True, "return_fields": True}}),
       "words_list": handler({"inputs": [words, words]})}
try:
    handler({"inputs": "/etc/passwd"})
except ValueError as error:
    out["path_error"] = str(error)
if len(sys.argv) > 5:  # OCR with the default engine
    out["raw"] = handler({"inputs": png, "parameters": {"return_words": True}})
    out["pil"] = handler({"inputs": Image.open(image_path).convert("RGB")})
    out["pdf"] = handler({"inputs": base64.b64encode(open(pdf_path, "rb").read()).decode(), "parameters": {"dpi": 72}})
print(json.dumps(out))
"""


def test_checkpoint_carries_handler_and_requirements(trained_ner_checkpoint):
    from layoutkit.pipelines.attach import ALLOWED_IMPORTS, ENDPOINT_REQUIREMENTS, third_party_imports

    handler = (REPO_ROOT / "layoutkit" / "pipelines" / "endpoint_handler.py").read_bytes()
    assert (trained_ner_checkpoint / "handler.py").read_bytes() == handler
    requirements = (trained_ner_checkpoint / "requirements.txt").read_text().splitlines()
    assert [line for line in requirements if not line.startswith("#")] == list(ENDPOINT_REQUIREMENTS)
    assert third_party_imports("token-classification") <= ALLOWED_IMPORTS


def test_handler_in_a_fresh_process_answers_like_the_pipeline(vendor_ner_checkpoint, synthetic_invoices, tmp_path):
    from PIL import Image
    from transformers import pipeline

    from layoutkit.pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline

    annotation_path = synthetic_invoices / "annotations" / "invoice_00000.json"
    annotation = json.loads(annotation_path.read_text())
    image_path = synthetic_invoices / "images" / annotation["image"]
    pdf_path = tmp_path / "invoice.pdf"
    Image.open(image_path).convert("RGB").save(pdf_path, resolution=72)  # one PDF page, 1 pixel = 1 point
    args = [vendor_ner_checkpoint, image_path, annotation_path, pdf_path] + (["ocr"] if DEFAULT_OCR else [])
    out = run_fresh_python(HANDLER_SCRIPT, args, tmp_path)

    extractor = pipeline("token-classification", model=str(vendor_ner_checkpoint),
                         pipeline_class=LayoutTokenClassificationPipeline, device="cpu")
    page = Image.open(image_path)
    inputs = {"image": page, "words": annotation["words"], "boxes": annotation["boxes"]}
    assert out["task"] == "token-classification"
    expected = extractor(inputs, return_words=True, return_fields=True)
    assert out["words"] == json.loads(json.dumps(expected))
    assert out["words"]["entities"] and out["words"]["fields"]["vendor"]["value"]
    assert out["words_list"] == [json.loads(json.dumps(extractor(inputs)))] * 2
    assert "base64" in out["path_error"] and "not read" in out["path_error"]
    if DEFAULT_OCR:
        ocr = json.loads(json.dumps(extractor(page, return_words=True)))
        assert out["raw"] == ocr and ocr["words"], "raw image bytes"
        assert out["pil"] == ocr["entities"]
        import pypdfium2

        rendered = [pypdfium2.PdfDocument(str(pdf_path))[0].render(scale=1).to_pil()]  # 72 dpi
        assert out["pdf"] == json.loads(json.dumps([extractor(rendered[0])])), "a PDF answers one result per page"
