"""predict.py and the HTTP service read one `InferenceSettings` (layoutkit/apps/settings.py): the same flags, the
same names, the same checks."""

import dataclasses

import pytest

from layoutkit.apps import predict, serve
from layoutkit.apps.settings import InferenceSettings

SHARED = ["--model", "runs/invoices", "--backend", "torch", "--mixed_precision", "bf16", "--dpi", "150",
          "--max_image_pixels", "1000000", "--ocr_engine", "tesseract", "--ocr_lang", "deu+eng", "--ocr_config",
          "--oem 1", "--ocr_option", "min_height=0", "--ocr_option", 'scale="x"', "--rules", "all"]


def test_predict_and_serve_parse_the_same_settings():
    from_predict, predict_args = predict.parse_args([*SHARED, "--input", "scans", "--output_dir", "out"])
    from_serve, service_args = serve.parse_args([*SHARED, "--port", "9000"])
    assert type(from_predict) is type(from_serve) is InferenceSettings
    assert dataclasses.asdict(from_predict) == dataclasses.asdict(from_serve)
    assert from_predict.model_name_or_path == "runs/invoices"  # --model is --model_name_or_path's other spelling
    assert from_predict.ocr_options == {"min_height": 0, "scale": "x"}  # repeatable
    assert from_predict.rule_config == from_serve.rule_config is not None
    assert (predict_args.input, service_args.port) == ("scans", 9000)


def test_program_flags_stay_in_their_program():
    """Each program's own flags are its own: the service has no --output_dir, predict.py no --port."""
    assert not {f.name for f in dataclasses.fields(predict.PredictArguments)} & {
        f.name for f in dataclasses.fields(serve.ServiceArguments)}
    with pytest.raises(SystemExit):
        serve.parse_args(["--model", "m", "--output_dir", "out"])
    with pytest.raises(SystemExit):
        predict.parse_args(["--model", "m", "--input", "x", "--output_dir", "o", "--port", "9000"])


@pytest.mark.parametrize("argv, message", [
    (["--backend", "onnx", "--mixed_precision", "bf16"], "--mixed_precision is torch autocast"),
    (["--backend", "onnx", "--device", "cuda"], "--backend onnx runs on the CPU"),
    (["--dpi", "0"], "--dpi and --max_image_pixels must be positive"),
    (["--ocr_option", "nonsense"], "--ocr_option:"),
])
def test_both_programs_refuse_the_same_settings(argv, message, capsys):
    for parse, own in ((predict.parse_args, ["--input", "x", "--output_dir", "o"]), (serve.parse_args, [])):
        with pytest.raises(SystemExit) as caught:
            parse(["--model", "m", *argv, *own])
        assert caught.value.code == 2
        assert message in capsys.readouterr().err
