"""FNNClassifier: a fully connected softmax classifier trained by layer separation
(Algorithm 1, MATH.md §4) or by full-batch gradient descent (the CE-FNN baseline)."""
import math
import time
import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_softmax

from ._activations import ACTIVATION_CODES
from ._backend import BACKENDS
from ._base import BaseEstimator, ClassifierMixin
from ._sweep import RIDGE_FALLBACKS, Forward, GDState, LineSearch, LySepState
from ._threads import blas_threads, split_threads
from ._training import (Progress, StopRule, begin_fit, feature_names, stratified_split,
                        warn_interrupted, warn_stop)
from ._validation import (check_choice, check_dtype, check_feature_scale, check_int,
                          check_is_fitted, check_random_state, check_training_params, check_X,
                          check_y)
from .exceptions import NumericalWarning

SOLVERS = ("lysep", "gd")
Z_STEPS = ("per_sample", "shared")


def init_parameters(layer_sizes, rng, dtype):
    """Weights and biases uniform on [-1/sqrt(fan_in), 1/sqrt(fan_in)] (MATH.md §1;
    PyTorch's default for Linear).  Drawn in float64, so float32 and float64 fits
    from the same seed start at the same point."""
    weights, biases = [], []
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        bound = 1.0 / math.sqrt(n_in)
        weights.append(rng.uniform(-bound, bound, (n_in, n_out)).astype(dtype))
        biases.append(rng.uniform(-bound, bound, n_out).astype(dtype))
    return weights, biases


#: During training the floor grows with the weights' norms.  On the circle (3000 points,
#: float32, 300 sweeps) 5 hidden layers of 20 trained as in float64 with the floor at up
#: to 3e-3 of J, while 9 layers stalled at 95% (float64: 99.3%) from sweep 10, where the
#: floor was 5e-2 of J; checked every ROUNDING_CHECK_EVERY sweeps, in float32 only.
ROUNDING_STALL = 1e-2
ROUNDING_CHECK_EVERY = 10


def _memory_message(X, weights, low_memory):
    """What a LySep fit that ran out of memory needed, and what low_memory=True needs."""
    z = sum(X.shape[0] * W.shape[1] for W in weights[:-1]) * X.itemsize
    widest = max(X.shape[0] * W.shape[1] for W in weights[:-1]) * X.itemsize
    lean = (z + widest) / 2**30
    if low_memory:
        return (f"LySep with low_memory=True needs about {lean:,.2f} GiB for the auxiliary "
                "variables Z and one candidate array (n_samples x the hidden widths); "
                "train on fewer samples, narrower layers or dtype=np.float32")
    full = (2 * z + 4 * widest) / 2**30
    return (f"LySep needs about {full:,.2f} GiB for the auxiliary variables Z, their "
            f"residuals and the candidate arrays; low_memory=True stores only Z and one "
            f"candidate (about {lean:,.2f} GiB) and recomputes the residuals")


def _warn_rounding(state, threshold, consequence, stacklevel):
    """Warn (and return True) if rounding alone puts more than `threshold`·J into J."""
    floor = state.rounding_floor()
    if not floor > threshold * state.J:
        return False
    fix = ("Use dtype=numpy.float64 for deep networks." if state.X.dtype == np.float32 else
           "There is no finer dtype: a shallower network lowers it.")
    warnings.warn(f"in {np.dtype(state.X.dtype).name} the residuals of this network carry "
                  f"rounding of about {floor:.3g} in J (J = {state.J:.3g}): the penalty "
                  f"weights grow with depth, and {consequence}. {fix}", NumericalWarning,
                  stacklevel=stacklevel)
    return True


def _append(curves, loss, acc, J):
    loss_curve, accuracy_curve, surrogate_curve = curves
    loss_curve.append(float(loss))
    accuracy_curve.append(float(acc))
    if surrogate_curve is not None:
        surrogate_curve.append(float(J))


