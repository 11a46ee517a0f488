"""What each LayoutLM-family model type takes as input, and loading its processor.

Copied into saved checkpoints beside the custom pipelines: imports only transformers.

| model_type        | text + boxes | page image                       | tokenizer takes boxes |
|-------------------|--------------|----------------------------------|-----------------------|
| layoutlm (v1)     | yes          | no                               | no (BERT WordPiece)   |
| layoutlmv2 / XLM  | yes          | `image` (detectron2 ResNeXt-FPN) | yes                   |
| layoutlmv3        | yes          | `pixel_values` (patches)         | yes                   |
| lilt              | yes          | no                               | its tokenizer decides |

LayoutXLM checkpoints have `model_type: layoutlmv2` in their config and a LayoutXLM processor.
LiLT (a layout branch beside a RoBERTa text encoder) has no processor class in transformers: its published
checkpoint (`SCUT-DLVCLab/lilt-roberta-en-base`) ships a LayoutLMv3 tokenizer, which takes words and boxes;
a LiLT combined with another RoBERTa may come with a plain RoBERTa tokenizer, which takes words only.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import transformers
from transformers import AutoProcessor, AutoTokenizer


@dataclass(frozen=True)
class ModelFamily:
    model_type: str
    # Name of the page-image input of the model's forward(), None for text + layout only models.
    image_input: str | None
    # None: it depends on the tokenizer the checkpoint ships (see `tokenizer_takes_boxes`).
    tokenizer_takes_boxes: bool | None
    # Box of special tokens when the tokenizer does not place boxes itself (BERT-style [CLS] / [SEP]).
    cls_box: tuple[int, int, int, int] = (0, 0, 0, 0)
    sep_box: tuple[int, int, int, int] = (1000, 1000, 1000, 1000)


FAMILIES = {
    "layoutlm": ModelFamily("layoutlm", image_input=None, tokenizer_takes_boxes=False),
    "layoutlmv2": ModelFamily("layoutlmv2", image_input="image", tokenizer_takes_boxes=True),
    "layoutlmv3": ModelFamily("layoutlmv3", image_input="pixel_values", tokenizer_takes_boxes=True),
    # Special-token boxes as LiLT's published LayoutLMv3 tokenizer places them (cls and sep at 0,0,0,0).
    "lilt": ModelFamily("lilt", image_input=None, tokenizer_takes_boxes=None, sep_box=(0, 0, 0, 0)),
}
SUPPORTED = "layoutlm, layoutlmv2, layoutxlm, layoutlmv3, lilt"


def tokenizer_takes_boxes(tokenizer, family: ModelFamily) -> bool:
    """Whether `tokenizer(text=words, boxes=boxes)` places the boxes itself (LayoutLMv2/v3/XLM tokenizers)
    rather than taking split words only (BERT, RoBERTa): the family says so, or else the tokenizer's signature."""
    if family.tokenizer_takes_boxes is not None:
        return family.tokenizer_takes_boxes
    return "boxes" in inspect.signature(tokenizer.__call__).parameters


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
        raise ValueError(f"model type {model_type!r} is not a LayoutLM-family model; supported: {SUPPORTED}")
    family = FAMILIES[model_type]
    if family.image_input == "pixel_values" and not getattr(config, "visual_embed", True):
        # A LayoutLMv3 built with visual_embed=False reads text and layout only.
        return ModelFamily(family.model_type, None, family.tokenizer_takes_boxes)
    return family


def load_processing(name_or_path: str, **kwargs):
    """Load (tokenizer, image_processor or None) for a checkpoint or processor folder.

    `AutoProcessor` returns a processor for v2/v3/XLM and a bare tokenizer for v1 and LiLT. OCR inside the image
    processor is switched off: words and boxes always come from the annotations or our own OCR step, so
    training and inference see the same words.

    LiLT's published checkpoint names `LayoutLMv3Processor` in its tokenizer config but ships no image processor
    (LiLT reads no image): where the processor cannot be built for lack of one, its tokenizer alone is loaded.
    """
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        # Only the missing image-processor file of a text-only checkpoint is forgiven; anything else propagates.
        if "preprocessor_config.json" not in str(error):
            raise
        processor = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    tokenizer = getattr(processor, "tokenizer", processor)
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:
        image_processor = processor.image_processor = pil_image_processor(image_processor)
        if hasattr(image_processor, "apply_ocr"):
            image_processor.apply_ocr = False
    return tokenizer, image_processor, processor


def pil_image_processor(image_processor):
    """The PIL backend of `image_processor`, with the same settings.

    transformers picks the torchvision backend of an image processor whenever torchvision is installed
    (detectron2 needs it) and the PIL one otherwise; their resized pixels differ by a grey level here and there.
    Training, evaluation and the pipelines always use the PIL backend, so a model sees the same pixels
    whichever environment trained or serves it."""
    name = type(image_processor).__name__
    pil_class = getattr(transformers, name + "Pil", None) if not name.endswith("Pil") else None
    if pil_class is None:
        return image_processor
    return pil_class.from_dict(image_processor.to_dict())
