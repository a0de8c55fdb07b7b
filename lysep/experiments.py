"""Reproduction of the paper's FNN experiments (MATH.md §8): grids, runs, records,
tables and figures.  Driven by ``lysep reproduce {circle,interface}`` and ``lysep demo``.

The protocol, fixed here and documented in ``docs/results/README.md``:

* **Data.**  One training set (seed ``train_seed``) and one test set (seed ``test_seed``) per
  problem, shared by every run; the 10 seeds vary only the initialisation, as in the paper
  ("equivalent to taking different initial guesses").  Circle: 3000 / 1000 points of
  :func:`lysep.datasets.circle`.  Interface: 3000 / 1000 points of
  :func:`lysep.datasets.allen_cahn_interface` at each of the four ``INTERFACE_TIMES``.
* **Architectures** (hidden layers x width, tanh): circle 3x20, 5x20, 9x20, 14x20, 19x20;
  interface 3x20, 9x20, 19x20 (the shallowest, middle and deepest of the circle grid).
* **Budgets.**  LySep: 300 sweeps of Algorithm 1, ``penalty_scale = 0.01`` (the package
  default).  GD at two budgets (:attr:`Grid.gd_budgets`): 300 full-batch steps, the same
  iteration budget as LySep (MATH.md §7, the paper's protocol), and 3000 steps, ten times
  the iterations (one sweep costs about four GD steps, so GD then gets about twice
  LySep's compute).  Neither solver stops early: ``tol = 0`` with
  ``n_iter_no_change = max_iter``.
* **GD learning rate**, tuned once per grid and budget: every rate of ``LEARNING_RATES``
  is run for the longest budget on the first seed in every cell of the grid, and a shorter
  budget reads the same runs at its own iteration (GD is deterministic, so the first n
  steps of a long run are the n-step run); a rate is excluded if any of its runs diverged
  by then (non-finite loss, or a loss above the initial one); the rate with the lowest
  mean training CE over the cells wins (ties: the smaller rate).  See
  :func:`choose_learning_rate`.  The tuning runs are kept in ``OUT/tuning``; the winner's
  run on the tuning seed doubles as that seed's main run of the longest budget.

Output folder: ``runs/*.json`` (one record per run: config, seed, curves, wall time,
versions, a predicted-label map; a run whose record exists is not run again) and
``runs/*.npz`` (the trained weights), ``grid.json`` (the grid, the tuning table, and the
wall time of each invocation), ``table.md`` / ``table.csv`` (the paper's table: mean ± std
over seeds), ``runs.csv`` (one line per run) and ``*.png`` figures (needs matplotlib).
"""
import base64
import csv
import dataclasses
import functools
import json
import math
import os
import platform
import signal
import sys
import time
import warnings
import zlib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from ._fnn import FNNClassifier
from ._threads import usable_cores
from .datasets import INTERFACE_TIMES, allen_cahn_field, allen_cahn_grid, allen_cahn_interface, \
    circle
from .exceptions import ConvergenceWarning

EXPERIMENTS = ("circle", "interface", "cnn")
TABLE_ORDER = ("gd", "lysep")              # the paper lists CE-FNN first
MODEL_NAMES = {"lysep": "LySep-FNN", "gd": "CE-FNN"}
CNN_MODEL_NAMES = {"lysep": "LySep-CNN", "gd": "CE-CNN"}
#: CNN grid (MATH.md §8): conv layers x channels; pools chosen so that the conv output
#: reaching the dense part is 7 x 7 for every depth (28 -> 7).
CNN_POOLS = {1: (4,), 2: (2, 2), 3: (2, 2, 1)}
LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
#: GD rate of ``lysep demo``: the rate ``lysep reproduce circle`` tuned (docs/results/circle).
DEMO_GD_LEARNING_RATE = 1.0
#: Predicted-label maps: class of every cell centre of a MAP_SIZE x MAP_SIZE grid on [-1,1]^2.
MAP_SIZE = 200
_CIRCLE_RADIUS = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class Grid:
    """One experiment's grid: cells (time x architecture) x solvers x seeds."""
    experiment: str
    architectures: tuple          # ((hidden layers, width), ...)
    times: tuple                  # (None,) for the circle; Allen-Cahn times otherwise
    seeds: tuple
    lysep_iter: int = 300
    gd_iter: int = 3000
    learning_rates: tuple = LEARNING_RATES
    penalty_scale: float = 0.01
    n_train: int = 3000
    n_test: int = 1000
    train_seed: int = 0
    test_seed: int = 1
    activation: str = "tanh"
    # the CNN experiment only (None for the FNN grids)
    data: object = None           # "fashion-mnist" or a folder of MNIST-format files
    batch_size: object = None
    refresh_every: object = None
    hidden: object = None         # width of the one hidden dense layer

    @property
    def cells(self):
        return [(t, a) for t in self.times for a in self.architectures]

    @property
    def gd_budgets(self):
        """GD's iteration budgets: LySep's (equal iterations, MATH.md §7) and gd_iter."""
        return tuple(sorted({self.lysep_iter, self.gd_iter}))

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["architectures"] = [list(a) for a in self.architectures]
        return d


