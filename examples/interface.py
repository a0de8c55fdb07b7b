"""Interface tracking (MATH.md §8): learn the phase of an Allen–Cahn solution
u_t = eps^2 Δu + u - u^3 at the four time slices, with LySep and with gradient descent.

    python examples/interface.py [--hidden 20 20 20 20 20] [--seed 0]
"""
import argparse
import warnings

from lysep import ConvergenceWarning, FNNClassifier
from lysep.datasets import INTERFACE_TIMES, allen_cahn_interface


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[20] * 5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    print(f"{'time':>6} {'solver':>6} {'train CE':>9} {'train acc':>9} {'test acc':>9}")
    for t in INTERFACE_TIMES:
        X, y = allen_cahn_interface(t, 3000, random_state=args.seed)
        X_test, y_test = allen_cahn_interface(t, 1000, random_state=args.seed + 1000)
        for solver, budget in (("lysep", 300), ("gd", 3000)):
            clf = FNNClassifier(tuple(args.hidden), solver=solver, max_iter=budget,
                                random_state=args.seed).fit(X, y)
            print(f"{t:6.2f} {solver:>6} {clf.loss_curve_[-1]:9.4f} "
                  f"{clf.accuracy_curve_[-1]:9.4f} {clf.score(X_test, y_test):9.4f}")


if __name__ == "__main__":
    main()
