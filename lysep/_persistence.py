"""Saving and loading fitted models: a documented, versioned, non-executable format.

A model file is a NumPy ``.npz`` archive (read with ``allow_pickle=False``) holding the
arrays ``coef_<i>``, ``intercept_<i>``, ``classes`` and one JSON document ``metadata``:
``{"format": "lysep-model", "format_version": 1, "estimator": "FNNClassifier" or "CNNClassifier",
"lysep_version": ..., "params": {...}, "attributes": {...}}``.
"""
import json
import os

import numpy as np

from ._validation import check_is_fitted

FORMAT = "lysep-model"
FORMAT_VERSION = 1
_CURVES = ("loss_curve_", "accuracy_curve_", "surrogate_curve_", "validation_scores_")
_SCALARS = ("n_features_in_", "n_iter_", "loss_", "bound_constant_", "best_validation_score_")
_CNN = ("batch_loss_curve_", "curve_iterations_", "input_shape_")


def _json_param(name, value):
    if name == "dtype":
        return np.dtype(value).name
    if name == "callback":
        return None                       # code is never stored
    if name == "random_state" and not (value is None or isinstance(value, (int, np.integer))):
        return None
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def save(estimator, path: "str | os.PathLike") -> str:
    """Write a fitted estimator to `path` (a .npz file); returns the path written."""
    from . import __version__
    check_is_fitted(estimator)
    classes = np.asarray(estimator.classes_)
    if classes.dtype == object:
        if not all(isinstance(c, str) for c in classes):
            raise ValueError("cannot save class labels of mixed or object type; "
                             "use string or numeric labels")
        classes = classes.astype(str)
    arrays = {"classes": classes}
    for i, (W, b) in enumerate(zip(estimator.coefs_, estimator.intercepts_)):
        arrays[f"coef_{i}"], arrays[f"intercept_{i}"] = W, b
    attributes = {k: getattr(estimator, k) for k in _CURVES + _SCALARS + _CNN
                  if hasattr(estimator, k)}
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        attributes["feature_names_in_"] = [str(n) for n in names]
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "estimator": type(estimator).__name__, "lysep_version": __version__,
            "n_layers": len(estimator.coefs_),
            "params": {k: _json_param(k, v) for k, v in estimator.get_params().items()},
            "attributes": attributes}
    path = os.fspath(path)
    with open(path, "wb") as fh:          # np.savez on a name would append ".npz"
        np.savez(fh, metadata=np.array(json.dumps(meta)), **arrays)
    return path


def load(path: "str | os.PathLike"):
    """Read a model written by ``save``; fails clearly on other files and versions."""
    from ._cnn import CNNClassifier
    from ._fnn import FNNClassifier
    try:
        archive = np.load(os.fspath(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a lysep model file ({exc})") from None
    with archive as f:
        if "metadata" not in f.files:
            raise ValueError(f"{path} is not a lysep model file (no metadata)")
        meta = json.loads(str(f["metadata"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a lysep model file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has lysep model format version "
                             f"{meta.get('format_version')}; this lysep "
                             f"reads version {FORMAT_VERSION}. Re-save the model with a "
                             "matching lysep version.")
        estimators = {"FNNClassifier": FNNClassifier, "CNNClassifier": CNNClassifier}
        if meta["estimator"] not in estimators:
            raise ValueError(f"{path} holds a {meta['estimator']}, which this lysep cannot load")
        params = dict(meta["params"])
        params["dtype"] = np.dtype(params["dtype"]).type
        for key in ("hidden_layer_sizes", "conv_channels", "pool_size", "image_shape"):
            if isinstance(params.get(key), list):
                params[key] = tuple(params[key])
        est = estimators[meta["estimator"]](**params)
        n = meta["n_layers"]
        est.coefs_ = [f[f"coef_{i}"] for i in range(n)]
        est.intercepts_ = [f[f"intercept_{i}"] for i in range(n)]
        est.classes_ = f["classes"]
    for key, value in meta["attributes"].items():
        setattr(est, key, np.asarray(value, dtype=object) if key == "feature_names_in_" else value)
    if isinstance(est, CNNClassifier):
        est.input_shape_ = tuple(est.input_shape_)
        est._arch = est._architecture(est.input_shape_, len(est.classes_))
    return est
