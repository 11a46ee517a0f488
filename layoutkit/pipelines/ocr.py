"""OCR engines behind one small interface: a page image in, words with pixel boxes, confidences and line ids out.

    engine = get_ocr_engine("rapidocr")                  # or "tesseract", lang="eng"
    result = engine(page)                                # OcrResult(words, boxes, confidences, line_ids)

Two engines ship: RapidOCR (`rapidocr` + `onnxruntime` from PyPI; its detection and recognition models are inside
the wheel, so it runs offline), the default, and Tesseract (`pytesseract` + Debian's `tesseract-ocr`), 1.5-2x
faster on a CPU and less accurate (benchmarks/ocr_quality.py, benchmarks/end_to_end.py). Adding another
(docTR, a cloud OCR) is one class:

    @register_ocr_engine
    class MyEngine(OcrEngine):
        name = "my-engine"
        requirement = "pip install my-ocr"
        def read(self, page):            # page: an upright RGB PIL image
            ...
            return OcrResult(words, boxes, confidences, line_ids)

Engines are optional dependencies: each imports its package when it first reads a page and raises `OcrError`
naming what to install when it is missing.

Copied into saved checkpoints beside the custom pipeline: imports only the standard library, numpy and PIL at
module level.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageOps


class OcrError(RuntimeError):
    """OCR could not run (the engine's package, binary or language data is missing, or the engine failed)."""


@dataclass
class OcrResult:
    """Words in the engine's reading order, with boxes [x0, y0, x1, y1] in the image's pixels.

    `confidences` are on a 0-100 scale for every engine. `line_ids[i]` numbers the text line word i belongs
    to, 0, 1, 2, ... in reading order, so that the union box of a line serves as the segment box of its words.
    """

    words: list[str] = field(default_factory=list)
    boxes: list[list[int]] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    line_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> "OcrResult":
        return cls(**{name: list(data[name]) for name in ("words", "boxes", "confidences", "line_ids")})


class OcrEngine:
    """Base class of the OCR engines. Subclasses set `name` and `requirement` and implement `read`.

    `lang`: the engine's language code(s); `min_confidence` (0-100): words below it are dropped. Other keyword
    arguments are the engine's own settings, recorded by `settings()` (a dataset built with OCR records them so
    inference repeats them).
    """

    name: ClassVar[str] = ""
    requirement: ClassVar[str] = ""  # what a user installs to get the engine, shown in errors

    def __init__(self, lang: str = "eng", min_confidence: float = 0.0):
        self.lang = lang
        self.min_confidence = float(min_confidence)

    def read(self, page: Image.Image) -> OcrResult:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Everything that changes what the engine reads: its name and constructor arguments."""
        return {"engine": self.name, "lang": self.lang, "min_confidence": self.min_confidence}

    def __call__(self, page: Image.Image) -> OcrResult:
        result = self.read(page.convert("RGB") if page.mode != "RGB" else page)
        keep = [
            i for i, (word, confidence) in enumerate(zip(result.words, result.confidences))
            if word.strip() and confidence >= self.min_confidence
        ]
        if len(keep) == len(result.words):
            return result
        return OcrResult(
            [result.words[i].strip() for i in keep], [result.boxes[i] for i in keep],
            [result.confidences[i] for i in keep], renumber([result.line_ids[i] for i in keep]),
        )


def renumber(line_ids: list[int]) -> list[int]:
    """Line ids 0, 1, 2, ... in order of first appearance (after words were dropped)."""
    numbers: dict[int, int] = {}
    return [numbers.setdefault(line, len(numbers)) for line in line_ids]


OCR_ENGINES: dict[str, type[OcrEngine]] = {}


def register_ocr_engine(engine: type[OcrEngine]) -> type[OcrEngine]:
    """Make an engine class available by its `name` (predict.py --ocr_engine, the pipelines, the builder)."""
    if not engine.name:
        raise ValueError(f"{engine.__name__} needs a `name`")
    OCR_ENGINES[engine.name] = engine
    return engine


_ENGINE_CACHE: dict[tuple, OcrEngine] = {}
_ENGINE_CACHE_LOCK = threading.Lock()


# What inference reads pages with when the model records no engine of its own: on FUNSD's scans RapidOCR finds 73%
# of the words against Tesseract's 52%, and a model trained on annotated words extracts 92% of the sample
# invoices' field values exactly from RapidOCR's words against 81% from Tesseract's (README "Real scans").
DEFAULT_OCR_ENGINE = "rapidocr"


def get_ocr_engine(engine: str | OcrEngine = DEFAULT_OCR_ENGINE, **options: Any) -> OcrEngine:
    """An engine by name with its options (one instance per name and options: RapidOCR loads its models once),
    or `engine` itself when it already is one. Options set to None take the engine's defaults."""
    if isinstance(engine, OcrEngine):
        return engine
    if engine not in OCR_ENGINES:
        raise ValueError(f"unknown OCR engine {engine!r}; available: {', '.join(sorted(OCR_ENGINES))}")
    options = {name: value for name, value in options.items() if value is not None}
    key = (engine, tuple(sorted((name, repr(value)) for name, value in options.items())))
    with _ENGINE_CACHE_LOCK:
        if key not in _ENGINE_CACHE:
            try:
                _ENGINE_CACHE[key] = OCR_ENGINES[engine](**options)
            except TypeError as error:
                raise ValueError(f"OCR engine {engine!r}: {error}") from None
        return _ENGINE_CACHE[key]


def parse_engine_option(text: str) -> tuple[str, Any]:
    """A command line's KEY=VALUE engine setting; the value is read as JSON when it parses (min_height=0,
    fallback_psms=[6,4], preprocess=threshold -> "threshold")."""
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise ValueError(f"{text!r} is not KEY=VALUE")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def ocr_page(image: Image.Image, engine: str | OcrEngine = DEFAULT_OCR_ENGINE, **options: Any) -> OcrResult:
    """Read one page: `get_ocr_engine(engine, **options)(image)`."""
    return get_ocr_engine(engine, **options)(image)


# ----------------------------------------------------------------------------------------------- Tesseract
@register_ocr_engine
class TesseractEngine(OcrEngine):
    """Tesseract through pytesseract.

    - `psm`, then `fallback_psms` in turn while a page yields no word (3 = automatic layout; 6 = one block of
      text, which reads pages that automatic layout analysis finds empty; 4 = one column).
    - `min_height`: pages shorter than this many pixels are upscaled to it before reading (Tesseract reads
      small print far better at about 30 px per text line); boxes are mapped back to the page's own pixels.
      0 turns it off.
    - `preprocess`: "none", "gray" (grayscale) or "threshold" (grayscale, then Otsu's global threshold).
    - `config`: extra tesseract command-line options.

    The defaults are what `benchmarks/ocr_quality.py` measured best on FUNSD and the synthetic invoices.
    """

    name = "tesseract"
    requirement = ("`pip install pytesseract` (`pip install 'layoutkit[ocr]'` with layoutkit) and "
                   "`apt-get install tesseract-ocr` (plus tesseract-ocr-LANG)")

    def __init__(self, lang: str = "eng", min_confidence: float = 0.0, psm: int = 3,
                 fallback_psms: tuple[int, ...] | list[int] = (6,), min_height: int = 2000, preprocess: str = "none",
                 config: str = ""):
        super().__init__(lang, min_confidence)
        if preprocess not in ("none", "gray", "threshold"):
            raise ValueError(f"preprocess must be none, gray or threshold, got {preprocess!r}")
        self.psm, self.fallback_psms = int(psm), tuple(int(p) for p in fallback_psms)
        self.min_height, self.preprocess, self.config = int(min_height), preprocess, config

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "psm": self.psm, "fallback_psms": list(self.fallback_psms),
                "min_height": self.min_height, "preprocess": self.preprocess, "config": self.config}

    def read(self, page: Image.Image) -> OcrResult:
        image, scale = prepare_page(page, self.min_height, self.preprocess)
        for psm in (self.psm, *self.fallback_psms):
            result = self._read(image, f"--psm {psm} {self.config}".strip())
            if result.words:
                break
        if scale != 1:
            result.boxes = [scale_box(box, 1 / scale, page.width, page.height) for box in result.boxes]
        return result

    def _read(self, image: Image.Image, config: str) -> OcrResult:
        try:
            import pytesseract
        except ImportError as error:
            raise OcrError(f"the tesseract OCR engine needs {self.requirement}") from error
        try:
            with single_threaded_tesseract():
                data = pytesseract.image_to_data(image, lang=self.lang, config=config,
                                                 output_type=pytesseract.Output.DICT)
        except pytesseract.TesseractNotFoundError as error:
            raise OcrError(
                "the tesseract binary is not installed or not on PATH (apt-get install tesseract-ocr)"
            ) from error
        except pytesseract.TesseractError as error:
            raise OcrError(
                f"tesseract failed (language {self.lang!r} installed? `tesseract --list-langs`): {error}"
            ) from error
        result = OcrResult()
        line_numbers: dict[tuple[int, int, int], int] = {}
        for i, text in enumerate(data["text"]):
            text = (text or "").strip()
            confidence = float(data["conf"][i])
            # Rows of the block/paragraph/line levels carry conf -1 and no text.
            if not text or confidence < 0:
                continue
            left, top = int(data["left"][i]), int(data["top"][i])
            key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
            result.words.append(text)
            result.boxes.append([left, top, left + int(data["width"][i]), top + int(data["height"][i])])
            result.confidences.append(confidence)
            result.line_ids.append(line_numbers.setdefault(key, len(line_numbers)))
        return result


