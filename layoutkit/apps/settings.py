"""How a checkpoint runs on documents: the settings predict.py and the HTTP service share, declared once.

`InferenceSettings` holds the model and backend, how pages are read (PDF resolution, the pixel guard, the OCR engine
and its options) and how predictions are post-processed (rules, field schema). Both programs parse it with
`HfArgumentParser` beside their own group (predict.py's `PredictArguments`, serve.py's `ServiceArguments`), so a
setting has one flag name and one help text everywhere; `predict_document` takes it as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from transformers import HfArgumentParser

from ..flags import HelpFormatter, flag, parse_dataclasses
from ..pipelines.fields import FieldSchema
from ..pipelines.ocr import OCR_ENGINES, RAPIDOCR_PRESETS, parse_engine_option
from ..pipelines.pdf_text import PDF_TEXT_HELP
from ..pipelines.postprocess import DEFAULT_RULES, RULES, RuleConfig
from .documents import DEFAULT_MAX_PIXELS

BACKENDS = ("torch", "onnx")  # PyTorch, or ONNX Runtime on an exported model (apps/pipeline_loader.py)


@dataclass
class InferenceSettings:
    _argument_group_name = "model, pages and post-processing"

    model_name_or_path: str = field(metadata={"help": "checkpoint folder or Hub id", "aliases": ["--model"]})
    backend: Literal[BACKENDS] = flag(
        "torch, or onnx: ONNX Runtime (CPU) on a folder written by `layoutkit export-onnx`", "torch"
    )
    device: str | None = flag("default: cuda when available", choices=["cpu", "cuda"])
    mixed_precision: Literal["no", "bf16"] = flag("bf16 autocast (CPU or GPU)", "no")
    dpi: int = flag("resolution PDF pages are rendered at", 200)
    pdf_text: Literal["auto", "always", "never"] = flag(PDF_TEXT_HELP, "auto")
    max_image_pixels: int = flag(
        "pages above this many pixels are refused (decompression-bomb guard; default PIL's limit)", DEFAULT_MAX_PIXELS
    )
    ocr_engine: str | None = flag("OCR engine (default: the one the model's training data was read with, else "
                                  "rapidocr)", choices=sorted(OCR_ENGINES))
    ocr_lang: str | None = flag('OCR language(s), e.g. "eng", "deu+eng" (default eng)')
    ocr_config: str | None = flag('extra tesseract options, e.g. "--oem 1"')
    ocr_preset: str | None = flag(
        "RapidOCR settings by name: accurate (RapidOCR's own), fast (no angle classifier, detection at 960 px, "
        "recognition at each line's width; 0.6x the CPU), fast-openvino and fastest-openvino (fast with detection, "
        "and also recognition, on OpenVINO; 0.24x the CPU where it runs in bfloat16); default: what the model "
        "records, else fastest-openvino where OpenVINO runs in bfloat16 on this CPU, else fast (docs/performance.md)",
        choices=sorted(RAPIDOCR_PRESETS))
    ocr_option: list[str] = field(default_factory=list, metadata={
        "help": "OCR engine settings KEY=VALUE, repeatable, e.g. min_height=0 (values read as JSON when they parse)",
        "action": "extend", "metavar": "KEY=VALUE"})
    schema: str | None = flag("JSON file of field types (date, amount, number, text), locale, checks and required "
                              "fields; see docs/inference.md")
    locale: str | None = flag('how dates and amounts are written, e.g. "de_DE", "en_GB", "fr-CH": the order of numeric '
                              "dates, the decimal sign, the currency of a shared symbol ($, kr); overrides the "
                              "schema's (docs/trust.md)")
    day_first: Literal["true", "false"] | None = flag(
        "numeric dates such as 03/04/2021 are day first (true) or month first (false); default: the locale's order, "
        "else what the training data settled, else month first and flagged ambiguous")
    rules: str | None = flag(f"post-processing rules: comma-separated ({', '.join(RULES)}; all; none) or a JSON "
                             f"file of settings; default: {', '.join(DEFAULT_RULES)}")

    # Read from the flags above when the settings are made.
    ocr_options: dict = field(init=False, repr=False)
    rule_config: RuleConfig | None = field(init=False, repr=False)
    field_schema: FieldSchema | None = field(init=False, repr=False)

    def __post_init__(self):
        if self.dpi < 1 or self.max_image_pixels < 1:
            raise ValueError("--dpi and --max_image_pixels must be positive")
        if self.backend == "onnx" and self.device == "cuda":
            raise ValueError("--backend onnx runs on the CPU; drop --device cuda")
        if self.backend == "onnx" and self.mixed_precision != "no":
            raise ValueError("--mixed_precision is torch autocast; the ONNX backend runs the exported fp32 graph")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("--device cuda: no CUDA device is available")
        try:
            self.rule_config = RuleConfig.from_value(self.rules)
        except (ValueError, TypeError, OSError) as error:
            raise ValueError(f"--rules: {error}") from None
        try:
            self.field_schema = FieldSchema.load(self.schema)
            if self.locale:
                self.field_schema = replace(self.field_schema, locale=self.locale)
            if self.day_first:
                self.field_schema = replace(self.field_schema, day_first=self.day_first == "true")
        except ValueError as error:
            raise ValueError(f"--schema/--locale: {error}") from None
        try:
            self.ocr_options = dict(parse_engine_option(text) for text in self.ocr_option)
        except ValueError as error:
            raise ValueError(f"--ocr_option: {error}") from None
        if self.ocr_preset:
            if self.ocr_engine == "tesseract":
                raise ValueError("--ocr_preset names RapidOCR settings; Tesseract's are --ocr_option KEY=VALUE "
                                 "(docs/ocr.md)")
            self.ocr_options["preset"] = self.ocr_preset

    def ocr_overrides(self) -> dict:
        """The OCR settings of the command line, as a pipeline's `ocr_engine(overrides)` takes them (what is not
        given falls back to the engine the model records)."""
        return {"engine": self.ocr_engine, "lang": self.ocr_lang, "config": self.ocr_config,
                "options": self.ocr_options}


def parse_inference_args(program_arguments: type, argv=None, description: str | None = None) -> tuple:
    """(InferenceSettings, the program's own flags as `program_arguments`) from a command line; a value a check
    refuses exits with argparse's usage message."""
    parser = HfArgumentParser([InferenceSettings, program_arguments], description=description,
                              formatter_class=HelpFormatter)
    settings, args = parse_dataclasses(parser, argv)
    return settings, args
