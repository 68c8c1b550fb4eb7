"""The command line: `fnn train` and `fnn check` (also `python -m fnn ...`).

    fnn                          train the notebook's 784-64-10 net on the shipped MNIST
    fnn train --hidden 256,128 --optimizer nesterov --schedule cosine --out runs/wide
    fnn train --resume runs/wide --epochs 20
    fnn check --sizes 256,128,64,32,16,8,4 --batch 1 --mode full

Errors in the options or the data print one line, `fnn: error: ...`, and exit with 2;
a diverged run exits with 1 and Ctrl-C with 130, after saving a resumable checkpoint.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from . import __version__
from .backends import BACKENDS
from .checkpoint import atomic_write, checkpoint_callback, read_checkpoint, save_checkpoint
from .hyperparams import arg_type
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
)

__all__ = ["main"]

CHECKPOINT = "checkpoint.npz"
HISTORY = "history.json"
CONFIG = "config.json"
PLOT = "training.png"
DEFAULT_OUT = "runs/train"
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """A bad option; main prints it as one line and exits with 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


# ---------------------------------------------------------------- option types
def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {value}")
        return value

    return parse


def _real(lo: float, hi: float = math.inf, lo_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            interval = f"{'(' if lo_open else '['}{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text}")
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


def _parser() -> _Parser:
    parser = _Parser(
        prog="fnn",
        description="Functional neural networks in NumPy: train an MLP on MNIST, or check "
        "backprop against finite differences. With no command: fnn train.",
    )
    parser.add_argument("--version", action="version", version=f"fnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{train,check}")

    train = commands.add_parser(
        "train",
        help="train an MLP (default: the notebook's 784-64-10 on the shipped MNIST)",
        description="Train an MLP with minibatch gradient descent; write the checkpoint, "
        f"{HISTORY}, {CONFIG} and {PLOT} into --out. Ctrl-C saves a resumable checkpoint.",
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
        help="evaluate on the test set every N steps (default: 0, at each epoch end)")
    add("--checkpoint-every", type=_int_at_least(0), default=0, metavar="N",
        help="also save the checkpoint every N steps (default: 0, at each epoch end)")
    add("--limit", type=_int_at_least(1), default=None, metavar="N",
        help="train on the first N training examples only (quick runs)")
    add("--quiet", action="store_true",
        help="no progress bar or messages; only the final result line")

    check = commands.add_parser(
        "check",
        help="check backprop against finite differences (the notebook's check)",
        description="Run a gradient check of fnn.backprop; exit 0 on pass, 1 on failure.",
    )
    check.add_argument("--sizes", type=_widths, default=(256, 128, 64, 32, 16, 8, 4),
                       metavar="WIDTHS", help="network widths (default: 256,128,64,32,16,8,4)")
    check.add_argument("--batch", type=_int_at_least(1), default=1, metavar="N", help="default: 1")
    check.add_argument("--mode", choices=("full", "directional", "complex-step"),
                       default="full", help="default: full")
    check.add_argument("--seed", type=_int_at_least(0), default=0, metavar="N", help="default: 0")
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


def _checkpoint_path(resume: str) -> Path:
    path = Path(resume)
    return path / CHECKPOINT if path.is_dir() else path


def _load_data(dataset: str | None, dtype: str, limit: int | None, quiet: bool) -> Any:
    if quiet:  # datasets draws its own progress bars when it converts files
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from .data import load_mnist

    data = load_mnist(dataset, dtype=dtype)
    if limit is not None:
        data = data._replace(x_train=data.x_train[:limit], y_train=data.y_train[:limit])
    return data


