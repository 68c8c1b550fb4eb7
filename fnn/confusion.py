"""Confusion matrices of a classifier: counts, and a text table for the terminal.

m[i, j] counts the examples of true class i predicted as class j (rows: truth), as in
scikit-learn's confusion_matrix. The PNG is drawn by `fnn.plot.plot_confusion`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["confusion_matrix", "format_confusion"]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 (n_classes, n_classes) from y_true, y_pred: (n,) ints in [0, n_classes)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_pred: expected the shape of y_true {y_true.shape}, "
                         f"got {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name}: expected ints in [0, {n_classes}), got {y.dtype} "
                             f"in [{y.min()}, {y.max()}]")
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def format_confusion(m: np.ndarray) -> str:
    """A right-aligned table: a header of predicted classes, a row per true class, and
    each row's recall (correct / examples of that class)."""
    k = m.shape[0]
    width = max(len(str(int(m.max(initial=0)))), len(str(k - 1)), 4)
    head = "true\\pred " + " ".join(f"{j:>{width}}" for j in range(k)) + "  recall"
    lines = [head]
    for i in range(k):
        total = int(m[i].sum())
        recall = f"{100 * m[i, i] / total:6.2f}%" if total else "     -"
        lines.append(f"{i:>9} " + " ".join(f"{int(v):>{width}}" for v in m[i]) + f"  {recall}")
    return "\n".join(lines)
