"""A run as `fnn train` leaves it on disk, used again: its data loaded as it was
loaded, and a saved checkpoint evaluated on a split or applied to image files.

A run's data options (`DATA_DEFAULTS` keys: dataset, limit, columns, splits, scale) are
kept in its config.json and in every checkpoint's extra metadata, with the fitted input
scaling ("scaling", see `fnn.scaling`) and the training images' size ("image_shape"),
so that `evaluate_saved` and `predict_files` feed the network what training fed it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .activations import ACTIVATIONS
from .checkpoint import CheckpointError, read_checkpoint
from .hyperparams import INT_MAX
from .run_config import DATA_KEYS
from .scaling import SCALES, apply_scaling, check_scale, check_scaling
from .train import TrainConfig, TrainState, evaluate

__all__ = [
    "CHECKPOINT",
    "DATA_DEFAULTS",
    "EvalResult",
    "SavedRun",
    "checkpoint_path",
    "class_targets",
    "evaluate_saved",
    "load_run_data",
    "load_saved_run",
    "predict_files",
    "run_options",
]

CHECKPOINT = "checkpoint.npz"
#: The data options' values when neither a flag nor a config file sets them.
DATA_DEFAULTS: dict[str, Any] = {
    "dataset": None, "limit": None, "image_column": "image", "label_column": "label",
    "train_split": "train", "test_split": "test", "scale": "pixel",
}


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's CHECKPOINT."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def load_run_data(run: dict[str, Any], dtype: str, *, split: str | None = None
                  ) -> tuple[Any, tuple[int, int]]:
    """(fnn.data.Dataset with x flattened to (n, H*W) and the run's limit applied, the
    images' (H, W)). With `split`, that one split as both train and test, no limit."""
    from .data import load_mnist

    train_split = run["train_split"] if split is None else split
    test_split = run["test_split"] if split is None else split
    data = load_mnist(run["dataset"], dtype=dtype, image_column=run["image_column"],
                      label_column=run["label_column"], train_split=train_split,
                      test_split=test_split, flatten=False)
    shape = tuple(data.x_train.shape[1:]) or tuple(data.x_test.shape[1:])
    data = data._replace(x_train=data.x_train.reshape(len(data.x_train), -1),
                         x_test=data.x_test.reshape(len(data.x_test), -1))
    if run["limit"] is not None and split is None:
        data = data._replace(x_train=data.x_train[: run["limit"]],
                             y_train=data.y_train[: run["limit"]])
    return data, (int(shape[0]), int(shape[1]))


def class_targets(y: np.ndarray, loss: str, n_classes: int, dtype: str) -> np.ndarray:
    """Class labels y: (n,) as `loss` wants them: as they are for softmax cross-entropy,
    one-hot float rows (n, n_classes) of `dtype` for mse and binary cross-entropy."""
    if loss == "softmax_cross_entropy":
        return y
    return np.eye(n_classes, dtype=dtype)[y]


class SavedRun(NamedTuple):
    """checkpoint: the file; state: its TrainState; options: the data options (defaults
    filled in) plus "scaling" and "image_shape" (None in checkpoints from before)."""

    checkpoint: Path
    state: TrainState
    options: dict[str, Any]


def load_saved_run(path: str | os.PathLike) -> SavedRun:
    """The run in a folder (its CHECKPOINT) or a checkpoint file (e.g. RUN/best.npz).
    A missing or foreign file raises fnn.CheckpointError (a ValueError), and so does
    metadata that is not a run's (`run_options`)."""
    ckpt = checkpoint_path(path)
    state, extra = read_checkpoint(ckpt)
    options = run_options(extra, ckpt, state.config.sizes[0])
    if options["scaling"] is None:  # a checkpoint from before scaling was recorded
        options["scaling"] = {"kind": "pixel"}
    return SavedRun(ckpt, state, options)


def _option_ok(key: str, value: Any) -> bool:
    if key == "dataset":
        return value is None or isinstance(value, str)
    if key == "limit":
        return value is None or (not isinstance(value, bool) and isinstance(value, int)
                                 and 1 <= value <= INT_MAX)
    return isinstance(value, str)  # the column and split names


def run_options(extra: dict[str, Any], path: str | os.PathLike,
                n_features: int) -> dict[str, Any]:
    """The data options (defaults filled in), "scaling" and "image_shape" (None where a
    checkpoint from before them lacks them) of a checkpoint's extra metadata, for a
    network of n_features inputs. The file is untrusted: a value that is not what `fnn
    train` writes raises CheckpointError "{path}: extra.{field}: expected ..., got ..."."""
    def fail(field: str, expected: str, value: Any) -> CheckpointError:
        return CheckpointError(f"{path}: extra.{field}: expected {expected}, got "
                               f"{value!r:.80}")

    options = {**DATA_DEFAULTS, **{k: extra[k] for k in DATA_KEYS if k in extra}}
    for key, value in options.items():
        if key == "scale":
            try:
                check_scale(value)
            except ValueError:
                raise fail(key, f"one of {SCALES} or a positive number", value) from None
        elif not _option_ok(key, value):
            what = {"dataset": "a str or null",
                    "limit": f"null or an int in [1, {INT_MAX}]"}.get(key, "a str")
            raise fail(key, what, value)
    scaling = extra.get("scaling")
    if scaling is not None:
        try:
            check_scaling(scaling, f"{path}: extra.scaling")
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        if scaling["kind"] == "standardize" and len(scaling["mean"]) != n_features:
            raise CheckpointError(f"{path}: extra.scaling.mean: expected statistics of the "
                                  f"network's {n_features} inputs, got "
                                  f"{len(scaling['mean'])} values")
    shape = extra.get("image_shape")
    if shape is not None and not (
            isinstance(shape, list) and len(shape) == 2
            and all(not isinstance(s, bool) and isinstance(s, int) and s >= 1 for s in shape)
            and shape[0] * shape[1] == n_features):
        raise fail("image_shape", f"[height, width] of the network's {n_features} inputs",
                   shape)
    return {**options, "scaling": scaling, "image_shape": shape}


class EvalResult(NamedTuple):
    """split; loss; accuracy (nan for mse); n examples; matrix: the int64 (k, k)
    confusion matrix for softmax cross-entropy, else None."""

    split: str
    loss: float
    accuracy: float
    n: int
    matrix: np.ndarray | None


def _model_kwargs(config: TrainConfig) -> dict[str, Any]:
    return {"activation": config.activation, "loss": config.loss, "backend": config.backend}


def evaluate_saved(run: SavedRun, *, split: str | None = None,
                   dataset: str | None = None) -> EvalResult:
    """Loss, accuracy and confusion matrix of `run` on a split (default: the run's test
    split) of its dataset (or `dataset`), scaled as in training."""
    c = run.state.config
    options = dict(run.options)
    if dataset is not None:
        options["dataset"] = dataset
    split = options["test_split"] if split is None else split
    data, _ = load_run_data(options, c.dtype, split=split)
    x = apply_scaling(data.x_test, options["scaling"])
    y = class_targets(data.y_test, c.loss, c.sizes[-1], c.dtype)
    loss, acc = evaluate(run.state.params, x, y, **_model_kwargs(c))
    matrix = None
    if c.loss == "softmax_cross_entropy":
        from .confusion import confusion_matrix
        from .mlp import predict

        matrix = confusion_matrix(data.y_test, predict(run.state.params, x,
                                                       **_model_kwargs(c)), c.sizes[-1])
    return EvalResult(split, loss, acc, len(y), matrix)


def predict_files(run: SavedRun, paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """One dict per image file: {"file", "class", "probability", "probabilities"} for
    softmax cross-entropy, {"file", "probabilities"} (one per output) for binary
    cross-entropy, {"file", "output"} for mse. Every file is read (and checked) before
    the network runs, so a bad one raises ValueError and nothing is predicted."""
    from .images import read_gray_image
    from .losses import softmax
    from .mlp import forward

    c = run.state.config
    shape = run.options["image_shape"]
    if shape is None:  # a checkpoint from before the shape was recorded: square images
        side = math.isqrt(c.sizes[0])
        if side * side != c.sizes[0]:
            raise ValueError(f"{run.checkpoint}: the run does not record its image size "
                             f"and its {c.sizes[0]} inputs are not a square image")
        shape = [side, side]
    pixels = np.stack([read_gray_image(p, (shape[0], shape[1])).reshape(-1) for p in paths])
    # The loader's scaling to [0, 1] (pixels / 255, as fnn.data does), then the run's.
    x = apply_scaling(np.divide(pixels, np.dtype(c.dtype).type(255), dtype=c.dtype),
                      run.options["scaling"])
    out = forward(run.state.params, x, **_model_kwargs(c)).astype(np.float64)
    results: list[dict[str, Any]] = []
    for path, row in zip(paths, out):
        if c.loss == "softmax_cross_entropy":
            probs = softmax(row[None])[0]
            k = int(np.argmax(probs))
            results.append({"file": str(path), "class": k, "probability": float(probs[k]),
                            "probabilities": [float(p) for p in probs]})
        elif c.loss == "sigmoid_binary_cross_entropy":
            probs = ACTIVATIONS["sigmoid"].forward(row)
            results.append({"file": str(path), "probabilities": [float(p) for p in probs]})
        else:
            results.append({"file": str(path), "output": [float(v) for v in row]})
    return results
