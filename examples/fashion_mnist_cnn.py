"""Fashion-MNIST with a small CNN (MATH.md §5-§6): LySep-CNN against mini-batch gradient
descent, same architecture, initialisation and batch schedule.

    python examples/fashion_mnist_cnn.py [--n-train 5000] [--iterations 100] [--conv 8 8]

Needs the data: `apt-get install dataset-fashion-mnist` (or pass --data-dir with the four
MNIST-format files).
"""
import argparse
import time

import numpy as np

from lysep import CNNClassifier
from lysep.datasets import load_fashion_mnist


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--conv", type=int, nargs="+", default=[8, 8])
    parser.add_argument("--learning-rate", type=float, default=0.3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    X, y, X_test, y_test = load_fashion_mnist(args.data_dir)
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(X), args.n_train, replace=False)
    X, y = X[idx].astype(np.float32), y[idx]
    print(f"{'solver':>6} {'train CE':>9} {'train acc':>9} {'test acc':>9} {'time':>7}")
    for solver in ("lysep", "gd"):
        t0 = time.perf_counter()
        clf = CNNClassifier(conv_channels=tuple(args.conv), hidden_layer_sizes=(32,),
                            solver=solver, batch_size=1000, refresh_every=10,
                            max_iter=args.iterations, learning_rate_init=args.learning_rate,
                            dtype=np.float32, random_state=args.seed).fit(X, y)
        print(f"{solver:>6} {clf.loss_curve_[-1]:9.4f} {clf.accuracy_curve_[-1]:9.4f} "
              f"{clf.score(X_test[:2000], y_test[:2000]):9.4f} {time.perf_counter() - t0:6.1f}s")


if __name__ == "__main__":
    main()
