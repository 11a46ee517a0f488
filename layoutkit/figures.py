"""Matplotlib figures shared by the training reports and `layoutkit compare` (one style for both). matplotlib is
imported when a figure is drawn, not with this module."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_figure(matrix: np.ndarray, label_names: Sequence[str], title: str = "Confusion matrix"):
    """A matplotlib Figure (Agg canvas, no display) of the counts, rows = true class, columns = predicted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(label_names)
    side = max(4.0, 0.6 * n + 2.5)
    figure = Figure(figsize=(side, side), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(n), labels=list(label_names), rotation=45, ha="right")
    axes.set_yticks(range(n), labels=list(label_names))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    threshold = matrix.max() / 2 if matrix.size and matrix.max() else 0
    for i in range(n):
        for j in range(n):
            axes.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                      color="white" if matrix[i, j] > threshold else "black")
    axes.set_title(title)
    figure.tight_layout()
    return figure


def curve_figure(series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], x_label: str,
                 y_label: str, title: str):
    """A matplotlib Figure (Agg canvas) of one line per series name: (x, mean, spread), the spread drawn as a band of
    mean +- spread (e.g. the standard deviation over seeds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, (x, mean, spread) in series.items():
        mean, spread = np.asarray(mean, dtype=float), np.asarray(spread, dtype=float)
        axes.plot(x, mean, marker="o", label=name)
        axes.fill_between(x, mean - spread, mean + spread, alpha=0.2)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(title)
    figure.tight_layout()
    return figure
