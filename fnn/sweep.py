"""Sweeps: a grid of configs times a list of seeds, each an ordinary `fit`, run at once.

    result = fnn.sweep(fnn.TrainConfig(), {"hidden": [(64,), (256, 128)], "lr": [0.05, 0.1]},
                       range(5), out="runs/sweep", jobs=2)
    result.summary[0].test_accuracy.mean

Why it is safe to fan out: a run is a pure function of its config, seed and data (see
`fnn.train`), so a run gives the same bits in a worker process, on a Dask worker or
alone; the sweep adds no randomness and shares nothing between runs but the read-only
data. Each run gets its own folder under `out` (config.json, checkpoint.npz,
history.json as `fnn train` writes them, plus result.json with its metrics), and the
sweep writes runs.csv (one row per run), summary.csv and summary.md (one row per config:
mean, sample std, min and max over the seeds), sweep.png (with matplotlib) and sweep.json
(what was asked).

Resuming: a run whose folder holds a result.json and a finished checkpoint of the same
config and data is skipped; a run with an unfinished checkpoint of the same config and
data (saved every `checkpoint_every` steps, when asked) continues from it, bit-identical
to a run that never stopped; anything else in the folder is overwritten. So rerunning an
interrupted (even SIGKILLed) sweep finishes it with the results it would have had.
Failed runs are recorded (status "failed" with the error) and retried by a rerun.

Workers: by default a `ProcessPoolExecutor` of `jobs` processes, each with one
BLAS/OpenMP/Numba thread (two processes with a full BLAS pool each would fight for the
same cores). Any `concurrent.futures.Executor` works too, e.g. a Dask cluster's
(`dask_executor`). The Numba kernels are compiled (or loaded from the cache) once in the
calling process before the fan-out. Where it is safe, the workers are then forked: they
start with those kernels, the modules and the loaded data already in memory (shared
pages, no second copy), which is what makes short runs scale (a spawned worker spends
about a second importing, loading the data and loading the kernels from the cache before
its first step; measured, that was a third of an 8-run MNIST sweep's wall time). Forking
is safe here when the calling process runs no other thread (a lock held by one would
stay held in the child), has not started Numba's parallel thread pool, and threadpoolctl
is installed (to cut the inherited BLAS pool to one thread). Otherwise the workers are
spawned, fresh interpreters that load data and kernels themselves; a script calling
`sweep` with the default pool then needs the usual `if __name__ == "__main__":` guard.

The run-folder files are written with `fnn.cli`'s helpers, imported inside functions:
`fnn.cli` imports the package's top (for __version__), which imports this module.

Limits, checked before any run starts or any file is written: at most MAX_RUNS runs
(grid points times seeds; each is a folder and a row of runs.csv, which is rewritten as
each run ends), seeds in HYPERPARAMS["seed"]'s range, at most MAX_JOBS workers (each a
process; a pool never starts more workers than it has runs). The data are checked once
here, as every run would check them (shapes, labels, finite values once cast to each
run's dtype, a test split to measure, a batch to train on): a bad array is the caller's
error, not a sweep of failed runs.

Validation: each run is `fit` with its config's `val_fraction` (TrainConfig's default
1/12, or a grid key), so fit holds out its own seeded validation part of the training
examples, evaluates on it, and measures the test split once at the end; `_run_metrics`
reads the last validation evaluation and that test measurement.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import io
import itertools
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .checkpoint import CheckpointError, atomic_write, read_checkpoint
from .hyperparams import check_hyperparam
from .params import Layer
from .run_config import config_json
from .runs import DATA_DEFAULTS, load_run_data
from .train import (
    TrainConfig,
    TrainingDiverged,
    TrainState,
    check_config,
    fit,
    make_config_model,
    make_optimizer,
    steps_per_epoch,
    validation_split,
)
from .validate import check_int, check_real, check_x, shown

if TYPE_CHECKING:  # the pool's module imports multiprocessing: only when a sweep runs
    from concurrent.futures import ProcessPoolExecutor

__all__ = [
    "MAX_JOBS",
    "MAX_RUNS",
    "METRICS",
    "ConfigSummary",
    "RunResult",
    "Spread",
    "SweepResult",
    "dask_executor",
    "parse_seeds",
    "sweep",
]

#: The most runs (grid points times seeds) a sweep takes: each run is a folder, and
#: runs.csv, rewritten as each run ends, has a row per run.
MAX_RUNS: int = 10_000
#: The most worker processes (`jobs`, and `dask_executor`'s local `n_workers`).
MAX_JOBS: int = 1024
#: What each run measures, in runs.csv's and the summaries' order.
METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "seconds")
RESULT = "result.json"
RUNS_CSV = "runs.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
PLOT = "sweep.png"
SWEEP_JSON = "sweep.json"
# Set in the parent around the spawning of pool workers: BLAS and OpenMP read them when
# they load, before any code of ours runs in the child.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS", "FNN_NUM_THREADS")
_DASK_TIMEOUT = 5.0


class RunResult(NamedTuple):
    """One run of a sweep: one grid point and one seed.

    name: its folder under the sweep's `out`. point: the grid values of this run, by grid
    key. config: the full TrainConfig (seed included). status: "done" (trained now),
    "resumed" (continued from a checkpoint), "skipped" (finished before), "failed".
    val_*: the last validation evaluation (nan when failed, or with val_fraction 0).
    test_*: the final params on the test split (nan when failed).
    seconds: training wall time (not reproducible). steps: updates done. error: why it
    failed ("" otherwise).
    """

    name: str
    point: dict
    config: TrainConfig
    status: str
    val_accuracy: float
    val_loss: float
    test_accuracy: float
    test_loss: float
    seconds: float
    steps: int
    error: str


class Spread(NamedTuple):
    """A metric over a config's successful runs: mean, sample std (ddof 1; nan for one
    run), min, max (all nan when no run succeeded)."""

    mean: float
    std: float
    min: float
    max: float


class ConfigSummary(NamedTuple):
    """One grid point over its seeds: `runs` succeeded, `failed` did not; one Spread per
    name in METRICS."""

    label: str
    point: dict
    runs: int
    failed: int
    val_accuracy: Spread
    val_loss: Spread
    test_accuracy: Spread
    test_loss: Spread
    seconds: Spread


class SweepResult(NamedTuple):
    """What `sweep` returns: `runs` in grid order (configs outer, seeds inner), `summary`
    one row per grid point, `out` the folder holding the files."""

    runs: tuple[RunResult, ...]
    summary: tuple[ConfigSummary, ...]
    out: Path


class _Task(NamedTuple):
    """What a worker needs for one run (picklable; arrays only when not in the worker)."""

    name: str
    run_dir: str
    config: TrainConfig
    dataset: str | None
    limit: int | None
    data_key: str
    checkpoint_every: int | None
    arrays: tuple[np.ndarray, ...] | None


# ---------------------------------------------------------------- grid and seeds
def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-4' -> (0, 1, 2, 3, 4); '0,3,7' -> (0, 3, 7); '5' -> (5,); ranges and lists mix.
    At most MAX_RUNS seeds, each in HYPERPARAMS["seed"]'s range (ValueError otherwise)."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if sep else lo)
        except ValueError:
            raise ValueError(f"seeds: expected seeds such as 0-4 or 0,1,2, got "
                             f"{_clip(text)!r}") from None
        check_hyperparam("seed", first, "seeds")
        check_hyperparam("seed", last, "seeds")
        if len(seeds) + max(0, last - first + 1) > MAX_RUNS:
            raise ValueError(f"seeds: expected at most {MAX_RUNS} seeds "
                             f"(fnn.sweep.MAX_RUNS), got {_clip(text)!r}")
        seeds.extend(range(first, last + 1))
    return tuple(seeds)


def _clip(text: str, size: int = 60) -> str:
    return text if len(text) <= size else f"{text[:size]}..."


def _check_seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, range)):
        raise TypeError(f"seeds: expected a sequence of ints such as range(5), got "
                        f"{type(seeds).__name__} {seeds!r}")
    try:
        count = len(seeds)
    except OverflowError:  # a range longer than sys.maxsize
        count = math.inf
    if count > MAX_RUNS:
        raise ValueError(f"seeds: expected at most {MAX_RUNS} seeds (fnn.sweep.MAX_RUNS), "
                         f"got {'more than sys.maxsize' if count == math.inf else count}")
    out = tuple(check_hyperparam("seed", s, f"seeds[{i}]") for i, s in enumerate(seeds))
    if not out:
        raise ValueError("seeds: expected at least one seed, got an empty sequence")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds: expected distinct seeds, got {list(out)}")
    return out


def _hidden(value: Any, key: str) -> tuple[int, ...]:
    widths = (value,) if isinstance(value, (int, np.integer)) else value
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"grid[{key!r}]: expected hidden widths such as 64 or (256, 128), "
                        f"got {value!r}")
    return tuple(widths)


def _check_grid(base: TrainConfig, grid: Any) -> tuple[list[str], list[dict], list[TrainConfig]]:
    """(keys, points, configs): each point a {key: value}, its config checked (seed 0)."""
    if not isinstance(grid, Mapping):
        raise TypeError(f"grid: expected a mapping of TrainConfig fields to lists of values, "
                        f"got {type(grid).__name__}")
    if not grid:
        raise ValueError("grid: expected at least one key with values, got an empty grid "
                         "(to repeat the base config over seeds, give one of its fields with "
                         "one value)")
    keys = list(grid)
    fields = (*TrainConfig._fields, "hidden")
    for key in keys:
        if key == "seed":
            raise ValueError("grid['seed']: the seeds go in the `seeds` argument, not the grid")
        if key not in fields:
            raise ValueError(f"grid: unknown key {key!r}; expected TrainConfig fields or "
                             f"'hidden', one of {fields}")
        values = grid[key]
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"grid[{key!r}]: expected a list of values, got "
                            f"{type(values).__name__} {values!r}")
        if not values:
            raise ValueError(f"grid[{key!r}]: expected at least one value, got none")
    if "hidden" in keys and "sizes" in keys:
        raise ValueError("grid: expected 'hidden' or 'sizes', got both")
    n_points = math.prod(len(grid[k]) for k in keys)
    if n_points > MAX_RUNS:
        raise ValueError(f"grid: expected at most {MAX_RUNS} points (fnn.sweep.MAX_RUNS), "
                         f"got {n_points}")
    points, configs = [], []
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo))
        fields_of = {k: v for k, v in point.items() if k != "hidden"}
        if "hidden" in point:
            fields_of["sizes"] = (base.sizes[0], *_hidden(point["hidden"], "hidden"),
                                  base.sizes[-1])
        try:
            config = check_config(base._replace(**fields_of))
        except (TypeError, ValueError) as exc:
            shown = ", ".join(f"{k}={_show(v)}" for k, v in point.items())
            raise type(exc)(f"grid[{shown}]: {exc}") from None
        points.append(point)
        configs.append(config)
    return keys, points, configs


def _show(value: Any) -> str:
    """A grid value as text for labels, folder names and CSV cells: widths as 256x128."""
    if isinstance(value, (tuple, list)):
        return "x".join(map(_show, value)) if value else "none"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _label(point: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_show(v)}" for k, v in point.items())


def _run_name(point: Mapping[str, Any], seed: int) -> str:
    # Only what varies names a folder; its config.json holds the rest.
    name = ",".join(f"{k}={_show(v)}" for k, v in point.items()) + f",seed={seed}"
    return name.replace(os.sep, "_").replace(" ", "_")


# ---------------------------------------------------------------- data
def _dataset(data: Any, limit: int | None) -> tuple[str | None, tuple[np.ndarray, ...] | None]:
    """(source, arrays): a dataset source to load in each worker, or the caller's arrays."""
    if data is None or isinstance(data, (str, os.PathLike)):
        return (None if data is None else os.fspath(data)), None
    if not isinstance(data, Sequence) or len(data) != 4:
        raise TypeError("data: expected an fnn.Dataset or (x_train, y_train, x_test, y_test), "
                        "a dataset folder or hub id, or None for the shipped MNIST, got "
                        f"{type(data).__name__}")
    arrays = tuple(data)
    for name, a in zip(("x_train", "y_train", "x_test", "y_test"), arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"data.{name}: expected an ndarray, got {type(a).__name__}")
    if limit is not None:
        arrays = (arrays[0][:limit], arrays[1][:limit], *arrays[2:])
    return None, arrays


