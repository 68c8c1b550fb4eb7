"""Numba kernels for the batched MLP: the `"numba"` compute path, and a whole epoch.

Each `Ops` kernel (`linear`, `relu_backward`, `weight_grad`, `bias_grad`,
`softmax_xent`, `softmax_xent_loss`) has the signature of its NumPy twin in
`fnn.backends` and is checked against it and against `fnn.reference` in the tests.
`train_epoch` runs the steps of an epoch with them (see `fnn.epoch`).

One idea does the heavy lifting. The left operand of every matrix product of an MLP step
has many exact zeros (MNIST pixels are ~81% zeros, ReLU activations and their masked
gradients about half), so each product is written as (`_sparse_matmul`)

    out[o, :] = (sum over i with left[o, i] != 0, ascending, of left[o, i] * right[i, :])
                + bias

each term added with one fused multiply-add (`_fma`: acc <- left[o, i] * right[i] + acc,
rounded once). The non-zeros of each left row are found once as 64-bit masks
(`row_masks`, `col_masks`: vectorised compares; an epoch makes them while it gathers
a batch) and visited with count-trailing-zeros, so a zero costs nothing and no branch
per element is mispredicted. Output rows are accumulated in registers, TILE columns at
a time: LLVM keeps an accumulator in registers only when it can prove that it aliases no
input, so it lives in a small stack array (`_stack_tile`), and `right` is zero-padded to
whole tiles so that every tile has the same compile-time width. Rows go in pairs: one
load of right[i] feeds both rows, over the union of their non-zeros. Outputs narrower
than NARROW (the logits and their weight gradient, 64x10 on MNIST) are so small that
masks and temporaries would cost more than the zeros they skip: a dense loop
(`_narrow_weight_grad`) sums them in the same order, tiles running along the long side.
Large products (`_packs`: PACK_ROWS rows and inner size or more) copy each tile of right into a
contiguous buffer first and go through the inner dimension in L1-sized blocks
(`_sparse_matmul_packed`): the same sums, twice as fast at 784-1024-1024-10.

Exactness: a skipped term is a `+ 0` that BLAS would compute (for finite inputs; fnn
validates x), and a pair's extra terms are `0 * right[i] + acc = acc`; neither changes a
sum, except at most the sign of a zero. So each output row depends only on its own
inputs: `linear(x)[r]` equals `linear(x[r:r+1])[0]` (as `==`, -0 == 0).

Reproducibility: every sum runs in a fixed sequential order (ascending i from 0, no
`parallel=True`, no `fastmath`, hence no reassociation), and the fused multiply-adds are
explicit IEEE 754 operations, not a licence given to the compiler: one instruction on a
CPU with FMA, a correctly rounded libm call on one without, the same bits either way.
So a kernel gives bit-identical results on every call and every run. Everything else
(the bias, the SGD update w - lr * g) rounds each operation, as NumPy does.
`cache=True` compiles once per machine and signature.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.extending import overload

from . import activations as _acts
from . import dropout as _dropout
from . import losses as _losses
from .numba_compat import fma as _fma
from .numba_compat import prefetch as _prefetch
from .numba_compat import stack_tile, trailing_zeros

__all__ = [
    "ASSIGN",
    "HYPER",
    "NARROW",
    "OPTIMIZERS",
    "PACKING",
    "PACK_ROWS",
    "RELU",
    "STEP_SCALARS",
    "SUBTRACT",
    "TILE",
    "act_backward",
    "apply_activation",
    "bias_grad",
    "col_masks",
    "drop_multiplier",
    "elementwise_loss",
    "elementwise_loss_grad",
    "gradcheck_layer",
    "linear",
    "matmul_t",
    "packing_for",
    "relu_backward",
    "row_masks",
    "softmax_xent",
    "softmax_xent_loss",
    "train_epoch",
    "weight_grad",
    "weight_grad_into",
]

_jit = nb.njit(cache=True, nogil=True, error_model="numpy")
_inline = nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")

#: Output columns accumulated in registers at once: 4 AVX-512 registers of float32.
TILE = 64
#: Outputs at most this wide are computed transposed (see `linear`, `weight_grad_into`).
NARROW = 16
# What `_sparse_matmul` does with each sum s: out = s + bias, out = ReLU(s + bias), or
# out = out - scale * s (an SGD step straight from the registers that hold a gradient).
ASSIGN, RELU, SUBTRACT = 0, 1, 2
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
#: Output rows (and rows of the right operand) from which `_sparse_matmul_padded` copies
#: each column block of its right operand into a contiguous buffer (see `_packs`).
PACK_ROWS = 128
_COPY_BLOCK = 32  # `_padded` transposes in 32 x 32 blocks
#: The `packing` argument that lets the products of a kernel pack (`_packs`); None
#: there compiles no packed code at all (numba prunes the `packing is None` branch),
#: which saves its compile time where no product is wide enough: see `packing_for`.
PACKING = np.zeros(1, dtype=np.uint8)


def packing_for(width: int) -> np.ndarray | None:
    """The `packing` argument for products at most `width` columns wide (the widest
    layer of a net): PACKING where one may pack, None where none can (TILE or less)."""
    return PACKING if width > TILE else None


_stack_tile = stack_tile(TILE)


# ---------------------------------------------------------------- non-zero masks
@_inline
def _row_mask_words(x, r, masks, o):
    """masks[o, :] = the non-zero bits of row r of x (see `row_masks`)."""
    d = x.shape[1]
    for wd in range(masks.shape[1]):
        base = wd * 64
        m = np.uint64(0)
        if base + 64 <= d:  # a constant trip count, which LLVM vectorises
            for l in range(64):
                m |= np.uint64(x[r, base + l] != 0) << np.uint64(l)
        else:
            for l in range(d - base):
                m |= np.uint64(x[r, base + l] != 0) << np.uint64(l)
        masks[o, wd] = m


@_inline
def _set_col_bits(x, r, word, bit):
    """word[i] |= 1 << bit wherever x[r, i] != 0. word: (d,) uint64, contiguous, so the
    loop vectorises."""
    for i in range(x.shape[1]):
        word[i] |= np.uint64(x[r, i] != 0) << bit


@_jit
def row_masks(x):
    """Non-zeros of each row as bits. x: (n, d) -> (n, ceil(d / 64)) uint64.

    Bit i % 64 of word i // 64 of row r is set when x[r, i] != 0.
    """
    n, d = x.shape
    masks = np.empty((n, (d + 63) // 64), dtype=np.uint64)
    for r in range(n):
        _row_mask_words(x, r, masks, r)
    return masks


@_jit
def col_masks(x):
    """Non-zeros of each column as bits. x: (n, d) -> (d, ceil(n / 64)) uint64.

    Bit r % 64 of word r // 64 of row i is set when x[r, i] != 0.
    """
    n, d = x.shape
    words = np.zeros(((n + 63) // 64, d), dtype=np.uint64)  # transposed: rows contiguous
    for r in range(n):
        _set_col_bits(x, r, words[r // 64], np.uint64(r % 64))
    return np.ascontiguousarray(words.T)


# ---------------------------------------------------------------- the product
@_inline
def _add_pair(acc0, acc1, v0, v1, right, i, t0, width):
    """acc0[:width] += v0 * right[i, t0:t0+width]; acc1 likewise with v1 (one load, two uses).

    Inlined where it is called, so that a constant width (TILE) is a compile-time trip
    count and acc0, acc1 stay in registers.
    """
    for j in range(width):
        r = right[i, t0 + np.uint64(j)]
        acc0[j] = _fma(v0, r, acc0[j])
        acc1[j] = _fma(v1, r, acc1[j])


@_jit
def _store(out, o, t0, width, acc, bias, mode, scale):
    for j in range(width):
        c = t0 + np.uint64(j)
        if mode == SUBTRACT:
            out[o, c] = out[o, c] - scale * acc[j]
        else:
            z = acc[j] + bias[c]
            # ReLU'(0) is taken as 0, so ReLU(z) = z * (z > 0) and its mask is a > 0.
            out[o, c] = z if mode == ASSIGN or z > 0 else 0


@_inline
def _pair_sums(left, masks, right, acc0, acc1, o0, o1, t0, w0, w1):
    """acc0 += left[o0, i] * right[i, t0:t0+TILE] for the i of mask words [w0, w1) where
    row o0 or o1 is non-zero, ascending; acc1 likewise for row o1."""
    for wd in range(w0, w1):
        m = masks[o0, wd] | masks[o1, wd]
        base = np.uint64(wd * 64)
        while m:
            i = base + trailing_zeros(m)
            m &= m - _ONE
            _add_pair(acc0, acc1, left[o0, i], left[o1, i], right, i, t0, TILE)


@_jit
def _pack_tile(right, transposed, t, packed):
    """packed[:, :] = r[:, t:t+TILE], zero-padded past r's last column, where r is right
    (C-contiguous), or right.T when `transposed`.

    right.T goes in blocks of _COPY_BLOCK of its rows, so that each cache line of right
    is read once, whole; row by row, the TILE rows of right that one row of right.T
    touches lie a whole row apart and evict each other from the cache."""
    k, width = (right.shape[1], right.shape[0]) if transposed else right.shape
    cols = min(TILE, width - t)
    if transposed:
        for i0 in range(0, k, _COPY_BLOCK):
            for j in range(cols):
                for i in range(i0, min(k, i0 + _COPY_BLOCK)):
                    packed[i, j] = right[t + j, i]
    else:
        for i in range(k):
            for j in range(cols):
                packed[i, j] = right[i, t + j]
    for i in range(k):
        for j in range(cols, TILE):
            packed[i, j] = 0


@_jit
def _packs(n, k, width):
    """Whether a product of n output rows with a right operand (k, width) is packed
    (`_sparse_matmul_packed`): a shallower or narrower right fits the cache as it is,
    and fewer rows do not repay the copy (measured: a 64-deep right packed made
    x.T @ delta 40% slower)."""
    return width > TILE and n >= PACK_ROWS and k >= PACK_ROWS


@_jit
def _sparse_matmul_padded(left, masks, right, bias, out, mode, scale, packing):
    """`_sparse_matmul` for a C-contiguous right whose width is a multiple of TILE (a
    large product goes to `_sparse_matmul_packed` unless packing is None, see `_packs`)."""
    n, d = out.shape
    if packing is not None and _packs(n, right.shape[0], right.shape[1]):
        _sparse_matmul_packed(left, masks, right, False, bias, out, mode, scale)
        return
    words = masks.shape[1]
    acc0 = _stack_tile(right)
    acc1 = _stack_tile(right)
    for t in range(0, right.shape[1], TILE):
        # Unsigned column indices: no negative-index wraparound, so contiguous loads.
        t0 = np.uint64(t)
        width = min(TILE, d - t)
        for o0 in range(0, n, 2):
            o1 = min(o0 + 1, n - 1)  # an odd last row is paired with itself
            for j in range(TILE):
                acc0[j] = 0
                acc1[j] = 0
            _pair_sums(left, masks, right, acc0, acc1, o0, o1, t0, 0, words)
            _store(out, o0, t0, width, acc0, bias, mode, scale)
            if o1 != o0:
                _store(out, o1, t0, width, acc1, bias, mode, scale)


@_jit
def _sparse_matmul_packed(left, masks, right, transposed, bias, out, mode, scale):
    """`_sparse_matmul_padded` for a large product (`_packs`), with right.T in place of
    right when `transposed` (right C-contiguous, any width: the packing pads).

    Each TILE-wide column block of right is first copied into a contiguous (k, TILE)
    buffer (`_pack_tile`), and the inner dimension then goes in blocks of 128 (float32;
    64 for float64) rows of it, 32 KiB that stay in L1 while every row pair uses them; a
    pair's running sums wait in `part` between blocks. Rows of right a whole row apart
    (4 KiB for 1024 float32 columns) fall into the same few cache sets, so without the
    copy every pair reloads them from further out: with it (and w.T packed straight from
    w in `matmul_t`, with no transposed copy), a 784-1024-1024-10 epoch ran 2.1x faster.
    Each sum still takes its terms in ascending order, one fused multiply-add at a time,
    the running sums stored and reloaded exactly: the same bits as the plain loop.
    """
    n, d = out.shape
    k, width = (right.shape[1], right.shape[0]) if transposed else right.shape
    words = masks.shape[1]
    block = max(1, 8 // right.itemsize)  # mask words (64 rows of right) a block
    acc0 = _stack_tile(right)
    acc1 = _stack_tile(right)
    part = np.empty((n, TILE), dtype=right.dtype)
    packed = np.empty((k, TILE), dtype=right.dtype)
    for t in range(0, width, TILE):
        t0 = np.uint64(t)
        cols = min(TILE, d - t)
        _pack_tile(right, transposed, t, packed)
        for w0 in range(0, words, block):
            w1 = min(words, w0 + block)
            for o0 in range(0, n, 2):
                o1 = min(o0 + 1, n - 1)  # an odd last row is paired with itself
                for j in range(TILE):
                    acc0[j] = 0 if w0 == 0 else part[o0, j]
                    acc1[j] = 0 if w0 == 0 else part[o1, j]
                _pair_sums(left, masks, packed, acc0, acc1, o0, o1, _ZERO, w0, w1)
                if w1 < words:
                    for j in range(TILE):
                        part[o0, j] = acc0[j]
                        part[o1, j] = acc1[j]
                else:
                    _store(out, o0, t0, cols, acc0, bias, mode, scale)
                    if o1 != o0:
                        _store(out, o1, t0, cols, acc1, bias, mode, scale)


@_jit
def _padded(a):
    """A zero-padded C-contiguous copy of a: (k, d), any layout -> (k, d rounded up to TILE)."""
    k, d = a.shape
    out = np.zeros((k, -(-d // TILE) * TILE), dtype=a.dtype)
    # Loops, not slice assignment: far less for numba to compile.
    if a.strides[1] == a.itemsize:  # rows contiguous: row by row
        for i in range(k):
            for j in range(d):
                out[i, j] = a[i, j]
        return out
    # A transposed view (w.T): its rows are columns of w, and reading one element per
    # row of w would touch a new cache line each time; square blocks reuse the lines.
    for i0 in range(0, k, _COPY_BLOCK):
        for j0 in range(0, d, _COPY_BLOCK):
            for i in range(i0, min(k, i0 + _COPY_BLOCK)):
                for j in range(j0, min(d, j0 + _COPY_BLOCK)):
                    out[i, j] = a[i, j]
    return out


@_jit
def _sparse_matmul(left, masks, right, bias, out, mode, scale, packing):
    """out (op)= left @ right, visiting only the non-zeros of left (see the module doc).

    left: (n, k), any layout; masks: (n, ceil(k / 64)) uint64, the non-zeros of left's
    rows (`row_masks(left)`); right: (k, d) C-contiguous (other layouts: pass
    `_padded(right)` to `_sparse_matmul_padded`); bias: (d,); out: (n, d), written.
    mode ASSIGN: out = s + bias; RELU: out = ReLU(s + bias); SUBTRACT: out = out - scale * s,
    where s = sum over i with bit i of masks[o] set, ascending, of left[o, i] * right[i, :].
    """
    if right.shape[1] % TILE == 0:
        _sparse_matmul_padded(left, masks, right, bias, out, mode, scale, packing)
    else:
        _sparse_matmul_padded(left, masks, _padded(right), bias, out, mode, scale, packing)


# ---------------------------------------------------------------- the Ops kernels
@_jit
def _narrow(n, d_out):
    """Whether a product with n output rows of d_out columns is computed transposed, dense."""
    return d_out <= NARROW < n


@_jit
def _no_masks():
    return np.empty((0, 1), dtype=np.uint64)


@_jit
def _linear_masks(x, w):
    """The masks `_linear(x, masks, w, ...)` reads: row_masks(x), none for a narrow output."""
    return _no_masks() if _narrow(x.shape[0], w.shape[1]) else row_masks(x)


@_jit
def _weight_grad_masks(a, w):
    """The masks `_weight_grad_into(a, masks, ...)` reads for a gradient shaped like w:
    col_masks(a), none for a narrow output."""
    return _no_masks() if _narrow(w.shape[0], w.shape[1]) else col_masks(a)


@_jit
def _linear(x, masks, w, b, relu, packing):
    """`linear`, given masks = row_masks(x) (not read, and may be `_no_masks()`, when the
    output is narrow)."""
    n, d_out = x.shape[0], w.shape[1]
    out = np.empty((n, d_out), dtype=w.dtype)
    zero = w.dtype.type(0)
    mode = RELU if relu else ASSIGN
    if _narrow(n, d_out):
        # Few outputs (the logits): a tile would be mostly padding. out = (x.T).T @ w is the
        # weight-gradient product of `_narrow_weight_grad`, whose tiles run along the batch;
        # each out[r, j] is the same ascending sum over i (plus terms that are +-0).
        _narrow_weight_grad(np.ascontiguousarray(x.T), w, out, ASSIGN, zero)
        for r in range(n):
            for j in range(d_out):
                z = out[r, j] + b[j]
                out[r, j] = z if mode == ASSIGN or z > 0 else 0
    else:
        _sparse_matmul(x, masks, w, b, out, mode, zero, packing)
    return out


@_jit
def linear(x, w, b, relu, packing=None):
    """z = x @ w + b, then ReLU when `relu`. x: (n, d_in), w: (d_in, d_out) -> (n, d_out).

    packing: PACKING lets a large product pack (`_packs`: faster, the same bits); None
    (the default) never packs and compiles no packed code. The same in every kernel
    below that takes it."""
    return _linear(x, _linear_masks(x, w), w, b, relu, packing)


@_jit
def matmul_t(delta, w, packing=None):
    """delta @ w.T over delta's non-zeros (see `_sparse_matmul`). -> (n, d_in)."""
    n, d_in = delta.shape[0], w.shape[0]
    out = np.empty((n, d_in), dtype=w.dtype)
    masks, zeros, zero = row_masks(delta), np.zeros(d_in, dtype=w.dtype), w.dtype.type(0)
    if packing is not None and _packs(n, w.shape[1], d_in):  # w.T packed from w: no copy
        _sparse_matmul_packed(delta, masks, w, True, zeros, out, ASSIGN, zero)
    else:  # the copy costs d_in*d_out, the product n times that
        _sparse_matmul_padded(delta, masks, _padded(w.T), zeros, out, ASSIGN, zero, packing)
    return out


