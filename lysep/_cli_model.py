"""Command-line training and prediction: ``lysep train``, ``lysep predict``, ``lysep info``.

Data files: CSV with a header row (the ``--target`` column holds the labels, every other
column is a numeric feature) or NumPy ``.npz`` (arrays ``X`` and ``y``; ``--target`` names
the label array when it is not ``y``).
"""
import argparse
import csv
import json
import os
import platform
import sys
import time

import numpy as np

_ESTIMATOR_FLAGS = [
    # flag, type, parameter, help
    ("--hidden-layer-sizes", str, "hidden_layer_sizes", "comma-separated widths, e.g. 20,20,20"),
    ("--activation", str, "activation", "tanh, sigmoid, relu or softplus"),
    ("--solver", str, "solver", "lysep or gd"),
    ("--max-iter", int, "max_iter", "sweeps (lysep) or gradient steps (gd)"),
    ("--learning-rate-init", float, "learning_rate_init", "step size of solver gd"),
    ("--penalty-scale", float, "penalty_scale", "the penalty scale s of LySep"),
    ("--z-step", str, "z_step", "per_sample or shared line search on Z"),
    ("--ridge-fallback", str, "ridge_fallback", "min_norm or closest weights for an "
     "ill-conditioned layer (LySep)"),
    ("--tol", float, "tol", "stop when the objective improves by less than this ..."),
    ("--n-iter-no-change", int, "n_iter_no_change", "... for this many iterations"),
    ("--dtype", str, "dtype", "float64 or float32"),
    ("--random-state", int, "random_state", "seed of the initialisation"),
    ("--validation-fraction", float, "validation_fraction", "held out with --early-stopping"),
    ("--n-threads", int, "n_threads", "threads, to BLAS or to the narrow-layer kernels (-1: every core)"),
]


def add_commands(subparsers):
    """Register train / predict / info on an argparse subparsers object."""
    train = subparsers.add_parser(
        "train", help="train a classifier on a CSV or NPZ file",
        description="Train an FNNClassifier and write the model file and a JSON report.")
    train.add_argument("--data", required=True, help="training data (.csv or .npz)")
    train.add_argument("--target", default=None,
                       help="label column (CSV; required) or label array (NPZ; default y)")
    train.add_argument("--model", default="model.npz", help="model file to write")
    train.add_argument("--report", default=None,
                       help="JSON report to write (default: the model path with .json)")
    train.add_argument("--test-data", default=None, help="optional held-out data to score")
    for flag, typ, name, text in _ESTIMATOR_FLAGS:
        train.add_argument(flag, type=typ, dest=name, default=None, help=text)
    train.add_argument("--early-stopping", action="store_true", default=None,
                       help="stop on a held-out validation split, keep the best weights")
    train.add_argument("--low-memory", action="store_true", default=None,
                       help="store only the auxiliary variables Z (recompute residuals)")
    train.add_argument("--verbose", action="store_true", default=None,
                       help="print one line per iteration")
    train.set_defaults(func=_train)

    predict = subparsers.add_parser(
        "predict", help="predict with a saved model",
        description="Predict labels (or probabilities) for the rows of a CSV or NPZ file.")
    predict.add_argument("model", help="model file written by 'lysep train' or clf.save()")
    predict.add_argument("data", help="data (.csv with the training feature columns, or .npz with X)")
    predict.add_argument("--output", default=None, help="CSV to write (default: stdout)")
    predict.add_argument("--proba", action="store_true", help="write class probabilities")
    predict.set_defaults(func=_predict)

    info = subparsers.add_parser(
        "info", help="versions, compiled kernels, BLAS and threads",
        description="Print the package version, compiled kernels and dtypes, the SIMD "
                    "level of the activations, and the BLAS libraries with their threads.")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)


def _fail(message):
    print(f"lysep: error: {message}", file=sys.stderr)
    return 2


