#!/usr/bin/env python
"""Fine-tune a LayoutLM-family model (LayoutLM v1, LayoutLMv2, LayoutXLM, LayoutLMv3, LiLT) for document image
classification: one class per document, such as invoice, receipt or letter.

    python -m dataset_loader classify --data-dir data/ --output datasets/doctypes [--ocr]
    accelerate launch run_doc_classification.py --dataset_path datasets/doctypes --output_dir runs/doctypes \
        --model_name_or_path microsoft/layoutlmv3-base

Documents longer than --max_seq_length are split into overlapping windows. Training uses every window with
its document's label; evaluation and the saved pipeline classify a document by the MEAN of its windows'
logits. Every metric (accuracy, macro/weighted F1, per-class precision/recall/F1) is computed on documents.
The output folder gets confusion_matrix.png, misclassified.jsonl and all_results.json besides the model.
"""

import argparse
import os

from accelerate.utils import set_seed
from transformers import AutoModelForSequenceClassification

from layoutkit.augment import add_augment_args, augment_training_split
from layoutkit.classification import (
    ClassificationCollator,
    encode_classification_split,
    evaluate_classification,
    majority_baseline,
    model_inputs,
    write_reports,
)
from layoutkit.data import carve_validation_split, dataset_preprocessing, load_raw_datasets
from layoutkit.hp_search import add_hp_search_args, run_hp_search
from layoutkit.losses import add_loss_args, build_loss, parse_class_weights
from layoutkit.modeling import model_family
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
    log_figure,
    prepare_training,
    restore_best,
    save_run,
    training_summary,
    write_jsonl,
)

TASK = "image-classification"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_args(parser)
    task = parser.add_argument_group("document classification")
    task.add_argument(
        "--metric_for_best_model", choices=["accuracy", "f1_macro"], default="accuracy",
        help="validation metric that picks the best epoch and drives early stopping",
    )
    task.add_argument("--label_column_name", "--label_column", dest="label_column", default="label",
                      help="the ClassLabel column")
    task.add_argument(
        "--ocr_lang", default="eng",
        help="Tesseract language for datasets without words (a Hub imagefolder): OCR runs once, then is cached",
    )
    add_loss_args(parser)
    add_augment_args(parser)
    add_hp_search_args(parser)
    return load_config_file(parser, argv)


def add_ocr_words(raw, lang: str, num_proc=None):
    """Words and pixel boxes for datasets that come without them (plain image folders): Tesseract, once."""
    from layoutkit.boxes import load_page
    from layoutkit.ocr import ocr_page

    def ocr(example):
        result = ocr_page(load_page(example["image"]), lang=lang)
        return {"words": result.words, "bboxes": result.boxes}

    return raw.map(ocr, num_proc=num_proc, desc="OCR (once; cached)")