_TESSERACT_CALLS = {"running": 0, "saved": None}
_TESSERACT_LOCK = threading.Lock()


@contextmanager
def single_threaded_tesseract():
    """Run the tesseract subprocesses started inside with OMP_THREAD_LIMIT=1 (unless the user set it).

    Tesseract's OpenMP threads slow it down when pages are read in parallel or on few cores (measured on 2 cores:
    0.5 s per invoice page with one thread, 0.7 s with two). pytesseract passes os.environ to the subprocess, so
    the variable is set only while a call runs (counted across threads) and then restored: setting it for good
    would leak into torch and every other child process."""
    with _TESSERACT_LOCK:
        if _TESSERACT_CALLS["running"] == 0:
            _TESSERACT_CALLS["saved"] = os.environ.get("OMP_THREAD_LIMIT")
            os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        _TESSERACT_CALLS["running"] += 1
    try:
        yield
    finally:
        with _TESSERACT_LOCK:
            _TESSERACT_CALLS["running"] -= 1
            if _TESSERACT_CALLS["running"] == 0 and _TESSERACT_CALLS["saved"] is None:
                os.environ.pop("OMP_THREAD_LIMIT", None)


def prepare_page(page: Image.Image, min_height: int, preprocess: str) -> tuple[Image.Image, float]:
    """The image an engine reads, and its scale against the page: upscaled to `min_height` when shorter,
    then converted as `preprocess` says."""
    scale = min_height / page.height if min_height and page.height < min_height else 1.0
    image = page
    if scale != 1:
        image = page.resize((round(page.width * scale), round(page.height * scale)), Image.Resampling.LANCZOS)
    if preprocess in ("gray", "threshold"):
        image = ImageOps.grayscale(image)
    if preprocess == "threshold":
        threshold = otsu_threshold(np.asarray(image))
        image = image.point(lambda value: 255 if value > threshold else 0)
    return image, scale


