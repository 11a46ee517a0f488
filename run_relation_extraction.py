#!/usr/bin/env python
"""Train a LayoutLM-family model (LayoutLM v1, LayoutLMv2, LayoutXLM, LayoutLMv3) to link entities: which answer
belongs to which question on a form, which value to which key.

    accelerate launch run_relation_extraction.py --dataset_path data/funsd --output_dir runs/funsd-links \
        --model_name_or_path microsoft/layoutlmv3-base --relation_types QUESTION:ANSWER

The dataset needs `entity_ids` and `relations` columns (dataset_loader/FORMAT.md; `python -m dataset_loader funsd`
keeps FUNSD's links). Entity spans (gold here) are pooled from the encoder and a biaffine pair classifier scores
every head -> tail pair of candidate types (layoutkit/relation_model.py). Documents longer than --max_seq_length are
split into overlapping windows; a pair's score is the highest of the windows that hold both entities. Metrics are
link precision/recall/F1 on gold entities; with --ner_model_name_or_path the test split is also scored end to end,
on the entities that NER model predicts.
"""

import argparse
import os

from accelerate.utils import set_seed

from layoutkit.data import (
    carve_validation_split,
    dataset_preprocessing,
    load_raw_datasets,
    standardize_label_column,
)
from layoutkit.modeling import model_family
from layoutkit.ner import BOX_COLUMNS
from layoutkit.relation_extraction import (
    RelationCollator,
    RelationModelLoader,
    check_relation_columns,
    document_entities,
    encode_relation_split,
    entity_types_of,
    evaluate_relations,
    model_inputs,
    parse_relation_types,
    predicted_entities,
    relation_types_in,
)
from layoutkit.relations import link_keys, oriented_pairs
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

