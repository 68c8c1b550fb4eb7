"""The command line: `fnn train`, `eval`, `predict`, `check` and `sweep` (also
`python -m fnn ...`).

    fnn                          train the notebook's 784-64-10 net on the shipped MNIST
    fnn train --hidden 256,128 --optimizer nesterov --schedule cosine --out runs/wide
    fnn train --resume runs/wide --epochs 20
    fnn train --config runs/wide/config.json --seed 1 --out runs/wide-seed1
    fnn eval runs/wide [--split test]          loss, accuracy and a confusion matrix
    fnn predict runs/wide digit.png [--json]   class and probability per image file
    fnn check --sizes 256,128,64,32,16,8,4 --batch 1 --mode full
    fnn sweep --grid hidden=64,256x128 --grid lr=0.05,0.1 --seeds 0-4 --jobs 2 --out runs/s

Errors in the options or the data print one line, `fnn: error: ...`, and exit with 2;
a diverged run exits with 1 and Ctrl-C with 130, after saving a resumable checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np

from . import __version__
from .activations import ACTIVATIONS
from .backends import BACKENDS, get_backend
from .batching import MAX_EXAMPLES
from .checkpoint import (
    atomic_write,
    best_checkpoint_callback,
    checkpoint_callback,
    read_checkpoint,
    save_checkpoint,
)
from .hyperparams import HYPERPARAMS, INT_MAX, Flag, Int, Real, arg_type
from .losses import LOSS_FUNCTIONS
from .metrics_log import metrics_csv_callback
from .monitor import MONITORS, best_eval
from .params import MAX_PARAMETERS
from .run_config import DATA_KEYS, config_json, read_run_config
from .runs import (
    CHECKPOINT,
    DATA_DEFAULTS,
    checkpoint_path,
    class_targets,
    evaluate_saved,
    load_run_data,
    load_saved_run,
    predict_files,
    run_options,
)
from .scaling import SCALES, apply_scaling, fit_scaling, range_warning
from .train import (
    OPTIMIZERS,
    RESUMABLE_CHANGES,
    SCHEDULES,
    Event,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    TrainState,
    check_config,
    fit,
    on_events,
    validation_split,
)
from .validate import shown

__all__ = ["main"]

BEST = "best.npz"
METRICS = "metrics.csv"
HISTORY = "history.json"
CONFIG = "config.json"
PLOT = "training.png"
DEFAULT_OUT = "runs/train"
EXIT_INTERRUPTED = 130
COMPILING = "fnn: compiling fnn's kernels (first run only; cached after)..."


class _UsageError(Exception):
    """A bad option; main prints it as one line and exits with 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


# ---------------------------------------------------------------- option types
def _int_at_least(minimum: int, maximum: int = INT_MAX) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected an int <= {maximum}, got "
                                             f"{shown(value)}")
        return value

    return parse


