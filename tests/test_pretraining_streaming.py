"""run_pretraining.py --streaming: the training split read as a `datasets.IterableDataset` (a saved dataset or a
folder of parquet shards), shuffled in a buffer and encoded as it is read; the periods of --eval_steps that stand
in for epochs (`StreamedBatches`); and the error without --max_train_steps. Tiny from-scratch LayoutLM, seconds."""

import json
import shutil

import pytest
import torch

TINY = ["--max_seq_length", "128", "--stride", "32", "--learning_rate", "2e-3", "--per_device_train_batch_size", "8",
        "--max_train_samples", "12", "--max_eval_samples", "4", "--seed", "7"]
STREAMED = ["--streaming", "--shuffle_buffer_size", "16", *TINY]


@pytest.fixture
def corpus_copy(invoice_dataset, tmp_path):
    """The invoices saved afresh (the session's dataset holds other tests' encoding caches)."""
    from datasets import load_from_disk

    folder = tmp_path / "corpus"
    load_from_disk(str(invoice_dataset)).save_to_disk(str(folder))
    return folder


def cache_files(folder) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("cache-*"))


def test_streamed_and_regular_pretraining_each_give_a_checkpoint(corpus_copy, scratch_checkpoint, tmp_path):
    """12 pages in 2 batches a pass, 4 steps: the stream is read twice, evaluated every 2 steps; nothing is written
    into the corpus's folder (the non-streaming encoding caches its windows there, as the regular run shows)."""
    from transformers import AutoModelForTokenClassification

    from layoutkit.train.pretraining_task import main

    config = ["--config_name", str(scratch_checkpoint("layoutlm"))]
    streamed = tmp_path / "streamed"
    results = main(["--dataset_path", str(corpus_copy), *config, "--output_dir", str(streamed), *STREAMED,
                    "--max_train_steps", "4", "--eval_steps", "2"])
    assert results["train_steps"] == 4 and results["eval_masked_tokens"] > 0 and results["eval_loss"] > 0
    assert results["pretraining_pages"] is None and results["train_documents_per_second"] is None
    history = json.loads((streamed / "training_history.json").read_text())
    assert [entry["epoch"] for entry in history] == [0, 1]  # one evaluation per --eval_steps period
    assert cache_files(corpus_copy) == []
    _, info = AutoModelForTokenClassification.from_pretrained(streamed, num_labels=3, output_loading_info=True)
    assert all(key.startswith("classifier.") for key in info["missing_keys"]), info
    assert "streamed pages" in (streamed / "README.md").read_text()

    regular = tmp_path / "regular"
    results = main(["--dataset_path", str(corpus_copy), *config, "--output_dir", str(regular),
                    *TINY, "--max_train_steps", "3"])
    assert results["train_steps"] == 3 and results["pretraining_pages"] == 12
    assert (regular / "model.safetensors").is_file() and cache_files(corpus_copy)


def test_a_folder_of_parquet_shards_streams(corpus_copy, scratch_checkpoint, tmp_path):
    """Shards named as push_to_hub names them (data/train-00000-of-00002.parquet, ...): the splits come from the
    names, the validation split is read into memory, the test split is dropped."""
    from datasets import load_from_disk

    from layoutkit.train.pretraining_task import main

    shards = tmp_path / "shards" / "data"
    for split, count in (("train", 2), ("validation", 1), ("test", 1)):
        dataset = load_from_disk(str(corpus_copy))[split]
        for index in range(count):
            dataset.shard(count, index).to_parquet(str(shards / f"{split}-{index:05d}-of-{count:05d}.parquet"))
    output = tmp_path / "pretrained"
    results = main(["--dataset_path", str(shards.parent), "--config_name", str(scratch_checkpoint("layoutlm")),
                    "--output_dir", str(output), *STREAMED, "--max_train_steps", "3"])
    assert results["train_steps"] == 3 and results["eval_masked_tokens"] > 0 and "test_loss" not in results
    assert (output / "model.safetensors").is_file()


@pytest.mark.parametrize("flags, message", [
    (["--streaming"], "--streaming needs --max_train_steps"),
    (["--streaming", "--max_train_steps", "3", "--group_by_length"], "--group_by_length needs"),
    (["--eval_steps", "2"], "--eval_steps is for --streaming runs"),
])
def test_flags_a_stream_cannot_take_stop_before_any_work(flags, message, tmp_path, capsys):
    from layoutkit.train.pretraining_task import main

    with pytest.raises(SystemExit):
        main(["--dataset_path", str(tmp_path / "not-read"), "--output_dir", str(tmp_path / "out"), *flags])
    assert message in capsys.readouterr().err


