"""fnn: functional neural networks in NumPy.

Pure functions over immutable params: a ReLU MLP with hand-written backprop, a NumPy
(BLAS) path and a Numba path behind one API, and the origin notebook's math kept in
`fnn.reference` to compare against.

Modules, one concern each: `params` (Layer, init), `mlp` (the math), `backends` and
`kernels` (the two compute paths), `epoch` (a whole epoch in compiled code), `validate`
(input checks), `reference` (the notebook), `gradcheck` and `per_example` (gradient
checks), `optim`, `data`, `train`, `checkpoint`, `plot`, `cli`.
"""

from . import optim, reference
from .backends import BACKENDS, get_backend, set_backend
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import Dataset, batch_indices, load_mnist
from .epoch import momentum_epoch, sgd_epoch
from .gradcheck import GradientCheckError, GradientReport, assert_gradients, check_gradients
from .mlp import accuracy, backprop, forward, loss, predict, sgd_step
from .params import Layer, Params, init_params
from .per_example import per_example_grads
from .train import (
    History,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    TrainState,
    evaluate,
    fit,
)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "CheckpointError",
    "Dataset",
    "GradientCheckError",
    "GradientReport",
    "History",
    "Layer",
    "Params",
    "TrainConfig",
    "TrainState",
    "TrainingDiverged",
    "TrainingInterrupted",
    "accuracy",
    "assert_gradients",
    "backprop",
    "batch_indices",
    "check_gradients",
    "evaluate",
    "fit",
    "forward",
    "get_backend",
    "init_params",
    "load_checkpoint",
    "load_mnist",
    "loss",
    "momentum_epoch",
    "optim",
    "per_example_grads",
    "predict",
    "reference",
    "save_checkpoint",
    "set_backend",
    "sgd_epoch",
    "sgd_step",
]