def otsu_threshold(gray: np.ndarray) -> int:
    """The gray level that best separates ink from paper (Otsu: maximal between-class variance)."""
    histogram = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    weights = np.cumsum(histogram)
    means = np.cumsum(histogram * np.arange(256))
    total, total_mean = weights[-1], means[-1]
    background = weights[:-1]
    foreground = total - background
    valid = (background > 0) & (foreground > 0)
    variance = np.zeros(255)
    mean_background = means[:-1][valid] / background[valid]
    mean_foreground = (total_mean - means[:-1][valid]) / foreground[valid]
    variance[valid] = background[valid] * foreground[valid] * (mean_background - mean_foreground) ** 2
    return int(np.argmax(variance))


def scale_box(box, factor: float, width: int, height: int) -> list[int]:
    x0, y0, x1, y1 = box
    return [max(0, round(x0 * factor)), max(0, round(y0 * factor)),
            min(width, round(x1 * factor)), min(height, round(y1 * factor))]


# ------------------------------------------------------------------------------------------------ RapidOCR
# Named RapidOCR settings (`--ocr_preset`), judged by benchmarks/ocr_quality.py and benchmarks/end_to_end.py
# (docs/performance.md, section 2): "fast" takes 0.61-0.65x "accurate"'s CPU time per page on FUNSD's scans and the
# synthetic invoices, finds more of FUNSD's words (73.6% against 72.6%: the angle classifier turns some upright
# lines of real scans upside down) and extracts more invoice fields exactly (0.887 against 0.875). Keys are
# `rapidocr.RapidOCR(params=...)` keys; `params` given with a preset override it key by key.
RAPIDOCR_PRESETS: dict[str, dict[str, Any]] = {
    # RapidOCR's own configuration: detection on the page with its short side at least 736 px (pages of 750-1100 px
    # run at their own size, a 300-dpi scan at 2480 x 3508), the angle classifier on every text line, recognition in
    # batches of 6 lines, each line padded to the batch's widest and to at least 320 px wide at 48 px high.
    "accurate": {},
    # - No angle classifier: pages are upright (load_page applies EXIF rotation); "accurate" is for pages with
    #   upside-down text lines.
    # - Detection on the page shrunk to at most 960 px on its long side (PaddleOCR's own classic default): about
    #   0.7-0.9x the pixels of 1000-1135 px pages and a fraction of a high-dpi scan's (whose lines are still read
    #   from the full-size page). 736 px was faster still but lost 0.8 points of field exact match on the
    #   invoices (merged and misread words); for small print on high-dpi scans, "accurate" detects at full size.
    # - Recognition one line at a time at the line's own width (RapidOCR pads short lines, most invoice values, to
    #   320 px and every line to its batch's widest): the same words from fewer pixels. More lines per batch were
    #   slower on a CPU, not faster (6 lines: +20-25% recognition time; 12: +57% on FUNSD).
    "fast": {"Global.use_cls": False, "Det.limit_type": "max", "Det.limit_side_len": 960,
             "Rec.rec_img_shape": [3, 48, 48], "Rec.rec_batch_num": 1},
}
# "fast" with detection on OpenVINO (`pip install openvino`, `layoutkit[openvino]`): the same ONNX file, detection
# takes 5-7x less CPU where the CPU has bfloat16 (AMX or AVX-512 BF16: OpenVINO then runs it in bfloat16 by default), so
# 0.4x "accurate"'s CPU per page against "fast"'s 0.65x, the same word recall. Without OpenVINO a preset that names
# it runs that model on ONNX Runtime (with a warning): "fast-openvino" is then "fast".
RAPIDOCR_PRESETS["fast-openvino"] = {**RAPIDOCR_PRESETS["fast"], "Det.engine_type": "openvino"}
# Both models on OpenVINO: recognition in bfloat16 too, each text line padded to a multiple of 64 px wide
# (`PaddedWidthRecognizer`) so that OpenVINO prepares kernels for a few widths rather than for every line's own.
# About 0.2x "accurate"'s CPU per page; FUNSD recall +0.4 points, invoice recall -0.2 against "fast-openvino", the
# same field exact match (docs/performance.md). On a CPU without bfloat16 OpenVINO's float32 recognition is no
# faster than ONNX Runtime's: take "fast-openvino" there.
RAPIDOCR_PRESETS["fastest-openvino"] = {**RAPIDOCR_PRESETS["fast-openvino"], "Rec.engine_type": "openvino"}


