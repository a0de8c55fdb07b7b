"""CNNClassifier: a convolutional softmax classifier trained by layer separation on
mini-batches (Algorithm 2 and MATH.md §5-§6) or by mini-batch gradient descent (the
CE-CNN baseline, MATH.md §7)."""
import math
import numbers
import time
import warnings

import numpy as np
from scipy.special import log_softmax

from ._activations import ACTIVATION_CODES
from ._base import BaseEstimator, ClassifierMixin
from ._cnn_sweep import CNN_BACKENDS, Architecture, CNNForward, CNNGDState, CNNLySepState
from ._sweep import LineSearch
from ._threads import blas_threads
from ._validation import (check_choice, check_dtype, check_float, check_int,
                          check_is_fitted, check_random_state, check_X, check_y)
from .exceptions import NumericalWarning

SOLVERS = ("lysep", "gd")
POOLS = ("avg", "max")
Z_STEPS = ("per_sample", "shared")


def init_cnn_parameters(arch, rng, dtype):
    """Every weight and bias uniform on [-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in =
    C_in k^2 for conv layers (PyTorch's default for Conv2d and Linear, MATH.md §1).
    Drawn in float64, so both dtypes start at the same point from one seed."""
    weights, biases = [], []
    for (w_shape, b_shape), fan_in in zip(arch.param_shapes(), arch.fan_ins()):
        bound = 1.0 / math.sqrt(fan_in)
        weights.append(rng.uniform(-bound, bound, w_shape).astype(dtype))
        biases.append(rng.uniform(-bound, bound, b_shape).astype(dtype))
    return weights, biases


