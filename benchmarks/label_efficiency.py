"""Label efficiency of domain-adaptive pretraining: fine-tune with N labelled documents from scratch versus from a
checkpoint pretrained here (run_pretraining.py) on unlabeled pages, same architecture, same fine-tuning budget and
seeds; prints a Markdown table of test entity F1 and field exact match (`em`, `layoutkit.metrics.field_exact_match`:
per field, the share of test documents whose predicted value equals the gold one, averaged over fields) and writes the pretraining loss curve as a PNG.

    python -m dataset_loader funsd --input ../shared/datasets/funsd --output runs/funsd
    python benchmarks/label_efficiency.py --dataset_path runs/funsd --output_dir runs/label-efficiency \
        --pretraining_steps 600 --finetuning_steps 300 --train_documents 25 50 all --seeds 1 2 3

The scratch config and its tokenizer are built from the dataset's training words only; pretraining reads the
dataset's train (and validation) pages with their labels dropped and its test split removed
(`PretrainingTask.prepare_dataset`), so no test page is ever pretrained on. `--pretraining_dataset` pretrains on
another corpus instead (e.g. synthetic invoices of seeds not used for fine-tuning).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(script: str, *args) -> dict:
    """Run a training script in its own process; returns its all_results.json."""
    command = [sys.executable, str(REPO / script), *map(str, args)]
    output_dir = Path(args[list(args).index("--output_dir") + 1])
    if not (output_dir / "all_results.json").is_file():  # a re-run reuses finished runs
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        log = output_dir.parent / f"{output_dir.name}.log"
        with open(log, "w") as handle:
            code = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                  check=False).returncode
        if code:
            sys.exit(f"failed: {' '.join(command)}; see {log}")
    return json.loads((output_dir / "all_results.json").read_text())


def plot_loss_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot([row["epoch"] + 1 for row in history], [row["loss"] for row in history], marker="o")
    axis.set_xlabel("pretraining epoch")
    axis.set_ylabel("validation masked-LM loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", required=True, help="the labelled dataset (train/validation/test)")
    parser.add_argument("--pretraining_dataset", help="the unlabeled corpus; default: --dataset_path without test")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model_type", default="layoutlm", choices=["layoutlm", "lilt", "layoutlmv3"])
    parser.add_argument("--size", default="small")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--max_seq_length", type=int, default=512)
    parser.add_argument("--pretraining_steps", type=int, default=600)
    parser.add_argument("--pretraining_learning_rate", type=float, default=1e-3)
    parser.add_argument("--finetuning_steps", type=int, default=300)
    parser.add_argument("--finetuning_learning_rate", type=float, default=5e-4)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--train_documents", nargs="+", default=["25", "50", "all"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    args = parser.parse_args(argv)

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / f"scratch-{args.model_type}-{args.size}"
    if not (scratch / "config.json").is_file():
        from layoutkit.apps.scratch import build_scratch_checkpoint, dataset_words

        build_scratch_checkpoint(str(scratch), args.model_type, dataset_words(args.dataset_path), args.size,
                                 args.vocab_size)
    common = ["--max_seq_length", args.max_seq_length, "--stride", 128, "--per_device_train_batch_size",
              args.batch_size, "--warmup_ratio", 0.1, "--logging_steps", 10]

    pretrained = out / "pretrained"
    pretraining = run("run_pretraining.py", "--dataset_path", args.pretraining_dataset or args.dataset_path,
                      "--config_name", scratch, "--output_dir", pretrained, "--max_train_steps",
                      args.pretraining_steps, "--num_train_epochs", 1000, "--learning_rate",
                      args.pretraining_learning_rate, "--seed", 0, *common)
    history = json.loads((pretrained / "training_history.json").read_text())
    plot_loss_curve(history, out / "pretraining_loss.png")
    pages_per_second = pretraining["train_documents_per_second"]
    print(f"pretraining: {pretraining['pretraining_pages']} pages, {pretraining['train_steps']} steps in "
          f"{pretraining['train_seconds']:.0f} s ({pages_per_second} pages/s); validation masked-LM loss "
          f"{history[0]['loss']:.3f} after epoch 1 -> {pretraining['eval_loss']:.3f} (kept epoch); masked-token "
          f"accuracy {pretraining['eval_accuracy']:.3f}")

    rows = []
    for documents in args.train_documents:
        for seed in args.seeds:
            limit = [] if documents == "all" else ["--max_train_samples", documents]
            scores = {}
            for start, model_flags in (("scratch", ["--config_name", scratch]),
                                       ("pretrained", ["--model_name_or_path", pretrained])):
                results = run("run_invoice_ner.py", "--dataset_path", args.dataset_path, *model_flags,
                              "--output_dir", out / f"ner-{start}-{documents}-seed{seed}", "--max_train_steps",
                              args.finetuning_steps, "--num_train_epochs", 1000, "--learning_rate",
                              args.finetuning_learning_rate, "--seed", seed, *limit, *common)
                scores[start] = (results["test_f1"], results["test_em"])
            (f1_scratch, em_scratch), (f1_pretrained, em_pretrained) = scores["scratch"], scores["pretrained"]
            rows.append((documents, seed, f1_scratch, f1_pretrained, em_scratch, em_pretrained))
            print(f"{documents} documents, seed {seed}: test F1 scratch {f1_scratch:.4f}, pretrained "
                  f"{f1_pretrained:.4f}; field exact match scratch {em_scratch:.4f}, pretrained {em_pretrained:.4f}",
                  flush=True)

    lines = ["| training documents | seed | test F1 from scratch | test F1 pretrained | F1 gain (points) "
             "| field EM from scratch | field EM pretrained | EM gain (points) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {d} | {s} | {a:.4f} | {b:.4f} | {100 * (b - a):+.1f} | {c:.4f} | {e:.4f} | {100 * (e - c):+.1f} |"
              for d, s, a, b, c, e in rows]
    table = "\n".join(lines)
    (out / "label_efficiency.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