@functools.lru_cache(maxsize=1)
def default_rapidocr_preset() -> str:
    """The preset a RapidOCR engine takes when none is named: "fastest-openvino" where OpenVINO is installed and
    runs models in bfloat16 on this CPU (its own default on CPUs with AMX or AVX-512 BF16), where it reads a page for
    about 0.24x "accurate"'s CPU; else "fast" (ONNX Runtime), since without bfloat16 OpenVINO's recognition is no
    faster (docs/performance.md). The precision is OpenVINO's choice for this CPU, not ours: CPUs differ (asked
    once per process)."""
    if importlib.util.find_spec("openvino") is None:
        return "fast"
    try:
        import openvino

        precision = openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    except Exception:  # no usable CPU plugin: the ONNX Runtime preset
        return "fast"
    return "fastest-openvino" if "bf16" in str(precision).lower() or "bfloat16" in str(precision).lower() else "fast"


@register_ocr_engine
class RapidOcrEngine(OcrEngine):
    """RapidOCR (PaddleOCR's models on ONNX Runtime; "fast-openvino": detection on OpenVINO) with word boxes
    (`return_word_box`).

    The wheel's default models read Latin script and Chinese; `lang` is recorded but does not pick a model.
    `preset`: a name of `RAPIDOCR_PRESETS` ("accurate", "fast", "fast-openvino", "fastest-openvino"; default
    `default_rapidocr_preset()`, recorded as the preset it resolved to); `params` is passed on top of it to
    `rapidocr.RapidOCR(params=...)` (other models, thresholds).

    Speed settings (not recorded: they do not change the words): `workers`, how many pages are read at once (one
    RapidOCR instance each, loaded when first needed; default 1: callers beyond it wait), and `threads`, ONNX
    Runtime's intra-op threads per instance, and OpenVINO's where a model runs on it (default: each backend's own,
    one per core). On a shared or busy
    machine give workers x threads <= cores: ONNX Runtime's threads spin while waiting for work, so more threads
    than cores slow every page (docs/performance.md).
    """

    name = "rapidocr"
    requirement = "`pip install rapidocr onnxruntime` (`pip install 'layoutkit[ocr]'` with layoutkit)"

    def __init__(self, lang: str = "eng", min_confidence: float = 0.0, params: dict | None = None,
                 preset: str | None = None, threads: int | None = None, workers: int = 1):
        super().__init__(lang, min_confidence)
        preset = preset or default_rapidocr_preset()
        if preset not in RAPIDOCR_PRESETS:
            raise ValueError(f"unknown RapidOCR preset {preset!r}; available: {', '.join(RAPIDOCR_PRESETS)}")
        if (threads is not None and int(threads) < 1) or int(workers) < 1:
            raise ValueError(f"threads and workers must be at least 1, got threads={threads}, workers={workers}")
        self.params = dict(params or {})
        self.preset = preset
        self.threads = None if threads is None else int(threads)
        self.workers = int(workers)
        # RapidOCR instances not reading a page now; a caller takes one (or loads one) and gives it back.
        self._idle: list = []
        self._pool_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.workers)

    def settings(self) -> dict[str, Any]:
        # `threads` changes the speed, not the words: not recorded.
        return {**super().settings(), "preset": self.preset, "params": self.params}

    def rapidocr_params(self) -> dict[str, Any]:
        """What `rapidocr.RapidOCR(params=...)` receives: the preset, the given params, the thread count (of every
        backend the params name: ONNX Runtime's, and OpenVINO's when a model runs on it). Engine types stay
        strings here (they are recorded in datasets as JSON); `_load` turns them into RapidOCR's enum."""
        params = {**RAPIDOCR_PRESETS[self.preset], **self.params}
        if self.threads is not None:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = self.threads
            if "openvino" in engine_types(params).values():
                params["EngineConfig.openvino.inference_num_threads"] = self.threads
        return params

    def __getstate__(self) -> dict[str, Any]:
        """The engine pickles as its settings: the loaded readers (ONNX Runtime sessions, which cannot be pickled)
        and the locks stay behind and are made again where the copy reads its first page. `datasets` pickles a
        build's arguments to fingerprint them, and worker processes receive the engine pickled."""
        return {key: value for key, value in self.__dict__.items() if key not in ("_idle", "_pool_lock", "_slots")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _idle=[], _pool_lock=threading.Lock(),
                             _slots=threading.BoundedSemaphore(state["workers"]))

    def _load(self):
        try:
            import logging

            from rapidocr import RapidOCR
        except ImportError as error:
            raise OcrError(f"the rapidocr OCR engine needs {self.requirement}") from error
        params = with_backends(self.rapidocr_params())
        reader = RapidOCR(params=params or None)
        if params.get("Rec.engine_type") is not None and str(params["Rec.engine_type"].value) == "openvino":
            pad_recognizer_widths(reader)
        # It logs every model path at INFO and "text detection result is empty" as a warning for every blank
        # page; an empty page is reported by the caller (predict.py: "no text found").
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        return reader

    def run(self, page: Image.Image):
        """RapidOCR's own output for a page (its `elapse_list` holds seconds of detection, angle classification
        and recognition: benchmarks/page_latency.py). At most `workers` pages at once."""
        with self._slots:
            with self._pool_lock:
                reader = self._idle.pop() if self._idle else None
            try:
                if reader is None:
                    reader = self._load()
                return reader(np.asarray(page), return_word_box=True)
            finally:
                if reader is not None:
                    with self._pool_lock:
                        self._idle.append(reader)

    def read(self, page: Image.Image) -> OcrResult:
        return self.words(self.run(page), page)

    @staticmethod
    def words(output, page: Image.Image) -> OcrResult:
        """RapidOCR's output as words with boxes in the page's pixels, one line id per detected text line."""
        result = OcrResult()
        if not output.txts:  # nothing detected (word_results then holds a placeholder without a box)
            return result
        for line, words in enumerate(output.word_results or ()):
            for text, score, polygon in words:
                xs = [point[0] for point in polygon]
                ys = [point[1] for point in polygon]
                result.words.append(str(text))
                result.boxes.append(scale_box([min(xs), min(ys), max(xs), max(ys)], 1.0, page.width, page.height))
                result.confidences.append(round(100 * float(score), 2))
                result.line_ids.append(line)
        return result


