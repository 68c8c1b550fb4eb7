"""The numba internals that fnn's kernels use, in one place, each with a fallback.

The kernels need nine things numba's public API does not offer: an accumulator array on
the stack (so that LLVM keeps it in registers), a fused multiply-add that is an explicit
IEEE 754 operation (never a licence to reassociate), a prefetch hint, count-trailing-
zeros, a read-only array retyped writable or of any layout (so that one compiled kernel
serves read-only and writable callers, C and F operands), atomic loads, stores and adds
on an int64 array with a CPU yield (the barrier of `fnn.team`, where threads share one
kernel), a compiler that optimises each kernel's code once (`jit`: numba re-optimises
every callee inside each caller), inlines without copying IR and makes machine code only
of the kernels Python calls, a kernel without reference counting (`jit(nrt=False)`), and
cache entries that processes compiling at once cannot mix up (`jit`'s lock). They are
built here from numba internals (`numba.core.cgutils`, `numba.np.arrayobj.populate_array`,
`numba.cpython.unsafe.numbers.trailing_zeros`, `numba.core.imputils.impl_ret_borrowed`,
`numba.core.codegen.JITCodeLibrary`, `numba.core.untyped_passes.InlineInlinables`, the
`_nrt` option, the dispatcher's `_cache._cache_file`) that a numba release may move or
change. If one is missing, its fallback takes over: a heap array instead of the stack
tile, `llvmlite`'s own intrinsic declaration for the FMA, no prefetch, a loop for the
trailing zeros, the array as it is, no atomics (`ATOMICS` False: a team is one thread,
the kernels never call them), numba's own compiler, reference counting everywhere, and
numba's own unlocked cache. A fallback costs speed or compile time, never the import and
never a result (the same operations in the same order: the bits do not change).
`FALLBACKS` names the ones in use; tests/test_numba_compat.py runs the kernels on each.
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
from typing import Any

import numba as nb
import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["ATOMICS", "FALLBACKS", "atomic_add", "atomic_load", "atomic_store", "cpu_relax",
           "fma", "jit", "jit_options", "prefetch", "stack_tile", "strided", "trailing_zeros",
           "writable"]

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
try:
    from numba.core.imputils import impl_ret_borrowed
except ImportError:  # pragma: no cover
    impl_ret_borrowed = None
try:
    from numba.core.codegen import JITCodeLibrary
    from numba.core.compiler import Compiler, DefaultPassBuilder
    from numba.core.compiler_machinery import LoweringPass, register_pass
    from numba.core.typed_passes import AnnotateTypes

    # What `_kernel_compiler` overrides or calls: checked here, so that a numba that
    # changed them falls back at import instead of failing at a kernel's compile.
    if not all(hasattr(JITCodeLibrary, name) for name in (
            "add_linking_library", "_optimize_final_module", "_get_module_for_linking",
            "_ensure_finalized", "enable_object_caching", "_finalize_final_module",
            "_verify_declare_only_symbols")):
        raise ImportError("numba.core.codegen.JITCodeLibrary is not as fnn knows it")
except ImportError:  # pragma: no cover
    JITCodeLibrary = None


def _kernel_compiler(copies: bool = False) -> Any:
    """numba's nopython compiler, except that the fnn kernels a kernel calls are linked
    into its code after it is optimised, not before.

    numba optimises a function's code together with that of everything it calls, linked
    in, so that LLVM may inline across them. So a kernel five calls deep
    (`_packed_tile_sums`, under `_sparse_matmul_packed`, `_sparse_matmul`, `_linear_into`,
    `train_epoch`) was optimised five times over, each time as it already was. Here each
    kernel's code is optimised once, when it is compiled, with numba's own helpers (`min`,
    `np.empty`, ...) linked in and inlined as before, and its callers call it. A kernel
    is called once per product or step, never per element (what a loop needs inlined is
    numba `inline="always"`, done before LLVM sees the code); and LLVM's optimisations
    keep IEEE 754 semantics, so the bits cannot change. Measured, A/B in one hour: the
    first `sgd_epoch` (784-64-10 float32) compiled in 8.8-8.9 s instead of 10.9-11.4 s,
    with one-thread epochs as fast as before (within this VM's process-to-process spread).

    And the functions a kernel inlines (numba `inline="always"`) are inlined without
    numba's two deep copies of their IR (`_inline_without_copies`; copies=True keeps
    them, for the test that compares the two); a kernel that only kernels call gets no
    machine code of its own, only its callers do (`_environments`): the first `fit`
    compiled in 5.5 s instead of 6.0-6.1 s (A/B, 2026-12-07 02:50 UTC).
    """

    class Library(JITCodeLibrary):  # type: ignore[misc, valid-type]
        def __init__(self, codegen: Any, name: str, linked_only: bool = False) -> None:
            super().__init__(codegen, name)
            self._kernels: list[Any] = []  # the fnn kernels it calls, linked in late
            self._linked_only = linked_only

        def add_linking_library(self, library: Any) -> None:
            if isinstance(library, Library):
                library._ensure_finalized()
                self._kernels.append(library)
            else:
                super().add_linking_library(library)

        def _optimize_final_module(self) -> None:
            super()._optimize_final_module()
            for library in dict.fromkeys(self._kernels):  # each once, in order
                self._reload_init.update(library._reload_init)
                self._final_module.link_in(library._get_module_for_linking(), preserve=True)

        def _finalize_final_module(self) -> None:
            """Hand the code to numba's engine, which makes its machine code; for a kernel
            that only other kernels call, only its environments' pointers (below)."""
            code = self._final_module
            if not self._linked_only or any(gv.name.startswith("numba.dynamic.globals")
                                            for gv in code.global_variables):
                super()._finalize_final_module()
                return
            self._verify_declare_only_symbols()
            self._final_module = _environments(self._codegen, self.name, code)
            try:
                super()._finalize_final_module()  # (its machine code: the cache's object)
            finally:
                self._final_module = code

    @register_pass(mutates_CFG=False, analysis_only=False)
    class UseLibrary(LoweringPass):  # type: ignore[misc, valid-type]
        """Gives the function a `Library` (numba's lowering makes a plain one if none)."""
        _name = "fnn_use_library"

        def __init__(self) -> None:
            LoweringPass.__init__(self)

        def run_pass(self, state: Any) -> bool:
            if state.library is None:
                flags = state.flags
                state.library = Library(state.targetctx.codegen(), state.func_id.func_qualname,
                                        flags.no_cpython_wrapper and flags.no_cfunc_wrapper)
                state.library.enable_object_caching()  # as numba's lowering does
            return False

    inline = None if copies else _inline_without_copies()
    if inline is None and not copies:  # pragma: no cover - numba-release dependent
        FALLBACKS.append("inline_without_copies")

    class KernelCompiler(Compiler):  # type: ignore[misc, valid-type]
        def define_pipelines(self) -> list[Any]:
            pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
            if inline is not None:
                pm.passes = [(inline[1] if cls is inline[0] else cls, about)
                             for cls, about in pm.passes]
            pm.add_pass_after(UseLibrary, AnnotateTypes)  # the last pass before lowering
            pm.finalize()
            return [pm]

    return KernelCompiler


