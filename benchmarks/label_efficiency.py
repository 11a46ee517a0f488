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
another corpus instead (e.g. synthetic invoices of seeds not used for fine-tuning). `--box_level segment` fine-tunes
both arms on the dataset's segment boxes (FUNSD: each word carries its entity's box, the protocol of LayoutLMv3's
published FUNSD scores); pretraining always reads word boxes, as unlabelled pages have no entities.

LayoutLMv3's image objectives (masked patch regression and word-patch alignment, `--image_objectives` of
run_pretraining.py): `--image_objectives none mim,wpa` pretrains one checkpoint per value, same steps and seed, and
fine-tunes from each, so the table compares scratch, masked-LM only and masked-LM plus the image objectives:

    python benchmarks/label_efficiency.py --dataset_path data/invoices --pretraining_dataset data/corpus \
        --model_type layoutlmv3 --image_objectives none mim,wpa --train_documents 50 --output_dir runs/v3-image
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
    axis.set_ylabel("validation loss (all objectives)")
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
    parser.add_argument("--box_level", default="word", choices=["word", "segment"],
                        help="the boxes fine-tuning reads (run_invoice_ner.py --box_level; segment: FUNSD's entity "
                             "boxes, as LayoutLMv3's published FUNSD scores); pretraining reads word boxes")
    parser.add_argument("--train_documents", nargs="+", default=["25", "50", "all"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--image_objectives", nargs="+", default=["auto"],
                        help="run_pretraining.py's --image_objectives: one pretrained checkpoint per value")
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

    # One pretrained checkpoint per --image_objectives value ("pretrained" alone for the default).
    pretrained = {}
    for objectives in args.image_objectives:
        name = "pretrained" if args.image_objectives == ["auto"] else f"pretrained-{objectives.replace(',', '+')}"
        folder = out / name
        pretraining = run("run_pretraining.py", "--dataset_path", args.pretraining_dataset or args.dataset_path,
                          "--config_name", scratch, "--output_dir", folder, "--max_train_steps",
                          args.pretraining_steps, "--num_train_epochs", 1000, "--learning_rate",
                          args.pretraining_learning_rate, "--image_objectives", objectives, "--seed", 0, *common)
        history = json.loads((folder / "training_history.json").read_text())
        plot_loss_curve(history, out / ("pretraining_loss.png" if name == "pretrained" else f"{name}_loss.png"))
        image_losses = "".join(f", {key} {pretraining[f'eval_{key}']:.3f}" for key in
                               ("mim_loss", "wpa_loss", "wpa_accuracy") if f"eval_{key}" in pretraining)
        print(f"{name} (image objectives: {pretraining['image_objectives']}): {pretraining['pretraining_pages']} "
              f"pages, {pretraining['train_steps']} steps in {pretraining['train_seconds']:.0f} s "
              f"({pretraining['train_documents_per_second']} pages/s); validation masked-LM loss "
              f"{history[0]['mlm_loss']:.3f} after epoch 1 -> {pretraining['eval_mlm_loss']:.3f} (kept epoch); "
              f"masked-token accuracy {pretraining['eval_accuracy']:.3f}{image_losses}", flush=True)
        pretrained[name] = folder

    starts = {"scratch": ["--config_name", scratch]}
    starts.update({name: ["--model_name_or_path", folder] for name, folder in pretrained.items()})
    rows = []
    for documents in args.train_documents:
        for seed in args.seeds:
            limit = [] if documents == "all" else ["--max_train_samples", documents]
            scores = {}
            for start, model_flags in starts.items():
                results = run("run_invoice_ner.py", "--dataset_path", args.dataset_path, *model_flags,
                              "--output_dir", out / f"ner-{start}-{documents}-seed{seed}", "--max_train_steps",
                              args.finetuning_steps, "--num_train_epochs", 1000, "--learning_rate",
                              args.finetuning_learning_rate, "--box_level", args.box_level, "--seed", seed,
                              *limit, *common)
                scores[start] = (results["test_f1"], results["test_em"])
            rows.append((documents, seed, scores))
            print(f"{documents} documents, seed {seed}: " + "; ".join(
                f"{start} test F1 {f1:.4f}, field EM {em:.4f}" for start, (f1, em) in scores.items()), flush=True)

    header = ["training documents", "seed", "test F1 from scratch"]
    header += [column for name in pretrained for column in (f"test F1 {name}", f"F1 gain {name} (points)")]
    header += ["field EM from scratch"] + [column for name in pretrained
                                           for column in (f"field EM {name}", f"EM gain {name} (points)")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for documents, seed, scores in rows:
        (f1_scratch, em_scratch) = scores["scratch"]
        cells = [documents, seed, f"{f1_scratch:.4f}"]
        cells += [cell for name in pretrained
                  for cell in (f"{scores[name][0]:.4f}", f"{100 * (scores[name][0] - f1_scratch):+.1f}")]
        cells += [f"{em_scratch:.4f}"] + [cell for name in pretrained for cell in (
            f"{scores[name][1]:.4f}", f"{100 * (scores[name][1] - em_scratch):+.1f}")]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    table = "\n".join(lines)
    (out / "label_efficiency.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
