"""The training scripts' flags follow the transformers examples' conventions and are validated up front."""

import json
import os
import subprocess
import sys

import pytest

import run_doc_classification
import run_invoice_ner
import run_relation_extraction
from conftest import REPO_ROOT
from test_run_invoice_ner import FAST, SCRIPT, results

REQUIRED = ["--dataset_path", "data", "--output_dir", "out"]


def parse_error(parse_args, argv, capsys) -> str:
    with pytest.raises(SystemExit):
        parse_args(REQUIRED + argv)
    return capsys.readouterr().err


@pytest.mark.parametrize("parse_args", [run_invoice_ner.parse_args, run_doc_classification.parse_args,
                                        run_relation_extraction.parse_args])
def test_flag_values_are_checked_when_parsed(parse_args, capsys):
    # A typo used to disable checkpointing silently.
    assert 'expected a positive number of steps or "epoch", got \'epcoh\'' in parse_error(
        parse_args, ["--checkpointing_steps", "epcoh"], capsys
    )
    assert "got '0'" in parse_error(parse_args, ["--checkpointing_steps", "0"], capsys)
    assert parse_args(REQUIRED + ["--checkpointing_steps", "25"]).checkpointing_steps == "25"
    # "on" used to read as False.
    assert parse_args(REQUIRED + ["--ddp_find_unused_parameters", "on"]).ddp_find_unused_parameters is True
    assert parse_args(REQUIRED + ["--ddp_find_unused_parameters", "No"]).ddp_find_unused_parameters is False
    assert "expected true/false" in parse_error(parse_args, ["--ddp_find_unused_parameters", "maybe"], capsys)


def test_help_shows_defaults():
    help_text = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, cwd=REPO_ROOT,
                               check=True).stdout
    help_text = " ".join(help_text.split())
    assert "(default: 512)" in help_text  # --max_seq_length
    assert "(default: 5e-05)" in help_text  # --learning_rate
    assert "accelerate launch run_invoice_ner.py" in help_text  # the docstring keeps its layout


def test_classification_label_column_keeps_its_old_name():
    args = run_doc_classification.parse_args(REQUIRED + ["--label_column", "doc_type"])
    assert args.label_column_name == "doc_type"
    assert run_doc_classification.parse_args(REQUIRED + ["--label_column_name", "kind"]).label_column_name == "kind"


@pytest.fixture(scope="module")
def hub_style_dataset(invoice_dataset, tmp_path_factory):
    """The invoices as LayoutLMv3 datasets on the Hub name their columns (`tokens`), with the word labels in
    another column and another label set: the first five field types are kept, the others become O (still 10 labels
    or more, so LayoutLMv3's two-layer head has the same parameters, of other shapes)."""
    from datasets import ClassLabel, Sequence, load_from_disk

    raw = load_from_disk(str(invoice_dataset))
    names = raw["train"].features["ner_tags"].feature.names
    fields = sorted({name[2:] for name in names if name != "O"})[:5]
    kept = ["O"] + [f"{prefix}-{field}" for field in fields for prefix in "BI"]

    def relabel(example):
        return {"tags": [kept.index(names[t]) if names[t] in kept else 0 for t in example["ner_tags"]]}

    raw = raw.map(relabel, remove_columns=["ner_tags"]).rename_column("words", "tokens")
    raw = raw.cast_column("tags", Sequence(ClassLabel(names=kept)))
    folder = tmp_path_factory.mktemp("hub-style") / "invoices"
    raw.save_to_disk(str(folder))
    for name in ("preprocessing.json",):
        source = invoice_dataset / name
        if source.exists():
            (folder / name).write_text(source.read_text())
    return folder