TASK = "relation-extraction"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_args(parser)
    task = parser.add_argument_group("relation extraction")
    task.add_argument(
        "--label_column_name", help="the column of word labels (a ClassLabel sequence) that types the entities; "
        "default ner_tags"
    )
    task.add_argument(
        "--relation_types",
        help="candidate links as HEAD:TAIL entity types, comma-separated (e.g. QUESTION:ANSWER, the published "
        "FUNSD/XFUND key-value setting); default: every type pair the training relations link",
    )
    task.add_argument("--pooling", choices=["first", "mean"], default="first",
                      help="an entity's vector: its first token's state or the mean of its tokens'")
    task.add_argument("--threshold", type=float, default=0.5, help="link probability from which a pair is a link")
    task.add_argument("--all_heads_per_tail", action="store_true",
                      help="keep every head above --threshold for a tail; default: only its best one (an answer "
                      "belongs to one question, a value to one key)")
    task.add_argument("--box_level", choices=sorted(BOX_COLUMNS), default="word",
                      help="word boxes, or segment boxes (each word carries its line's or entity's box)")
    task.add_argument("--ner_model_name_or_path",
                      help="a token-classification checkpoint (run_invoice_ner.py) whose predicted entities the test "
                      "split is also scored on (end to end); its entity types must be the dataset's")
    return load_config_file(parser, argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = build_accelerator(args)
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()

    # ---- data: documents, their gold entities and the links the task scores
    raw = standardize_label_column(load_raw_datasets(args), args.label_column_name, "ner_tags")
    for split in raw:
        check_relation_columns(raw[split], split)
    validation_split = carve_validation_split(raw, args.seed)
    accelerator.print(f"validation split: {validation_split}")
    label_names = raw["train"].features["ner_tags"].feature.names
    entity_types = entity_types_of(label_names)
    candidates = parse_relation_types(args.relation_types, entity_types) or relation_types_in(raw["train"], label_names)
    accelerator.print(f"candidate links: {', '.join(f'{h} -> {t}' for h, t in candidates)}")
    entities = {split: document_entities(raw[split], label_names) for split in raw}
    pairs = {split: [oriented_pairs(e, r, candidates) for e, r in zip(entities[split], raw[split]["relations"])]
             for split in raw}
    gold_links = {split: [link_keys(e, p) for e, p in zip(entities[split], pairs[split])] for split in raw}

    # ---- model: encoder + entity pooling + biaffine pair classifier
    config, model, tokenizer, image_processor, processor = load_model_and_processing(
        args, RelationModelLoader(entity_types, candidates, args.pooling)
    )
    family = model_family(config)
    # Recorded in config.json so that inference repeats exactly this preprocessing.
    model.config.document_preprocessing = {
        **dataset_preprocessing(args),
        "box_level": args.box_level,
        "max_seq_length": args.max_seq_length,
        "stride": args.stride,
    }
    model.config.threshold = args.threshold
    model.config.one_head_per_tail = not args.all_heads_per_tail
    decision = dict(threshold=args.threshold, one_head_per_tail=not args.all_heads_per_tail)

    def encode(split, split_entities, split_pairs):
        return encode_relation_split(
            raw[split], split_entities, split_pairs, tokenizer, image_processor, family, entity_types,
            args.max_seq_length, args.stride, box_level=args.box_level, num_proc=args.preprocessing_num_workers,
            load_from_cache_file=not args.overwrite_cache,
        )

    with accelerator.main_process_first():
        windows = {split: encode(split, entities[split], pairs[split]) for split in raw}
    collator = RelationCollator(tokenizer.pad_token_id, args.pad_to_multiple_of, family.image_input)
    train_dataloader, eval_dataloaders, eval_split = build_dataloaders(args, windows, collator)

    # ---- optimizer, schedule, accelerate
    model, optimizer, lr_scheduler, train_dataloader, eval_dataloaders, steps_per_epoch, max_train_steps = (
        prepare_training(accelerator, args, model, train_dataloader, eval_dataloaders)
    )
    state = TrainingState(metric_name="f1")
    init_tracking(accelerator, args, "run_relation_extraction")
    accelerator.print(
        f"{len(raw['train'])} training documents in {len(windows['train'])} windows, "
        f"{sum(len(p) for p in pairs['train'])} links; encoder {family.model_type}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; {max_train_steps} steps on "
        f"{accelerator.num_processes} processes"
    )

    # ---- train, evaluating on validation (never on test) after every epoch
    def evaluate_validation():
        metrics, _ = evaluate_relations(accelerator, model, eval_dataloaders[eval_split], raw[eval_split],
                                        entities[eval_split], gold_links[eval_split], **decision)
        return metrics

    fit(accelerator, args, model, optimizer, lr_scheduler, train_dataloader,
        evaluate_validation if eval_split else None, state, model_inputs=model_inputs,
        on_epoch_end=epoch_end_hook(accelerator, args, model, processor, TASK))

    # ---- final model = best validation epoch; test on gold entities, and end to end with an NER model
    restore_best(accelerator, model, state)
    results = {f"eval_{k}": v for k, v in state.best_metrics.items()}
    results["validation_split"] = validation_split
    results["relation_types"] = [f"{h}:{t}" for h, t in candidates]
    results.update(training_summary(state, len(raw["train"]), steps_per_epoch))
    if "test" in eval_dataloaders:
        test_metrics, records = evaluate_relations(accelerator, model, eval_dataloaders["test"], raw["test"],
                                                   entities["test"], gold_links["test"], **decision)
        results.update({f"test_{k}": v for k, v in test_metrics.items()})
        accelerator.print(f"test (gold entities): precision={test_metrics['precision']:.4f} "
                          f"recall={test_metrics['recall']:.4f} f1={test_metrics['f1']:.4f}")
        if args.ner_model_name_or_path:
            predicted = predicted_entities(accelerator, args, args.ner_model_name_or_path, raw["test"])
            dataloader = accelerator.prepare(build_dataloaders(
                args, {"train": windows["train"], "test": encode("test", predicted, [set()] * len(predicted))},
                collator)[1]["test"])
            e2e, _ = evaluate_relations(accelerator, model, dataloader, raw["test"], predicted, gold_links["test"],
                                        **decision)
            results.update({f"test_end_to_end_{k}": v for k, v in e2e.items()})
            accelerator.print(f"test (predicted entities): precision={e2e['precision']:.4f} "
                              f"recall={e2e['recall']:.4f} f1={e2e['f1']:.4f}")
        accelerator.log({f"test_{k}": v for k, v in results.items() if k.startswith("test_")},
                        step=state.completed_steps)
        if accelerator.is_main_process:
            write_jsonl(os.path.join(args.output_dir, "test_predictions.jsonl"), records)

    save_run(accelerator, args, model, processor, TASK, entity_types, results, state)
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
