"""The numba internals that fnn's kernels use, in one place, each with a fallback.

The kernels need four things numba's public API does not offer: an accumulator array on
the stack (so that LLVM keeps it in registers), a fused multiply-add that is an explicit
IEEE 754 operation (never a licence to reassociate), a prefetch hint, and
count-trailing-zeros. They are built here from numba internals (`numba.core.cgutils`,
`numba.np.arrayobj.populate_array`, `numba.cpython.unsafe.numbers.trailing_zeros`) that a
numba release may move or change. If one is missing, its fallback takes over: a heap
array instead of the stack tile, `llvmlite`'s own intrinsic declaration for the FMA, no
prefetch, a loop for the trailing zeros. A fallback costs speed, never the import and
never a result (the same operations in the same order: the bits do not change).
`FALLBACKS` names the ones in use; tests/test_numba_compat.py runs the kernels on each.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["FALLBACKS", "fma", "prefetch", "stack_tile", "trailing_zeros"]

#: The internals this numba lacks, by the name of the function that falls back.
FALLBACKS: list[str] = []

try:
    from numba.core import cgutils
except ImportError:  # pragma: no cover - depends on the numba release
    cgutils = None
try:
    from numba.np.arrayobj import populate_array
except ImportError:  # pragma: no cover
    populate_array = None
try:
    from numba.cpython.unsafe.numbers import trailing_zeros
except ImportError:  # pragma: no cover
    trailing_zeros = None


def _declare(builder: Any, name: str, fnty: ir.FunctionType) -> Any:
    """The function `name` of the module being built, declared once."""
    if cgutils is not None:
        return cgutils.get_or_insert_function(builder.module, fnty, name)
    module = builder.module
    return module.globals.get(name) or ir.Function(module, fnty, name)


@intrinsic
def fma(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """a * b + c rounded once (IEEE 754 fusedMultiplyAdd), for floats of one type.

    An explicit `llvm.fma`, not a licence to fuse (`fastmath`): the result is the same
    on every machine, one instruction where the CPU has FMA (and vectorised), a libm call
    where it has not.
    """
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ty = context.get_value_type(sig.args[0])
        fn = _declare(builder, f"llvm.fma.{ty.intrinsic_name}", ir.FunctionType(ty, [ty, ty, ty]))
        return builder.call(fn, args)

    return a(a, b, c), codegen


def _make_stack_tile(size: int) -> Any:
    @intrinsic
    def stack_tile(typingctx, like):  # type: ignore[no-untyped-def]
        if not isinstance(like, types.Array):
            return None
        arr = types.Array(like.dtype, 1, "C")

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            elem = context.get_data_type(like.dtype)
            intp = context.get_value_type(types.intp)
            itemsize = context.get_abi_sizeof(elem)
            out = context.make_array(arr)(context, builder)
            populate_array(
                out,
                data=cgutils.alloca_once(builder, elem, size=size),
                shape=[ir.Constant(intp, size)],
                strides=[ir.Constant(intp, itemsize)],
                itemsize=ir.Constant(intp, itemsize),
                meminfo=None,
            )
            return out._getvalue()

        return arr(like), codegen

    return stack_tile


def stack_tile(size: int) -> Any:
    """A jit function `tile(like)`: a 1-d C array of `size` elements of the array `like`'s
    dtype, in the calling kernel's stack frame (uninitialised).

    Unlike a heap array, LLVM can prove that it aliases no argument, so a loop that
    accumulates into it keeps it in registers. It must not outlive the calling kernel.
    Fallback: a heap array (slower; the same values).
    """
    if cgutils is not None and populate_array is not None:
        return _make_stack_tile(size)
    FALLBACKS.append("stack_tile")

    @nb.njit(cache=True, nogil=True, inline="always")
    def heap_tile(like):  # type: ignore[no-untyped-def]
        return np.empty(size, dtype=like.dtype)

    return heap_tile


if cgutils is not None:
    @intrinsic
    def prefetch(typingctx, arr, i, j):  # type: ignore[no-untyped-def]
        """Ask the CPU to start loading the cache line of arr[i, j] (2-d), without
        waiting. Fallback: nothing (a hint only: no effect on any result)."""
        if not (isinstance(arr, types.Array) and arr.ndim == 2):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            aryty = sig.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            idx = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:])]
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            fn = _declare(builder, "llvm.prefetch.p0",
                          ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
            # read, keep in all cache levels, data cache
            builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.void(arr, i, j), codegen
else:  # pragma: no cover - depends on the numba release
    FALLBACKS.append("prefetch")

    @nb.njit(cache=True, nogil=True, inline="always")
    def prefetch(arr, i, j):  # type: ignore[no-untyped-def]
        pass


if trailing_zeros is None:  # pragma: no cover - depends on the numba release
    FALLBACKS.append("trailing_zeros")

    @nb.njit(cache=True, nogil=True, inline="always")
    def trailing_zeros(m):  # type: ignore[no-untyped-def]
        """The number of trailing zero bits of the uint64 m (m != 0), as a uint64."""
        one = np.uint64(1)
        n = np.uint64(0)
        while not m & one:
            m >>= one
            n += one
        return n
