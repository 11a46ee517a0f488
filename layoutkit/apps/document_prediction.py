"""A document's prediction JSON (the output format of predict.py and of the HTTP service's /v1/extract): the
pipeline run on each page, entities and words tagged with their page, typed fields over all pages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..pipelines.input_validation import collect_warnings
from ..pipelines.line_items import links_from_pairs
from ..pipelines.ocr import OcrError
from ..pipelines.review import assess_document, document_words_source, trust_settings

if TYPE_CHECKING:
    from .settings import InferenceSettings
from .documents import DocumentError


def predict_document(extractor, source: Path | None, pages, words_pages, settings: InferenceSettings,
                     batch_size: int, *, draw: bool | str = False, linker=None, line_item_grouping: str = "rule",
                     words_source: str | None = None) -> tuple[dict, list]:
    """Run the pipeline on each page; entities and words carry their 1-based page number. Returns the document's
    JSON and, with `draw`, its pages with words and entities drawn. `line_items` are the item table's rows
    (layoutkit/pipelines/line_items.py). With `linker` (a relation-extraction pipeline) the JSON gains `pairs`: key
    -> value links between each page's predicted entities, which also group the line items with
    `line_item_grouping` "relations".

    `settings` are predict.py's and the service's shared flags (OCR, post-processing, field schema, precision);
    `batch_size` windows go through the model at once; `words_pages` (the words of each page, or None for OCR) came
    from `words_source` (named in errors).

    `pages` holds images, or dicts from `documents.pdf_page_inputs` (a PDF page: its image and, where its text
    layer was taken, its words). Each page of the JSON says where its words came from (`words_source`: given,
    pdf_text, pdf_invisible_text, ocr:ENGINE), for a PDF page why (`route`), and its `warnings` (each naming the
    file and page).

    The document's `warnings` list what is readable but almost surely wrong, `{"page", "message"}` each, with the
    dataset builder's messages (boxes that look normalised, given words without visible text, a page without text,
    a text layer not used). `checks`, `review_status` ("auto" or "review") and `review_reasons` come from
    `review.assess_document`."""
    result = {"model": settings.model_name_or_path, "source": str(source) if source else None, "status": "ok",
              "warnings": [], "pages": [], "fields": {}, "line_items": [], "entities": [], "words": []}
    drawings = []
    call = dict(ocr_engine=settings.ocr_engine, ocr_lang=settings.ocr_lang, ocr_config=settings.ocr_config,
                ocr_options=settings.ocr_options, window_batch_size=batch_size,
                mixed_precision=settings.mixed_precision, rules=settings.rule_config, return_words=True, draw=draw)
    for number, page_input in enumerate(pages, start=1):
        # A page is an image, or (a PDF page, documents.pdf_page_inputs) a dict with its image and, when its text
        # layer was taken, its words ("words_source" pdf_text / pdf_invisible_text; None: read by OCR); either may
        # come as (page, future words) when OCR reads it ahead of the model (read_ahead.py).
        page_input, ocr_ahead = page_input if isinstance(page_input, tuple) else (page_input, None)
        page_input = page_input if isinstance(page_input, dict) else {"image": page_input}
        image = page_input["image"]
        if words_pages is not None:
            if number > len(words_pages):
                raise DocumentError(f"{words_source}: no words for page {number} of {source}")
            page_words = words_pages[number - 1]
            inputs = {"image": image, "words": page_words["words"], "boxes": page_words["boxes"],
                      "segment_boxes": page_words.get("segment_boxes"), "words_source": "given"}
        else:
            inputs = page_input  # a pipeline input: with words (text layer) or without (OCR)
        try:
            # Words read ahead: the pipeline takes them as if its engine had read the page itself.
            page_call = call if ocr_ahead is None else {**call, "ocr_engine": ocr_ahead.result()}
            with collect_warnings() as messages:
                output = extractor(inputs, **page_call)
        except OcrError as error:
            raise DocumentError(f"{source}: OCR failed on page {number}: {error}") from None
        except ValueError as error:
            raise DocumentError(f"{source or words_source}: page {number}: {error}") from None
        page = {"page": number, "width": output["width"], "height": output["height"], "num_words": len(output["words"]),
                # The pipeline says where the words came from (an extractor that does not: what the input said).
                "words_source": output.get("words_source", inputs.get("words_source"))}
        if page_input.get("route"):
            page["route"] = page_input["route"]
        if page_input.get("dropped_chars"):
            page["dropped_chars"] = page_input["dropped_chars"]
        warnings = list(page_input.get("warnings") or ())
        if not output["words"]:
            warnings.append(f"{source or words_source}: page {number}: no text found on this page")
        if warnings:
            page["warnings"] = warnings
        result["warnings"].extend({"page": number, "message": message} for message in [*warnings, *messages])
        result["pages"].append(page)
        for entity in output["entities"]:
            result["entities"].append({**entity, "score": round(entity["score"], 4), "page": number})
        for word in output["words"]:
            result["words"].append({**word, "page": number})
        if linker is not None:
            pairs = link_entities(linker, image, output)
            result.setdefault("pairs", []).extend({**pair, "page": number} for pair in pairs)
        if draw:
            drawings.append(output["image"])
    if not result["pages"]:
        raise DocumentError(f"{source}: no pages")
    if not result["words"]:
        raise DocumentError(
            f"{source}: no text found on any page (blank or unreadable scan, or the OCR language "
            f"{settings.ocr_lang or 'eng'!r} does not match)"
        )
    # Rows of the item table: by the row rule, or (line_item_grouping "relations") by the relation model's links.
    by_links = line_item_grouping == "relations" and result.get("pairs")
    links = links_from_pairs(result["entities"], result["pairs"]) if by_links else None
    # Typed fields with calibrated scores, line items, cross-field checks and the review decision (review.py).
    trust = trust_settings(getattr(getattr(extractor, "model", None), "config", None))
    words_source = document_words_source(page["words_source"] for page in result["pages"])
    result.update(assess_document(result["entities"], settings.field_schema, trust, links=links,
                                  words_source=words_source))
    return result, drawings


def link_entities(linker, image, output: dict) -> list[dict]:
    """Key -> value pairs between a page's predicted entities, on the same words (docs/relations.md)."""
    entities = [{"start": e["start"], "end": e["end"], "label": e["entity_group"]} for e in output["entities"]]
    return linker({"image": image, "words": [w["text"] for w in output["words"]],
                   "boxes": [w["box"] for w in output["words"]], "entities": entities})
