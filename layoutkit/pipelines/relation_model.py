"""Relation extraction (key -> value links) on a LayoutLM-family encoder.

Each entity (a set of words, gold in training, predicted at inference) is pooled from the encoder's token states
(its first token, or the mean of its tokens) and joined with an embedding of its type (and, with `box_features`,
its mean token box); a biaffine pair
classifier, as in the LayoutLMv2/LayoutXLM relation-extraction head, scores every head -> tail pair whose
types form a candidate (`relation_candidates`, e.g. QUESTION -> ANSWER):

    score(h, t) = head(h)^T W tail(t) + u^T [head(h); tail(t)] + b      (head, tail: two-layer projections)

Saved with `save_pretrained` together with this file (`auto_map`), so a fresh process loads it with
`AutoModel.from_pretrained(folder, trust_remote_code=True)`. Imports only torch and transformers (it is copied
into checkpoints).

Inputs besides the encoder's (`input_ids`, `bbox`, `attention_mask`, `pixel_values`/`image`):
- `entity_index` [B, L]: for each token, the index of its entity in the window's entity list, -1 for none;
- `entity_labels` [B, E]: each window entity's type id (index in `config.entity_types`), -1 for padding;
- `relation_pairs` [B, R, 2] (training): gold (head, tail) window-entity indices, -1 for padding.
Output `logits` [B, E, E]: the link score of every (head, tail) pair, -inf where the pair is no candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class LayoutRelationConfig(PretrainedConfig):
    model_type = "layoutkit_relation"
    sub_configs = {"encoder": AutoConfig}

    def __init__(self, encoder=None, entity_types=None, relation_candidates=None, pooling: str = "first",
                 type_embedding_size: int | None = None, head_size: int | None = None,
                 classifier_dropout: float = 0.1, box_features: bool = True, **kwargs):
        if isinstance(encoder, dict):
            encoder = dict(encoder)
            encoder = AutoConfig.for_model(encoder.pop("model_type"), **encoder)
        self.encoder = encoder
        # Entity type names (e.g. ["ANSWER", "HEADER", "QUESTION"]); pairs are scored between these types.
        self.entity_types = list(entity_types or [])
        # [head type, tail type] name pairs that may be linked; empty: any two typed entities.
        self.relation_candidates = [list(pair) for pair in (relation_candidates or [])]
        if pooling not in ("first", "mean"):
            raise ValueError(f"pooling must be 'first' or 'mean', got {pooling!r}")
        self.pooling = pooling
        hidden = getattr(encoder, "hidden_size", 768) if encoder is not None else 768
        self.type_embedding_size = type_embedding_size or max(8, hidden // 4)
        self.head_size = head_size or max(16, hidden // 2)
        self.classifier_dropout = classifier_dropout
        # Append each entity's mean token box (0-1 coordinates) to its vector, and score each pair's boxes and their
        # offset with a small MLP: where a key and its value sit relative to each other is the strongest cue for a
        # link, and an encoder trained from scratch is slow to learn it (measured on FUNSD: docs/relations.md).
        self.box_features = box_features
        super().__init__(**kwargs)


@dataclass
class RelationOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def balanced_pair_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the candidate pairs, links and non-links weighted half and half. A page has about
    as many candidate pairs as questions times answers and one link per answer (FUNSD: 5% of the pairs are links):
    unweighted, a model trained from scratch settles on "no link" everywhere (measured: validation F1 0 for five
    epochs). 0 (with a gradient path) when the batch has no candidate pair."""
    if not logits.numel():
        return logits.sum()
    losses = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    positive = targets > 0.5
    parts = [losses[mask].mean() for mask in (positive, ~positive) if mask.any()]
    return sum(parts) / len(parts)


