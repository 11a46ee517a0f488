"""run_pretraining.py (masked language modelling with layout) on tiny from-scratch models: every family's path to a
saved checkpoint that the token-classification Auto class loads without re-initialising the encoder, the
whole-word masking, that the masked-LM loss goes down, and that run_invoice_ner.py fine-tunes the result."""

import json
import sys

import pytest
import torch

from conftest import REPO_ROOT, run_command

PRETRAIN = ["--max_seq_length", "128", "--stride", "32", "--learning_rate", "2e-3", "--per_device_train_batch_size",
            "8", "--max_train_samples", "12", "--max_eval_samples", "4", "--max_train_steps", "3", "--seed", "7"]


def detectron2_missing() -> bool:
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return True
    return False


FAMILIES = ["layoutlm", "lilt", "layoutlmv3", pytest.param("layoutlmv2", marks=pytest.mark.skipif(
    detectron2_missing(), reason="LayoutLMv2's visual backbone needs detectron2 (scripts/install_detectron2.sh)"))]
HEADS = {"layoutlm": "cls.", "lilt": "mlm_head.", "layoutlmv3": "mlm_head.", "layoutlmv2": "mlm_head."}


@pytest.mark.parametrize("model_type", FAMILIES)
def test_each_family_pretrains_into_a_checkpoint_token_classification_loads(
        model_type, invoice_dataset, scratch_checkpoint, tmp_path):
    from transformers import AutoModelForTokenClassification

    from layoutkit.train.pretraining_task import main

    output = tmp_path / f"pretrained-{model_type}"
    results = main(["--dataset_path", str(invoice_dataset), "--config_name", str(scratch_checkpoint(model_type)),
                    "--output_dir", str(output), *PRETRAIN])
    assert results["train_steps"] == 3 and results["pretraining_pages"] == 12
    assert "test_loss" not in results  # the test split is dropped, never read
    assert results["eval_masked_tokens"] > 0 and results["eval_loss"] > 0

    # The encoder loads as is: only the new classifier is initialised, only the masked-LM head is left over.
    model, info = AutoModelForTokenClassification.from_pretrained(output, num_labels=3, output_loading_info=True)
    assert info["missing_keys"] and all(key.startswith("classifier.") for key in info["missing_keys"]), info
    assert info["unexpected_keys"] and all(key.startswith(HEADS[model_type]) for key in info["unexpected_keys"])
    saved = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(output / "model.safetensors"))
    encoder = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    assert all(torch.equal(saved[k], v) for k, v in encoder.items() if k in saved)
    # Continuing pretraining from the output loads every weight, the masked-LM head's included, unchanged.
    from transformers import AutoConfig

    from layoutkit.train.masked_lm import MaskedLayoutModel

    again, info = MaskedLayoutModel.from_pretrained(output, config=AutoConfig.from_pretrained(output),
                                                    output_loading_info=True)
    assert not any(info.values()), info
    weights = again.state_dict()  # v1's tied decoder is not saved separately: the embeddings are
    assert set(saved) <= set(weights) and all(torch.equal(v, weights[k]) for k, v in saved.items())
    card = (output / "README.md").read_text()
    assert "masked language modelling" in card and "3 optimizer steps" in card and "12 pages" in card
    assert "custom_pipelines" not in json.loads((output / "config.json").read_text())


