"""Domain-adaptive pretraining on unlabeled documents: masked language modelling with layout, plus for LayoutLMv3 its
image objectives, masked patch regression and word-patch alignment (image_objectives.py) (`PretrainingTask`, run by
driver.py; `main` is `run_pretraining.py` / `layoutkit train-pretraining`).

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
from functools import partial
from types import SimpleNamespace

import torch

from .arguments import flag
from .driver import Evaluation, Task
from .image_objectives import IMAGE_OBJECTIVES, ImageMaskCollator
from .masked_lm import MaskedLayoutModel, WholeWordMaskCollator
from .model_setup import load_config
from .ner_task import encode_ner_split, model_inputs
from .streaming import is_streamed

# Columns of labelled datasets that pretraining ignores.
LABEL_COLUMNS = ("ner_tags", "label", "labels", "relations", "entity_ids", "row_ids")
EVALUATION_SEED = 1234  # the seed of the evaluation masks (validation and test splits)


@dataclass
class PretrainingArguments:
    _argument_group_name = "pretraining (masked language modelling with layout)"

    mlm_probability: float = flag("share of each window's words masked (whole words: all their tokens)", 0.15)
    image_objectives: str = flag(
        "LayoutLMv3's image objectives beside masked language modelling: `mim,wpa` (masked patch regression and "
        "word-patch alignment), `mim`, or `none`; `auto` is `mim,wpa` for LayoutLMv3 and `none` for the families "
        "that read no image patches (an explicit choice there is ignored with a message)", "auto",
        choices=["auto", "mim,wpa", "mim", "none"])
    mim_probability: float = flag("share of each page's image patches masked, in blocks (image objectives)", 0.4)
    corpus_description: str | None = flag("what the corpus is, for the model card (default: the dataset path)")

    def __post_init__(self):
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be between 0 and 1, got {self.mlm_probability}")
        if not 0 < self.mim_probability < 1:
            raise ValueError(f"--mim_probability must be between 0 and 1, got {self.mim_probability}")


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
        # The validation loss of every objective trained, summed (negated: the driver keeps the epoch with the
        # largest value); the masked-token accuracy ties between epochs on small corpora where the loss still
        # tells them apart.
        return "negative_loss"

    def prepare_dataset(self, accelerator, raw):
        # Here, the first hook with the accelerator to print on, because the model class depends on it.
        self.image_objectives = self.resolve_image_objectives(accelerator)
        if "test" in raw:
            accelerator.print("pretraining: the test split is dropped (never trained or selected on)")
            del raw["test"]
        for split in raw:
            raw[split] = raw[split].remove_columns([c for c in LABEL_COLUMNS if c in raw[split].column_names])
        return raw

    def resolve_image_objectives(self, accelerator) -> tuple[str, ...]:
        """--image_objectives for this model: LayoutLMv3 (with its patch embedding) takes them; the other families
        read no image patches (LayoutLMv2's visual tokens are a CNN's pooled feature map), so they pretrain with
        masked language modelling only."""
        requested = self.args.task.image_objectives
        config = load_config(self.args.model)
        takes_patches = config.model_type == "layoutlmv3" and getattr(config, "visual_embed", True)
        if requested == "auto":
            return IMAGE_OBJECTIVES if takes_patches else ()
        objectives = () if requested == "none" else tuple(requested.split(","))
        if objectives and not takes_patches:
            accelerator.print(f"pretraining: --image_objectives {requested} ignored: they are LayoutLMv3's and this "
                              f"{config.model_type} model reads no image patches; masked language modelling only")
            return ()
        return objectives

    def read_labels(self, raw) -> None:
        self.label_names = []

    def model_class(self):
        objectives = self.image_objectives
        return SimpleNamespace(from_pretrained=partial(MaskedLayoutModel.from_pretrained, image_objectives=objectives),
                               from_config=partial(MaskedLayoutModel.from_config, image_objectives=objectives))

    def configure_model(self, config) -> None:
        self.patch_size = getattr(config, "patch_size", None)  # the image mask's grid (LayoutLMv3)

    def config_kwargs(self) -> dict:
        return {}

    def encode(self, raw, split: str, processing):
        data = self.args.data
        return encode_ner_split(raw[split], processing.tokenizer, processing.image_processor, processing.family, [],
                                data.max_seq_length, data.stride, num_proc=data.preprocessing_num_workers,
                                load_from_cache_file=not data.overwrite_cache)

    def collator(self, processing, evaluation: bool = False):
        tokenizer = processing.tokenizer
        if tokenizer.mask_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no mask token: masked language modelling needs one "
                             "(scratch tokenizers from `layoutkit scratch` and the published ones have it)")
        arguments = (tokenizer.pad_token_id, tokenizer.mask_token_id, len(tokenizer), self.args.task.mlm_probability,
                     self.args.data.pad_to_multiple_of, processing.family.image_input)
        # Evaluation masks with a seed of its own and is never moved to another epoch: every evaluation, of every
        # run whatever its --seed, scores the same masked tokens.
        seed = EVALUATION_SEED if evaluation else self.args.training.seed
        if self.image_objectives:
            return ImageMaskCollator(*arguments, patch_size=self.patch_size,
                                     mim_probability=self.args.task.mim_probability,
                                     word_patch_alignment="wpa" in self.image_objectives, seed=seed)
        return WholeWordMaskCollator(*arguments, seed=seed)

    def describe(self, raw, windows) -> str:
        if is_streamed(raw["train"]):  # --streaming: its size is not known
            self.num_pages = None
            return "a streamed corpus of pretraining pages, encoded as they are read"
        self.num_pages = len(raw["train"])
        return f"{len(raw['train'])} pretraining pages in {len(windows['train'])} windows"

    @torch.no_grad()
    def evaluate(self, accelerator, model, dataloader, raw, split: str, final: bool) -> Evaluation:
        """Masked-LM loss, perplexity and masked-token accuracy, and with the image objectives the masked-patch
        regression loss and the word-patch alignment loss and accuracy, with the same masks after every epoch.
        `loss` is what training minimises: the masked-LM loss plus the image objectives' losses."""
        model.eval()
        sums = {name: torch.zeros((), device=accelerator.device, dtype=torch.float64)
                for name in ("mlm_loss", "correct", "masked_tokens", "mim_loss", "masked_patches", "wpa_loss",
                             "wpa_correct", "wpa_words")}
        for batch in dataloader:
            inputs = model_inputs(batch)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits.float()
            scored = labels != -100
            sums["mlm_loss"] += torch.nn.functional.cross_entropy(logits[scored], labels[scored], reduction="sum")
            sums["correct"] += (logits[scored].argmax(-1) == labels[scored]).sum()
            sums["masked_tokens"] += scored.sum()
            if getattr(outputs, "mim_loss", None) is not None:  # a mean over the batch's masked patches
                patches = inputs["image_mask"].sum()
                sums["mim_loss"] += outputs.mim_loss * patches
                sums["masked_patches"] += patches
            if getattr(outputs, "wpa_loss", None) is not None:
                aligned = inputs["wpa_labels"] != -100
                words = aligned.sum()
                sums["wpa_loss"] += outputs.wpa_loss * words
                predicted = outputs.wpa_logits[aligned] > 0
                sums["wpa_correct"] += (predicted == inputs["wpa_labels"][aligned].bool()).sum()
                sums["wpa_words"] += words
        totals = {name: accelerator.reduce(value, "sum").item() for name, value in sums.items()}
        model.train()
        mlm_loss = totals["mlm_loss"] / max(totals["masked_tokens"], 1)
        metrics = {"mlm_loss": mlm_loss, "perplexity": math.exp(min(mlm_loss, 50)),
                   "accuracy": totals["correct"] / max(totals["masked_tokens"], 1),
                   "masked_tokens": int(totals["masked_tokens"])}
        loss = mlm_loss
        if "mim" in self.image_objectives:
            metrics["mim_loss"] = totals["mim_loss"] / max(totals["masked_patches"], 1)
            metrics["masked_patches"] = int(totals["masked_patches"])
            loss += metrics["mim_loss"]
        if "wpa" in self.image_objectives:
            metrics["wpa_loss"] = totals["wpa_loss"] / max(totals["wpa_words"], 1)
            metrics["wpa_accuracy"] = totals["wpa_correct"] / max(totals["wpa_words"], 1)
            metrics["wpa_words"] = int(totals["wpa_words"])
            loss += metrics["wpa_loss"]
        return Evaluation({"negative_loss": -loss, "loss": loss, **metrics})

    def headline(self, metrics: dict) -> str:
        names = ("loss", "mlm_loss", "perplexity", "accuracy", "mim_loss", "wpa_loss", "wpa_accuracy")
        return " ".join(f"{name}={metrics[name]:.4f}" for name in names if name in metrics)

    def card_overrides(self, results: dict) -> dict:
        """The model card's description of the corpus, the objective and the steps."""
        args = self.args
        corpus = args.task.corpus_description or f"`{args.data.dataset_path or args.data.dataset_name}`"
        objectives = (f"whole-word masked language modelling with layout: {args.task.mlm_probability:.0%} of each "
                      "window's words masked (all their tokens; 80% mask token, 10% random token, 10% unchanged), "
                      "their boxes kept")
        if self.image_objectives:
            objectives += (f"; masked image modelling as masked patch regression: {args.task.mim_probability:.0%} of "
                           "the page's image patches masked in blocks (their embeddings replaced by a learned mask "
                           "embedding) and their per-patch normalised pixels regressed (mean squared error) from "
                           "the visual tokens, in place of the paper's image-tokenizer codes")
        if "wpa" in self.image_objectives:
            objectives += ("; word-patch alignment: for each word the masked-LM objective left alone, whether the "
                           "image patches under its box are masked")
        return {
            "intended_use": (
                f"A starting point for fine-tuning (`run_invoice_ner.py --model_name_or_path THIS_FOLDER`, or the "
                f"classification and relation scripts), not a predictor by itself. Pretrained on {corpus} "
                f"({results.get('pretraining_pages') or 'streamed'} pages, {results.get('train_steps')} optimizer "
                f"steps) with {objectives}. The metrics are the objectives' losses and accuracies on the held-out "
                f"validation pages; the objectives' heads are dropped when fine-tuning, the encoder is kept."
            ),
            "usage": ("```bash\naccelerate launch run_invoice_ner.py --model_name_or_path THIS_FOLDER \\\n"
                      "    --dataset_path YOUR_LABELLED_DATASET --output_dir runs/ner\n```"),
            "tags": ("pretraining", "masked-language-modeling",
                     *(("masked-image-modeling",) if self.image_objectives else ()),
                     *(("word-patch-alignment",) if "wpa" in self.image_objectives else ())),
        }

    def run_results(self) -> dict:
        results = {"pretraining_pages": self.num_pages,
                   "objective": "whole-word masked language modelling with layout",
                   "mlm_probability": self.args.task.mlm_probability,
                   "image_objectives": ",".join(self.image_objectives) or "none"}
        if self.image_objectives:
            results["mim_probability"] = self.args.task.mim_probability
        return results


def main(argv=None, description: str | None = None) -> dict:
    from .driver import main as run

    return run(PretrainingTask, argv, description)
