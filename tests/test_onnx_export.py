"""ONNX export (`python -m layoutkit.apps.export_onnx`): parity of ONNX Runtime logits with PyTorch on tiny checkpoints at
other batch sizes and sequence lengths than the traced ones, the pipeline and predict.py on the ONNX backend, the
Inference Endpoints handler of an fp32 and an int8 export folder, and LayoutLMv2 refused with its reason."""

import base64
import json
import shutil

import pytest
import torch

from conftest import python_module, run_command, run_fresh_python

pytest.importorskip("onnx", reason="the ONNX exporter needs the onnx package (pip install onnx)")
# Parity batches: (words per document, window length), neither the traced (2 x 32) nor the export check's shapes.
PARITY = (((7,), 24), ((30, 4, 12, 19), 96))
MAX_ABS_DIFF = 1e-4


def classification_checkpoint(scratch_checkpoint, tmp_path, model_type: str, head: str):
    """A tiny from-config model with its processor: token classification (3 BIO labels) or sequence
    classification (3 classes), random weights made larger than the 0.02-std initialisation so logits are O(1)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    labels = ["O", "B-total", "I-total"] if head == "token" else ["invoice", "receipt", "letter"]
    folder = tmp_path / f"{model_type}-{head}"
    shutil.copytree(scratch_checkpoint(model_type), folder)
    config = AutoConfig.from_pretrained(folder, num_labels=3, id2label=dict(enumerate(labels)),
                                        label2id={label: i for i, label in enumerate(labels)})
    auto = AutoModelForTokenClassification if head == "token" else AutoModelForSequenceClassification
    torch.manual_seed(0)
    model = auto.from_config(config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.1)
    model.save_pretrained(folder)
    return folder


def without_scores(value):
    if isinstance(value, dict):
        return {key: without_scores(item) for key, item in value.items() if key != "score"}
    if isinstance(value, list):
        return [without_scores(item) for item in value]
    return value


@pytest.mark.parametrize("model_type, head", [("layoutlm", "token"), ("layoutlmv3", "token"),
                                              ("layoutlmv3", "sequence")])
def test_onnx_runtime_logits_match_pytorch(scratch_checkpoint, tmp_path, model_type, head):
    import onnxruntime

    from layoutkit.apps.export_onnx import example_batch, export_onnx, load_classification_model
    from layoutkit.pipelines.modeling import load_processing, model_family
    from layoutkit.pipelines.onnx_model import OnnxLayoutModel

    checkpoint = classification_checkpoint(scratch_checkpoint, tmp_path, model_type, head)
    info = export_onnx(str(checkpoint), tmp_path / "onnx")
    assert info["model_type"] == model_type and all(p["max_abs_diff"] < MAX_ABS_DIFF for p in info["parity"])
    expected_inputs = ["input_ids", "attention_mask", "bbox"] + (["pixel_values"] if model_type == "layoutlmv3" else [])
    assert info["inputs"] == expected_inputs
    # Batch and sequence axes are symbolic in the graph.
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes["input_ids"] == ["batch", "sequence"] and shapes["bbox"] == ["batch", "sequence", 4]
    # The label maps and processor travel with the graph.
    exported = json.loads((tmp_path / "onnx" / "config.json").read_text())
    assert exported["id2label"] == json.loads((checkpoint / "config.json").read_text())["id2label"]

    model, config = load_classification_model(str(checkpoint))
    tokenizer, image_processor, _ = load_processing(str(tmp_path / "onnx"))
    onnx_model = OnnxLayoutModel(tmp_path / "onnx")
    differences = []
    for words, length in PARITY:
        batch = example_batch(tokenizer, image_processor, model_family(config), words, length)
        assert batch["input_ids"].shape[0] == len(words)
        with torch.no_grad():
            expected = model(**batch).logits
        logits = onnx_model(**batch).logits
        assert logits.shape == expected.shape
        assert expected.abs().max() > 0.1, "logits of a realistic size, so the comparison means something"
        differences.append(float((logits - expected).abs().max()))
    print(f"{model_type} {head}: max |ONNX Runtime - PyTorch| = {max(differences):.2e}")
    assert max(differences) < MAX_ABS_DIFF


def test_layoutlmv2_is_refused_with_its_reason(scratch_checkpoint, tmp_path, capsys):
    from layoutkit.apps.export_onnx import main

    assert main(["--model", str(scratch_checkpoint("layoutlmv2")), "--output", str(tmp_path / "v2")]) == 1
    assert "detectron2" in capsys.readouterr().err
    assert not (tmp_path / "v2" / "model.onnx").exists()


def test_predict_onnx_backend_gives_the_torch_output(trained_ner_checkpoint, synthetic_invoices, tmp_path):
    """The CLI export of the trained tiny LayoutLMv3, then predict.py on both backends: the same labels, entities
    and fields; scores within rounding."""
    export = tmp_path / "onnx"
    log = run_command(python_module("layoutkit.apps.export_onnx", "--model", trained_ner_checkpoint, "--output", export))
    assert "max |ONNX Runtime - PyTorch|" in log.stdout
    annotation = synthetic_invoices / "annotations" / "invoice_00002.json"
    image = synthetic_invoices / "images" / json.loads(annotation.read_text())["image"]
    from layoutkit.apps import predict

    outputs = {}
    for backend, model in (("torch", trained_ner_checkpoint), ("onnx", export)):
        folder = tmp_path / backend
        assert predict.main(["--model_name_or_path", str(model), "--input", str(image), "--words_json",
                             str(annotation), "--output_dir", str(folder), "--backend", backend]) == 0
        outputs[backend] = json.loads((folder / f"{image.stem}.json").read_text())
    torch_out, onnx_out = outputs["torch"], outputs["onnx"]
    assert onnx_out["model"] == str(export)
    # Everything but the model path and the scores is identical: labels, entities, fields, boxes.
    assert without_scores({**onnx_out, "model": None}) == without_scores({**torch_out, "model": None})
    assert onnx_out["entities"] and onnx_out["fields"]
    assert [w["score"] for w in onnx_out["words"]] == pytest.approx([w["score"] for w in torch_out["words"]], abs=2e-4)

    # The HTTP service on the ONNX backend answers with predict.py's JSON for the same page.
    requests = pytest.importorskip("requests")
    from serve_helpers import ServerProcess

    words = json.loads(annotation.read_text())
    payload = {"words": words["words"], "boxes": words["boxes"], "image": base64.b64encode(image.read_bytes()).decode()}
    options = ("--backend", "onnx", "--log_level", "warning")
    with ServerProcess(export, *options, log_path=tmp_path / "serve.log") as server:
        answer = requests.post(server.url + "/v1/extract", json=payload, timeout=120)
    assert answer.status_code == 200, answer.text
    assert {**answer.json(), "source": None} == {**onnx_out, "source": None}

    with pytest.raises(SystemExit):
        predict.parse_args(["--model_name_or_path", str(export), "--input", str(image), "--output_dir",
                            str(tmp_path / "x"), "--backend", "onnx", "--mixed_precision", "bf16"])
    from layoutkit.apps.pipeline_loader import load_predictor

    with pytest.raises(FileNotFoundError, match="layoutkit.apps.export_onnx"):
        load_predictor(trained_ner_checkpoint, backend="onnx")


@pytest.mark.parametrize("model_type", ["layoutlm", "lilt"])
def test_int8_export_is_smaller_and_agrees_with_pytorch(scratch_checkpoint, tmp_path, model_type):
    """`--quantize int8`: ONNX Runtime dynamic quantization of the verified graph; the int8 graph replaces the fp32
    one, records how far it is from PyTorch, and runs through the pipeline on the ONNX backend."""
    from PIL import Image

    from layoutkit.apps.export_onnx import main
    from layoutkit.apps.pipeline_loader import load_predictor

    checkpoint = classification_checkpoint(scratch_checkpoint, tmp_path, model_type, "token")
    assert main(["--model", str(checkpoint), "--output", str(tmp_path / "fp32")]) == 0
    assert main(["--model", str(checkpoint), "--output", str(tmp_path / "int8"), "--quantize", "int8"]) == 0
    info = json.loads((tmp_path / "int8" / "onnx_export.json").read_text())
    assert info["quantization"]["method"].startswith("onnxruntime.quantization.quantize_dynamic")
    assert all(p["max_abs_diff"] < MAX_ABS_DIFF for p in info["parity"])  # the fp32 graph it started from
    agreement = [p["argmax_agreement"] for p in info["quantization"]["parity"]]
    assert min(agreement) >= 0.9, agreement
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < 0.6 * (tmp_path / "fp32" / "model.onnx").stat().st_size
    assert not list((tmp_path / "int8").glob("*.int8.onnx"))
    extractor = load_predictor(tmp_path / "int8", backend="onnx", task="token-classification")
    output = extractor({"image": Image.new("RGB", (200, 100), "white"), "words": ["Total", "12.00"],
                        "boxes": [[10, 10, 60, 30], [70, 10, 120, 30]]}, return_words=True)
    assert [w["text"] for w in output["words"]] == ["Total", "12.00"]
    assert {w["label"] for w in output["words"]} <= {"O", "B-total", "I-total"}


# Each folder served as Inference Endpoints does it (its handler.py imported from it, EndpointHandler(path)), one
# words + boxes request; then the ONNX export again with onnxruntime made unimportable.
ENDPOINTS_SCRIPT = """
import base64, importlib.util, json, sys
assert importlib.util.find_spec("layoutkit") is None, "the project must not be importable here"
image_path, annotation_path, *folders = sys.argv[1:]
annotation = json.load(open(annotation_path))
request = json.dumps({"inputs": {"image": base64.b64encode(open(image_path, "rb").read()).decode(),
                                 "words": annotation["words"], "boxes": annotation["boxes"]},
                      "parameters": {"return_words": True, "return_fields": True}})

