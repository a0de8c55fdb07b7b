"""(d) Wall time to 99% training accuracy on the circle (9 hidden tanh layers of width 20,
3000 samples, float64, seed 0 for every method): LySep (FNNClassifier solver="lysep"),
full-batch GD (solver="gd", learning rate from a small grid) and full-batch PyTorch Adam
(learning rate from {1e-3, 3e-3, 1e-2, 3e-2}), all from the same initial values.

The clock starts before ``fit`` (so it includes the LySep state's set-up) and stops at
the first iteration whose training accuracy of the true network is >= 99%: for lysep
and gd through ``FNNClassifier(callback=...)`` (the accuracy is the estimator's own,
computed every iteration), for Adam from the logits of the forward pass the step
computes anyway.  A run that has not reached the target within the budget is reported
as "not reached" with its final accuracy.  The chosen learning rate of a grid is the one
reaching 99% first (or, if none does, the one with the best final accuracy); the time of
the other grid points is not charged to it.  These are sequential runs, not interleaved.

Also: float32 vs float64 training accuracy of the same LySep fit after a fixed number of
sweeps (FNNClassifier(dtype=...)).
"""
import time
import warnings

import numpy as np

from ._common import import_torch

TARGET = 0.99


def _fnn_run(solver, hidden, X, y, budget, threads, dtype=np.float64, lr=None, max_iter=10**7,
             stop_at_target=True):
    from lysep import FNNClassifier
    state = {"hit": None, "iters": 0, "acc": 0.0}
    t0 = time.perf_counter()

    def cb(rec):
        state["iters"] = rec["iteration"]
        state["acc"] = rec["accuracy"]
        el = time.perf_counter() - t0
        if rec["accuracy"] >= TARGET and state["hit"] is None:
            state["hit"] = (el, rec["iteration"])
            return stop_at_target
        return el > budget

    kw = dict(solver=solver, max_iter=max_iter, random_state=0, n_iter_no_change=10**9,
              callback=cb, n_threads=threads, dtype=dtype)
    if lr is not None:
        kw["learning_rate_init"] = lr
    clf = FNNClassifier(hidden, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(X, y)
    return {"solver": solver, "lr": lr, "reached": state["hit"] is not None,
            "seconds": state["hit"][0] if state["hit"] else None,
            "iterations": state["hit"][1] if state["hit"] and stop_at_target else state["iters"],
            "iterations_to_target": state["hit"][1] if state["hit"] else None,
            "final_accuracy": clf.accuracy_curve_[-1], "final_loss": clf.loss_curve_[-1],
            "elapsed": time.perf_counter() - t0,
            "warnings": sorted({type(w.message).__name__ + ": " + str(w.message)[:160] for w in caught})}


def _adam_run(hidden, X, y, budget, lr):
    torch = import_torch()
    from lysep._fnn import init_parameters
    from .gd_torch import torch_mlp
    t0 = time.perf_counter()
    sizes = (X.shape[1], *hidden, 2)
    W, b = init_parameters(sizes, np.random.default_rng(0), np.float64)
    model = torch_mlp(W, b, np.float64)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    F = torch.nn.functional
    it, hit, acc = 0, None, 0.0
    while True:
        opt.zero_grad(set_to_none=True)
        out = model(Xt)
        acc = float((out.argmax(1) == yt).double().mean())
        if acc >= TARGET:
            hit = (time.perf_counter() - t0, it)
            break
        if time.perf_counter() - t0 > budget:
            break
        loss = F.cross_entropy(out, yt)
        loss.backward()
        opt.step()
        it += 1
    return {"solver": "torch-adam", "lr": lr, "reached": hit is not None,
            "seconds": hit[0] if hit else None, "iterations": hit[1] if hit else it,
            "final_accuracy": acc, "elapsed": time.perf_counter() - t0}


def _choose(runs):
    reached = [r for r in runs if r["reached"]]
    if reached:
        return min(reached, key=lambda r: r["seconds"])
    return max(runs, key=lambda r: r["final_accuracy"])


def time_to_accuracy(budget, gd_grid, adam_grid, threads, log, hidden=(20,) * 9, N=3000):
    from lysep.datasets import circle
    X, y = circle(N, random_state=0)
    res = {"hidden": list(hidden), "N": N, "target": TARGET, "budget_seconds": budget}
    r = _fnn_run("lysep", hidden, X, y, budget, threads)
    log(f"   lysep: reached={r['reached']} {r['seconds']} s, {r['iterations']} sweeps, acc {r['final_accuracy']:.4f}")
    res["lysep"] = r
    gd = []
    for lr in gd_grid:
        r = _fnn_run("gd", hidden, X, y, budget, threads, lr=lr)
        log(f"   gd lr={lr}: reached={r['reached']} {r['seconds']} s, {r['iterations']} it, acc {r['final_accuracy']:.4f}")
        gd.append(r)
    res["gd_grid"] = gd
    res["gd"] = _choose(gd)
    if import_torch() is None:
        res["adam"] = None
    else:
        adam = []
        for lr in adam_grid:
            r = _adam_run(hidden, X, y, budget, lr)
            log(f"   adam lr={lr}: reached={r['reached']} {r['seconds']} s, {r['iterations']} it, acc {r['final_accuracy']:.4f}")
            adam.append(r)
        res["adam_grid"] = adam
        res["adam"] = _choose(adam)
    return res


def dtype_accuracy(sweeps, threads, log, hidden=(20,) * 9, N=3000):
    """Final training accuracy of the same LySep fit in float64 and float32."""
    from lysep.datasets import circle
    X, y = circle(N, random_state=0)
    out = {"hidden": list(hidden), "N": N, "sweeps": sweeps}
    for dt in (np.float64, np.float32):
        r = _fnn_run("lysep", hidden, X, y, budget=float("inf"), threads=threads, dtype=dt,
                     max_iter=sweeps, stop_at_target=False)
        log(f"   {np.dtype(dt).name}: accuracy {r['final_accuracy']:.4f} after {r['iterations']} sweeps, "
            f"{r['elapsed']:.1f}s; 99% first at sweep {r['iterations_to_target']}")
        out[np.dtype(dt).name] = r
    return out