@_jit
def relu_backward(delta, w, a_prev, packing=None):
    """(delta @ w.T) * (a_prev > 0). delta: (n, d_out), w: (d_in, d_out) -> (n, d_in)."""
    out = matmul_t(delta, w, packing)
    for r in range(out.shape[0]):
        for i in range(out.shape[1]):
            if not a_prev[r, i] > 0:
                out[r, i] = 0
    return out


@_jit
def _narrow_weight_grad(a, delta, out, mode, scale):
    """`weight_grad_into` for few columns (the last layer's): the transpose, dense.

    Columns of out go in pairs, as tiles of TILE rows of out held in registers: one load
    of a[r] feeds both. Each out[i, j] is the sum over r ascending of a[r, i] * delta[r, j],
    the masked sum of `_sparse_matmul` plus terms that are +-0, so the same value. A
    problem this small costs mostly its fixed overhead, hence no masks, no temporaries.
    """
    n, d_in = a.shape
    d_out = out.shape[1]
    acc0 = _stack_tile(delta)
    acc1 = _stack_tile(delta)
    for t in range(0, d_in, TILE):
        t0 = np.uint64(t)  # unsigned: no negative-index wraparound, so contiguous loads
        width = min(TILE, d_in - t)
        for j0 in range(0, d_out, 2):
            j1 = min(j0 + 1, d_out - 1)  # an odd last column is paired with itself
            for c in range(TILE):
                acc0[c] = 0
                acc1[c] = 0
            if width == TILE:  # a compile-time trip count keeps acc in registers
                for r in range(n):
                    _add_pair(acc0, acc1, delta[r, j0], delta[r, j1], a, r, t0, TILE)
            else:
                for r in range(n):
                    _add_pair(acc0, acc1, delta[r, j0], delta[r, j1], a, r, t0, width)
            for c in range(width):
                i = t + c
                if mode == SUBTRACT:
                    out[i, j0] = out[i, j0] - scale * acc0[c]
                    if j1 != j0:
                        out[i, j1] = out[i, j1] - scale * acc1[c]
                else:
                    out[i, j0] = acc0[c]
                    out[i, j1] = acc1[c]


