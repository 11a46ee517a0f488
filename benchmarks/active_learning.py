#!/usr/bin/env python
"""Active learning: test entity F1 against the number of labelled documents when the documents to label next are
picked by the model's uncertainty (`predict.py --labelstudio --order uncertainty`) or at random.

    python -m dataset_loader synth --output data/al_invoices --num_docs 500 --seed 11
    python -m dataset_loader build --data_dir data/al_invoices --output data/al_dataset --seed 0 --overwrite
    python benchmarks/active_learning.py --data_dir data/al_invoices --dataset_path data/al_dataset \
        --output_dir runs/active-learning --shares 0.1 0.2 0.35 0.5 --seeds 1 2 3

The pool is the dataset's train split (an annotator labels pool documents); validation picks each run's epoch; test
gives the curve and nothing else. Per seed, the first round labels a random `--shares[0]` of the pool, shared by both
strategies. Each later round adds documents until the next share is labelled, chosen

- `random`: uniformly among the still-unlabelled pool documents (seeded);
- `uncertainty-MEASURE`, one strategy per `--measures` value (`predict.py --uncertainty`): the most uncertain
  still-unlabelled documents according to the model of the previous round of the same strategy, with `predict.py`'s
  own path: the checkpoint's pipeline on the document's annotated words and boxes (`predict.py --words_json`),
  `predict_document` (fields with the checkpoint's calibrated scores), and `labelstudio_format.uncertainty_rank`
  (`lowest_score`: 1 - the lowest calibrated field score; `expected_corrections`: the sum of 1 - calibrated score
  over the values plus the required fields not found; `word_errors`: the sum of 1 - the model's word scores; ties
  broken by the model's own value scores); remaining ties keep the pool's order, as `--order uncertainty` keeps the
  input order.

The measures were compared with this script on a development pool (invoices of another generator seed, its own
validation and test), not on the pool whose curve is reported; none did better, so `predict.py` keeps `lowest_score`
by default (docs/trust.md).

Every round fine-tunes from scratch (`layoutkit train-ner`, the same scratch config and tokenizer built from the
pool's words, the same seed) for the same budget in optimizer steps (`--train_steps`): the labelled documents are
repeated to `--epoch_documents` training documents, so every run has the same steps and the same number of
validation passes whatever its share (a small set is seen over more passes, not for fewer steps). Prints a Markdown
table of mean +- sample standard deviation over the seeds, and the share at which uncertainty first reaches the F1
random gets at `--target_share`; writes results.json and learning_curve.png.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------- selection
def pick_random(unlabelled: list[str], count: int, rng: random.Random) -> list[str]:
    """`count` documents drawn uniformly from `unlabelled` (in pool order) with the caller's seeded `rng`."""
    return rng.sample(list(unlabelled), min(count, len(unlabelled)))


def pick_most_uncertain(unlabelled: list[str], uncertainty: dict[str, float | list[float]], count: int) -> list[str]:
    """The `count` documents of `unlabelled` with the highest uncertainty; equal uncertainties keep the order of
    `unlabelled` (sorted is stable), as predict.py's `--order uncertainty` keeps the input order."""
    missing = [doc_id for doc_id in unlabelled if doc_id not in uncertainty]
    if missing:
        raise KeyError(f"no uncertainty for {len(missing)} unlabelled documents, e.g. {missing[:3]}")
    return sorted(unlabelled, key=lambda doc_id: uncertainty[doc_id], reverse=True)[:count]


def share_counts(pool_size: int, shares: list[float]) -> list[int]:
    """The number of labelled documents at each share of the pool (at least one, strictly increasing)."""
    counts = [max(1, round(share * pool_size)) for share in shares]
    if any(b <= a for a, b in zip(counts, counts[1:])) or counts[-1] > pool_size:
        raise ValueError(f"--shares {shares} of a pool of {pool_size} give {counts} documents; the shares must "
                         "increase, give distinct counts and stay <= 1")
    return counts


def first_share_reaching(shares: list[float], f1s: list[float], target: float) -> float | None:
    """The smallest share whose F1 is at least `target`; None when none is."""
    return next((share for share, f1 in zip(shares, f1s) if f1 >= target), None)