# ---------------------------------------------------------------------------------- RapidOCR's other backends
RAPIDOCR_MODELS = ("Det", "Cls", "Rec")
# The package each backend other than ONNX Runtime needs, as a user installs it.
BACKEND_REQUIREMENTS = {"openvino": "`pip install openvino` (`pip install 'layoutkit[openvino]'` with layoutkit)"}


def engine_types(params: dict[str, Any]) -> dict[str, str]:
    """The backend each model runs on when RapidOCR's default (ONNX Runtime) is not: {"Det": "openvino"}."""
    types = {model: params.get(f"{model}.engine_type") for model in RAPIDOCR_MODELS}
    return {model: str(getattr(kind, "value", kind)) for model, kind in types.items()
            if kind is not None and str(getattr(kind, "value", kind)) != "onnxruntime"}


def with_backends(params: dict[str, Any]) -> dict[str, Any]:
    """`params` as RapidOCR takes them where a model runs on another backend than ONNX Runtime.

    - RapidOCR wants its `EngineType` enum, not the string a preset or a dataset's JSON holds.
    - With OpenVINO and no `model_path` RapidOCR would download its OpenVINO copy of the model; OpenVINO reads ONNX
      files, so it is pointed at the ONNX file the wheel ships (the one ONNX Runtime runs): offline, same weights.
    - A backend whose package is missing falls back to ONNX Runtime with a warning naming what to install (the
      same model, so close to the same words; only slower)."""
    import importlib.util
    import logging

    try:
        from rapidocr import EngineType
    except ImportError as error:
        raise OcrError(f"the rapidocr OCR engine needs {RapidOcrEngine.requirement}") from error

    params = dict(params)
    backends = engine_types(params)
    for model, backend in backends.items():
        key = f"{model}.engine_type"
        if backend in BACKEND_REQUIREMENTS and importlib.util.find_spec(backend) is None:
            logging.getLogger(__name__).warning(
                "RapidOCR's %s model is set to run on %s, which is not installed: it runs on ONNX Runtime instead "
                "(slower). Install it with %s.", model, backend, BACKEND_REQUIREMENTS[backend])
            backends[model] = "onnxruntime"
        try:
            params[key] = EngineType(backends[model])
        except ValueError:
            raise ValueError(f"RapidOCR param {key}={backend!r}: not a RapidOCR backend; available: "
                             f"{', '.join(kind.value for kind in EngineType)}") from None
    for model, backend in backends.items():
        if backend == "openvino" and f"{model}.model_path" not in params:
            params[f"{model}.model_path"] = str(onnx_model_path(params, model))
    return params


