"""The `"numba"` backend's `Ops`: which compiled kernel serves which record.

ReLU keeps its sparse fast path (the product fused with the activation, the backward
mask a > 0); the other built-in activations take the compiled dense path, which
compiles their record functions (`fnn.kernels.apply_activation`, `act_backward`); a
user-defined activation runs its own NumPy functions between the compiled products.
Softmax cross-entropy has a fused kernel; the elementwise losses compile their
record's `element` and `element_grad`.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from . import team as _team
from .activations import IDENTITY, Activation
from .backends import NUMPY_OPS, Ops
from .interrupts import deferred_sigint
from .losses import SOFTMAX_XENT, Loss
from .model import Model
from .params import Params

__all__ = ["NUMBA_OPS"]

_NO_DROP = {np.dtype(np.float32): np.empty((0, 0), np.float32),
            np.dtype(np.float64): np.empty((0, 0), np.float64)}


def _layer(x: np.ndarray, w: np.ndarray, b: np.ndarray,
           act: Activation) -> tuple[np.ndarray, np.ndarray]:
    # The kernels are compiled for C-contiguous arrays: a Fortran-ordered or strided w
    # (valid params) would compile a new specialization (~10 s) per layout. A copy, made
    # only for such params, gives the same bits.
    w, b = np.ascontiguousarray(w), np.ascontiguousarray(b)
    packing = kernels.packing_for(w.shape[1])
    if act.zero_preserving and act.code >= 0:  # ReLU
        a = kernels.linear(x, w, b, True, packing)
        return a, a
    z = kernels.linear(x, w, b, False, packing)
    if act.code == IDENTITY.code:
        return z, z
    if act.code >= 0:
        return z, kernels.apply_activation(z, act.code)
    return z, np.asarray(act.forward(z), dtype=z.dtype)


def _backward(delta: np.ndarray, w: np.ndarray, z: np.ndarray, a: np.ndarray,
              a_in: np.ndarray, act: Activation, drop: np.ndarray | None) -> np.ndarray:
    w = np.ascontiguousarray(w)  # as in _layer
    packing = kernels.packing_for(w.shape[0])
    if act.zero_preserving and act.code >= 0:  # ReLU: masked where the input is 0
        out = kernels.relu_backward(delta, w, a_in, packing)
        if drop is not None:
            out *= drop
        return out
    if act.code >= 0:
        return kernels.act_backward(delta, w, z, a, act.code,
                                    _NO_DROP[w.dtype] if drop is None else drop, packing)
    out = kernels.matmul_t(delta, w, packing)
    if drop is not None:
        out *= drop
    out *= act.derivative(z, a)
    return out


def _weight_grad(a: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return kernels.weight_grad(a, delta, kernels.packing_for(delta.shape[1]))


def _loss_grad(out: np.ndarray, y: np.ndarray, loss: Loss) -> tuple[float, np.ndarray]:
    if loss.code < 0:  # a user's loss: its own NumPy functions
        return NUMPY_OPS.loss_grad(out, y, loss)
    if loss is SOFTMAX_XENT:
        return kernels.softmax_xent(out, y)
    return kernels.elementwise_loss_grad(out, y, loss.code)


def _loss_value(out: np.ndarray, y: np.ndarray, loss: Loss) -> float:
    if loss.code < 0:
        return loss.value(out, y)
    terms = np.empty((out.shape[0], 1 if loss is SOFTMAX_XENT else out.shape[1]))
    return kernels.loss_into(_in(out), _in(y), loss.code, np.empty(out.shape, out.dtype),
                             terms)


def _output(params: Params, model: Model, x: np.ndarray) -> np.ndarray | None:
    codes = [model.activation(l).code for l in range(len(params))]
    if min(codes) < 0:  # a user's activation: no compiled pass (the layers one by one)
        return None
    ws = tuple(_in(p.w) for p in params)
    n, dtype = x.shape[0], ws[0].dtype
    outs = tuple(np.empty((n, w.shape[1]), dtype=dtype) for w in ws)
    zs = tuple(o if c in kernels.IN_PLACE_CODES else np.empty_like(o)  # (see Ops.layer)
               for o, c in zip(outs, codes))
    masks = tuple(np.empty((n, -(-w.shape[0] // 64)), dtype=np.uint64) for w in ws)
    team = _team.team_for(n * sum(w.size for w in ws), _MACS_PER_THREAD)
    widths = tuple(d for w in ws for d in w.shape)
    scratches = np.empty((team, kernels.scratch_size(widths, kernels.EVAL_ROWS)), dtype=dtype)
    packing = kernels.packing_for(max(w.shape[1] for w in ws))
    tiles = kernels.tiles_size(tuple(w.shape for w in ws)) if packing is not None else 0
    args = (ws, tuple(_in(p.b) for p in params), _in(x), kernels.codes_arg(codes), packing,
            zs, outs, masks, scratches, np.empty((team, tiles), dtype=dtype))
    with deferred_sigint():  # Ctrl-C after the kernel, not inside numba's dispatcher
        _team.run(kernels.output_into, args, _team.new_sync(), team)
    return outs[-1]


#: A whole pass takes one thread per this many multiply-adds (`fnn.team.team_for`), so
#: a team from 2^24: below, starting a thread costs more than it saves (a thread starts
#: and joins in ~0.1 ms).
_MACS_PER_THREAD = 1 << 23


def _in(a: np.ndarray) -> np.ndarray:
    """A C-contiguous read-only view of a (a copy if it is not C-contiguous): what the
    whole-pass kernels read, one compiled type whatever the caller's flags and layout
    (a tuple of weights must be of one type, too, to be indexed by layer)."""
    flags = a.flags
    if flags.c_contiguous and not flags.writeable:  # params are
        return a
    view = np.ascontiguousarray(a).view()
    view.flags.writeable = False
    return view


NUMBA_OPS = Ops(
    layer=_layer,
    backward=_backward,
    weight_grad=_weight_grad,
    bias_grad=kernels.bias_grad,
    loss_grad=_loss_grad,
    loss_value=_loss_value,
    output=_output,
)
