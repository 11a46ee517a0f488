"""LayoutLMv3's image objectives for pretraining, built without a pretrained image tokenizer: masked image modelling
as masked patch regression (MIM) and word-patch alignment (WPA), beside the whole-word masked language modelling of
masked_lm.py.

The LayoutLMv3 paper predicts the discrete codes of a pretrained DiT/dVAE image tokenizer for each masked patch.
No such tokenizer is available offline and a from-scratch one would be a second model to train and trust, so the
masked patches' pixels are regressed instead, as MAE and SimMIM do:

- Masking (`blockwise_patch_mask`): `mim_probability` of the page's patches (40% by default, as in the paper) are
  masked blockwise like BEiT/LayoutLMv3 (rectangles of at least 16 patches, aspect ratio 0.3-3.3), not one by one:
  a single hidden patch is trivially filled in from its neighbours, a hidden block is not.
- Hiding: the masked patches' embeddings (the patch projection's output, before the position embeddings are added)
  are replaced by one learned mask embedding through a forward hook on `LayoutLMv3Model.patch_embed`, as BEiT does.
  The pixels are untouched, so the regression target is exact and nothing of the masked patch leaks through.
- MIM (`patch_targets`, `MaskedPatchHead`): a linear layer maps each visual token's output to its patch's pixels
  (16x16x3 values), normalised per patch (zero mean, unit variance: MAE's `norm_pix_loss`, which learns the shapes
  on the page rather than its brightness); mean squared error over the masked patches only.
- WPA (`word_patch_labels`, `WordPatchAlignmentHead`): for every word none of whose tokens the masked-LM objective
  chose, predict from its first token's output whether the image patches under its box are masked (binary cross
  entropy). A word whose box straddles masked and unmasked patches has no clean answer and is left out, as are the
  masked-LM targets (their text is hidden, so "is the image under it hidden" would be guessable from the text
  side alone).

The heads and the mask embedding sit beside `mlm_head`, outside the encoder's prefix (`layoutlmv3.`), so
`AutoModelForTokenClassification.from_pretrained(OUT)` keeps the encoder and drops them like the masked-LM head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import MaskedLMOutput

from ..pipelines.encoding import IGNORE_INDEX
from .masked_lm import LayoutMaskedLMMixin, WholeWordMaskCollator

IMAGE_OBJECTIVES = ("mim", "wpa")
MIN_BLOCK_PATCHES = 16  # BEiT's smallest masked block
BLOCK_ASPECT_RATIO = 0.3  # blocks between 0.3 and 1/0.3 as wide as tall
BLOCK_ATTEMPTS = 10  # tries at placing one block before the mask is left as it is


def blockwise_patch_mask(height: int, width: int, num_masked: int,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """A (height, width) boolean mask with up to `num_masked` patches masked in rectangular blocks (BEiT's
    MaskingGenerator). Blocks may overlap; a block counts only its newly masked patches and may not add more than
    are still wanted, so the mask stops at `num_masked` or a little short of it when no block of at least
    `MIN_BLOCK_PATCHES` fits the remainder (the remainder then stays visible). Draws from `generator` (default:
    torch's global one)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    min_block = min(MIN_BLOCK_PATCHES, num_masked)
    log_ratios = (math.log(BLOCK_ASPECT_RATIO), math.log(1 / BLOCK_ASPECT_RATIO))
    masked = 0
    while masked < num_masked:
        wanted = num_masked - masked
        added = 0
        for _ in range(BLOCK_ATTEMPTS):
            area = min_block + torch.rand((), generator=generator).item() * max(wanted - min_block, 0)
            log_ratio = log_ratios[0] + torch.rand((), generator=generator).item() * (log_ratios[1] - log_ratios[0])
            ratio = math.exp(log_ratio)
            block_height = min(height, max(1, round(math.sqrt(area * ratio))))
            block_width = min(width, max(1, round(math.sqrt(area / ratio))))
            top = int(torch.randint(height - block_height + 1, (), generator=generator))
            left = int(torch.randint(width - block_width + 1, (), generator=generator))
            block = mask[top: top + block_height, left: left + block_width]
            new = int((~block).sum())
            if 0 < new <= wanted:
                block.fill_(True)
                added = new
                break
        if not added:
            break
        masked += added
    return mask


def patch_targets(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(batch, patches, patch_size * patch_size * channels): each patch's pixels, in the patch embedding's order
    (rows of patches top to bottom, left to right), normalised to zero mean and unit variance within the patch."""
    batch, channels, height, width = pixel_values.shape
    rows, columns = height // patch_size, width // patch_size
    patches = pixel_values[:, :, : rows * patch_size, : columns * patch_size].float()
    patches = patches.reshape(batch, channels, rows, patch_size, columns, patch_size)
    patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * columns, -1)
    mean, variance = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
    return (patches - mean) / (variance + 1e-6).sqrt()


def word_patch_labels(bbox: torch.Tensor, word_ids: torch.Tensor, mlm_labels: torch.Tensor,
                      image_mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """WPA targets, (batch, tokens): on the first token of each word that the masked-LM objective left alone, 1
    when every patch under the word's box (0-1000 page coordinates) is masked, 0 when none is; -100 everywhere else
    (other tokens, masked-LM words, words over both masked and unmasked patches)."""
    rows, columns = grid
    batch, length = word_ids.shape
    # Whole words: a word is a masked-LM word when any of its tokens is a target.
    word_count = int(word_ids.max().clamp(min=0)) + 1
    mlm_words = torch.zeros(batch, word_count + 1, dtype=torch.bool)
    mlm_words.scatter_(1, torch.where(mlm_labels != IGNORE_INDEX, word_ids, word_count).clamp(min=0), True)
    previous = torch.cat([torch.full((batch, 1), -1, dtype=word_ids.dtype), word_ids[:, :-1]], dim=1)
    first_tokens = (word_ids >= 0) & (word_ids != previous)
    eligible = first_tokens & ~mlm_words.gather(1, word_ids.clamp(min=0))

    # The patches a box covers: [left, right) x [top, bottom), at least one patch each way.
    x0 = (bbox[..., 0] * columns // 1000).clamp(0, columns - 1)
    y0 = (bbox[..., 1] * rows // 1000).clamp(0, rows - 1)
    x1 = torch.maximum(-(-bbox[..., 2] * columns // 1000), x0 + 1).clamp(max=columns)
    y1 = torch.maximum(-(-bbox[..., 3] * rows // 1000), y0 + 1).clamp(max=rows)
    # Masked patches per box from the mask's summed-area table (one zero row and column in front).
    table = torch.zeros(batch, rows + 1, columns + 1, dtype=torch.long)
    table[:, 1:, 1:] = image_mask.view(batch, rows, columns).long().cumsum(1).cumsum(2)

    def corner(y, x):
        return table.view(batch, -1).gather(1, y * (columns + 1) + x)

    masked = corner(y1, x1) - corner(y0, x1) - corner(y1, x0) + corner(y0, x0)
    area = (y1 - y0) * (x1 - x0)
    labels = torch.full_like(word_ids, IGNORE_INDEX)
    labels[eligible & (masked == area)] = 1
    labels[eligible & (masked == 0)] = 0
    return labels


class ImageMaskCollator(WholeWordMaskCollator):
    """WholeWordMaskCollator plus LayoutLMv3's image masking: `image_mask` (batch, patches), `mim_probability` of
    each page's patches masked blockwise, and with `word_patch_alignment` the WPA targets `wpa_labels` (batch,
    tokens). The patch grid is read from the batch's `pixel_values` and the model's `patch_size`."""

    def __init__(self, pad_token_id: int, mask_token_id: int, vocab_size: int, mlm_probability: float = 0.15,
                 pad_to_multiple_of: int | None = 8, image_input: str | None = "pixel_values", patch_size: int = 16,
                 mim_probability: float = 0.4, word_patch_alignment: bool = True, seed: int = 0):
        super().__init__(pad_token_id, mask_token_id, vocab_size, mlm_probability, pad_to_multiple_of, image_input,
                         seed)
        self.patch_size, self.mim_probability = patch_size, mim_probability
        self.word_patch_alignment = word_patch_alignment

    def draw_masks(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> None:
        super().draw_masks(batch, generator)
        pixels = batch[self.image_input]
        grid = (pixels.shape[2] // self.patch_size, pixels.shape[3] // self.patch_size)
        num_masked = round(grid[0] * grid[1] * self.mim_probability)
        batch["image_mask"] = torch.stack([blockwise_patch_mask(*grid, num_masked, generator).flatten()
                                           for _ in pixels])
        if self.word_patch_alignment:
            batch["wpa_labels"] = word_patch_labels(batch["bbox"], batch["word_ids"], batch["labels"],
                                                    batch["image_mask"], grid)


class MaskedPatchHead(nn.Module):
    """The learned embedding that stands in for a masked patch, and a linear layer from a visual token's output to
    its patch's normalised pixels (SimMIM's head: a small head keeps the work in the encoder)."""

    def __init__(self, config):
        super().__init__()
        self.mask_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.decoder = nn.Linear(config.hidden_size, config.patch_size ** 2 * config.num_channels)

    def hide(self, patch_embeddings: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        if patch_embeddings.shape[1] != image_mask.shape[1]:
            raise ValueError(f"the image mask covers {image_mask.shape[1]} patches but the page has "
                             f"{patch_embeddings.shape[1]}: build the mask from the batch's pixel_values and the "
                             "model's patch_size (ImageMaskCollator does)")
        return torch.where(image_mask.unsqueeze(-1), self.mask_embedding.to(patch_embeddings.dtype), patch_embeddings)

    def forward(self, patch_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(patch_states)


class WordPatchAlignmentHead(nn.Module):
    """dense + GELU + LayerNorm, then one logit: is the image under this word masked."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, text_states: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layer_norm(nn.functional.gelu(self.dense(text_states)))).squeeze(-1)