def _check_data(arrays: tuple[np.ndarray, ...], configs: Sequence[TrainConfig]) -> None:
    """The checks fit makes of the data, made once here for every kind of run (its
    dtype, classes and loss), so that bad data are refused before any run starts."""
    names = ("x_train", "y_train", "x_test", "y_test")
    kinds = {(c.dtype, c.sizes[0], c.sizes[-1], make_config_model(c).loss) for c in configs}
    for dtype_name, d_in, k, loss in kinds:
        dtype = np.dtype(dtype_name)
        stub = (Layer(np.empty((d_in, k), dtype), np.empty(k, dtype)),)  # check_x reads d_in
        with np.errstate(over="ignore"):  # a value past float32's range: check_x names it
            cast = _as_dtype(arrays, dtype_name)
        for i in (0, 2):
            x, _ = check_x(cast[i], stub, dtype, f"data.{names[i]}")
            loss.check_targets(cast[i + 1], x.shape[0], k, False, dtype, f"data.{names[i + 1]}")
        del cast


def _check_jobs(value: Any, name: str) -> int:
    jobs = check_int(value, name, 1)
    if jobs > MAX_JOBS:
        raise ValueError(f"{name}: expected an int <= {MAX_JOBS} (fnn.sweep.MAX_JOBS), got "
                         f"{shown(jobs)}")
    return jobs


