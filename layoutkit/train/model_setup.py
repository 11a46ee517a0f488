"""The model of a run: its config (--config_name, --attention_dropout), weights from a checkpoint or from scratch
(with the scratch classification-head init), the window-length check, freezing the parameters that never get
a gradient, and activation checkpointing (--gradient_checkpointing)."""

from __future__ import annotations

import functools

import torch
import torch.utils.checkpoint

from .arguments import ModelArguments


def load_config(model_args: ModelArguments):
    """The run's model config (--config_name, else the checkpoint's), with --attention_dropout applied."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_args.config_name or model_args.model_name_or_path,
                                        **model_args.hub_kwargs)
    if model_args.attention_dropout is not None:
        config.attention_probs_dropout_prob = model_args.attention_dropout
    return config


def load_model_and_processing(model_args: ModelArguments, config, max_seq_length: int, model_class, **config_kwargs):
    """(model, tokenizer, image_processor, processor) from the model flags and the run's `config` (`load_config`),
    updated with `config_kwargs` (the task's labels).

    With --model_name_or_path the checkpoint's weights are loaded; with only --config_name the model is
    built from the config with random weights (training from scratch).
    """
    from ..pipelines.modeling import load_processing

    hub = model_args.hub_kwargs
    config.update(config_kwargs)
    check_window_fits(config, max_seq_length)
    processing_source = model_args.tokenizer_name or model_args.model_name_or_path or model_args.config_name
    tokenizer, image_processor, processor = load_processing(processing_source, **hub)
    if model_args.model_name_or_path:
        model = model_class.from_pretrained(model_args.model_name_or_path, config=config,
                                            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **hub)
    else:
        model = model_class.from_config(config, trust_remote_code=model_args.trust_remote_code)
        init_scratch_classification_heads(model)
    freeze_parameters_without_gradient(model)
    return model, tokenizer, image_processor, processor


def init_scratch_classification_heads(model: torch.nn.Module) -> list[str]:
    """Give two-layer classification heads (LayoutLMv3's dense + tanh + projection, used for token classification
    with 10 labels or more and for sequence classification) fan-scaled weights when training from scratch.

    transformers draws them with std `initializer_range` (0.02) like every other layer. Behind a random body the
    gradient that reaches it through two such layers is about 5x weaker than through one linear head, Adam's
    normalised updates then move the body mostly at random, its feed-forward outputs grow (pre-LayerNorm std 1 ->
    3 within 20 steps) and each post-LN layer shrinks the gradient about 5x: within ten steps the word embeddings
    get 10^4 times less gradient and the head settles on the label prior (F1 0). Xavier-uniform weights (zero
    biases) keep the body learning as a linear head does. Pretrained checkpoints are untouched (their heads are
    loaded or trained from their own body) and the architecture is unchanged. Returns the heads re-initialised.
    """
    heads = []
    for name, module in model.named_modules():
        # LiLT's sequence head is the same RoBERTa-style dense + tanh + projection, behind a post-LN body.
        if type(module).__name__ in ("LayoutLMv3ClassificationHead", "LiltClassificationHead"):
            for layer in (module.dense, module.out_proj):
                torch.nn.init.xavier_uniform_(layer.weight)
                torch.nn.init.zeros_(layer.bias)
            heads.append(name)
    return heads


# Models whose position ids count up from padding_idx + 1, as RoBERTa's do (transformers'
# create_position_ids_from_input_ids), so padding_idx + 1 rows of the position table are never a token's.
POSITIONS_AFTER_PADDING_IDX = ("layoutlmv3", "lilt")


def text_positions(config) -> int:
    """How many tokens a window may hold: the rows of the position-embedding table a token can use."""
    if config.model_type in POSITIONS_AFTER_PADDING_IDX:
        return config.max_position_embeddings - config.pad_token_id - 1
    return config.max_position_embeddings


def check_window_fits(config, max_seq_length: int) -> None:
    """Stop before training when a window is longer than the model's position embeddings: the model itself
    would fail deep inside its embedding lookup with `IndexError: index out of range in self`."""
    limit = text_positions(config)
    if max_seq_length > limit:
        padding = (f", padding_idx {config.pad_token_id}" if config.model_type in POSITIONS_AFTER_PADDING_IDX
                   else "")
        raise ValueError(
            f"--max_seq_length {max_seq_length} does not fit this model: its position embeddings hold at most "
            f"{limit} tokens (max_position_embeddings {config.max_position_embeddings}{padding}); pass "
            f"--max_seq_length {limit} or less"
        )


# Parameters that a model's forward never gives a gradient. DistributedDataParallel stops with "Expected
# to have finished reduction" on those unless it searches the graph for unused parameters every step;
# freezing them changes nothing else, since the optimizer skips parameters without gradients anyway.
# - transformers' LayoutLMv3 looks its relative-position biases up under torch.no_grad();
# - token classification reads the sequence output, never the pooler;
# - LiLT's heads read the text stream only: the last layer's layout stream (its layout attention values and
#   output, its layout feed-forward) feeds nothing (earlier layers' layout streams feed the next layer).
def lilt_last_layout_stream(config) -> tuple[str, ...]:
    last = f"encoder.layer.{config.num_hidden_layers - 1}."
    return tuple(last + part for part in ("attention.self.layout_value.", "attention.layout_output.",
                                          "layout_intermediate.", "layout_output."))


NO_GRADIENT_PARAMETERS = {
    "LayoutLMv3": ("encoder.rel_pos_bias.", "encoder.rel_pos_x_bias.", "encoder.rel_pos_y_bias."),
    "LayoutLMForTokenClassification": ("pooler.",),
    "LayoutLMForMaskedLM": ("pooler.",),  # run_pretraining.py: the masked words come from the sequence output
    "LayoutLMv2ForTokenClassification": ("pooler.",),
    "Lilt": lilt_last_layout_stream,  # prefixes that depend on the config: a function of it
    # Relation extraction (relation_model.py) reads its encoder's token states: never the pooler either.
    "LayoutRelationModel": ("pooler.", "encoder.rel_pos_bias.", "encoder.rel_pos_x_bias.", "encoder.rel_pos_y_bias."),
}


def freeze_parameters_without_gradient(model: torch.nn.Module) -> list[str]:
    """Set requires_grad=False on the parameters listed in NO_GRADIENT_PARAMETERS; returns their names."""
    class_name = type(model).__name__
    prefixes = tuple(
        prefix for key, names in NO_GRADIENT_PARAMETERS.items() if class_name.startswith(key)
        for prefix in (names(model.config) if callable(names) else names)
    )
    frozen = []
    for name, parameter in model.named_parameters():
        if prefixes and name.split(".", 1)[-1].startswith(prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def enable_gradient_checkpointing(model: torch.nn.Module) -> str:
    """Recompute each encoder layer's activations in the backward pass instead of keeping them
    (--gradient_checkpointing): one layer's activations alive at a time instead of all of them, for about one more
    forward pass per step.

    Models that transformers checkpoints (`supports_gradient_checkpointing`: LayoutLM, LiLT) are set up by
    transformers. LayoutLMv3 and LayoutLMv2 do not offer it (transformers 5), although their encoder layers are built
    for it; their encoder layers, and those of any model that wraps such an encoder (the relation model), are then
    wrapped here in `torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`. Returns how it was enabled, for
    the log.
    """
    if getattr(model, "supports_gradient_checkpointing", False):
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5.x on
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return f"gradient checkpointing: transformers' own for {type(model).__name__}"
    layers = encoder_layers(model)
    if not layers:
        raise ValueError(
            f"--gradient_checkpointing: {type(model).__name__} has no encoder layers to checkpoint (no "
            "`encoder.layer` list) and transformers does not support checkpointing it; train without the flag"
        )
    for layer in layers:
        checkpoint_forward(layer)
    return f"gradient checkpointing: {len(layers)} encoder layers of {type(model).__name__} wrapped by layoutkit"


def encoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers of every BERT-style encoder in `model` (each `encoder.layer` ModuleList), in order."""
    layers = []
    for name, module in model.named_modules():
        if name.split(".")[-1] == "encoder" and isinstance(getattr(module, "layer", None), torch.nn.ModuleList):
            layers.extend(module.layer)
    return layers


def checkpoint_forward(layer: torch.nn.Module) -> None:
    """Make `layer`'s forward keep only its inputs while training, recomputing the rest in the backward pass.

    Non-reentrant checkpointing takes keyword arguments and inputs that need no gradient (the attention mask,
    LayoutLMv3's position bias), and replays the layer's dropout with the same random masks. In evaluation, or
    under `torch.no_grad()`, the layer runs as it is.
    """
    forward = layer.forward

    @functools.wraps(forward)
    def checkpointed(*args, **kwargs):
        if layer.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    layer.forward = checkpointed