def make_grid(experiment, *, quick=False, n_seeds=None, data=None):
    """The full grid of `experiment`, or its ``--quick`` reduction (under two minutes)."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {EXPERIMENTS}")
    n = n_seeds if n_seeds is not None else (2 if quick else 10)
    if n < 1:
        raise ValueError(f"--seeds must be at least 1, got {n}")
    if experiment == "cnn":
        return _cnn_grid(quick, n_seeds, data)
    if experiment == "circle":
        archs = ((3, 20), (19, 20)) if quick else ((3, 20), (5, 20), (9, 20), (14, 20), (19, 20))
        times = (None,)
    else:
        archs = ((3, 20), (9, 20)) if quick else ((3, 20), (9, 20), (19, 20))
        times = (INTERFACE_TIMES[0], INTERFACE_TIMES[-1]) if quick else tuple(INTERFACE_TIMES)
    budgets = dict(lysep_iter=50, gd_iter=500, learning_rates=(0.1, 1.0)) if quick else {}
    return Grid(experiment, archs, times, tuple(range(n)), **budgets)


def _cnn_grid(quick, n_seeds, data):
    """Conv layers {1,2,3} x channels {4,8,16}, one hidden dense layer of 32, mini-batches
    of 1000 refreshed every 10 iterations (MATH.md §6), a 3000-image training subset of the
    data (1000 test images), 40 iterations, 2 seeds: a reduced grid that runs in about ten
    minutes on two cores.  LySep and GD get the same number of iterations (a LySep sweep
    costs more; the paper compares at equal iteration counts).  --quick: one- and two-conv
    architectures with 4 channels, one seed, 10 iterations on 500 images."""
    data = data or "fashion-mnist"
    if quick:
        return Grid("cnn", ((1, 4), (2, 4)), (None,), tuple(range(n_seeds or 1)),
                    lysep_iter=10, gd_iter=10, learning_rates=(0.3,), n_train=500,
                    n_test=200, data=data, batch_size=250, refresh_every=5, hidden=16)
    archs = tuple((lc, c) for lc in (1, 2, 3) for c in (4, 8, 16))
    return Grid("cnn", archs, (None,), tuple(range(n_seeds or 2)), lysep_iter=40, gd_iter=40,
                learning_rates=(0.1, 0.3, 1.0), n_train=3000, n_test=1000, data=data,
                batch_size=1000, refresh_every=10, hidden=32)


# -- one run ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run (and its record's config)."""
    experiment: str
    time: object                  # None (circle) or the Allen-Cahn time
    depth: int
    width: int
    solver: str
    seed: int
    max_iter: int
    learning_rate: object         # GD step (None for lysep)
    penalty_scale: object         # s (None for gd)
    n_train: int
    n_test: int
    train_seed: int
    test_seed: int
    activation: str
    data: object = None               # the CNN experiment only (see Grid)
    batch_size: object = None
    refresh_every: object = None
    hidden: object = None

    @property
    def arch(self):
        return f"{self.depth}x{self.width}"

    def name(self, tuning=False):
        """File stem of the run's record."""
        t = "" if self.time is None else f"-t{self.time:g}"
        lr = f"-lr{self.learning_rate:g}" if tuning else ""
        budget = "" if self.solver == "lysep" else f"-it{self.max_iter}"
        return f"{self.solver}{lr}{budget}-{self.arch}{t}-seed{self.seed}"

    def label(self):
        t = "" if self.time is None else f" t={self.time:g}"
        budget = "" if self.solver == "lysep" else f" ({self.max_iter} its)"
        return f"{self.solver}{budget} {self.arch}{t} seed {self.seed}"

    def config(self):
        """The fields that define the run (the CNN-only ones only for the CNN grid, so FNN
        records keep their format)."""
        c = dataclasses.asdict(self)
        if self.experiment != "cnn":
            for key in ("data", "batch_size", "refresh_every", "hidden"):
                del c[key]
        return c

    def cost(self):
        """Rough cost in GD-iteration units of one layer (one sweep ~ four GD steps)."""
        return self.max_iter * (self.depth + 1) * (4 if self.solver == "lysep" else 1)


def make_spec(grid, time_, arch, solver, seed, learning_rate=None, max_iter=None):
    """The run of one cell, solver and seed; GD's budget is `max_iter` (default: the
    grid's longest, gd_iter)."""
    lysep = solver == "lysep"
    return RunSpec(grid.experiment, time_, arch[0], arch[1], solver, seed,
                   grid.lysep_iter if lysep else (max_iter or grid.gd_iter),
                   None if lysep else float(learning_rate),
                   grid.penalty_scale if lysep else None, grid.n_train, grid.n_test,
                   grid.train_seed, grid.test_seed, grid.activation, grid.data,
                   grid.batch_size, grid.refresh_every, grid.hidden)


@functools.lru_cache(maxsize=16)
def load_data(experiment, time_, n_train, n_test, train_seed, test_seed, data=None):
    """(X_train, y_train, X_test, y_test) of one problem (cached per process)."""
    if experiment == "cnn":
        from .datasets import load_fashion_mnist, load_idx
        X, y, Xt, yt = load_fashion_mnist() if data == "fashion-mnist" else load_idx(data)
        train = np.random.default_rng(train_seed).choice(len(X), n_train, replace=False)
        test = np.random.default_rng(test_seed).choice(len(Xt), n_test, replace=False)
        return X[np.sort(train)], y[np.sort(train)], Xt[np.sort(test)], yt[np.sort(test)]
    if experiment == "circle":
        return (*circle(n_train, random_state=train_seed), *circle(n_test, random_state=test_seed))
    return (*allen_cahn_interface(time_, n_train, random_state=train_seed),
            *allen_cahn_interface(time_, n_test, random_state=test_seed))


def map_points(size=MAP_SIZE):
    """Cell centres of a size x size grid on [-1, 1]^2, row-major with y varying slowest."""
    c = -1.0 + (2.0 * np.arange(size) + 1.0) / size
    gx, gy = np.meshgrid(c, c)
    return np.column_stack([gx.ravel(), gy.ravel()])


def encode_labels(labels):
    """Small class indices -> compact ASCII (zlib + base64) for the JSON record."""
    return base64.b64encode(zlib.compress(np.asarray(labels, np.uint8).tobytes(), 9)).decode()


def decode_labels(text, size=MAP_SIZE):
    raw = zlib.decompress(base64.b64decode(text))
    return np.frombuffer(raw, dtype=np.uint8).reshape(size, size)


def _log_loss(clf, X, y):
    logp = clf.predict_log_proba(X)
    idx = np.searchsorted(clf.classes_, y)
    return float(-np.mean(logp[np.arange(len(y)), idx]))


