"""`metrics.csv`: a run's evaluations as they happen, one flushed row each.

A `fit` callback appends a row per evaluation (and one for the test set when the run
finishes), opening, writing and closing the file each time, so a crash or Ctrl-C loses
nothing already logged and the file can be read (`tail -f`, pandas) while the run goes.
A resumed run first rewrites the rows of its history up to where it resumes, so the
file always matches the checkpoint it continues from.

Columns: step, epoch (steps / steps per epoch), split ("validation" or "test"; with no
validation part, evaluations are on the test set), loss, accuracy (empty for mse),
train_loss (the mean training batch loss since the previous row), lr, elapsed_s.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from .train import Callback, Event, TrainState, on_events

__all__ = ["COLUMNS", "metrics_csv_callback"]

COLUMNS = ("step", "epoch", "split", "loss", "accuracy", "train_loss", "lr", "elapsed_s")


def _cell(value: float | int | str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _check_regular(path: Path) -> None:
    if path.exists() and not path.is_file():  # a FIFO would block the run, a folder fail it
        raise ValueError(f"path: expected a regular file (or none) to write, got {path}")


def metrics_csv_callback(path: str | os.PathLike) -> Callback:
    """A `fit` callback writing `path` as described in the module docstring."""
    path = Path(path)
    pending: list[float] = []  # training losses since the last row
    meta: dict = {}

    def append(*rows: tuple) -> None:
        _check_regular(path)
        with path.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(",".join(_cell(v) for v in row) + "\n")
            f.flush()

    def row(state_step: int, split: str, loss: float, acc: float, lr: float,
            elapsed: float) -> tuple:
        train = math.fsum(pending) / len(pending) if pending else math.nan
        pending.clear()
        epoch = round(state_step / meta["per_epoch"], 4)
        return (state_step, epoch, split, loss, acc, train, lr, elapsed)

    def start(state: TrainState, total_steps: int) -> None:
        c = state.config
        meta["t0"] = time.perf_counter() - state.elapsed  # wall time as fit counts it
        meta["per_epoch"] = max(1, total_steps // c.epochs)
        meta["split"] = "validation" if c.val_fraction > 0 else "test"
        h = state.history
        _check_regular(path)
        path.write_text(",".join(COLUMNS) + "\n", encoding="utf-8")
        rows, last = [], 0
        for step, loss, acc, t in zip(h.eval_step.tolist(), h.eval_loss.tolist(),
                                      h.eval_accuracy.tolist(), h.eval_time.tolist()):
            pending[:] = h.loss[last:step].tolist()
            lr = float(h.lr[step - 1]) if step else math.nan
            rows.append(row(step, meta["split"], loss, acc, lr, t))
            last = step
        pending[:] = h.loss[last:].tolist()
        if rows:
            append(*rows)

    @on_events("start", "chunk", "eval", "end")
    def callback(event: Event) -> None:
        if event.kind == "start":
            start(event.state(), event.total_steps)
        elif event.kind == "chunk":
            pending.extend(event.losses)
        elif event.kind == "eval":
            append(row(event.step, meta["split"], event.eval_loss, event.eval_accuracy,
                       event.lr, time.perf_counter() - meta["t0"]))
        elif event.kind == "end":
            state = event.state()
            if not math.isnan(state.test_loss):
                pending.clear()
                append(row(state.step, "test", state.test_loss, state.test_accuracy,
                           event.lr, state.elapsed))

    return callback
