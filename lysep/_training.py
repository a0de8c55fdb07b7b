"""The training-loop bookkeeping both estimators share: validation split, progress
report, stopping rules and the warnings that end a fit (scikit-learn's semantics).

The numerical work stays in the estimators' loops; this module only decides when to
stop and what to tell the user, so FNNClassifier and CNNClassifier stop for the same
reasons with the same messages.
"""
import math
import warnings

import numpy as np

from .exceptions import ConvergenceWarning, NumericalWarning


def feature_names(X):
    """Column names of a DataFrame-like X when they are all strings (else None)."""
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    if len(names) and all(isinstance(c, str) for c in names):
        return names
    return None


def stratified_split(y, fraction, rng):
    """Indices (train, validation): `fraction` of every class, at least one sample each."""
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(round(fraction * idx.size))) if idx.size > 1 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    train, val = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    if val.size == 0:
        raise ValueError("early_stopping needs at least two samples of some class; "
                         "turn early_stopping off for such small data")
    return train, val


def progress_bar(total, solver):
    """A tqdm bar with the live figures when tqdm is installed (extra lysep[progress]);
    None means: print one line per iteration instead."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=solver, unit="it", leave=True)


def begin_fit(est, X, y, names, continuing, split):
    """What both fits set before training: ``feature_names_in_`` (from `names`, kept by
    a warm start without them), the early-stopping hold-out drawn by ``split(y)`` ->
    (train, validation) indices, ``validation_scores_`` and ``bound_constant_``.
    Returns (X, y) to train on and the hold-out (X, y) or None."""
    if names is not None:
        est.feature_names_in_ = names
    elif hasattr(est, "feature_names_in_") and not continuing:
        del est.feature_names_in_
    validation = None
    est.validation_scores_ = None
    if est.early_stopping:
        train, val = split(y)
        validation = (X[val], y[val])
        X, y = X[train], y[train]
        est.validation_scores_ = []
    est.bound_constant_ = math.e * max(1.0, 1.0 / est.penalty_scale) \
        if est.solver == "lysep" else None
    return X, y, validation


class BatchStream:
    """Successive mini-batches of n samples: epochs of a fresh permutation, each batch
    sorted.  Its state (generator, order, position) is what warm_start continues."""

    def __init__(self, n, size, rng):
        self.n, self.size, self.rng = n, size, rng
        self.order, self.pos, self.last = rng.permutation(n), 0, None

    def next(self):
        """Indices of the next batch (also kept as ``last``)."""
        if self.pos + self.size > self.n:
            self.order = np.concatenate([self.order[self.pos:], self.rng.permutation(self.n)])
            self.pos = 0
        self.last = np.sort(self.order[self.pos:self.pos + self.size])
        self.pos += self.size
        return self.last


class Progress:
    """What ``verbose=True`` shows after each iteration of a callback record: the tqdm
    bar's live loss, J and accuracy, or one printed line when tqdm is missing."""

    def __init__(self, verbose, total, solver):
        self.verbose = verbose
        self.bar = progress_bar(total, solver) if verbose else None

    def update(self, record):
        loss, J, acc = record["loss"], record["surrogate"], record["accuracy"]
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", J=None if J is None else f"{J:.4g}",
                                 acc=f"{acc:.4f}", refresh=False)
            self.bar.update()
        elif self.verbose:
            extra = "" if J is None else f", J = {J:.6f}"
            print(f"Iteration {record['iteration']}, loss = {loss:.6f}{extra}, "
                  f"accuracy = {acc:.4f}, {record['time']:.2f}s")

    def close(self):
        if self.bar is not None:
            self.bar.close()


class StopRule:
    """The stopping rules of scikit-learn's MLP, as FNNClassifier applies them.

    * ``converged``: the objective has not gone below its best value by more than
      ``tol`` for ``n_iter_no_change`` consecutive checks;
    * ``stalled``: no sweep decreased J for ``n_iter_no_change`` consecutive sweeps;
    * early stopping: the validation score has not risen above its best by more than
      ``tol`` for ``n_iter_no_change`` consecutive scores; ``best_params`` holds what
      was passed with the best score.
    """

    def __init__(self, tol, n_iter_no_change, objective, validating):
        self.tol, self.n, self.validating = tol, n_iter_no_change, validating
        self.best, self.stall = objective, 0
        self.stall_zero = 0
        self.best_val, self.stall_val, self.best_params = -np.inf, 0, None

    def after(self, callback, record, *, validated, sweep=None, objective=None):
        """Why training stops after this iteration (None: it goes on), in FNNClassifier's
        order: the callback returned True; else, with a validation set, early stopping
        (only when a score was just `validated`); else no decrease of J by the
        `sweep` (J_before, J); else convergence of `objective` (None: not checked)."""
        if callback is not None and callback(record):
            return "callback"
        if self.validating:
            return "early_stopping" if validated and self.early_stop() else None
        if sweep is not None and self.stalled(*sweep):
            return "stalled"
        if objective is not None and self.converged(objective):
            return "converged"
        return None

    def restore_best(self, estimator):
        """Early stopping: give `estimator` the parameters of the best validation score."""
        if self.best_params is not None:
            estimator.coefs_, estimator.intercepts_ = self.best_params
            estimator.best_validation_score_ = float(self.best_val)

    def validation(self, score, params):
        if score > self.best_val + self.tol:
            self.best_val, self.stall_val, self.best_params = score, 0, params
        else:
            self.stall_val += 1

    def early_stop(self):
        return self.stall_val >= self.n

    def stalled(self, J_before, J):
        self.stall_zero = self.stall_zero + 1 if J >= J_before else 0
        return self.stall_zero >= self.n

    def converged(self, objective):
        if objective < self.best - self.tol:
            self.best, self.stall = objective, 0
            return False
        self.stall += 1
        return self.stall >= self.n


def warn_stop(stop, solver, n_iter, max_iter, n_iter_no_change, stacklevel):
    """The warning a fit ends with: non-finite values or stalled line searches
    (NumericalWarning), or max_iter reached before convergence (ConvergenceWarning).
    `n_iter` is the number of the last finite iteration."""
    stacklevel += 1
    if stop == "non-finite":
        warnings.warn(f"{solver}: the training loss became non-finite at iteration "
                      f"{n_iter + 1}; kept the last finite parameters. "
                      + ("Lower learning_rate_init." if solver == "gd" else
                         "Scale the features or use float64."),
                      NumericalWarning, stacklevel=stacklevel)
    elif stop == "stalled":
        warnings.warn(f"lysep: no block decreased J in {n_iter_no_change} consecutive "
                      "sweeps (line searches found no decrease); training stopped.",
                      NumericalWarning, stacklevel=stacklevel)
    elif stop is None:
        warnings.warn(f"{solver}: maximum iterations ({max_iter}) reached and "
                      "the optimisation hasn't converged yet.", ConvergenceWarning,
                      stacklevel=stacklevel)


def warn_interrupted(n_iter, stacklevel):
    warnings.warn(f"training interrupted; the model keeps the parameters of "
                  f"iteration {n_iter}", UserWarning, stacklevel=stacklevel + 1)