@_jit
def _weight_grad_into(a, masks, delta, out, mode, scale, packing):
    """`weight_grad_into`, given masks = col_masks(a) (not read, and may be `_no_masks()`,
    when the output is narrow)."""
    d_in, d_out = out.shape
    if _narrow(d_in, d_out):
        _narrow_weight_grad(a, delta, out, mode, scale)
    else:
        zeros = np.zeros(max(d_in, d_out), dtype=delta.dtype)
        _sparse_matmul(a.T, masks, delta, zeros, out, mode, scale, packing)


@_jit
def weight_grad_into(a, delta, out, mode, scale, packing=None):
    """out = a.T @ delta (mode ASSIGN) or out = out - scale * (a.T @ delta) (SUBTRACT).

    a: (n, d_in), delta: (n, d_out) C-contiguous, out: (d_in, d_out), written in place.
    """
    if _narrow(out.shape[0], out.shape[1]):
        _narrow_weight_grad(a, delta, out, mode, scale)  # no masks to make
    else:
        _weight_grad_into(a, col_masks(a), delta, out, mode, scale, packing)


@_jit
def weight_grad(a, delta, packing=None):
    """a.T @ delta. a: (n, d_in), delta: (n, d_out) -> (d_in, d_out)."""
    out = np.empty((a.shape[1], delta.shape[1]), dtype=delta.dtype)
    weight_grad_into(a, delta, out, ASSIGN, delta.dtype.type(0), packing)
    return out