def _widths(text: str) -> tuple[int, ...]:
    """'64' -> (64,), '256,128' -> (256, 128), '' or 'none' -> () (no hidden layer)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated widths such as 64 or 256,128, got {text!r}"
        ) from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"expected positive widths, got {text!r}")
    return widths


def _scale(text: str) -> str | float:
    if text in SCALES:
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"expected {' or '.join(SCALES)} or the data's largest stored value (a "
            f"positive number such as 16), got {text!r}")
    return value


def _parser() -> _Parser:
    parser = _Parser(
        prog="fnn",
        description="Functional neural networks in NumPy: train an MLP on MNIST, evaluate "
        "a saved run or predict image files with it, or check backprop against finite "
        "differences. With no command: fnn train.",
    )
    parser.add_argument("--version", action="version", version=f"fnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{train,eval,predict,check,sweep}")

    train = commands.add_parser(
        "train",
        help="train an MLP (default: the notebook's 784-64-10 on the shipped MNIST)",
        description="Train an MLP with minibatch gradient descent; write the checkpoint "
        f"({CHECKPOINT}, and {BEST} with a validation part), {METRICS}, {HISTORY}, "
        f"{CONFIG} and {PLOT} into --out. Ctrl-C saves a resumable checkpoint.",
    )
    # Defaults are None here and filled in later, to tell what a --resume run overrides.
    d = TrainConfig()
    add = train.add_argument
    add("--dataset", default=None,
        help="dataset folder in the Hugging Face hub layout, or a hub id "
        "(default: the MNIST copy in the repository)")
    add("--hidden", type=_widths, default=None, metavar="WIDTHS",
        help="hidden widths, e.g. 64 or 256,128 (default: 64)")
    add("--epochs", type=arg_type("epochs"), default=None, metavar="N", help=f"default: {d.epochs}")
    add("--batch-size", type=arg_type("batch_size"), default=None, metavar="N",
        help=f"default: {d.batch_size}")
    add("--lr", type=arg_type("lr"), default=None, metavar="X", help=f"default: {d.lr}")
    add("--optimizer", choices=OPTIMIZERS, default=None, help=f"default: {d.optimizer}")
    add("--momentum", type=arg_type("momentum"), default=None, metavar="X",
        help=f"for momentum and nesterov (default: {d.momentum})")
    add("--schedule", choices=SCHEDULES, default=None, help=f"default: {d.schedule}")
    add("--decay-rate", type=arg_type("decay_rate"), default=None, metavar="X",
        help=f"step/exp schedules: lr factor per --decay-epochs (default: {d.decay_rate})")
    add("--decay-epochs", type=arg_type("decay_epochs"), default=None, metavar="X",
        help=f"default: {d.decay_epochs}")
    add("--warmup-steps", type=arg_type("warmup_steps"), default=None, metavar="N",
        help="cosine schedule: linear warm-up steps (default: 0)")
    add("--weight-decay", type=arg_type("weight_decay"), default=None, metavar="X",
        help="L2 penalty on the weights (default: 0)")
    add("--seed", type=arg_type("seed"), default=None, metavar="N", help=f"default: {d.seed}")
    add("--backend", choices=BACKENDS, default=None, help="default: fnn.get_backend()")
    add("--dtype", choices=("float32", "float64"), default=None, help=f"default: {d.dtype}")
    add("--out", default=None, help=f"output folder (default: {DEFAULT_OUT}, or the "
        "checkpoint's folder with --resume)")
    add("--resume", default=None, metavar="PATH",
        help=f"continue from a checkpoint file or an output folder holding {CHECKPOINT}")
    add("--eval-every", type=arg_type("eval_every"), default=None, metavar="N",
        help="evaluate on the validation part every N steps (default: 0, at each epoch end)")
    add("--val-fraction", type=arg_type("val_fraction"), default=None, metavar="X",
        help="part of the training split held out (seeded) for validation; 0 trains on all "
        "and evaluates on the test split throughout (default: 1/12)")
    add("--patience", type=_int_at_least(1), default=None, metavar="N",
        help="stop after N evaluations without improving --monitor (default: no early stop)")
    add("--monitor", choices=tuple(MONITORS), default=None,
        help=f"what early stopping and {BEST} follow (default: {d.monitor})")
    add("--activation", type=arg_type("activation"), default=None, metavar="NAMES",
        help=f"hidden activation, or one per hidden layer: {', '.join(ACTIVATIONS)} "
        f"(default: {d.activation})")
    add("--loss", choices=tuple(LOSS_FUNCTIONS), default=None,
        help=f"default: {d.loss}; mse and binary cross-entropy train on one-hot targets")
    add("--dropout", type=arg_type("dropout"), default=None, metavar="RATES",
        help="dropout rate, or one per hidden layer (one more: the input's first) "
        "(default: 0)")
    add("--config", default=None, metavar="PATH",
        help=f"rerun the run a {CONFIG} (or its folder) describes; flags override it")
    add("--image-column", default=None, metavar="NAME", help="default: image")
    add("--label-column", default=None, metavar="NAME", help="default: label")
    add("--train-split", default=None, metavar="NAME", help="default: train")
    add("--test-split", default=None, metavar="NAME", help="default: test")
    add("--scale", type=_scale, default=None, metavar="HOW",
        help="input scaling: pixel (pixels / 255), standardize (per-feature mean and std "
        "of the training part) or the largest stored value, e.g. 16 (default: pixel)")
    add("--checkpoint-every", type=_int_at_least(0), default=0, metavar="N",
        help="also save the checkpoint every N steps (default: 0, at each epoch end)")
    add("--limit", type=_int_at_least(1), default=None, metavar="N",
        help="train on the first N training examples only (quick runs)")
    add("--quiet", action="store_true",
        help="no progress bar or messages; only the final result line")

    ev = commands.add_parser(
        "eval", help="loss, accuracy and confusion matrix of a saved run on a split",
        description="Evaluate a saved run (its folder, or a checkpoint file such as "
        f"RUN/{BEST}) on a split of its dataset: loss, accuracy, and a confusion matrix "
        "as text and PNG.")
    ev.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    ev.add_argument("--dataset", default=None, help="default: the run's dataset")
    ev.add_argument("--split", default=None, help="default: the run's test split")
    ev.add_argument("--png", default=None, metavar="PATH",
                    help="confusion matrix PNG (default: confusion-SPLIT.png beside the "
                    "checkpoint)")
    pr = commands.add_parser(
        "predict", help="class and probability of image files under a saved run",
        description="Predict the class of image files (read with Pillow, converted to "
        "grayscale, of the training images' size: no resizing).")
    pr.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    pr.add_argument("--json", action="store_true", help="one JSON array on stdout")

    check = commands.add_parser(
        "check",
        help="check backprop against finite differences (the notebook's check)",
        description="Run a gradient check of fnn.backprop; exit 0 on pass, 1 on failure.",
    )
    check.add_argument("--sizes", type=_widths, default=(256, 128, 64, 32, 16, 8, 4),
                       metavar="WIDTHS", help="network widths (default: 256,128,64,32,16,8,4)")
    check.add_argument("--batch", type=_int_at_least(1, MAX_EXAMPLES), default=1, metavar="N",
                       help="default: 1")
    check.add_argument("--mode", choices=("full", "directional", "complex-step"),
                       default="full", help="default: full")
    check.add_argument("--seed", type=_int_at_least(0), default=0, metavar="N", help="default: 0")
    _add_sweep_parser(commands)
    return parser


# ---------------------------------------------------------------- train
_OPTION_OF_FIELD = {"sizes": "hidden", "batch_size": "batch_size"}


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields set on the command line."""
    fields = {f: getattr(args, f) for f in TrainConfig._fields
              if getattr(args, f, None) is not None}
    if args.hidden is not None:
        fields["sizes"] = args.hidden  # completed with the data's widths later
    return fields