class FNNClassifier(ClassifierMixin, BaseEstimator):
    """Fully connected softmax cross-entropy classifier trained by layer separation.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(20, 20, 20)
        Width of each hidden layer; ``solver="lysep"`` needs at least one.
    activation : {"tanh", "sigmoid", "relu", "softplus"}, default="tanh"
        Hidden activation.
    solver : {"lysep", "gd"}, default="lysep"
        ``"lysep"``: Algorithm 1 of MATH.md (one sweep of block updates per
        iteration).  ``"gd"``: full-batch gradient descent by backpropagation with the
        fixed step ``learning_rate_init`` (the paper's CE-FNN baseline).
    max_iter : int, default=300
        Number of sweeps (lysep) or gradient steps (gd).
    learning_rate_init : float, default=0.1
        Step size of ``solver="gd"``.
    penalty_scale : float, default=0.01
        The multiplier ``s`` on the penalty weights omega_l (MATH.md §3).  The true
        loss is bounded by ``C(s) * J`` with ``C(s) = e * max(1, 1/s)``, available as
        ``bound_constant_`` after fit.
    z_step : {"per_sample", "shared"}, default="per_sample"
        Line search on the auxiliary variables: one step size per sample (exact block
        descent, MATH.md §4) or the paper's single shared step.
    low_memory : bool, default=False
        ``solver="lysep"`` only: store the auxiliary variables Z_l and one candidate
        array instead of also every layer's residual and three candidates (peak
        about 1.25 m N n numbers instead of about 3 m N n for m hidden layers of width
        n).  Every block then recomputes the residuals and activations it reads, a
        block of rows at a time: two more products per Z block and one per bias block
        (measured in ``bench/``).  Same method, same guarantees; the trajectory agrees
        with the default's to rounding.  Needs ``z_step="per_sample"``: with a shared
        step the Z blocks' work arrays hold every row, and nothing would be saved.
    ridge_fallback : {"min_norm", "closest"}, default="closest"
        ``solver="lysep"`` only: the weight update when a layer's Gram matrix is too
        ill conditioned for Cholesky (common in deep networks, whose hidden layers
        become nearly collinear).  ``"min_norm"``: the minimum-norm least-squares
        weights, which drop the part of the current weights in the discarded
        directions and are then often rejected by the J safeguard.  ``"closest"``: the
        least-squares weights closest to the current ones (current weights plus the
        minimum-norm change), which keep that part; they are rejected far less often
        and train deep networks further (docs/guide.md, "Numerical behaviour").
    tol : float, default=0.0
        Training stops when the optimised objective (J for lysep, the training loss
        for gd) has not decreased by more than ``tol`` for ``n_iter_no_change``
        consecutive iterations.
    n_iter_no_change : int, default=10
        See ``tol``.
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
        Precision of the parameters and of every kernel.
    random_state : None, int or numpy.random.Generator, default=None
        Seeds the initialisation.
    warm_start : bool, default=False
        Continue from the previous fit's parameters (and, for lysep on the same data,
        from its auxiliary variables and step sizes).
    verbose : bool, default=False
        Show a progress bar with the live loss, J and accuracy (tqdm, when installed:
        ``pip install lysep[progress]``), else print one line per iteration.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop when its
        accuracy has not improved by more than ``tol`` for ``n_iter_no_change``
        iterations, and keep the parameters with the best validation accuracy.
    validation_fraction : float, default=0.1
        Share of the training data held out when ``early_stopping`` is on.
    callback : callable or None, default=None
        Called after every iteration with a dict (iteration, loss, accuracy, surrogate,
        validation_score, time and the sweep's diagnostics: step sizes, failed rows,
        rejected blocks, blocks not computed because their layers sit at their fit,
        per-block seconds); returning True stops training.
    n_threads : int, default=1
        BLAS threads used while fitting and predicting; -1 leaves BLAS at its own
        default (all cores).  One BLAS thread is fastest for narrow layers and safe
        when several fits run in parallel processes; raise it for layers of several
        hundred units.  The threads can instead share the rows of lysep's own kernels
        between narrow layers (widths of at most five SIMD vectors: 20 float64 or 40
        float32 units on AVX2, twice that on AVX-512), which do not call BLAS: the
        forward pass (fit's loss evaluations, predict), GD's backpropagation and, with
        ``solver="lysep"``, the hidden Z steps and ridge blocks; their results do not
        depend on it, bit for bit (BLAS's threaded products only to rounding).  The threads go to one of the two, never both (two
        busy thread pools on the same cores made sweeps 1.1-1.5x slower than one
        thread): to these kernels when the layers between narrow layers hold at least a
        third of the products' work (n_in * n_out summed over the hidden layers'
        weights), BLAS then running one thread; else to BLAS.
    backend : {"compiled", "reference"}, default="compiled"
        The compiled kernels or the NumPy reference (slow; for testing).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coefs_ : list of ndarray
        ``coefs_[i]`` has shape (n_in, n_out), as in scikit-learn's MLPClassifier.
    intercepts_ : list of ndarray
    n_features_in_ : int
    n_iter_ : int
    loss_curve_ : list of float
        Training cross-entropy of the true network before training, then after each
        iteration.
    surrogate_curve_ : list of float or None
        The layer separation loss J at the same points (``solver="lysep"``).
    accuracy_curve_ : list of float
        Training accuracy of the true network at the same points.
    bound_constant_ : float
        ``C(s)``: every entry of ``loss_curve_`` is at most ``C(s)`` times the entry of
        ``surrogate_curve_`` (Theorem B of MATH.md).
    loss_ : float
        Final training cross-entropy.
    """

    def __init__(self, hidden_layer_sizes=(20, 20, 20), activation="tanh", solver="lysep", *,
                 max_iter=300, learning_rate_init=0.1, penalty_scale=0.01,
                 z_step="per_sample", low_memory=False, ridge_fallback="closest", tol=0.0,
                 n_iter_no_change=10, dtype=np.float64,
                 random_state=None, warm_start=False, verbose=False, early_stopping=False,
                 validation_fraction=0.1, callback=None, n_threads=1, backend="compiled"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.max_iter = max_iter
        self.learning_rate_init = learning_rate_init
        self.penalty_scale = penalty_scale
        self.z_step = z_step
        self.low_memory = low_memory
        self.ridge_fallback = ridge_fallback
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.callback = callback
        self.n_threads = n_threads
        self.backend = backend

    # -- validation --------------------------------------------------------------
    def _validate_params(self):
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, bool):
            sizes = (sizes,)
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise ValueError("hidden_layer_sizes must be a tuple of positive integers, "
                             f"got {self.hidden_layer_sizes!r}") from None
        for s in sizes:
            check_int(s, "each entry of hidden_layer_sizes", 1)
        check_choice(self.solver, "solver", SOLVERS)
        if self.solver == "lysep" and not sizes:
            raise ValueError("solver='lysep' needs at least one hidden layer; "
                             "set hidden_layer_sizes to e.g. (20,)")
        check_choice(self.activation, "activation", ACTIVATION_CODES)
        check_choice(self.z_step, "z_step", Z_STEPS)
        if not isinstance(self.low_memory, (bool, np.bool_)):
            raise ValueError(f"low_memory must be True or False, got {self.low_memory!r}")
        if self.low_memory and self.solver == "lysep" and self.z_step == "shared":
            raise ValueError("low_memory=True needs z_step='per_sample': a shared step couples "
                             "every sample, so the Z blocks' work arrays hold all of them and "
                             "nothing would be saved")
        check_choice(self.ridge_fallback, "ridge_fallback", RIDGE_FALLBACKS)
        check_choice(self.backend, "backend", BACKENDS)
        check_training_params(self)
        return tuple(int(s) for s in sizes), check_dtype(self.dtype)

    # -- fitting -----------------------------------------------------------------
    def fit(self, X: ArrayLike, y: ArrayLike) -> "FNNClassifier":
        """Train on X (n_samples, n_features) and labels y (any hashable type)."""
        sizes, dtype = self._validate_params()
        names = feature_names(X)
        X = check_X(X, dtype)
        classes, y_enc = check_y(y, X.shape[0])
        check_feature_scale(X)
        backend = BACKENDS[self.backend]
        continuing = self.warm_start and hasattr(self, "coefs_")
        rng = check_random_state(self.random_state)
        if continuing:
            self._check_warm_start(X, classes, sizes, dtype)
            weights = [np.array(W, dtype=dtype) for W in self.coefs_]
            biases = [np.array(b, dtype=dtype) for b in self.intercepts_]
        else:
            self.classes_ = classes
            self.n_features_in_ = X.shape[1]
            weights, biases = init_parameters((X.shape[1], *sizes, classes.shape[0]), rng, dtype)
            self.loss_curve_, self.accuracy_curve_ = [], []
            self.surrogate_curve_ = [] if self.solver == "lysep" else None
            self.n_iter_ = 0
            self._state = None
        X, y_enc, validation = begin_fit(
            self, X, y_enc, names, continuing,
            lambda y: stratified_split(y, self.validation_fraction, rng))
        # one thread pool at a time: lysep's kernels or BLAS (see split_threads)
        n_blas, self._kernel_threads = split_threads(
            self.n_threads, [W.shape for W in weights[:-1]], X.itemsize)
        with blas_threads(n_blas):
            self._train(backend, X, y_enc, weights, biases, continuing, validation)
        return self

    def _check_warm_start(self, X, classes, sizes, dtype):
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"warm_start: X has {X.shape[1]} features, the model has "
                             f"{self.n_features_in_}")
        if not np.array_equal(classes, self.classes_):
            raise ValueError("warm_start: y has different classes than the previous fit")
        if tuple(W.shape[1] for W in self.coefs_[:-1]) != sizes:
            raise ValueError("warm_start: hidden_layer_sizes changed since the previous fit")

    def _make_state(self, backend, X, y, weights, biases, continuing):
        if self.solver == "gd":
            return GDState(backend, X, y, weights, biases, self.activation,
                           self.learning_rate_init, self._kernel_threads)
        old = getattr(self, "_state", None)
        if (continuing and isinstance(old, LySepState) and old.X.shape == X.shape
                and old.X.dtype == X.dtype and np.array_equal(old.X, X)
                and np.array_equal(old.y, y) and old.s == self.penalty_scale
                and old.low_memory == bool(self.low_memory)
                and old.ridge_fallback == self.ridge_fallback
                and all(np.array_equal(a, c) for a, c in zip(old.W + old.b, weights + biases))):
            old.n_threads = self._kernel_threads   # results do not depend on it
            return old      # resume Z, step sizes and J exactly (not after early stopping
            #                 gave coefs_ the best validation weights instead of the last)
        try:
            state = LySepState(backend, X, y, weights, biases, self.activation,
                               self.penalty_scale, per_sample=self.z_step == "per_sample",
                               search=LineSearch(), low_memory=self.low_memory,
                               ridge_fallback=self.ridge_fallback,
                               n_threads=self._kernel_threads)
        except MemoryError:
            raise MemoryError(_memory_message(X, weights, self.low_memory)) from None
        # blocks late in training decrease J by ~1e-4..1e-6 of J: a floor above that
        # turns the J safeguard into a coin toss (measured on the circle: float32 stalls
        # at 14 and 19 hidden layers of 20, floors 3e-4 and 6 at J = 0.7)
        _warn_rounding(state, 1e-6, "LySep will stall", stacklevel=5)
        return state

    def _train(self, backend, X, y, weights, biases, continuing, validation=None):
        state = self._make_state(backend, X, y, weights, biases, continuing)
        lysep = self.solver == "lysep"
        fwd = Forward(backend, self.activation, X.dtype, self._kernel_threads)
        self._state = state if lysep else None
        curves = (self.loss_curve_, self.accuracy_curve_, self.surrogate_curve_)

        def measure():
            if lysep:
                loss, acc = fwd.loss(X, y, state.W, state.b)
                return loss, acc, state.J
            loss, acc = state.forward()
            return loss, acc, None

        def validation_score():
            if validation is None:
                return None
            return fwd.loss(validation[0], validation[1], state.W, state.b)[1]

        def publish(n_iter):
            # one dict update: an interrupt never leaves the attributes out of step
            self.__dict__.update(coefs_=[W.copy() for W in state.W],
                                 intercepts_=[b.copy() for b in state.b],
                                 loss_=self.loss_curve_[-1], n_iter_=n_iter)

        loss, acc, J = measure()
        if not (continuing and self.loss_curve_):
            _append(curves, loss, acc, J)
        publish(self.n_iter_)
        rule = StopRule(self.tol, self.n_iter_no_change, J if lysep else loss,
                        validating=validation is not None)
        stop = None
        t0 = time.perf_counter()
        progress = Progress(self.verbose, self.max_iter, self.solver)
        rounding_warned = False
        # float32 only: in float64 the estimate passes J on the 19-layer circle (whose
        # lower layers do freeze, MATH.md notes) while the fit reaches 98.5%
        check_rounding = lysep and X.dtype == np.float32
        try:
            for _ in range(self.max_iter):
                if lysep:
                    J_before = state.J
                    stats = state.sweep()
                    if (check_rounding and not rounding_warned
                            and (self.n_iter_ + 1) % ROUNDING_CHECK_EVERY == 0):
                        rounding_warned = _warn_rounding(
                            state, ROUNDING_STALL, "LySep is now deciding on rounding noise", 4)
                else:
                    previous = [W.copy() for W in state.W], [b.copy() for b in state.b]
                    state.update()
                    stats = {}
                loss, acc, J = measure()
                if not np.isfinite(loss):
                    if not lysep:
                        state.W[:], state.b[:] = previous
                        state.forward()
                    stop = "non-finite"
                    break
                _append(curves, loss, acc, J)
                publish(self.n_iter_ + 1)
                val = validation_score()
                if val is not None:
                    self.validation_scores_.append(float(val))
                    rule.validation(val, (self.coefs_, self.intercepts_))
                record = dict(iteration=self.n_iter_, loss=float(loss), accuracy=float(acc),
                              surrogate=None if J is None else float(J),
                              validation_score=val, time=time.perf_counter() - t0, **stats)
                progress.update(record)
                stop = rule.after(self.callback, record, validated=val is not None,
                                  sweep=(J_before, J) if lysep else None,
                                  objective=J if lysep else loss)
                if stop is not None:
                    break
        except KeyboardInterrupt:
            for curve in curves:                 # drop a half-recorded iteration
                if curve is not None:
                    del curve[self.n_iter_ + 1:]
            self._state = None                   # a sweep may have been cut short
            warn_interrupted(self.n_iter_, stacklevel=3)
            return
        finally:
            progress.close()
            rule.restore_best(self)
        warn_stop(stop, self.solver, self.n_iter_, self.max_iter, self.n_iter_no_change,
                  stacklevel=3)

    def save(self, path) -> str:
        """Write the fitted model to `path` (npz + JSON metadata; see ``lysep.load``)."""
        from ._persistence import save
        return save(self, path)

    # -- prediction --------------------------------------------------------------
    def _logits(self, X):
        check_is_fitted(self)
        dtype = self.coefs_[0].dtype.type
        X = check_X(X, dtype, n_features=self.n_features_in_, estimator=type(self).__name__)
        n_blas, n_kernel = split_threads(
            self.n_threads, [W.shape for W in self.coefs_[:-1]], X.itemsize)
        fwd = Forward(BACKENDS["compiled"], self.activation, X.dtype, n_kernel)
        with blas_threads(n_blas):
            return fwd.logits(X, self.coefs_, self.intercepts_).copy()

    def predict_log_proba(self, X: ArrayLike) -> NDArray[np.floating]:
        """Log of the class probabilities, shape (n_samples, n_classes)."""
        return log_softmax(self._logits(X), axis=1)

    def predict_proba(self, X: ArrayLike) -> NDArray[np.floating]:
        """Class probabilities (softmax of the logits), shape (n_samples, n_classes)."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted class labels."""
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]
