"""LySep with ridge_fallback="min_norm" (the default) against "closest", on the data,
architectures and seeds of the `lysep reproduce` grids (circle and interface: 300 sweeps,
10 seeds; cnn: the reduced grid, 40 iterations on 3000 Fashion-MNIST images, 2 seeds;
s = 0.01), both settings on the same seeds, in one run.

Run from anywhere with the package installed:
    python docs/results/compare_ridge_fallback.py [--experiment circle|interface|cnn]
        [--seeds N] [--jobs 2]

It prints, per cell, the mean ± std over seeds of the final training CE, the training
and test accuracy and the CPU time per fit, and on how many seeds "closest" ends with
the lower training CE.  This is the evidence for changing the default; the recorded
grids in docs/results were made with "min_norm".
"""
import argparse
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

MODES = ("min_norm", "closest")


def _fit(task):
    experiment, time_, depth, width, seed, mode = task
    from threadpoolctl import threadpool_limits

    from lysep import CNNClassifier, FNNClassifier
    from lysep.experiments import CNN_POOLS, load_data
    if experiment == "cnn":
        X, y, Xt, yt = load_data("cnn", None, 3000, 1000, 0, 1, "fashion-mnist")
        clf = CNNClassifier(conv_channels=(width,) * depth, pool_size=CNN_POOLS[depth],
                            hidden_layer_sizes=(32,), batch_size=1000, refresh_every=10,
                            max_iter=40, penalty_scale=0.01, random_state=seed, tol=0.0,
                            n_iter_no_change=40, ridge_fallback=mode)
    else:
        X, y, Xt, yt = load_data(experiment, time_, 3000, 1000, 0, 1)
        clf = FNNClassifier((width,) * depth, max_iter=300, penalty_scale=0.01,
                            random_state=seed, tol=0.0, n_iter_no_change=300,
                            ridge_fallback=mode)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        t0 = time.process_time()
        clf.fit(X, y)
        cpu = time.process_time() - t0
    return task, (clf.loss_curve_[-1], clf.accuracy_curve_[-1], clf.score(Xt, yt), cpu)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", choices=("circle", "interface", "cnn"), default="circle")
    p.add_argument("--seeds", type=int, default=None, help="default 10 (cnn: 2)")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    from lysep.datasets import INTERFACE_TIMES
    seeds = args.seeds or (2 if args.experiment == "cnn" else 10)
    if args.experiment == "circle":
        cells = [(None, d, 20) for d in (3, 5, 9, 14, 19)]
    elif args.experiment == "interface":
        cells = [(t, d, 20) for t in INTERFACE_TIMES for d in (3, 9, 19)]
    else:                                # conv layers x channels
        cells = [(None, d, c) for d in (1, 2, 3) for c in (4, 8, 16)]
    tasks = [(args.experiment, t, d, w, s, m) for t, d, w in cells for s in range(seeds)
             for m in MODES]
    with ProcessPoolExecutor(args.jobs) as ex:
        results = dict(ex.map(_fit, tasks))
    budget = "40 iterations" if args.experiment == "cnn" else "300 sweeps"
    print(f"{args.experiment}, {seeds} seeds, {budget}: mean ± std over seeds")
    print("| cell | ridge_fallback | training CE | training acc. | test acc. | CPU s/fit "
          "| seeds with lower CE |")
    print("|---|---|---|---|---|---|---|")
    for t, d, w in cells:
        name = f"{d}×{w}" if t is None else f"t = {t:g}, {d}×{w}"
        per_mode = {m: np.array([results[(args.experiment, t, d, w, s, m)]
                                 for s in range(seeds)]) for m in MODES}
        for m in MODES:
            r = per_mode[m]
            other = per_mode[MODES[1 - MODES.index(m)]]
            lower = int(np.sum(r[:, 0] < other[:, 0]))
            print(f"| {name} | {m} | {r[:, 0].mean():.3e} ± {r[:, 0].std(ddof=1):.1e} | "
                  f"{100 * r[:, 1].mean():.2f}% | {100 * r[:, 2].mean():.2f}% | "
                  f"{r[:, 3].mean():.2f} | {lower} of {seeds} |")


if __name__ == "__main__":
    main()