def test_hub_column_names_and_another_label_set(hub_style_dataset, trained_ner_checkpoint, tmp_path):
    common = [sys.executable, SCRIPT, "--dataset_path", hub_style_dataset, "--model_name_or_path",
              trained_ner_checkpoint, "--label_column_name", "tags", "--num_train_epochs", 1,
              "--max_train_samples", 8, "--max_eval_samples", 4, *FAST]
    # The checkpoint's head has the invoice labels: loading it for 11 labels needs the flag the error names.
    refused = subprocess.run([str(c) for c in common + ["--output_dir", tmp_path / "refused"]],
                             capture_output=True, text=True, cwd=REPO_ROOT)
    assert refused.returncode != 0
    assert "ignore_mismatched_sizes" in refused.stderr
    output = tmp_path / "relabelled"
    subprocess.run([str(c) for c in common + ["--output_dir", output, "--ignore_mismatched_sizes"]],
                   capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert "test_f1" in results(output)
    config = json.loads((output / "config.json").read_text())
    assert len(config["label2id"]) == 11 and "O" in config["label2id"]


def test_unknown_text_column_is_named(hub_style_dataset, scratch_checkpoint, tmp_path):
    failed = subprocess.run(
        [str(c) for c in [sys.executable, SCRIPT, "--dataset_path", hub_style_dataset, "--config_name",
                          scratch_checkpoint("layoutlm"), "--output_dir", tmp_path / "out", "--text_column_name",
                          "text"]],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )
    assert failed.returncode != 0
    assert "--text_column_name text: no such column" in failed.stderr


def test_results_are_written_before_the_optional_steps(invoice_dataset, scratch_checkpoint, tmp_path):
    """A failure while attaching the pipeline (or pushing) must not lose all_results.json and the card."""
    output = tmp_path / "attach-fails"
    breaker = tmp_path / "breaker.py"
    breaker.write_text(
        "import runpy, sys\n"
        "import layoutkit.pipelines.attach\n"
        "def broken(*args, **kwargs):\n"
        "    raise OSError('disk full while copying the pipeline files')\n"
        "layoutkit.pipelines.attach.attach_pipeline = broken\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    command = [sys.executable, breaker, SCRIPT, "--dataset_path", invoice_dataset, "--config_name",
               scratch_checkpoint("layoutlm"), "--output_dir", output, "--num_train_epochs", 1,
               "--max_train_samples", 8, "--max_eval_samples", 4, *FAST]
    failed = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert failed.returncode != 0 and "disk full" in failed.stderr
    assert "test_f1" in results(output)
    assert (output / "training_history.json").exists() and (output / "README.md").exists()



def test_yaml_config_entity_level_metrics_and_checkpoint_limit(invoice_dataset, scratch_checkpoint, tmp_path):
    """--config_file takes YAML too; --return_entity_level_metrics puts per-type scores into each epoch's record
    (without it only the overall ones are there, and the final evaluation has them either way);
    --checkpoints_total_limit keeps the newest checkpoints only."""
    config = tmp_path / "run.yaml"
    config.write_text("num_train_epochs: 2\nmax_train_samples: 8\nmax_eval_samples: 4\n"
                      "checkpointing_steps: epoch\ncheckpoints_total_limit: 1\n")
    with_types, overall = tmp_path / "with-types", tmp_path / "overall"
    for output, extra in ((with_types, ["--return_entity_level_metrics"]), (overall, [])):
        subprocess.run([str(c) for c in [sys.executable, SCRIPT, "--dataset_path", invoice_dataset, "--config_name",
                                         scratch_checkpoint("layoutlm"), "--output_dir", output, "--config_file",
                                         config, *FAST, *extra]], check=True, capture_output=True, cwd=REPO_ROOT)
    history = json.loads((with_types / "training_history.json").read_text())
    assert len(history) == 2 and any(key.endswith("_f1") for key in history[0])
    plain = json.loads((overall / "training_history.json").read_text())
    assert {key for key in plain[0] if key != "epoch"} == {"precision", "recall", "f1", "accuracy", "em",
                                                           "em_no_space"}
    assert any(key.startswith("test_") and key.endswith("_f1") and key != "test_f1" for key in results(overall))
    assert sorted(path.name for path in overall.glob("epoch_*")) == ["epoch_1"]


def test_a_carved_validation_split_keeps_the_class_proportions():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from layoutkit.train.data import carve_validation_split

    labels = [0] * 30 + [1] * 10
    features = Features({"id": Value("string"), "label": ClassLabel(names=["invoice", "letter"])})
    raw = DatasetDict(train=Dataset.from_dict({"id": [str(i) for i in range(40)], "label": labels}, features=features))
    assert "stratified by label" in carve_validation_split(raw, seed=0, stratify_by_column="label")
    assert sorted(raw["validation"]["label"]) == [0, 0, 0, 1]  # 10% of 40, in the 3:1 proportion
    few = DatasetDict(train=Dataset.from_dict({"id": ["a", "b", "c"], "label": [0, 0, 1]}, features=features))
    assert "not stratified" in carve_validation_split(few, seed=0, stratify_by_column="label")


def test_mixed_precision_auto_picks_bf16_only_where_it_is_faster(monkeypatch):
    import torch

    from layoutkit.train import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "matmul_seconds", lambda dtype: 1.0 if dtype == torch.float32 else 25.0)
    choice, why = precision.choose_mixed_precision(cpu)
    assert choice == "no" and "25.00x the fp32 time" in why
    monkeypatch.setattr(precision, "matmul_seconds", lambda dtype: 1.0 if dtype == torch.float32 else 0.3)
    assert precision.choose_mixed_precision(cpu)[0] == "bf16"
    monkeypatch.undo()
    assert precision.choose_mixed_precision(cpu)[0] in ("no", "bf16")  # this machine's own measurement