def _environments(codegen: Any, name: str, code: Any) -> Any:
    """A module that defines the environment pointers of `code`'s functions (numba's
    `_ZN08NumbaEnv` globals, as its lowering declares them: common, null) and nothing else.

    What numba's engine gets of a kernel that has neither a CPython nor a cfunc wrapper:
    such a kernel only runs as code linked into its callers, and numba makes the
    machine code of every function when its library is finalized, its callees' (linked
    in) again each time. So the product's tile loop was made into machine code alone,
    and again inside `_sparse_matmul`, `_linear_into`, `_weight_grad_into`, `linear` and
    `train_epoch`, of which only the last two ever run (a fifth of LLVM's time in a
    first fit went to the others). The pointers are still defined, so that numba sets
    them (`set_env`) and its callers resolve to them, as before; the cache entry is
    numba's own ("object": this module's machine code, and the kernel's code to link
    into callers), loaded by numba as any.
    """
    module = codegen._create_empty_module(name)
    for gv in code.global_variables:
        if gv.name.startswith("_ZN08NumbaEnv") and not gv.is_declaration:
            env = ir.GlobalVariable(module, ir.IntType(8).as_pointer(), name=gv.name)
            env.linkage = "common"
            env.initializer = ir.Constant(env.type.pointee, None)
    return ll.parse_assembly(str(module))