def _lysep_diagnostics(clf):
    """Final J split into CE of the surrogate logits G and the penalty (private state)."""
    state = getattr(clf, "_state", None)
    if state is None or not hasattr(state, "ce"):
        return {}
    surrogate_ce = float(state.ce) / state.N
    return {"surrogate_ce": surrogate_ce, "penalty": float(state.J) - surrogate_ce}


def _status(clf, spec, messages):
    # diverged: the loss became non-finite (other NumericalWarnings, such as rounding
    # growing in J, say something about a finished run and do not make it diverged)
    if any(m.startswith("NumericalWarning") and "non-finite" in m for m in messages):
        return "diverged"
    return "completed" if clf.n_iter_ == spec.max_iter else "stopped"


def _estimator(spec):
    """The estimator a run trains: an FNN of depth x width, or (CNN grid) a CNN with depth
    conv layers of width channels.  The budget is the protocol: no stopping rule ends a
    run before max_iter."""
    common = dict(activation=spec.activation, solver=spec.solver, max_iter=spec.max_iter,
                  learning_rate_init=spec.learning_rate if spec.solver == "gd" else 0.1,
                  penalty_scale=spec.penalty_scale if spec.solver == "lysep" else 0.01,
                  random_state=spec.seed, tol=0.0, n_iter_no_change=spec.max_iter)
    if spec.experiment == "cnn":
        from ._cnn import CNNClassifier
        return CNNClassifier(conv_channels=(spec.width,) * spec.depth,
                             pool_size=CNN_POOLS[spec.depth], hidden_layer_sizes=(spec.hidden,),
                             batch_size=spec.batch_size, refresh_every=spec.refresh_every,
                             **common)
    return FNNClassifier(hidden_layer_sizes=(spec.width,) * spec.depth, **common)


