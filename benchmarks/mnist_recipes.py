"""Reproduce the README's model results on MNIST: `python benchmarks/mnist_recipes.py NAME`.

Each recipe trains on the full training split (60,000 images, val_fraction 0, no
per-epoch evaluation, so nothing is picked on the test set) and evaluates the test split
once at the end; prints one JSON line with the accuracy and wall time.
"""

from __future__ import annotations

import json
import sys
import time

import fnn

RECIPES = {
    # Dropout 0.2 on the input and 0.5 on both hidden layers, SGD momentum 0.9, cosine; on
    # the NumPy (BLAS) backend, as the README's result was measured (on 2026-12-02, when
    # it was the faster one at this dense size; the compiled epoch is now, see Speed).
    "dropout": fnn.TrainConfig(sizes=(784, 1024, 1024, 10), epochs=100, batch_size=128,
                               lr=0.05, optimizer="momentum", schedule="cosine",
                               dropout=(0.2, 0.5, 0.5), backend="numpy"),
    "tanh": fnn.TrainConfig(sizes=(784, 256, 128, 10), activation="tanh", lr=0.05,
                            optimizer="momentum", schedule="cosine"),
    "sigmoid": fnn.TrainConfig(sizes=(784, 256, 128, 10), activation="sigmoid", lr=0.5,
                               optimizer="momentum", schedule="cosine"),
    "gelu": fnn.TrainConfig(sizes=(784, 256, 128, 10), activation="gelu", lr=0.05,
                            optimizer="momentum", schedule="cosine"),
}


def main(name: str) -> None:
    cfg = RECIPES[name]
    data = fnn.load_mnist()
    t0 = time.perf_counter()
    state = fnn.fit(None, (data.x_train, data.y_train), cfg._replace(val_fraction=0.0))
    seconds = time.perf_counter() - t0
    loss, acc = fnn.evaluate(state.params, data.x_test, data.y_test, activation=cfg.activation)
    print(json.dumps({"recipe": name, "config": cfg._asdict(), "test_accuracy": acc,
                      "test_loss": loss, "train_seconds": round(seconds, 1)}))


if __name__ == "__main__":
    for arg in sys.argv[1:] or list(RECIPES):
        main(arg)
