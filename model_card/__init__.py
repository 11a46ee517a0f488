"""Model cards for checkpoints trained with this toolkit (README.md of every output directory)."""

from model_card.card import build_model_card, card_inputs_from_args, plot_history, write_model_card

__all__ = ["build_model_card", "card_inputs_from_args", "plot_history", "write_model_card"]