def run_one(spec):
    """Train one model as `spec` says; return (record, parameters)."""
    X, y, X_test, y_test = load_data(spec.experiment, spec.time, spec.n_train, spec.n_test,
                                     spec.train_seed, spec.test_seed, spec.data)
    clf = _estimator(spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ConvergenceWarning)   # the budget is the protocol
        start, cpu_start = time.perf_counter(), time.process_time()
        clf.fit(X, y)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    if any("training interrupted" in m for m in messages):
        raise KeyboardInterrupt               # never record a partial run as finished
    loss, acc = clf.loss_curve_, clf.accuracy_curve_
    record = {
        "config": spec.config(), "seed": spec.seed, "status": _status(clf, spec, messages),
        "n_iter": int(clf.n_iter_), "wall_time_s": wall, "cpu_time_s": cpu,
        "load_average_1min": _load_average(),
        "initial_train_ce": loss[0], "train_ce": loss[-1], "train_accuracy": acc[-1],
        "test_ce": _log_loss(clf, X_test, y_test), "test_accuracy": clf.score(X_test, y_test),
        "loss_curve": loss, "accuracy_curve": acc, "surrogate_curve": clf.surrogate_curve_,
        "warnings": messages,
        "versions": {"lysep": __version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "host": {"machine": platform.machine(), "cpu_count": os.cpu_count()},
    }
    if spec.experiment == "cnn":           # curves every refresh_every iterations
        record["curve_iterations"] = clf.curve_iterations_
        record["batch_loss_curve"] = clf.batch_loss_curve_
    else:                                  # a predicted-label map of [-1,1]^2
        record["label_map"] = {"size": MAP_SIZE, "classes": clf.classes_.tolist(),
                               "encoding": "zlib+base64 uint8 class indices, rows = y ascending",
                               "data": encode_labels(np.searchsorted(
                                   clf.classes_, clf.predict(map_points())))}
    if spec.solver == "lysep":
        # Theorem B on what J measures: the whole set (FNN) or the current batch (CNN)
        bound_loss = clf.batch_loss_curve_ if spec.experiment == "cnn" else loss
        record["bound_constant"] = clf.bound_constant_
        record["bound_holds"] = all(l <= clf.bound_constant_ * J * (1 + 1e-12)
                                    for l, J in zip(bound_loss, clf.surrogate_curve_))
        record.update(_lysep_diagnostics(clf))
    params = {f"W{i}": W for i, W in enumerate(clf.coefs_)}
    params.update({f"b{i}": b for i, b in enumerate(clf.intercepts_)})
    return record, params


def _load_average():
    """The machine's 1-minute load average (other users' work inflates wall times)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _write_json(path, obj):
    """Atomic write: a crash never leaves a truncated record behind."""
    tmp = path.with_name(path.name + ".tmp")
    # one line per top-level key: readable, yet the long curves stay compact
    tmp.write_text("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}"
                                       for k, v in obj.items()) + "\n}\n")
    os.replace(tmp, path)


def _train_and_save(spec, path):
    """Worker body: one BLAS thread (many small GEMMs; processes give the parallelism)."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        record, params = run_one(spec)
    np.savez_compressed(path.with_suffix(".npz"), **params)
    _write_json(path, record)
    return record


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # and stops workers with SIGTERM


# -- many runs: resume, parallel workers, progress ------------------------------------

def read_record(path, spec=None):
    """The record at `path`, or None; raise if it was made with a different config."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if spec is not None and record["config"] != spec.config():
        raise RuntimeError(
            f"{path} was made with a different configuration ({record['config']}) than this "
            f"run ({spec.config()}); pass another --out or delete the old records")
    return record


class Progress:
    """tqdm bar (if importable and stderr is a terminal) or one line per finished run."""

    def __init__(self, total_cost, n_runs, desc, stream=sys.stderr):
        self.total, self.n_runs, self.desc, self.stream = total_cost, n_runs, desc, stream
        self.done_cost, self.done, self.start = 0, 0, time.perf_counter()
        self.bar = None
        if stream.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total_cost, desc=desc, file=stream, unit="",
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} "
                                           "[{elapsed}<{remaining}]")
            except ImportError:
                pass

    def running(self, labels):
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.done}/{self.n_runs} runs, now: {', '.join(labels)}")

    def finished(self, spec, record):
        self.done += 1
        self.done_cost += spec.cost()
        if self.bar is not None:
            self.bar.update(spec.cost())
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed * (self.total - self.done_cost) / max(self.done_cost, 1)
        print(f"{self.desc} [{self.done}/{self.n_runs}] {spec.label()}: "
              f"CE {record['train_ce']:.4g}, acc {100 * record['train_accuracy']:.1f}% "
              f"({record['wall_time_s']:.1f} s) | elapsed {_hms(elapsed)}, ETA {_hms(eta)}",
              file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _hms(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m{rest % 60:02d}s" if h else f"{rest // 60}m{rest % 60:02d}s"


def run_all(tasks, n_jobs, desc="runs"):
    """Run [(spec, record path)], skipping those with a record; return {path: record}."""
    records, pending = {}, []
    for spec, path in tasks:
        record = read_record(path, spec)
        if record is None:
            pending.append((spec, path))
        else:
            records[path] = record
    if tasks:
        print(f"{desc}: {len(tasks)} runs, {len(tasks) - len(pending)} already recorded, "
              f"{len(pending)} to train on {min(n_jobs, max(len(pending), 1))} worker(s)",
              file=sys.stderr, flush=True)
    if not pending:
        return records
    for spec, path in pending:
        path.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(sum(s.cost() for s, _ in pending), len(pending), desc)
    try:
        if n_jobs == 1:
            for spec, path in pending:
                progress.running([spec.label()])
                records[path] = _train_and_save(spec, path)
                progress.finished(spec, records[path])
        else:
            records.update(_run_pool(pending, n_jobs, progress))
    finally:
        progress.close()
    return records


def _run_pool(pending, n_jobs, progress):
    records = {}
    # biggest runs first: the last runs to finish are short, so no worker idles long
    queue = sorted(pending, key=lambda t: -t[0].cost())
    pool = ProcessPoolExecutor(max_workers=min(n_jobs, len(queue)), initializer=_ignore_sigint)
    try:
        futures = {pool.submit(_train_and_save, spec, path): (spec, path)
                   for spec, path in queue}
        not_done = set(futures)
        while not_done:
            progress.running([futures[f][0].label() for f in not_done if f.running()])
            done, not_done = wait(not_done, timeout=2.0, return_when=FIRST_COMPLETED)
            for f in done:
                spec, path = futures[f]
                records[path] = f.result()
                progress.finished(spec, records[path])
    except BaseException:
        # Ctrl-C or a failed run: drop queued runs and stop the workers this pool started
        # (records are written atomically, so no partial record is left behind)
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.terminate()
        raise
    pool.shutdown()
    return records


# -- learning-rate tuning --------------------------------------------------------------

def diverged(record, n_iter=None):
    """A GD run diverged within `n_iter` iterations (default: its whole run): a
    non-finite loss met, or the loss then above the initial loss."""
    ce = train_ce_at(record, n_iter)
    blew_up = record["status"] == "diverged" and (
        n_iter is None or len(record["loss_curve"]) <= n_iter)
    return blew_up or not math.isfinite(ce) or ce > record["initial_train_ce"]


def train_ce_at(record, n_iter=None):
    """Training CE after `n_iter` iterations (default: the last); a run stopped earlier
    by a non-finite loss kept its last finite parameters, so its last value stands."""
    if n_iter is None:
        return record["train_ce"]
    curve = record["loss_curve"]
    return curve[min(n_iter, len(curve) - 1)]


def choose_learning_rate(results):
    """Pick the GD rate from ``{rate: [(training CE, diverged), ...] over cells}``.

    Rates with any diverged run are excluded; the lowest mean CE wins, ties going to
    the smaller rate.  If every rate diverged somewhere, the smallest rate is returned."""
    scores = {lr: float(np.mean([ce for ce, _ in runs])) for lr, runs in results.items()
              if runs and not any(d for _, d in runs)}
    if not scores:
        return min(results)
    return min(scores, key=lambda lr: (scores[lr], lr))


def tune_learning_rate(grid, out, n_jobs):
    """Run the tuning grid (first seed, every cell, every rate, the longest GD budget) and
    choose a rate for every budget of ``grid.gd_budgets``; return the tuning table."""
    seed = grid.seeds[0]
    tasks = [(make_spec(grid, t, a, "gd", seed, lr), None) for lr in grid.learning_rates
             for t, a in grid.cells]
    tasks = [(s, out / "tuning" / f"{s.name(tuning=True)}.json") for s, _ in tasks]
    records = run_all(tasks, n_jobs, desc=f"{grid.experiment}: GD rate tuning")
    # (training CE, diverged) of every tuning run after n iterations, per budget n
    at = {n: [(train_ce_at(records[path], n), diverged(records[path], n)) for _, path in tasks]
          for n in grid.gd_budgets}
    budgets = {}
    for n in grid.gd_budgets:
        results = {lr: [] for lr in grid.learning_rates}
        for (spec, _), ce_div in zip(tasks, at[n]):
            results[spec.learning_rate].append(ce_div)
        budgets[str(n)] = {
            "chosen": choose_learning_rate(results),
            "mean_train_ce": {f"{lr:g}": (float(np.mean([c for c, _ in runs])) if runs
                                          else None) for lr, runs in results.items()},
            "any_diverged": {f"{lr:g}": any(d for _, d in runs)
                             for lr, runs in results.items()}}
    cells = [{"learning_rate": spec.learning_rate, "time": spec.time, "arch": spec.arch,
              "train_ce": {str(n): at[n][k][0] for n in grid.gd_budgets},
              "train_accuracy": records[path]["train_accuracy"],
              "diverged": {str(n): at[n][k][1] for n in grid.gd_budgets},
              "wall_time_s": records[path]["wall_time_s"]}
             for k, (spec, path) in enumerate(tasks)]
    longest = budgets[str(grid.gd_iter)]
    return {
        "seed": seed, "rates": list(grid.learning_rates), "n_iter": grid.gd_iter,
        "chosen": longest["chosen"], "budgets": budgets,
        "rule": "per GD budget n: lowest mean training CE after n iterations over the grid's "
                "cells on the first seed; rates with any run diverged by then (non-finite, or "
                "CE > initial CE) excluded; ties to the smaller rate",
        "runs": cells,
    }


# -- summaries: tables -----------------------------------------------------------------

def load_records(out):
    """Every run record of OUT/runs, sorted by (time, depth, width, solver, seed)."""
    records = [json.loads(p.read_text()) for p in sorted((Path(out) / "runs").glob("*.json"))]
    return sorted(records, key=_record_key)


def _record_key(r):
    c = r["config"]
    return (-1.0 if c["time"] is None else c["time"], c["depth"], c["width"],
            TABLE_ORDER.index(c["solver"]), c["max_iter"], r["seed"])


def _mean_std(values):
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else 0.0)


def summarise(records):
    """One row per (time, architecture, solver, budget): mean and std over seeds (ddof=1)."""
    groups = {}
    for r in records:
        c = r["config"]
        groups.setdefault((c["time"], c["depth"], c["width"], c["solver"], c["max_iter"]),
                          []).append(r)
    rows = []
    for (t, depth, width, solver, max_iter), rs in groups.items():
        row = {"experiment": rs[0]["config"]["experiment"], "time": t, "depth": depth,
               "width": width, "solver": solver,
               "model": _model_name(rs[0]["config"]["experiment"], solver),
               "n_seeds": len(rs), "max_iter": max_iter,
               "learning_rate": rs[0]["config"]["learning_rate"],
               "n_diverged": sum(diverged(r) for r in rs)}
        for key in ("train_ce", "train_accuracy", "test_accuracy", "wall_time_s", "cpu_time_s"):
            row[key + "_mean"], row[key + "_std"] = _mean_std([r.get(key, math.nan) for r in rs])
        rows.append(row)
    return rows


def _model_name(experiment, solver):
    return (CNN_MODEL_NAMES if experiment == "cnn" else MODEL_NAMES)[solver]


def _pct(mean, std):
    return f"{100 * mean:.2f}% ± {100 * std:.2f}%"


def table_markdown(rows, grid_info=None):
    """The paper's table (final training CE and accuracy, mean ± std) plus test accuracy."""
    if not rows:
        return "(no run records)\n"
    exp = rows[0]["experiment"]
    interface = exp == "interface"
    lines = [_table_title(exp, rows), "", _table_header(rows, grid_info), ""]
    arch = "Conv layers × channels" if exp == "cnn" else "Hidden layers × width"
    head = (["Time"] if interface else []) + [arch, "Model", "Iterations",
                                              "Training CE", "Training accuracy",
                                              "Test accuracy", "Seeds",
                                              "CPU / wall time per run (s)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ([f"{r['time']:g}"] if interface else []) + [
            f"{r['depth']} × {r['width']}", r["model"], str(r["max_iter"]),
            f"{r['train_ce_mean']:.2e} ± {r['train_ce_std']:.2e}",
            _pct(r["train_accuracy_mean"], r["train_accuracy_std"]),
            _pct(r["test_accuracy_mean"], r["test_accuracy_std"]),
            str(r["n_seeds"]) + (f" ({r['n_diverged']} blew up)" if r["n_diverged"] else ""),
            f"{r['cpu_time_s_mean']:.1f} / {r['wall_time_s_mean']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += comparison_lines(rows)
    return "\n".join(lines) + "\n"


def comparison_lines(rows):
    """Per cell: LySep's mean final training CE against GD's at every GD budget (the
    claim of MATH.md §8: LySep's is lower), as Markdown table lines."""
    lysep, gd = {}, {}
    for r in rows:
        cell = (r["time"], r["depth"], r["width"])
        if r["solver"] == "lysep":
            lysep[cell] = r
        else:
            gd[cell, r["max_iter"]] = r
    budgets = sorted({n for _, n in gd})
    if not budgets or not lysep:
        return []
    experiment = rows[0]["experiment"]
    interface = experiment == "interface"
    head = (["Time"] if interface else []) + ["Architecture"] + [
        f"LySep CE ÷ {_model_name(experiment, 'gd')} CE ({n} its)" for n in budgets]
    lines = ["", "LySep's mean final training CE against gradient descent's, per cell "
             "(below 1: LySep lower):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    wins = dict.fromkeys(budgets, 0)
    for cell in sorted(lysep, key=lambda c: (-1.0 if c[0] is None else c[0], *c[1:])):
        t, depth, width = cell
        out = ([f"{t:g}"] if interface else []) + [f"{depth} × {width}"]
        for n in budgets:
            if (cell, n) not in gd:
                out.append("–")
                continue
            ratio = lysep[cell]["train_ce_mean"] / gd[cell, n]["train_ce_mean"]
            wins[n] += ratio < 1
            out.append(f"{ratio:.3g}")
        lines.append("| " + " | ".join(out) + " |")
    lines += ["", "LySep lower in " + "; ".join(
        f"{wins[n]} of {len(lysep)} cells against {n} GD iterations" for n in budgets) + "."]
    return lines


def _table_title(exp, rows):
    seeds = sorted({r["n_seeds"] for r in rows})
    what = {"circle": "Circle in/out", "interface": "Allen–Cahn interface tracking",
            "cnn": "MNIST-format CNN"}[exp]
    return (f"## {what}: final training cross-entropy and accuracy "
            f"(mean ± std over {'/'.join(map(str, seeds))} seeds)")


def _table_header(rows, grid_info):
    if rows[0]["experiment"] == "cnn":
        return _cnn_table_header(rows, grid_info)

    def budget(solver):
        return sorted({r["max_iter"] for r in rows if r["solver"] == solver})
    rates = {r["max_iter"]: r["learning_rate"] for r in rows if r["solver"] == "gd"}
    equal = (" (the first: LySep's iteration budget, MATH.md §7)"
             if len(rates) > 1 and min(rates) in budget("lysep") else "")
    lrs = ", ".join(f"{rates[n]:g} for {n}" for n in sorted(rates))
    tuning = (grid_info or {}).get("tuning")
    how = ""
    if tuning:
        grid_rates = ", ".join(f"{x:g}" for x in tuning["rates"])
        how = (f" (tuned once for the grid and budget over {{{grid_rates}}} on seed "
               f"{tuning['seed']}: lowest mean training CE at that budget, diverged rates "
               "excluded)")
    grid = (grid_info or {}).get("grid", {})
    data = (f"{grid['n_train']} training / {grid['n_test']} test samples, "
            if grid else "")
    return (f"LySep-FNN: {'/'.join(map(str, budget('lysep')))} sweeps of Algorithm 1, "
            f"penalty scale s = {grid.get('penalty_scale', 0.01):g}. CE-FNN: "
            f"{' and '.join(map(str, budget('gd')))} iterations of full-batch gradient "
            f"descent{equal}, learning rate {lrs}{how}. "
            f"{data}tanh, default initialisation (uniform ±1/√fan_in), float64. "
            "Std over seeds with ddof = 1; the seed changes only the initialisation; "
            "\"blew up\": runs whose final training CE is non-finite or above their initial "
            "CE (they are included in the mean). "
            "CPU / wall time per run: means over seeds for one fit, one BLAS thread, "
            "runs in parallel worker processes (wall time also counts other load on the "
            "machine).")


def _cnn_table_header(rows, grid_info):
    grid = (grid_info or {}).get("grid", {})
    tuning = (grid_info or {}).get("tuning") or {}
    lrs = sorted({r["learning_rate"] for r in rows if r["solver"] == "gd"})
    rates = ", ".join(f"{x:g}" for x in tuning.get("rates", []))
    return (f"Data: {grid.get('data')}, a {grid.get('n_train')}-image training subset and "
            f"{grid.get('n_test')} test images. Architecture: conv (3×3, stride 1, padding 1) "
            "→ tanh → average pool per conv layer, pools chosen so the dense part always "
            f"sees 7×7 maps (1 layer: 4; 2: 2, 2; 3: 2, 2, 1), one hidden dense layer of "
            f"{grid.get('hidden')}, softmax. Mini-batches of {grid.get('batch_size')} "
            f"refreshed every {grid.get('refresh_every')} iterations (MATH.md §6). "
            f"LySep-CNN: {grid.get('lysep_iter')} sweeps, s = {grid.get('penalty_scale')}. "
            f"CE-CNN: {grid.get('gd_iter')} mini-batch gradient steps, learning rate "
            f"{', '.join(f'{x:g}' for x in lrs)} (tuned over {{{rates}}} on the first seed). "
            "Training CE and accuracy of the true network on the whole training subset, "
            "mean ± std over seeds (the seed changes the initialisation and the batches).")


def write_tables(rows, records, out, grid_info):
    md = table_markdown(rows, grid_info)
    (out / "table.md").write_text(md)
    keys = ["experiment", "time", "depth", "width", "model", "solver", "n_seeds", "max_iter",
            "learning_rate", "n_diverged", "train_ce_mean", "train_ce_std",
            "train_accuracy_mean", "train_accuracy_std", "test_accuracy_mean",
            "test_accuracy_std", "cpu_time_s_mean", "cpu_time_s_std", "wall_time_s_mean",
            "wall_time_s_std"]
    _write_csv(out / "table.csv", keys, rows)
    run_keys = ["experiment", "time", "depth", "width", "solver", "seed", "max_iter",
                "learning_rate", "penalty_scale", "status", "n_iter", "initial_train_ce",
                "train_ce", "train_accuracy", "test_ce", "test_accuracy", "cpu_time_s", "wall_time_s",
                "load_average_1min",
                "surrogate_ce", "penalty", "final_J"]
    flat = [{**r["config"], **r, "final_J": (r["surrogate_curve"] or [None])[-1]}
            for r in records]
    _write_csv(out / "runs.csv", run_keys, flat)
    return md


def _write_csv(path, keys, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})


# -- figures ---------------------------------------------------------------------------

_COLOURS = {"lysep": "tab:blue", "gd": "tab:red", "gd-short": "tab:orange"}


def _padded(curves):
    """Stack curves of unequal length (GD stopped by a non-finite loss) padding with the
    last value: the model keeps its last finite parameters."""
    n = max(len(c) for c in curves)
    return np.array([list(c) + [c[-1]] * (n - len(c)) for c in curves], dtype=float)


def _groups(records):
    """{time: {(depth, width): {(solver, max_iter): [records]}}}, models in table order."""
    out = {}
    for r in sorted(records, key=_record_key):
        c = r["config"]
        out.setdefault(c["time"], {}).setdefault((c["depth"], c["width"]), {}) \
           .setdefault((c["solver"], c["max_iter"]), []).append(r)
    return out


def _model_label(experiment, model, models):
    """Legend name of (solver, max_iter); GD's budget is named when there are two."""
    solver, n = model
    gd_budgets = sorted(m for s, m in models if s == "gd")
    name = _model_name(experiment, solver)
    return name if solver == "lysep" or len(gd_budgets) < 2 else f"{name} {n} its"


def _colour(model, models):
    solver, n = model
    short = solver == "gd" and n < max(m for s, m in models if s == "gd")
    return _COLOURS["gd-short" if short else solver]


def plot_curves(records, out, plt):
    """Training CE and accuracy vs iteration, mean ± std band over seeds, per architecture."""
    paths = []
    for t, by_arch in _groups(records).items():
        archs = sorted(by_arch)
        fig, axes = plt.subplots(2, len(archs), figsize=(3.4 * len(archs), 6.2), squeeze=False,
                                 sharex=True)
        for j, arch in enumerate(archs):
            models = by_arch[arch]
            for model, rs in models.items():
                solver = model[0]
                exp = rs[0]["config"]["experiment"]
                colour = _colour(model, models)
                # CNN curves are recorded every refresh_every iterations
                x = np.asarray(rs[0].get("curve_iterations") or range(len(rs[0]["loss_curve"])))
                for i, key in enumerate(("loss_curve", "accuracy_curve")):
                    _band(axes[i, j], x, _padded([r[key] for r in rs]), colour, len(rs),
                          _model_label(exp, model, models), upper=1.0 if i else None)
                if solver == "lysep":          # J: the loss LySep actually minimises
                    J = _padded([r["surrogate_curve"] for r in rs]).mean(axis=0)
                    axes[0, j].plot(x, J, color=colour, lw=1.0, ls="--",
                                    label="LySep J (mean)" + (", of the batch" if exp == "cnn"
                                                              else ""))
            axes[0, j].set_title(f"{arch[0]} × {arch[1]}")
            axes[0, j].set_yscale("log")
            axes[1, j].set_xlabel("iteration (LySep: sweep)")
            for ax in axes[:, j]:
                ax.set_xscale("symlog", linthresh=1.0)
                ax.grid(alpha=0.3)
        axes[0, 0].set_ylabel("training cross-entropy")
        axes[1, 0].set_ylabel("training accuracy")
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(_figure_title(records[0]["config"]["experiment"], t,
                                   "mean ± std over seeds; dashed: LySep's surrogate J"))
        fig.tight_layout()
        paths.append(_save(fig, out / f"curves{_tsuffix(t)}.png", plt))
    return paths


def _band(ax, x, curves, colour, n, label, upper=None):
    mean = curves.mean(axis=0)
    std = curves.std(axis=0, ddof=1) if n > 1 else np.zeros_like(mean)
    ax.plot(x, mean, color=colour, lw=1.3, label=f"{label} ({n})")
    ax.fill_between(x, np.maximum(mean - std, 0.0), np.minimum(mean + std, upper or np.inf),
                    color=colour, alpha=0.25, lw=0)


def _tsuffix(t):
    return "" if t is None else f"_t{t:g}"


def _figure_title(experiment, t, what):
    name = {"circle": "circle in/out", "cnn": "MNIST-format CNN"}.get(experiment) \
        or f"Allen–Cahn interface, t = {t:g}"
    return f"{name}: {what}"


def _true_boundary(ax, experiment, t):
    if experiment == "circle":
        from matplotlib.patches import Circle
        ax.add_patch(Circle((0, 0), _CIRCLE_RADIUS, fill=False, color="k", lw=1.2))
        return
    u = np.pad(allen_cahn_field(t), ((0, 1), (0, 1)), mode="wrap")   # close the period
    gx, gy = allen_cahn_grid(u.shape[0] - 1)
    gx = np.pad(gx, ((0, 1), (0, 1)), mode="edge")
    gy = np.pad(gy, ((0, 1), (0, 1)), mode="edge")
    gx[-1, :], gy[:, -1] = 1.0, 1.0
    ax.contour(gx, gy, u, levels=[0.0], colors="k", linewidths=1.2)


def _true_map(experiment, t, size=MAP_SIZE):
    p = map_points(size)
    if experiment == "circle":
        return (np.hypot(p[:, 0], p[:, 1]) < _CIRCLE_RADIUS).reshape(size, size)
    from .datasets import periodic_interpolate
    return (periodic_interpolate(allen_cahn_field(t), p) > 0).reshape(size, size)


def plot_label_maps(records, out, plt):
    """Predicted class over [-1,1]^2 (first seed) with the true boundary drawn (Figs 5.3/5.4)."""
    from matplotlib.colors import ListedColormap
    cmap = ListedColormap(["#f4d6a0", "#9cc3e6"])
    paths = []
    for t, by_arch in _groups(records).items():
        exp = records[0]["config"]["experiment"]
        archs = sorted(by_arch)
        n_models = max(2, *(len(models) for models in by_arch.values()))
        fig, axes = plt.subplots(n_models, len(archs) + 1,
                                 figsize=(2.6 * (len(archs) + 1), 2.7 * n_models), squeeze=False)
        _map_panel(axes[0, 0], _true_map(exp, t), cmap, "true labels", exp, t)
        _colour_key(axes[1, 0], cmap, exp)
        for ax in axes[2:, 0]:
            ax.axis("off")
        for j, arch in enumerate(archs, start=1):
            models = by_arch[arch]
            for i, model in enumerate(models):
                r = min(models[model], key=lambda r: r["seed"])
                labels = decode_labels(r["label_map"]["data"], r["label_map"]["size"])
                _map_panel(axes[i, j], labels, cmap,
                           f"{_model_label(exp, model, models)} {arch[0]}×{arch[1]}\n"
                           f"train acc {100 * r['train_accuracy']:.1f}%", exp, t)
            for ax in axes[len(models):, j]:
                ax.axis("off")
        fig.suptitle(_figure_title(exp, t, "predicted class (first seed); black: true boundary"))
        fig.tight_layout()
        paths.append(_save(fig, out / f"label_maps{_tsuffix(t)}.png", plt))
    return paths


def _colour_key(ax, cmap, experiment):
    inside = "inside the circle" if experiment == "circle" else "u(x, t) > 0"
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    ax.axis("off")
    ax.legend(handles=[Patch(color=cmap(0), label="class 0"),
                       Patch(color=cmap(1), label=f"class 1 ({inside})"),
                       Line2D([], [], color="k", label="true boundary")],
              loc="center", fontsize=8, frameon=False)


def _map_panel(ax, labels, cmap, title, experiment, t):
    ax.imshow(labels, origin="lower", extent=(-1, 1, -1, 1), cmap=cmap, vmin=0, vmax=1,
              interpolation="nearest")
    _true_boundary(ax, experiment, t)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([-1, 0, 1])
    ax.set_yticks([-1, 0, 1])
    ax.tick_params(labelsize=7)


def _save(fig, path, plt):
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_figures(records, out):
    """All figures, or a message if matplotlib (the ``lysep[plot]`` extra) is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping figures "
              "(pip install 'lysep[plot]' to get them)", file=sys.stderr)
        return []
    if not records:
        return []
    if records[0]["config"]["experiment"] == "cnn":    # no 2-D input to map
        return plot_curves(records, out, plt)
    return plot_curves(records, out, plt) + plot_label_maps(records, out, plt)


# -- the command -----------------------------------------------------------------------

def reproduce(experiment, *, out=None, n_jobs=None, n_seeds=None, quick=False,
              table_only=False, figures=True, data=None):
    """``lysep reproduce``: tune, train (resuming), then write tables and figures."""
    out = Path(out or Path("results") / (experiment + ("-quick" if quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "grid.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if not table_only:
        info = _train_grid(make_grid(experiment, quick=quick, n_seeds=n_seeds, data=data), out,
                           n_jobs or usable_cores(), info)
        _write_json(info_path, info)
    records = [r for r in load_records(out) if r["config"]["experiment"] == experiment]
    if not records:
        print(f"no run records of {experiment!r} in {out / 'runs'}", file=sys.stderr)
        return 1
    md = write_tables(summarise(records), records, out, info)
    print(md)
    if figures:
        for p in make_figures(records, out):
            print(f"wrote {p}", file=sys.stderr)
    return 0


def _train_grid(grid, out, n_jobs, info):
    start, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S")
    tuning = tune_learning_rate(grid, out, n_jobs)
    for n, b in tuning["budgets"].items():
        print(f"{grid.experiment}: GD learning rate {b['chosen']:g} for {n} iterations "
              "(mean CE per rate: "
              + ", ".join(f"{k}: {v:.4g}{' (diverged)' if b['any_diverged'][k] else ''}"
                          for k, v in b["mean_train_ce"].items()) + ")",
              file=sys.stderr, flush=True)
    tasks = []
    for t, arch in grid.cells:
        for seed in grid.seeds:
            specs = [make_spec(grid, t, arch, "lysep", seed)]
            specs += [make_spec(grid, t, arch, "gd", seed, tuning["budgets"][str(n)]["chosen"], n)
                      for n in grid.gd_budgets]
            for spec in specs:
                path = out / "runs" / f"{spec.name()}.json"
                _reuse_tuning_run(spec, path, out)
                tasks.append((spec, path))
    existed = {p for _, p in tasks if p.exists()}
    before = len(existed)
    records = run_all(tasks, n_jobs, desc=f"{grid.experiment}: main grid")
    elapsed = time.perf_counter() - start
    sessions = info.get("sessions", []) + [{
        "started": started, "elapsed_s": elapsed, "jobs": n_jobs,
        "load_average_1min_at_end": _load_average(),
        "cpu_time_s_of_runs_trained": sum(
            records[p].get("cpu_time_s", 0.0) for _, p in tasks if p not in existed),
        "runs_trained": len(tasks) - before, "runs_already_recorded": before,
        "seeds": len(grid.seeds)}]
    print(f"{grid.experiment}: grid done in {_hms(elapsed)} with {n_jobs} worker(s)",
          file=sys.stderr, flush=True)
    return {"experiment": grid.experiment, "lysep_version": __version__,
            "grid": grid.to_dict(), "tuning": tuning, "sessions": sessions}


def _reuse_tuning_run(spec, path, out):
    """The chosen rate's tuning run on the tuning seed is exactly this main run."""
    if spec.solver != "gd" or path.exists():
        return
    src = out / "tuning" / f"{spec.name(tuning=True)}.json"
    record = read_record(src)
    if record is None or record["config"] != spec.config():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    npz = src.with_suffix(".npz")
    if npz.exists():
        path.with_suffix(".npz").write_bytes(npz.read_bytes())
    _write_json(path, record)


# -- lysep demo ------------------------------------------------------------------------

def demo(quick=False, n_jobs=None):
    """Train LySep and GD on the deep circle problem and print the results side by side."""
    grid = Grid("circle", ((19, 20),), (None,), (0,),
                lysep_iter=30 if quick else 300, gd_iter=300 if quick else 3000)
    # GD at LySep's iteration budget (MATH.md §7) and at ten times the iterations
    specs = [make_spec(grid, None, (19, 20), "lysep", 0)]
    specs += [make_spec(grid, None, (19, 20), "gd", 0, DEMO_GD_LEARNING_RATE, n)
              for n in grid.gd_budgets]
    print(f"Deep circle problem: 19 hidden tanh layers of width 20, {grid.n_train} training / "
          f"{grid.n_test} test samples, seed 0{' (--quick: short budgets)' if quick else ''}",
          flush=True)
    n_jobs = min(n_jobs or usable_cores(), len(specs))
    results = []
    if n_jobs > 1:
        with ProcessPoolExecutor(max_workers=n_jobs, initializer=_ignore_sigint) as pool:
            results = list(pool.map(_demo_run, specs))
    else:
        results = [_demo_run(s) for s in specs]
    print(demo_table(specs, results))
    return 0


def _demo_run(spec):
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        return run_one(spec)[0]


def demo_table(specs, records):
    heads = [f"LySep ({specs[0].max_iter} sweeps)"] + [
        f"GD ({s.max_iter} its, lr {s.learning_rate:g})" for s in specs[1:]]
    rows = [("final training CE", [f"{r['train_ce']:.4f}" for r in records]),
            ("training accuracy", [f"{100 * r['train_accuracy']:.1f}%" for r in records]),
            ("test accuracy", [f"{100 * r['test_accuracy']:.1f}%" for r in records]),
            ("wall time", [f"{r['wall_time_s']:.1f} s" for r in records])]
    w = max(len(h) for h in heads) + 2
    lines = [" " * 20 + "".join(h.rjust(w) for h in heads)]
    lines += [name.ljust(20) + "".join(v.rjust(w) for v in values) for name, values in rows]
    return "\n".join(lines)