def _inline_without_copies() -> tuple[Any, Any] | None:
    """(numba's InlineInlinables pass, the same pass without the IR copies), or None if
    this numba's inliner is not as fnn knows it (numba's own pass is then kept).

    numba's inliner translates the function to inline afresh at each call site and then,
    in `InlineWorker.inline_ir`, deep-copies its IR twice (once to mutate, once to return
    unmutated, which this pass discards): Python's deepcopy of every IR node, the
    largest single cost of the untyped passes here. For IR made for the one call site
    the copies protect nothing. The pass below makes that module's deepcopy return its
    argument while it runs (numba's compiler lock is held: no other compile sees it).
    Measured, A/B in one hour: the first `fit` compiled in 7.0-7.2 s instead of
    7.4-7.7 s; the same code (the same bits, the whole suite)."""
    try:
        from numba.core import inline_closurecall
        from numba.core.untyped_passes import InlineInlinables

        if getattr(inline_closurecall, "copy", None) is not copy:
            return None
    except ImportError:  # pragma: no cover - numba-release dependent
        return None

    class _Shared:
        @staticmethod
        def deepcopy(x: Any, memo: Any = None) -> Any:
            return x

    @register_pass(mutates_CFG=True, analysis_only=False)
    class InlineWithoutCopies(InlineInlinables):  # type: ignore[misc, valid-type]
        _name = "fnn_inline_inlinables"

        def run_pass(self, state: Any) -> bool:
            inline_closurecall.copy = _Shared
            try:
                return bool(super().run_pass(state))
            finally:
                inline_closurecall.copy = copy

    return InlineInlinables, InlineWithoutCopies


if JITCodeLibrary is not None:
    _KERNEL_COMPILER = _kernel_compiler()
else:  # pragma: no cover - depends on the numba release
    FALLBACKS.append("jit")
    _KERNEL_COMPILER = None


def jit_options(*, nrt: bool = True, **options: Any) -> dict[str, Any]:
    """The numba options of `jit` but its cache (for numba's `overload(jit_options=...)`,
    which compiles its implementation uncached): see `jit`."""
    # No cfunc wrapper (a C entry point for numba's first-class functions, which fnn
    # never takes): one function fewer to compile per kernel (the first fit compiled
    # 0.15-0.2 s faster without).
    options = {"nogil": True, "error_model": "numpy", "no_cfunc_wrapper": True, **options}
    if _NRT_OPTION:
        # (the heap tile of `stack_tile`'s fallback is allocated: it needs the counts)
        options["_nrt"] = nrt or not _STACK_TILES
    if _KERNEL_COMPILER is not None:
        options.setdefault("pipeline_class", _KERNEL_COMPILER)
    return options


def jit(*, nrt: bool = True, **options: Any) -> Any:
    """The decorator of every fnn kernel: numba's `njit`, cached, releasing the GIL,
    with numpy's error model (a division by zero gives inf or nan, as in NumPy, with no
    test per division), without a cfunc wrapper, compiled by the compiler above, its
    cache entries saved and loaded under a lock (`_lock_cache`); `options` adds to or
    overrides these.
    nrt=False: no reference counting in the kernel's own code (numba's `_nrt`), for a
    kernel that allocates nothing and keeps no array; the kernels it calls count theirs
    (numba would have them inherit the setting: `_nrt` is set on every kernel).
    Fallbacks: numba's own compiler (a slower compile, the same machine code but for
    what LLVM inlines across kernels; the same bits); numba's own unlocked cache;
    reference counting everywhere (a slower compile; so too where the stack tile falls
    back to a heap array, which is allocated)."""
    decorate = nb.njit(**jit_options(nrt=nrt, **{"cache": True, **options}))

    def kernel(func: Any) -> Any:
        dispatcher = decorate(func)
        _lock_cache(dispatcher)
        return dispatcher

    return kernel


try:
    from numba.core.cpu import CPUTargetOptions

    _NRT_OPTION = hasattr(CPUTargetOptions, "_nrt")  # (a mapping to the flag)
except (ImportError, AttributeError):  # pragma: no cover - numba-release dependent
    _NRT_OPTION = False
if not _NRT_OPTION:  # pragma: no cover
    FALLBACKS.append("nrt")

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]
    FALLBACKS.append("cache_lock")