def onnx_model_path(params: dict[str, Any], model: str):
    """The ONNX file RapidOCR runs for `model` ("Det", "Cls", "Rec") on ONNX Runtime with these params (its
    version, language and size; by default the file inside the rapidocr wheel). RapidOCR's own lookup: building
    `RapidOCR` only reads its configuration, the models load on the first page."""
    from pathlib import Path

    try:
        from rapidocr import EngineType, RapidOCR
        from rapidocr.inference_engine.base import FileInfo, InferSession
    except ImportError as error:
        raise OcrError(f"the rapidocr OCR engine needs {RapidOcrEngine.requirement}") from error

    config = RapidOCR(params={**params, f"{model}.engine_type": EngineType.ONNXRUNTIME}).cfg
    model_config = config[model]
    url = InferSession.get_model_url(FileInfo(
        engine_type=EngineType.ONNXRUNTIME, ocr_version=model_config.ocr_version, task_type=model_config.task_type,
        lang_type=model_config.lang_type, model_type=model_config.model_type))["model_dir"]
    path = Path(config.Global.model_root_dir) / Path(url).name
    if not path.is_file():
        raise OcrError(f"RapidOCR's {model} model {path} is not there (it is a download, and this machine may be "
                       f"offline); give an ONNX file as params {model}.model_path, or run the model on ONNX Runtime")
    return path


