"""fnn.numba_compat: with every numba internal it uses missing, fnn still imports and its
kernels give the same bits (a numba release may cost speed, never a result)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import fnn
from fnn import kernels, numba_compat, team

ROOT = Path(__file__).resolve().parent.parent

# Break the internals before fnn imports them, restore them at once (numba needs them).
_SCRIPT = textwrap.dedent("""
    import json, sys
    import numba.core, numba.cpython.unsafe.numbers as un, numba.np.arrayobj as ao
    import numba.core.imputils as iu, numba.core.codegen as cg
    saved = (ao.populate_array, un.trailing_zeros, numba.core.cgutils, iu.impl_ret_borrowed,
             cg.JITCodeLibrary)
    del ao.populate_array, un.trailing_zeros, numba.core.cgutils, iu.impl_ret_borrowed
    del cg.JITCodeLibrary
    sys.modules["numba.core.cgutils"] = None
    import fnn
    from fnn import numba_compat
    (ao.populate_array, un.trailing_zeros, numba.core.cgutils, iu.impl_ret_borrowed,
     cg.JITCodeLibrary) = saved
    sys.modules["numba.core.cgutils"] = saved[2]
    sys.path.insert(0, sys.argv[1])
    from test_numba_compat import digest
    print(json.dumps({"fallbacks": numba_compat.FALLBACKS, "digest": digest()}))
""")


def digest() -> list[str]:
    """The bits of a numba backprop on a small sparse problem: the sparse products, which
    use the stack tile and the trailing zeros. (The prefetch, a hint, changes no bit; the
    compiled epoch's 40 s compile is left out of the default run.)"""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 20)) * (rng.random((70, 20)) < 0.3)
    y = rng.integers(0, 3, 70)
    params = fnn.init_params(1, (20, 70, 3), dtype="float64")
    value, grads = fnn.backprop(params, x[:9], y[:9], backend="numba")
    arrays = [np.float64(value), *(a for g in grads for a in g)]
    return [np.ascontiguousarray(a).tobytes().hex() for a in arrays]


def test_this_numba_needs_no_fallback():
    assert numba_compat.FALLBACKS == []


def test_without_the_internals_the_kernels_give_the_same_bits(tmp_path):
    # A cache of its own: kernels compiled with fallbacks must not be left for other runs.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(Path(__file__).parent)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(out["fallbacks"]) == ["atomics", "jit", "prefetch", "stack_tile",
                                        "strided", "trailing_zeros", "writable"]
    assert out["digest"] == digest()


# Compiled afresh (cached code keeps no IR to inspect): what the code of `linear` and of
# the product's inner loop calls.
_CALLS = textwrap.dedent("""
    import json, re, numpy as np
    from fnn import kernels
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 130)) * (rng.random((9, 130)) < 0.5)
    w, b = rng.standard_normal((130, 70)), rng.standard_normal(70)
    assert np.allclose(kernels.linear(x, w, b, False), x @ w + b, rtol=1e-12, atol=1e-12)
    def called(dispatcher):
        return sorted({name for cres in dispatcher.overloads.values()
                       for name in re.findall(r'call [^@\\n]*@"?([^"(\\s]+)',
                                              cres.library.get_llvm_str())})
    print(json.dumps({"linear": called(kernels.linear),
                      "tile_sums": called(kernels._tile_sums)}))
""")


def test_kernels_call_the_kernels_below_them_and_inline_numbas_helpers(tmp_path):
    # `numba_compat.jit`: a kernel's code is optimised before the fnn kernels it calls
    # are linked in (so they stay calls, each optimised once), and after numba's own
    # helpers are (so `min` or `np.empty` inline as numba would have them).
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _CALLS], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    called = json.loads(proc.stdout.strip().splitlines()[-1])
    # `_narrow`, a one-line kernel, stays a call (numba's own compiler inlines it).
    assert any("kernels7_narrow" in name for name in called["linear"])  # (mangled name)
    # The loop of the product: nothing but LLVM intrinsics and NRT's reference counts.
    assert [name for name in called["tile_sums"] if not name.startswith(("llvm.", "NRT_"))] == []