def read_table(path, target=None, feature_names=None):
    """Return (X, y or None, feature names or None) from a CSV or NPZ file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            if "X" not in f.files:
                raise ValueError(f"{path} has no array 'X' (found {sorted(f.files)})")
            key = target or "y"
            y = f[key] if key in f.files else None
            if target is not None and y is None:
                raise ValueError(f"{path} has no array {target!r}")
            return f["X"], y, None
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path} is empty")
    header, body = rows[0], rows[1:]
    if target is not None and target not in header:
        raise ValueError(f"--target {target!r} is not a column of {path}; columns: {header}")
    if feature_names is not None:
        missing = [c for c in feature_names if c not in header]
        if missing:
            raise ValueError(f"{path} lacks the model's feature columns {missing}")
        columns = list(feature_names)
    else:
        columns = [c for c in header if c != target]
    index = [header.index(c) for c in columns]
    try:
        X = np.array([[float(r[i]) for i in index] for r in body], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: non-numeric feature value ({exc})") from None
    y = np.array([r[header.index(target)] for r in body]) if target is not None else None
    if y is not None:
        try:                               # numeric labels stay numeric
            y = y.astype(np.int64) if all(v.lstrip("-").isdigit() for v in y) else y
        except ValueError:
            pass
    return X.reshape(len(body), len(columns)), y, columns


def _train(args):
    from . import __version__
    from ._fnn import FNNClassifier
    if not args.data.endswith(".npz") and args.target is None:
        return _fail("--target is required for CSV data (the label column)")
    try:
        X, y, names = read_table(args.data, args.target)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    if y is None:
        return _fail(f"{args.data} has no labels (array 'y' or --target)")
    params = {name: getattr(args, name) for _, _, name, _ in _ESTIMATOR_FLAGS}
    params["early_stopping"] = args.early_stopping
    params["verbose"] = args.verbose
    params["low_memory"] = args.low_memory
    params = {k: v for k, v in params.items() if v is not None}
    if "hidden_layer_sizes" in params:
        try:
            params["hidden_layer_sizes"] = tuple(
                int(w) for w in params["hidden_layer_sizes"].split(",") if w.strip())
        except ValueError:
            return _fail("--hidden-layer-sizes takes comma-separated integers, e.g. 20,20")
    try:
        clf = FNNClassifier(**params)
        t0 = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - t0
    except (ValueError, TypeError) as exc:
        return _fail(str(exc))
    if names is not None:
        clf.feature_names_in_ = np.asarray(names, dtype=object)
    model = clf.save(args.model)
    report = {"lysep_version": __version__, "model": model, "data": args.data,
              "params": {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in clf.get_params().items()
                         if k not in ("callback", "dtype")},
              "dtype": np.dtype(clf.dtype).name, "n_samples": int(X.shape[0]),
              "n_features": int(X.shape[1]), "classes": [str(c) for c in clf.classes_],
              "n_iter": clf.n_iter_, "fit_seconds": seconds,
              "final_loss": clf.loss_curve_[-1], "final_accuracy": clf.accuracy_curve_[-1],
              "loss_curve": clf.loss_curve_, "accuracy_curve": clf.accuracy_curve_,
              "surrogate_curve": clf.surrogate_curve_}
    if args.test_data:
        try:
            Xt, yt, _ = read_table(args.test_data, args.target, names)
        except (OSError, ValueError) as exc:
            return _fail(str(exc))
        report["test_accuracy"] = clf.score(Xt, yt)
    report_path = args.report or os.path.splitext(model)[0] + ".json"
    with open(report_path, "w") as fh:
        json.dump(report, fh, indent=1)
    print(f"trained {clf.solver} in {seconds:.2f}s: {clf.n_iter_} iterations, training loss "
          f"{report['final_loss']:.4f}, accuracy {report['final_accuracy']:.4f}"
          + (f", test accuracy {report['test_accuracy']:.4f}" if "test_accuracy" in report else ""))
    print(f"model: {model}\nreport: {report_path}")
    return 0


def _predict(args):
    from ._persistence import load
    try:
        clf = load(args.model)
        names = getattr(clf, "feature_names_in_", None)
        X, _, _ = read_table(args.data, None, None if names is None else list(names))
        out = clf.predict_proba(X) if args.proba else clf.predict(X)
    except (OSError, ValueError, TypeError) as exc:
        return _fail(str(exc))
    fh = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        writer = csv.writer(fh)
        if args.proba:
            writer.writerow([f"proba_{c}" for c in clf.classes_])
            writer.writerows([[repr(float(v)) for v in row] for row in out])
        else:
            writer.writerow(["prediction"])
            writer.writerows([[v] for v in out])
    finally:
        if args.output:
            fh.close()
    return 0


def info_record():
    """Versions, compiled kernels, SIMD level, the narrow kernels' width and OpenMP,
    and BLAS libraries (threadpoolctl)."""
    import scipy
    from threadpoolctl import threadpool_info

    from . import __version__, _activation, _fnn_blocks, _softmax
    from ._threads import blas_kernel_note
    kernels = {}
    for module in (_activation, _softmax, _fnn_blocks):
        for name in dir(module):
            fn = getattr(module, name)
            if callable(fn) and not name.startswith("_") and hasattr(fn, "__signatures__"):
                kernels[f"{module.__name__.split('.')[-1]}.{name}"] = sorted(
                    "float32" if "float" in sig and "double" not in sig else "float64"
                    for sig in fn.__signatures__)
    blas = [{k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                      "num_threads", "threading_layer", "filepath")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
    note = blas_kernel_note(_activation.simd_level(), blas)
    return {"lysep": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__,
            "platform": platform.platform(), "activation_simd": _activation.simd_level(),
            "narrow_width": {"float64": _fnn_blocks.narrow_width(8),
                             "float32": _fnn_blocks.narrow_width(4)},
            "openmp": _fnn_blocks.openmp_threads(2) > 1,
            "kernels": kernels, "blas": blas, "notes": [note] if note else []}


def _info(args):
    rec = info_record()
    if args.json:
        print(json.dumps(rec, indent=1))
        return 0
    print(f"lysep {rec['lysep']} (Python {rec['python']}, numpy {rec['numpy']}, "
          f"scipy {rec['scipy']})\nplatform: {rec['platform']}\n"
          f"activations: vectorised for {rec['activation_simd']}")
    w = rec["narrow_width"]
    print(f"narrow kernels (lysep's own products; their rows on n_threads OpenMP threads"
          f"{'' if rec['openmp'] else ': not built with OpenMP, one thread'}): layers of "
          f"up to {w['float64']} float64 or {w['float32']} float32 units\ncompiled kernels:")
    for name, dtypes in sorted(rec["kernels"].items()):
        print(f"  {name:32s} {', '.join(dtypes)}")
    print("BLAS (threadpoolctl):")
    for lib in rec["blas"]:
        print(f"  {lib['internal_api']} {lib['version']} ({lib['architecture']}), "
              f"{lib['num_threads']} threads: {lib['filepath']}")
    for note in rec["notes"]:
        print(f"note: {note}")
    return 0


def main(argv=None):
    """Stand-alone entry used until the package CLI registers these commands."""
    parser = argparse.ArgumentParser(prog="lysep")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
