"""A folder of unlabeled pages (images, multi-page TIFFs, PDFs) into a pretraining dataset: every page's words from
its PDF text layer where it has one (`--pdf_text auto`, as predict.py reads PDFs), else read with an OCR engine
(cached on disk by file content, page and engine settings, so a rebuild reads nothing twice), stored with its words,
word boxes and the page image (downscaled to --max_side pixels), split into train/validation.

    layoutkit pretraining-corpus --pages_dir scans/ --output datasets/corpus [--ocr_engine rapidocr]
    accelerate launch run_pretraining.py --dataset_path datasets/corpus ...

The dataset is written with `Dataset.from_generator`, page by page, so the folder never has to fit in memory, and
training memory-maps it (Arrow). corpus.json counts the pages per words source (pdf_text, pdf_invisible_text,
ocr:ENGINE).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

from datasets import DatasetDict, Features, Sequence, Value
from datasets import Image as ImageFeature
from tqdm.auto import tqdm

from ..apps.documents import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, PDF_SUFFIXES, image_pages, pdf_page_inputs
from ..pipelines.ocr import DEFAULT_OCR_ENGINE, OcrEngine, OcrResult, get_ocr_engine
from ..pipelines.pdf_text import PDF_TEXT_MODES, check_pdf_text_mode

FEATURES = Features({
    "id": Value("string"),
    "words": Sequence(Value("string")),
    "bboxes": Sequence(Sequence(Value("float32"), length=4)),
    "image": ImageFeature(),
    "words_source": Value("string"),  # pdf_text, pdf_invisible_text or ocr:ENGINE
})


def default_cache_dir() -> Path:
    return Path(os.environ.get("LAYOUTKIT_CACHE", Path.home() / ".cache" / "layoutkit")) / "ocr"


def page_files(pages_dir: Path) -> list[Path]:
    """The page images and PDFs under `pages_dir` (recursively), in name order."""
    if not pages_dir.is_dir():
        raise FileNotFoundError(f"--pages_dir {pages_dir}: no such folder")
    files = sorted(p for p in pages_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | PDF_SUFFIXES)
    if not files:
        raise ValueError(f"--pages_dir {pages_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) or PDFs in it")
    return files


def cached_ocr(engine: OcrEngine, cache_dir: Path, file_digest: str, page_number: int, page) -> OcrResult:
    """The OCR words of a page: from the cache, or read now and cached (written atomically)."""
    key = hashlib.sha256(f"{file_digest}:{page_number}:{json.dumps(engine.settings(), sort_keys=True)}".encode())
    path = cache_dir / key.hexdigest()[:2] / f"{key.hexdigest()}.json"
    if path.is_file():
        return OcrResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    result = engine(page)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.partial")
    temporary.write_text(json.dumps(result.to_dict()), encoding="utf-8")
    temporary.replace(path)
    return result


def page_words(path: Path, dpi: int, pdf_text: str):
    """(page image, words or None when OCR must read the page, boxes, words source) for each page of one file."""
    if path.suffix.lower() not in PDF_SUFFIXES:
        for page in image_pages(path, DEFAULT_MAX_PIXELS):
            yield page, None, None, None
        return
    for page in pdf_page_inputs(path, dpi, DEFAULT_MAX_PIXELS, pdf_text):
        yield page["image"], page["words"], page.get("boxes"), page["words_source"]


def corpus_pages(files: list[str], ocr_engine: str, cache_dir: str, max_side: int, dpi: int, pdf_text: str = "auto"):
    """One example per page with words (`Dataset.from_generator`'s generator: its arguments, hashed for the
    datasets cache, are plain values, the engine by name)."""
    engine = get_ocr_engine(ocr_engine)
    for name in tqdm(files, desc=f"pages ({engine.name})", unit="file"):
        path = Path(name)
        digest = None  # the OCR cache's key; a PDF read from its text layer alone never needs it
        for number, (page, words, boxes, source) in enumerate(page_words(path, dpi, pdf_text), start=1):
            page = page.convert("RGB")
            if words is None:
                digest = digest or hashlib.sha256(path.read_bytes()).hexdigest()
                result = cached_ocr(engine, Path(cache_dir), digest, number, page)
                words, boxes, source = result.words, result.boxes, f"ocr:{engine.name}"
            if not words:
                continue  # a blank page: nothing to mask
            scale = min(1.0, max_side / max(page.size))
            if scale < 1.0:
                page = page.resize((round(page.width * scale), round(page.height * scale)))
            yield {"id": f"{path.name}#{number}", "words": list(words),
                   "bboxes": [[c * scale for c in box] for box in boxes], "image": page, "words_source": source}


def build_pretraining_corpus(pages_dir, output, ocr_engine: str = DEFAULT_OCR_ENGINE,
                             cache_dir=None, max_side: int = 1000, dpi: int = 150, validation_fraction: float = 0.05,
                             seed: int = 0, pdf_text: str = "auto") -> dict:
    """Write the corpus of `pages_dir` to `output` (a DatasetDict train/validation); returns the build's counts."""
    from datasets import Dataset

    check_pdf_text_mode(pdf_text)
    files = [str(p) for p in page_files(Path(pages_dir))]
    dataset = Dataset.from_generator(
        corpus_pages, features=FEATURES,
        gen_kwargs=dict(files=files, ocr_engine=ocr_engine, cache_dir=str(cache_dir or default_cache_dir()),
                        max_side=max_side, dpi=dpi, pdf_text=pdf_text),
    )
    stats = {"files": len(files), "pages": len(dataset), "ocr": get_ocr_engine(ocr_engine).settings(),
             "pdf_text": pdf_text, "words_source": dict(sorted(Counter(dataset["words_source"]).items()))}
    if len(dataset) < 2:
        raise ValueError(f"--pages_dir {pages_dir}: {len(dataset)} page with words; pretraining needs at least 2 "
                         "(one to learn from, one to validate on)")
    split = dataset.train_test_split(test_size=max(1, round(validation_fraction * len(dataset))), seed=seed)
    DatasetDict(train=split["train"], validation=split["test"]).save_to_disk(str(output))
    with open(os.path.join(output, "corpus.json"), "w", encoding="utf-8") as handle:
        json.dump({"pages_dir": str(pages_dir), **stats}, handle, indent=2)
    return stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages_dir", required=True, help="folder of page images and PDFs (searched recursively)")
    parser.add_argument("--output", required=True, help="where the dataset is saved")
    parser.add_argument("--ocr_engine", default=DEFAULT_OCR_ENGINE, help="rapidocr (default) or tesseract")
    parser.add_argument("--ocr_cache", help="OCR cache folder (default ~/.cache/layoutkit/ocr, or $LAYOUTKIT_CACHE)")
    parser.add_argument("--max_side", type=int, default=1000, help="stored page images' longest side, in pixels")
    parser.add_argument("--dpi", type=int, default=150, help="PDF rendering resolution")
    parser.add_argument("--pdf_text", choices=PDF_TEXT_MODES, default="auto",
                        help="a PDF page's words from its text layer where it covers the page (auto, as predict.py), "
                        "always, or never (OCR every page)")
    parser.add_argument("--validation_fraction", type=float, default=0.05)
    args = parser.parse_args(argv)
    stats = build_pretraining_corpus(args.pages_dir, args.output, args.ocr_engine, args.ocr_cache, args.max_side,
                                     args.dpi, args.validation_fraction, pdf_text=args.pdf_text)
    sources = ", ".join(f"{name} {count}" for name, count in stats["words_source"].items())
    print(f"saved {args.output}: {stats['pages']} pages with words from {stats['files']} files ({sources}; pages "
          "without words are skipped)")


if __name__ == "__main__":
    main()