def _lock_cache(dispatcher: Any) -> None:
    """Make each save to the dispatcher's numba cache hold an exclusive lock, and each
    load a shared one (`flock` on one file in the cache's folder).

    Why: numba names a new entry's data file after the entries of the index it has just
    read, so two processes that save overloads of one function at once (two first runs
    of different configs, the workers of a sweep on a local Dask cluster) can pick the
    same name: the index then sends one signature to the machine code of the other
    (numba/numba#10128; a planted delay shows it in tests/test_numba_compat.py). A load
    between another process's index write and its data write could read a stale file.
    Within one process numba's compiler lock already orders them."""
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if fcntl is None or cache_file is None:  # (None: caching off, NUMBA_DISABLE_JIT)
        return
    if not all(hasattr(cache_file, name) for name in ("save", "load", "_cache_path")):
        if "cache_lock" not in FALLBACKS:  # pragma: no cover - numba-release dependent
            FALLBACKS.append("cache_lock")
        return
    lock = os.path.join(cache_file._cache_path, "fnn-cache.lock")

    def locked(call: Any, mode: int) -> Any:
        def run(*args: Any) -> Any:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:  # an unwritable folder: numba saves nothing there either
                return call(*args)
            try:
                with contextlib.suppress(OSError):  # no locks here (some NFS): as numba
                    fcntl.flock(fd, mode)
                return call(*args)
            finally:
                os.close(fd)  # (releases the lock)
        return run

    cache_file.save = locked(cache_file.save, fcntl.LOCK_EX)
    cache_file.load = locked(cache_file.load, fcntl.LOCK_SH)


# The decorator of a fallback below: a plain numba function, inlined where it is called.
_fallback = nb.njit(cache=True, nogil=True, inline="always")


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


_STACK_TILES = cgutils is not None and populate_array is not None


def stack_tile(size: int) -> Any:
    """A jit function `tile(like)`: a 1-d C array of `size` elements of the array `like`'s
    dtype, in the calling kernel's stack frame (uninitialised).

    Unlike a heap array, LLVM can prove that it aliases no argument, so a loop that
    accumulates into it keeps it in registers. It must not outlive the calling kernel.
    Fallback: a heap array (slower; the same values).
    """
    if _STACK_TILES:
        return _make_stack_tile(size)
    FALLBACKS.append("stack_tile")

    @_fallback
    def heap_tile(like):  # type: ignore[no-untyped-def]
        return np.empty(size, dtype=like.dtype)

    return heap_tile


if impl_ret_borrowed is not None:
    def _same_array(context, builder, sig, args):  # type: ignore[no-untyped-def]
        # A retyped array keeps its data model (the flag and the layout are the type's
        # alone): the array itself, a new reference.
        return impl_ret_borrowed(context, builder, sig.return_type, args[0])

    @intrinsic
    def writable(typingctx, arr):  # type: ignore[no-untyped-def]
        """arr typed writable, its layout kept: the same array, for an operand that a
        kernel only reads (params are read-only arrays). Numba compiles a kernel once
        per read-only flag of each argument: so the public ops and the compiled epoch
        share one compiled copy of each kernel below them. Fallback: arr as it is (more
        copies compiled; the same results)."""
        if not isinstance(arr, types.Array):
            return None
        return arr.copy(readonly=False)(arr), _same_array

    @intrinsic
    def strided(typingctx, arr):  # type: ignore[no-untyped-def]
        """arr typed writable and of any layout (numba's "A"): the same array, for an
        operand that a kernel reads an element at a time, where the layout saves next to
        nothing. Numba compiles a kernel once per layout of each argument: so x (C) and
        a.T (F) share one compiled product. Fallback: arr as it is."""
        if not isinstance(arr, types.Array):
            return None
        return arr.copy(layout="A", readonly=False)(arr), _same_array
else:  # pragma: no cover - depends on the numba release
    FALLBACKS.extend(("writable", "strided"))

    @_fallback
    def writable(arr):  # type: ignore[no-untyped-def]
        return arr

    @_fallback
    def strided(arr):  # type: ignore[no-untyped-def]
        return arr


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

    @_fallback
    def prefetch(arr, i, j):  # type: ignore[no-untyped-def]
        pass


