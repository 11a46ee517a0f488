"""Build a from-scratch starting point: a model config plus a tokenizer (and image processor) trained on
your own words, saved as a folder that `--config_name`/`--tokenizer_name` accept.

Used by the offline quick start and the tests, where no pretrained checkpoint can be downloaded.

    python -m layoutkit.apps.scratch --model_type layoutlmv3 --dataset_path data/invoices --output_dir runs/scratch-v3

`layoutxlm` is a LayoutLMv2 config with an XLM-RoBERTa-style SentencePiece (Unigram) tokenizer and a
LayoutXLM processor, like `microsoft/layoutxlm-base`. LayoutLMv2/LayoutXLM `tiny` and `small` also get a
small detectron2 visual backbone (ResNet-18 FPN with few channels) instead of the ResNeXt-101 FPN of the
published checkpoints, which `base` keeps (see docs/layoutlmv2.md for the measured sizes and speeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    LayoutLMConfig,
    LayoutLMv2Config,
    LayoutLMv2ImageProcessor,
    LayoutLMv2Processor,
    LayoutLMv3Config,
    LayoutLMv3ImageProcessor,
    LayoutLMv3Processor,
    LayoutXLMProcessor,
    LayoutXLMTokenizer,
    LiltConfig,
)

BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
XLM_SPECIAL_TOKENS = ROBERTA_SPECIAL_TOKENS  # XLM-RoBERTa keeps RoBERTa's special token ids
SIZES = {
    # name: hidden, layers, heads, intermediate
    "tiny": (32, 2, 2, 64),
    "small": (128, 4, 4, 512),
    "base": (768, 12, 12, 3072),
}
# detectron2 visual backbone of LayoutLMv2/LayoutXLM per size: ResNet depth, FPN channels. `base` keeps
# transformers' default, the ResNeXt-101 32x8d FPN (256 channels) of the published checkpoints.
DETECTRON2_BACKBONES = {
    "tiny": (18, 32),
    "small": (18, 64),
}
MODEL_TYPES = ["layoutlm", "layoutlmv2", "layoutlmv3", "layoutxlm", "lilt"]

# The tokenizer trainers' progress bars only on a terminal (in a log they leave blank lines).
SHOW_PROGRESS = sys.stderr.isatty()


def _train_wordpiece(words: Iterable[str], vocab_size: int, folder: str) -> None:
    """A BERT-style uncased WordPiece vocab.txt (LayoutLM v1 and v2 use BERT's tokenizer)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIAL_TOKENS,
                                        show_progress=SHOW_PROGRESS)
    tokenizer.train_from_iterator(words, trainer)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as handle:
        handle.writelines(token + "\n" for token, _ in vocab)