def main(argv=None):
    args = parse_args(argv)
    if args.hp_search:
        run_hp_search(args, train_and_evaluate, metric_name=args.metric_for_best_model,
                      experiment_name="run_doc_classification")
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
    raw = load_raw_datasets(args)
    # Before augmentation, so no augmented copy of a validation document ends up in train.
    validation_split = carve_validation_split(raw, args.seed)
    accelerator.print(f"validation split: {validation_split}")
    if args.label_column not in raw["train"].column_names:
        raise ValueError(f"no {args.label_column!r} column in the dataset ({raw['train'].column_names}); "
                         "pass --label_column_name")
    label_names = raw["train"].features[args.label_column].names
    if "words" not in raw["train"].column_names:
        with accelerator.main_process_first():
            raw = add_ocr_words(raw, args.ocr_lang, args.preprocessing_num_workers)
    augment_training_split(accelerator, args, raw)
    id2label = dict(enumerate(label_names))
    label2id = {label: i for i, label in id2label.items()}

    # ---- model
    config, model, tokenizer, image_processor, processor = load_model_and_processing(
        args, AutoModelForSequenceClassification, num_labels=len(label_names), id2label=id2label, label2id=label2id
    )
    family = model_family(config)
    # Recorded in config.json so that the pipeline repeats exactly this preprocessing.
    config.document_preprocessing = {
        **dataset_preprocessing(args),
        "max_seq_length": args.max_seq_length,
        "stride": args.stride,
        "document_aggregation": "mean_window_logits",
    }

    with accelerator.main_process_first():
        windows = {
            split: encode_classification_split(
                raw[split], tokenizer, image_processor, family, args.max_seq_length, args.stride,
                label_column=args.label_column, num_proc=args.preprocessing_num_workers,
                load_from_cache_file=not args.overwrite_cache,
            )
            for split in raw
        }
    collator = ClassificationCollator(tokenizer.pad_token_id, args.pad_to_multiple_of, family.image_input)
    train_dataloader, eval_dataloaders, eval_split = build_dataloaders(args, windows, collator)

    class_weights = parse_class_weights(args.class_weights, label_names, lambda: raw["train"][args.label_column])
    loss_function = build_loss(args, class_weights)

    # ---- optimizer, schedule, accelerate
    model, optimizer, lr_scheduler, train_dataloader, eval_dataloaders, steps_per_epoch, max_train_steps = (
        prepare_training(accelerator, args, model, train_dataloader, eval_dataloaders)
    )
    state = TrainingState(metric_name=args.metric_for_best_model)
    init_tracking(accelerator, args, "run_doc_classification")

    accelerator.print(
        f"{len(raw['train'])} training documents in {len(windows['train'])} windows, {len(label_names)} classes; "
        f"model {family.model_type}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; "
        f"{max_train_steps} steps"
    )

    # ---- train, evaluating on validation documents (never on test) after every epoch
    def evaluate_validation():
        metrics, _, _ = evaluate_classification(
            accelerator, model, eval_dataloaders[eval_split], raw[eval_split], label_names, args.label_column
        )
        return metrics

    fit(accelerator, args, model, optimizer, lr_scheduler, train_dataloader,
        evaluate_validation if eval_split else None, state, model_inputs=model_inputs, loss_function=loss_function,
        on_epoch_end=epoch_end_hook(accelerator, args, model, processor, TASK, on_epoch_end))

    # ---- final model = best validation epoch (the last one without validation); test on it
    restore_best(accelerator, model, state)
    results = {f"eval_{k}": v for k, v in state.best_metrics.items()}
    results["metric_for_best_model"] = args.metric_for_best_model
    results["validation_split"] = validation_split
    results.update(training_summary(state, len(raw["train"]), steps_per_epoch))
    report_split = "test" if "test" in eval_dataloaders else eval_split
    if report_split is not None:
        metrics, records, matrix = evaluate_classification(
            accelerator, model, eval_dataloaders[report_split], raw[report_split], label_names, args.label_column
        )
        prefix = "test" if report_split == "test" else "eval"
        results.update({f"{prefix}_{k}": v for k, v in metrics.items()})
        results[f"{prefix}_majority_baseline_accuracy"] = majority_baseline(
            raw["train"][args.label_column], raw[report_split][args.label_column]
        )
        accelerator.log({f"{prefix}_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                        step=state.completed_steps)
        accelerator.print(
            f"{report_split}: accuracy={metrics['accuracy']:.4f} f1_macro={metrics['f1_macro']:.4f} "
            f"f1_weighted={metrics['f1_weighted']:.4f} (majority baseline "
            f"{results[f'{prefix}_majority_baseline_accuracy']:.4f})"
        )
        if accelerator.is_main_process:
            figure = write_reports(args.output_dir, records, matrix, label_names, report_split)
            log_figure(accelerator, figure, "confusion_matrix.png")
            write_jsonl(os.path.join(args.output_dir, f"{report_split}_predictions.jsonl"), records)
    save_run(accelerator, args, model, processor, TASK, label_names, results, state)
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
