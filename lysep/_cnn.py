"""CNNClassifier: a convolutional softmax classifier trained by layer separation on
mini-batches (Algorithm 2 and MATH.md §5-§6) or by mini-batch gradient descent (the
CE-CNN baseline, MATH.md §7)."""
import math
import numbers
import time

import numpy as np
from scipy.special import log_softmax

from ._activations import ACTIVATION_CODES
from ._base import BaseEstimator, ClassifierMixin
from ._cnn_sweep import CNN_BACKENDS, Architecture, CNNForward, CNNGDState, CNNLySepState
from ._sweep import RIDGE_FALLBACKS, LineSearch
from ._threads import blas_threads, split_threads
from ._training import (BatchStream, Progress, StopRule, begin_fit, feature_names,
                        stratified_split, warn_interrupted, warn_stop)
from ._validation import (check_choice, check_dtype, check_image_rows, check_int,
                          check_is_fitted, check_random_state, check_training_params, check_y,
                          images_nhwc)

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
    or gradient steps) run on it, then the next batch is drawn.  Every
    ``eval_every`` iterations the model is evaluated on the whole training set: those
    evaluations make the curves and drive ``tol`` and ``early_stopping``.

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
    image_shape : tuple (C, H, W) or None, default=None
        Set it to pass each image as a flat row: X of shape (n, C*H*W) in (C, H, W)
        order, as scikit-learn's transformers (e.g. StandardScaler in a Pipeline)
        produce.  None: X must be images (n, H, W) or (n, C, H, W).  Once fitted,
        ``predict`` takes flat rows of ``n_features_in_`` values in either case.
    batch_size : int, default=1000
        Samples per batch (the whole set if larger).
    refresh_every : int, default=10
        Iterations per batch (the paper's T).
    max_iter : int, default=500
        Total iterations (sweeps or gradient steps) of one call to ``fit``.
    learning_rate_init : float, default=0.1
        Step size of ``solver="gd"``.
    penalty_scale : float, default=0.01
        The multiplier s on the penalty weights (MATH.md §3); the bound constant is
        ``C(s) = e * max(1, 1/s)``.
    z_step : {"per_sample", "shared"}, default="per_sample"
        Line search on the auxiliary variables: one step per sample or one shared step.
    ridge_fallback : {"min_norm", "closest"}, default="closest"
        ``solver="lysep"`` only: the kernel and dense-weight update when the Gram matrix
        is too ill conditioned for Cholesky, as in ``FNNClassifier``: the minimum-norm
        least-squares solution, or the one closest to the current weights.
    eval_every : int or None, default=None
        The curves are recorded before training and after every ``eval_every``
        iterations (and after the last); None means ``refresh_every`` (once per batch).
    tol : float, default=0.0
        Training stops when the training cross-entropy (``loss_curve_``) has not
        decreased by more than ``tol`` for ``n_iter_no_change`` consecutive
        evaluations.  (FNNClassifier tests J every iteration; J belongs to one
        mini-batch and restarts with the next, so the CNN tests the loss of the whole
        training set.)  lysep also stops, with a NumericalWarning, when no sweep has
        decreased J for ``n_iter_no_change`` consecutive sweeps.
    n_iter_no_change : int, default=10
        See ``tol`` and ``early_stopping``: counted in evaluations (in sweeps for the
        stalled line searches).
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
    random_state : None, int or numpy.random.Generator, default=None
        Seeds the initialisation, the validation split and the batch draws.
    warm_start : bool, default=False
        Continue from the previous fit's parameters.  The model then also keeps the
        batch stream (generator and position), the current batch's auxiliary
        variables and step sizes, and the early-stopping split, so ``fit`` with
        ``max_iter=a`` then ``max_iter=b`` on the same data gives bit-identical
        parameters to one fit of ``a + b`` iterations.  That holds when no stopping
        rule ends either fit early (their counters restart with every fit, as in
        FNNClassifier) and without ``early_stopping`` (each fit returns its best, not
        its last, parameters, and the next one continues from those).
    verbose : bool, default=False
        Show a progress bar with the current batch's loss, J and accuracy (tqdm, when
        installed: ``pip install lysep[progress]``), else print one line per iteration.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop when its
        accuracy (measured at every evaluation) has not improved by more than ``tol``
        for ``n_iter_no_change`` evaluations, and keep the parameters with the best
        validation accuracy.
    validation_fraction : float, default=0.1
        Share of the training data held out when ``early_stopping`` is on.
    callback : callable or None, default=None
        Called after every iteration with a dict: iteration, loss and accuracy of the
        true network on the current batch, surrogate (J of the batch, lysep), time,
        the sweep's diagnostics (step size ``eta_output``, failed rows, rejected
        blocks, per-block seconds) and, at evaluations, train_loss, train_accuracy and
        validation_score (None elsewhere).  Returning True stops training.
    n_threads : int, default=1
        BLAS threads while fitting and predicting; -1 leaves BLAS at its default.
        With ``solver="lysep"`` the threads go instead to the rows of the dense hidden
        Z steps and ridge blocks between narrow layers (see FNNClassifier; results the
        same, bit for bit) when those hold at least a third of the products' work, the
        conv layers' products counted as BLAS work.
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
    n_features_in_ : int
        C*H*W, the length of a flat row.
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
    validation_scores_ : list of float or None
        Validation accuracy at each evaluation of the last fit after its first
        iteration (``early_stopping`` only).
    best_validation_score_ : float
        The best of them; the model holds the parameters that reached it.
    bound_constant_ : float or None
    loss_ : float
        Full-training-set cross-entropy at the last evaluation.
    """

    def __init__(self, conv_channels=(8, 8), kernel_size=3, stride=1, padding=1, pool="avg",
                 pool_size=2, hidden_layer_sizes=(64,), activation="tanh", solver="lysep", *,
                 image_shape=None, batch_size=1000, refresh_every=10, max_iter=500,
                 learning_rate_init=0.1, penalty_scale=0.01, z_step="per_sample",
                 ridge_fallback="closest", eval_every=None, tol=0.0, n_iter_no_change=10,
                 dtype=np.float64,
                 random_state=None, warm_start=False, verbose=False, early_stopping=False,
                 validation_fraction=0.1, callback=None, n_threads=1, backend="compiled"):
        self.conv_channels = conv_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.pool = pool
        self.pool_size = pool_size
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.image_shape = image_shape
        self.batch_size = batch_size
        self.refresh_every = refresh_every
        self.max_iter = max_iter
        self.learning_rate_init = learning_rate_init
        self.penalty_scale = penalty_scale
        self.z_step = z_step
        self.ridge_fallback = ridge_fallback
        self.eval_every = eval_every
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
        channels = _int_tuple(self.conv_channels, "conv_channels", 1, allow_empty=False)
        hidden = _int_tuple(self.hidden_layer_sizes, "hidden_layer_sizes", 1)
        pools = _int_tuple(self.pool_size, "pool_size", 1, allow_empty=False)
        if len(pools) == 1:
            pools = pools * len(channels)
        if len(pools) != len(channels):
            raise ValueError(f"pool_size has {len(pools)} entries but there are "
                             f"{len(channels)} conv layers")
        image_shape = self.image_shape
        if image_shape is not None:
            image_shape = _int_tuple(image_shape, "image_shape", 1)
            if len(image_shape) != 3:
                raise ValueError("image_shape must be None or (C, H, W), three integers "
                                 f">= 1, got {self.image_shape!r}")
        check_int(self.kernel_size, "kernel_size", 1)
        check_int(self.stride, "stride", 1)
        check_int(self.padding, "padding", 0)
        check_choice(self.pool, "pool", POOLS)
        check_choice(self.activation, "activation", ACTIVATION_CODES)
        check_choice(self.solver, "solver", SOLVERS)
        check_choice(self.z_step, "z_step", Z_STEPS)
        check_choice(self.ridge_fallback, "ridge_fallback", RIDGE_FALLBACKS)
        check_choice(self.backend, "backend", CNN_BACKENDS)
        if self.solver == "lysep" and not hidden:
            raise ValueError("solver='lysep' needs at least one hidden dense layer; "
                             "set hidden_layer_sizes to e.g. (64,)")
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.refresh_every, "refresh_every", 1)
        if self.eval_every is not None:
            check_int(self.eval_every, "eval_every", 1)
        check_training_params(self)
        return channels, hidden, pools, check_dtype(self.dtype), image_shape

    # -- fitting -----------------------------------------------------------------
    def fit(self, X, y):
        """Train on images X, shape (n, H, W) or (n, C, H, W) (or flat rows (n, C*H*W)
        with ``image_shape`` set), and labels y (any hashable type)."""
        *_, dtype, image_shape = self._validate_params()
        names = feature_names(X)
        rows, shape = check_image_rows(X, dtype, image_shape)
        classes, y_enc = check_y(y, rows.shape[0])
        X = images_nhwc(rows, shape, image_shape)
        continuing = self.warm_start and hasattr(self, "coefs_")
        rng = check_random_state(self.random_state)
        if continuing:
            self._arch = self._check_warm_start(X, classes)
            weights = [np.array(W, dtype=dtype) for W in self.coefs_]
            biases = [np.array(b, dtype=dtype) for b in self.intercepts_]
        else:
            arch = self._architecture(X.shape[1:], classes.shape[0])
            weights, biases = init_cnn_parameters(arch, rng, dtype)
            self.__dict__.update(classes_=classes, input_shape_=X.shape[1:],
                                 n_features_in_=math.prod(X.shape[1:]), _arch=arch,
                                 loss_curve_=[], accuracy_curve_=[], batch_loss_curve_=[],
                                 curve_iterations_=[], n_iter_=0, _state=None,
                                 _batch_stream=None, _split=None,
                                 surrogate_curve_=[] if self.solver == "lysep" else None)
        X, y_enc, validation = begin_fit(self, X, y_enc, names if shape is None else None,
                                         continuing, lambda y: self._validation_split(y, rng))
        # one thread pool at a time: lysep's kernels or BLAS (see split_threads); the
        # conv products always run in BLAS
        arch = self._arch
        d = arch.dense_sizes
        conv_work = sum(c.out_shape[0] * c.out_shape[1] * c.patch * c.out_shape[2]
                        for c in arch.conv)
        n_blas, self._kernel_threads = split_threads(
            self.n_threads, list(zip(d[:-2], d[1:-1])), X.itemsize, conv_work,
            kernels=self.solver == "lysep")
        with blas_threads(n_blas):
            self._train(CNN_BACKENDS[self.backend], X, y_enc, weights, biases, rng,
                        continuing, validation)
        return self

    def _architecture(self, input_shape, n_classes):
        """The layer geometry for images of `input_shape` (H, W, C)."""
        channels, hidden, pools, *_ = self._validate_params()
        return Architecture(tuple(input_shape), channels, self.kernel_size, self.stride,
                            self.padding, pools, self.pool, hidden, n_classes)

    def _check_warm_start(self, X, classes):
        if X.shape[1:] != tuple(self.input_shape_):
            H, W, C = self.input_shape_
            raise ValueError(f"warm_start: X has images of shape (C, H, W) = "
                             f"{(X.shape[3], *X.shape[1:3])}, the model has {(C, H, W)}")
        if not np.array_equal(classes, self.classes_):
            raise ValueError("warm_start: y has different classes than the previous fit")
        arch = self._architecture(X.shape[1:], classes.shape[0])
        shapes = [(W.shape, b.shape) for W, b in zip(self.coefs_, self.intercepts_)]
        if arch.param_shapes() != shapes:
            raise ValueError("warm_start: the architecture (conv_channels, kernel_size, "
                             "pool_size, hidden_layer_sizes, ...) changed since the "
                             "previous fit")
        return arch

    def _validation_split(self, y, rng):
        """The early-stopping split; a warm start on as many samples keeps the previous
        one, so the batch stream it continues indexes the same training samples."""
        split = getattr(self, "_split", None)
        if not (self.warm_start and split is not None and split[0].size + split[1].size == y.size):
            split = stratified_split(y, self.validation_fraction, rng)
        self._split = split if self.warm_start else None
        return split

    def save(self, path):
        """Write the fitted model to `path` (npz + JSON metadata; see ``lysep.load``)."""
        from ._persistence import save
        return save(self, path)

    def _make_state(self, backend, arch, Xb, yb, weights, biases):
        if self.solver == "gd":
            return CNNGDState(backend, arch, Xb, yb, weights, biases, self.activation,
                              self.learning_rate_init)
        return CNNLySepState(backend, arch, Xb, yb, weights, biases, self.activation,
                             self.penalty_scale, per_sample=self.z_step == "per_sample",
                             search=LineSearch(), ridge_fallback=self.ridge_fallback,
                             n_threads=self._kernel_threads)

    def _settings(self, X):
        """What a kept batch state depends on besides its data and parameters."""
        return (self.solver, self.activation, self.penalty_scale, self.z_step,
                self.ridge_fallback, self.learning_rate_init, self.backend, X.dtype,
                self.batch_size)

    def _resume(self, X, y, rng, continuing):
        """(batch stream, batch state) to continue: the ones a warm start kept, when the
        data, the parameters and the settings are those they were made for (then the
        fit continues exactly); else a fresh stream and no state."""
        stream = getattr(self, "_batch_stream", None) if continuing else None
        size = min(self.batch_size, X.shape[0])
        if stream is None or stream.n != X.shape[0] or stream.size != size:
            return BatchStream(X.shape[0], size, rng), None
        state = getattr(self, "_state", None)
        if state is None or getattr(self, "_state_key", None) != self._settings(X):
            return stream, None
        same = (np.array_equal(state.X, X[stream.last]) and np.array_equal(state.y, y[stream.last])
                and all(np.array_equal(a, c) for a, c in
                        zip(state.W + state.b, self.coefs_ + self.intercepts_)))
        if same and isinstance(state, CNNLySepState):
            state.n_threads = self._kernel_threads   # results do not depend on it
        return stream, state if same else None

    def _train(self, backend, X, y, weights, biases, rng, continuing, validation):
        arch, lysep = self._arch, self.solver == "lysep"
        refresh = self.batch_size < X.shape[0]
        eval_every = self.eval_every or self.refresh_every
        watch = self.callback is not None or self.verbose
        fwd = CNNForward(backend, arch, self.activation, X.dtype)
        stream, state = self._resume(X, y, rng, continuing)
        if state is not None:
            weights, biases = state.W, state.b
        start, recorded = self.n_iter_, None

        def batch_state(it):
            """The state iteration `it` works on: a new batch every refresh_every."""
            if state is None or (refresh and it % self.refresh_every == 0):
                idx = stream.next()
                new = self._make_state(backend, arch, X[idx], y[idx], weights, biases)
                if not lysep:
                    new.forward()                 # the caches the first step needs
                return new
            return state

        def publish(n_iter):
            # one dict update: an interrupt never leaves the attributes out of step
            self.__dict__.update(coefs_=[W.copy() for W in weights],
                                 intercepts_=[b.copy() for b in biases], n_iter_=n_iter)

        def record(n_iter, J, score=True):
            """Evaluate the published parameters; append the curves at `n_iter`."""
            nonlocal recorded
            W, b = self.coefs_, self.intercepts_
            loss, acc = self._evaluate(fwd, X, y, W, b)
            batch_loss, _ = fwd.loss(state.X, state.y, W, b)
            val = self._evaluate(fwd, *validation, W, b)[1] \
                if validation is not None and score else None
            new = dict(curve_iterations_=self.curve_iterations_ + [n_iter],
                       loss_curve_=self.loss_curve_ + [float(loss)],
                       accuracy_curve_=self.accuracy_curve_ + [float(acc)],
                       batch_loss_curve_=self.batch_loss_curve_ + [float(batch_loss)],
                       loss_=float(loss))
            if lysep:
                new["surrogate_curve_"] = self.surrogate_curve_ + [float(J)]
            if val is not None:
                new["validation_scores_"] = self.validation_scores_ + [float(val)]
            self.__dict__.update(new)             # one update, as in publish
            recorded = W, b
            if val is not None:
                rule.validation(val, (W, b))
            return float(loss), float(acc), val

        state = batch_state(start)
        publish(start)
        J_good = state.J if lysep else None
        if not self.curve_iterations_:
            record(start, J_good, score=False)
        recorded = self.coefs_, self.intercepts_
        rule = StopRule(self.tol, self.n_iter_no_change, self.loss_curve_[-1],
                        validating=validation is not None)
        stop = None
        t0 = time.perf_counter()
        progress = Progress(self.verbose, self.max_iter, self.solver)
        try:
            for it in range(start, start + self.max_iter):
                if it > start:
                    state = batch_state(it)
                J_before = state.J if lysep else None
                if lysep:
                    stats = state.sweep()
                    J = state.J
                    fig = fwd.loss(state.X, state.y, state.W, state.b) if watch else None
                else:
                    state.update()
                    stats, J = {}, None
                    fig = state.forward()         # the loss after the step, and the caches
                if not (np.isfinite(J if lysep else 0.0) and (fig is None or np.isfinite(fig[0]))):
                    stop = "non-finite"           # coefs_ keep the last finite iteration's
                    break
                J_good = J
                publish(it + 1)
                evaluated = (it + 1) % eval_every == 0
                train = record(it + 1, J) if evaluated else (None, None, None)
                rec = None
                if watch:
                    rec = dict(iteration=it + 1, loss=float(fig[0]), accuracy=float(fig[1]),
                               surrogate=None if J is None else float(J),
                               validation_score=train[2], train_loss=train[0],
                               train_accuracy=train[1], time=time.perf_counter() - t0, **stats)
                    progress.update(rec)
                stop = rule.after(self.callback, rec, validated=evaluated,
                                  sweep=(J_before, J) if lysep else None, objective=train[0])
                if stop is not None:
                    break
            if self.curve_iterations_[-1] != self.n_iter_:
                record(self.n_iter_, J_good)      # the curves end at the returned model
        except KeyboardInterrupt:
            self.__dict__.update(coefs_=recorded[0], intercepts_=recorded[1],
                                 n_iter_=self.curve_iterations_[-1])
            self._state = self._batch_stream = None   # cut short: not continued exactly
            warn_interrupted(self.n_iter_, stacklevel=3)
            return
        finally:
            progress.close()
            rule.restore_best(self)
        keep = self.warm_start and stop != "non-finite"
        self._state, self._batch_stream = (state, stream) if keep else (None, None)
        self._state_key = self._settings(X)
        warn_stop(stop, self.solver, self.n_iter_, self.max_iter, self.n_iter_no_change,
                  stacklevel=3)

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
        H, W, C = self.input_shape_
        rows, shape = check_image_rows(X, dtype, (C, H, W), n_features=self.n_features_in_,
                                       estimator=type(self).__name__)
        X = images_nhwc(rows, shape, (C, H, W), expected="the model was fitted on")
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
