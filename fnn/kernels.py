"""Numba kernels for the batched MLP: the `"numba"` compute path, and a whole epoch.

The public kernels (`linear`, `relu_backward`, `weight_grad`, `bias_grad`,
`softmax_xent`, ...) compute what the NumPy path of `fnn.backends` computes, and
`fnn.numba_ops` serves the backend's `Ops` with them; the tests check them against the
NumPy path and against `fnn.reference`. `train_epoch` runs the
steps of an epoch with them (see `fnn.epoch`), `output_into` and `loss_into` a whole
forward pass and its loss (`fnn.numba_ops`).

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
input, so it lives in a small stack array (`_stack_tile`), and a ragged last tile of
`right` (or a tile of w.T) is copied into a zero-padded one (`_pack_tile`), so that every
tile has the same compile-time width. Rows go in pairs: one
load of right[i] feeds both rows, over the union of their non-zeros. Outputs narrower
than NARROW (the logits and their weight gradient, 64x10 on MNIST) are so small that
masks and temporaries would cost more than the zeros they skip: a dense loop
(`_narrow_weight_grad`) sums them in the same order, tiles running along the long side.
Large products (`_packs`: PACK_ROWS rows and inner size or more) copy each tile of right into a
contiguous buffer first and go through the inner dimension in L1-sized blocks
(`_sparse_matmul_packed`): the same sums, twice as fast at 784-1024-1024-10.
A compiled epoch allocates nothing per step: its buffers come in `work` (shared by the
threads of `fnn.team`) and each thread's `scratch`. (Measured: with buffers allocated
per step, a 128 KiB transposed copy of w per thread among them, two threads ran a
784-256-128-10 epoch in 165 ms in some processes and 270 ms in others; without, 142-145
ms in three.)

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

from collections.abc import Sequence

import numpy as np
from numba.extending import overload

from . import activations as _acts
from . import dropout as _dropout
from . import losses as _losses
from .numba_compat import fma as _fma
from .numba_compat import jit, jit_options, stack_tile, strided, trailing_zeros, writable
from .numba_compat import prefetch as _prefetch
from .team import barrier, share

__all__ = [
    "ASSIGN",
    "EVAL_ROWS",
    "HYPER",
    "IN_PLACE_CODES",
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
    "codes_arg",
    "col_masks",
    "drop_multiplier",
    "elementwise_loss_grad",
    "gradcheck_layer",
    "linear",
    "loss_into",
    "matmul_t",
    "output_into",
    "packing_for",
    "relu_backward",
    "row_masks",
    "scratch_size",
    "softmax_xent",
    "tiles_size",
    "train_epoch",
    "weight_grad",
    "weight_grad_into",
]

_jit = jit()
_inline = jit(inline="always")
# Called only from other kernels: no CPython wrapper is compiled for it (a wrapper is a
# function of its own for LLVM to optimise and emit; measured, the epoch's cold compile
# went from 14.6 to 13.4 s without them and the cfunc wrappers, which no kernel has).
# And no reference counting: an inner kernel allocates nothing (its buffers are its
# caller's, `_carve`), so it keeps no array alive; the counts were code of their own in
# every kernel, and numba's allocator compiled for them. The first `fit` compiled in
# 4.77-5.32 s against 5.23-6.25 s (A/B, five processes each, 2026-12-07 06:4x UTC).
_inner = jit(nrt=False, no_cpython_wrapper=True)
# The inline overloads (`_loss_rows`, `_copy_target`) are compiled whole once to be
# typed, then inlined: compiled as inner kernels, that compile makes no machine code.
_OVERLOAD_OPTIONS = jit_options(nrt=False, no_cpython_wrapper=True)

#: Output columns accumulated in registers at once: 4 AVX-512 registers of float32.
TILE = 64
#: Outputs at most this wide are computed transposed (see `linear`, `weight_grad_into`).
NARROW = 16
# What `_sparse_matmul` does with each sum s: out = s + bias, out = ReLU(s + bias), or
# out = out - scale * s (an SGD step straight from the registers that hold a gradient).
ASSIGN, RELU, SUBTRACT = 0, 1, 2
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
#: Output rows (and rows of the right operand) from which `_sparse_matmul` copies
#: each column block of its right operand into a contiguous buffer (see `_packs`).
PACK_ROWS = 128
_COPY_ROWS = 8  # `_pack_tile` transposes this many rows of right at a time
# `_transpose` copies this many rows of a at a time (then each row of its output is
# written 64 bytes or more at a time; half as many rows where they alias in L1). Measured,
# one thread, the weight gradient's a of 1024 rows: MNIST's x (784 columns) 448 -> 172 us
# float32 (537 -> 203 us float64), 1024 x 256 169 -> 58 us (4 and 32 rows slower in all
# but one). The logits' forward (`_linear_into`, narrow) of 1024 rows: 128 -> 10 1,292 ->
# 70-103 us, 800 -> 10 5,719 -> 434 us; of 64 rows, 1024 -> 10 33 -> 27 us (with 16 rows
# at a time 38-39 us: its rows are 4 KiB apart).
_TRANSPOSE_ROWS = 16
#: The `packing` argument that lets the products of a kernel pack (`_packs`); None
#: there compiles no packed code at all (numba prunes the `packing is None` branch),
#: which saves its compile time where no product is wide enough: see `packing_for`.
PACKING = np.zeros(1, dtype=np.uint8)


def packing_for(width: int) -> np.ndarray | None:
    """The `packing` argument for products at most `width` columns wide (the widest
    layer of a net): PACKING where one may pack, None where none can (TILE or less)."""
    return PACKING if width > TILE else None


_stack_tile = stack_tile(TILE)
# A constant passed as a plain int64 or bool: numba compiles a callee once per literal
# argument value (Literal[int](0), Literal[bool](True), ...), so modes, row bounds,
# column counts and flags (TILE, transposed) go in as _int(c) or _bool(c), and the
# kernels they reach compile once for all of them: a first `fnn train` compiled about
# 2 s less, and its epochs ran as fast (three processes each way, 784-64-10 58/56 ms,
# 784-800-10 438/486 ms: within the 10% that one process differs from the next). The
# layout of a product's left operand stays as it is (C, or Fortran for a.T): read
# through layout "A", each of its loads costs a multiply by the stride.
_int = np.int64
_bool = np.bool_


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


@_inline
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


@_inner
def _pack_tile(right, transposed, t, packed):
    """packed[:, :] = r[:, t:t+TILE], zero-padded past r's last column, where r is right
    (C-contiguous), or right.T when `transposed`.

    The indices are unsigned: with no test for a negative index (numba's wraparound) the
    copy vectorises. right.T goes _COPY_ROWS rows of right at a time, all along them,
    so that each cache line of right is read once, whole, and few lines are in flight.
    Measured, float32 1024 x 1024, the 16 tiles: w 0.40 -> 0.10 ms, w.T 0.55 -> 0.23 ms
    (signed indices, 32-row blocks before; other block shapes were no faster)."""
    k, width = (right.shape[1], right.shape[0]) if transposed else right.shape
    cols = min(TILE, width - t)
    if transposed:
        for j0 in range(0, cols, _COPY_ROWS):
            for i in range(k):
                for j in range(min(_COPY_ROWS, cols - j0)):
                    packed[i, np.uint64(j0 + j)] = right[np.uint64(t + j0 + j), np.uint64(i)]
    else:
        for i in range(k):
            for j in range(cols):
                packed[i, np.uint64(j)] = right[i, np.uint64(t + j)]
    for i in range(k):
        for j in range(cols, TILE):
            packed[i, j] = 0


@_inner
def _packs(n, k, width):
    """Whether a product of n output rows with a right operand (k, width) is packed
    (`_sparse_matmul_packed`): a shallower or narrower right fits the cache as it is,
    and fewer rows do not repay the copy (measured: a 64-deep right packed made
    x.T @ delta 40% slower)."""
    return width > TILE and n >= PACK_ROWS and k >= PACK_ROWS


@_inner
def _pack_tiles(right, transposed, tiles, tid, team):
    """Thread tid's share of packing every tile of r (right, or right.T when `transposed`;
    k rows): tile i, columns [i * TILE, (i + 1) * TILE) of r, goes to tiles[i * k * TILE:]
    as (k, TILE) (`_pack_tile`), for i = tid, tid + team, ... Each thread of a team would
    otherwise pack every tile itself: at 784-1024-1024-10 batch 128 (w1, w2, w2.T) 0.41 ms
    a step float32 (0.07, 0.09, 0.25 ms timed apart, one thread; 1.3 ms, a fifth of the
    one-thread epoch, before `_pack_tile`'s faster copies), which two threads did not share."""
    k, width = (right.shape[1], right.shape[0]) if transposed else right.shape
    for i in range(tid, (width + TILE - 1) // TILE, team):
        _pack_tile(right, transposed, i * TILE, _carve(tiles, i * k * TILE, k, TILE))


def tiles_size(widths_in_out: tuple[tuple[int, int], ...]) -> int:
    """The elements of one buffer of `_pack_tiles` for the (d_in, d_out) of each layer:
    w's tiles (forward) or w.T's (backward), whichever is larger."""
    def tiles(k: int, width: int) -> int:
        return k * -(-width // TILE) * TILE

    return max(max(tiles(i, o), tiles(o, i)) for i, o in widths_in_out)


@_inline
def _carve(scratch, start, rows, cols):
    """scratch[start:start + rows * cols] as a (rows, cols) C array. scratch: 1-d, a
    thread's own, of `scratch_size` elements or more for the product (see `train_epoch`)."""
    return scratch[start:start + rows * cols].reshape((rows, cols))


@_inner
def _sparse_matmul(left, masks, right, transposed, bias, out, mode, scale, packing, lo, hi,
                   scratch, tiles):
    """out[lo:hi] (op)= (left @ r)[lo:hi], visiting only the non-zeros of left (see the
    module doc), where r is right, or right.T when `transposed`; the other rows of out
    are not touched.

    left: (n, k), any layout, typed so by the callers (`strided`: one compiled product
    for x, delta and a.T; it reads left an element at a time, where its layout saved
    0-1.5%: 784 x 800 forward 631 vs 621 us, 34.9 vs 34.2 us at 784 x 64); masks: (n,
    ceil(k / 64)) uint64, the non-zeros of left's rows (`row_masks(left)`); right:
    C-contiguous, (k, d) or (d, k) when transposed;
    bias: (d,); out: (n, d), written. mode ASSIGN: out = s + bias; RELU: out = ReLU(s +
    bias); SUBTRACT: out = out - scale * s, where s = sum over i with bit i of masks[o]
    set, ascending, of left[o, i] * r[i, :]. Row o of out depends on row o of left and
    masks alone, so rows can be shared out between threads (`fnn.team`) without changing
    a bit. packing: PACKING lets a large product pack (`_packs`). scratch: 1-d of right's
    dtype, `scratch_size` elements or more (the packed tile and the running sums).
    tiles: empty, or every tile of r already packed by the team (`_pack_tiles`), which
    a packed product then reads instead of packing its own.

    Tiles of r are read in place where they can be (C-contiguous r, a whole tile wide);
    a column block of r.T, and r's last tile when d is not a multiple of TILE, are first
    copied into a zero-padded contiguous (k, TILE) tile (`_pack_tile`): the same sums.
    """
    n, d = out.shape
    if lo >= hi:
        return
    k, width = (right.shape[1], right.shape[0]) if transposed else right.shape
    if packing is not None and _packs(n, k, width):
        _sparse_matmul_packed(left, masks, right, transposed, bias, out, mode, scale, lo, hi,
                              scratch, tiles)
        return
    copies = transposed or width % TILE != 0
    packed = _carve(scratch, 0, k if copies else 0, TILE)
    for t in range(0, width, TILE):
        # Unsigned column indices: no negative-index wraparound, so contiguous loads.
        t0 = np.uint64(t)
        if transposed or d - t < TILE:
            _pack_tile(right, transposed, t, packed)
            _tile_sums(left, masks, packed, _ZERO, out, t0, d - t, bias, mode, scale, lo, hi)
        else:
            _tile_sums(left, masks, right, t0, out, t0, _int(TILE), bias, mode, scale, lo, hi)


@_inner
def _tile_sums(left, masks, src, start, out, t0, cols, bias, mode, scale, lo, hi):
    """Columns [t0, t0 + min(cols, TILE)) of out's rows [lo, hi) (see `_sparse_matmul`),
    from the tile src[:, start:start + TILE] of the right operand (a called function, not
    inlined twice: one compiled copy of the loop)."""
    cols = min(TILE, cols)
    acc0 = _stack_tile(src)
    acc1 = _stack_tile(src)
    for o0 in range(lo, hi, 2):
        o1 = min(o0 + 1, hi - 1)  # an odd last row is paired with itself
        for j in range(TILE):
            acc0[j] = 0
            acc1[j] = 0
        _pair_sums(left, masks, src, acc0, acc1, o0, o1, start, 0, masks.shape[1])
        _store(out, o0, t0, cols, acc0, bias, mode, scale)
        if o1 != o0:
            _store(out, o1, t0, cols, acc1, bias, mode, scale)


@_inner
def _sparse_matmul_packed(left, masks, right, transposed, bias, out, mode, scale, lo, hi,
                          scratch, tiles):
    """`_sparse_matmul` for a large product (`_packs`).

    Each TILE-wide column block of r is first copied into a contiguous (k, TILE)
    buffer (`_pack_tile`), and the inner dimension then goes in blocks of 128 (float32;
    64 for float64) rows of it, 32 KiB that stay in L1 while every row pair uses them; a
    pair's running sums wait in `part` between blocks. Rows of right a whole row apart
    (4 KiB for 1024 float32 columns) fall into the same few cache sets, so without the
    copy every pair reloads them from further out: with it (and w.T packed straight from
    w in `matmul_t`, with no transposed copy), a 784-1024-1024-10 epoch ran 2.1x faster.
    Each sum still takes its terms in ascending order, one fused multiply-add at a time,
    the running sums stored and reloaded exactly: the same bits as the plain loop.
    With `tiles` (not empty) the team packed every tile once beforehand (`_pack_tiles`).
    """
    k, width = (right.shape[1], right.shape[0]) if transposed else right.shape
    packed = _carve(scratch, 0, k, TILE)
    part = _carve(scratch, k * TILE, hi - lo, TILE)  # row o at o - lo
    for t in range(0, width, TILE):
        if tiles.size:
            _packed_tile_sums(left, masks, _carve(tiles, (t // TILE) * k * TILE, k, TILE), part,
                              out, t, bias, mode, scale, lo, hi)
        else:
            _pack_tile(right, transposed, t, packed)
            _packed_tile_sums(left, masks, packed, part, out, t, bias, mode, scale, lo, hi)


@_inner
def _packed_tile_sums(left, masks, packed, part, out, t, bias, mode, scale, lo, hi):
    """Columns [t, t + TILE) of out's rows [lo, hi) from the packed (k, TILE) tile of r
    (see `_sparse_matmul_packed`); part: (hi - lo, TILE), the running sums. (A called
    function, the tile an argument: one compiled loop, whichever buffer holds the tile.)"""
    d = out.shape[1]
    words = masks.shape[1]
    block = max(1, 8 // packed.itemsize)  # mask words (64 rows of right) a block
    acc0 = _stack_tile(packed)
    acc1 = _stack_tile(packed)
    t0 = np.uint64(t)
    cols = min(TILE, d - t)
    for w0 in range(0, words, block):
        w1 = min(words, w0 + block)
        for o0 in range(lo, hi, 2):
            o1 = min(o0 + 1, hi - 1)  # an odd last row is paired with itself
            for j in range(TILE):
                acc0[j] = 0 if w0 == 0 else part[o0 - lo, j]
                acc1[j] = 0 if w0 == 0 else part[o1 - lo, j]
            _pair_sums(left, masks, packed, acc0, acc1, o0, o1, _ZERO, w0, w1)
            if w1 < words:
                for j in range(TILE):
                    part[o0 - lo, j] = acc0[j]
                    part[o1 - lo, j] = acc1[j]
            else:
                _store(out, o0, t0, cols, acc0, bias, mode, scale)
                if o1 != o0:
                    _store(out, o1, t0, cols, acc1, bias, mode, scale)


def _scratch_elems(width, batch):  # type: ignore[no-untyped-def]
    """`scratch_size` for the widest layer's `width` (Python, and compiled below)."""
    k = max(width, batch)
    return max(2 * k * TILE, width * batch) + width * batch


_scratch_for = _inline(_scratch_elems)  # the one-off products' scratch, the same rule


def scratch_size(widths: tuple[int, ...], batch: int) -> int:
    """The elements of a thread's `scratch` for products whose dimensions are at most
    max(widths) and batch: two packed tiles' worth (a tile and the running sums), or a
    transposed batch of the widest layer (`_linear_into`), whichever is larger; then
    room for a transposed batch of the widest layer again (`_weight_grad_into`)."""
    return int(_scratch_elems(max(widths), batch))


# ---------------------------------------------------------------- the Ops kernels
@_inner
def _narrow(n, d_out):
    """Whether a product with n output rows of d_out columns is computed transposed, dense."""
    return d_out <= NARROW < n


@_inner
def _linear_into(x, masks, w, b, out, relu, packing, lo, hi, scratch, tiles):
    """Rows [lo, hi) of `linear` into out (n, d_out), given masks = row_masks(x) (not
    read, and may be empty, when the output is narrow); scratch: see
    `_sparse_matmul`."""
    n, d_in, d_out = x.shape[0], x.shape[1], w.shape[1]
    zero = w.dtype.type(0)
    mode = RELU if relu else ASSIGN
    if _narrow(n, d_out):
        # Few outputs (the logits): a tile would be mostly padding. out = (x.T).T @ w is the
        # weight-gradient product of `_narrow_weight_grad`, whose tiles run along the batch;
        # each out[r, j] is the same ascending sum over i (plus terms that are +-0).
        x_t = _carve(scratch, 0, d_in, hi - lo)
        _transpose(x, lo, hi, _int(0), d_in, x_t)
        _narrow_weight_grad(x_t, w, out[lo:hi], _int(ASSIGN), zero, _int(0), hi - lo)
        for r in range(lo, hi):
            for j in range(d_out):
                z = out[r, j] + b[j]
                out[r, j] = z if mode == ASSIGN or z > 0 else 0
    else:
        _sparse_matmul(strided(x), masks, w, _bool(False), b, out, mode, zero, packing, lo, hi,
                       scratch, tiles)


@_inline
def _one_off_scratch(like, n, d_in, d_out):
    """The scratch of a one-off product of n rows through (d_in, d_out) (`linear`,
    `matmul_t`, `weight_grad_into`), of like's dtype; its [:0] is the empty `tiles`."""
    return np.empty(_scratch_for(max(d_in, d_out), n), dtype=like.dtype)


@_jit
def linear(x, w, b, relu, packing=None):
    """z = x @ w + b, then ReLU when `relu`. x: (n, d_in), w: (d_in, d_out) -> (n, d_out).

    packing: PACKING lets a large product pack (`_packs`: faster, the same bits); None
    (the default) never packs and compiles no packed code. The same in every kernel
    below that takes it. Read-only operands (params are) are typed `writable` here and
    in the kernels below: the kernels only read them, and so the ops and the compiled
    epoch share one compiled copy of each kernel (a first `fnn train` compiled 3.6 s
    less)."""
    x, w, b = writable(x), writable(w), writable(b)
    n, (d_in, d_out) = x.shape[0], w.shape
    masks = np.empty((0, 1), dtype=np.uint64) if _narrow(n, d_out) else row_masks(x)
    out = np.empty((n, d_out), dtype=w.dtype)
    scratch = _one_off_scratch(w, n, d_in, d_out)
    _linear_into(x, masks, w, b, out, relu, packing, _int(0), n, scratch, scratch[:0])
    return out


@_inner
def _matmul_t_into(delta, masks, w, out, packing, lo, hi, scratch, tiles, zeros):
    """Rows [lo, hi) of `matmul_t` into out (n, d_in), given masks = row_masks(delta):
    w.T is packed from w tile by tile (no transposed copy of w). zeros: (d_in,) or
    longer, 0 of w's dtype (the product's bias; the caller's, so that nothing here
    allocates: numba's allocators compile apart for each set of kernel flags)."""
    zero = w.dtype.type(0)
    _sparse_matmul(strided(delta), masks, w, _bool(True), zeros, out, _int(ASSIGN), zero,
                   packing, lo, hi, scratch, tiles)


@_jit
def matmul_t(delta, w, packing=None):
    """delta @ w.T over delta's non-zeros (see `_sparse_matmul`). -> (n, d_in)."""
    delta, w = writable(delta), writable(w)
    n, (d_in, d_out) = delta.shape[0], w.shape
    out = np.empty((n, d_in), dtype=w.dtype)
    scratch = _one_off_scratch(w, n, d_in, d_out)
    _matmul_t_into(delta, row_masks(delta), w, out, packing, _int(0), n, scratch,
                   scratch[:0], np.zeros(d_in, dtype=w.dtype))
    return out


@_jit
def relu_backward(delta, w, a_prev, packing=None):
    """(delta @ w.T) * (a_prev > 0). delta: (n, d_out), w: (d_in, d_out) -> (n, d_in)."""
    out = matmul_t(delta, w, packing)
    _relu_mask_rows(out, writable(a_prev), _int(0), out.shape[0])
    return out


@_inner
def _relu_mask_rows(out, a_prev, lo, hi):
    """out[r, i] = 0 where not a_prev[r, i] > 0 (ReLU'), for rows [lo, hi)."""
    for r in range(lo, hi):
        for i in range(out.shape[1]):
            if not a_prev[r, i] > 0:
                out[r, i] = 0


@_inner
def _narrow_weight_grad(a, delta, out, mode, scale, lo, hi):
    """`weight_grad_into` for few columns (the last layer's), rows [lo, hi) of out (lo a
    multiple of TILE): the transpose, dense.

    Columns of out go in pairs, as tiles of TILE rows of out held in registers: one load
    of a[r] feeds both. Each out[i, j] is the sum over r ascending of a[r, i] * delta[r, j],
    the masked sum of `_sparse_matmul` plus terms that are +-0, so the same value. A
    problem this small costs mostly its fixed overhead, hence no masks, no temporaries.
    """
    n, d_in = a.shape
    d_out = out.shape[1]
    acc0 = _stack_tile(delta)
    acc1 = _stack_tile(delta)
    for t in range(lo, min(hi, d_in), TILE):
        t0 = np.uint64(t)  # unsigned: no negative-index wraparound, so contiguous loads
        width = min(TILE, hi - t)
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


@_inner
def _weight_grad_into(a, masks, delta, out, mode, scale, packing, lo, hi, scratch, zeros):
    """Rows [lo, hi) of `weight_grad_into`, given masks = col_masks(a) (not read, and may
    be empty, when the output is narrow; then lo is a multiple of TILE).
    zeros: (d_out,) or longer, 0 of delta's dtype (the product's bias, as in
    `_matmul_t_into`; zeros[:0] is its empty `tiles`)."""
    d_in, d_out = out.shape
    if _narrow(d_in, d_out):
        _narrow_weight_grad(a, delta, out, mode, scale, lo, hi)
    elif lo < hi:
        n = a.shape[0]
        if packing is not None and _packs(hi - lo, n, d_out):
            # The left operand is a.T: for a large product its rows [lo, hi) are copied
            # out C-contiguous first. Read in place, its elements a whole row of a apart
            # (4 KiB for 1024 float32 columns) all fell into one L1 cache set: a 1024 x 128
            # @ 128 x 1024 gradient took 1.63 ms, 1.18 ms with the copy (one thread). For
            # a small one the copy costs more than it saves (784-64-10 batch 64: 68 ms an
            # epoch against 56-61 ms).
            a_t = _carve_tail(scratch, hi - lo, n, (n + hi - lo) * TILE)
            _transpose(a, _int(0), n, lo, hi, a_t)
            _sparse_matmul(strided(a_t), masks[lo:hi], delta, _bool(False), zeros, out[lo:hi],
                           mode, scale, packing, _int(0), hi - lo, scratch, zeros[:0])
        else:
            _sparse_matmul(strided(a.T), masks, delta, _bool(False), zeros, out, mode, scale,
                           packing, lo, hi, scratch, zeros[:0])


@_inline
def _carve_tail(scratch, rows, cols, keep):
    """`_carve` of scratch's last rows * cols elements, which leave its first `keep`
    elements (what the product carves from the front) alone: `scratch_size` has room for
    both (if it had not, the reshape of too few elements would raise)."""
    return _carve(scratch, max(keep, scratch.shape[0] - rows * cols), rows, cols)


@_inner
def _transpose(a, r_lo, r_hi, c_lo, c_hi, out):
    """out[c - c_lo, r - r_lo] = a[r, c] for the rows [r_lo, r_hi) and columns [c_lo,
    c_hi) of a (C); out: (c_hi - c_lo, r_hi - r_lo), C. _TRANSPOSE_ROWS rows of a at a
    time, along them, as `_pack_tile`: a row of a at a time, its elements written a whole
    row of out apart, fell into the same few cache sets (figures at _TRANSPOSE_ROWS)."""
    # Rows a multiple of 4 KiB apart fall into the same few L1 cache sets: half as many.
    rows = _TRANSPOSE_ROWS if a.strides[0] % 4096 else _TRANSPOSE_ROWS // 2
    for r0 in range(r_lo, r_hi, rows):
        for c in range(c_lo, c_hi):
            for r in range(r0, min(r0 + rows, r_hi)):
                out[np.uint64(c - c_lo), np.uint64(r - r_lo)] = a[np.uint64(r), np.uint64(c)]


@_jit
def weight_grad_into(a, delta, out, mode, scale, packing=None):
    """out = a.T @ delta (mode ASSIGN) or out = out - scale * (a.T @ delta) (SUBTRACT).

    a: (n, d_in), delta: (n, d_out) C-contiguous, out: (d_in, d_out), written in place.
    """
    a, delta, d_in = writable(a), writable(delta), out.shape[0]
    if _narrow(d_in, out.shape[1]):
        _narrow_weight_grad(a, delta, out, mode, scale, _int(0), d_in)  # no masks to make
    else:
        scratch = _one_off_scratch(delta, a.shape[0], d_in, out.shape[1])
        _weight_grad_into(a, col_masks(a), delta, out, mode, scale, packing, _int(0), d_in,
                          scratch, np.zeros(out.shape[1], dtype=delta.dtype))


@_jit
def weight_grad(a, delta, packing=None):
    """a.T @ delta. a: (n, d_in), delta: (n, d_out) -> (d_in, d_out)."""
    out = np.empty((a.shape[1], delta.shape[1]), dtype=delta.dtype)
    weight_grad_into(a, delta, out, ASSIGN, delta.dtype.type(0), packing)
    return out


@_jit
def bias_grad(delta):
    """delta summed over the batch. delta: (n, d_out) -> (d_out,)."""
    g = np.empty(delta.shape[1], dtype=delta.dtype)
    _bias_grad_into(delta, g, 0, delta.shape[1])
    return g


@_inner
def _bias_grad_into(delta, g, lo, hi):
    """g[lo:hi] = columns [lo, hi) of delta summed over the batch, rows in order."""
    for j in range(lo, hi):
        g[j] = 0
    for r in range(delta.shape[0]):
        for j in range(lo, hi):
            g[j] += delta[r, j]


@_inline
def _row_max(z, r):
    m = z[r, 0]
    for j in range(1, z.shape[1]):
        if z[r, j] > m:
            m = z[r, j]
    return m


@_jit
def softmax_xent(logits, y):
    """(mean loss, d mean loss / d logits). logits: (n, k), y: (n,) -> (float, (n, k)).

    The loss is accumulated in float64, row by row (as in `loss_into`: the same value).
    """
    n = logits.shape[0]
    delta = np.empty_like(logits)
    terms = np.empty((n, 1))
    _softmax_xent_rows(logits, y, delta, terms, _int(0), n)
    return _mean_terms(terms), delta


@_inner
def _softmax_xent_rows(logits, y, delta, terms, lo, hi):
    """Rows [lo, hi) of `softmax_xent`: delta[r], and terms[r, 0] = row r's loss (float64)."""
    n, k = logits.shape
    inv_n = 1.0 / n
    for r in range(lo, hi):
        m = _row_max(logits, r)
        s = 0.0
        for j in range(k):
            e = np.exp(logits[r, j] - m)  # one exp per entry: exps dominate this kernel
            delta[r, j] = e
            s += e
        terms[r, 0] = np.log(s) - (logits[r, y[r]] - m)
        inv_s = 1.0 / s
        for j in range(k):
            # (softmax - onehot) / n in float64, rounded once to the logits' dtype.
            p = delta[r, j] * inv_s
            delta[r, j] = (p - 1.0 if j == y[r] else p) * inv_n


@_inner
def _mean_terms(terms):
    """The mean of float64 terms (n, k), summed row by row in order (as one loop would)."""
    total = 0.0
    for r in range(terms.shape[0]):
        for j in range(terms.shape[1]):
            total += terms[r, j]
    return total / terms.size


# ---------------------------------------------------------------- the records, compiled
# The activation and loss records' own functions (fnn.activations, fnn.losses), compiled
# for scalars and dispatched on the record's `code`: the math is written once, there.
_f0, _f1, _f2, _f3, _f4, _f5 = (_inline(a.forward) for a in _acts.BUILTIN)
_d0, _d1, _d2, _d3, _d4, _d5 = (_inline(a.derivative) for a in _acts.BUILTIN)
_RELU, _IDENTITY = _acts.RELU.code, _acts.IDENTITY.code
#: The codes of the activations whose output `train_epoch` and `output_into` keep in the
#: pre-activation's array (ReLU is fused into the product; identity changes nothing).
IN_PLACE_CODES = (_RELU, _IDENTITY)
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
    _activate_rows(z, a, code, _int(0), z.shape[0])
    return a


@_inner
def _activate_rows(z, a, code, lo, hi):
    """a[r] = BUILTIN[code].forward(z[r]) for rows [lo, hi)."""
    for r in range(lo, hi):
        for j in range(z.shape[1]):
            a[r, j] = act_forward(code, z[r, j])


@_jit
def act_backward(delta, w, z, a, code, drop, packing=None):
    """((delta @ w.T) * drop) * BUILTIN[code].derivative(z, a), elementwise after the
    product. delta: (n, d_out), w: (d_in, d_out), z, a: (n, d_in); drop: (n, d_in)
    dropout multiplier, or (0, 0) for none. -> (n, d_in)."""
    out = matmul_t(delta, w, packing)
    _act_backward_rows(out, z, a, code, drop, _int(0), out.shape[0])
    return out


@_inner
def _act_backward_rows(out, z, a, code, drop, lo, hi):
    """out = (out * drop) * derivative(z, a), rows [lo, hi) (see `act_backward`)."""
    dropped = drop.shape[0] > 0
    for r in range(lo, hi):
        for i in range(out.shape[1]):
            g = out[r, i]
            if dropped:
                g = g * drop[r, i]
            out[r, i] = g * act_derivative(code, z[r, i], a[r, i])


@_jit
def elementwise_loss_grad(out, y, code):
    """(mean loss, its gradient (n, k)): element_grad / k / n, as `fnn.losses` gives it."""
    delta = np.empty_like(out)
    terms = np.empty(out.shape)
    _elementwise_rows(out, y, code, delta, terms, _int(0), out.shape[0])
    return _mean_terms(terms), delta


@_inner
def _elementwise_rows(out, y, code, delta, terms, lo, hi):
    """Rows [lo, hi) of `elementwise_loss_grad`: delta[r], terms[r] = the loss elements."""
    n, k = out.shape
    for r in range(lo, hi):
        for j in range(k):
            terms[r, j] = _loss_element(code, out[r, j], y[r, j])
            g = out.dtype.type(_loss_element_grad(code, out[r, j], y[r, j]))
            delta[r, j] = (g / k) / n


@_jit
def drop_multiplier(n, d, base, thresh, scale):
    """`fnn.dropout.drop_multiplier` in compiled code: (n, d) of 0 and `scale`."""
    out = np.full((n, d), scale)
    _drop_rows(out, base, thresh, scale, _int(0), n)
    return out


@_inner
def _drop_rows(out, base, thresh, scale, lo, hi):
    """Rows [lo, hi) of `drop_multiplier` into out (n, d): element (r, j) draws number
    r * d + j + 1 of the stream `base`."""
    d = out.shape[1]
    zero = out.dtype.type(0)
    for r in range(lo, hi):
        i = np.uint64(r * d)
        for j in range(d):
            i += np.uint64(1)
            out[r, j] = scale if _mix(base + i * _GOLDEN) >= thresh else zero


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


# ---------------------------------------------------------------- a whole epoch
# Threads share out rows (and bias columns) in whole units of 16: an even number, so
# that row pairs stay whole, and 16 rows of any width (16 columns of float32) are whole
# 64-byte cache lines, so that no line is written by two threads (a line that two
# cores write in turn moves between their caches at every write).
_ROWS = 16
#: The optimizers `train_epoch` runs (`fnn.epoch.OptimizerSpec.kind`), coded by index.
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
_SGD, _MOMENTUM, _NESTEROV, _ADAM = 0, 1, 2, 3
#: The layout of train_epoch's `hyper` (constants) and `step_scalars` (one row per step).
HYPER = ("momentum", "weight_decay", "b1", "1 - b1", "b2", "1 - b2", "eps")
STEP_SCALARS = ("c1", "c2", "lr * weight_decay")


@_inline
def _sgd_rows(p, g, lr, lo, hi):
    """p[k] = p[k] - lr * g[k] for k in [lo, hi) (1-d): plain SGD, in place."""
    for k in range(lo, hi):
        p[k] = p[k] - lr * g[k]


@_inner
def _update(p, g, s1, s2, kind, decay, lr, hyper, step, lo, hi):
    """In place, elementwise as `fnn.sgd_step` / `fnn.optim`, so results are bit-equal,
    for the elements [lo, hi) of p flattened (C order).

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
    mu, wd = hyper[0], hyper[1]
    if kind == _ADAM:
        b1, c_b1, b2, c_b2, eps = hyper[2], hyper[3], hyper[4], hyper[5], hyper[6]
        c1, c2, lr_wd = step[0], step[1], step[2]
        for k in range(lo, hi):
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
    elif kind == _SGD and not decay:
        _sgd_rows(pf, gf, lr, lo, hi)
    elif kind == _SGD:
        for k in range(lo, hi):
            pf[k] = pf[k] - lr * (gf[k] + wd * pf[k])
    else:
        nesterov = kind == _NESTEROV
        for k in range(lo, hi):
            gk = gf[k] + wd * pf[k] if decay else gf[k]
            v = mu * s1f[k] + gk
            s1f[k] = v
            pf[k] = pf[k] - lr * (gk + mu * v if nesterov else v)


def _loss_rows(out, y, code, delta, terms, lo, hi):  # typed by the overload below
    raise NotImplementedError


@overload(_loss_rows, inline="always", jit_options=_OVERLOAD_OPTIONS)
def _loss_rows_impl(out, y, code, delta, terms, lo, hi):  # type: ignore[no-untyped-def]
    """Labels (n,) take softmax cross-entropy, float targets (n, k) an elementwise loss."""
    if y.ndim == 1:
        return lambda out, y, code, delta, terms, lo, hi: _softmax_xent_rows(
            out, y, delta, terms, lo, hi)
    return lambda out, y, code, delta, terms, lo, hi: _elementwise_rows(
        out, y, code, delta, terms, lo, hi)


def _copy_target(yb, r, y, e):  # typed by the overload below
    raise NotImplementedError


@overload(_copy_target, inline="always", jit_options=_OVERLOAD_OPTIONS)
def _copy_target_impl(yb, r, y, e):  # type: ignore[no-untyped-def]
    """yb[r] = y[e]: a label (n,), or a row of targets (n, k) element by element (an array
    assignment would allocate a temporary, and `train_epoch` has no allocator)."""
    if y.ndim == 1:
        def label(yb, r, y, e):  # type: ignore[no-untyped-def]
            yb[r] = y[e]
        return label

    def row(yb, r, y, e):  # type: ignore[no-untyped-def]
        for j in range(y.shape[1]):
            yb[r, j] = y[e, j]
    return row


@_inner
def _input_masks(h, rows, own_bits, lo, hi, need_rows, need_cols):
    """The non-zero masks of h's rows [lo, hi): rows[r] = the row mask (`row_masks`) when
    need_rows; bit r % 64 of own_bits[r // 64, i] set where h[r, i] != 0 when need_cols
    (own_bits is this thread's (words of a batch, d) part of the layer's `cbits`, zeroed
    here first; `_col_masks_from_bits` ORs the threads' parts)."""
    if need_cols:
        for wd in range(own_bits.shape[0]):
            for i in range(own_bits.shape[1]):
                own_bits[wd, i] = 0
    for r in range(lo, hi):
        if need_rows:
            _row_mask_words(h, r, rows, r)
        if need_cols:
            _set_col_bits(h, r, own_bits[r // 64], np.uint64(r % 64))


@_inner
def _col_masks_from_bits(bits, masks, team, lo, hi):
    """masks[i, wd] = OR over the threads t of bits[t * words + wd, i], for i in [lo, hi):
    `col_masks` of a batch whose rows the threads' bits cover between them."""
    words = bits.shape[0] // team
    for i in range(lo, hi):
        for wd in range(masks.shape[1]):
            m = _ZERO
            for t in range(team):
                m |= bits[t * words + wd, i]
            masks[i, wd] = m


@_inline
def _train_step(ws, bs, s1ws, s1bs, s2ws, s2bs, size, s, losses, lr, kind, decay, hyper,
                step, codes, loss_code, thresh, scales, bases, packing, work, scratch, sync,
                tid, team):
    """One step on the gathered batch (the first `size` rows of the work buffers), in
    place, as thread `tid` of `team` (see `fnn.team`); losses[s] = the batch's mean loss.

    Returns -1 when done, the first row of the batch that holds a NaN or an infinity
    (nothing is updated then), or -2 when the team was aborted.
    s1ws, s1bs, s2ws, s2bs, lr, kind, decay, hyper, step: the optimizer (see `_update`);
    codes: (layers,) the activation code of each layer (the last: identity), or None for
    ReLU hidden layers and an identity output; loss_code; thresh, scales: (layers,)
    dropout threshold (0: none) and 1 / (1 - p) of each layer's input, thresh None for
    no dropout at all; bases: (steps, layers) each step's mask streams
    (`fnn.dropout.layer_base`). A None is a type of its own, so numba prunes the
    branches it rules out and compiles none of their code (the other activations,
    dropout): for the notebook's net 4 kernels fewer, the first `sgd_epoch` compiled in
    7.0-7.1 s instead of 7.9-8.0 s (A/B, 23:50 UTC). packing: PACKING or None
    (`packing_for` the net's widest layer); work: see `train_epoch`;
    scratch: this thread's own buffer for the products (`scratch_size`).

    A product large enough to pack (`_packs`) is packed by the whole team when there is
    more than one thread: each packs its share of the tiles into one of two shared
    buffers (`work`'s tiles), used in turn, and all meet at a barrier before reading them.
    Two buffers, so that the next product's packing never overwrites tiles a thread may
    still be reading: by then every thread has passed the barrier after the last
    packing, hence finished the product before it.

    The same kernels in the same order as `fnn.backprop` + the optimizer's update, hence
    the same bits. The thread computes its rows of the batch through the forward pass, the
    loss and each layer's delta (a row of each depends on that row of x alone: no waiting),
    then, once all threads are past the barrier (the whole delta known, no thread still
    reading the layer's old weights), its rows of the weight gradient with their update
    (weight decay reads only the old weights of the same rows) and its columns of the bias.
    """
    (xb, yb, terms, flags, ins, drops, zs, outs, hmasks, cbits, amasks, deltas, dmasks,
     grads, gbs, tiles, zeros) = work
    n_layers = len(ws)
    packs = 0  # products packed by the whole team so far this step (`_pack_tiles`)
    lo, hi = share(size, _ROWS, tid, team)  # this thread's rows of the batch
    words = amasks[0].shape[1]  # mask words of a full batch
    for l in range(n_layers):
        w = ws[l]
        d_in, d_out = w.shape
        h = ins[l][:size]
        if thresh is not None and thresh[l] > 0:
            src = xb[:size] if l == 0 else outs[l - 1][:size]
            drop = drops[l][:size]
            _drop_rows(drop, bases[s, l], thresh[l], scales[l], lo, hi)
            for r in range(lo, hi):
                for i in range(d_in):
                    h[r, i] = src[r, i] * drop[r, i]
        if l > 0 or (thresh is not None and thresh[0] > 0):  # the gather made x's masks
            _input_masks(h, hmasks[l], cbits[l][tid * words:(tid + 1) * words], lo, hi,
                         not _narrow(size, d_out), not _narrow(d_in, d_out))
        z = zs[l][:size]
        pre = tiles[2]
        if team > 1 and packing is not None and _packs(size, d_in, d_out):
            pre, packs = tiles[packs % 2], packs + 1
            _pack_tiles(w, _bool(False), pre, tid, team)
            if not barrier(sync, team):  # every tile packed before anyone reads one
                return -2
        relu = l < n_layers - 1 if codes is None else codes[l] == _RELU
        _linear_into(h, hmasks[l][:size], w, bs[l], z, relu, packing, lo, hi, scratch, pre)
        if codes is not None and codes[l] != _RELU and codes[l] != _IDENTITY:
            _activate_rows(z, outs[l][:size], codes[l], lo, hi)
    _loss_rows(outs[n_layers - 1][:size], yb[:size], loss_code, deltas[n_layers - 1][:size],
               terms[:size], lo, hi)
    zero = xb.dtype.type(0)
    for l in range(n_layers - 1, -1, -1):
        w = ws[l]
        d_in, d_out = w.shape
        delta = deltas[l][:size]
        if l > 0:  # this thread's rows of the delta below, before anyone moves w
            below, masks = deltas[l - 1][:size], dmasks[l][:size]
            for r in range(lo, hi):
                _row_mask_words(delta, r, masks, r)
            pre = tiles[2]
            if team > 1 and packing is not None and _packs(size, d_out, d_in):
                pre, packs = tiles[packs % 2], packs + 1
                _pack_tiles(w, _bool(True), pre, tid, team)
                if not barrier(sync, team):
                    return -2
            _matmul_t_into(delta, masks, w, below, packing, lo, hi, scratch, pre, zeros)
            if codes is None or codes[l - 1] == _RELU:
                _relu_mask_rows(below, ins[l][:size], lo, hi)
                if thresh is not None and thresh[l] > 0:
                    _times_rows(below, drops[l][:size], lo, hi)
            else:
                _act_backward_rows(below, zs[l - 1][:size], outs[l - 1][:size], codes[l - 1],
                                   drops[l][:size], lo, hi)
        if not barrier(sync, team):
            return -2
        if l == n_layers - 1:
            first = size
            for t in range(team):
                first = min(first, flags[t])
            if first < size:
                return first
            if tid == 0:
                losses[s] = _mean_terms(terms[:size])
        a = ins[l][:size]
        narrow = _narrow(d_in, d_out)
        w_lo, w_hi = share(d_in, TILE if narrow else _ROWS, tid, team)  # its rows of w
        masks = amasks[l]  # (whole: C, as the other products' masks; words past size are 0)
        if not narrow:
            _col_masks_from_bits(cbits[l], masks, team, w_lo, w_hi)
        # Plain SGD: w - lr * g straight from the registers that hold g, no gradient array.
        # (One call either way, the mode a runtime value: one compiled product, not two.)
        fused = kind == _SGD and not decay
        _weight_grad_into(a, masks, delta, w if fused else grads[l],
                          SUBTRACT if fused else ASSIGN, lr if fused else zero, packing,
                          w_lo, w_hi, scratch, zeros)
        if hyper is not None and not fused:  # (None is plain SGD, fused: numba prunes it)
            # (flat, as the biases: one compiled update)
            _update(w.reshape(-1), grads[l].reshape(-1), s1ws[l].reshape(-1),
                    s2ws[l].reshape(-1), kind, decay, lr, hyper, step, w_lo * d_out,
                    w_hi * d_out)
        b_lo, b_hi = share(d_out, _ROWS, tid, team)
        _bias_grad_into(delta, gbs[l], b_lo, b_hi)
        if hyper is None:  # plain SGD (`fnn.epoch` passes no hyper): `_update` not compiled
            _sgd_rows(bs[l], gbs[l], lr, b_lo, b_hi)
        else:
            _update(bs[l], gbs[l], s1bs[l], s2bs[l], kind, _bool(False), lr, hyper, step,
                    b_lo, b_hi)
    if not barrier(sync, team):  # the next batch overwrites what the others still read
        return -2
    return -1


@_inner
def _times_rows(out, drop, lo, hi):
    """out *= drop, in place, rows [lo, hi) (a dropout multiplier on a gradient)."""
    for r in range(lo, hi):
        for i in range(out.shape[1]):
            out[r, i] = out[r, i] * drop[r, i]


@_inline
def _gather_row(x, e, xb, r, rows, bits):
    """Row e of x -> xb[r]; rows[r] = its row mask; bit r % 64 of bits[r // 64, i] set
    where it is non-zero. Returns False when the row holds a NaN or an infinity."""
    bad = False
    for i in range(xb.shape[1]):  # an explicit loop copies twice as fast as a slice
        v = x[e, i]
        xb[r, i] = v
        bad |= v - v != 0  # NaN exactly when v is NaN or infinite
    # The masks of the row while it is in L1: a pass over the batch would cost more.
    _row_mask_words(xb, r, rows, r)
    _set_col_bits(xb, r, bits[r // 64], np.uint64(r % 64))
    return not bad


# No reference counting: every array train_epoch uses is its caller's, so it has no
# reference to keep; numba would count them at every tuple unpacking and variable's end
# (850 calls, half of its code). Its first compile took 0.3-0.5 s less, the epochs
# the same time (`fnn.numba_compat.jit`'s `nrt`).
@jit(nrt=False)
def train_epoch(ws, bs, s1ws, s1bs, s2ws, s2bs, x, y, order, batch_size, lrs, kind, decay,
                hyper, step_scalars, codes, loss_code, thresh, scales, bases, packing, work,
                scratches, losses, sync, tid, team):
    """Optimizer steps over the batches order[0:batch_size], order[batch_size:2*batch_size], ...

    In place on the weights ws, biases bs and the optimizer's state s1ws, s1bs (the
    velocity of momentum and nesterov, adam's mu), s2ws, s2bs (adam's nu): tuples of
    C-contiguous arrays, one per layer (a slot the optimizer has not is not read: pass
    ws, bs). kind: the index of the optimizer in OPTIMIZERS; decay: whether it has weight
    decay; hyper: (len(HYPER),) and step_scalars: (steps, len(STEP_SCALARS)), of the
    params' dtype (see `_update`); plain SGD without decay subtracts each weight
    gradient straight from the registers that hold it, and takes hyper None (a type of
    its own: `_update` is then not compiled; the first `fit` compiled 0.1-0.4 s faster).
    x: (N, d_in); order: (n,) int64 rows of x; lrs: (steps,) one learning rate per step,
    of the params' dtype. The last batch holds the remaining n % batch_size rows, if any.
    y: (N,) int64 labels, or (N, k) float targets of an elementwise loss. codes,
    loss_code, thresh, scales: the model, codes and thresh None where they are the
    notebook's (see `_train_step`); bases: (steps, layers) uint64, each step's dropout
    streams; packing: PACKING or None (`packing_for`).
    work: the buffers that the threads share, for a batch of B = min(batch_size, n) rows
    and W = ceil(B / 64) mask words (`fnn.epoch` makes them): (xb (B, d_in), yb like
    y[:B], terms (B, 1 or k) float64, flags (team,) int64, then tuples over the layers:
    ins (B, d_in) each layer's input (x or the activation below, times its dropout),
    drops (B, d_in) or (0, 0) without dropout, zs (B, d_out) pre-activations (the outs
    array itself for ReLU and identity), outs (B, d_out) activations, hmasks (B,
    ceil(d_in / 64)) uint64 row masks of ins, cbits (team * W, d_in) uint64 each
    thread's column bits of ins, amasks (d_in, W) uint64 column masks of ins, deltas
    (B, d_out), dmasks (B, ceil(d_out / 64)) uint64 row masks of deltas, grads (d_in,
    d_out) or (0, 0) for plain SGD, gbs (d_out,), and tiles: three 1-d of the params'
    dtype, two of `tiles_size` elements for a team of more than one thread (else empty),
    the third empty), zeros (max width,) 0 of the params' dtype (the bias of the
    backward products). losses: (steps,) float64, written with
    the mean loss of each step. scratches: (team, `scratch_size` of the net's widths and
    the batch) of the params' dtype, row tid this thread's own buffer for the products.
    sync, tid, team: this thread's place in the team (`fnn.team.run`); each thread
    gathers and computes its share of every step.

    Returns -1; or the first row of x in order that holds a NaN or an infinity, where
    the epoch stopped, before that step's update (the rows are checked as they are
    gathered, so that no separate pass over x is needed); or -2 if the team was aborted.
    """
    xb, yb, flags, hmasks, cbits = work[0], work[1], work[3], work[8], work[9]
    n, d_in = order.shape[0], x.shape[1]
    steps = (n + batch_size - 1) // batch_size
    words = work[10][0].shape[1]
    own = cbits[0][tid * words:(tid + 1) * words]  # this thread's column bits of x
    scratch = scratches[tid]
    line = max(1, 64 // x.itemsize)  # elements per 64-byte cache line
    for s in range(steps):
        start = s * batch_size
        size = min(batch_size, n - start)
        lo, hi = share(size, _ROWS, tid, team)
        for wd in range(words):
            for i in range(d_in):
                own[wd, i] = 0
        first = size
        for r in range(lo, hi):
            e = order[start + r]
            if not _gather_row(x, e, xb, r, hmasks[0], own) and first == size:
                first = r
            _copy_target(yb, r, y, e)
        flags[tid] = first
        # The next batch's rows are scattered over x (random rows cost ~15% of an MNIST
        # epoch): start loading this thread's share now, while this step computes. The
        # first lines of a row are enough to start the CPU's own stream prefetcher on it;
        # prefetching whole rows stalled the core and measured no faster. No effect on
        # any result.
        nxt = start + size
        n_lo, n_hi = share(min(batch_size, n - nxt), _ROWS, tid, team)
        for k in range(nxt + n_lo, nxt + n_hi):
            for i in range(0, min(d_in, 4 * line), line):
                _prefetch(x, order[k], i)
        status = _train_step(ws, bs, s1ws, s1bs, s2ws, s2bs, size, s, losses, lrs[s], kind,
                             decay, hyper, step_scalars[s], codes, loss_code, thresh, scales,
                             bases, packing, work, scratch, sync, tid, team)
        if status == -2:
            return -2
        if status >= 0:
            return order[start + status]
    return -1


# ---------------------------------------------------------------- a whole set, evaluated
def codes_arg(codes: Sequence[int]) -> np.ndarray | None:
    """What `train_epoch` and `output_into` take for the activation codes of the layers:
    None for ReLU hidden layers and an identity output (the notebook's net), a type of
    its own, so that numba prunes the other activations' code; else (layers,) int64."""
    *hidden, last = (int(c) for c in codes)
    if last == _IDENTITY and all(c == _RELU for c in hidden):
        return None
    return np.array(codes, dtype=np.int64)


#: Rows that `output_into` takes through every layer at a time (even: row pairs stay
#: whole): a batch's worth, so that a product's running sums stay in the cache.
EVAL_ROWS = 64


# The passes below are what predict, accuracy, loss and evaluation during training read.
# One kernel per pass, with no allocator and no reference counting: a forward pass of
# `linear` calls compiled `linear`, `row_masks` and numba's allocators besides the
# products that `train_epoch` compiles anyway (the first `fit` took 0.85 s longer with
# evaluation than without, most of it those compiles).
@jit(nrt=False)
def output_into(ws, bs, x, codes, packing, zs, outs, masks, scratches, all_tiles, sync, tid,
                team):
    """The network's output without dropout, in place, as thread `tid` of `team` (see
    `fnn.team`): its share of the rows, EVAL_ROWS at a time through every layer.

    ws, bs: tuples over the layers of C-contiguous (d_in, d_out) weights and (d_out,)
    biases; x: (n, d_0) C-contiguous (the inputs read-only, as `fnn.numba_ops` passes
    them: one compiled type); codes: `codes_arg` of the activation codes; packing:
    PACKING or None (`packing_for` the widest layer); zs, outs: tuples of (n, d_out) C
    arrays, each layer's pre-activation and activation (one array, in both, for ReLU
    and the identity); masks: tuple of uint64 (n, ceil(d_in / 64)), for the row masks
    of each layer's input (left unset where the layer is `_narrow`); scratches: (team,
    `scratch_size` of the widths and EVAL_ROWS), row tid this thread's own. Each row
    is computed by the kernels of `linear` and `apply_activation`, with the products'
    choices made for all n rows (`_narrow`, `_packs`), the rows in the same pairs: the
    bits of those kernels layer by layer, for any team. No thread reads another's rows,
    so there is no barrier.
    """
    n = x.shape[0]
    lo, hi = share(n, _ROWS, tid, team)
    scratch, tiles = scratches[tid], all_tiles[tid]
    h = writable(x)
    for l in range(len(ws)):
        w, z = writable(ws[l]), zs[l]
        d_in, d_out = w.shape
        pre = tiles[:0]
        if packing is not None and _packs(n, d_in, d_out):
            pre = tiles
            _pack_tiles(w, _bool(False), pre, _int(0), _int(1))  # once, not once a block
        relu = l < len(ws) - 1 if codes is None else codes[l] == _RELU
        for r0 in range(lo, hi, EVAL_ROWS):
            r1 = min(r0 + EVAL_ROWS, hi)
            if not _narrow(n, d_out):
                for r in range(r0, r1):
                    _row_mask_words(h, r, masks[l], r)
            _linear_into(h, masks[l], w, writable(bs[l]), z, relu, packing, r0, r1, scratch,
                         pre)
            if codes is not None and codes[l] != _RELU and codes[l] != _IDENTITY:
                _activate_rows(z, outs[l], codes[l], r0, r1)
        h = outs[l]


@jit(nrt=False)
def loss_into(out, y, code, delta, terms):
    """The mean loss of out (n, k), accumulated in float64 row by row: softmax
    cross-entropy for y (n,) int64 labels, the elementwise loss `code` for y (n, k)
    targets. delta: (n, k) of out's dtype and terms: float64 (n, 1) or (n, k), buffers
    (their contents are the loss's gradient and terms, of no use here). The value
    `softmax_xent` and `elementwise_loss_grad` give, hence `fnn.backprop`."""
    _loss_rows(writable(out), writable(y), code, delta, terms, _int(0), out.shape[0])
    return _mean_terms(terms)
