"""Domain-adaptive pretraining on unlabeled documents: masked language modelling with layout (`PretrainingTask`,
run by driver.py; `main` is `run_pretraining.py` / `layoutkit train-pretraining`).

The corpus is a saved dataset with `words`, `bboxes` (and `image` for LayoutLMv2/v3) -- any labels are dropped --
as `python -m dataset_loader ...` or `layoutkit pretraining-corpus` (a folder of page images/PDFs, OCR cached)
build it. Only its train split is learned from; its validation split (carved from train when missing) picks the
kept epoch by masked-word accuracy; a test split is dropped unread, so a corpus built from a labelled dataset never
trains or selects on its test documents. The saved folder is what `run_invoice_ner.py --model_name_or_path OUT`
(and the other scripts) fine-tune: the encoder weights under the family's prefix, the tokenizer/processor beside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .arguments import flag
from .driver import Evaluation, Task
from .masked_lm import MaskedLayoutModel, WholeWordMaskCollator
from .ner_task import encode_ner_split, model_inputs
from .streaming import is_streamed

# Columns of labelled datasets that pretraining ignores.
LABEL_COLUMNS = ("ner_tags", "label", "labels", "relations", "entity_ids", "row_ids")
EVALUATION_SEED = 1234  # the validation split is masked the same way after every epoch


@dataclass
class PretrainingArguments:
    _argument_group_name = "pretraining (masked language modelling with layout)"

    mlm_probability: float = flag("share of each window's words masked (whole words: all their tokens)", 0.15)
    corpus_description: str | None = flag("what the corpus is, for the model card (default: the dataset path)")

    def __post_init__(self):
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be between 0 and 1, got {self.mlm_probability}")


class PretrainingTask(Task):
    """Continue pretraining (or pretrain from a scratch config) a LayoutLM-family model on unlabeled documents:
    whole-word masked language modelling with the words' boxes (and page image) kept."""

    pipeline_task = "fill-mask"
    script_name = "run_pretraining"
    arguments_class = PretrainingArguments
    optional_groups = ("streaming",)  # no class weights, label augmentation or search: there are no labels
    model_inputs = staticmethod(model_inputs)

    @property
    def metric_name(self) -> str:
        # The masked-LM loss on validation (negated: the driver keeps the epoch with the largest value); the
        # masked-token accuracy ties between epochs on small corpora where the loss still tells them apart.
        return "negative_loss"

    def prepare_dataset(self, accelerator, raw):
        if "test" in raw:
            accelerator.print("pretraining: the test split is dropped (never trained or selected on)")
            del raw["test"]
        for split in raw:
            raw[split] = raw[split].remove_columns([c for c in LABEL_COLUMNS if c in raw[split].column_names])
        return raw

    def read_labels(self, raw) -> None:
        self.label_names = []

    def model_class(self):
        return MaskedLayoutModel

    def config_kwargs(self) -> dict:
        return {}

    def encode(self, raw, split: str, processing):
        data = self.args.data
        return encode_ner_split(raw[split], processing.tokenizer, processing.image_processor, processing.family, [],
                                data.max_seq_length, data.stride, num_proc=data.preprocessing_num_workers,
                                load_from_cache_file=not data.overwrite_cache)

    def collator(self, processing):
        tokenizer = processing.tokenizer
        if tokenizer.mask_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no mask token: masked language modelling needs one "
                             "(scratch tokenizers from `layoutkit scratch` and the published ones have it)")
        return WholeWordMaskCollator(tokenizer.pad_token_id, tokenizer.mask_token_id, len(tokenizer),
                                     self.args.task.mlm_probability, self.args.data.pad_to_multiple_of,
                                     processing.family.image_input)

    def describe(self, raw, windows) -> str:
        if is_streamed(raw["train"]):  # --streaming: its size is not known
            self.num_pages = None
            return "a streamed corpus of pretraining pages, encoded as they are read"
        self.num_pages = len(raw["train"])
        return f"{len(raw['train'])} pretraining pages in {len(windows['train'])} windows"

    @torch.no_grad()
    def evaluate(self, accelerator, model, dataloader, raw, split: str, final: bool) -> Evaluation:
        """Masked-LM loss, perplexity and masked-token accuracy, with the same masks after every epoch."""
        model.eval()
        loss_sum = torch.zeros((), device=accelerator.device, dtype=torch.float64)
        correct = torch.zeros_like(loss_sum)
        targets = torch.zeros_like(loss_sum)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(EVALUATION_SEED + accelerator.process_index)
            for batch in dataloader:
                inputs = model_inputs(batch)
                labels = inputs.pop("labels")
                logits = model(**inputs).logits.float()
                scored = labels != -100
                loss_sum += torch.nn.functional.cross_entropy(logits[scored], labels[scored], reduction="sum")
                correct += (logits[scored].argmax(-1) == labels[scored]).sum()
                targets += scored.sum()
        loss_sum, correct, targets = (accelerator.reduce(t, "sum").item() for t in (loss_sum, correct, targets))
        model.train()
        loss = loss_sum / max(targets, 1)
        return Evaluation({"negative_loss": -loss, "loss": loss, "perplexity": math.exp(min(loss, 50)), "accuracy": correct / max(targets, 1),
                           "masked_tokens": int(targets)})

    def headline(self, metrics: dict) -> str:
        return " ".join(f"{name}={metrics[name]:.4f}" for name in ("loss", "perplexity", "accuracy"))

    def card_overrides(self, results: dict) -> dict:
        """The model card's description of the corpus, the objective and the steps."""
        args = self.args
        corpus = args.task.corpus_description or f"`{args.data.dataset_path or args.data.dataset_name}`"
        objectives = (f"whole-word masked language modelling with layout: {args.task.mlm_probability:.0%} of each "
                      "window's words masked (all their tokens; 80% mask token, 10% random token, 10% unchanged), "
                      "their boxes kept")
        return {
            "intended_use": (
                f"A starting point for fine-tuning (`run_invoice_ner.py --model_name_or_path THIS_FOLDER`, or the "
                f"classification and relation scripts), not a predictor by itself. Pretrained on {corpus} "
                f"({results.get('pretraining_pages') or 'streamed'} pages, {results.get('train_steps')} optimizer "
                "steps) with "
                f"{objectives}. The metrics are the masked-token accuracy and loss on the held-out validation pages."
            ),
            "usage": ("```bash\naccelerate launch run_invoice_ner.py --model_name_or_path THIS_FOLDER \\\n"
                      "    --dataset_path YOUR_LABELLED_DATASET --output_dir runs/ner\n```"),
            "tags": ("pretraining", "masked-language-modeling"),
        }

    def run_results(self) -> dict:
        return {"pretraining_pages": self.num_pages, "objective": "whole-word masked language modelling with layout",
                "mlm_probability": self.args.task.mlm_probability}


def main(argv=None, description: str | None = None) -> dict:
    from .driver import main as run

    return run(PretrainingTask, argv, description)
