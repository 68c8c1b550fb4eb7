"""PNGs: a run (training loss per step, validation loss and accuracy), its
confusion matrix, and a sweep's values per config with their spread over seeds.

Matplotlib is imported on first use (it is in the `data` extra), through its
object-oriented API and the Agg canvas, so plotting never changes pyplot's global
backend or opens a window.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write
from .train import History

__all__ = ["plot_confusion", "plot_history", "plot_spread"]


def _moving_average(a: np.ndarray, window: int) -> np.ndarray:
    kernel = np.full(window, 1.0 / window)
    return np.convolve(a, kernel, mode="valid")


def plot_history(history: History, path: str | os.PathLike, *, title: str | None = None,
                 split: str = "validation") -> Path:
    """Draw `history` into the PNG file `path` (written atomically); returns the path.

    Left: training loss of every step (faint) and its moving average over ~1% of the
    run, with the evaluated loss, on a log scale. Right: evaluated accuracy in %.
    split: what the evaluations ran on, for the labels ("validation", or "test" for a
    run without a validation part).
    """
    if not isinstance(history, History):
        raise TypeError(f"history: expected an fnn.train.History, got {type(history).__name__}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    loss = np.asarray(history.loss)
    steps = np.arange(loss.size)
    if loss.size:
        ax_loss.plot(steps, loss, lw=0.5, alpha=0.3, color="C0")
        window = max(1, loss.size // 100)
        ax_loss.plot(steps[window - 1 :], _moving_average(loss, window), color="C0",
                     label="training" if window == 1 else f"training (mean of {window} steps)")
    if history.eval_step.size:
        ax_loss.plot(history.eval_step, history.eval_loss, "o-", ms=3, color="C1",
                     label=split)
        acc = 100 * np.asarray(history.eval_accuracy)
        ax_acc.plot(history.eval_step, acc, "o-", ms=3, color="C1")
        ax_acc.annotate(f"{acc[-1]:.2f}%", (history.eval_step[-1], acc[-1]),
                        textcoords="offset points", xytext=(-10, -15), ha="right")
        # Zoom to the interesting part: the early, near-chance accuracies squash the rest.
        ax_acc.set_ylim(max(0.0, min(acc[acc.size // 2 :].min() - 2, acc[-1] - 5)), 100.5)
    if loss.size and np.all(loss > 0):
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy (%)", title=f"{split} accuracy")
    if loss.size or history.eval_step.size:
        ax_loss.legend(loc="upper right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def plot_spread(labels: Sequence[str], series: Mapping[str, Sequence[Sequence[float]]],
                path: str | os.PathLike, *, ylabel: str = "", title: str | None = None) -> Path:
    """Draw one value per repeat (e.g. per seed) for each label, and their mean ± sample
    std, into the PNG file `path` (written atomically); returns the path.

    labels: (k,) names along x. series: {name: k lists of values}, drawn side by side
    per label (e.g. "validation" and "test" accuracy); an empty list draws nothing.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.2 * len(labels) + 2), 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    for j, (name, groups) in enumerate(series.items()):
        label: str | None = name  # on the first mean drawn only: one legend entry a series
        for i, values in enumerate(groups):
            v = np.asarray(values, dtype=np.float64)
            if v.size == 0:
                continue
            x = i - 0.4 + width * (j + 0.5)
            ax.plot(np.full(v.size, x), v, ".", color=f"C{j}", alpha=0.6)
            std = v.std(ddof=1) if v.size > 1 else 0.0
            ax.errorbar([x + width / 4], [v.mean()], yerr=[std], fmt="o", color=f"C{j}",
                        capsize=4, label=label)
            label = None
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set(ylabel=ylabel)
    ax.grid(alpha=0.3, axis="y")
    if series:
        ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def plot_confusion(matrix: np.ndarray, path: str | os.PathLike, *,
                   title: str | None = None) -> Path:
    """Draw a confusion matrix (int (k, k), rows the true class) into the PNG file
    `path`, written atomically; each cell shows its count, its colour the fraction of
    its row (so rare classes read as clearly as common ones). Returns the path."""
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix: expected a square 2-d array, got shape {m.shape}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = m.shape[0]
    side = min(12.0, 2.0 + 0.5 * k)
    fig = Figure(figsize=(side + 1, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros(m.shape), where=rows > 0)
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted class", ylabel="true class", xticks=range(k), yticks=range(k))
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    if title:
        ax.set_title(title)
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))
