"""What ships inside every saved checkpoint: the custom pipelines (`*_pipeline.py`), the relation model
(`relation_model.py`), the Inference Endpoints handler (`endpoint_handler.py`) and every module they import
relatively. `attach.py` copies them into a checkpoint folder; it is the only module here that is not shipped.

These modules may import only transformers, torch, numpy, PIL and the standard library at module level (anything
else lazily, inside a function, with an error naming what to install), and only each other: a checkpoint holds them
as flat files beside its weights, so `from .boxes import ...` must resolve there too. tests/test_wings.py checks it.
"""
