"""Training options of the scripts: focal loss with class weights, augmentation, Optuna search, the low-memory flags."""

import json

import pytest
import torch

from conftest import REPO_ROOT
from learning import assert_learned
from test_run_invoice_ner import predictions, results, train


def test_focal_loss_class_weights_and_augmentation_train(invoice_dataset, scratch_checkpoint, tmp_path):
    output = tmp_path / "focal"
    log = train(invoice_dataset, scratch_checkpoint("layoutlm"), output, "--num_train_epochs", 1,
                "--per_device_train_batch_size", 8, "--loss", "focal", "--focal_gamma", 2, "--class_weights", "auto",
                "--augment", "--augment_copies", 1)
    # 38 training documents plus one augmented copy of each; validation and test are left alone.
    assert "76 training documents" in log.stdout
    assert len(predictions(output)) == 5
    # All-O scores entity F1 0 (word accuracy is no yardstick here: class weights trade the O words' accuracy for
    # the entities'); measured F1 0.36 after 26 steps; shuffled training labels: 0.03.
    assert_learned("test_f1", results(output)["test_f1"], baseline=0.0, floor=0.15)


def test_class_weights_must_match_the_labels(invoice_dataset, scratch_checkpoint, tmp_path):
    import subprocess
    import sys

    command = [sys.executable, REPO_ROOT / "run_invoice_ner.py", "--dataset_path", invoice_dataset, "--config_name",
               scratch_checkpoint("layoutlm"), "--output_dir", tmp_path / "bad", "--class_weights", "1,2"]
    failed = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=REPO_ROOT)
    assert failed.returncode != 0
    assert "--class_weights has 2 values but there are" in failed.stderr


def test_hp_search_runs_trials_as_mlflow_children_and_writes_a_rerunnable_config(
    invoice_dataset, scratch_checkpoint, tmp_path
):
    import mlflow

    space = tmp_path / "space.json"
    space.write_text(json.dumps({
        "learning_rate": {"type": "float", "low": 5e-3, "high": 2e-2, "log": True},
        "per_device_train_batch_size": {"type": "categorical", "choices": [2, 4]},
    }))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    output = tmp_path / "search"
    log = train(invoice_dataset, scratch_checkpoint("layoutlm"), output, "--num_train_epochs", 1,
                "--hp_search", "optuna", "--n_trials", 2, "--hp_space", space, "--experiment_name", "search-test",
                env={"MLFLOW_TRACKING_URI": uri})
    assert "best trial" in log.stdout

    record = json.loads((output / "hp_search.json").read_text())
    assert [t["state"] for t in record["trials"]] == ["COMPLETE", "COMPLETE"]
    best = record["trials"][record["best_trial"]]
    assert record["best_eval_f1"] == max(t["value"] for t in record["trials"]) == best["value"]
    # The best trial learned: all-O scores validation entity F1 0; measured 0.36 (trials 0.23 and 0.36, 52 steps
    # each); shuffled training labels: 0.0 in both trials.
    assert_learned("best_eval_f1", record["best_eval_f1"], baseline=0.0, floor=0.15)
    for number in (0, 1):
        assert (output / f"trial_{number}" / "all_results.json").is_file()

    # best_hyperparameters.json is a --config_file: the script parses it into the best trial's values.
    from run_invoice_ner import parse_args

    rerun = parse_args(["--config_file", str(output / "best_hyperparameters.json"), "--output_dir", "rerun"])
    assert rerun.learning_rate == best["params"]["learning_rate"]
    assert rerun.per_device_train_batch_size == best["params"]["per_device_train_batch_size"]
    assert rerun.hp_search is None and rerun.dataset_path == str(invoice_dataset)

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("search-test")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all("eval_f1" in child.data.metrics for child in children)
    assert parent.data.metrics["best_eval_f1"] == pytest.approx(record["best_eval_f1"])


