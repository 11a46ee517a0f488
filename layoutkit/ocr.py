"""Words, word boxes, confidences and line ids of a page image with Tesseract (pytesseract).

Copied into saved checkpoints beside the custom pipeline: imports only the standard library and PIL at
module level. pytesseract is imported when OCR actually runs, inside a `try` block, so a checkpoint loads
(and `check_imports` of transformers' remote-code loader passes) on machines without it when the words
are given by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image


class OcrError(RuntimeError):
    """OCR could not run (pytesseract or the tesseract binary or the language data is missing)."""


@dataclass
class OcrResult:
    """Words in Tesseract's reading order, with boxes [x0, y0, x1, y1] in the image's pixels.

    `line_ids[i]` numbers the (block, paragraph, line) word i belongs to, 0, 1, 2, ... in reading order,
    so that the union box of a line serves as the segment box of its words.
    """

    words: list[str] = field(default_factory=list)
    boxes: list[list[int]] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    line_ids: list[int] = field(default_factory=list)


def _pytesseract():
    try:
        import pytesseract
    except ImportError as error:
        raise OcrError(
            "OCR needs pytesseract and the tesseract binary: `pip install pytesseract` and "
            "`apt-get install tesseract-ocr` (or pass the words and boxes yourself)"
        ) from error
    return pytesseract


def ocr_page(image: Image.Image, lang: str = "eng", config: str = "", min_confidence: float = 0.0) -> OcrResult:
    """Run Tesseract on an RGB page and return its words.

    `lang` is Tesseract's language code(s), e.g. "eng", "deu" or "eng+fra" (the traineddata must be
    installed); `config` is passed to tesseract as extra command-line options (e.g. "--psm 6").
    Words whose confidence is below `min_confidence` (0-100) or whose text is blank are dropped.
    """
    pytesseract = _pytesseract()
    try:
        data = pytesseract.image_to_data(image, lang=lang, config=config, output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractNotFoundError as error:
        raise OcrError("the tesseract binary is not installed or not on PATH (apt-get install tesseract-ocr)") from error
    except pytesseract.TesseractError as error:
        raise OcrError(f"tesseract failed (language {lang!r} installed? `tesseract --list-langs`): {error}") from error

    result = OcrResult()
    line_numbers: dict[tuple[int, int, int], int] = {}
    for i, text in enumerate(data["text"]):
        text = (text or "").strip()
        confidence = float(data["conf"][i])
        # Rows of the block/paragraph/line levels carry conf -1 and no text.
        if not text or confidence < 0 or confidence < min_confidence:
            continue
        left, top = int(data["left"][i]), int(data["top"][i])
        width, height = int(data["width"][i]), int(data["height"][i])
        key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        result.words.append(text)
        result.boxes.append([left, top, left + width, top + height])
        result.confidences.append(confidence)
        result.line_ids.append(line_numbers.setdefault(key, len(line_numbers)))
    return result
