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
from fnn import numba_compat

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
                                        "trailing_zeros", "writable"]
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