def test_hp_search_prunes_trials_that_trail_the_median(tmp_path):
    """Five start-up trials complete; later trials whose first epochs trail their median are pruned."""
    from layoutkit.train.hp_search import run_hp_search

    from run_invoice_ner import parse_args

    args = parse_args([
        "--dataset_path", "unused", "--output_dir", str(tmp_path), "--seed", "0", "--n_trials", "8",
        "--hp_pruner", "median", "--hp_search", "optuna", "--report_to", "none", "--learning_rate", "1e-3",
        "--per_device_train_batch_size", "8", "--num_train_epochs", "3",
    ])
    calls = []

    def fake_training(trial_args, on_epoch_end):
        number = len(calls)
        calls.append(trial_args)
        value = 0.9 if number < 5 else 0.1  # the later trials are clearly worse
        for epoch in range(3):
            on_epoch_end(epoch, {"f1": value})
        return {"eval_f1": value}

    best = run_hp_search(args, fake_training, metric_name="f1", experiment_name="unused")
    record = json.loads((tmp_path / "hp_search.json").read_text())
    states = [t["state"] for t in record["trials"]]
    assert states[:5] == ["COMPLETE"] * 5 and states[5:] == ["PRUNED"] * 3
    assert calls[0].output_dir == str(tmp_path / "trial_0") and calls[0].with_tracking
    assert best["learning_rate"] == record["trials"][record["best_trial"]]["params"]["learning_rate"]


@pytest.mark.parametrize("script", ["run_invoice_ner", "run_doc_classification"])
def test_both_scripts_take_the_window_flags_and_refuse_a_stride_that_leaves_no_new_tokens(script, capsys):
    import importlib

    parse_args = importlib.import_module(script).parse_args
    common = ["--dataset_path", "data", "--output_dir", "out"]
    args = parse_args([*common, "--max_seq_length", "128", "--stride", "32", "--pad_to_multiple_of", "16"])
    assert (args.max_seq_length, args.stride, args.pad_to_multiple_of) == (128, 32, 16)
    with pytest.raises(SystemExit):
        parse_args([*common, "--max_seq_length", "128", "--stride", "126"])
    assert "--stride must be smaller than --max_seq_length minus the two special tokens" in capsys.readouterr().err


def test_length_grouped_batches_pad_less_and_change_every_epoch():
    import torch

    from layoutkit.train.dataloaders import LengthGroupedEpochSampler

    lengths = [int(n) for n in torch.randint(20, 512, (400,), generator=torch.Generator().manual_seed(0))]
    sampler = LengthGroupedEpochSampler(8, lengths, seed=3)

    def padded_tokens(order):
        batches = [order[i:i + 8] for i in range(0, len(order), 8)]
        return sum(max(lengths[j] for j in batch) * len(batch) for batch in batches)

    sampler.set_epoch(1)
    first = list(sampler)
    assert sorted(first) == list(range(400))
    assert list(sampler) == first  # the same order for the same seed and epoch: resuming mid-epoch relies on it
    sampler.set_epoch(2)
    assert list(sampler) != first
    shuffled = torch.randperm(400, generator=torch.Generator().manual_seed(3)).tolist()
    assert padded_tokens(first) < 0.75 * padded_tokens(shuffled)


def test_attention_dropout_is_recorded_in_the_config(invoice_dataset, scratch_checkpoint, tmp_path):
    """The speed levers (attention dropout 0, length-grouped batches) are recorded in the config and the model card."""
    output = tmp_path / "no-attention-dropout"
    train(invoice_dataset, scratch_checkpoint("layoutlmv3"), output, "--num_train_epochs", 1, "--max_train_samples", 8,
          "--max_eval_samples", 4, "--attention_dropout", 0, "--group_by_length")
    config = json.loads((output / "config.json").read_text())
    assert config["attention_probs_dropout_prob"] == 0.0
    assert config["hidden_dropout_prob"] == 0.1
    card = (output / "README.md").read_text()
    assert "| attention_dropout | 0" in card and "| group_by_length | True" in card