# ----------------------------------------------------------------------------------------- uncertainty
def pool_uncertainty(checkpoint: Path, data_dir: Path, doc_ids: list[str], measure: str) -> dict[str, list[float]]:
    """uncertainty_rank of each document as `predict.py --words_json annotations/ID.json --labelstudio ...
    --order uncertainty --uncertainty MEASURE` computes it with `checkpoint`."""
    from layoutkit.apps.documents import image_pages
    from layoutkit.apps.document_prediction import predict_document
    from layoutkit.apps.labelstudio_format import uncertainty_rank
    from layoutkit.apps.pipeline_loader import load_predictor
    from layoutkit.apps.predict import read_words_json
    from layoutkit.apps.settings import InferenceSettings

    settings = InferenceSettings(model_name_or_path=str(checkpoint), device="cpu")
    extractor = load_predictor(settings.model_name_or_path, backend=settings.backend, task="token-classification",
                               device="cpu")
    uncertainty = {}
    for doc_id in doc_ids:
        words_json = data_dir / "annotations" / f"{doc_id}.json"
        if not words_json.is_file():
            raise FileNotFoundError(f"{words_json}: pool document {doc_id} has no annotation file; --data_dir must "
                                    "be the folder --dataset_path was built from")
        words_pages = read_words_json(words_json)
        image = words_pages[0]["image_path"]
        result, _ = predict_document(extractor, image, image_pages(image, settings.max_image_pixels), words_pages,
                                     settings, batch_size=8, words_source=str(words_json))
        uncertainty[doc_id] = list(uncertainty_rank(result, measure))
    return uncertainty


def saved_or_scored(checkpoint: Path, data_dir: Path, unlabelled: list[str], measure: str) -> tuple[dict, str]:
    """pool_uncertainty of `unlabelled`, saved beside the checkpoint as pool_uncertainty-MEASURE.json; a re-run (an
    interrupted benchmark, or seeds run in separate processes into one --output_dir) reads the saved scores when
    they cover exactly the same documents. Returns the scores and what was done ("scored" or "read the scores of")."""
    path = checkpoint / f"pool_uncertainty-{measure}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if set(saved) == set(unlabelled):
            return saved, "read the scores of"
    uncertainty = pool_uncertainty(checkpoint, data_dir, unlabelled, measure)
    path.write_text(json.dumps(uncertainty, indent=1) + "\n")
    return uncertainty, "scored"


# ----------------------------------------------------------------------------------------- training
def train_round(args, raw, labelled: list[str], scratch: Path, seed: int, run_dir: Path) -> dict:
    """Fine-tune from scratch on the `labelled` pool documents; returns the run's all_results.json (reused when the
    run is already there, so an interrupted benchmark resumes)."""
    from datasets import DatasetDict

    from layoutkit.cli import main as layoutkit

    results_path = run_dir / "all_results.json"
    if results_path.is_file():
        return json.loads(results_path.read_text())
    position = {doc_id: index for index, doc_id in enumerate(raw["train"]["id"])}
    rows = [position[doc_id] for doc_id in labelled]
    # The labelled documents repeated to one fixed-size epoch: the same steps and validation passes for every share.
    repeats = max(1, round(args.epoch_documents / len(rows)))
    data_dir = run_dir.parent / f"{run_dir.name}-data"
    DatasetDict(train=raw["train"].select(rows * repeats), validation=raw["validation"],
                test=raw["test"]).save_to_disk(str(data_dir))
    started = time.perf_counter()
    code = layoutkit(["train-ner", "--dataset_path", str(data_dir), "--config_name", str(scratch),
                      "--output_dir", str(run_dir), "--max_train_steps", str(args.train_steps),
                      "--num_train_epochs", "1000", "--learning_rate", str(args.learning_rate),
                      "--warmup_ratio", "0.1", "--per_device_train_batch_size", str(args.batch_size),
                      "--seed", str(seed)])
    if code:
        sys.exit(f"train-ner failed for {run_dir} (exit {code})")
    results = json.loads(results_path.read_text())
    print(f"  {run_dir.name}: {len(labelled)} documents (x{repeats}), test F1 {results['test_f1']:.4f}, best epoch "
          f"{results['best_epoch']}, {time.perf_counter() - started:.0f} s", flush=True)
    return results