# Two processes save overloads of one cached function at once, their steps ordered by
# marker files planted in numba's cache writes (each wait gives up after 2 s, so that a
# lock that serialises the saves makes them wait, not hang): both read the (empty) index;
# the float32 process ("a") writes its index entry first and its data file last, the
# float64 process ("b") in between. Each checks its results and prints how many times it
# compiled the function; a third process ("-") then calls both overloads.
_RACED = textwrap.dedent("""
    import numba
    from fnn.numba_compat import jit

    decorate = jit() if LOCKED else numba.njit(cache=True)

    @decorate
    def plus_one(x):
        return x + 1
""")
_RACER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from numba.core import caching, event
    role, dtype, folder = sys.argv[1:]
    cls = caching.IndexDataCacheFile
    save_index, save_data = cls._save_index, cls._save_data

    def mark(name):
        open(os.path.join(folder, name), "w").close()

    def wait(name):
        end = time.monotonic() + 2.0
        while not os.path.exists(os.path.join(folder, name)) and time.monotonic() < end:
            time.sleep(0.01)

    def planted_index(self, overloads):  # (the index has just been read)
        mark(role + "_read")
        wait("b_read" if role == "a" else "a_index")
        save_index(self, overloads)
        mark(role + "_index")

    def planted_data(self, name, data):
        if role == "a":
            wait("b_data")
        save_data(self, name, data)
        mark(role + "_data")

    if role != "-":
        cls._save_index, cls._save_data = planted_index, planted_data
    sys.path.insert(0, folder)
    from raced import plus_one
    with event.install_recorder("numba:compile") as rec:
        for dt in dtype.split(","):
            out = plus_one(np.arange(3, dtype=dt))
            assert out.dtype == dt and out.tolist() == [1, 2, 3], (dt, out)
    print(json.dumps(len([e for _, e in rec.buffer if e.is_start
                          and e.data["dispatcher"].py_func is plus_one.py_func])))