def endpoint_handler(path):
    sys.path.insert(0, path)
    spec = importlib.util.spec_from_file_location("handler", path + "/handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler(path)

out = {}
for path in folders:
    handler = endpoint_handler(path)
    out[path] = {"task": handler.task, "model": type(handler.pipeline.model).__name__,
                 "answer": handler(json.loads(request))}
sys.modules["onnxruntime"] = None  # as if requirements.txt had not been installed
try:
    endpoint_handler(folders[-1])
except ImportError as error:
    out["without_onnxruntime"] = str(error)
print(json.dumps(out))
"""


def test_endpoint_handler_serves_fp32_and_int8_exports(trained_ner_checkpoint, synthetic_invoices, tmp_path):
    """An export folder (fp32, int8) carries handler.py, the pipeline files, onnx_model.py and a requirements.txt
    naming onnxruntime; imported from the folder in a fresh process without layoutkit, the handler answers like the
    PyTorch checkpoint's handler: fp32 the same words, labels, entities and fields (scores within rounding), int8 the
    same structure and words with the per-word labels agreeing as the int8 export's own check requires."""
    from layoutkit.apps.export_onnx import export_onnx
    from layoutkit.pipelines.attach import ENDPOINT_REQUIREMENTS, pipeline_files

    exports = {"fp32": tmp_path / "fp32", "int8": tmp_path / "int8"}
    export_onnx(str(trained_ner_checkpoint), exports["fp32"])
    export_onnx(str(trained_ner_checkpoint), exports["int8"], quantize="int8")
    shipped = {path.name for path in pipeline_files("token-classification")} | {"handler.py", "onnx_model.py"}
    for folder in exports.values():
        assert shipped <= {path.name for path in folder.iterdir()}
        requirements = (folder / "requirements.txt").read_text().splitlines()
        assert [line for line in requirements if not line.startswith("#")] == list(ENDPOINT_REQUIREMENTS)
        assert any(line.startswith("onnxruntime") for line in requirements)
        assert json.loads((folder / "config.json").read_text())["custom_pipelines"].keys() == {"token-classification"}
        assert not list(folder.glob("*.safetensors")), "the graph replaces the weights"

    annotation = synthetic_invoices / "annotations" / "invoice_00002.json"
    image = synthetic_invoices / "images" / json.loads(annotation.read_text())["image"]
    folders = [trained_ner_checkpoint, exports["fp32"], exports["int8"]]
    out = run_fresh_python(ENDPOINTS_SCRIPT, [image, annotation, *folders], tmp_path)
    torch_out, fp32_out, int8_out = (out[str(folder)] for folder in folders)
    assert torch_out["model"].endswith("ForTokenClassification")
    assert fp32_out["model"] == int8_out["model"] == "OnnxLayoutModel"
    assert torch_out["task"] == fp32_out["task"] == int8_out["task"] == "token-classification"
    torch_answer, fp32_answer, int8_answer = torch_out["answer"], fp32_out["answer"], int8_out["answer"]
    assert torch_answer["entities"] and torch_answer["fields"]

    assert without_scores(fp32_answer) == without_scores(torch_answer)
    assert [w["score"] for w in fp32_answer["words"]] == pytest.approx([w["score"] for w in torch_answer["words"]],
                                                                       abs=2e-4)

    assert int8_answer.keys() == torch_answer.keys()
    assert [{**w, "label": None, "score": None} for w in int8_answer["words"]] == \
        [{**w, "label": None, "score": None} for w in torch_answer["words"]]
    agreement = sum(a["label"] == b["label"] for a, b in zip(int8_answer["words"], torch_answer["words"]))
    agreement /= len(torch_answer["words"])
    print(f"int8 handler: per-word label agreement with PyTorch {agreement:.3f} on {len(torch_answer['words'])} words")
    assert agreement >= 0.9

    assert "onnxruntime" in out["without_onnxruntime"] and "pip install" in out["without_onnxruntime"]