def test_streamed_batches_go_on_across_periods_and_resume_where_they_stopped():
    """10 examples in batches of 3 (4 batches a pass), periods of 3 batches: a period starts where the last one
    stopped, the second pass has every example again in another order, and a resumed reader (`set_epoch`, then
    `skip_first_batches`) gives the uninterrupted run's batches without touching the torch random state."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    from datasets import Dataset
    from torch.utils.data import DataLoader

    from layoutkit.train.dataloaders import StreamedBatches

    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(dispatch_batches=False))
    stream = Dataset.from_dict({"x": list(range(10))}).to_iterable_dataset(num_shards=2).shuffle(seed=0, buffer_size=4)

    def reader():
        # With its own generator, as build_dataloaders makes it: starting a pass draws nothing from the global one.
        # This collator draws from the global one (the masking collators do not; a custom one may).
        loader = DataLoader(stream, batch_size=3, generator=torch.Generator().manual_seed(0),
                            collate_fn=lambda rows: {"x": torch.tensor([r["x"] for r in rows]), "mask": torch.rand(1)})
        return StreamedBatches(loader, 3).prepare(accelerator)

    uninterrupted = reader()
    batches = []
    for period in range(3):
        uninterrupted.set_epoch(period)
        batches.append([batch["x"].tolist() for batch in uninterrupted])
    flat = [batch for period in batches for batch in period]
    assert [len(period) for period in batches] == [3, 3, 3] and [len(b) for b in flat] == [3, 3, 3, 1, 3, 3, 3, 1, 3]
    first_pass, second_pass = ([x for batch in flat[passed] for x in batch] for passed in (slice(0, 4), slice(4, 8)))
    assert sorted(first_pass) == sorted(second_pass) == list(range(10)) and first_pass != second_pass

    resumed = reader()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    resumed.set_epoch(1)
    remaining = resumed.skip_first_batches(1)
    assert torch.equal(torch.rand(3), expected)  # the 4 batches read again drew from a forked state
    assert [batch["x"].tolist() for batch in remaining] == batches[1][1:]


def test_a_streamed_run_resumed_mid_period_trains_on_the_uninterrupted_runs_batches(
        corpus_copy, scratch_checkpoint, tmp_path, monkeypatch):
    """Checkpointed after step 3 of 4 (one evaluation period) and resumed: the stream is read again up to that
    batch, and the resumed run's last step takes the uninterrupted run's last batch."""

    from layoutkit.train.dataloaders import StreamedBatches
    from layoutkit.train.pretraining_task import main

    drawn = []
    next_batch = StreamedBatches.next_batch

    def recorded(self):
        batch = next_batch(self)
        drawn.append((self.position, batch["doc_index"].tolist(), batch["bbox"].sum().item()))
        return batch

    monkeypatch.setattr(StreamedBatches, "next_batch", recorded)
    args = ["--dataset_path", str(corpus_copy), "--config_name", str(scratch_checkpoint("layoutlm")), *STREAMED,
            "--max_train_steps", "4", "--checkpointing_steps", "3"]
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    main([*args, "--output_dir", str(uninterrupted)])
    expected, drawn[:] = list(drawn), []
    interrupted.mkdir()
    shutil.copytree(uninterrupted / "step_3", interrupted / "step_3")
    results = main([*args, "--output_dir", str(interrupted), "--resume_from_checkpoint", "latest"])
    assert results["train_steps"] == 4
    assert [position for position, *_ in expected] == [1, 2, 3, 4] and drawn == expected


@pytest.mark.parametrize("reading", ["regular", "streamed"])
def test_resumed_pretraining_has_the_uninterrupted_runs_weights_bit_for_bit(
        reading, corpus_copy, scratch_checkpoint, tmp_path):
    """Checkpointed after step 2 of 4 (mid-epoch, mid-period) and resumed: the final weights are exactly the
    uninterrupted run's. The dataloader had already fetched batch 3 (its masks drawn) when step 2 was saved; masks
    drawn from the batch itself, not from the random state the checkpoint holds, make batch 3 the same again."""
    from safetensors.torch import load_file

    from layoutkit.train.pretraining_task import main

    args = ["--dataset_path", str(corpus_copy), "--config_name", str(scratch_checkpoint("layoutlm")),
            *(STREAMED if reading == "streamed" else TINY), "--per_device_train_batch_size", "4",
            "--max_train_steps", "4", "--checkpointing_steps", "2"]
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    main([*args, "--output_dir", str(uninterrupted)])
    assert json.loads((uninterrupted / "step_2" / "training_state.json").read_text())["epochs_done"] == 0
    interrupted.mkdir()
    shutil.copytree(uninterrupted / "step_2", interrupted / "step_2")
    main([*args, "--output_dir", str(interrupted), "--resume_from_checkpoint", "latest"])

    expected, resumed = (load_file(str(run / "model.safetensors")) for run in (uninterrupted, interrupted))
    differing = [name for name in expected if not torch.equal(expected[name], resumed[name])]
    assert expected.keys() == resumed.keys()
    assert not differing, f"{len(differing)} resumed weights differ, e.g. {differing[:3]}"