class LayoutRelationModel(PreTrainedModel):
    config_class = LayoutRelationConfig
    base_model_prefix = "relation"
    main_input_name = "input_ids"

    def __init__(self, config: LayoutRelationConfig):
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder)
        hidden = config.encoder.hidden_size
        self.type_embeddings = nn.Embedding(max(1, len(config.entity_types)), config.type_embedding_size)
        width = hidden + config.type_embedding_size + (4 if config.box_features else 0)

        def projection() -> nn.Module:
            return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(config.classifier_dropout),
                                 nn.Linear(width, config.head_size), nn.ReLU(), nn.Dropout(config.classifier_dropout))

        self.head_projection = projection()
        self.tail_projection = projection()
        self.bilinear = nn.Parameter(torch.zeros(config.head_size, config.head_size))
        self.head_linear = nn.Linear(config.head_size, 1)
        self.tail_linear = nn.Linear(config.head_size, 1, bias=False)
        if config.box_features:
            self.pair_box_scorer = nn.Sequential(nn.Linear(12, 2 * config.head_size), nn.ReLU(),
                                                 nn.Linear(2 * config.head_size, 1))
        self.post_init()

    def _init_weights(self, module):
        # The encoder keeps its own initialisation (its from_config ran it; from_pretrained loads weights over it);
        # the pair head gets fan-scaled weights, which train from a random encoder as well as a pretrained one.
        if module is self:
            nn.init.xavier_uniform_(self.bilinear)
        elif module is getattr(self, "type_embeddings", None):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.Linear) and not any(module is m for m in self.encoder.modules()):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def allowed_pairs(self, device) -> torch.Tensor:
        """[T, T] booleans: may an entity of type i be linked (as head) to one of type j (as tail)."""
        index = {name: i for i, name in enumerate(self.config.entity_types)}
        size = max(1, len(index))
        if not self.config.relation_candidates:
            return torch.ones(size, size, dtype=torch.bool, device=device)
        allowed = torch.zeros(size, size, dtype=torch.bool, device=device)
        for head, tail in self.config.relation_candidates:
            allowed[index[head], index[tail]] = True
        return allowed

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def forward(self, entity_index: torch.Tensor, entity_labels: torch.Tensor,
                relation_pairs: torch.Tensor | None = None, **encoder_inputs) -> RelationOutput:
        encoder_inputs.pop("labels", None)
        tokens = self.encoder(**encoder_inputs).last_hidden_state[:, : entity_index.shape[1]]  # text, not patches
        entities = self.pool(tokens, entity_index, entity_labels.shape[1])
        types = entity_labels.clamp(min=0)
        parts = [entities, self.type_embeddings(types)]
        if self.config.box_features:
            boxes = encoder_inputs["bbox"][:, : entity_index.shape[1]].to(tokens.dtype) / 1000.0
            boxes = self.pool(boxes, entity_index, entity_labels.shape[1], mean=True)  # [B, E, 4]
            parts.append(boxes)
        entities = torch.cat(parts, dim=-1)
        head, tail = self.head_projection(entities), self.tail_projection(entities)
        logits = torch.einsum("bid,de,bje->bij", head, self.bilinear.to(head.dtype), tail)
        logits = logits + self.head_linear(head) + self.tail_linear(tail).transpose(1, 2)
        if self.config.box_features:
            count = boxes.shape[1]
            head_boxes = boxes.unsqueeze(2).expand(-1, -1, count, -1)
            tail_boxes = boxes.unsqueeze(1).expand(-1, count, -1, -1)
            pair = torch.cat([head_boxes, tail_boxes, tail_boxes - head_boxes], dim=-1)  # [B, E, E, 12]
            logits = logits + self.pair_box_scorer(pair).squeeze(-1)
        candidates = self.candidate_mask(entity_labels)
        logits = logits.float().masked_fill(~candidates, float("-inf"))
        loss = None
        if relation_pairs is not None:
            targets = torch.zeros_like(logits)
            batch, pair = torch.nonzero(relation_pairs[..., 0] >= 0, as_tuple=True)
            targets[batch, relation_pairs[batch, pair, 0], relation_pairs[batch, pair, 1]] = 1.0
            loss = balanced_pair_loss(logits[candidates], targets[candidates]) + 0.0 * head.sum()
        return RelationOutput(loss=loss, logits=logits)

    def pool(self, tokens: torch.Tensor, entity_index: torch.Tensor, num_entities: int, mean: bool = False
             ) -> torch.Tensor:
        """[B, E, H] entity vectors: the first token, or the mean of the tokens, of each window entity."""
        members = (entity_index.unsqueeze(-1) == torch.arange(num_entities, device=tokens.device)).to(tokens.dtype)
        if mean or self.config.pooling == "mean":
            return members.transpose(1, 2) @ tokens / members.sum(1).clamp(min=1).unsqueeze(-1)
        first = members.argmax(1)  # [B, E]: the first token position (argmax returns the first maximum)
        return torch.gather(tokens, 1, first.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))

    def candidate_mask(self, entity_labels: torch.Tensor) -> torch.Tensor:
        """[B, E, E]: pairs of two different real entities whose types may be linked."""
        valid = entity_labels >= 0
        types = entity_labels.clamp(min=0)
        allowed = self.allowed_pairs(entity_labels.device)[types.unsqueeze(2), types.unsqueeze(1)]
        different = ~torch.eye(entity_labels.shape[1], dtype=torch.bool, device=entity_labels.device)
        return allowed & valid.unsqueeze(2) & valid.unsqueeze(1) & different


LayoutRelationConfig.register_for_auto_class()
LayoutRelationModel.register_for_auto_class("AutoModel")
