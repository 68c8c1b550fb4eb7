"""A run's `config.json`: what `fnn train` ran (recipe, data options, provenance), in a
form `fnn train --config` reads back to run it again.

    {"format": "fnn.run-config", "version": 1,
     "train": {TrainConfig fields},
     "dataset": ..., "limit": ..., "image_column": ..., "label_column": ...,
     "train_split": ..., "test_split": ..., "scale": ...,
     "provenance": {see fnn.provenance}}

Reading checks that the file is fnn's and names only known keys, so a typo in a
hand-edited config is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .train import TrainConfig

__all__ = ["DATA_KEYS", "FORMAT", "config_json", "read_run_config"]

FORMAT = "fnn.run-config"
VERSION = 1
#: The data options of a run, beside its TrainConfig.
DATA_KEYS = ("dataset", "limit", "image_column", "label_column", "train_split",
             "test_split", "scale")
_OTHER_KEYS = ("format", "version", "train", "provenance")
_TUPLE_FIELDS = ("sizes", "activation", "dropout")


def config_json(config: TrainConfig, data: dict[str, Any],
                provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config.json object of a run (lists for the tuple fields)."""
    train = {k: list(v) if isinstance(v, tuple) else v for k, v in config._asdict().items()}
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "train": train}
    out.update({k: data.get(k) for k in DATA_KEYS})
    if provenance is not None:
        out["provenance"] = provenance
    return out


def read_run_config(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig fields, data options) from a run's config.json (or the folder holding
    it). Only the keys present are returned; values are checked later, where they are
    used (check_config, the data loader). Raises ValueError naming the file for a file
    that is not JSON, not fnn's, of another version, or names unknown keys."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    where = f"config file {path}"
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        raise ValueError(f"{where}: expected a regular file, got another kind of file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: expected fnn's JSON run config, got an unreadable "
                         f"file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("train"), dict):
        raise ValueError(f"{where}: expected fnn's run config (a JSON object with a "
                         f"'train' object), got {type(obj).__name__}"
                         + (f" with keys {sorted(obj)}" if isinstance(obj, dict) else ""))
    # Files written before the format key existed have "train" and the data keys only.
    if obj.get("format", FORMAT) != FORMAT or obj.get("version", VERSION) != VERSION:
        raise ValueError(f"{where}: expected format {FORMAT!r} version {VERSION}, got "
                         f"{obj.get('format')!r} version {obj.get('version')!r}")
    unknown = sorted(set(obj) - set(DATA_KEYS) - set(_OTHER_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected some of "
                         f"{[*DATA_KEYS, *_OTHER_KEYS]}")
    train = dict(obj["train"])
    unknown = sorted(set(train) - set(TrainConfig._fields))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} in 'train'; expected some of "
                         f"{list(TrainConfig._fields)}")
    for k in _TUPLE_FIELDS:
        if isinstance(train.get(k), list):
            train[k] = tuple(train[k])
    return train, {k: obj[k] for k in DATA_KEYS if k in obj}
