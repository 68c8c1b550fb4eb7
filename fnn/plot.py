"""A PNG of a run: training loss per step, and validation loss and accuracy.

Matplotlib is imported on first use (it is in the `data` extra), through its
object-oriented API and the Agg canvas, so plotting never changes pyplot's global
backend or opens a window.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write
from .train import History

__all__ = ["plot_history"]


def _moving_average(a: np.ndarray, window: int) -> np.ndarray:
    kernel = np.full(window, 1.0 / window)
    return np.convolve(a, kernel, mode="valid")


def plot_history(history: History, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw `history` into the PNG file `path` (written atomically); returns the path.

    Left: training loss of every step (faint) and its moving average over ~1% of the
    run, with the validation loss, on a log scale. Right: validation accuracy in %.
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
                     label="validation")
        acc = 100 * np.asarray(history.eval_accuracy)
        ax_acc.plot(history.eval_step, acc, "o-", ms=3, color="C1")
        ax_acc.annotate(f"{acc[-1]:.2f}%", (history.eval_step[-1], acc[-1]),
                        textcoords="offset points", xytext=(-10, -15), ha="right")
        # Zoom to the interesting part: the early, near-chance accuracies squash the rest.
        ax_acc.set_ylim(max(0.0, min(acc[acc.size // 2 :].min() - 2, acc[-1] - 5)), 100.5)
    if loss.size and np.all(loss > 0):
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy (%)", title="validation accuracy")
    if loss.size or history.eval_step.size:
        ax_loss.legend(loc="upper right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))
