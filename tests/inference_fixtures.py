"""Session fixtures of the inference tests: one tiny LayoutLMv3 trained by run_invoice_ner.py (with a recorded,
network-free --push_to_hub), and a copy whose classifier predicts a fixed label.

Imported by conftest.py so every test module can use `trained_ner_checkpoint` and `vendor_ner_checkpoint`.
"""

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO_ROOT, run_command

HUB_MODEL_ID = "tester/invoice-extractor"

# Runs run_invoice_ner.py with HfApi.create_repo / upload_folder replaced by recorders: each call is written to
# $PUSH_LOG with the files the folder holds and those the upload would send (its own ignore filter applied).
PUSH_RECORDER = textwrap.dedent("""
    import json, os, runpy, sys
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
    from huggingface_hub.utils import filter_repo_objects

    def record(entry):
        with open(os.environ["PUSH_LOG"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\\n")

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        record({"call": "create_repo", "repo_id": repo_id, "private": private, "exist_ok": exist_ok})
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else "tester/" + repo_id)

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, ignore_patterns=None, **kwargs):
        files = sorted(
            os.path.relpath(os.path.join(root, name), folder_path).replace(os.sep, "/")
            for root, _, names in os.walk(folder_path) for name in names
        )
        patterns = list(ignore_patterns or []) + list(DEFAULT_IGNORE_PATTERNS)
        record({"call": "upload_folder", "repo_id": repo_id, "folder_path": str(folder_path),
                "commit_message": commit_message, "ignore_patterns": ignore_patterns, "files": files,
                "uploaded": list(filter_repo_objects(files, ignore_patterns=patterns)), "kwargs": sorted(kwargs)})
        return SimpleNamespace(commit_url="https://huggingface.co/" + repo_id)

    huggingface_hub.HfApi.create_repo = create_repo
    huggingface_hub.HfApi.upload_folder = upload_folder
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
""")


def read_push_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


@pytest.fixture(scope="session")
def trained_ner_checkpoint(invoice_dataset, scratch_checkpoint, tmp_path_factory) -> Path:
    """run_invoice_ner.py output folder (2 epochs, tiny LayoutLMv3 from scratch) with the pipeline code, the
    model card and epoch_N checkpoints; `push_log.jsonl` beside it records the (faked) Hub calls."""
    root = tmp_path_factory.mktemp("ner-run")
    output = root / "invoice-extractor"
    recorder = root / "push_recorder.py"
    recorder.write_text(PUSH_RECORDER, encoding="utf-8")
    run_command(
        [sys.executable, recorder, REPO_ROOT / "run_invoice_ner.py",
         "--dataset_path", invoice_dataset, "--config_name", scratch_checkpoint("layoutlmv3"), "--output_dir", output,
         "--num_train_epochs", 2, "--max_train_samples", 16, "--per_device_train_batch_size", 8,
         "--max_seq_length", 128, "--stride", 32, "--learning_rate", 2e-3, "--seed", 7,
         "--checkpointing_steps", "epoch", "--push_to_hub", "--hub_model_id", HUB_MODEL_ID, "--hub_private_repo",
         "--push_every_epoch"],
        env={"PUSH_LOG": str(root / "push_log.jsonl")},
    )
    return output


def push_log_of(checkpoint: Path) -> list[dict]:
    return read_push_log(checkpoint.parent / "push_log.jsonl")


def force_label(source: Path, destination: Path, label: str) -> Path:
    """Copy a checkpoint (without training checkpoints) and make its classifier output `label` for every token:
    the last linear layer onto the labels gets zero weights and a one-hot bias. Gives deterministic entities from a
    model too small to learn anything in a test."""
    import torch
    from transformers import AutoModelForTokenClassification

    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("epoch_*", "step_*"))
    model = AutoModelForTokenClassification.from_pretrained(destination)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == model.config.num_labels][-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-5.0)
        head.bias[model.config.label2id[label]] = 5.0
    model.save_pretrained(destination)
    # save_pretrained rewrote config.json: keep the custom pipeline registration the training run wrote.
    config = json.loads((source / "config.json").read_text())
    saved = json.loads((destination / "config.json").read_text())
    saved["custom_pipelines"] = config["custom_pipelines"]
    (destination / "config.json").write_text(json.dumps(saved, indent=2, sort_keys=True))
    return destination


@pytest.fixture(scope="session")
def vendor_ner_checkpoint(trained_ner_checkpoint, tmp_path_factory) -> Path:
    """The trained checkpoint with every word predicted I-vendor: one entity spanning the page."""
    return force_label(trained_ner_checkpoint, tmp_path_factory.mktemp("vendor") / "vendor-extractor", "I-vendor")