def run_seed(args, raw, pool: list[str], counts: list[int], scratch: Path, seed: int) -> dict[str, list[dict]]:
    """Both strategies' rounds for one seed: {strategy: [{"documents", "test_f1", "labelled"}, ...]}."""
    out = args.output_dir / f"seed{seed}"
    picker = random.Random(seed)
    start = sorted(pick_random(pool, counts[0], picker), key=pool.index)
    first = train_round(args, raw, start, scratch, seed, out / f"shared-{counts[0]}")
    curves = {}
    for strategy in strategies(args):
        rng = random.Random(f"{seed}-{strategy}")
        labelled, results = list(start), first
        curve = [{"documents": len(labelled), "test_f1": results["test_f1"], "labelled": list(labelled)}]
        for count in counts[1:]:
            unlabelled = [doc_id for doc_id in pool if doc_id not in set(labelled)]
            need = count - len(labelled)
            if strategy == "random":
                chosen = pick_random(unlabelled, need, rng)
            else:
                started = time.perf_counter()
                previous = out / f"{strategy}-{len(labelled)}"
                checkpoint = out / f"shared-{counts[0]}" if len(labelled) == counts[0] else previous
                measure = strategy[len("uncertainty-"):]
                uncertainty, scored = saved_or_scored(checkpoint, args.data_dir, unlabelled, measure)
                chosen = pick_most_uncertain(unlabelled, uncertainty, need)
                # Calibrated scores are step functions (isotonic): many documents can share the cut-off value, and
                # among those the pool's order decides, as the input order does for predict.py.
                # A rank is (the measure, 1 - the model's own lowest value score): ties need both equal.
                ranks = {doc_id: tuple(rank) for doc_id, rank in uncertainty.items()}
                cut = min(ranks[d] for d in chosen)
                print(f"  {scored} {len(unlabelled)} unlabelled documents in {time.perf_counter() - started:.0f} s; "
                      f"picked {measure} {cut[0]:.3f}...{max(ranks[d][0] for d in chosen):.3f} (pool "
                      f"mean {statistics.mean(rank[0] for rank in ranks.values()):.3f}; "
                      f"{sum(rank == cut for rank in ranks.values())} documents at the cut-off rank, "
                      f"{sum(rank > cut for rank in ranks.values())} above it)", flush=True)
            labelled += chosen
            results = train_round(args, raw, labelled, scratch, seed, out / f"{strategy}-{count}")
            curve.append({"documents": count, "test_f1": results["test_f1"], "labelled": list(labelled)})
        curves[strategy] = curve
    if args.ceiling:
        results = train_round(args, raw, pool, scratch, seed, out / f"all-{len(pool)}")
        curves["all"] = [{"documents": len(pool), "test_f1": results["test_f1"]}]
    return curves


# ----------------------------------------------------------------------------------------- report
def mean_and_spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def strategies(args) -> list[str]:
    """random, then one uncertainty strategy per --measures value."""
    return ["random"] + [f"uncertainty-{measure}" for measure in args.measures]