""")


def _race(tmp_path: Path, locked: bool) -> subprocess.CompletedProcess:
    """The third process, run after the race."""
    folder = tmp_path / ("locked" if locked else "plain")
    folder.mkdir()
    (folder / "raced.py").write_text(f"LOCKED = {locked}\n" + _RACED)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(folder / "cache"), "PYTHONPATH": str(ROOT)}
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, role, dt, str(folder)],
                               env=env, stdout=subprocess.PIPE, text=True)
              for role, dt in (("a", "float32"), ("b", "float64"))]
    for p in racers:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and json.loads(out) == 1  # each compiled its own
    return subprocess.run([sys.executable, "-c", _RACER, "-", "float32,float64",
                           str(folder)], env=env, capture_output=True, text=True, timeout=120)


def test_processes_compiling_at_once_leave_every_cache_entry_whole(tmp_path):
    # numba's own cache (the control): the float64 entry of the index names the data file
    # that the float32 process then overwrites, so float64 calls get float32 machine code
    # (numba/numba#10128); numba fails to unbox the argument.
    plain = _race(tmp_path, locked=False)
    assert plain.returncode != 0, plain.stdout
    # fnn's kernels' cache (`numba_compat._lock_cache`): the saves take turns, and both
    # overloads load, right, with no compile.
    locked = _race(tmp_path, locked=True)
    assert locked.returncode == 0, locked.stderr[-2000:]
    assert json.loads(locked.stdout) == 0


def _inlining(x, masks, words):
    """Inlines fnn's `inline="always"` helpers at several sites, one inside a loop."""
    lo, hi = team.share(x.shape[0], 8, 0, 2)
    for r in range(lo, hi):
        kernels._row_mask_words(x, r, masks, r)
        kernels._set_col_bits(x, r, words[r // 64], np.uint64(r % 64))
    kernels._row_mask_words(x, 0, masks, hi)
    return hi


def test_inlining_without_copies_compiles_the_same_machine_code():
    # fnn's compiler and the same compiler with numba's copying inliner, uncached: the
    # same machine code but for names, and the same results.
    import re

    import numba

    x = np.random.default_rng(0).standard_normal((70, 130)).astype(np.float32)
    x[x < 0.5] = 0

    def compiled(pipeline):
        kernel = numba.njit(pipeline_class=pipeline, nogil=True, error_model="numpy")(_inlining)
        masks, words = np.zeros((71, 3), np.uint64), np.zeros((2, 130), np.uint64)
        hi = kernel(x, masks, words)
        sig = kernel.signatures[0]
        passes = " ".join(kernel.get_metadata(sig)["pipeline_times"]["nopython"])
        code = re.sub(r"_ZN\w+|\.Ltmp\d+|\.LBB\w+|\.LCPI\w+", "_", kernel.inspect_asm(sig))
        # (and the sizes of the strings that hold a name: its numba counter's digits)
        code = re.sub(r'(\.size\t"[^"]*", )\d+', r"\1_", code)
        return (code, "fnn_inline_inlinables" in passes), hi, masks, words

    ours, *result = compiled(numba_compat._KERNEL_COMPILER)
    theirs, *expected = compiled(numba_compat._kernel_compiler(copies=True))
    assert ours[1] and not theirs[1]  # (the two inliners did run)
    assert ours[0] == theirs[0]
    assert all(np.array_equal(a, b) for a, b in zip(result, expected))
    assert result[1].any() and result[2].any()


# A kernel that only kernels call (no CPython or cfunc wrapper), which raises an exception
# that carries a runtime value (numba then boxes it through the kernel's environment),
# and two callers.
_LINKED = textwrap.dedent("""
    from fnn.numba_compat import jit

    @jit(no_cpython_wrapper=True)
    def check(x):
        if x > 1:
            raise ValueError("x: expected at most 1, got", x)
        return x * 2

    @jit()
    def plus(x):
        return check(x) + 1

    @jit()
    def minus(x):
        return check(x) - 1
""")

_LINKER = textwrap.dedent("""
    import json, sys
    from numba import float64
    sys.path.insert(0, sys.argv[1])
    import linked
    out = {}
    if sys.argv[2] == "first":  # the kernel alone: numba's engine gets no code of it
        cres = linked.check.get_compile_result(float64(float64))
        engine = cres.library.codegen._engine
        out["own code"] = engine.is_symbol_defined(cres.fndesc.mangled_name)
    for caller in (linked.plus, linked.minus) if sys.argv[2] == "second" else (linked.plus,):
        try:
            caller(2.5)
        except ValueError as exc:
            out[caller.__name__] = [caller(0.25), list(exc.args)]
        out[caller.__name__ + " compiled"] = caller.stats.cache_misses.get((float64,), 0)
    print(json.dumps(out))
""")


def test_a_kernel_only_kernels_call_runs_linked_into_them_compiled_or_cached(tmp_path):
    # The first process compiles `check` without machine code of its own, then `plus`,
    # which runs it (its result, and its exception with the value it carries, boxed
    # through `check`'s environment: with that pointer left undefined the process
    # crashed). The second loads `plus` from the cache and compiles `minus` against the
    # cached `check`.
    (tmp_path / "linked.py").write_text(_LINKED)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    runs = []
    for role in ("first", "second"):
        proc = subprocess.run([sys.executable, "-c", _LINKER, str(tmp_path), role],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    raised = ["x: expected at most 1, got", 2.5]
    assert runs[0] == {"own code": False, "plus": [1.5, raised], "plus compiled": 1}
    assert runs[1] == {"plus": [1.5, raised], "plus compiled": 0,
                       "minus": [-0.5, raised], "minus compiled": 1}