def test_whole_word_masking_keeps_words_whole_and_special_tokens_and_boxes():
    from layoutkit.train.masked_lm import WholeWordMaskCollator

    torch.manual_seed(0)
    # 40 words of 1-3 tokens each, between [CLS] (word -1) and [SEP].
    word_ids = [-1] + [w for w in range(40) for _ in range(1 + w % 3)] + [-1]
    input_ids = [2] + [10 + i for i in range(len(word_ids) - 2)] + [3]
    boxes = [[i, i, i + 1, i + 1] for i in range(len(word_ids))]
    features = [{"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "bbox": boxes, "word_ids": word_ids}]
    collator = WholeWordMaskCollator(pad_token_id=0, mask_token_id=4, vocab_size=500, mlm_probability=0.15)
    masked_words = []
    for _ in range(50):
        batch = collator(features)
        labels, words = batch["labels"][0], batch["word_ids"][0]
        targets = labels != -100
        assert not targets[words < 0].any()  # never a special or padding token
        chosen = set(words[targets].tolist())
        for word in chosen:  # all of a chosen word's tokens are targets, with their original ids
            assert targets[words == word].all()
        assert torch.equal(labels[targets], torch.tensor(input_ids + [0] * (len(labels) - len(input_ids)))[targets])
        assert torch.equal(batch["bbox"][0][: len(boxes)], torch.tensor(boxes))
        masked_words.append(len(chosen))
    assert set(masked_words) == {6}  # round(15% of 40 words)
    total = torch.stack([collator(features)["input_ids"][0] == 4 for _ in range(200)]).sum()
    targets_total = 200 * sum(1 + w % 3 for w in range(40)) * 6 / 40
    assert 0.65 < total / targets_total < 0.95  # about 80% of the chosen words get [MASK]


def test_masked_lm_loss_goes_down_on_a_tiny_corpus(invoice_dataset, scratch_checkpoint):
    """LayoutLM tiny, 90 steps with fresh masks each batch on 8 synthetic invoices: on those pages, masked with a
    fixed mask of their own, the masked-LM loss falls below 0.7x its initial value and the masked-token accuracy
    beats always predicting the most frequent masked token by 10 points (measured: 6.41 -> 3.8, accuracy 0.29
    against 0.06). A check that the objective learns, not of generalisation (the benchmark measures that)."""
    from datasets import load_from_disk
    from transformers import AutoConfig

    from layoutkit.pipelines.modeling import load_processing, model_family
    from layoutkit.train.masked_lm import MaskedLayoutModel, WholeWordMaskCollator
    from layoutkit.train.ner_task import encode_ner_split, model_inputs

    torch.manual_seed(0)
    folder = str(scratch_checkpoint("layoutlm"))
    config = AutoConfig.from_pretrained(folder)
    tokenizer, image_processor, _ = load_processing(folder)
    pages = encode_ner_split(load_from_disk(str(invoice_dataset))["train"].select(range(8)), tokenizer,
                             image_processor, model_family(config), [], 128, 32)
    collator = WholeWordMaskCollator(tokenizer.pad_token_id, tokenizer.mask_token_id, len(tokenizer))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        evaluation = [collator([pages[i] for i in range(s, min(s + 16, len(pages)))])
                      for s in range(0, len(pages), 16)]
    model = MaskedLayoutModel.from_config(config)

    @torch.no_grad()
    def measure():
        model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        for batch in evaluation:
            output = model(**model_inputs(batch))
            scored = batch["labels"] != -100
            loss_sum += output.loss.item() * scored.sum().item()
            correct += (output.logits.argmax(-1)[scored] == batch["labels"][scored]).sum().item()
            count += scored.sum().item()
        model.train()
        return loss_sum / count, correct / count

    initial_loss, _ = measure()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(pages, batch_size=8, shuffle=True, collate_fn=collator)
    step = 0
    while step < 90:
        for batch in loader:
            model(**model_inputs(batch)).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step == 90:
                break
    loss, accuracy = measure()
    targets = torch.cat([b["labels"][b["labels"] != -100] for b in evaluation])
    majority = targets.bincount().max().item() / len(targets)
    assert loss < 0.7 * initial_loss, (initial_loss, loss)
    assert accuracy > majority + 0.1, (accuracy, majority)


def test_fine_tuning_starts_from_the_pretrained_checkpoint(invoice_dataset, scratch_checkpoint, tmp_path):
    """`layoutkit train-pretraining`, then run_invoice_ner.py --model_name_or_path on its output folder."""
    pretrained = tmp_path / "pretrained"
    run_command([sys.executable, "-m", "layoutkit", "train-pretraining", "--dataset_path", invoice_dataset,
                 "--config_name", scratch_checkpoint("layoutlm"), "--output_dir", pretrained, *PRETRAIN])
    output = tmp_path / "ner"
    run_command([sys.executable, REPO_ROOT / "run_invoice_ner.py", "--dataset_path", invoice_dataset,
                 "--model_name_or_path", pretrained, "--output_dir", output, *PRETRAIN])
    results = json.loads((output / "all_results.json").read_text())
    assert results["train_steps"] == 3 and "test_f1" in results
    config = json.loads((output / "config.json").read_text())
    assert config["architectures"] == ["LayoutLMForTokenClassification"] and "token-classification" in config[
        "custom_pipelines"]


def test_pages_folder_becomes_a_corpus_with_cached_ocr(tmp_path, monkeypatch):
    """`layoutkit pretraining-corpus`: images and a PDF's pages, read by the OCR engine once (a second build reads
    every page from the cache), words and boxes scaled with the stored image, blank pages skipped."""
    from datasets import load_from_disk
    from PIL import Image

    from layoutkit.cli import main as layoutkit
    from layoutkit.pipelines.ocr import OCR_ENGINES, OcrEngine, OcrResult, register_ocr_engine

    calls = []

    class FixedWords(OcrEngine):
        name = "fixed-words-test"

        def read(self, page):
            calls.append(page.size)
            if page.getpixel((0, 0)) == (0, 0, 0):  # the black page has no words
                return OcrResult()
            return OcrResult(["Invoice", "total"], [[100, 100, 300, 150], [1000, 1800, 1900, 1950]], [99, 99], [0, 0])

    monkeypatch.setitem(OCR_ENGINES, FixedWords.name, FixedWords)
    register_ocr_engine(FixedWords)
    pages = tmp_path / "pages"
    (pages / "sub").mkdir(parents=True)
    Image.new("RGB", (2000, 2000), "white").save(pages / "a.png")
    Image.new("RGB", (500, 700), "white").save(pages / "sub" / "b.jpg")
    Image.new("RGB", (400, 400), "black").save(pages / "blank.png")
    Image.new("RGB", (300, 300), "white").save(pages / "c.pdf", save_all=True,
                                                 append_images=[Image.new("RGB", (300, 300), "white")])
    (pages / "notes.txt").write_text("not a page")
    cache = tmp_path / "ocr-cache"
    # Another --max_side the second time, so the pages are read again (not taken from the datasets cache).
    for build, max_side in (("first", "800"), ("second", "1000")):
        assert layoutkit(["pretraining-corpus", "--pages_dir", str(pages), "--output", str(tmp_path / build),
                          "--ocr_engine", FixedWords.name, "--ocr_cache", str(cache), "--max_side", max_side,
                          "--validation_fraction", "0.2"]) == 0
        if build == "first":
            assert len(calls) == 5  # a.png, blank.png, c.pdf's two pages, sub/b.jpg
    assert len(calls) == 5  # the second build read every page from the OCR cache
    corpus = load_from_disk(str(tmp_path / "second"))
    assert sorted(corpus) == ["train", "validation"] and len(corpus["train"]) + len(corpus["validation"]) == 4
    page = next(p for split in corpus.values() for p in split if p["id"] == "a.png#1")
    assert page["image"].size == (1000, 1000) and page["words"] == ["Invoice", "total"]
    assert page["bboxes"][1] == [500, 900, 950, 975]  # halved with the image
    assert {p["id"] for split in corpus.values() for p in split} == {"a.png#1", "b.jpg#1", "c.pdf#1", "c.pdf#2"}


def test_corpus_takes_a_pdfs_text_layer_and_ocr_only_its_scanned_pages(tmp_path, monkeypatch):
    """A mixed PDF in the pages folder: born-digital pages give their text-layer words (no OCR call), image-only
    ones go to the engine; corpus.json counts the pages per words source. `--pdf_text never` OCRs every page."""
    import pdf_samples as samples
    from datasets import load_from_disk

    from layoutkit.cli import main as layoutkit
    from layoutkit.pipelines.ocr import OCR_ENGINES, OcrEngine, OcrResult, register_ocr_engine

    calls = []

    class FixedWords(OcrEngine):
        name = "fixed-words-pdf-test"

        def read(self, page):
            calls.append(page.size)
            return OcrResult(["scanned"], [[10, 10, 90, 40]], [99], [0])

    monkeypatch.setitem(OCR_ENGINES, FixedWords.name, FixedWords)
    register_ocr_engine(FixedWords)
    pages = tmp_path / "pages"
    pages.mkdir()
    samples.mixed(pages / "mixed.pdf")  # born-digital, image-only, invisible OCR layer, scan with a stamp
    common = ["--pages_dir", str(pages), "--ocr_engine", FixedWords.name, "--ocr_cache", str(tmp_path / "cache"),
              "--validation_fraction", "0.25"]
    assert layoutkit(["pretraining-corpus", "--output", str(tmp_path / "auto"), *common]) == 0
    assert len(calls) == 2  # the two pages without a usable text layer
    report = json.loads((tmp_path / "auto" / "corpus.json").read_text())
    assert report["words_source"] == {f"ocr:{FixedWords.name}": 2, "pdf_invisible_text": 1, "pdf_text": 1}
    corpus = load_from_disk(str(tmp_path / "auto"))
    first = next(p for split in corpus.values() for p in split if p["id"] == "mixed.pdf#1")
    assert first["words_source"] == "pdf_text" and first["words"][:2] == samples.LINES[0].split()[:2]

    assert layoutkit(["pretraining-corpus", "--output", str(tmp_path / "never"), "--pdf_text", "never", *common]) == 0
    report = json.loads((tmp_path / "never" / "corpus.json").read_text())
    assert report["words_source"] == {f"ocr:{FixedWords.name}": 4}
