"""Programs over a trained checkpoint: `predict.py` (documents into JSON), `serve.py` (the HTTP service),
`export_onnx.py`, `compare.py` (training runs side by side), `scratch.py` (a from-scratch config and tokenizer)
and what they share (reading documents, loading a checkpoint's pipeline, Label Studio tasks). They run the
pipelines (layoutkit/pipelines/) and never import training code (tests/test_wings.py)."""