@_jit
def bias_grad(delta):
    """delta summed over the batch. delta: (n, d_out) -> (d_out,)."""
    n, d_out = delta.shape
    g = np.zeros(d_out, dtype=delta.dtype)
    for r in range(n):
        for j in range(d_out):
            g[j] += delta[r, j]
    return g


@_jit
def _row_max(z, r):
    m = z[r, 0]
    for j in range(1, z.shape[1]):
        if z[r, j] > m:
            m = z[r, j]
    return m


@_jit
def softmax_xent_loss(logits, y):
    """Mean softmax cross-entropy, accumulated in float64. logits: (n, k), y: (n,) int64."""
    n, k = logits.shape
    total = 0.0
    for r in range(n):
        m = _row_max(logits, r)
        s = 0.0
        for j in range(k):
            s += np.exp(logits[r, j] - m)
        total += np.log(s) - (logits[r, y[r]] - m)
    return total / n


@_jit
def softmax_xent(logits, y):
    """(mean loss, d mean loss / d logits). logits: (n, k), y: (n,) -> (float, (n, k)).

    The loss is accumulated in float64, as in `softmax_xent_loss` (the same value).
    """
    n, k = logits.shape
    delta = np.empty_like(logits)
    inv_n = 1.0 / n
    total = 0.0
    for r in range(n):
        m = _row_max(logits, r)
        s = 0.0
        for j in range(k):
            e = np.exp(logits[r, j] - m)  # one exp per entry: exps dominate this kernel
            delta[r, j] = e
            s += e
        total += np.log(s) - (logits[r, y[r]] - m)
        inv_s = 1.0 / s
        for j in range(k):
            # (softmax - onehot) / n in float64, rounded once to the logits' dtype.
            p = delta[r, j] * inv_s
            delta[r, j] = (p - 1.0 if j == y[r] else p) * inv_n
    return total / n, delta