def _load(dataset: str | None, limit: int | None, dtype: str) -> tuple[np.ndarray, ...]:
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    return tuple(load_run_data(_data_options(dataset, limit), dtype)[0])


def _data_options(dataset: str | None, limit: int | None) -> dict[str, Any]:
    """The run's data options as `fnn train` records them (config.json, `--config`)."""
    return {**DATA_DEFAULTS, "dataset": dataset, "limit": limit}


def _as_dtype(arrays: tuple[np.ndarray, ...], dtype: str) -> tuple[np.ndarray, ...]:
    x, y, x_test, y_test = arrays
    return (x.astype(dtype, copy=False), y, x_test.astype(dtype, copy=False), y_test)


def _data_key(arrays: tuple[np.ndarray, ...]) -> str:
    """Identifies the data a run trained and was measured on (to refuse reusing a run
    folder made from other data): a hash of every array."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.data)
    return digest.hexdigest()[:32]


def _run_metrics(state: TrainState) -> dict[str, float]:
    """A finished run's last validation evaluation and its test measurement. With
    val_fraction 0, fit evaluated on the test split itself: that is the test metric."""
    h = state.history
    last = (float(h.eval_loss[-1]), float(h.eval_accuracy[-1]))
    if state.config.val_fraction > 0:
        val, test = last, (state.test_loss, state.test_accuracy)
    else:
        val, test = (math.nan, math.nan), last
    return {"val_loss": val[0], "val_accuracy": val[1], "test_loss": test[0],
            "test_accuracy": test[1]}


# ---------------------------------------------------------------- one run (in a worker)
_WORKER_ARRAYS: tuple[np.ndarray, ...] | None = None  # set by _init_worker
_LOADED: dict[tuple, tuple[np.ndarray, ...]] = {}  # datasets this worker loaded


def _init_worker(arrays: tuple[np.ndarray, ...] | None, parent: int,
                 loaded: dict[tuple, tuple[np.ndarray, ...]] | None = None) -> None:
    """A pool worker's start: one BLAS thread, Ctrl-C left to the parent (which stops the
    pool), the caller's arrays kept, the datasets a forking parent had loaded (by
    `_task_data`'s key), and an exit if the parent dies (a SIGKILLed sweep must not leave
    workers writing into run folders that a rerun is using)."""
    global _WORKER_ARRAYS
    _WORKER_ARRAYS = arrays
    _LOADED.update(loaded or {})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_threads()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _limit_threads() -> None:
    """One BLAS thread for this worker even if its BLAS loaded before the environment
    was set: threadpoolctl when installed; and one thread per compiled epoch (`fnn.team`,
    read at each call, so a forked worker too). (Not for a foreign executor's runs, which
    may be threads of the caller's process; Dask's nanny starts workers with one thread.)"""
    os.environ["FNN_NUM_THREADS"] = "1"
    if importlib.util.find_spec("threadpoolctl") is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


def _task_data(task: _Task) -> tuple[np.ndarray, ...]:
    arrays = task.arrays if task.arrays is not None else _WORKER_ARRAYS
    if arrays is None:
        key = (task.dataset, task.limit, task.config.dtype)
        if key not in _LOADED:
            _LOADED[key] = _load(task.dataset, task.limit, task.config.dtype)
        arrays = _LOADED[key]
    return _as_dtype(arrays, task.config.dtype)


def _resumable(ckpt: Path, task: _Task) -> TrainState | None:
    """The run's checkpoint if it is this config's on this data, else None (start anew)."""
    if not ckpt.exists():
        return None
    try:
        state, extra = read_checkpoint(ckpt)
    except CheckpointError:
        return None
    same = state.config == task.config and extra.get("data") == task.data_key
    return state if same else None


def _run_one(task: _Task) -> dict[str, Any]:
    """Train one run in its folder; returns its result (as result.json holds it). Never
    raises for a failing run: the error goes into the result."""
    from .checkpoint import checkpoint_callback, save_checkpoint
    from .cli import CHECKPOINT, CONFIG, HISTORY, _json_history, _write_json

    out = Path(task.run_dir)
    result: dict[str, Any] = {"config": _train_json(task.config), "data": task.data_key,
                              **dict.fromkeys(METRICS, math.nan), "steps": 0, "error": ""}
    try:
        arrays = _task_data(task)
        out.mkdir(parents=True, exist_ok=True)
        ckpt = out / CHECKPOINT
        resume = _resumable(ckpt, task)
        extra = {"dataset": task.dataset, "limit": task.limit, "data": task.data_key}
        _write_json(out / CONFIG, config_json(task.config,
                                              _data_options(task.dataset, task.limit)))
        callbacks = ([] if task.checkpoint_every is None else
                     [checkpoint_callback(ckpt, every=task.checkpoint_every, extra=extra)])
        try:
            state = fit(None, arrays, None if resume else task.config, resume=resume,
                        callbacks=callbacks)
        except TrainingDiverged as exc:
            _write_json(out / HISTORY, _json_history(exc.state), one_line_values=True)
            raise
        save_checkpoint(ckpt, state, extra=extra)
        _write_json(out / HISTORY, _json_history(state), one_line_values=True)
        result.update(_run_metrics(state), seconds=state.elapsed,
                      steps=state.step, status="resumed" if resume else "done")
    except Exception as exc:  # recorded in the run's row; the other runs go on
        result.update(status="failed", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    with contextlib.suppress(OSError):
        if out.is_dir():
            _write_json(out / RESULT, result)
    return result


def _train_json(config: TrainConfig) -> dict[str, Any]:
    return config_json(config, {})["train"]


def _finished(run_dir: Path, config: TrainConfig, data_key: str) -> dict | None:
    """A run folder's earlier result if it finished this config on this data."""
    from .cli import CHECKPOINT

    try:
        result = json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(result, dict) or result.get("status") == "failed"
            or result.get("config") != json.loads(json.dumps(_train_json(config)))
            or result.get("data") != data_key):  # (through JSON: tuples read back as lists)
        return None
    try:
        state, _ = read_checkpoint(run_dir / CHECKPOINT)
    except CheckpointError:
        return None
    return result if state.finished and state.config == config else None


