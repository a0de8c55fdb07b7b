"""Why LySep stalls where it does: the true loss, J and J's two parts along a run.

Run from anywhere with the package installed:
    python docs/results/diagnose_lysep.py [--time 0.5] [--depth 3] [--sweeps 300]

For one cell of the interface grid (seed 0, the grid's data) it trains LySep in chunks of
sweeps with warm_start (which resumes Z, step sizes and J exactly) and prints, at each
checkpoint, the true training CE, J = CE(G)/N + penalty, the CE of the surrogate logits G,
the penalty (1/N) sum omega_l ||R_l||^2 and the training accuracy — for several penalty
scales s.  With --layers it also prints, per layer, ||W_l||_F^2, the penalty weight
omega_l and how far W_l moved since the previous checkpoint (||dW_l|| / ||W_l||), and
the same movement for gradient descent (--gd-rate) over ten times the sweeps.  It reads
the estimator's private ``_state`` (diagnosis only).
"""
import argparse
import warnings

import numpy as np

from lysep import ConvergenceWarning, FNNClassifier
from lysep.experiments import load_data


def _chunks(clf, X, y, checkpoints):
    """Fit `clf` (warm_start) up to each checkpoint in turn; yield after each."""
    done = 0
    for stop in checkpoints:
        before = [W.copy() for W in clf.coefs_] if done else None
        clf.set_params(max_iter=stop - done)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        done = stop
        yield stop, before


def _moved(before, after):
    if before is None:
        return "-"
    return " ".join(f"{np.linalg.norm(a - b) / np.linalg.norm(b):.2g}"
                    for b, a in zip(before, after))


def trace(X, y, depth, s, checkpoints):
    clf = FNNClassifier((20,) * depth, solver="lysep", penalty_scale=s, random_state=0,
                        tol=0.0, n_iter_no_change=10**9, warm_start=True)
    rows = []
    for stop, before in _chunks(clf, X, y, checkpoints):
        st = clf._state
        ce_g = st.ce / st.N
        layers = (" ".join(f"{w:.3g}" for w in st.wn),
                  " ".join(f"{o:.3g}" for o in st.omegas()), _moved(before, clf.coefs_))
        rows.append((stop, clf.loss_curve_[-1], st.J, ce_g, st.J - ce_g,
                     clf.accuracy_curve_[-1], layers))
    return rows


def trace_gd(X, y, depth, rate, checkpoints):
    clf = FNNClassifier((20,) * depth, solver="gd", learning_rate_init=rate, random_state=0,
                        tol=0.0, n_iter_no_change=10**9, warm_start=True)
    for stop, before in _chunks(clf, X, y, [10 * c for c in checkpoints]):
        print(f"{stop:6d} {clf.loss_curve_[-1]:9.4f}  ||W_l||^2: "
              + " ".join(f"{np.sum(W * W):.3g}" for W in clf.coefs_)
              + f"  moved: {_moved(before, clf.coefs_)}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="interface", choices=("circle", "interface"))
    p.add_argument("--time", type=float, default=0.5)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--sweeps", type=int, default=300)
    p.add_argument("--scales", default="0.01,0.1,1")
    p.add_argument("--layers", action="store_true",
                   help="per layer: ||W_l||^2, omega_l, relative movement of W_l")
    p.add_argument("--gd-rate", type=float, default=1.0,
                   help="GD's rate for the --layers comparison")
    args = p.parse_args()
    t = None if args.experiment == "circle" else args.time
    X, y, _, _ = load_data(args.experiment, t, 3000, 1000, 0, 1)
    checkpoints = sorted({c for c in (1, 3, 10, 30, 100, 300, 1000, 3000) if c < args.sweeps}
                         | {args.sweeps})
    for s in (float(v) for v in args.scales.split(",")):
        print(f"\n{args.experiment} t={t} {args.depth}x20 seed 0, s = {s:g} "
              f"(bound: CE <= {2.718281828 * max(1, 1 / s):.3g} J)")
        print(f"{'sweep':>6} {'true CE':>9} {'J':>9} {'CE(G)':>9} {'penalty':>9} "
              f"{'CE/J':>6} {'acc':>7}")
        for stop, ce, J, ce_g, pen, acc, layers in trace(X, y, args.depth, s, checkpoints):
            print(f"{stop:6d} {ce:9.4f} {J:9.4f} {ce_g:9.4f} {pen:9.4f} {ce / J:6.1f} "
                  f"{100 * acc:6.2f}%")
            if args.layers:
                print("       ||W_l||^2: {}  omega_l: {}  moved: {}".format(*layers))
    if args.layers:
        print(f"\ngradient descent, rate {args.gd_rate:g}, ten times the iterations")
        print(f"{'step':>6} {'true CE':>9}")
        trace_gd(X, y, args.depth, args.gd_rate, checkpoints)


if __name__ == "__main__":
    main()
