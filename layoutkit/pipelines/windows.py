"""Merge per-window token predictions back to exactly one prediction per word.

A word that appears in several overlapping windows is taken from the window where it sits most
centrally (largest distance to the window's nearer edge), where the model saw the most context on both
sides. Copied into saved checkpoints beside the custom pipelines: imports only numpy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class WordPredictionMerger:
    """Accumulates window predictions and returns, per document, a label id and score per word.

    Feed it batches of windows: `doc_index` [B], `word_ids` [B, L] (-1 for special/pad tokens),
    `label_ids` [B, L] and `scores` [B, L] (for example the softmax probability of the label).
    """

    def __init__(self, num_words: Sequence[int], default_label: int = 0):
        self.num_words = list(num_words)
        # Words no window covers (the tokenizer gave them no token) keep `default_label`, the "O" id.
        self.label = [np.full(n, default_label, dtype=np.int64) for n in self.num_words]
        self.score = [np.zeros(n, dtype=np.float32) for n in self.num_words]
        self.centrality = [np.full(n, -1, dtype=np.int64) for n in self.num_words]

    def add(self, doc_index, word_ids, label_ids, scores) -> None:
        doc_index, word_ids = np.asarray(doc_index), np.asarray(word_ids)
        label_ids, scores = np.asarray(label_ids), np.asarray(scores)
        for row in range(len(doc_index)):
            doc = int(doc_index[row])
            ids = word_ids[row]
            text_positions = np.flatnonzero(ids >= 0)
            if text_positions.size == 0:
                continue
            first, last = text_positions[0], text_positions[-1]
            # The first sub-token of each word within this window carries the word's prediction.
            starts = text_positions[np.r_[True, ids[text_positions[1:]] != ids[text_positions[:-1]]]]
            words = ids[starts]
            centrality = np.minimum(starts - first, last - starts)
            better = centrality > self.centrality[doc][words]
            chosen_words, chosen = words[better], starts[better]
            self.centrality[doc][chosen_words] = centrality[better]
            self.label[doc][chosen_words] = label_ids[row, chosen]
            self.score[doc][chosen_words] = scores[row, chosen]

    def uncovered(self, doc: int) -> np.ndarray:
        """Words that no window gave a prediction (for example words the tokenizer maps to no token)."""
        return np.flatnonzero(self.centrality[doc] < 0)

    def result(self, doc: int) -> tuple[np.ndarray, np.ndarray]:
        return self.label[doc], self.score[doc]