def _int_tuple(value, name, minimum, allow_empty=True):
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        value = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of integers >= {minimum}, "
                         f"got {value!r}") from None
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return tuple(check_int(v, f"each entry of {name}", minimum) for v in value)


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """Convolutional softmax cross-entropy classifier trained by layer separation.

    Architecture (MATH.md §5): ``len(conv_channels)`` conv layers, each
    conv -> activation -> pool (non-overlapping ``q x q``), the last one flattened, then
    the dense layers ``hidden_layer_sizes`` and the output layer.

    Training works on mini-batches (MATH.md §6): a batch of ``batch_size`` samples is
    drawn (without replacement, reshuffling each epoch), its auxiliary variables are
    initialised by a forward pass, ``refresh_every`` iterations (sweeps of Algorithm 2,
    or gradient steps) run on it, then the next batch is drawn.

    Parameters
    ----------
    conv_channels : tuple of int, default=(8, 8)
        Output channels of each conv layer (at least one layer).
    kernel_size, stride, padding : int, default=3, 1, 1
        Square kernel, stride and zero padding of every conv layer.
    pool : {"avg", "max"}, default="avg"
        Pooling after every conv layer.
    pool_size : int or tuple of int, default=2
        Window q of the pooling, one value for all layers or one per layer (1: no
        pooling after that layer).  Each conv output must be divisible by its q.
    hidden_layer_sizes : tuple of int, default=(64,)
        Hidden dense layers after the flattened conv output; ``solver="lysep"`` needs
        at least one.
    activation : {"tanh", "sigmoid", "relu", "softplus"}, default="tanh"
    solver : {"lysep", "gd"}, default="lysep"
        ``"lysep"``: one sweep of Algorithm 2 per iteration.  ``"gd"``: one gradient
        step with step size ``learning_rate_init`` on the batch's mean cross-entropy.
    batch_size : int, default=1000
        Samples per batch (the whole set if larger).
    refresh_every : int, default=10
        Iterations per batch (the paper's T).
    max_iter : int, default=500
        Total iterations (sweeps or gradient steps).
    learning_rate_init : float, default=0.1
        Step size of ``solver="gd"``.
    penalty_scale : float, default=0.01
        The multiplier s on the penalty weights (MATH.md §3); the bound constant is
        ``C(s) = e * max(1, 1/s)``.
    z_step : {"per_sample", "shared"}, default="per_sample"
        Line search on the auxiliary variables: one step per sample or one shared step.
    eval_every : int or None, default=None
        The curves are recorded before training and after every ``eval_every``
        iterations (and after the last); None means ``refresh_every`` (once per batch).
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
    random_state : None, int or numpy.random.Generator, default=None
        Seeds the initialisation and the batch draws.
    verbose : bool, default=False
    n_threads : int, default=1
        BLAS threads while fitting and predicting; -1 leaves BLAS at its default.
    backend : {"compiled", "reference"}, default="compiled"

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coefs_ : list of ndarray
        Conv kernels as ``Kmat`` of shape (k*k*C_in, C_out) (row ``(di*k + dj)*C_in + c``),
        then the dense weights of shape (n_in, n_out).  ``conv_kernels_`` gives the
        conv kernels in PyTorch's layout (C_out, C_in, k, k).
    intercepts_ : list of ndarray
    input_shape_ : tuple
        (H, W, C) of one training image.
    n_iter_ : int
    curve_iterations_ : list of int
        Iteration numbers at which the curves below were recorded.
    loss_curve_, accuracy_curve_ : list of float
        Cross-entropy and accuracy of the true network on the FULL training set.
    batch_loss_curve_ : list of float
        Cross-entropy of the true network on the current batch.
    surrogate_curve_ : list of float or None
        The layer separation loss J of the current batch (lysep only).  Theorem B holds
        batch-wise: ``batch_loss_curve_[t] <= bound_constant_ * surrogate_curve_[t]``;
        J is non-increasing while one batch is in use and restarts at the batch's
        loss when a new batch is drawn.
    bound_constant_ : float or None
    loss_ : float
        Final full-training-set cross-entropy.
    """

    def __init__(self, conv_channels=(8, 8), kernel_size=3, stride=1, padding=1, pool="avg",
                 pool_size=2, hidden_layer_sizes=(64,), activation="tanh", solver="lysep", *,
                 batch_size=1000, refresh_every=10, max_iter=500, learning_rate_init=0.1,
                 penalty_scale=0.01, z_step="per_sample", eval_every=None,
                 dtype=np.float64, random_state=None, verbose=False, n_threads=1,
                 backend="compiled"):
        self.conv_channels = conv_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.pool = pool
        self.pool_size = pool_size
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.batch_size = batch_size
        self.refresh_every = refresh_every
        self.max_iter = max_iter
        self.learning_rate_init = learning_rate_init
        self.penalty_scale = penalty_scale
        self.z_step = z_step
        self.eval_every = eval_every
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.n_threads = n_threads
        self.backend = backend

    # -- validation --------------------------------------------------------------
    def _validate_params(self):
        channels = _int_tuple(self.conv_channels, "conv_channels", 1, allow_empty=False)
        hidden = _int_tuple(self.hidden_layer_sizes, "hidden_layer_sizes", 1)
        pools = _int_tuple(self.pool_size, "pool_size", 1, allow_empty=False)
        if len(pools) == 1:
            pools = pools * len(channels)
        if len(pools) != len(channels):
            raise ValueError(f"pool_size has {len(pools)} entries but there are "
                             f"{len(channels)} conv layers")
        check_int(self.kernel_size, "kernel_size", 1)
        check_int(self.stride, "stride", 1)
        check_int(self.padding, "padding", 0)
        check_choice(self.pool, "pool", POOLS)
        check_choice(self.activation, "activation", ACTIVATION_CODES)
        check_choice(self.solver, "solver", SOLVERS)
        check_choice(self.z_step, "z_step", Z_STEPS)
        check_choice(self.backend, "backend", CNN_BACKENDS)
        if self.solver == "lysep" and not hidden:
            raise ValueError("solver='lysep' needs at least one hidden dense layer; "
                             "set hidden_layer_sizes to e.g. (64,)")
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.refresh_every, "refresh_every", 1)
        check_int(self.max_iter, "max_iter", 1)
        if self.eval_every is not None:
            check_int(self.eval_every, "eval_every", 1)
        check_float(self.learning_rate_init, "learning_rate_init", low=0)
        check_float(self.penalty_scale, "penalty_scale", low=0)
        if self.n_threads != -1:
            check_int(self.n_threads, "n_threads (or -1 for the BLAS default)", 1)
        return channels, hidden, pools, check_dtype(self.dtype)

    @staticmethod
    def _images(X, dtype, shape=None):
        """X (n, H, W) or (n, C, H, W) -> C-contiguous NHWC array of `dtype`."""
        try:
            arr = np.asarray(X)
        except Exception as exc:  # ragged lists and other unconvertible input
            raise ValueError(f"X could not be converted to a numeric array: {exc}") from None
        if arr.ndim not in (3, 4):
            raise ValueError(f"X must be images of shape (n, H, W) or (n, C, H, W), got "
                             f"{arr.ndim} dimension(s)")
        flat = check_X(arr.reshape(arr.shape[0], -1), dtype)
        imgs = flat.reshape(arr.shape)
        imgs = imgs[..., None] if imgs.ndim == 3 else imgs.transpose(0, 2, 3, 1)
        imgs = np.ascontiguousarray(imgs)
        if shape is not None and imgs.shape[1:] != tuple(shape):
            H, W, C = shape
            raise ValueError(f"X has images of shape (C, H, W) = {imgs.shape[3:] + imgs.shape[1:3]}, "
                             f"but the model was fitted on ({C}, {H}, {W})")
        return imgs

    # -- fitting -----------------------------------------------------------------
    def fit(self, X, y):
        """Train on images X, shape (n, H, W) or (n, C, H, W), and labels y."""
        dtype = self._validate_params()[3]
        X = self._images(X, dtype)
        classes, y_enc = check_y(y, X.shape[0])
        arch = self._architecture(X.shape[1:], classes.shape[0])
        self.classes_ = classes
        self.input_shape_ = X.shape[1:]
        self.n_features_in_ = int(np.prod(X.shape[1:]))
        self._arch = arch
        rng = check_random_state(self.random_state)
        weights, biases = init_cnn_parameters(arch, rng, dtype)
        self.loss_curve_, self.accuracy_curve_, self.batch_loss_curve_ = [], [], []
        self.curve_iterations_ = []
        self.surrogate_curve_ = [] if self.solver == "lysep" else None
        self.n_iter_ = 0
        self.bound_constant_ = math.e * max(1.0, 1.0 / self.penalty_scale) \
            if self.solver == "lysep" else None
        with blas_threads(self.n_threads):
            self._train(CNN_BACKENDS[self.backend], arch, X, y_enc, weights, biases, rng)
        return self

    def _architecture(self, input_shape, n_classes):
        """The layer geometry for images of `input_shape` (H, W, C)."""
        channels, hidden, pools, _ = self._validate_params()
        return Architecture(tuple(input_shape), channels, self.kernel_size, self.stride,
                            self.padding, pools, self.pool, hidden, n_classes)

    def save(self, path):
        """Write the fitted model to `path` (npz + JSON metadata; see ``lysep.load``)."""
        from ._persistence import save
        return save(self, path)

    def _batches(self, n, rng):
        """Index arrays of successive batches: epochs of a fresh permutation."""
        B = min(self.batch_size, n)
        order, pos = rng.permutation(n), 0
        while True:
            if pos + B > n:
                order, pos = np.concatenate([order[pos:], rng.permutation(n)]), 0
            yield np.sort(order[pos:pos + B])
            pos += B

    def _make_state(self, backend, arch, Xb, yb, weights, biases):
        if self.solver == "gd":
            return CNNGDState(backend, arch, Xb, yb, weights, biases, self.activation,
                              self.learning_rate_init)
        return CNNLySepState(backend, arch, Xb, yb, weights, biases, self.activation,
                             self.penalty_scale, per_sample=self.z_step == "per_sample",
                             search=LineSearch())

    def _train(self, backend, arch, X, y, weights, biases, rng):
        n = X.shape[0]
        lysep = self.solver == "lysep"
        full_batch = self.batch_size >= n
        eval_every = self.eval_every or self.refresh_every
        fwd = CNNForward(backend, arch, self.activation, X.dtype)
        batches = self._batches(n, rng)
        state = None

        def record(it):
            loss, acc = self._evaluate(fwd, X, y, state.W, state.b)
            if lysep:
                bl, _ = fwd.loss(state.X, state.y, state.W, state.b)
                J = state.J
            else:
                bl, _ = state.forward()
            self.curve_iterations_.append(it)
            self.loss_curve_.append(float(loss))
            self.accuracy_curve_.append(float(acc))
            self.batch_loss_curve_.append(float(bl))
            if lysep:
                self.surrogate_curve_.append(float(J))
            self.coefs_ = [W.copy() for W in state.W]
            self.intercepts_ = [b.copy() for b in state.b]
            self.loss_ = self.loss_curve_[-1]
            if self.verbose:
                extra = f", batch J = {J:.6f}" if lysep else ""
                print(f"Iteration {it}, loss = {loss:.6f}{extra}, accuracy = {acc:.4f}, "
                      f"{time.perf_counter() - t0:.2f}s")

        t0 = time.perf_counter()
        try:
            for it in range(self.max_iter):
                if state is None or (not full_batch and it % self.refresh_every == 0):
                    idx = next(batches)
                    state = self._make_state(backend, arch, X[idx], y[idx], weights, biases)
                    if it == 0:
                        record(0)
                if lysep:
                    state.sweep()
                else:
                    loss, _ = state.forward()
                    if not np.isfinite(loss):
                        weights[:], biases[:] = last_good
                        self.coefs_ = [W.copy() for W in weights]
                        self.intercepts_ = [b.copy() for b in biases]
                        warnings.warn("gradient descent produced a non-finite loss at iteration "
                                      f"{it + 1}; kept the last finite parameters. Lower "
                                      "learning_rate_init.", NumericalWarning, stacklevel=3)
                        break
                    last_good = [W.copy() for W in weights], [b.copy() for b in biases]
                    state.update()
                self.n_iter_ = it + 1
                if self.n_iter_ % eval_every == 0 or self.n_iter_ == self.max_iter:
                    record(self.n_iter_)
        except KeyboardInterrupt:
            self.n_iter_ = self.curve_iterations_[-1]     # the parameters last recorded
            warnings.warn(f"training interrupted; the model keeps the parameters of "
                          f"iteration {self.n_iter_}", UserWarning, stacklevel=3)

    def _evaluate(self, fwd, X, y, weights, biases):
        """Mean cross-entropy and accuracy of the true network on (X, y), in chunks."""
        ce, hits = 0.0, 0
        B = max(1, min(self.batch_size, 1000))
        for a in range(0, X.shape[0], B):
            G = fwd.logits(X[a:a + B], weights, biases)
            c, h = fwd.k.softmax_ce(G, y[a:a + B])
            ce, hits = ce + c, hits + h
        return ce / X.shape[0], hits / X.shape[0]

    # -- prediction --------------------------------------------------------------
    @property
    def conv_kernels_(self):
        """The conv kernels in PyTorch's layout (C_out, C_in, k, k)."""
        check_is_fitted(self)
        k, out = self.kernel_size, []
        for K in self.coefs_[:self._arch.n_conv]:
            C_in = K.shape[0] // (k * k)
            out.append(K.reshape(k, k, C_in, -1).transpose(3, 2, 0, 1).copy())
        return out

    def _logits(self, X):
        check_is_fitted(self)
        dtype = self.coefs_[0].dtype.type
        X = self._images(X, dtype, self.input_shape_)
        fwd = CNNForward(CNN_BACKENDS["compiled"], self._arch, self.activation, dtype)
        out = np.empty((X.shape[0], self.classes_.shape[0]), dtype)
        with blas_threads(self.n_threads):
            for a in range(0, X.shape[0], 1000):
                out[a:a + 1000] = fwd.logits(X[a:a + 1000], self.coefs_, self.intercepts_)
        return out

    def predict_log_proba(self, X):
        """Log of the class probabilities, shape (n_samples, n_classes)."""
        return log_softmax(self._logits(X), axis=1)

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits), shape (n_samples, n_classes)."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """Predicted class labels."""
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]