def report(args, pool_size: int, counts: list[int], by_seed: dict[int, dict]) -> str:
    shares = [count / pool_size for count in counts]
    f1 = {strategy: [mean_and_spread([by_seed[seed][strategy][i]["test_f1"] for seed in args.seeds])
                     for i in range(len(counts))] for strategy in strategies(args)}
    measured = strategies(args)[1:]
    header = [f"labelled documents (share of the {pool_size}-document pool)", "random: test F1"]
    header += [column for strategy in measured for column in (f"{strategy}: test F1", f"{strategy} - random (points)")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, count in enumerate(counts):
        r, r_sd = f1["random"][i]
        cells = [f"{count} ({shares[i]:.0%})", f"{r:.4f} +- {r_sd:.4f}"]
        for strategy in measured:
            u, u_sd = f1[strategy][i]
            cells += [f"{u:.4f} +- {u_sd:.4f}", f"{100 * (u - r):+.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if args.ceiling:
        c, c_sd = mean_and_spread([by_seed[seed]["all"][0]["test_f1"] for seed in args.seeds])
        lines.append(f"| {pool_size} (100%, ceiling) | {c:.4f} +- {c_sd:.4f} |" + " (same) | |" * len(measured))
    target_index = min(range(len(shares)), key=lambda i: abs(shares[i] - args.target_share))
    target = f1["random"][target_index][0]
    lines.append("")
    for strategy in measured:
        reached = first_share_reaching(shares, [mean for mean, _ in f1[strategy]], target)
        met = reached is not None and reached <= args.bar_share + 1e-9
        lines.append(f"{strategy} first reaches random's mean F1 at {shares[target_index]:.0%} ({target:.4f}) at "
                     + (f"{reached:.0%} of the pool" if reached is not None else "no measured share")
                     + f"; bar (<= {args.bar_share:.0%}): {'met' if met else 'not met'}.")
    return "\n".join(lines)


def plot(args, pool_size: int, counts: list[int], by_seed: dict[int, dict], path: Path) -> None:
    from layoutkit.figures import curve_figure

    series = {}
    for strategy in strategies(args):
        values = [mean_and_spread([by_seed[s][strategy][i]["test_f1"] for s in args.seeds]) for i in range(len(counts))]
        series[strategy] = ([100 * c / pool_size for c in counts], [m for m, _ in values], [sd for _, sd in values])
    figure = curve_figure(series, "labelled documents (% of the pool)", "test entity F1",
                          f"Active learning, {len(args.seeds)} seeds (mean +- sd)")
    figure.savefig(path, dpi=120)


def main(argv=None) -> None:
    from layoutkit.apps.labelstudio_format import UNCERTAINTY_MEASURES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True,
                        help="the annotation folder (images/ + annotations/) --dataset_path was built from")
    parser.add_argument("--dataset_path", type=Path, required=True, help="train (the pool), validation, test")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--model_type", default="layoutlm", choices=["layoutlm", "lilt", "layoutlmv3"])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--vocab_size", type=int, default=4000)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.2, 0.35, 0.5])
    parser.add_argument("--ceiling", action="store_true", help="also train on the whole pool (per seed)")
    parser.add_argument("--measures", nargs="+", default=["lowest_score"], choices=sorted(UNCERTAINTY_MEASURES),
                        help="predict.py --uncertainty measures compared with random order, one strategy each")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--train_steps", type=int, default=300, help="optimizer steps of every run")
    parser.add_argument("--epoch_documents", type=int, default=400,
                        help="labelled documents are repeated to about this many per epoch (validation per epoch)")
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--target_share", type=float, default=0.5, help="random's F1 at this share is the target")
    parser.add_argument("--bar_share", type=float, default=0.35, help="uncertainty must reach it at <= this share")
    args = parser.parse_args(argv)

    from datasets import load_from_disk

    raw = load_from_disk(str(args.dataset_path))
    missing = {"train", "validation", "test"} - set(raw)
    if missing:
        sys.exit(f"--dataset_path {args.dataset_path}: no {sorted(missing)} split(s); build it with "
                 "`python -m dataset_loader build`")
    pool = list(raw["train"]["id"])
    counts = share_counts(len(pool), args.shares)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    scratch = args.output_dir / f"scratch-{args.model_type}-{args.size}"
    if not (scratch / "config.json").is_file():
        from layoutkit.apps.scratch import build_scratch_checkpoint, dataset_words

        build_scratch_checkpoint(str(scratch), args.model_type, dataset_words(str(args.dataset_path)), args.size,
                                 args.vocab_size)
    print(f"pool {len(pool)} documents; labelled per round {counts}; validation {len(raw['validation'])}, test "
          f"{len(raw['test'])}; {args.train_steps} steps per run", flush=True)

    by_seed = {}
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        by_seed[seed] = run_seed(args, raw, pool, counts, scratch, seed)
    table = report(args, len(pool), counts, by_seed)
    (args.output_dir / "results.json").write_text(json.dumps(
        {"pool": len(pool), "counts": counts, "flags": {k: str(v) for k, v in vars(args).items()},
         "by_seed": by_seed}, indent=1) + "\n")
    (args.output_dir / "active_learning.md").write_text(table + "\n")
    plot(args, len(pool), counts, by_seed, args.output_dir / "learning_curve.png")
    print(table)


if __name__ == "__main__":
    main()
