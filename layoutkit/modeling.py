"""What each LayoutLM-family model type takes as input, and loading its processor.

Copied into saved checkpoints beside the custom pipelines: imports only transformers.

| model_type        | text + boxes | page image                       | tokenizer takes boxes |
|-------------------|--------------|----------------------------------|-----------------------|
| layoutlm (v1)     | yes          | no                               | no (BERT WordPiece)   |
| layoutlmv2 / XLM  | yes          | `image` (detectron2 ResNeXt-FPN) | yes                   |
| layoutlmv3        | yes          | `pixel_values` (patches)         | yes                   |

LayoutXLM checkpoints have `model_type: layoutlmv2` in their config and a LayoutXLM processor.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoProcessor


@dataclass(frozen=True)
class ModelFamily:
    model_type: str
    # Name of the page-image input of the model's forward(), None for text + layout only models.
    image_input: str | None
    tokenizer_takes_boxes: bool
    # Box of special tokens when the tokenizer does not place boxes itself (BERT-style [CLS] / [SEP]).
    cls_box: tuple[int, int, int, int] = (0, 0, 0, 0)
    sep_box: tuple[int, int, int, int] = (1000, 1000, 1000, 1000)


FAMILIES = {
    "layoutlm": ModelFamily("layoutlm", image_input=None, tokenizer_takes_boxes=False),
    "layoutlmv2": ModelFamily("layoutlmv2", image_input="image", tokenizer_takes_boxes=True),
    "layoutlmv3": ModelFamily("layoutlmv3", image_input="pixel_values", tokenizer_takes_boxes=True),
}


def model_family(config) -> ModelFamily:
    """The family of a model config (LayoutXLM reports itself as layoutlmv2; a relation model's config wraps its
    encoder's, `encoder`)."""
    encoder = getattr(config, "encoder", None)
    if getattr(encoder, "model_type", None) is not None:
        config = encoder
    model_type = getattr(config, "model_type", None)
    if model_type == "layoutxlm":
        model_type = "layoutlmv2"
    if model_type not in FAMILIES:
        raise ValueError(
            f"model type {model_type!r} is not a LayoutLM-family model; supported: layoutlm, layoutlmv2, "
            "layoutxlm, layoutlmv3"
        )
    family = FAMILIES[model_type]
    if family.image_input == "pixel_values" and not getattr(config, "visual_embed", True):
        # A LayoutLMv3 built with visual_embed=False reads text and layout only.
        return ModelFamily(family.model_type, None, family.tokenizer_takes_boxes)
    return family


def load_processing(name_or_path: str, **kwargs):
    """Load (tokenizer, image_processor or None) for a checkpoint or processor folder.

    `AutoProcessor` returns a processor for v2/v3/XLM and a bare tokenizer for v1. OCR inside the image
    processor is switched off: words and boxes always come from the annotations or our own OCR step, so
    training and inference see the same words.
    """
    processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
    tokenizer = getattr(processor, "tokenizer", processor)
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None and hasattr(image_processor, "apply_ocr"):
        image_processor.apply_ocr = False
    return tokenizer, image_processor, processor