# ---------------------------------------------------------------- the records, compiled
# The activation and loss records' own functions (fnn.activations, fnn.losses), compiled
# for scalars and dispatched on the record's `code`: the math is written once, there.
_f0, _f1, _f2, _f3, _f4, _f5 = (_inline(a.forward) for a in _acts.BUILTIN)
_d0, _d1, _d2, _d3, _d4, _d5 = (_inline(a.derivative) for a in _acts.BUILTIN)
_RELU, _IDENTITY = _acts.RELU.code, _acts.IDENTITY.code
_XENT = _losses.SOFTMAX_XENT.code
_MSE, _BCE = _losses.LOSS_FUNCTIONS["mse"], _losses.LOSS_FUNCTIONS["sigmoid_binary_cross_entropy"]
_e1, _g1, _e2, _g2 = (_inline(f) for f in (_MSE.element, _MSE.element_grad, _BCE.element,
                                           _BCE.element_grad))
_MSE_CODE = _MSE.code
_mix = _inline(_dropout.mix)
_GOLDEN = _dropout.GOLDEN


@_inline
def act_forward(code, z):
    """BUILTIN[code].forward(z) for a scalar z."""
    if code == 0:
        return _f0(z)
    if code == 1:
        return _f1(z)
    if code == 2:
        return _f2(z)
    if code == 3:
        return _f3(z)
    if code == 4:
        return _f4(z)
    return _f5(z)


@_inline
def act_derivative(code, z, a):
    """BUILTIN[code].derivative(z, a) for scalars, as a float (ReLU's is a bool)."""
    if code == 0:
        return 1.0 * _d0(z, a)
    if code == 1:
        return 1.0 * _d1(z, a)
    if code == 2:
        return 1.0 * _d2(z, a)
    if code == 3:
        return 1.0 * _d3(z, a)
    if code == 4:
        return 1.0 * _d4(z, a)
    return 1.0 * _d5(z, a)


