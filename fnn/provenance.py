"""Where a result came from: library versions, BLAS and threads, platform, git commit.

Recorded in a run's config.json and in its checkpoints' metadata, so that a number in a
table can be traced to the software and machine settings that produced it. Nothing here
is needed to train; every probe that can fail (threadpoolctl absent, no git, not a
checkout) is left out of the record rather than raised.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["THREAD_VARIABLES", "provenance"]

#: Environment variables that set thread counts or kernels of the numeric libraries.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
    "FNN_NUM_THREADS",
    "NUMBA_THREADING_LAYER", "OPENBLAS_CORETYPE", "FNN_BACKEND",
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _blas() -> list[dict[str, Any]] | None:
    """threadpoolctl's account of the loaded BLAS/OpenMP libraries, if it is installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keep = ("user_api", "internal_api", "version", "num_threads", "architecture", "prefix")
    return [{k: info.get(k) for k in keep if k in info} for info in threadpool_info()]


def _git_commit() -> dict[str, Any] | None:
    """The commit of the checkout fnn is imported from (and whether it has local changes)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def provenance() -> dict[str, Any]:
    """A JSON-able record of this process's software and settings.

    Keys: "fnn", "numpy", "numba", "python" (versions), "platform" (OS, machine,
    processor), "cpu_count", "numba_threads", "blas" (threadpoolctl's list, or None when it is not
    installed), "environment" (the THREAD_VARIABLES that are set), "git" ({"commit",
    "dirty"}, or None outside a git checkout), "datasets" and "pillow" (versions, or None).
    """
    import numba
    import numpy as np

    from . import __version__

    return {
        "fnn": __version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "python": sys.version.split()[0],
        "platform": {"system": platform.platform(), "machine": platform.machine(),
                     "processor": platform.processor() or None},
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "blas": _blas(),
        "environment": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "git": _git_commit(),
        "datasets": _version("datasets"),
        "pillow": _version("Pillow"),
    }
