"""One encoding path: for every task, the windows a page becomes at training time (the task's `Dataset.map`
encoding, run by the driver) are exactly those its pipeline builds from the same page at inference (tokens, boxes,
word ids, page pixels; for relations also the entity columns)."""

import numpy as np
from datasets import ClassLabel, load_from_disk

# Small windows, so a page spans several and the stride matters.
WINDOWS = ["--max_seq_length", "48", "--stride", "12"]


def task_and_model(task_class, dataset_path, checkpoint, tmp_path, *flags):
    """The task as the driver builds it, with its data read and a model loaded as for training (from scratch)."""
    from layoutkit.pipelines.modeling import model_family
    from layoutkit.train import driver
    from layoutkit.train.data import load_raw_datasets
    from layoutkit.train.model_setup import load_config, load_model_and_processing

    args = driver.parse_args(task_class, ["--dataset_path", str(dataset_path), "--output_dir", str(tmp_path / "run"),
                                          "--config_name", str(checkpoint), *WINDOWS, *flags])
    task = task_class(args)
    raw = task.prepare_dataset(None, load_raw_datasets(args.data))
    task.read_labels(raw)
    config = load_config(args.model)
    model, tokenizer, image_processor, _ = load_model_and_processing(
        args.model, config, args.data.max_seq_length, task.model_class(), **task.config_kwargs()
    )
    model.config.document_preprocessing = task.document_preprocessing()
    task.configure_model(model.config)
    processing = driver.Processing(tokenizer, image_processor, model_family(config))
    return task, raw, model, processing


PAGE_COLUMNS = ["input_ids", "attention_mask", "bbox", "word_ids", "pixel_values"]


def assert_one_encoding(task_class, pipeline_class, dataset_path, checkpoint, tmp_path, *flags,
                        columns=PAGE_COLUMNS, page_inputs=lambda row: {}):
    """The training windows of the first test document equal the pipeline's windows of that page."""
    task, raw, model, processing = task_and_model(task_class, dataset_path, checkpoint, tmp_path, *flags)
    windows = task.encode(raw, "test", processing)
    pipe = pipeline_class(model=model, tokenizer=processing.tokenizer, image_processor=processing.image_processor,
                          device="cpu")
    row = raw["test"][0]
    inferred = pipe.preprocess({"image": row["image"], "words": row["words"], "boxes": row["bboxes"],
                                **page_inputs(row)})["windows"]
    # The relation pipeline drops windows without entities (they have no pair to score).
    trained = [w for w in windows if w["doc_index"] == 0 and ("entity_labels" not in w or len(w["entity_labels"]))]
    assert len(inferred) == len(trained) > 1
    for trained_window, inferred_window in zip(trained, inferred):
        for column in columns:
            assert np.array_equal(np.asarray(trained_window[column]), np.asarray(inferred_window[column])), column


def test_token_classification_encodes_a_page_once(invoice_dataset, scratch_checkpoint, tmp_path):
    from layoutkit.pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline
    from layoutkit.train.ner_task import TokenClassificationTask

    assert_one_encoding(TokenClassificationTask, LayoutTokenClassificationPipeline, invoice_dataset,
                        scratch_checkpoint("layoutlmv3"), tmp_path)


def test_document_classification_encodes_a_page_once(invoice_dataset, scratch_checkpoint, tmp_path):
    from layoutkit.pipelines.document_classification_pipeline import LayoutDocumentClassificationPipeline
    from layoutkit.train.classification_task import DocumentClassificationTask

    classes = tmp_path / "classes"
    dataset = load_from_disk(str(invoice_dataset))
    dataset = dataset.map(lambda row, index: {"label": index % 2}, with_indices=True)
    dataset.cast_column("label", ClassLabel(names=["invoice", "receipt"])).save_to_disk(str(classes))
    (classes / "preprocessing.json").write_text((invoice_dataset / "preprocessing.json").read_text())
    assert_one_encoding(DocumentClassificationTask, LayoutDocumentClassificationPipeline, classes,
                        scratch_checkpoint("layoutlmv3"), tmp_path)


def test_relation_extraction_encodes_a_page_once(invoice_dataset, scratch_checkpoint, tmp_path):
    from layoutkit.pipelines.relation_extraction_pipeline import LayoutRelationExtractionPipeline
    from layoutkit.train.relation_task import RelationExtractionTask

    # Entities from the word labels (a new entity at each B-), no links: the encoding is what is compared.
    linked = tmp_path / "entities"
    dataset = load_from_disk(str(invoice_dataset))
    names = dataset["train"].features["ner_tags"].feature.names

    def entity_ids(row):
        ids, current = [], -1
        for tag in row["ner_tags"]:
            current += names[tag].startswith("B-")
            ids.append(current if names[tag] != "O" else -1)
        return {"entity_ids": ids, "relations": []}

    dataset.map(entity_ids).save_to_disk(str(linked))
    (linked / "preprocessing.json").write_text((invoice_dataset / "preprocessing.json").read_text())
    types = sorted({name[2:] for name in names if name != "O"})
    assert_one_encoding(
        RelationExtractionTask, LayoutRelationExtractionPipeline, linked, scratch_checkpoint("layoutlmv3"), tmp_path,
        "--relation_types", f"{types[0]}:{types[1]}", columns=[*PAGE_COLUMNS, "entity_index", "entity_labels"],
        page_inputs=lambda row: {"entity_ids": row["entity_ids"], "labels": [names[t] for t in row["ner_tags"]]},
    )