if trailing_zeros is None:  # pragma: no cover - depends on the numba release
    FALLBACKS.append("trailing_zeros")

    @_fallback
    def trailing_zeros(m):  # type: ignore[no-untyped-def]
        """The number of trailing zero bits of the uint64 m (m != 0), as a uint64."""
        one = np.uint64(1)
        n = np.uint64(0)
        while not m & one:
            m >>= one
            n += one
        return n


def _atomics() -> tuple[Any, Any, Any, Any]:
    """atomic_add, atomic_load, atomic_store on element i of a 1-d int64 array (seq_cst:
    every write made before one is seen by a thread that reads its result), and
    cpu_relax(spins): a pause instruction (x86) while spins < 4096, then sched_yield, so
    that a waiting thread gives the core away when another process wants it."""

    def _slot(context, builder, sig, args):  # type: ignore[no-untyped-def]
        """The pointer to arr[i] (args: arr, i[, v]) and v as an int64 (None without)."""
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [idx],
                                       wraparound=False)
        val = context.cast(builder, args[2], sig.args[2], types.int64) if len(args) > 2 else None
        return ptr, val

    def _int64_slot(arr, i):  # type: ignore[no-untyped-def]
        return (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.int64
                and isinstance(i, types.Integer))

    def _write(add: bool) -> Any:
        @intrinsic
        def write(typingctx, arr, i, v):  # type: ignore[no-untyped-def]
            if not _int64_slot(arr, i):
                return None

            def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
                ptr, val = _slot(context, builder, sig, args)
                if add:
                    return builder.atomic_rmw("add", ptr, val, "seq_cst")
                builder.store_atomic(val, ptr, "seq_cst", 8)
                return context.get_dummy_value()

            return (types.int64 if add else types.void)(arr, i, v), codegen

        return write

    atomic_add = _write(add=True)  # arr[i] += v atomically; returns the old value
    atomic_store = _write(add=False)  # arr[i] = v, written atomically

    @intrinsic
    def atomic_load(typingctx, arr, i):  # type: ignore[no-untyped-def]
        """arr[i], read atomically."""
        if not _int64_slot(arr, i):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            return builder.load_atomic(_slot(context, builder, sig, args)[0], "seq_cst", 8)

        return types.int64(arr, i), codegen

    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    posix = os.name == "posix"

    @intrinsic
    def cpu_relax(typingctx, spins):  # type: ignore[no-untyped-def]
        """A spin-wait hint (spins < 4096), then a yield of the CPU to other threads."""
        if not isinstance(spins, types.Integer):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            n = context.cast(builder, args[0], sig.args[0], types.int64)
            few = builder.icmp_signed("<", n, ir.Constant(ir.IntType(64), 4096))
            with builder.if_else(few) as (spin, give_way):
                with spin:
                    if x86:
                        builder.call(_declare(builder, "llvm.x86.sse2.pause",
                                              ir.FunctionType(ir.VoidType(), [])), [])
                with give_way:
                    if posix:
                        builder.call(_declare(builder, "sched_yield",
                                              ir.FunctionType(ir.IntType(32), [])), [])
            return context.get_dummy_value()

        return types.void(spins), codegen

    return atomic_add, atomic_load, atomic_store, cpu_relax


def _no_atomics() -> tuple[Any, Any, Any, Any]:  # pragma: no cover - numba-release dependent
    """Plain (non-atomic) stand-ins: they compile, and only a team of one runs, which
    never calls them."""

    @_fallback
    def atomic_add(arr, i, v):  # type: ignore[no-untyped-def]
        old = arr[i]
        arr[i] = old + v
        return old

    @_fallback
    def atomic_load(arr, i):  # type: ignore[no-untyped-def]
        return arr[i]

    @_fallback
    def atomic_store(arr, i, v):  # type: ignore[no-untyped-def]
        arr[i] = v

    @_fallback
    def cpu_relax(spins):  # type: ignore[no-untyped-def]
        pass

    return atomic_add, atomic_load, atomic_store, cpu_relax


#: Whether atomics are available, hence teams of more than one thread (`fnn.team`).
ATOMICS = cgutils is not None
if ATOMICS:
    atomic_add, atomic_load, atomic_store, cpu_relax = _atomics()
else:  # pragma: no cover - depends on the numba release
    FALLBACKS.append("atomics")
    atomic_add, atomic_load, atomic_store, cpu_relax = _no_atomics()
