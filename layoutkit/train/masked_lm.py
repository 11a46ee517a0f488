"""Masked language modelling with layout, for every LayoutLM family: the model (`MaskedLayoutModel`) and the
whole-word masking collator (`WholeWordMaskCollator`).

LayoutLM v1 has `LayoutLMForMaskedLM` in transformers and uses it. LiLT, LayoutLMv2/LayoutXLM and LayoutLMv3 have
no *ForMaskedLM there: their base model gets the BERT/RoBERTa MLM head (dense + GELU + LayerNorm, then a decoder
that IS the word-embedding matrix plus a bias). The base model sits under the family's `base_model_prefix` (`lilt.`,
`layoutlmv2.`, `layoutlmv3.`), the attribute name the family's *ForTokenClassification / *ForSequenceClassification
use, so `AutoModelForTokenClassification.from_pretrained(OUT)` loads every encoder weight and only its new
classifier is initialised (the `mlm_head.` weights are left out as unexpected keys).

The decoder reads the embedding matrix in `forward` (no separate weight to tie), so saving and loading cannot untie
it. Boxes (and, for v2/v3, the page image) go in unmasked: the model predicts the masked words from the
surrounding words, their positions and the page.
"""

from __future__ import annotations

import hashlib
import inspect

import torch
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

from ..pipelines.encoding import IGNORE_INDEX, LayoutCollator


class LayoutMaskedLMHead(nn.Module):
    """BERT's/RoBERTa's MLM head: dense + GELU + LayerNorm, then the word embeddings' transpose plus a bias."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        hidden = self.layer_norm(nn.functional.gelu(self.dense(hidden_states)))
        return nn.functional.linear(hidden, word_embeddings, self.bias)


class LayoutMaskedLMMixin:
    """A family's base model under its `base_model_prefix` plus `LayoutMaskedLMHead` (`mlm_head`); mixed into the
    family's PreTrainedModel by `masked_lm_class`."""

    def __init__(self, config):
        super().__init__(config)
        # Built as the family's token classifier builds it (LiLT's without its pooler), so the two load each other.
        takes_pooling = "add_pooling_layer" in inspect.signature(self.base_model_class.__init__).parameters
        encoder = self.base_model_class(config, **({"add_pooling_layer": False} if takes_pooling else {}))
        setattr(self, self.base_model_prefix, encoder)
        self.mlm_head = LayoutMaskedLMHead(config)
        self.add_objective_heads(config)
        self.post_init()
        # The pooler (the first token's tanh projection, for classification) is not part of this objective.
        for name, parameter in self.named_parameters():
            if ".pooler." in name:
                parameter.requires_grad_(False)

    def add_objective_heads(self, config) -> None:
        """Further objectives' heads, built before the weights are initialised (image_objectives.py's)."""

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LayoutMaskedLMHead):
            with torch.no_grad():
                module.bias.zero_()

    def forward(self, input_ids=None, bbox=None, attention_mask=None, labels=None, **inputs) -> MaskedLMOutput:
        encoder = getattr(self, self.base_model_prefix)
        outputs = encoder(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, **inputs)
        # LayoutLMv2/v3 append the page's visual tokens after the text tokens: only the text is predicted.
        text_states = outputs[0][:, : input_ids.shape[1]]
        logits = self.mlm_head(text_states, encoder.get_input_embeddings().weight)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.view(-1),
                                               ignore_index=IGNORE_INDEX)
        return MaskedLMOutput(loss=loss, logits=logits)


_CLASSES: dict[tuple, type] = {}


def masked_lm_class(config, image_objectives: tuple[str, ...] = ()) -> type:
    """The masked-LM model class of `config`'s family: LayoutLMForMaskedLM for v1, else the family's base model
    with `LayoutMaskedLMHead` (a class named e.g. `LiltForLayoutMaskedLM`, built once per family). With
    `image_objectives` ("mim", "wpa"; LayoutLMv3 only) the class also has their heads (image_objectives.py), e.g.
    `LayoutLMv3ForLayoutPretraining`."""
    from transformers import LayoutLMForMaskedLM
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    image_objectives = tuple(image_objectives)
    if image_objectives and config.model_type != "layoutlmv3":
        raise ValueError(f"the image objectives {image_objectives} are LayoutLMv3's; {config.model_type} has no "
                         "image patches to mask")
    if config.model_type == "layoutlm":
        return LayoutLMForMaskedLM
    base_class = MODEL_MAPPING[type(config)]
    key = (base_class, image_objectives)
    if key not in _CLASSES:
        pretrained_class = base_class.__mro__[1]  # e.g. LiltPreTrainedModel: config class, prefix, weight init
        family = base_class.__name__.removesuffix("Model")
        if image_objectives:
            from .image_objectives import ImageObjectivesMixin

            _CLASSES[key] = type(f"{family}ForLayoutPretraining", (ImageObjectivesMixin, pretrained_class),
                                 {"base_model_class": base_class, "image_objectives": image_objectives,
                                  "__module__": __name__})
        else:
            _CLASSES[key] = type(f"{family}ForLayoutMaskedLM", (LayoutMaskedLMMixin, pretrained_class),
                                 {"base_model_class": base_class, "__module__": __name__})
    return _CLASSES[key]


