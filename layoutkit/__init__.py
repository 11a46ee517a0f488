"""layoutkit: shared building blocks for training and serving LayoutLM-family models on documents."""

__version__ = "0.1.0"