class PaddedWidthRecognizer:
    """RapidOCR's recogniser session with every batch padded on the right to a multiple of `multiple` pixels wide,
    and its output cut back to the columns of the batch's own width (what RapidOCR's decoder and word boxes expect).

    OpenVINO prepares kernels for every new input shape and keeps them: at each line's own width, a page's 30-100
    lines cost a compilation each and the process grew to 1.6-1.9 GB over 20 pages. Padding with zeros is what
    RapidOCR does to the lines of a batch (to the widest), so the model has seen it; 96.7% of held-out lines read
    the same (docs/performance.md). PP-OCR recognisers emit one column per 8 pixels, (width + 3) // 8 of them."""

    def __init__(self, session, multiple: int = 64):
        self.session, self.multiple = session, int(multiple)

    def __getattr__(self, name: str):
        return getattr(self.session, name)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        width = batch.shape[3]
        padded_width = -(-width // self.multiple) * self.multiple
        if padded_width == width:
            return self.session(batch)
        padded = np.zeros((*batch.shape[:3], padded_width), dtype=batch.dtype)
        padded[..., :width] = batch
        output = self.session(padded)
        if output.shape[1] != padded_width // 8:
            raise OcrError(f"RapidOCR's recogniser gave {output.shape[1]} columns for {padded_width} px, not one per 8 "
                           "px: padded widths do not fit this model; run it on ONNX Runtime (Rec.engine_type)")
        return output[:, : (width + 3) // 8]


def pad_recognizer_widths(reader, multiple: int = 64) -> None:
    """Load `reader`'s recogniser (RapidOCR loads models on the first page) and pad its input widths."""
    recognizer = reader._load_rec_model()
    if not isinstance(recognizer.session, PaddedWidthRecognizer):
        recognizer.session = PaddedWidthRecognizer(recognizer.session, multiple)