@_inline
def _loss_element(code, o, t):
    return _e1(o, t) if code == _MSE_CODE else _e2(o, t)


@_inline
def _loss_element_grad(code, o, t):
    return _g1(o, t) if code == _MSE_CODE else _g2(o, t)


@_jit
def apply_activation(z, code):
    """a = BUILTIN[code].forward(z), elementwise. z: (n, d) -> (n, d), z's dtype."""
    a = np.empty_like(z)
    for r in range(z.shape[0]):
        for j in range(z.shape[1]):
            a[r, j] = act_forward(code, z[r, j])
    return a


@_jit
def act_backward(delta, w, z, a, code, drop, packing=None):
    """((delta @ w.T) * drop) * BUILTIN[code].derivative(z, a), elementwise after the
    product. delta: (n, d_out), w: (d_in, d_out), z, a: (n, d_in); drop: (n, d_in)
    dropout multiplier, or (0, 0) for none. -> (n, d_in)."""
    out = matmul_t(delta, w, packing)
    dropped = drop.shape[0] > 0
    for r in range(out.shape[0]):
        for i in range(out.shape[1]):
            g = out[r, i]
            if dropped:
                g = g * drop[r, i]
            out[r, i] = g * act_derivative(code, z[r, i], a[r, i])
    return out


@_jit
def elementwise_loss(out, y, code):
    """Mean over all n * k entries of the loss element, accumulated in float64."""
    n, k = out.shape
    total = 0.0
    for r in range(n):
        for j in range(k):
            total += _loss_element(code, out[r, j], y[r, j])
    return total / (n * k)


@_jit
def elementwise_loss_grad(out, y, code):
    """(mean loss, its gradient (n, k)): element_grad / k / n, as `fnn.losses` gives it."""
    n, k = out.shape
    delta = np.empty_like(out)
    total = 0.0
    for r in range(n):
        for j in range(k):
            total += _loss_element(code, out[r, j], y[r, j])
            g = out.dtype.type(_loss_element_grad(code, out[r, j], y[r, j]))
            delta[r, j] = (g / k) / n
    return total / (n * k), delta


@_jit
def drop_multiplier(n, d, base, thresh, scale):
    """`fnn.dropout.drop_multiplier` in compiled code: (n, d) of 0 and `scale`."""
    out = np.full((n, d), scale)
    i = np.uint64(0)
    zero = out.dtype.type(0)
    for r in range(n):
        for j in range(d):
            i += np.uint64(1)
            out[r, j] = scale if _mix(base + i * _GOLDEN) >= thresh else zero
    return out


@_jit
def gradcheck_layer(d, z, a, w, flags, code, kinks, linear_pieces, drop):
    """The gradient check's pass through one layer, for a built-in activation (real).

    d: (r, n, width) change of the pre-activation z: (n, width); a = act(z); w: the next
    layer's weights (width, w'); drop: (n, width) dropout multiplier or (0, 0).
    Returns ((act(z + d) - act(z)) * drop) @ w: (r, n, w'), the change of the next
    pre-activation; flags[r, e] |= some unit crossed a kink. Where no kink is crossed a
    piecewise-linear activation's change is exactly d * act'(z); a unit whose change is
    0 (a dead ReLU staying dead) costs nothing further.
    """
    rows, n, width = d.shape
    out = np.zeros((rows, n, w.shape[1]))
    dropped = drop.shape[0] > 0
    for r in range(rows):
        for e in range(n):
            flip = False
            for u in range(width):
                zu, du = z[e, u], d[r, e, u]
                s = zu + du
                crossed = False
                for k in kinks:
                    crossed = crossed or ((s > k) != (zu > k))
                if linear_pieces and not crossed:
                    da = du * act_derivative(code, zu, a[e, u])
                else:
                    da = act_forward(code, s) - a[e, u]
                if dropped:
                    da = da * drop[e, u]
                if da == 0:
                    continue
                flip = flip or crossed
                for j in range(w.shape[1]):
                    out[r, e, j] += da * w[u, j]
            if flip:
                flags[r, e] = True
    return out


def _loss_and_grad(out, y, code):  # typed by the overload below
    raise NotImplementedError


@overload(_loss_and_grad, inline="always")
def _loss_and_grad_impl(out, y, code):  # type: ignore[no-untyped-def]
    """Labels (n,) take softmax cross-entropy, float targets (n, k) an elementwise loss."""
    if y.ndim == 1:
        return lambda out, y, code: softmax_xent(out, y)
    return lambda out, y, code: elementwise_loss_grad(out, y, code)


# ---------------------------------------------------------------- a whole epoch
#: The optimizers `train_epoch` runs (`fnn.epoch.OptimizerSpec.kind`), coded by index.
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
_SGD, _MOMENTUM, _NESTEROV, _ADAM = 0, 1, 2, 3
#: The layout of train_epoch's `hyper` (constants) and `step_scalars` (one row per step).
HYPER = ("momentum", "weight_decay", "b1", "1 - b1", "b2", "1 - b2", "eps")
STEP_SCALARS = ("c1", "c2", "lr * weight_decay")