def _flag(field: str) -> str:
    return "--" + _OPTION_OF_FIELD.get(field, field).replace("_", "-")


def _data_given(args: argparse.Namespace) -> dict[str, Any]:
    """The data options set on the command line."""
    return {k: getattr(args, k) for k in DATA_KEYS if getattr(args, k, None) is not None}


def _load_data(run: dict[str, Any], dtype: str, quiet: bool) -> tuple[Any, tuple[int, int]]:
    if quiet:  # datasets draws its own progress bars when it converts files
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    return load_run_data(run, dtype)


class _Progress:
    """A tqdm bar on stderr: steps, epoch, running training loss, validation accuracy."""

    # Not "step": after each chunk is often enough, and lets fit run compiled chunks.
    events = frozenset({"start", "chunk", "eval", "epoch", "end"})
    every = 0

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bar: Any = None
        self.loss = math.nan
        self.label = "val_acc"

    def __call__(self, event: Event) -> None:
        if event.kind == "start":
            from tqdm import tqdm

            config = event.state().config
            self.epochs = config.epochs
            self.label = "val_acc" if config.val_fraction > 0 else "test_acc"
            self.bar = tqdm(total=event.total_steps, initial=event.step, file=self.stream,
                            unit="step", dynamic_ncols=True, mininterval=0.25,
                            desc=self._desc(event))
            self._postfix(event)
        elif self.bar is None:
            return
        elif event.kind == "chunk":
            # An exponential moving average: one batch's loss is too noisy to read.
            for value in event.losses:
                self.loss = value if math.isnan(self.loss) else 0.98 * self.loss + 0.02 * value
            if event.step // 50 > (event.step - len(event.losses)) // 50:
                self._postfix(event)  # (shown by the update's refresh)
            self.bar.update(event.step - self.bar.n)
        elif event.kind in ("eval", "epoch"):
            self.bar.set_description(self._desc(event), refresh=False)
            self._postfix(event)
        elif event.kind == "end":
            self._postfix(event)
            self.close()

    def _desc(self, event: Event) -> str:
        return f"epoch {min(event.epoch + 1, self.epochs)}/{self.epochs}"

    def _postfix(self, event: Event) -> None:
        post = {}
        if not math.isnan(self.loss):
            post["loss"] = f"{self.loss:.4f}"
        if not math.isnan(event.eval_accuracy):
            post[self.label] = f"{100 * event.eval_accuracy:.2f}%"
        elif not math.isnan(event.eval_loss):
            post[self.label.replace("acc", "loss")] = f"{event.eval_loss:.4g}"
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def _announce_compiling(stream: TextIO) -> Iterator[None]:
    """Print COMPILING on `stream`, once, if numba compiles anything during the block.
    Only a cold cache compiles: a kernel found in numba's cache loads without a
    "numba:compile" event."""
    from numba.core import event

    said: list[bool] = []

    class Listener(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            if not said:
                said.append(True)
                print(COMPILING, file=stream, flush=True)

        def on_end(self, ev: event.Event) -> None:
            pass

    with event.install_listener("numba:compile", Listener()):
        yield


@contextlib.contextmanager
def _warm_up(config: TrainConfig, run: dict[str, Any], stream: TextIO) -> Iterator[None]:
    """Load the Numba kernels the run will use from numba's cache, or compile them (a
    first run; one line on `stream` says so), while the block loads the data: a
    one-epoch fit on a few rows of zeros of the config's dtype, with the config's
    hidden widths (the types of the arrays decide what compiles, not their sizes).

    It runs in a thread, started as the block starts and joined as it ends: about half
    of numba's compile is LLVM, in llvmlite's C code without the GIL, so the data loads
    meanwhile (a first `fnn train` took about 1 s less). A thread also escapes fit's
    Ctrl-C deferral: in the main thread fit would hold Ctrl-C until the kernel call
    returns, for the whole of a first compile; here the main thread only waits, and
    Ctrl-C stops it at once. If the block raises, the thread is not waited for.

    Images that need decoding (`_decode_aside`) are decoded in a forked process meanwhile,
    waited for before the block, which then loads them from the array cache."""
    if (config.backend or get_backend()) != "numba":
        yield
        return
    decoder = _decode_aside(run)  # (forked before the thread starts: see there)
    d_in, n_classes = config.sizes[0] or 16, config.sizes[-1] or 2
    n = 2 * config.batch_size
    labels = np.arange(n, dtype=np.int64) % n_classes
    x = np.zeros((n, d_in), dtype=config.dtype)
    y = class_targets(labels, config.loss, n_classes, config.dtype)
    small = config._replace(sizes=(d_in, *config.sizes[1:-1], n_classes), epochs=1,
                            val_fraction=0.0, patience=None, eval_every=0)

    def warm() -> None:
        with contextlib.suppress(Exception):  # a failing config fails in the run itself
            fit(None, (x, y, x[:8], y[:8]), small)

    with _announce_compiling(stream):
        thread = threading.Thread(target=warm, name="fnn-warm-up", daemon=True)
        thread.start()
        if decoder is not None:
            decoder.join()
        yield
        thread.join()


def _decode_aside(run: dict[str, Any]) -> Any:
    """A forked process, started, that decodes the run's images into fnn's array cache,
    when the load would decode them (`fnn.data.needs_decoding`: a first run) and forking
    is safe (this process runs no other thread, so no lock is held in the child); else
    None.

    Why: Pillow's PNG reader is mostly Python, so decoding in this process holds the GIL
    that numba's compiler needs. Measured A/B (2026-12-06, 22:50 UTC), the first `fnn
    train` with nothing cached took 15.1-15.9 s with the decode in this process and
    12.6-12.7 s with it aside (12.2-12.4 s when the images had been decoded before). The
    child runs at a lower priority, so that the compile thread keeps a core (12.6-14.1 s
    without). It reports nothing (its output goes to os.devnull): if it fails, the
    parent's own load decodes (and raises what it raises). It ignores Ctrl-C (the
    parent's to handle); the parent's exit terminates it, and a termination runs the
    array cache's cleanup (an entry is written whole or not at all)."""
    import multiprocessing

    from .data import needs_decoding

    if threading.active_count() != 1 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    if not needs_decoding(run["dataset"], image_column=run["image_column"],
                          label_column=run["label_column"], train_split=run["train_split"],
                          test_split=run["test_split"]):
        return None
    process = multiprocessing.get_context("fork").Process(
        target=_decode, args=(run,), name="fnn-decode", daemon=True)
    try:
        process.start()
    except OSError:  # no process to be had (a process limit): this one decodes, as before
        return None
    return process


def _decode(run: dict[str, Any]) -> None:
    """The child of `_decode_aside`."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):  # datasets' progress bars and logs: the parent's load has its own
        os.dup2(devnull, fd)
    with contextlib.suppress(OSError):
        os.nice(10)  # the parent's compile comes first: its thread keeps a core
    with contextlib.suppress(BaseException):
        load_run_data(run, "float32")


def _import_plotting() -> None:
    """Import what `_write_outputs` draws with, if it is installed: matplotlib's Agg
    canvas took 0.5 s to import, which a first run spends while its kernels compile."""
    if importlib.util.find_spec("matplotlib") is not None:
        for module in ("matplotlib.backends.backend_agg", "matplotlib.figure"):
            importlib.import_module(module)


def _json_history(state: TrainState) -> dict[str, Any]:
    """The History's arrays, and the test metrics (null until the run has finished)."""
    out: dict[str, Any] = {field: a.tolist() for field, a in state.history._asdict().items()}
    for name in ("test_loss", "test_accuracy"):
        value = getattr(state, name)
        out[name] = None if math.isnan(value) else value
    return out


def _write_json(path: Path, obj: dict[str, Any], *, one_line_values: bool = False) -> None:
    """Write obj as JSON, atomically; one_line_values puts each top-level value on one
    line (for history.json: readable, and a tenth of the size of indent=1)."""
    if one_line_values:
        items = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items())
        text = "{\n" + items + "\n}\n"
    else:
        text = json.dumps(obj, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _write_outputs(out: Path, state: TrainState, say: Callable[[str], None]) -> None:
    """history.json and the plot."""
    _write_json(out / HISTORY, _json_history(state), one_line_values=True)
    if importlib.util.find_spec("matplotlib") is None:
        say(f"fnn: matplotlib is not installed, so no {PLOT} (pip install 'fnn[data]')")
        return
    from .plot import plot_history

    c = state.config
    plot_history(state.history, out / PLOT,
                 title=f"{'-'.join(map(str, c.sizes))}, {c.optimizer}, lr {c.lr:g}, "
                 f"{c.schedule}, seed {c.seed}",
                 split="validation" if c.val_fraction > 0 else "test")


def _recipe(args: argparse.Namespace, given: dict[str, Any]
            ) -> tuple[TrainConfig, dict[str, Any], TrainState | None, dict[str, Any], Path]:
    """(config without the data's widths, data options, state to resume or None, the
    resumed checkpoint's extra metadata checked (`run_options`), output folder) from the
    flags, --config and --resume."""
    data_given = _data_given(args)
    if args.resume is not None:
        if args.config is not None:
            raise _UsageError("--config and --resume exclude each other (a resumed run "
                              "keeps its checkpoint's config)")
        ckpt_path = checkpoint_path(args.resume)
        resume, extra = read_checkpoint(ckpt_path)
        fixed = sorted(f for f in given if f not in RESUMABLE_CHANGES)
        if fixed:
            raise _UsageError(
                f"{', '.join(map(_flag, fixed))} cannot change when resuming (the checkpoint "
                f"fixes them); only {', '.join(map(_flag, RESUMABLE_CHANGES))} can"
            )
        extra = run_options(extra, ckpt_path, resume.config.sizes[0])
        run = {k: extra[k] for k in DATA_DEFAULTS}
        for k, v in data_given.items():
            if k != "dataset" and v != run[k]:
                raise _UsageError(f"{_flag(k)} cannot change when resuming (the run used "
                                  f"{run[k]})")
        run["dataset"] = data_given.get("dataset", run["dataset"])
        out = Path(args.out) if args.out is not None else ckpt_path.parent
        return resume.config._replace(**given), run, resume, extra, out
    config, run = TrainConfig(), dict(DATA_DEFAULTS)
    if args.config is not None:
        fields, data_opts = read_run_config(args.config)
        if "sizes" in fields and "sizes" not in given:
            given = {**given, "sizes": tuple(fields["sizes"])[1:-1]}
        config = config._replace(**{k: v for k, v in fields.items() if k != "sizes"})
        run.update(data_opts)
    run.update(data_given)
    config = config._replace(**{k: v for k, v in given.items() if k != "sizes"})
    config = config._replace(sizes=(0, *given.get("sizes", TrainConfig().sizes[1:-1]), 0))
    return config, run, None, {}, Path(args.out if args.out is not None else DEFAULT_OUT)


def _train(args: argparse.Namespace, stderr: TextIO) -> int:
    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=stderr)

    from .provenance import provenance

    config, run, resume, extra, out = _recipe(args, _given(args))
    with _warm_up(config, run, stderr) if not args.quiet else contextlib.nullcontext():
        data, shape = _load_data(run, config.dtype, args.quiet)
        _import_plotting()  # (here, while the kernels may still compile)
    n_classes = int(max(data.y_train.max(initial=0), data.y_test.max(initial=0))) + 1
    if resume is None:
        config = config._replace(sizes=(data.x_train.shape[1], *config.sizes[1:-1], n_classes))
    config = check_config(config)
    if config.patience and config.val_fraction == 0:
        raise _UsageError("--patience: early stopping needs a validation part, got "
                          "--val-fraction 0 (it would pick the run on the test split)")
    train_part: Any = slice(None)
    if config.val_fraction > 0:  # (checked here too, before anything is written)
        try:
            train_part = validation_split(len(data.x_train), config.val_fraction,
                                          config.seed)[0]
        except ValueError as e:
            raise ValueError(f"config.{e}") from None
    if resume is not None and extra["scaling"] is not None:
        scaling = extra["scaling"]
    else:
        scaling = fit_scaling(run["scale"], data.x_train, train_part)
    warning = range_warning(data.x_train, run["scale"])
    if warning:
        print(f"fnn: warning: {warning}", file=stderr)
    x_train, x_test = apply_scaling(data.x_train, scaling), apply_scaling(data.x_test, scaling)
    y_train = class_targets(data.y_train, config.loss, config.sizes[-1], config.dtype)
    y_test = class_targets(data.y_test, config.loss, config.sizes[-1], config.dtype)

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: expected a folder, got {out} (a file)")
    for name in (CHECKPOINT, BEST, METRICS, HISTORY, CONFIG, PLOT):
        if (out / name).exists() and not (out / name).is_file():  # a FIFO would block
            raise ValueError(f"--out: expected a folder whose {name} is a regular file (or "
                             f"absent), got {out / name} (not a regular file)")
    origin = provenance()
    meta = {**run, "image_shape": list(shape), "scaling": scaling, "provenance": origin}
    ckpt = out / CHECKPOINT
    before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    prepared: list[bool] = []

    def prepare() -> None:
        """Ready --out for this run, once: at fit's "start", after fit has checked the
        config and the data, so that a run refused by them leaves the folder as it was."""
        if prepared:
            return
        prepared.append(True)
        out.mkdir(parents=True, exist_ok=True)
        if resume is None and before is not None:
            say(f"fnn: starting a new run in {out}; its old {CHECKPOINT} will be overwritten")
        if resume is None:
            (out / BEST).unlink(missing_ok=True)  # an old run's best is not this run's
        _write_json(out / CONFIG, config_json(config, run, origin))

    progress = None if args.quiet else _Progress(stderr)
    # prepare first: the other callbacks write into the folder from "start" on.
    callbacks = [on_events("start")(lambda event: prepare()),
                 checkpoint_callback(ckpt, every=args.checkpoint_every, extra=meta),
                 metrics_csv_callback(out / METRICS)]
    if config.val_fraction > 0:
        callbacks.append(best_checkpoint_callback(out / BEST, monitor=config.monitor,
                                                  extra=meta))
    if progress is not None:
        callbacks.append(progress)
    stop: TrainingInterrupted | TrainingDiverged | None = None
    try:
        state = fit(None, (x_train, y_train, x_test, y_test), config, resume=resume,
                    callbacks=callbacks)
    except (TrainingInterrupted, TrainingDiverged) as exc:
        stop, state = exc, exc.state
    finally:
        if progress is not None:
            progress.close()
    prepare()  # (done at "start" unless fit stopped before it)
    if isinstance(stop, TrainingDiverged):
        _write_json(out / HISTORY, _json_history(state), one_line_values=True)
        saved = ckpt.exists() and (resume is not None or ckpt.stat().st_mtime_ns != before)
        kept = f"the last good checkpoint is {ckpt}" if saved else "no checkpoint was saved"
        print(f"fnn: error: {stop} ({kept})", file=stderr)
        return 1
    if isinstance(stop, TrainingInterrupted):
        save_checkpoint(ckpt, state, extra=meta)
    _write_outputs(out, state, say)
    if stop is not None:
        print(f"fnn: interrupted after step {state.step}; checkpoint saved to {ckpt}. "
              f"Resume with: fnn train --resume {out}", file=stderr)
        return EXIT_INTERRUPTED
    print(_summary(state, len(y_test), out))
    return 0