def _train_byte_bpe(words: Iterable[str], vocab_size: int, folder: str) -> None:
    """A RoBERTa-style byte-level BPE vocab.json + merges.txt (LayoutLMv3 uses RoBERTa's tokenizer)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=ROBERTA_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=SHOW_PROGRESS,
    )
    tokenizer.train_from_iterator(words, trainer)
    tokenizer.model.save(folder)


def _train_unigram(words: Iterable[str], vocab_size: int) -> list[tuple[str, float]]:
    """An XLM-RoBERTa-style SentencePiece Unigram vocabulary, (piece, log-probability) pairs with the special
    tokens at XLM-R's ids (<s> 0, <pad> 1, </s> 2, <unk> 3). LayoutXLM uses XLM-RoBERTa's tokenizer."""
    tokenizer = Tokenizer(models.Unigram())
    # The same pre-tokenization as LayoutXLMTokenizer: words start with the metaspace "▁".
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=XLM_SPECIAL_TOKENS, unk_token="<unk>", show_progress=SHOW_PROGRESS)
    tokenizer.train_from_iterator(words, trainer)
    vocab = [(piece, float(score)) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]
    if [piece for piece, _ in vocab[:4]] != XLM_SPECIAL_TOKENS[:4]:
        raise RuntimeError(f"Unigram trainer put the special tokens at unexpected ids: {vocab[:5]}")
    return vocab


def _split_2d_position_embedding(hidden: int) -> tuple[int, int]:
    """(coordinate_size, shape_size) with 4 * coordinate_size + 2 * shape_size == hidden.

    LayoutLMv2/v3 concatenate four coordinate embeddings (x0, y0, x1, y1) and two shape embeddings (w, h) and
    add the result to the hidden_size-wide token embeddings."""
    coordinate_size = shape_size = hidden // 6
    coordinate_size += (hidden - 4 * coordinate_size - 2 * shape_size) // 4
    shape_size = (hidden - 4 * coordinate_size) // 2
    if 4 * coordinate_size + 2 * shape_size != hidden:
        raise ValueError(f"hidden size {hidden} cannot be split into 4 coordinate + 2 shape embeddings")
    return coordinate_size, shape_size


def _layoutlmv2_config(size: str, vocab_size: int, tokenizer, common: dict) -> LayoutLMv2Config:
    """LayoutLMv2 (and LayoutXLM) config: 2D position widths that add up to hidden_size and, below `base`, a
    small detectron2 backbone (a ResNet-18 FPN: 11M parameters against the ResNeXt-101 FPN's 90M)."""
    coordinate_size, shape_size = _split_2d_position_embedding(common["hidden_size"])
    extra = {}
    if size in DETECTRON2_BACKBONES:
        depth, fpn_channels = DETECTRON2_BACKBONES[size]
        detectron2_args = dict(LayoutLMv2Config().detectron2_config_args)
        detectron2_args.update({
            "MODEL.RESNETS.DEPTH": depth,
            # Plain ResNet blocks (ResNet-18/34 need 64 res2 channels, one group, no stride in 1x1).
            "MODEL.RESNETS.NUM_GROUPS": 1,
            "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
            "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
            "MODEL.FPN.OUT_CHANNELS": fpn_channels,
            # Only the backbone is kept by LayoutLMv2; no mask head to build and throw away.
            "MODEL.MASK_ON": False,
        })
        # The visual tokens are the pooled p2 FPN map: 7 x 7 positions of FPN-channel features.
        extra = dict(detectron2_config_args=detectron2_args, image_feature_pool_shape=[7, 7, fpn_channels])
    return LayoutLMv2Config(
        vocab_size=vocab_size,
        coordinate_size=coordinate_size,
        shape_size=shape_size,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
        **common,
    )


# LiLT's layout branch: six box embeddings of hidden // 6 side by side, projected back from hidden; a layout
# stream channel_shrink_ratio times narrower than the text stream, with as many heads.
LILT_CHANNEL_SHRINK_RATIO = 4
LILT_MAX_2D_POSITIONS = 1024  # box coordinates and widths/heights up to 1000 index this table


def lilt_hidden_size(hidden: int, heads: int, shrink: int = LILT_CHANNEL_SHRINK_RATIO) -> int:
    """The smallest width >= `hidden` LiLT's layout embeddings accept: divisible by 6 (six box embeddings
    concatenated must be `hidden` wide for the projection) and by heads * shrink (each layout head is
    head_size // shrink wide)."""
    step = math.lcm(6, heads * shrink)
    return -(-hidden // step) * step


def build_lilt_scratch(output_dir: str, words: Iterable[str], size: str, vocab_size: int,
                       max_position_embeddings: int) -> LiltConfig:
    """LiLT from scratch: a byte-level BPE tokenizer trained on `words`, saved as the LayoutLMv3 tokenizer the
    published LiLT checkpoint ships (words + boxes in, boxes placed per token), and a LiltConfig whose widths fit
    its layout embeddings (the tiny and small sizes are widened to the next valid width: 48 and 144)."""
    hidden, layers, heads, intermediate = SIZES[size]
    hidden = lilt_hidden_size(hidden, heads)
    with tempfile.TemporaryDirectory() as vocab_dir:
        _train_byte_bpe(words, vocab_size, vocab_dir)
        tokenizer = AutoTokenizer.from_pretrained(vocab_dir, tokenizer_type="layoutlmv3")
    tokenizer.save_pretrained(output_dir)
    return LiltConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position_embeddings,
        # RoBERTa-style: one token type, positions counted from pad_token_id + 1.
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        channel_shrink_ratio=LILT_CHANNEL_SHRINK_RATIO,
        max_2d_position_embeddings=LILT_MAX_2D_POSITIONS,
    )


def build_scratch_checkpoint(
    output_dir: str,
    model_type: str,
    words: Iterable[str],
    size: str = "small",
    vocab_size: int = 8000,
    max_position_embeddings: int = 514,
    image_size: int = 224,
) -> str:
    """Write config + tokenizer (+ image processor) for `model_type` to `output_dir` and return it.

    Never write vocab files and pass their paths to the tokenizer constructors: in transformers 5,
    `LayoutLMv3Tokenizer(vocab, merges)` and `LayoutLMv2Tokenizer(vocab_file=...)` silently build broken
    tokenizers. Writing the files to a folder and using `from_pretrained(folder)` is reliable.
    """
    hidden, layers, heads, intermediate = SIZES[size]
    os.makedirs(output_dir, exist_ok=True)
    if model_type == "lilt":
        config = build_lilt_scratch(output_dir, words, size, vocab_size, max_position_embeddings)
        config.save_pretrained(output_dir)
        return output_dir
    common = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position_embeddings,
    )
    with tempfile.TemporaryDirectory() as vocab_dir:
        if model_type == "layoutlmv3":
            _train_byte_bpe(words, vocab_size, vocab_dir)
            tokenizer = AutoTokenizer.from_pretrained(vocab_dir, tokenizer_type="layoutlmv3")
            coordinate_size, shape_size = _split_2d_position_embedding(hidden)
            config = LayoutLMv3Config(
                vocab_size=len(tokenizer),
                coordinate_size=coordinate_size,
                shape_size=shape_size,
                input_size=image_size,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **common,
            )
            image_processor = LayoutLMv3ImageProcessor(
                apply_ocr=False, size={"height": image_size, "width": image_size})
            LayoutLMv3Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(output_dir)
        elif model_type in ("layoutlm", "layoutlmv2"):
            _train_wordpiece(words, vocab_size, vocab_dir)
            tokenizer = AutoTokenizer.from_pretrained(vocab_dir, tokenizer_type=model_type, do_lower_case=True)
            if model_type == "layoutlm":
                config = LayoutLMConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **common)
                tokenizer.save_pretrained(output_dir)
            else:
                config = _layoutlmv2_config(size, len(tokenizer), tokenizer, common)
                image_processor = LayoutLMv2ImageProcessor(
                    apply_ocr=False, size={"height": image_size, "width": image_size})
                LayoutLMv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(output_dir)
        elif model_type == "layoutxlm":
            # A vocabulary (not a file path) is what LayoutXLMTokenizer's constructor takes in transformers 5;
            # save_pretrained writes tokenizer.json, which LayoutXLMTokenizer(Fast).from_pretrained reads.
            tokenizer = LayoutXLMTokenizer(vocab=_train_unigram(words, vocab_size))
            # LayoutXLM checkpoints report model_type "layoutlmv2": the processor makes them LayoutXLM.
            config = _layoutlmv2_config(size, len(tokenizer), tokenizer, common)
            config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
            image_processor = LayoutLMv2ImageProcessor(
                apply_ocr=False, size={"height": image_size, "width": image_size})
            LayoutXLMProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(output_dir)
        else:
            raise ValueError(
                f"model_type {model_type!r} has no from-scratch recipe; use one of {', '.join(MODEL_TYPES)}"
            )
    config.save_pretrained(output_dir)
    return output_dir


def dataset_words(dataset_path: str) -> Iterable[str]:
    """Every word of the training split of a dataset saved by `python -m dataset_loader`."""
    from datasets import load_from_disk

    train = load_from_disk(dataset_path)["train"]
    for batch in train.select_columns(["words"]).iter(batch_size=256):
        for words in batch["words"]:
            yield from words


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_type", choices=MODEL_TYPES, default="layoutlmv3")
    parser.add_argument("--dataset_path", required=True, help="a dataset saved by `python -m dataset_loader`")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--vocab_size", type=int, default=8000)
    args = parser.parse_args(argv)
    build_scratch_checkpoint(
        args.output_dir, args.model_type, dataset_words(args.dataset_path), args.size, args.vocab_size)
    print(f"from-scratch config and tokenizer written to {args.output_dir}")


if __name__ == "__main__":
    main()