@_jit
def _update(p, g, s1, s2, kind, decay, lr, hyper, step):
    """In place, elementwise as `fnn.sgd_step` / `fnn.optim`, so results are bit-equal.

    Every scalar comes in the params' dtype, rounded from the Python float that
    `fnn.optim` multiplies by (NumPy 2 rounds such a weak scalar to the array's dtype
    first), and each operation is one rounded operation of that dtype, in the optimizer
    code's order. decay: whether weight decay applies (weights, not biases); with
    g' = g + wd * p (sgd family) and state s1 (velocity, adam's mu), s2 (adam's nu):
      sgd:      p <- p - lr * g'
      momentum: s1 <- momentum * s1 + g';  p <- p - lr * s1
      nesterov: s1 <- momentum * s1 + g';  p <- p - lr * (g' + momentum * s1)
      adam:     s1 <- b1 s1 + (1 - b1) g;  s2 <- b2 s2 + (1 - b2) (g g);
                p <- p - lr * ((s1 / c1) / (sqrt(s2 / c2) + eps)), then with decay
                p <- p - (lr * wd) * p_old (decoupled).
    hyper: (HYPER) of the params' dtype; step: this step's (STEP_SCALARS), each rounded
    from its Python float64 value (c1 = 1 - b1**t, c2 = 1 - b2**t at update t).
    """
    pf, gf, s1f, s2f = p.reshape(-1), g.reshape(-1), s1.reshape(-1), s2.reshape(-1)
    n = pf.shape[0]
    mu, wd = hyper[0], hyper[1]
    if kind == _ADAM:
        b1, c_b1, b2, c_b2, eps = hyper[2], hyper[3], hyper[4], hyper[5], hyper[6]
        c1, c2, lr_wd = step[0], step[1], step[2]
        for k in range(n):
            gk = gf[k]
            m = b1 * s1f[k] + c_b1 * gk
            v = b2 * s2f[k] + c_b2 * (gk * gk)
            s1f[k] = m
            s2f[k] = v
            old = pf[k]
            new = old - lr * ((m / c1) / (np.sqrt(v / c2) + eps))
            if decay:
                new = new - lr_wd * old
            pf[k] = new
    elif kind == _SGD:
        for k in range(n):
            gk = gf[k] + wd * pf[k] if decay else gf[k]
            pf[k] = pf[k] - lr * gk
    else:
        nesterov = kind == _NESTEROV
        for k in range(n):
            gk = gf[k] + wd * pf[k] if decay else gf[k]
            v = mu * s1f[k] + gk
            s1f[k] = v
            pf[k] = pf[k] - lr * (gk + mu * v if nesterov else v)


@_jit
def _layer(h, masks, w, b, code, packing):
    """(z, a) of one layer: z = h @ w + b, a = BUILTIN[code](z); ReLU fused (z is a)."""
    if code == _RELU:
        a = _linear(h, masks, w, b, True, packing)
        return a, a
    z = _linear(h, masks, w, b, False, packing)
    return z, (z if code == _IDENTITY else apply_activation(z, code))


@_jit
def _times(out, drop):
    """out *= drop, in place (a dropout multiplier on a gradient)."""
    for r in range(out.shape[0]):
        for i in range(out.shape[1]):
            out[r, i] = out[r, i] * drop[r, i]


@_jit
def _train_step(ws, bs, s1ws, s1bs, s2ws, s2bs, xb, x_rows, x_cols, yb, lr, kind, decay,
                hyper, step, codes, loss_code, thresh, scales, bases, packing):
    """One step on the batch (xb, yb), in place; returns the batch's mean loss (float64).

    x_rows, x_cols: row_masks(xb), col_masks(xb), made while the batch was gathered.
    s1ws, s1bs, s2ws, s2bs, lr, kind, decay, hyper, step: the optimizer (see `_update`).
    codes: (layers,) the activation code of each layer (the last: identity); loss_code;
    thresh, scales: (layers,) dropout threshold (0: none) and 1 / (1 - p) of each
    layer's input; bases: (layers,) this step's mask streams (`fnn.dropout.layer_base`);
    packing: PACKING or None (`packing_for` the net's widest layer).
    The same kernels in the same order as `fnn.backprop` + the optimizer's update, hence
    the same bits; layer l is updated once its gradient and the delta below it are known
    (its old weights are all that weight decay reads).
    """
    n_layers = len(ws)
    none = np.empty((0, 0), dtype=xb.dtype)
    ins, drops, zs, outs = [xb], [none], [xb], [xb]  # index 0 of zs, outs: unused
    if thresh[0] > 0:
        drops[0] = drop_multiplier(xb.shape[0], xb.shape[1], bases[0], thresh[0], scales[0])
        ins[0] = xb * drops[0]
        x_rows, x_cols = row_masks(ins[0]), col_masks(ins[0])
    for l in range(n_layers):
        h, w = ins[l], ws[l]
        masks = x_rows if l == 0 else _linear_masks(h, w)
        z, a = _layer(h, masks, w, bs[l], codes[l], packing)
        zs.append(z)
        outs.append(a)
        if l + 1 < n_layers:
            if thresh[l + 1] > 0:
                drop = drop_multiplier(a.shape[0], a.shape[1], bases[l + 1], thresh[l + 1],
                                       scales[l + 1])
                drops.append(drop)
                ins.append(a * drop)
            else:
                drops.append(none)
                ins.append(a)
    value, delta = _loss_and_grad(outs[n_layers], yb, loss_code)
    for l in range(n_layers - 1, -1, -1):
        a, w = ins[l], ws[l]
        gb = bias_grad(delta)
        below = delta
        if l > 0:  # before ws[l] moves
            code = codes[l - 1]
            if code == _RELU:
                below = relu_backward(delta, w, a, packing)
                if thresh[l] > 0:
                    _times(below, drops[l])
            else:
                below = act_backward(delta, w, zs[l], outs[l], code, drops[l], packing)
        masks = x_cols if l == 0 else _weight_grad_masks(a, w)
        if kind == _SGD and not decay:
            # w - lr * g straight from the registers that hold g: no gradient array.
            _weight_grad_into(a, masks, delta, w, SUBTRACT, lr, packing)
        else:
            g = np.empty_like(w)
            _weight_grad_into(a, masks, delta, g, ASSIGN, delta.dtype.type(0), packing)
            _update(w, g, s1ws[l], s2ws[l], kind, decay, lr, hyper, step)
        _update(bs[l], gb, s1bs[l], s2bs[l], kind, False, lr, hyper, step)
        delta = below
    return value


