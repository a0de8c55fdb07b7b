"""Input validation, done before any kernel runs (kernels trust their inputs)."""
import math
import numbers

import numpy as np

import warnings

from .exceptions import DataConversionWarning, NotFittedError, ScaleWarning, _with_sklearn

FLOAT_DTYPES = (np.float64, np.float32)


def check_dtype(dtype):
    """Return np.float32 or np.float64, or raise naming the argument."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}")
    return dt.type


def check_X(X, dtype, *, name="X", n_features=None, estimator="the model"):
    """Return X as a C-contiguous 2-D float array of `dtype`, checked for finiteness."""
    if _is_sparse(X):
        raise TypeError(f"Sparse data was passed for {name}; lysep needs dense data: "
                        "convert with X.toarray()")
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and other unconvertible input
        raise ValueError(f"{name} could not be converted to a numeric array: {exc}") from None
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} is complex; pass real values")
    if arr.dtype.kind in "USVaMm":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}; "
                        "encode non-numeric features first")
    if arr.ndim != 2:
        hint = (" Reshape your data either using X.reshape(-1, 1) if it has a single "
                "feature or X.reshape(1, -1) if it is a single sample.") if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-dimensional (n_samples, n_features), "
                         f"got {arr.ndim} dimension(s).{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum "
                         f"of 1 is required: {name} is empty")
    if arr.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum "
                         f"of 1 is required: {name} has no features")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"X has {arr.shape[1]} features, but {estimator} is expecting "
                         f"{n_features} features as input (the number it was fitted with)")
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name} has dtype object and could not be converted to numbers "
                            f"({exc}); encode non-numeric features first") from None
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity (or values too large for "
                         f"{np.dtype(dtype).name}); remove or impute them before fitting")
    return arr


def check_image_rows(X, dtype, image_shape=None, *, n_features=None, estimator="the model"):
    """Return (rows, shape): X checked as check_X does, one image per C-contiguous row,
    and the (C, H, W) of its images (None when X came as flat rows).

    X holds images (n, H, W) or (n, C, H, W), or, when `image_shape` is set, flat rows
    (n, C*H*W) in (C, H, W) order (what a Pipeline's transformers pass on)."""
    if _is_sparse(X):
        check_X(X, dtype)                                  # raises its TypeError
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and other unconvertible input
        raise ValueError(f"X could not be converted to a numeric array: {exc}") from None
    if arr.ndim <= 2 and image_shape is not None:       # flat rows (check_X: 1-D hint)
        return check_X(arr, dtype, n_features=n_features, estimator=estimator), None
    if arr.ndim == 2:
        raise ValueError("X is 2-dimensional (n_samples, n_features): pass images of "
                         "shape (n, H, W) or (n, C, H, W), or set image_shape=(C, H, W) "
                         "to pass each image as a flat row")
    if arr.ndim not in (3, 4):
        raise ValueError(f"X must be images of shape (n, H, W) or (n, C, H, W) (or flat rows "
                         f"with image_shape set), got {arr.ndim} dimension(s)")
    shape = arr.shape[1:] if arr.ndim == 4 else (1, *arr.shape[1:])
    return check_X(arr.reshape(arr.shape[0], math.prod(arr.shape[1:])), dtype), shape


def images_nhwc(rows, shape, image_shape, expected="image_shape is"):
    """Rows of images (C, H, W) as the C-contiguous NHWC array the kernels take; rows
    without a shape are flat images of `image_shape`, else `shape` must match it."""
    if shape is None:
        need = math.prod(image_shape)
        if rows.shape[1] != need:
            raise ValueError(f"X has {rows.shape[1]} feature(s) per sample, but "
                             f"image_shape={tuple(image_shape)} needs C*H*W = {need}")
        shape = image_shape
    elif image_shape is not None and tuple(shape) != tuple(image_shape):
        raise ValueError(f"X has images of shape (C, H, W) = {tuple(shape)}, but "
                         f"{expected} {tuple(image_shape)}")
    return np.ascontiguousarray(rows.reshape(-1, *shape).transpose(0, 2, 3, 1))


def _is_sparse(X):
    try:
        import scipy.sparse
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return scipy.sparse.issparse(X)


def check_y(y, n_samples):
    """Return (classes, encoded labels as int64) for labels of any hashable type."""
    if y is None:
        raise ValueError("this estimator requires y to be passed, but the target y is None")
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; it was "
                      "raveled to shape (n_samples,).", _with_sklearn(DataConversionWarning),
                      stacklevel=3)
        arr = arr.ravel()
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-dimensional (n_samples,), got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"X and y have inconsistent numbers of samples: "
                         f"{n_samples} and {arr.shape[0]}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("y contains NaN or infinity")
    if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
        raise ValueError("Unknown label type: continuous. y holds non-integer floats: a "
                         "classifier needs class labels")
    if arr.dtype.kind == "c":
        raise TypeError("y is complex; pass class labels")
    try:
        classes, encoded = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise TypeError(f"y labels must be mutually comparable: {exc}") from None
    if classes.shape[0] < 2:
        raise ValueError(f"y has {classes.shape[0]} class(es); a classifier needs at "
                         "least 2 distinct labels")
    return classes, encoded.astype(np.int64)


