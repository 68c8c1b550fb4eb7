"""fnn: functional neural networks in NumPy.

Pure functions over immutable params: a ReLU MLP with hand-written backprop, a NumPy
(BLAS) path and a Numba path behind one API, and the origin notebook's math kept in
`fnn.reference` to compare against.
"""

from . import reference
from .backends import BACKENDS, get_backend, set_backend
from .mlp import accuracy, backprop, forward, loss, predict, sgd_step
from .params import Layer, Params, init_params

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "Layer",
    "Params",
    "accuracy",
    "backprop",
    "forward",
    "get_backend",
    "init_params",
    "loss",
    "predict",
    "reference",
    "set_backend",
    "sgd_step",
]