@_inline
def _gather_row(x, e, xb, r, rows, cols_t):
    """Row e of x -> xb[r]; rows[r] = its row mask; bit r % 64 of cols_t[r // 64, i] set
    where it is non-zero. Returns False when the row holds a NaN or an infinity."""
    bad = False
    for i in range(xb.shape[1]):  # an explicit loop copies twice as fast as a slice
        v = x[e, i]
        xb[r, i] = v
        bad |= v - v != 0  # NaN exactly when v is NaN or infinite
    # The masks of the row while it is in L1: a pass over the batch would cost more.
    _row_mask_words(xb, r, rows, r)
    _set_col_bits(xb, r, cols_t[r // 64], np.uint64(r % 64))
    return not bad


@_jit
def train_epoch(ws, bs, s1ws, s1bs, s2ws, s2bs, x, y, order, batch_size, lrs, kind, decay,
                hyper, step_scalars, codes, loss_code, thresh, scales, bases, packing):
    """Optimizer steps over the batches order[0:batch_size], order[batch_size:2*batch_size], ...

    In place on the weights ws, biases bs and the optimizer's state s1ws, s1bs (the
    velocity of momentum and nesterov, adam's mu), s2ws, s2bs (adam's nu): tuples of
    C-contiguous arrays, one per layer (a slot the optimizer has not is not read: pass
    ws, bs). kind: the index of the optimizer in OPTIMIZERS; decay: whether it has weight
    decay; hyper: (len(HYPER),) and step_scalars: (steps, len(STEP_SCALARS)), of the
    params' dtype (see `_update`); plain SGD without decay subtracts each weight
    gradient straight from the registers that hold it.
    x: (N, d_in); y: (N,) int64; order: (n,) int64 rows of x; lrs: (steps,) one learning
    rate per step, of the params' dtype. The last batch holds the remaining
    n % batch_size rows, if any. y: (N,) int64 labels, or (N, k)
    float targets of an elementwise loss. codes, loss_code, thresh, scales: the model
    (see `_train_step`); bases: (steps, layers) uint64, each step's dropout streams;
    packing: PACKING or None (`packing_for`).

    Returns (the mean loss of each step, (steps,) float64; -1, or the first row of x in
    order that holds a NaN or an infinity, where the epoch stopped: the rows are checked
    as they are gathered, so that no separate pass over x is needed).
    """
    n, d_in = order.shape[0], x.shape[1]
    steps = (n + batch_size - 1) // batch_size
    losses = np.empty(steps)
    full = min(batch_size, n)
    xb_full = np.empty((full, d_in), dtype=x.dtype)
    yb_full = np.empty_like(y[:full])
    rows_full = np.empty((full, (d_in + 63) // 64), dtype=np.uint64)
    cols_t = np.empty(((full + 63) // 64, d_in), dtype=np.uint64)  # col masks, transposed
    line = max(1, 64 // x.itemsize)  # elements per 64-byte cache line
    for s in range(steps):
        start = s * batch_size
        size = min(batch_size, n - start)
        xb, yb, x_rows = xb_full[:size], yb_full[:size], rows_full[:size]
        cols_t[:] = 0
        for r in range(size):
            e = order[start + r]
            if not _gather_row(x, e, xb, r, x_rows, cols_t):
                return losses[:s], e
            yb[r] = y[e]
        x_cols = np.ascontiguousarray(cols_t[: (size + 63) // 64].T)
        # The next batch's rows are scattered over x (random rows cost ~15% of an MNIST
        # epoch): start loading them now, while this step computes. The first lines of a
        # row are enough to start the CPU's own stream prefetcher on it; prefetching
        # whole rows stalled the core and measured no faster. No effect on any result.
        for k in range(start + size, min(n, start + size + batch_size)):
            for i in range(0, min(d_in, 4 * line), line):
                _prefetch(x, order[k], i)
        losses[s] = _train_step(ws, bs, s1ws, s1bs, s2ws, s2bs, xb, x_rows, x_cols, yb,
                                lrs[s], kind, decay, hyper, step_scalars[s], codes,
                                loss_code, thresh, scales, bases[s], packing)
    return losses, -1
