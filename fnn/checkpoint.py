"""Checkpoints: a whole `TrainState` in one .npz file, without pickle.

Layout (format version 1), every entry a plain NumPy array:

    params.{l}.w, params.{l}.b        the network, layer l = 0, 1, ...
    opt.{field}.{l}.w, ...{l}.b       each per-layer field of the optimizer state
    history.{field}                   the History arrays
    meta                              uint8: UTF-8 JSON with "format", "version",
                                      "sizes", "dtype", "config", "step", "epoch",
                                      "batch", "rng_state", "elapsed", "data_fingerprint",
                                      "opt_state" {"type", "count", "fields"}, "test"
                                      [loss, accuracy] (null for nan), "extra"
    checksum                          uint8 (32,): SHA-256 over every other entry's
                                      name, dtype, shape and bytes, in name order

Files are written atomically (a temporary file in the same folder, fsync, then
`os.replace`), so a crash or Ctrl-C mid-write leaves the previous checkpoint intact.
Loading checks, in order: readable zip of arrays (np.load with allow_pickle=False),
format and version, checksum, then the expected architecture; any failure raises
`CheckpointError` saying which.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from .monitor import MONITORS, best_eval
from .optim import STATE_TYPES
from .params import Layer, Params, freeze
from .train import (
    Callback,
    Event,
    History,
    TrainConfig,
    TrainState,
    check_config,
    rng_from_state,
)
from .validate import check_params

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "atomic_write",
    "best_checkpoint_callback",
    "checkpoint_callback",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT = "fnn.checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, corrupted, of another format version or
    of another architecture than expected."""


class Checkpoint(NamedTuple):
    """A loaded checkpoint: the TrainState and the caller's `extra` JSON metadata."""

    state: TrainState
    extra: dict


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Create or replace `path` with what `write(file)` writes, all or nothing.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the
    file is renamed over `path`; on any error (Ctrl-C too) the temporary file is removed
    and `path` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every platform can open a folder
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def _checksum(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        digest.update(a.tobytes())
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def _layer_arrays(prefix: str, layers: Params) -> dict[str, np.ndarray]:
    out = {}
    for l, layer in enumerate(layers):
        out[f"{prefix}.{l}.w"] = layer.w
        out[f"{prefix}.{l}.b"] = layer.b
    return out


def _encode(state: TrainState, extra: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(state, TrainState):
        raise TypeError(f"state: expected an fnn.train.TrainState, got {type(state).__name__}")
    params = state.params
    for l, layer in enumerate(params):
        for field, a in zip(Layer._fields, layer):
            if not np.isfinite(a).all():
                raise CheckpointError(
                    f"state.params[{l}].{field}: not finite; refusing to overwrite a good "
                    "checkpoint with a diverged network"
                )
    opt = state.opt_state
    if type(opt).__name__ not in STATE_TYPES:
        raise TypeError(
            f"state.opt_state: expected one of {sorted(STATE_TYPES)}, got {type(opt).__name__}"
        )
    arrays = _layer_arrays("params", params)
    slot_lengths = {}
    for field in opt._fields[1:]:
        slot = getattr(opt, field)
        slot_lengths[field] = len(slot)
        arrays.update(_layer_arrays(f"opt.{field}", slot))
    for field, a in zip(History._fields, state.history):
        arrays[f"history.{field}"] = np.asarray(a)
    config = state.config._asdict()
    config["sizes"] = list(config["sizes"])
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "sizes": [params[0].w.shape[0], *(p.w.shape[1] for p in params)],
        "dtype": params[0].w.dtype.name,
        "config": config,
        "step": state.step,
        "epoch": state.epoch,
        "batch": state.batch,
        "rng_state": state.rng_state,
        "elapsed": state.elapsed,
        "data_fingerprint": state.data_fingerprint,
        "opt_state": {"type": type(opt).__name__, "count": opt.count, "fields": slot_lengths},
        "test": [None if np.isnan(v) else float(v) for v in (state.test_loss,
                                                             state.test_accuracy)],
        "extra": dict(extra),
    }
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"extra: expected JSON-able values, got an error: {exc}") from None
    arrays["meta"] = np.frombuffer(text.encode(), dtype=np.uint8)
    arrays["checksum"] = _checksum(arrays)
    return arrays


def save_checkpoint(
    path: str | os.PathLike, state: TrainState, *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write `state` (and JSON-able `extra` metadata) to the .npz file `path`, atomically.

    Refuses (CheckpointError) a state whose params are not finite, so a diverged run
    never overwrites its last good checkpoint. Returns the path.
    """
    arrays = _encode(state, extra or {})
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: not an fnn checkpoint (a single .npy array)")
        with z:
            return {name: z[name] for name in z.files}
    except CheckpointError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path}: unreadable, truncated or corrupted checkpoint ({type(exc).__name__}: "
            f"{exc})"
        ) from None


def _layers(arrays: Mapping[str, np.ndarray], prefix: str, n: int) -> Params:
    missing = [k for l in range(n) for k in (f"{prefix}.{l}.w", f"{prefix}.{l}.b")
               if k not in arrays]
    if missing:
        raise CheckpointError(f"entry {missing[0]!r} is missing")
    # np.load's arrays are fresh and writable; freezing them makes them params.
    return tuple(
        Layer(freeze(arrays[f"{prefix}.{l}.w"]), freeze(arrays[f"{prefix}.{l}.b"]))
        for l in range(n)
    )


def read_checkpoint(
    path: str | os.PathLike,
    *,
    sizes: tuple[int, ...] | list[int] | None = None,
    dtype: str | np.dtype | type | None = None,
) -> Checkpoint:
    """Load a checkpoint written by `save_checkpoint`: Checkpoint(state, extra).

    sizes, dtype: the architecture expected; a checkpoint of another raises
    CheckpointError naming both.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    if "meta" not in arrays or "checksum" not in arrays:
        raise CheckpointError(f"{path}: not an fnn checkpoint (no 'meta' or 'checksum' entry)")
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
        fmt, version = meta["format"], meta["version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: corrupted metadata ({exc})") from None
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: not an fnn checkpoint (format {fmt!r})")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}; this fnn reads version "
            f"{FORMAT_VERSION}"
        )
    stored = arrays.pop("checksum")
    if not np.array_equal(stored, _checksum(arrays)):
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupted")
    # From here the content is exactly what save_checkpoint wrote.
    if sizes is not None and list(sizes) != meta["sizes"]:
        raise CheckpointError(
            f"{path}: architecture {meta['sizes']} does not match the expected {list(sizes)}"
        )
    if dtype is not None and np.dtype(dtype).name != meta["dtype"]:
        raise CheckpointError(
            f"{path}: dtype {meta['dtype']} does not match the expected {np.dtype(dtype).name}"
        )
    try:
        return _decode(arrays, meta)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint ({type(exc).__name__}: {exc})") \
            from None


