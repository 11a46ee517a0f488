#!/usr/bin/env python
"""Fine-tune a LayoutLM-family model (LayoutLM v1, LayoutLMv2, LayoutXLM, LayoutLMv3, LiLT) for key-information
extraction: one BIO label per word, such as B-total or I-vendor.

    accelerate launch run_invoice_ner.py --dataset_path data/invoices --output_dir runs/invoices \
        --model_name_or_path microsoft/layoutlmv3-base

The same command runs on one CPU, one GPU or several (`accelerate config` / `accelerate launch` flags).
Documents longer than --max_seq_length are split into overlapping windows; predictions are merged back
to one label per word, and every metric is computed on words, not tokens.
"""

import argparse
import os

from accelerate.utils import set_seed
from transformers import AutoModelForTokenClassification

from layoutkit.augment import add_augment_args, augment_training_split
from layoutkit.data import (
    carve_validation_split,
    dataset_preprocessing,
    load_raw_datasets,
    standardize_label_column,
)
from layoutkit.encoding import LayoutCollator
from layoutkit.hp_search import add_hp_search_args, run_hp_search
from layoutkit.losses import add_loss_args, build_loss, parse_class_weights
from layoutkit.modeling import model_family
from layoutkit.ner import BOX_COLUMNS, encode_ner_split, evaluate_ner, model_inputs
from layoutkit.training import (
    HelpFormatter,
    TrainingState,
    add_common_args,
    build_accelerator,
    build_dataloaders,
    epoch_end_hook,
    fit,
    init_tracking,
    load_config_file,
    load_model_and_processing,
    prepare_training,
    restore_best,
    save_run,
    training_summary,
    write_jsonl,
)

TASK = "token-classification"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_args(parser)
    task = parser.add_argument_group("token classification")
    task.add_argument(
        "--label_column_name", help="the column of word labels (a ClassLabel sequence); default ner_tags"
    )
    task.add_argument(
        "--label_all_tokens", action="store_true",
        help="label every sub-token of a word (B- becomes I- after the first), not only the first",
    )
    task.add_argument(
        "--box_level", choices=sorted(BOX_COLUMNS), default="word",
        help="word boxes, or segment boxes (each word carries its line's or entity's box, as LayoutLMv3's "
        "published FUNSD/CORD results do; at inference the OCR line box plays that role)",
    )
    add_loss_args(parser)
    add_augment_args(parser)
    add_hp_search_args(parser)
    return load_config_file(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if args.hp_search:
        run_hp_search(args, train_and_evaluate, metric_name="f1", experiment_name="run_invoice_ner")
    else:
        train_and_evaluate(args)


def train_and_evaluate(args, on_epoch_end=None) -> dict:
    """One training run: data, model, loop, test, save. Returns all_results.json's content."""
    accelerator = build_accelerator(args)
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()

    # ---- data
    raw = standardize_label_column(load_raw_datasets(args), args.label_column_name, "ner_tags")
    # Before augmentation, so no augmented copy of a validation document ends up in train.
    validation_split = carve_validation_split(raw, args.seed)
    accelerator.print(f"validation split: {validation_split}")
    label_names = raw["train"].features["ner_tags"].feature.names
    augment_training_split(accelerator, args, raw)
    id2label = dict(enumerate(label_names))
    label2id = {label: i for i, label in id2label.items()}

    # ---- model
    config, model, tokenizer, image_processor, processor = load_model_and_processing(
        args, AutoModelForTokenClassification, num_labels=len(label_names), id2label=id2label, label2id=label2id
    )
    family = model_family(config)
    # Recorded in config.json so that inference repeats exactly this preprocessing.
    config.document_preprocessing = {
        **dataset_preprocessing(args),
        "box_level": args.box_level,
        "max_seq_length": args.max_seq_length,
        "stride": args.stride,
    }

    with accelerator.main_process_first():
        windows = {
            split: encode_ner_split(
                raw[split], tokenizer, image_processor, family, label_names, args.max_seq_length, args.stride,
                label_all_tokens=args.label_all_tokens, box_level=args.box_level,
                num_proc=args.preprocessing_num_workers, load_from_cache_file=not args.overwrite_cache,
            )
            for split in raw
        }
    collator = LayoutCollator(tokenizer.pad_token_id, args.pad_to_multiple_of, family.image_input)
    train_dataloader, eval_dataloaders, eval_split = build_dataloaders(args, windows, collator)

    class_weights = parse_class_weights(
        args.class_weights, label_names, lambda: [t for tags in raw["train"]["ner_tags"] for t in tags]
    )
    loss_function = build_loss(args, class_weights)

    # ---- optimizer, schedule, accelerate
    model, optimizer, lr_scheduler, train_dataloader, eval_dataloaders, steps_per_epoch, max_train_steps = (
        prepare_training(accelerator, args, model, train_dataloader, eval_dataloaders)
    )
    state = TrainingState(metric_name="f1")
    init_tracking(accelerator, args, "run_invoice_ner")

    accelerator.print(
        f"{len(raw['train'])} training documents in {len(windows['train'])} windows; model {family.model_type}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; {max_train_steps} steps on "
        f"{accelerator.num_processes} processes"
    )

    # ---- train, evaluating on validation (never on test) after every epoch
    def evaluate_validation():
        metrics, _ = evaluate_ner(accelerator, model, eval_dataloaders[eval_split], raw[eval_split], label_names)
        return metrics

    fit(accelerator, args, model, optimizer, lr_scheduler, train_dataloader,
        evaluate_validation if eval_split else None, state, model_inputs=model_inputs, loss_function=loss_function,
        on_epoch_end=epoch_end_hook(accelerator, args, model, processor, TASK, on_epoch_end))

    # ---- final model = best validation epoch (the last one without validation); test on it
    restore_best(accelerator, model, state)
    results = {f"eval_{k}": v for k, v in state.best_metrics.items()}
    results["validation_split"] = validation_split
    results.update(training_summary(state, len(raw["train"]), steps_per_epoch))
    if "test" in eval_dataloaders:
        test_metrics, records = evaluate_ner(accelerator, model, eval_dataloaders["test"], raw["test"], label_names)
        results.update({f"test_{k}": v for k, v in test_metrics.items()})
        accelerator.log({f"test_{k}": v for k, v in test_metrics.items()}, step=state.completed_steps)
        accelerator.print(
            f"test: precision={test_metrics['precision']:.4f} recall={test_metrics['recall']:.4f} "
            f"f1={test_metrics['f1']:.4f} accuracy={test_metrics['accuracy']:.4f}"
        )
        if accelerator.is_main_process:
            write_jsonl(os.path.join(args.output_dir, "test_predictions.jsonl"), records)

    save_run(accelerator, args, model, processor, TASK, label_names, results, state)
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
