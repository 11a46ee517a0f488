"""predict.py under `accelerate launch` with two CPU processes: each document predicted once, the same files and JSON
as one process, one merged summary in input order."""

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import REPO_ROOT, python_module, run_command

pytestmark = pytest.mark.skipif(importlib.util.find_spec("rapidocr") is None,
                                reason="rapidocr, the default OCR engine, is not installed (pip install rapidocr)")


def summary_rows(folder):
    rows = [json.loads(line) for line in (folder / "summary.jsonl").read_text().splitlines()]
    # Timings differ from run to run; the output path differs by the output folder only.
    return [{**{key: value for key, value in row.items() if key != "seconds"},
             "output": row.get("output") and Path(row["output"]).name} for row in rows]


def test_two_processes_write_what_one_process_writes(trained_ner_checkpoint, synthetic_invoices, tmp_path):
    from PIL import Image

    scans = tmp_path / "scans"
    scans.mkdir()
    for index in range(3):  # the top of three invoices (small pages keep OCR quick) and one corrupt file among them
        with Image.open(synthetic_invoices / "images" / f"invoice_{index:05d}.png") as page:
            page.crop((0, 0, page.width, page.height // 4)).save(scans / f"page{index}.png")
    (scans / "page1b.png").write_bytes(b"not an image")
    predict = [REPO_ROOT / "predict.py", "--model_name_or_path", trained_ner_checkpoint, "--input", scans]

    from layoutkit.apps import predict as predict_script  # one process: in this one

    assert predict_script.main([str(a) for a in predict[1:]] + ["--output_dir", str(tmp_path / "one")]) == 0
    # Two CPU ranks (accelerate runs `--cpu --num_processes 2` as one process; see test_run_invoice_ner.py).
    launch = python_module("accelerate.commands.launch", "--multi_gpu", "--num_processes", 2, "--num_machines", 1,
                           "--mixed_precision", "no", "--dynamo_backend", "no")
    log = run_command([*launch, *predict, "--output_dir", tmp_path / "two"], env={"ACCELERATE_USE_CPU": "1"})

    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir()), "no shares left behind"
    assert summary_rows(two) == summary_rows(one)
    assert [row["status"] for row in summary_rows(one)] == ["ok", "ok", "error", "ok"]
    for name in [p.name for p in one.glob("page*.json")]:
        assert (two / name).read_text() == (one / name).read_text(), name
    # Each document once: two per process, every [ok] line printed once.
    assert all(log.stderr.count(f"[ok] {scans / f'page{i}.png'}:") == 1 for i in range(3)), log.stderr
    assert log.stderr.count("3/4 documents processed") == 1, "one total, from the main process"
