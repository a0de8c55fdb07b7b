"""Circle in/out (MATH.md §8): LySep against gradient descent as the network deepens.

    python examples/circle.py [--depths 3 9 19] [--seed 0]

Prints the final training loss and accuracy of both solvers for each depth (hidden tanh
layers of width 20, 3000 training samples, PyTorch's default initialisation).
"""
import argparse
import time
import warnings

from lysep import ConvergenceWarning, FNNClassifier
from lysep.datasets import circle


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[3, 9, 19])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    X, y = circle(3000, random_state=args.seed)
    X_test, y_test = circle(1000, random_state=args.seed + 1000)
    warnings.simplefilter("ignore", ConvergenceWarning)
    print(f"{'depth':>5} {'solver':>6} {'train CE':>9} {'train acc':>9} {'test acc':>9} {'time':>7}")
    for depth in args.depths:
        for solver, budget in (("lysep", 300), ("gd", 3000)):
            t0 = time.perf_counter()
            clf = FNNClassifier((20,) * depth, solver=solver, max_iter=budget,
                                learning_rate_init=0.1, random_state=args.seed).fit(X, y)
            print(f"{depth:5d} {solver:>6} {clf.loss_curve_[-1]:9.4f} "
                  f"{clf.accuracy_curve_[-1]:9.4f} {clf.score(X_test, y_test):9.4f} "
                  f"{time.perf_counter() - t0:6.1f}s")


if __name__ == "__main__":
    main()