def _summary(state: TrainState, n_test: int, out: Path) -> str:
    """The final line: the test result, measured once, and what the run was."""
    c, h = state.config, state.history
    if math.isnan(state.test_accuracy):
        result = f"final test loss: {state.test_loss:.4g}"
    else:
        result = f"final test accuracy: {100 * state.test_accuracy:.2f}%"
    text = (f"{result} on {_count(n_test, 'example')} ({'-'.join(map(str, c.sizes))}, "
            f"{_count(state.epoch, 'epoch')}, {_count(state.step, 'step')}, "
            f"{state.elapsed:.1f} s)")
    if c.val_fraction > 0 and h.eval_step.size:
        i = best_eval(getattr(h, MONITORS[c.monitor][0]).tolist(), c.monitor) or 0
        best = (f"{h.eval_loss[i]:.4g}" if c.monitor == "val_loss"
                else f"{100 * h.eval_accuracy[i]:.2f}%")
        text += f"; best {c.monitor} {best} at step {h.eval_step[i]} ({BEST})"
        if state.stopped_early:
            text += f", stopped early: {_count(c.patience, 'evaluation')} without improvement"
    return f"{text}; outputs in {out}"


def _count(n: int, noun: str) -> str:
    """"1 epoch", "2 epochs": the plural where English wants it."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# ---------------------------------------------------------------- eval and predict
def _eval(args: argparse.Namespace, stderr: TextIO) -> int:
    png_given = Path(args.png) if args.png is not None else None
    if png_given is not None and (
            (png_given.exists() and not png_given.is_file()) or not png_given.parent.is_dir()):
        # (before the evaluation: a FIFO would block the write, a folder fail it)
        raise ValueError(f"--png: expected a file to write in an existing folder, got "
                         f"{png_given}")
    run = load_saved_run(args.run)
    r = evaluate_saved(run, split=args.split, dataset=args.dataset)
    acc = "" if math.isnan(r.accuracy) else f", accuracy {100 * r.accuracy:.2f}%"
    print(f"{r.split}: loss {r.loss:.4f}{acc} on {_count(r.n, 'example')} "
          f"({run.checkpoint}, step {run.state.step})")
    if r.matrix is None:
        return 0
    from .confusion import format_confusion

    print(format_confusion(r.matrix))
    png = (Path(args.png) if args.png is not None
           else run.checkpoint.parent / f"confusion-{r.split}.png")
    if importlib.util.find_spec("matplotlib") is None:
        print(f"fnn: matplotlib is not installed, so no {png}", file=stderr)
        return 0
    from .plot import plot_confusion

    plot_confusion(r.matrix, png, title=f"{r.split}: {100 * r.accuracy:.2f}% "
                   f"({run.checkpoint.name}, step {run.state.step})")
    print(f"confusion matrix: {png}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    results = predict_files(load_saved_run(args.run), args.images)
    if args.json:
        print(json.dumps(results))
        return 0
    for r in results:
        if "class" in r:
            print(f"{r['file']}: {r['class']} ({100 * r['probability']:.1f}%)")
        else:
            values = r.get("probabilities", r.get("output"))
            print(f"{r['file']}: " + " ".join(f"{v:.4g}" for v in values))
    return 0


# ---------------------------------------------------------------- check
def _check(args: argparse.Namespace) -> int:
    from .gradcheck import check_gradients, notebook_problem

    # The inputs, (batch, sizes[0]) floats, at most as many numbers as the largest network.
    if args.sizes and args.batch * args.sizes[0] > MAX_PARAMETERS:
        raise _UsageError(f"--batch: expected at most {MAX_PARAMETERS // args.sizes[0]} "
                          f"examples of {args.sizes[0]} inputs (fnn.params.MAX_PARAMETERS="
                          f"{MAX_PARAMETERS} numbers), got {args.batch}")
    params, x, y = notebook_problem(seed=args.seed, sizes=list(args.sizes), batch=args.batch)
    report = check_gradients(params, x, y, mode=args.mode, seed=args.seed)
    print(str(report))
    return 0 if report.ok else 1


# ---------------------------------------------------------------- sweep
def _add_sweep_parser(commands: Any) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="train a grid of configs over several seeds at once (this machine's cores, "
        "or a Dask cluster)",
        description="Train every combination of the --grid values with every seed, each "
        "run in its own folder under --out; write runs.csv, summary.csv, summary.md and "
        "sweep.png. Finished runs are skipped when the command is run again, so an "
        "interrupted sweep continues where it stopped. Keys: hidden (widths such as 64 or "
        "256x128, none for no hidden layer) or any TrainConfig field (lr, batch_size, "
        "optimizer, ...).",
    )
    add = sweep.add_argument
    add("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
        help="values to sweep, e.g. hidden=64,256x128 or lr=0.05,0.1 (repeat for more keys)")
    add("--set", action="append", default=[], metavar="KEY=VALUE",
        help="a fixed field of every run, e.g. epochs=20 (repeatable)")
    add("--seeds", default="0-4", metavar="SEEDS", help="e.g. 0-4 or 0,1,2 (default: 0-4)")
    add("--jobs", type=_int_at_least(1), default=None, metavar="N",
        help="runs at a time (processes, or Dask workers with --dask local; "
        "default: the number of cores)")
    add("--out", default="runs/sweep", help="output folder (default: runs/sweep)")
    add("--dask", default=None, metavar="ADDRESS",
        help="run on the Dask scheduler at ADDRESS (tcp://host:8786), or 'local' for a "
        "LocalCluster of --jobs processes (pip install 'fnn[dask]')")
    add("--dataset", default=None, help="as for fnn train (default: the shipped MNIST)")
    add("--limit", type=_int_at_least(1), default=None, metavar="N",
        help="train on the first N training examples only (quick runs)")
    add("--val-fraction", type=arg_type("val_fraction"), default=None, metavar="X",
        help="share of the training examples each run holds out for validation, as "
        "--set val_fraction=X (default: TrainConfig's 1/12)")
    add("--checkpoint-every", type=_int_at_least(0), default=None, metavar="N",
        help="also checkpoint each run every N steps (0: each epoch end) so that an "
        "interrupted run resumes mid-way (default: a checkpoint when a run ends)")
    add("--quiet", action="store_true", help="no line per finished run")


def _sweep_value(field: str, text: str) -> Any:
    """A --grid/--set value as the TrainConfig field wants it; hidden widths as 256x128."""
    if field == "hidden":
        return _widths(text.replace("x", ","))
    if field == "sizes":
        return (*_widths(text.replace("x", ",")),)
    spec = HYPERPARAMS[field]
    if isinstance(spec, Flag):
        if text.lower() not in ("true", "false", "1", "0"):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(spec, (Int, Real)):  # parsed only: TrainConfig checks the bounds,
        try:                           # naming the grid point
            return spec.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _sweep_pairs(options: Sequence[str], flag: str, many: bool) -> dict[str, Any]:
    fields = ("hidden", *TrainConfig._fields)
    out: dict[str, Any] = {}
    for option in options:
        key, sep, values = option.partition("=")
        field = key.strip().replace("-", "_")
        if not sep or not values:
            raise _UsageError(f"{flag}: expected KEY=VALUE{',...' if many else ''}, "
                              f"got {option!r}")
        if field not in fields or field == "seed":
            hint = " (use --seeds)" if field == "seed" else f"; expected one of {fields}"
            raise _UsageError(f"{flag}: unknown key {key!r}{hint}")
        if field in out:
            raise _UsageError(f"{flag}: key {key!r} given twice")
        try:
            parsed = [_sweep_value(field, v) for v in (values.split(",") if many else [values])]
        except argparse.ArgumentTypeError as exc:
            raise _UsageError(f"{flag} {key}: {exc}") from None
        out[field] = parsed if many else parsed[0]
    return out


def _sweep(args: argparse.Namespace, stderr: TextIO) -> int:
    from .sweep import RunResult, dask_executor, parse_seeds, sweep

    grid = _sweep_pairs(args.grid, "--grid", True)
    fixed = _sweep_pairs(args.set, "--set", False)
    if not grid:
        raise _UsageError("--grid: expected at least one KEY=V1,V2,... (e.g. lr=0.05,0.1)")
    if args.val_fraction is not None:
        fixed.setdefault("val_fraction", args.val_fraction)
    clash = sorted(set(grid) & set(fixed))
    if clash:
        raise _UsageError(f"--set {clash[0]}: also given in --grid")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        raise _UsageError(f"--{exc}") from None
    if not seeds:
        raise _UsageError(f"--seeds: expected at least one seed, got {args.seeds!r}")
    dtype = fixed.get("dtype", TrainConfig().dtype)
    data, _ = _load_data({**DATA_DEFAULTS, "dataset": args.dataset, "limit": args.limit},
                         dtype, True)
    hidden = fixed.pop("hidden", TrainConfig().sizes[1:-1])
    n_classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    base = TrainConfig(sizes=(data.x_train.shape[1], *hidden, n_classes))._replace(**fixed)
    del data  # the sweep loads it where it needs it (from the array cache)
    total = len(seeds) * math.prod(len(v) for v in grid.values())
    done = [0]

    def report(run: RunResult) -> None:
        done[0] += 1
        if args.quiet:
            return
        if run.status == "failed":
            what = f"failed: {run.error}"
        else:
            what = (f"{run.status}, val {100 * run.val_accuracy:.2f} %, test "
                    f"{100 * run.test_accuracy:.2f} % ({run.seconds:.1f} s)")
        print(f"[{done[0]}/{total}] {run.name}: {what}", file=stderr, flush=True)

    options = {"out": args.out, "data": args.dataset, "limit": args.limit, "on_run": report,
               "jobs": args.jobs, "checkpoint_every": args.checkpoint_every}
    try:
        if args.dask is None:
            result = sweep(base, grid, seeds, **options)
        else:
            with dask_executor(args.dask, n_workers=args.jobs or 2) as executor:
                result = sweep(base, grid, seeds, executor=executor, **options)
    except KeyboardInterrupt:
        print(f"fnn: sweep interrupted; finished runs are kept in {args.out}. Continue "
              "with the same command.", file=stderr)
        return EXIT_INTERRUPTED
    print((result.out / "summary.md").read_text(), end="")
    failed = sum(r.status == "failed" for r in result.runs)
    print(f"{_count(len(result.runs), 'run')}, {failed} failed; outputs in {result.out}")
    return 1 if failed else 0


# ---------------------------------------------------------------- entry point
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    # Name the command-line option rather than the config field it feeds.
    return re.sub(r"^config\.(\w+)", lambda m: _flag(m[1]), text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failed, 2 usage, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["train", *argv]  # the default command
    stderr = sys.stderr
    try:
        args = _parser().parse_args(argv)
        if args.command == "check":
            return _check(args)
        if args.command == "sweep":
            return _sweep(args, stderr)
        if args.command == "eval":
            return _eval(args, stderr)
        if args.command == "predict":
            return _predict(args)
        return _train(args, stderr)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except _UsageError as exc:
        print(f"fnn: error: {exc} (see fnn {argv[0]} --help)", file=stderr)
        return 2
    except BrokenPipeError:  # the reader went away (fnn check | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush is silent
        return 1
    except (ValueError, TypeError, OSError, ImportError) as exc:  # CheckpointError too
        print(f"fnn: error: {_one_line(exc)}", file=stderr)
        return 2
    except KeyboardInterrupt:
        print("fnn: interrupted", file=stderr)
        return EXIT_INTERRUPTED
    except MemoryError:  # within fnn's bounds, but more than this machine has
        print("fnn: error: out of memory (try smaller sizes, batches or --limit)",
              file=stderr)
        return 1
