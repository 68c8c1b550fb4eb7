"""scikit-learn's MLPClassifier against fnn's, on one recipe: wall seconds of `fit`.

    python benchmarks/peers/sklearn_peer.py [--epochs 3] [--rounds 1]

The recipe, the same for both: MNIST 784-64-10 (ReLU), full training split (60,000) as
float32, plain SGD with lr 0.1, batch 64, no momentum, no L2 penalty, shuffled every
epoch, 3 epochs (scikit-learn: ``max_iter=3`` with its stopping rules disabled).
Not the same initial params or batch order (each library draws its own), so the test
accuracies agree only roughly. fnn's compilation is done before the clock starts (a
first fit on a few rows, as the Numba cache would on a second run). Prints one line per
library: seconds (best of --rounds), test accuracy. Not run by pytest; the machine's
load goes straight into the figures, so run it on a quiet machine and say if it was not.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def sklearn_mlp(epochs: int) -> object:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=(64,), activation="relu", solver="sgd", learning_rate_init=0.1,
        learning_rate="constant", batch_size=64, momentum=0.0, nesterovs_momentum=False,
        alpha=0.0, max_iter=epochs, shuffle=True, tol=0.0, n_iter_no_change=epochs + 1,
        early_stopping=False, random_state=0,
    )


def fnn_mlp(epochs: int) -> object:
    from fnn.sklearn import MLPClassifier

    return MLPClassifier(hidden=(64,), epochs=epochs, batch_size=64, lr=0.1,
                         optimizer="sgd", weight_decay=0.0, random_state=0)


def timed_fit(make, x: np.ndarray, y: np.ndarray, rounds: int) -> tuple[float, object]:
    best, model = float("inf"), None
    for _ in range(rounds):
        model = make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's ConvergenceWarning at max_iter
            t = time.perf_counter()
            model.fit(x, y)
            best = min(best, time.perf_counter() - t)
    return best, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    import fnn

    ds = fnn.load_mnist()
    x, y, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    fnn_mlp(1).fit(x[:256], y[:256])  # compile (or load the cache) before timing

    for name, make in (("scikit-learn MLPClassifier", lambda: sklearn_mlp(args.epochs)),
                       ("fnn.sklearn.MLPClassifier", lambda: fnn_mlp(args.epochs))):
        seconds, model = timed_fit(make, x, y, args.rounds)
        acc = float(np.mean(model.predict(x_test) == y_test))
        print(f"{name:28s} {seconds:7.2f} s  test accuracy {100 * acc:.2f}%  "
              f"({args.epochs} epochs, best of {args.rounds})")


if __name__ == "__main__":
    main()