class MaskedLayoutModel:
    """What the driver loads the model with (`from_pretrained` / `from_config`, as on an Auto class);
    `image_objectives` as in `masked_lm_class`."""

    @staticmethod
    def from_pretrained(name_or_path, config, image_objectives: tuple[str, ...] = (), **kwargs):
        return masked_lm_class(config, image_objectives).from_pretrained(name_or_path, config=config, **kwargs)

    @staticmethod
    def from_config(config, image_objectives: tuple[str, ...] = (), **kwargs):
        kwargs.pop("trust_remote_code", None)
        return masked_lm_class(config, image_objectives)(config)


class WholeWordMaskCollator(LayoutCollator):
    """LayoutCollator plus whole-word masking: in each window `mlm_probability` of its words (at least one) are
    chosen, and all their tokens become targets (`labels`); each chosen word's tokens are then replaced by the mask
    token (80% of words), by random tokens (10%) or kept (10%), as in BERT. Boxes and page pixels are kept.

    Words are the dataset's words (`word_ids`), not the tokenizer's pieces, so a word is never half visible. The
    draws come from a generator seeded by `seed`, the epoch (`set_epoch`) and the batch's own tokens and boxes
    (`batch_generator`), not from torch's global one: a batch is masked the same way whenever it is collated, so a
    resumed run re-collates the batch the dataloader had fetched before the checkpoint exactly as the uninterrupted
    run did, and the global random state the checkpoint restores is the training step's (dropout) alone."""

    def __init__(self, pad_token_id: int, mask_token_id: int, vocab_size: int, mlm_probability: float = 0.15,
                 pad_to_multiple_of: int | None = 8, image_input: str | None = None, seed: int = 0):
        super().__init__(pad_token_id, pad_to_multiple_of, image_input)
        self.mask_token_id, self.vocab_size, self.mlm_probability = mask_token_id, vocab_size, mlm_probability
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Mask every epoch anew (dynamic masking): the training loop calls this with the dataloader's set_epoch."""
        self.epoch = epoch

    def batch_generator(self, batch: dict[str, torch.Tensor]) -> torch.Generator:
        """The generator the batch's masks are drawn from: a function of the seed, the epoch and the batch's
        unmasked tokens and boxes (two copies of a page in one batch still get different masks: rows draw in
        turn)."""
        digest = hashlib.blake2b(f"{self.seed}/{self.epoch}".encode(), digest_size=8)
        for name in ("input_ids", "bbox"):
            digest.update(batch[name].numpy().tobytes())
        return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__([{k: v for k, v in f.items() if k != "labels"} for f in features])
        self.draw_masks(batch, self.batch_generator(batch))
        return batch

    def draw_masks(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> None:
        """Mask the batch's words in place: `input_ids` masked, `labels` the chosen words' tokens."""
        input_ids, word_ids = batch["input_ids"], batch["word_ids"]
        chosen = torch.zeros_like(input_ids, dtype=torch.bool)
        for row in range(len(input_ids)):
            words = torch.unique(word_ids[row][word_ids[row] >= 0])
            if len(words):
                count = max(1, round(len(words) * self.mlm_probability))
                picked = words[torch.randperm(len(words), generator=generator)[:count]]
                chosen[row] = torch.isin(word_ids[row], picked)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        # One draw per word, so all tokens of a word get the same treatment.
        draws = torch.rand(len(input_ids), int(word_ids.max().clamp(min=0)) + 1, generator=generator)
        token_draws = draws.gather(1, word_ids.clamp(min=0))
        masked = input_ids.clone()
        masked[chosen & (token_draws < 0.8)] = self.mask_token_id
        random_tokens = chosen & (token_draws >= 0.8) & (token_draws < 0.9)
        masked[random_tokens] = torch.randint(self.vocab_size, (int(random_tokens.sum()),), generator=generator)
        batch["input_ids"], batch["labels"] = masked, labels
