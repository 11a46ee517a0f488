"""A document's prediction JSON (the output format of predict.py and of the HTTP service's /v1/extract): the
pipeline run on each page, entities and words tagged with their page, typed fields over all pages."""

from __future__ import annotations

from pathlib import Path

from .documents import DocumentError
from .fields import extract_fields
from .line_items import group_line_items, links_from_pairs
from .ocr import OcrError
from .read_ahead import ReadWords


def predict_document(extractor, source: Path | None, pages, words_pages, args, linker=None) -> tuple[dict, list]:
    """Run the pipeline on each page; entities and words carry their 1-based page number. Returns the document's
    JSON and, with --draw, its pages with words and entities drawn. `line_items` are the item table's rows
    (layoutkit/line_items.py). With `linker` (a relation-extraction pipeline) the JSON gains `pairs`: key -> value
    links between each page's predicted entities, which also group the line items with `args.line_item_grouping`
    "relations".

    `args` carries the settings of predict.py's command line (the service builds the same): model_name_or_path,
    ocr_engine, ocr_lang, ocr_config, ocr_options, batch_size, mixed_precision, rule_config, draw, words_json,
    field_schema, line_item_grouping.

    A page is an image, or (image, future OCR result) when its words are being read ahead
    (`layoutkit.read_ahead`): the pipeline then takes those words as if it had read them itself."""
    result = {"model": args.model_name_or_path, "source": str(source) if source else None, "status": "ok",
              "pages": [], "fields": {}, "line_items": [], "entities": [], "words": []}
    drawings = []
    call = dict(ocr_engine=args.ocr_engine, ocr_lang=args.ocr_lang, ocr_config=args.ocr_config,
                ocr_options=args.ocr_options, window_batch_size=args.batch_size, mixed_precision=args.mixed_precision,
                rules=args.rule_config, return_words=True, draw=args.draw)
    for number, page_input in enumerate(pages, start=1):
        image, ocr_ahead = page_input if isinstance(page_input, tuple) else (page_input, None)
        page_call = call
        if words_pages is not None:
            if number > len(words_pages):
                raise DocumentError(f"{args.words_json}: no words for page {number} of {source}")
            page_words = words_pages[number - 1]
            inputs = {"image": image, "words": page_words["words"], "boxes": page_words["boxes"],
                      "segment_boxes": page_words.get("segment_boxes")}
        else:
            inputs = image
        try:
            if ocr_ahead is not None:
                page_call = {**call, "ocr_engine": ReadWords(ocr_ahead.result())}
            output = extractor(inputs, **page_call)
        except OcrError as error:
            raise DocumentError(f"{source}: OCR failed on page {number}: {error}") from None
        except ValueError as error:
            raise DocumentError(f"{source or args.words_json}: page {number}: {error}") from None
        page = {"page": number, "width": output["width"], "height": output["height"], "num_words": len(output["words"])}
        if not output["words"]:
            page["warning"] = "no text found on this page"
        result["pages"].append(page)
        for entity in output["entities"]:
            result["entities"].append({**entity, "score": round(entity["score"], 4), "page": number})
        for word in output["words"]:
            result["words"].append({**word, "page": number})
        if linker is not None:
            pairs = link_entities(linker, image, output)
            result.setdefault("pairs", []).extend({**pair, "page": number} for pair in pairs)
        if args.draw:
            drawings.append(output["image"])
    if not result["pages"]:
        raise DocumentError(f"{source}: no pages")
    if not result["words"]:
        raise DocumentError(
            f"{source}: no text found on any page (blank or unreadable scan, or the OCR language "
            f"{args.ocr_lang or 'eng'!r} does not match)"
        )
    result["fields"] = extract_fields(result["entities"], args.field_schema)
    # Rows of the item table: by the row rule, or (line_item_grouping "relations") by the relation model's links.
    by_links = args.line_item_grouping == "relations" and result.get("pairs")
    links = links_from_pairs(result["entities"], result["pairs"]) if by_links else None
    result["line_items"] = group_line_items(result["entities"], links=links)
    return result, drawings


def link_entities(linker, image, output: dict) -> list[dict]:
    """Key -> value pairs between a page's predicted entities, on the same words (docs/relations.md)."""
    entities = [{"start": e["start"], "end": e["end"], "label": e["entity_group"]} for e in output["entities"]]
    return linker({"image": image, "words": [w["text"] for w in output["words"]],
                   "boxes": [w["box"] for w in output["words"]], "entities": entities})
