"""fnn: functional neural networks in NumPy.

Pure functions over immutable params: MLPs with hand-written backprop, a NumPy (BLAS)
path and a Numba path behind one API, and the origin notebook's math kept in
`fnn.reference` to compare against.

Modules, one concern each: `params` (Layer, init), `activations`, `losses` and
`dropout` (the ops, as data), `model` (which ops a network uses), `mlp` (the math),
`backends`, `kernels` and `numba_ops` (the two compute paths; `numba_compat`, the Numba
internals they use), `epoch` (a whole epoch in compiled code) and `team` (its threads),
`validate` (input checks), `hyperparams` (the bounds of every hyper-parameter, one
table), `reference` (the notebook), `gradcheck` and `per_example` (gradient checks),
`optim`, `data` (with `arraycache`, decoded arrays kept on disk) and `batching`,
`train` (with `monitor`, early stopping's bookkeeping; `interrupts`, Ctrl-C at clean
points), `checkpoint`, `plot`, `sweep` (many seeded runs at once), the run's files
(`run_config`, `metrics_log`, `provenance`, `scaling`, `images`, `confusion`, `runs`: a
saved run used again for eval and predict), `sklearn` (estimators) and `cli`.
"""

from . import activations, hyperparams, losses, optim, reference
from .activations import ACTIVATIONS, Activation
from .backends import BACKENDS, get_backend, set_backend
from .batching import batch_indices
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import Dataset, load_mnist
from .epoch import momentum_epoch, sgd_epoch
from .gradcheck import GradientCheckError, GradientReport, assert_gradients, check_gradients
from .losses import LOSS_FUNCTIONS, Loss
from .mlp import accuracy, backprop, forward, loss, predict, sgd_step
from .model import Model
from .params import Layer, Params, init_params
from .per_example import per_example_grads
from .sweep import SweepResult, sweep
from .train import (
    History,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    TrainState,
    evaluate,
    fit,
    on_events,
    validation_split,
)

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "LOSS_FUNCTIONS",
    "Activation",
    "CheckpointError",
    "Dataset",
    "GradientCheckError",
    "GradientReport",
    "History",
    "Layer",
    "Loss",
    "Model",
    "Params",
    "SweepResult",
    "TrainConfig",
    "TrainState",
    "TrainingDiverged",
    "TrainingInterrupted",
    "accuracy",
    "activations",
    "assert_gradients",
    "backprop",
    "batch_indices",
    "check_gradients",
    "evaluate",
    "fit",
    "forward",
    "get_backend",
    "hyperparams",
    "init_params",
    "load_checkpoint",
    "load_mnist",
    "loss",
    "losses",
    "momentum_epoch",
    "on_events",
    "optim",
    "per_example_grads",
    "predict",
    "reference",
    "save_checkpoint",
    "set_backend",
    "sgd_epoch",
    "sgd_step",
    "sweep",
    "validation_split",
]
