"""Early stopping's bookkeeping: which evaluation is the best so far, by one metric.

A pure function of the evaluations recorded in a run's `History`, so a resumed run
knows its best evaluation and its patience count without any extra state, and stops
where a run that never stopped would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["MONITORS", "best_eval", "evals_since_best"]

#: monitor name -> (History field, +1 when higher is better, -1 when lower is).
MONITORS: dict[str, tuple[str, int]] = {
    "val_loss": ("eval_loss", -1),
    "val_accuracy": ("eval_accuracy", +1),
}


def best_eval(values: Sequence[float], monitor: str) -> int | None:
    """Index of the best of `values` (the first, on ties), or None if there is none
    (empty, or all nan). `monitor` is a key of MONITORS."""
    sign = MONITORS[monitor][1]
    best: int | None = None
    for i, v in enumerate(values):
        # Strictly better only: a plateau does not reset the patience count.
        if not math.isnan(v) and (best is None or sign * v > sign * values[best]):
            best = i
    return best


def evals_since_best(values: Sequence[float], monitor: str) -> int:
    """How many evaluations came after the best one (all of them if none is best)."""
    best = best_eval(values, monitor)
    return len(values) - 1 - best if best is not None else len(values)