def check_is_fitted(estimator, attribute="coefs_"):
    if not hasattr(estimator, attribute):
        raise _with_sklearn(NotFittedError)(f"This {type(estimator).__name__} instance is not fitted yet; "
                             "call 'fit' with appropriate arguments first")


def check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(value, name, *, low=None, strict=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_training_params(est):
    """The parameters both estimators share: budget, step size, penalty, stopping
    rules, callback and BLAS threads."""
    check_int(est.max_iter, "max_iter", 1)
    check_int(est.n_iter_no_change, "n_iter_no_change", 1)
    check_float(est.learning_rate_init, "learning_rate_init", low=0)
    check_float(est.penalty_scale, "penalty_scale", low=0)
    check_float(est.tol, "tol", low=0, strict=False)
    if est.early_stopping:
        check_float(est.validation_fraction, "validation_fraction", low=0)
        if est.validation_fraction >= 1:
            raise ValueError("validation_fraction must be in (0, 1), got "
                             f"{est.validation_fraction!r}")
    if est.callback is not None and not callable(est.callback):
        raise ValueError(f"callback must be callable or None, got {est.callback!r}")
    if est.n_threads != -1:
        check_int(est.n_threads, "n_threads (or -1 for the BLAS default)", 1)


def check_random_state(seed):
    """None, an int or a numpy Generator -> a numpy Generator."""
    if seed is None or isinstance(seed, (numbers.Integral, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.RandomState):
        return np.random.default_rng(seed.randint(np.iinfo(np.int32).max))
    raise ValueError(f"random_state must be None, an int or a numpy Generator, got {seed!r}")


#: root-mean-square feature size above which fit() warns (see check_feature_scale)
MAX_FEATURE_RMS = 100.0


def check_feature_scale(X):
    """Warn when a feature's root-mean-square exceeds MAX_FEATURE_RMS.

    The default initialisation draws first-layer weights on +-1/sqrt(n_features), so
    features of size 1e2 and more push every tanh/sigmoid unit into saturation, where
    both solvers learn slowly (measured: 4 hidden layers of 20, circle data scaled by
    1e6: 59% training accuracy after 40 sweeps against 99% standardised)."""
    rms = np.sqrt(np.mean(np.square(X, dtype=np.float64), axis=0))
    worst = float(rms.max())
    if worst > MAX_FEATURE_RMS:
        warnings.warn(f"X has features of magnitude up to {worst:.3g}; at that scale the "
                      "hidden units saturate and training is slow. Standardise the features "
                      "(e.g. sklearn.preprocessing.StandardScaler) before fitting.",
                      ScaleWarning, stacklevel=3)