@dataclass
class LayoutPretrainingOutput(MaskedLMOutput):
    """`loss` is the sum of the objectives' losses; each is also given alone (None when not computed)."""

    mlm_loss: torch.FloatTensor | None = None
    mim_loss: torch.FloatTensor | None = None
    wpa_loss: torch.FloatTensor | None = None
    wpa_logits: torch.FloatTensor | None = None


class ImageObjectivesMixin(LayoutMaskedLMMixin):
    """LayoutLMv3 with the masked-LM head plus `mim_head` (the mask embedding and the pixel regression) and, with
    WPA, `wpa_head`; mixed in by `masked_lm_class(config, image_objectives)`. Without `image_mask` (inference, or
    a batch of the plain masked-LM collator) it is the masked-LM model."""

    image_objectives: tuple[str, ...] = IMAGE_OBJECTIVES

    def add_objective_heads(self, config) -> None:
        self.mim_head = MaskedPatchHead(config)
        if "wpa" in self.image_objectives:
            self.wpa_head = WordPatchAlignmentHead(config)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MaskedPatchHead):
            init.normal_(module.mask_embedding, std=self.config.initializer_range)

    def forward(self, input_ids=None, bbox=None, attention_mask=None, labels=None, pixel_values=None,
                image_mask=None, wpa_labels=None, **inputs) -> LayoutPretrainingOutput:
        encoder = getattr(self, self.base_model_prefix)
        hiding = None
        if image_mask is not None:
            # The hook's return value replaces the patch embeddings; the position embeddings are added after it,
            # so the mask embedding still says where the hidden patch is.
            hiding = encoder.patch_embed.register_forward_hook(
                lambda module, args, patch_embeddings: self.mim_head.hide(patch_embeddings, image_mask))
        try:
            outputs = encoder(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask,
                              pixel_values=pixel_values, **inputs)
        finally:
            if hiding is not None:
                hiding.remove()
        text_length = input_ids.shape[1]
        # The sequence is the text tokens, the page's [CLS]-like visual token, then one token per patch.
        text_states, patch_states = outputs[0][:, :text_length], outputs[0][:, text_length + 1:]
        logits = self.mlm_head(text_states, encoder.get_input_embeddings().weight)

        losses = {}
        if labels is not None:
            losses["mlm_loss"] = nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]).float(),
                                                             labels.view(-1), ignore_index=IGNORE_INDEX)
        if image_mask is not None and "mim" in self.image_objectives:
            predictions = self.mim_head(patch_states[image_mask]).float()
            targets = patch_targets(pixel_values, self.config.patch_size)[image_mask]
            losses["mim_loss"] = (nn.functional.mse_loss(predictions, targets) if len(targets)
                                  else predictions.sum() * 0)
        wpa_logits = None
        if wpa_labels is not None and "wpa" in self.image_objectives:
            wpa_logits = self.wpa_head(text_states)
            scored = wpa_labels != IGNORE_INDEX
            # A batch may have no word left to score (every word masked-LM or over a block's edge): a zero loss
            # that still touches the head, so every parameter gets a gradient on every step.
            losses["wpa_loss"] = (nn.functional.binary_cross_entropy_with_logits(
                wpa_logits[scored].float(), wpa_labels[scored].float()) if scored.any() else wpa_logits.sum() * 0)
        loss = sum(losses.values()) if losses else None
        return LayoutPretrainingOutput(loss=loss, logits=logits, wpa_logits=wpa_logits, **losses)