# ---------------------------------------------------------------- fan-out
@contextlib.contextmanager
def _one_thread_env() -> Iterator[None]:
    """The parent's environment set to one thread while pool workers are spawned (they
    inherit it), then restored."""
    old = {k: os.environ.get(k) for k in _ONE_THREAD}
    os.environ.update(dict.fromkeys(_ONE_THREAD, "1"))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start_method() -> str:
    """"fork" where forking this process is safe (see the module docstring), else "spawn"."""
    import multiprocessing

    numba_pool = sys.modules.get("numba.np.ufunc.parallel")
    pool_started = numba_pool is not None and getattr(numba_pool, "_is_initialized", True)
    safe = (threading.active_count() == 1 and not pool_started
            and importlib.util.find_spec("threadpoolctl") is not None)
    return "fork" if safe and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _process_pool(jobs: int, arrays: tuple[np.ndarray, ...] | None, method: str = "spawn",
                  loaded: dict[tuple, tuple[np.ndarray, ...]] | None = None,
                  ) -> ProcessPoolExecutor:
    """A pool of `jobs` worker processes, started by `method` ("fork" or "spawn"); the
    workers get the caller's arrays and, forked only, the `loaded` datasets (inherited,
    never pickled: a spawned worker loads its own)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker, so the one-thread environment holds when BLAS
    # loads, and no thread or lock state of the parent is inherited (fork's hazards).
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method),
                               initializer=_init_worker,
                               initargs=(arrays, os.getpid(),
                                         loaded if method == "fork" else None))


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's workers now (Ctrl-C): finished runs are on disk, running ones have
    their last checkpoint."""
    processes = list(getattr(pool, "_processes", {}).values())  # no public API before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        p.terminate()
    for p in processes:
        p.join(5)