def tiny_token_classifier(model_type: str):
    """A two-layer model of `model_type` with random weights and dropout on, and one batch of it."""
    import transformers

    torch.manual_seed(0)
    sizes = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 64, "num_labels": 3, "hidden_dropout_prob": 0.1,
             "attention_probs_dropout_prob": 0.1}
    batch = {"input_ids": torch.randint(3, 100, (2, 12)), "bbox": torch.randint(0, 500, (2, 12, 4)).sort(-1).values,
             "attention_mask": torch.ones(2, 12, dtype=torch.long), "labels": torch.randint(0, 3, (2, 12))}
    if model_type == "layoutlmv3":
        config = transformers.LayoutLMv3Config(**sizes, input_size=32, patch_size=16, coordinate_size=5,
                                               shape_size=6, max_2d_position_embeddings=1024)
        batch["pixel_values"] = torch.randn(2, 3, 32, 32)
    else:
        config = transformers.LayoutLMConfig(**sizes)
    return transformers.AutoModelForTokenClassification.from_config(config), batch


@pytest.mark.parametrize("model_type", ["layoutlmv3", "layoutlm"])
def test_gradient_checkpointing_recomputes_the_layers_and_gives_the_same_loss_and_gradients(model_type):
    """LayoutLMv3 (checkpointed by layoutkit: transformers does not support it) and LayoutLM (transformers' own):
    each encoder layer runs again in the backward pass, and the loss and every gradient are those of the model
    without checkpointing, dropout included (the recompute replays the same random masks)."""
    from layoutkit.train.model_setup import enable_gradient_checkpointing, encoder_layers

    def loss_gradients_and_layer_calls(checkpointed: bool):
        model, batch = tiny_token_classifier(model_type)
        model.train()
        if checkpointed:
            how = enable_gradient_checkpointing(model)
            assert ("layoutkit" in how) == (model_type == "layoutlmv3")
        calls = []
        for layer in encoder_layers(model):
            layer.intermediate.register_forward_hook(lambda *_: calls.append(1))
        torch.manual_seed(1)  # the dropout masks
        loss = model(**batch).loss
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)

    plain_loss, plain_gradients, plain_calls = loss_gradients_and_layer_calls(checkpointed=False)
    loss, gradients, calls = loss_gradients_and_layer_calls(checkpointed=True)
    assert plain_calls == 2 and calls == 4  # two layers, each run once more for its backward pass
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    assert gradients.keys() == plain_gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, plain_gradients[name], rtol=1e-5, atol=1e-7, msg=name)


def test_low_memory_flags_train_the_same_model(invoice_dataset, scratch_checkpoint, tmp_path):
    """--gradient_checkpointing (LayoutLMv3: layoutkit's wrapping) and --release_memory change where activations and
    freed memory live, not what is learned: the run with them ends with the weights of the run without them."""
    from safetensors.torch import load_file

    checkpoint = scratch_checkpoint("layoutlmv3")
    plain, low_memory = tmp_path / "plain", tmp_path / "low-memory"
    steps = ["--max_train_steps", 6, "--per_device_train_batch_size", 4]
    train(invoice_dataset, checkpoint, plain, *steps)
    log = train(invoice_dataset, checkpoint, low_memory, *steps, "--gradient_checkpointing", "--release_memory")
    assert "encoder layers of LayoutLMv3ForTokenClassification wrapped by layoutkit" in log.stdout
    expected, weights = load_file(plain / "model.safetensors"), load_file(low_memory / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-4, atol=1e-6, msg=name)
    assert results(low_memory)["eval_f1"] == pytest.approx(results(plain)["eval_f1"], abs=1e-6)


def test_release_memory_uses_glibc_where_there_is_one_and_leaves_a_users_threshold_alone(monkeypatch):
    from layoutkit.train import memory

    calls = []

    class FakeGlibc:
        def mallopt(self, parameter, value):
            calls.append(("mallopt", parameter, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("malloc_trim", pad))
            return 1

    monkeypatch.setattr(memory, "glibc", lambda: FakeGlibc())
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert memory.map_large_blocks() and memory.release_free_memory()
    assert calls == [("mallopt", memory.M_MMAP_THRESHOLD, 4 * 1024 * 1024), ("malloc_trim", 0)]
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert not memory.map_large_blocks() and len(calls) == 2  # the environment's threshold stays
    monkeypatch.setattr(memory, "glibc", lambda: None)  # macOS, Windows, musl
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert not memory.map_large_blocks() and not memory.release_free_memory() and len(calls) == 2