class _Progress:
    """A tqdm bar on stderr: steps, epoch, running training loss, test accuracy."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bar: Any = None
        self.loss = math.nan

    def __call__(self, event: Event) -> None:
        if event.kind == "start":
            from tqdm import tqdm

            epochs = event.state().config.epochs
            self.epochs = epochs
            self.bar = tqdm(total=event.total_steps, initial=event.step, file=self.stream,
                            unit="step", dynamic_ncols=True, mininterval=0.25,
                            desc=self._desc(event))
            self._postfix(event)
        elif self.bar is None:
            return
        elif event.kind == "step":
            # An exponential moving average: one batch's loss is too noisy to read.
            self.loss = (event.loss if math.isnan(self.loss)
                         else 0.98 * self.loss + 0.02 * event.loss)
            self.bar.update(1)
            if event.step % 50 == 0:
                self._postfix(event)
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
            post["test_acc"] = f"{100 * event.eval_accuracy:.2f}%"
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _json_history(state: TrainState) -> dict[str, list]:
    return {field: a.tolist() for field, a in state.history._asdict().items()}


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
                 f"{c.schedule}, seed {c.seed}")


def _train(args: argparse.Namespace, stderr: TextIO) -> int:
    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=stderr)

    given = _given(args)
    resume: TrainState | None = None
    if args.resume is not None:
        ckpt_path = _checkpoint_path(args.resume)
        resume, extra = read_checkpoint(ckpt_path)
        fixed = sorted(f for f in given if f not in RESUMABLE_CHANGES)
        if fixed:
            raise _UsageError(
                f"{', '.join(map(_flag, fixed))} cannot change when resuming (the checkpoint "
                f"fixes them); only {', '.join(map(_flag, RESUMABLE_CHANGES))} can"
            )
        if args.limit is not None and args.limit != extra.get("limit"):
            raise _UsageError(f"--limit cannot change when resuming (the run used "
                              f"{extra.get('limit')})")
        config = resume.config._replace(**given)
        dataset = args.dataset if args.dataset is not None else extra.get("dataset")
        limit = extra.get("limit")
        out = Path(args.out) if args.out is not None else ckpt_path.parent
    else:
        dataset, limit = args.dataset, args.limit
        config = TrainConfig()._replace(**{k: v for k, v in given.items() if k != "sizes"})
        out = Path(args.out if args.out is not None else DEFAULT_OUT)

    data = _load_data(dataset, config.dtype, limit, args.quiet)
    if resume is None:
        hidden = given.get("sizes", TrainConfig().sizes[1:-1])
        n_classes = int(max(data.y_train.max(), data.y_test.max())) + 1
        config = config._replace(sizes=(data.x_train.shape[1], *hidden, n_classes))
    config = check_config(config)
    out.mkdir(parents=True, exist_ok=True)
    run = {"dataset": dataset, "limit": limit}
    ckpt = out / CHECKPOINT
    before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    if resume is None and before is not None:
        say(f"fnn: starting a new run in {out}; its old {CHECKPOINT} will be overwritten")
    _write_json(out / CONFIG, {"train": _config_json(config), **run})

    progress = None if args.quiet else _Progress(stderr)
    callbacks = [checkpoint_callback(ckpt, every=args.checkpoint_every, extra=run)]
    if progress is not None:
        callbacks.append(progress)
    stop: TrainingInterrupted | TrainingDiverged | None = None
    try:
        state = fit(None, data, config, resume=resume, callbacks=callbacks)
    except (TrainingInterrupted, TrainingDiverged) as exc:
        stop, state = exc, exc.state
    finally:
        if progress is not None:
            progress.close()
    if isinstance(stop, TrainingDiverged):
        _write_json(out / HISTORY, _json_history(state), one_line_values=True)
        saved = ckpt.exists() and (resume is not None or ckpt.stat().st_mtime_ns != before)
        kept = f"the last good checkpoint is {ckpt}" if saved else "no checkpoint was saved"
        print(f"fnn: error: {stop} ({kept})", file=stderr)
        return 1
    if isinstance(stop, TrainingInterrupted):
        save_checkpoint(ckpt, state, extra=run)
    _write_outputs(out, state, say)
    if stop is not None:
        print(f"fnn: interrupted after step {state.step}; checkpoint saved to {ckpt}. "
              f"Resume with: fnn train --resume {out}", file=stderr)
        return EXIT_INTERRUPTED
    h = state.history
    widths = "-".join(map(str, state.config.sizes))
    acc = f"{100 * h.eval_accuracy[-1]:.2f}%" if h.eval_accuracy.size else "n/a"
    print(f"final test accuracy: {acc} on {_count(len(data.y_test), 'example')} ({widths}, "
          f"{_count(state.epoch, 'epoch')}, {_count(state.step, 'step')}, "
          f"{state.elapsed:.1f} s); outputs in {out}")
    return 0


def _count(n: int, noun: str) -> str:
    """"1 epoch", "2 epochs": the plural where English wants it."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _config_json(config: TrainConfig) -> dict[str, Any]:
    fields = config._asdict()
    fields["sizes"] = list(fields["sizes"])
    return fields


# ---------------------------------------------------------------- check
def _check(args: argparse.Namespace) -> int:
    from .gradcheck import check_gradients, notebook_problem

    params, x, y = notebook_problem(seed=args.seed, sizes=list(args.sizes), batch=args.batch)
    report = check_gradients(params, x, y, mode=args.mode, seed=args.seed)
    print(str(report))
    return 0 if report.ok else 1


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