def _prepare(task: _Task) -> None:
    """A pool worker's first job: load the data and import the training code while the
    parent warms the Numba cache, so the worker's start overlaps the warm-up."""
    _task_data(task)
    from . import kernels  # noqa: F401  (numba's import, not a compile)


def _execute(tasks: list[_Task], executor: Executor | None, jobs: int,
             arrays: tuple[np.ndarray, ...] | None,
             on_done: Callable[[_Task, dict], None], before: Callable[[], None],
             loaded: dict[tuple, tuple[np.ndarray, ...]]) -> None:
    """Run the tasks, calling before() first; on_done(task, result) as each finishes,
    in completion order. loaded: the datasets the caller loaded, for forked workers."""
    own = executor is None
    method = _start_method() if own else ""
    if method == "fork":
        before()  # the workers fork from this process: with its compiled kernels
    else:
        loaded.clear()  # spawned workers load their own: the parent keeps no copy meanwhile
    jobs = min(jobs, len(tasks))  # no idle workers
    pool: Any = _process_pool(jobs, arrays, method, loaded) if own else executor
    if not own and arrays is not None:
        tasks = [t._replace(arrays=arrays) for t in tasks]  # no initializer on a foreign pool
    futures: dict[Future, _Task] = {}
    try:
        with _one_thread_env():
            if method == "spawn":  # starts the workers now; they start while before() runs
                for _ in range(min(jobs, len(tasks))):
                    pool.submit(_prepare, tasks[0])
            if method != "fork":
                before()
            for task in tasks:
                futures[pool.submit(_run_one, task)] = task
        # The plot at the end needs matplotlib, whose import (~0.5 s) would otherwise be
        # serial time after the last run: do it now, while the workers train.
        _import_plotting()
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    result = future.result()
                except Exception as exc:  # the worker died (out of memory, killed)
                    result = {**dict.fromkeys(METRICS, math.nan), "steps": 0,
                              "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                on_done(futures[future], result)
    except BaseException:
        for future in futures:
            future.cancel()
        if own:
            _terminate(pool)
        raise
    finally:
        if own:
            pool.shutdown(wait=True)


def _warm(configs: Sequence[TrainConfig], arrays: tuple[np.ndarray, ...]) -> None:
    """Compile (or load) the Numba kernels the runs use, here, once: one short fit per
    distinct kind of run on a few examples, so that workers find them in the cache. A
    run's checkpoint callback keeps fit on the same compiled path (it declares epoch
    events only), so a fit without callbacks warms what the runs use."""
    kinds = {c._replace(seed=0, epochs=1, lr=min(c.lr, 1e-3)) for c in configs
             if c.backend == "numba"}
    for config in kinds:
        x, y, x_test, y_test = _as_dtype(arrays, config.dtype)
        n = min(x.shape[0], 2 * config.batch_size)
        with contextlib.suppress(Exception):  # a failing config fails in its run
            fit(None, (x[:n], y[:n], x_test[:8], y_test[:8]), config)


# ---------------------------------------------------------------- outputs
def _spread(values: Sequence[float]) -> Spread:
    a = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if a.size == 0:
        return Spread(math.nan, math.nan, math.nan, math.nan)
    std = float(a.std(ddof=1)) if a.size > 1 else math.nan
    return Spread(float(a.mean()), std, float(a.min()), float(a.max()))


def _summarize(points: list[dict], runs: list[RunResult]) -> tuple[ConfigSummary, ...]:
    out = []
    for point in points:
        mine = [r for r in runs if r.point == point]
        ok = [r for r in mine if r.status != "failed"]
        spreads = [_spread([getattr(r, m) for r in ok]) for m in METRICS]
        out.append(ConfigSummary(_label(point), point, len(ok), len(mine) - len(ok), *spreads))
    return tuple(out)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _write_runs_csv(path: Path, keys: list[str], runs: list[RunResult]) -> None:
    header = ["run", *keys, "seed", "status", *METRICS, "steps", "error"]
    rows = [[r.name, *(_show(r.point[k]) for k in keys), r.config.seed, r.status,
             *(getattr(r, m) for m in METRICS), r.steps, r.error] for r in runs]
    text = _csv_text(header, rows)
    atomic_write(path, lambda f: f.write(text))


def _write_summaries(out: Path, keys: list[str], summary: tuple[ConfigSummary, ...],
                     n_seeds: int) -> None:
    header = [*keys, "runs", "failed",
              *(f"{m}_{s}" for m in METRICS for s in Spread._fields)]
    rows = [[*(_show(c.point[k]) for k in keys), c.runs, c.failed,
             *(v for m in METRICS for v in getattr(c, m))] for c in summary]
    text = _csv_text(header, rows)
    atomic_write(out / SUMMARY_CSV, lambda f: f.write(text))

    def pct(s: Spread) -> str:
        if math.isnan(s.mean):
            return "n/a"
        std = "" if math.isnan(s.std) else f" ± {100 * s.std:.2f}"
        return f"{100 * s.mean:.2f}{std} %"

    def span(s: Spread) -> str:
        return "n/a" if math.isnan(s.mean) else f"{100 * s.min:.2f}-{100 * s.max:.2f} %"

    lines = [f"| {' | '.join(keys)} | runs | val accuracy | test accuracy | test min-max "
             "| train time |",
             "|" + "---|" * (len(keys) + 5)]
    for c in summary:
        runs = f"{c.runs}/{n_seeds}" + (f" ({c.failed} failed)" if c.failed else "")
        secs = "n/a" if math.isnan(c.seconds.mean) else f"{c.seconds.mean:.1f} s"
        lines.append(f"| {' | '.join(_show(c.point[k]) for k in keys)} | {runs} | "
                     f"{pct(c.val_accuracy)} | {pct(c.test_accuracy)} | "
                     f"{span(c.test_accuracy)} | {secs} |")
    text_md = ("Mean ± sample std over seeds (min-max of test accuracy); "
               "train time is the mean per run.\n\n" + "\n".join(lines) + "\n").encode()
    atomic_write(out / SUMMARY_MD, lambda f: f.write(text_md))


def _import_plotting() -> None:
    """Import what `_write_plot` uses, if it is installed (a failure surfaces there)."""
    if importlib.util.find_spec("matplotlib") is not None:
        with contextlib.suppress(Exception):
            from matplotlib import figure  # noqa: F401
            from matplotlib.backends import backend_agg  # noqa: F401

            from . import plot  # noqa: F401


def _write_plot(out: Path, points: list[dict], runs: list[RunResult]) -> bool:
    """sweep.png; False (and no file) when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    from .plot import plot_spread

    series = {}
    for metric, name in (("val_accuracy", "validation"), ("test_accuracy", "test")):
        series[name] = [[100 * getattr(r, metric) for r in runs
                         if r.point == p and r.status != "failed"] for p in points]
    plot_spread([_label(p) for p in points], series, out / PLOT, ylabel="accuracy (%)",
                title="accuracy per config over seeds (mean ± std, dots: seeds)")
    return True


# ---------------------------------------------------------------- entry point
def sweep(
    base_config: TrainConfig,
    grid: Mapping[str, Sequence[Any]],
    seeds: Sequence[int],
    *,
    executor: Executor | None = None,
    out: str | os.PathLike = "runs/sweep",
    data: Any = None,
    limit: int | None = None,
    jobs: int | None = None,
    checkpoint_every: int | None = None,
    warm: bool = True,
    on_run: Callable[[RunResult], None] | None = None,
) -> SweepResult:
    """Train every grid point of `grid` over `base_config` with every seed; returns the
    runs and their summary, and writes them into `out` (see the module docstring).

    base_config: the fields no grid key sets (its seed is ignored).
    grid: {TrainConfig field or "hidden": [values]}, e.g. {"hidden": [(64,), (256, 128)],
        "lr": [0.05, 0.1]}; the points are the product, in the given order. "hidden"
        sets the hidden widths between base_config.sizes[0] and [-1]. Every point is
        checked with `check_config` before any run starts (errors name the point).
    seeds: the seeds, e.g. range(5): distinct ints in HYPERPARAMS["seed"]'s range; at most
        MAX_RUNS runs in all (grid points times seeds).
    executor: where runs go: None for a pool of `jobs` processes on this machine, or any
        concurrent.futures.Executor (e.g. `dask_executor(...)`'s). It is not shut down.
    out: the sweep's folder (created); each run gets a sub-folder named by its grid
        values and seed.
    data: None (the MNIST in the repository), a dataset folder or hub id (`load_mnist`;
        each worker loads it, from the array cache), or arrays (an fnn.Dataset or
        (x_train, y_train, x_test, y_test); sent once to each pool worker, and with each
        run to a foreign executor).
    limit: train on the first `limit` training examples only (before the hold-out).
    The data are checked here as each run would check them (ValueError or TypeError
    naming data.x_train, ...), before any run starts or any file is written.
    jobs: pool size, at most MAX_JOBS (default: os.cpu_count(), within MAX_JOBS; never
        more workers than runs); ignored with an executor.
    checkpoint_every: None saves a run's checkpoint when it ends; 0 also at each epoch
        end, N also every N steps, so that an interrupted run resumes mid-way (the same
        bits; the steps still run in fit's compiled chunks).
    warm: compile the Numba kernels here before the fan-out.
    on_run: called with each RunResult as it finishes (skipped runs first).

    Ctrl-C stops the workers of the default pool (and cancels what has not started on a
    foreign executor), writes runs.csv with the runs that finished, and re-raises.
    """
    base = check_config(base_config)
    keys, points, configs = _check_grid(base, grid)
    seeds = _check_seeds(seeds)
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor: expected a concurrent.futures.Executor or None, got "
                        f"{type(executor).__name__}")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out: expected a folder path, got {type(out).__name__}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a folder (or a path to make one at), got the file "
                         f"{str(out)!r}")
    if limit is not None:
        limit = check_int(limit, "limit", 1)
    if len(points) * len(seeds) > MAX_RUNS:
        raise ValueError(f"runs: expected at most {MAX_RUNS} (fnn.sweep.MAX_RUNS), got "
                         f"{len(points) * len(seeds)} ({len(points)} grid points times "
                         f"{len(seeds)} seeds)")
    jobs = _check_jobs(min(os.cpu_count() or 1, MAX_JOBS) if jobs is None else jobs, "jobs")
    if checkpoint_every is not None:
        checkpoint_every = check_int(checkpoint_every, "checkpoint_every", 0)
    if on_run is not None and not callable(on_run):
        raise TypeError(f"on_run: expected a callable or None, got {type(on_run).__name__}")
    dataset, arrays = _dataset(data, limit)
    here = arrays if arrays is not None else _load(dataset, limit, base.dtype)
    for name, x in (("x_train", here[0]), ("x_test", here[2])):
        if x.ndim != 2:
            raise ValueError(f"data.{name}: expected a 2-d array (n, d_in), got shape "
                             f"{x.shape}")
    d_in = here[0].shape[1]
    for point, config in zip(points, configs):
        if config.sizes[0] != d_in:
            raise ValueError(f"grid[{_label(point)}]: config.sizes[0]: expected the data's "
                             f"{d_in} features, got {config.sizes[0]}")
    _check_data(here, configs)
    for point, config in zip(points, configs):  # no batch to train on, every run alike
        try:
            n_train = validation_split(here[0].shape[0], config.val_fraction, 0)[0].shape[0]
            if steps_per_epoch(n_train, config.batch_size, config.drop_last) == 0:
                raise ValueError(f"config.batch_size: expected at most the {n_train} "
                                 f"training examples with drop_last, got {config.batch_size}")
            make_optimizer(config, n_train)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"grid[{_label(point)}]: {exc}") from None
    data_key = _data_key(here)

    out.mkdir(parents=True, exist_ok=True)
    sweep_json = json.dumps({
        "base_config": {**base._asdict(), "sizes": list(base.sizes)},
        "grid": {k: [_show(v) for v in grid[k]] for k in keys}, "seeds": list(seeds),
        "dataset": dataset, "limit": limit, "data": data_key}, indent=1) + "\n"
    atomic_write(out / SWEEP_JSON, lambda f: f.write(sweep_json.encode()))

    slots: dict[str, RunResult | None] = {}
    tasks: list[_Task] = []
    order: list[tuple[str, dict, TrainConfig]] = []
    for point, config in zip(points, configs):
        for seed in seeds:
            name, run_config = _run_name(point, seed), config._replace(seed=seed)
            order.append((name, point, run_config))
            slots[name] = None
            earlier = _finished(out / name, run_config, data_key)
            if earlier is not None:
                slots[name] = _result(name, point, run_config, {**earlier, "status": "skipped"})
            else:
                tasks.append(_Task(name, str(out / name), run_config, dataset, limit,
                                   data_key, checkpoint_every, None))
    point_of = {name: point for name, point, _ in order}

    def finished_runs() -> list[RunResult]:
        return [r for r in slots.values() if r is not None]

    def on_done(task: _Task, result: dict) -> None:
        run = _result(task.name, point_of[task.name], task.config, result)
        slots[task.name] = run
        _write_runs_csv(out / RUNS_CSV, keys, finished_runs())
        if on_run is not None:
            on_run(run)

    if on_run is not None:
        for run in finished_runs():
            on_run(run)
    # A few rows for the warm-up; the data itself only for forked workers (`_execute`).
    rows = 2 * max((t.config.batch_size for t in tasks), default=1)
    sample = tuple(a[:rows].copy() for a in here)
    loaded = {} if arrays is not None else {(dataset, limit, base.dtype): here}
    del here

    def before() -> None:
        if warm:
            _warm([t.config for t in tasks], sample)

    try:
        if tasks:
            _execute(tasks, executor, jobs, arrays, on_done, before, loaded)
    finally:
        _write_runs_csv(out / RUNS_CSV, keys, finished_runs())
    runs = [r for r in (slots[name] for name, _, _ in order) if r is not None]
    summary = _summarize(points, runs)
    _write_summaries(out, keys, summary, len(seeds))
    _write_plot(out, points, runs)
    return SweepResult(tuple(runs), summary, out)


def _result(name: str, point: dict, config: TrainConfig, result: Mapping[str, Any]) -> RunResult:
    return RunResult(name, point, config, str(result["status"]),
                     *(float(result.get(m, math.nan)) for m in METRICS[:4]),
                     float(result.get("seconds", math.nan)), int(result.get("steps", 0)),
                     str(result.get("error", "")))


# ---------------------------------------------------------------- Dask
@contextlib.contextmanager
def dask_executor(address: str, *, n_workers: int = 2,
                  timeout: float | None = None) -> Iterator[Executor]:
    """A concurrent.futures Executor on a Dask cluster, for `sweep(executor=...)`.

    address: a scheduler address ("tcp://host:8786"), or "local" for a LocalCluster of
    `n_workers` processes with one thread each, started here and closed on exit. An
    address that does not answer within `timeout` seconds (default 5) raises ValueError.
    Workers must import the same fnn and see the dataset (the shipped MNIST, or a hub id).
    Needs `distributed` (pip install 'fnn[dask]').
    """
    if not isinstance(address, str) or not address:
        raise TypeError(f"address: expected a Dask scheduler address or 'local', got "
                        f"{address!r}")
    n_workers = _check_jobs(n_workers, "n_workers")
    timeout = check_real(_DASK_TIMEOUT if timeout is None else timeout, "timeout", 0.0,
                         math.inf, lo_open=True, hi_open=True)
    try:
        import distributed
    except ImportError:
        raise ImportError("dask: the Dask executor needs distributed "
                          "(pip install 'fnn[dask]')") from None
    cluster = None
    if address == "local":
        # Nanny workers start with OMP/MKL/OPENBLAS_NUM_THREADS=1 (dask's pre-spawn-environ),
        # and one thread per compiled epoch (`fnn.team`).
        cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None,
                                           env={"FNN_NUM_THREADS": "1"})
        client = distributed.Client(cluster)
    else:
        try:
            client = distributed.Client(address, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ValueError(f"dask: expected a reachable Dask scheduler, got {address!r} "
                             f"(no answer within {timeout:g} s: {exc})") from None
    try:
        yield client.get_executor()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