def _decode(arrays: Mapping[str, np.ndarray], meta: dict) -> Checkpoint:
    """Rebuild the state from checksum-verified arrays and metadata."""
    # A checkpoint from before validation splits trained on all of its data.
    fields = {"val_fraction": 0.0, **meta["config"]}
    config = check_config(TrainConfig(**{**fields, "sizes": tuple(fields["sizes"])}))
    n_layers = len(meta["sizes"]) - 1
    params = _layers(arrays, "params", n_layers)
    check_params(params)
    sizes = [params[0].w.shape[0], *(p.w.shape[1] for p in params)]
    if sizes != meta["sizes"] or sizes != list(config.sizes):
        raise CheckpointError(f"params of sizes {sizes} do not match the metadata {meta['sizes']}")
    opt_meta = meta["opt_state"]
    state_type = STATE_TYPES[opt_meta["type"]]
    slots = [_layers(arrays, f"opt.{f}", opt_meta["fields"][f]) for f in state_type._fields[1:]]
    history = History(*(arrays[f"history.{f}"] for f in History._fields))
    rng_from_state(meta["rng_state"])  # raises if it is not a bit generator's state
    state = TrainState(
        params=params,
        opt_state=state_type(opt_meta["count"], *slots),
        rng_state=meta["rng_state"],
        step=meta["step"],
        epoch=meta["epoch"],
        batch=meta["batch"],
        config=config,
        history=history,
        elapsed=meta["elapsed"],
        data_fingerprint=meta["data_fingerprint"],
        # (absent from checkpoints written before test metrics were kept)
        test_loss=_nan_for_none(meta.get("test", [None, None])[0]),
        test_accuracy=_nan_for_none(meta.get("test", [None, None])[1]),
    )
    return Checkpoint(state, meta["extra"])


def _nan_for_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    sizes: tuple[int, ...] | list[int] | None = None,
    dtype: str | np.dtype | type | None = None,
) -> TrainState:
    """The TrainState in a checkpoint file; see `read_checkpoint`."""
    return read_checkpoint(path, sizes=sizes, dtype=dtype).state


def checkpoint_callback(
    path: str | os.PathLike, *, every: int = 0, extra: Mapping[str, Any] | None = None
) -> Callback:
    """A `fit` callback that saves the run to `path` at each epoch end, at the end (with
    the test metrics), and every `every` steps when every > 0."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"every: expected an int >= 0, got {every!r}")
    saved = [-1]  # the step last saved, so an epoch end that is also the end saves once

    def callback(event: Event) -> None:
        due = event.kind in ("epoch", "end") or (
            event.kind == "step" and every and event.step % every == 0)
        if event.kind == "epoch" and event.step == event.total_steps:
            return  # the end follows at this step, and its state has the test metrics
        if not due:
            return
        state = event.state()
        # An early stop at an epoch end was saved there, without the test metrics.
        if event.step != saved[0] or (event.kind == "end" and not math.isnan(state.test_loss)):
            save_checkpoint(path, state, extra=extra)
            saved[0] = event.step

    return callback


def best_checkpoint_callback(
    path: str | os.PathLike, *, monitor: str = "val_loss",
    extra: Mapping[str, Any] | None = None
) -> Callback:
    """A `fit` callback that saves the run to `path` at each evaluation that is the best
    so far by `monitor` ("val_loss" or "val_accuracy"; a strict improvement, as early
    stopping counts it), the step-0 evaluation included. A resumed run takes its best
    from the history, so it only replaces the file with a better evaluation."""
    if monitor not in MONITORS:
        raise ValueError(f"monitor: expected one of {tuple(MONITORS)}, got {monitor!r}")
    field, sign = MONITORS[monitor]
    best = [math.nan]

    def callback(event: Event) -> None:
        if event.kind == "start":
            state = event.state()
            values = getattr(state.history, field).tolist()
            i = best_eval(values, monitor)
            if i is None:
                return
            best[0] = values[i]
            if state.history.eval_step[i] == state.step:  # a fresh run's step-0 evaluation
                save_checkpoint(path, state, extra=extra)
        elif event.kind == "eval":
            value = event.eval_loss if field == "eval_loss" else event.eval_accuracy
            if not math.isnan(value) and (math.isnan(best[0]) or sign * value > sign * best[0]):
                best[0] = value
                save_checkpoint(path, event.state(), extra=extra)

    return callback
