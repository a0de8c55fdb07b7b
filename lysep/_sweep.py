"""Orchestration of Algorithm 1 (MATH.md §4) and of the gradient-descent baseline.

Python decides which block moves and whether its candidate is kept; every block is one
call into a backend (``lysep._backend``: compiled kernels or the NumPy reference).
Notation: hidden layers i = 0..m-1 hold Z[i], A[i] = sigma(Z[i]) and the residual
R[i] = Z[i] - A[i-1] W[i] - b[i] (A[-1] = X); W[m], b[m] is the output layer.
"""
import math
import numbers
import time
from dataclasses import dataclass

import numpy as np

from ._activations import ACTIVATION_CODES, LIPSCHITZ
from ._validation import check_choice


RIDGE_FALLBACKS = ("min_norm", "closest")


@dataclass(frozen=True)
class LineSearch:
    """Constants of the monotone backtracking (MATH.md §4, paper §3.2).

    A trial step is ``eta / L`` with ``L`` a curvature estimate of the block, starting
    from the row's previously accepted ``eta`` times ``grow`` (capped at ``eta_max``),
    shrunk by ``shrink`` until the Armijo test with constant ``armijo`` passes, at most
    ``max_backtracks`` times; a row (or block) with no acceptable step keeps its value.
    A row also keeps its value, without a trial, once the decrease its step promises is
    below the rounding level of its objective: 64 eps of its value plus the floor of its
    residual terms, 64 eps^2 omega ||Z_row||^2 per residual (a residual smaller than
    about 8 eps times the values it is the difference of is rounding noise).
    """
    max_backtracks: int = 30
    shrink: float = 0.5
    armijo: float = 1e-4
    grow: float = 2.0
    eta_max: float = 1e4


class _Workspace:
    """Scratch arrays reused across blocks and sweeps, keyed by name and shape."""

    def __init__(self, dtype):
        self.dtype = dtype
        self._arrays = {}

    def __call__(self, name, shape):
        key = (name, shape)
        if key not in self._arrays:
            self._arrays[key] = np.empty(shape, dtype=self.dtype)
        return self._arrays[key]


class _SparePool:
    """Free arrays of the auxiliary variables' shapes, shared by every layer's candidate
    buffers (MATH.md §4 "Memory": O(1) work arrays, not a set per layer).  A block
    takes the arrays it writes its candidate into; afterwards whichever of the old
    value and the candidate lost comes back, so each shape has at most as many spares
    as one block uses at once: four (the FNN's Z blocks: the activation they read and
    candidate Z, R of the layer and R of the next; the CNN's conv Z blocks: candidate
    Z, A, R and the next R).  More than that are dropped, not kept."""

    #: spares kept per shape
    CAP = 4

    def __init__(self, dtype):
        self.dtype = dtype
        self._free = {}

    def take(self, shape):
        free = self._free.get(shape)
        return free.pop() if free else np.empty(shape, dtype=self.dtype)

    def give(self, arr):
        free = self._free.setdefault(arr.shape, [])
        if len(free) < self.CAP:
            free.append(arr)

    def arrays(self):
        return [a for free in self._free.values() for a in free]


class _Candidates:
    """The candidate buffers Z2, A2 or R2 as a list indexed by layer: slot i is taken
    from the shared pool (with layer i's shape, shapes[i]) on first use and given back
    by release(), so ``self.Z[i], self.Z2[i] = self.Z2[i], self.Z[i]`` swaps as before.
    It holds no reference to the state: a state is freed as soon as it is dropped, not
    at the next cyclic garbage collection."""

    def __init__(self, pool, shapes):
        self.pool, self.shapes = pool, shapes
        self._slots = {}

    def __getitem__(self, i):
        arr = self._slots.get(i)
        if arr is None:
            arr = self._slots[i] = self.pool.take(self.shapes[i])
        return arr

    def __setitem__(self, i, arr):
        self._slots[i] = arr

    def arrays(self):
        return list(self._slots.values())

    def release(self):
        for arr in self._slots.values():
            self.pool.give(arr)
        self._slots.clear()


class _Activations:
    """A[i] = sigma(Z[i]) for the blocks, computed on demand into buffers of the shared
    pool instead of stored for every layer (MATH.md §4 "Memory").  A sweep reads the
    activations one layer after another (the output and last Z blocks A[m-1], the ridge
    block i and the Z block i-1 A[i-1]), so after each block only the activation read
    last is kept: one activation pass per layer and sweep.  A Z block changes Z[i] and
    then forgets A[i] (its candidate's activations are not kept either).  It reads the
    state's list Z (whose entries the blocks swap in place), not the state itself, so
    that no reference cycle keeps a dropped state's arrays alive until the next cyclic
    garbage collection (300 fits grew the RSS by 16 MiB that way)."""

    def __init__(self, Z, backend, kind, spares, kept=None):
        self.Z, self.k, self.kind, self.spares = Z, backend, kind, spares
        self._cache = dict(kept or {})
        self._last = next(iter(self._cache), None)
        self.n_threads = 1              # set by the state before each sweep

    def __len__(self):
        return len(self.Z)

    def __getitem__(self, i):
        i = range(len(self.Z))[i]
        A = self._cache.get(i)
        if A is None:
            Z = self.Z[i]
            A = self._cache[i] = self.spares.take(Z.shape)
            if self.n_threads > 1 and Z.ndim == 2:
                self.k.activation_rows(Z, self.kind, A, self.n_threads)
            else:
                self.k.activation(Z, self.kind, A)
        self._last = i
        return A

    def __setitem__(self, i, A):
        i = range(len(self.Z))[i]
        self._cache[i] = A
        self._last = i

    def __iter__(self):
        return (self[i] for i in range(len(self.Z)))

    def held(self):
        return list(self._cache.values())

    def forget(self, i):
        """Drop layer i's activation (Z[i] changed); recomputed when next read."""
        A = self._cache.pop(range(len(self.Z))[i], None)
        if A is not None:
            self.spares.give(A)

    def forget_all(self):
        """Give back every activation (a low-memory Z block recomputes its own)."""
        for i in list(self._cache):
            self.spares.give(self._cache.pop(i))

    def trim(self):
        """Give back every activation but the one read last."""
        for i in [i for i in self._cache if i != self._last]:
            self.spares.give(self._cache.pop(i))


class Forward:
    """The true network's forward pass (MATH.md §1) with reusable buffers."""

    #: bytes of one layer buffer of a forward pass that keeps nothing (rows per chunk)
    CHUNK_BYTES = 8 << 20

    def __init__(self, backend, activation, dtype, n_threads=1):
        self.k = backend
        self.kind = ACTIVATION_CODES[activation]
        self.ws = _Workspace(dtype)
        self.n_threads = n_threads      # the narrow layers' row blocks (same results)

    def logits(self, X, weights, biases, keep_layers=False, keep_pre=False, Z_out=None):
        """Return the logits.  With keep_layers the activations A[i] stay in self.A, and
        with keep_pre also the pre-activations Z[i] in self.Z, in buffers reused by the
        next call.  Without, rows are independent: the pass runs a chunk of rows at a
        time through two alternating chunk buffers, so an evaluation of the loss holds
        the logits and two chunks, not whole layers (MATH.md §4 "Memory"); Z_out, a list
        of (N, n_i) arrays, then receives the pre-activations (the low-memory sweep's
        start)."""
        if keep_layers:
            return self._logits_kept(X, weights, biases, keep_pre)
        N, L = X.shape[0], len(weights)
        self.Z, self.A = [], []
        G = self.ws("G", (N, weights[-1].shape[1]))
        widest = max([W.shape[1] for W in weights[:-1]] + [1])
        rows = max(1, min(N, self.CHUNK_BYTES // (widest * X.itemsize)))
        for r0 in range(0, N, rows):
            prev = X[r0:r0 + rows]
            nb = prev.shape[0]
            for i in range(L - 1):
                A = self.ws(f"A{i % 2}", (rows, weights[i].shape[1]))[:nb]
                self.k.layer_forward(prev, weights[i], biases[i], self.kind, A,
                                     None if Z_out is None else Z_out[i][r0:r0 + nb],
                                     self.n_threads)
                prev = A
            self.k.affine(prev, weights[-1], biases[-1], G[r0:r0 + nb])
        return G

    def _logits_kept(self, X, weights, biases, keep_pre):
        N = X.shape[0]
        self.Z, self.A = [], []
        prev = X
        for i, (W, b) in enumerate(zip(weights, biases)):
            if i == len(weights) - 1:
                G = self.ws(f"G{i}", (N, W.shape[1]))
                self.k.affine(prev, W, b, G)
                return G
            A = self.ws(f"A{i}", (N, W.shape[1]))
            Z = self.ws(f"Z{i}", A.shape) if keep_pre else None
            self.k.layer_forward(prev, W, b, self.kind, A, Z, self.n_threads)
            self.A.append(A)
            self.Z.append(Z)
            prev = A

    def loss(self, X, y, weights, biases, P_out=None, keep_layers=False):
        """Return (mean cross-entropy, accuracy) of the true network on (X, y)."""
        G = self.logits(X, weights, biases, keep_layers)
        ce, n_correct = self.k.softmax_ce(G, y, P_out)
        return ce / X.shape[0], n_correct / X.shape[0]


class LySepState:
    """Auxiliary variables, caches and step memory of Algorithm 1 on one data set.

    ``weights`` and ``biases`` are lists of arrays owned by the caller; the state
    replaces their entries (never mutates them half-way) when a block is accepted.

    ``n_threads``: threads of the compiled ridge, bias and activation passes and of the
    Z blocks between narrow layers, in both modes (they split the rows into blocks that
    do not depend on the count, and add the blocks' sums in a fixed order: the results
    do not depend on the count).  BLAS threads are set by the caller
    (``lysep._threads.blas_threads``).

    ``low_memory``: store the Z[i] and nothing else of their size but one candidate
    (MATH.md §4 "Memory"): every block recomputes the residuals and activations it
    reads, a block of rows at a time, from the Z (about 1.25 m N n numbers instead of
    about 3 m N n, for two more products per Z block and one per bias block).  With a
    shared step (per_sample=False) the Z blocks' work arrays hold every row: it runs, but
    saves nothing (the estimator refuses that combination).

    ``ridge_fallback``: what the ridge block returns when the Gram matrix is too ill
    conditioned for Cholesky: "min_norm", the minimum-norm least-squares W, or
    "closest", the least-squares W closest to the current one (W + the minimum-norm
    change), which keeps the current W's part in the discarded eigen-directions.
    """

    def __init__(self, backend, X, y, weights, biases, activation, penalty_scale,
                 per_sample=True, search=LineSearch(), low_memory=False,
                 ridge_fallback="closest", n_threads=1):
        if not (isinstance(n_threads, numbers.Integral) and n_threads >= 1):
            raise ValueError(f"n_threads must be an integer >= 1, got {n_threads!r}")
        self.n_threads = int(n_threads)
        self.ridge_fallback = check_choice(ridge_fallback, "ridge_fallback", RIDGE_FALLBACKS)
        self.k, self.X, self.y = backend, X, y
        self.low_memory = bool(low_memory)
        self.W, self.b = weights, biases
        self.activation = activation
        self.kind = ACTIVATION_CODES[activation]
        self.beta2 = LIPSCHITZ[activation] ** 2
        self.m = m = len(weights) - 1          # auxiliary blocks: every hidden layer
        if m < 1:
            raise ValueError("layer separation needs at least one hidden layer")
        self.rho = self._norm_factors()
        self.s = float(penalty_scale)
        self.search = search
        self.N = N = X.shape[0]
        self.ws = _Workspace(X.dtype)
        self.rcond_min = 1e4 * np.finfo(X.dtype).eps
        # candidate buffers: a block writes here and is swapped in when accepted; one
        # pool for all layers, since a block has candidates for one or two layers only
        self.spares = _SparePool(X.dtype)
        # MATH.md §3 consistency: Z from the forward pass, so every R is 0 and J = L(F)
        self._init_auxiliary()
        self.R = None if self.low_memory else [np.zeros_like(Z) for Z in self.Z]
        shapes = [Z.shape for Z in self.Z]
        self.Z2, self.A2, self.R2 = (_Candidates(self.spares, shapes) for _ in range(3))
        self.W2 = [np.empty_like(W) for W in weights]
        self.b2 = [np.empty_like(b) for b in biases]
        self.r = [0.0] * m
        self.wn = [self._ssq(W) for W in weights]
        self._om = self.omegas(self.wn)
        self.eta_out = 1.0
        n_eta = N if per_sample else 1
        self.eta_z = [np.ones(n_eta) for _ in range(m)]
        self.J = self.objective()
        self.stats = {}
        # low memory: column sums of the residuals R[i] whose blocks computed them, so
        # that the bias block (which needs them and ||R_i||^2) need not recompute R_i
        self._colsums = {}

    def _norm_factors(self):
        """rho_j of MATH.md §5 for every layer: beta^2 for a dense layer."""
        return [self.beta2] * len(self.W)

    def _init_auxiliary(self):
        """Z[i], A[i] and the cross-entropy `ce` from a forward pass of the true network:
        the state takes over the pass's buffers of Z and of the last activation (what the
        first block reads); the other activations are dropped."""
        fwd = Forward(self.k, self.activation, self.X.dtype, self.n_threads)
        if self.low_memory:        # Z a chunk of rows at a time: no activation is kept
            self.Z = [np.empty((self.X.shape[0], W.shape[1]), self.X.dtype)
                      for W in self.W[:-1]]
            self.ce, _ = self.k.softmax_ce(
                fwd.logits(self.X, self.W, self.b, Z_out=self.Z), self.y)
            self.A = _Activations(self.Z, self.k, self.kind, self.spares)
            return
        self.ce, _ = self.k.softmax_ce(
            fwd.logits(self.X, self.W, self.b, keep_layers=True, keep_pre=True), self.y)
        self.Z = list(fwd.Z)
        self.A = _Activations(self.Z, self.k, self.kind, self.spares, {self.m - 1: fwd.A[-1]})

    def layer_input(self, i):
        """What layer i reads: X for the first layer, sigma(Z[i-1]) after."""
        return self.X if i == 0 else self.A[i - 1]

    def _ssq(self, x):
        return self.k.squared_norm(x.reshape(-1))

    # -- the layer separation loss J (MATH.md §3) --------------------------------
    def omegas(self, wn=None):
        """omega_i = s (2m/e) prod_{j>i} rho_j ||W_j||_F^2 for the hidden residuals
        (of the state's weights, cached until they change, or of the norms wn)."""
        if wn is None:
            return self._om
        out = [0.0] * self.m
        prod = self.s * 2 * self.m / math.e
        for i in range(self.m - 1, -1, -1):
            prod *= self.rho[i + 1] * wn[i + 1]
            out[i] = prod
        return out

    def objective(self, ce=None, r=None, wn=None):
        """J = CE(G)/N + (1/N) sum_i omega_i ||R_i||^2 from cached components."""
        ce = self.ce if ce is None else ce
        r = self.r if r is None else r
        om = self.omegas(wn)
        return (ce + sum(o * ri for o, ri in zip(om, r))) / self.N

    def rounding_floor(self):
        """Size of the part of J that rounding alone puts into the residuals: sum over
        layers of omega_l n_l (eps * rms(Z_l))^2.  The omega_l grow like the product of
        the later layers' squared norms, so in float32 a deep network's J can be
        dominated by this floor, and then no block can decrease it."""
        eps = float(np.finfo(self.X.dtype).eps)
        total = 0.0
        for o, Z in zip(self.omegas(), self.Z):
            total += o * Z.shape[1] * eps ** 2 * self._ssq(Z) / Z.size
        return total

    def bound_constant(self):
        """C(s) = e max(1, 1/s): the true loss is at most C(s) J (Theorem B)."""
        return math.e * max(1.0, 1.0 / self.s)

    def ridge_lambda(self, i):
        """lambda_i = rho_i sum_{k<i} (prod_{j=k+1}^{i-1} rho_j ||W_j||^2) ||R_k||^2."""
        lam, prod = 0.0, 1.0
        for k in range(i - 1, -1, -1):
            lam += prod * self.r[k]
            prod *= self.rho[k] * self.wn[k]
        return self.rho[i] * lam

    def _try(self, name, commit, ce=None, r=None, wn=None):
        """Keep a block's candidate only if J does not rise (MATH.md §4 safeguard)."""
        r_new = list(self.r)
        for i, v in (r or {}).items():
            r_new[i] = v
        wn_new = None                # the weights' norms, and so the omegas, unchanged
        if wn:
            wn_new = list(self.wn)
            for i, v in wn.items():
                wn_new[i] = v
        ce_new = self.ce if ce is None else ce
        J_new = self.objective(ce_new, r_new, wn_new)
        if J_new <= self.J:          # False for NaN: non-finite candidates are dropped
            commit()
            self.ce, self.r, self.J = ce_new, r_new, J_new
            if wn_new is not None:
                self.wn, self._om = wn_new, self.omegas(wn_new)
            return True
        self.stats["rejected_" + name] = self.stats.get("rejected_" + name, 0) + 1
        return False

    # -- one sweep from the output down (MATH.md §4) -----------------------------
    def sweep(self):
        """Run one sweep of Algorithm 1; return a dict of diagnostics."""
        self.stats = {"failed_rows": 0, "trials": 0, "fallbacks": 0, "ridge_at_fit": [],
                      "z_at_fit": []}
        if isinstance(self.A, _Activations):
            self.A.n_threads = self.n_threads
        self._timed("output", self._output_block)
        self._timed("z", self._last_hidden_block)
        for i in range(self.m - 1, -1, -1):
            # a layer at its fit (R_i = 0 exactly) has W_i and b_i at their blocks'
            # minimum, 0 (for W_i only while lambda_i = 0, i.e. every earlier residual is
            # 0 too): no candidate could lower J, so the blocks are not computed
            if self.r[i] == 0.0 and self.ridge_lambda(i) == 0.0:
                self.stats["ridge_at_fit"].append(i)
            else:
                self._timed("ridge", self._ridge_block, i)
            if self.r[i] != 0.0:
                self._timed("bias", self._bias_block, i)
            if i >= 1:
                self._timed("z", self._hidden_block, i - 1)
        return self.stats

    def _timed(self, name, block, *args):
        """Run a block, adding its wall time to stats['seconds_<name>'] (profiling)."""
        t0 = time.perf_counter()
        try:
            block(*args)
        finally:
            self._release_candidates()
        key = "seconds_" + name
        self.stats[key] = self.stats.get(key, 0.0) + time.perf_counter() - t0

    def _release_candidates(self):
        """Give the losing side of the last block (old values or candidates) back."""
        for c in (self.Z2, self.A2, self.R2):
            c.release()
        if isinstance(self.A, _Activations):
            self.A.trim()

    def buffer_arrays(self):
        """Every array of the size of the auxiliary variables the state holds (Z, A, R,
        candidates, spares, workspace), each once: what its memory is made of."""
        seen, out = set(), []
        A = self.A.held() if isinstance(self.A, _Activations) else self.A
        for a in (self.Z + A + (self.R or []) + self.Z2.arrays() + self.A2.arrays()
                  + self.R2.arrays() + self.spares.arrays() + list(self.ws._arrays.values())):
            if id(a) not in seen:
                seen.add(id(a))
                out.append(a)
        return out

    def _output_block(self):
        k, m, sr, N = self.k, self.m, self.search, self.N
        om = self.omegas()
        mu = sum(o * ri for o, ri in zip(om, self.r)) / (N * self.wn[m])
        A = self.layer_input(m)
        lipschitz = 0.5 * (self._ssq(A) / N + 1) + 2 * mu
        W, b = self.W[m], self.b[m]
        K = W.shape[1]
        eta = min(self.eta_out * sr.grow, sr.eta_max)
        accepted, self.eta_out, ce_new, _, _ = k.output_step(
            A, self.y, W, b, mu, eta, lipschitz, sr.max_backtracks, sr.shrink, sr.armijo,
            self.W2[m], self.b2[m], self.ws("G", (N, K)), self.ws("P", (N, K)),
            self.ws("gW", W.shape), self.ws("gb", (K,)))
        self.stats["eta_output"] = self.eta_out
        if accepted:
            self._try("output", lambda: self._swap_params(m), ce=ce_new,
                      wn={m: self._ssq(self.W2[m])})
        else:
            self.stats["failed_output"] = 1

    def _lean_source(self, i):
        """What a low-memory block recomputes layer i's input from, and the activation
        that maps it there: (X, -1) for the first layer, (Z[i-1], sigma) after."""
        return (self.X, -1) if i == 0 else (self.Z[i - 1], self.kind)

    def _last_hidden_block(self):
        k, m, sr, N = self.k, self.m, self.search, self.N
        i = m - 1
        om = self.omegas()
        lipschitz = 2 * om[i] + self.rho[m] * self.wn[m]
        if self.low_memory:
            self.A.forget_all()        # the block recomputes A[i]: its buffer is Z2's
            src, kind_prev = self._lean_source(i)
            colsum = np.empty((2, self.Z[i].shape[1]))
            ce_new, r_new, n_failed, n_trials = k.z_last_step_lean(
                src, kind_prev, self.W[i], self.b[i], self.Z[i], self.W[m], self.b[m],
                self.y, self.kind, om[i], self.eta_z[i], lipschitz, sr.max_backtracks,
                sr.shrink, sr.armijo, sr.grow, sr.eta_max, self.Z2[i], colsum, self.n_threads)
        else:
            n, K = self.Z[i].shape[1], self.W[m].shape[1]
            # work arrays of a block of rows (all N for a shared step)
            rows = k.z_last_work_rows(N, n, self.X.itemsize, self.eta_z[i].shape[0] == 1)
            ce_new, r_new, n_failed, n_trials = k.z_last_step(
                self.Z[i], self.A[i], self.R[i], self.W[m], self.b[m], self.y, self.kind,
                om[i], self.eta_z[i], lipschitz, sr.max_backtracks, sr.shrink, sr.armijo,
                sr.grow, sr.eta_max, self.Z2[i], self._candidate_activation(i), self.R2[i],
                self.ws("D", (rows, n)), self.ws("grad", (rows, n)), self.ws("P", (rows, K)),
                self.n_threads)
            self._forget_activation(i)
        self.stats["failed_rows"] += n_failed
        self.stats["trials"] += n_trials
        accepted = self._try("z", lambda: self._swap_z(i), ce=ce_new, r={i: r_new})
        if self.low_memory:
            self._colsums[i] = colsum[1 if accepted else 0]

    def _ridge_block(self, i):
        k = self.k
        prev = self.layer_input(i)
        lam = self.ridge_lambda(i)
        n_in = prev.shape[1]
        # low memory: the new residual's column sums too, so that the bias block, which
        # comes next and reads the same residual, need not compute it again
        colsum = np.empty(self.Z[i].shape[1]) if self.low_memory else None
        # the closest fallback starts from the current W_i and its residual (recomputed
        # by the kernel when it is not stored)
        closest = self.ridge_fallback == "closest"
        r_new, w_new, status = k.ridge_update(
            prev, self.Z[i], self.b[i], lam, self.rcond_min, self.W2[i],
            None if self.low_memory else self.R2[i],
            self.ws("gram", (n_in, n_in)), self.ws("gram2", (n_in, n_in)), colsum,
            self.W[i] if closest else None,
            self.R[i] if closest and not self.low_memory else None, self.n_threads)
        self.stats["fallbacks"] += status != 0
        if (self._try("ridge", lambda: self._swap_wr(i), r={i: r_new}, wn={i: w_new})
                and colsum is not None):
            self._colsums[i] = colsum

    def _bias_block(self, i):
        if self.low_memory:
            # R_i's column sums from the last block that changed it (this sweep's Z
            # block or ridge block of layer i), its norm from J's cache; else computed
            col = self._colsums.pop(i, None)
            r_new = self.k.bias_update_lean(self.layer_input(i), self.W[i], self.Z[i],
                                            self.b[i], self.b2[i],
                                            None if col is None else (self.r[i], col))
        else:
            # a conv layer's channel bias is the mean over samples and positions: view
            # its NHWC residual as (N*H*W, C) rows
            C = self.R[i].shape[-1]
            r_new = self.k.bias_update(self.R[i].reshape(-1, C), self.b[i],
                                       self.R2[i].reshape(-1, C), self.b2[i], self.n_threads)

        def commit():
            self.b[i], self.b2[i] = self.b2[i], self.b[i]
            if self.R is not None:
                self.R[i], self.R2[i] = self.R2[i], self.R[i]
        self._try("bias", commit, r={i: r_new})

    def _hidden_block(self, j):
        k, sr, i = self.k, self.search, j + 1
        om = self.omegas()
        lipschitz = 2 * (om[j] + om[i] * self.rho[i] * self.wn[i])
        if self.r[j] == 0.0 and self.r[i] == 0.0:
            # R_j = 0 and R_i = 0: the gradient is 0, every row gives up before a trial
            # and nothing moves; only the steps the kernel remembers change, as there
            eta = self.eta_z[j]
            np.minimum(eta * sr.grow, sr.eta_max, out=eta)
            eta /= lipschitz
            eta *= lipschitz
            self.stats["failed_rows"] += self.N
            self.stats["z_at_fit"].append(j)
            return
        if self.low_memory:
            self.A.forget_all()        # the block recomputes A[j-1], A[j]: no stored copy
            src, kind_prev = self._lean_source(j)
            colsum = np.empty((2, self.Z[j].shape[1]))
            self._colsums.pop(i, None)  # R_i moves with Z[j]: its sums are not tracked
            r_j, r_i, n_failed, n_trials = k.z_hidden_step_lean(
                src, kind_prev, self.W[j], self.b[j], self.Z[j], self.W[i], self.Z[i],
                self.b[i], self.kind, om[j], om[i], self.eta_z[j], lipschitz,
                sr.max_backtracks, sr.shrink, sr.armijo, sr.grow, sr.eta_max, self.Z2[j],
                colsum, self.n_threads)
            self._colsums[j] = colsum[0]        # R_j's sums unless the block is kept
        else:
            n, n2 = self.Z[j].shape[1], self.Z[i].shape[1]
            # work arrays of a block of rows (all N for a shared step)
            rows = k.z_hidden_work_rows(self.N, n, n2, self.X.itemsize,
                                        self.eta_z[j].shape[0] == 1)
            r_j, r_i, n_failed, n_trials = k.z_hidden_step(
                self.Z[j], self.A[j], self.R[j], self.R[i], self.W[i], self.Z[i], self.b[i],
                self.kind, om[j], om[i],
                self.eta_z[j], lipschitz, sr.max_backtracks, sr.shrink, sr.armijo, sr.grow,
                sr.eta_max, self.Z2[j], self._candidate_activation(j), self.R2[j],
                self.R2[i], self.ws("D", (rows, n)), self.ws("grad", (rows, n)),
                self.ws("Zb", (rows, n2)), self.ws("Rc", (rows, n2)), self.n_threads)
            self._forget_activation(j)
        self.stats["failed_rows"] += n_failed
        self.stats["trials"] += n_trials
        if n_failed == self.N:       # no row moved: the outputs hold no candidate
            return

        def commit():
            self._swap_z(j)
            if self.R is not None:
                self.R[i], self.R2[i] = self.R2[i], self.R[i]
        if self._try("z", commit, r={j: r_j, i: r_i}) and self.low_memory:
            self._colsums[j] = colsum[1]

    def _swap_wr(self, i):
        self.W[i], self.W2[i] = self.W2[i], self.W[i]
        if self.R is not None:
            self.R[i], self.R2[i] = self.R2[i], self.R[i]

    def _swap_params(self, i):
        self.W[i], self.W2[i] = self.W2[i], self.W[i]
        self.b[i], self.b2[i] = self.b2[i], self.b[i]

    def _candidate_activation(self, i):
        """Where a Z block writes its candidate's activations: nowhere when A is
        recomputed from Z (the block then needs one array fewer), else A2[i]."""
        return None if isinstance(self.A, _Activations) else self.A2[i]

    def _forget_activation(self, i):
        """After a Z block, a recomputed A[i] may be out of date (accepted) and is not
        read again in this sweep: give its buffer back."""
        if isinstance(self.A, _Activations):
            self.A.forget(i)

    def _swap_z(self, i):
        self.Z[i], self.Z2[i] = self.Z2[i], self.Z[i]
        if not isinstance(self.A, _Activations):
            self.A[i], self.A2[i] = self.A2[i], self.A[i]
        if self.R is not None:
            self.R[i], self.R2[i] = self.R2[i], self.R[i]


class GDState:
    """Full-batch gradient descent by backpropagation (the CE-FNN baseline, MATH.md §7)."""

    def __init__(self, backend, X, y, weights, biases, activation, learning_rate,
                 n_threads=1):
        self.k, self.X, self.y = backend, X, y
        self.n_threads = n_threads      # the forward pass's narrow layers (same results)
        self.W, self.b = weights, biases
        self.lr = learning_rate
        self.kind = ACTIVATION_CODES[activation]
        self.ws = _Workspace(X.dtype)
        self.N = N = X.shape[0]
        # the forward pass keeps every hidden layer's activations for backprop
        self.A = [self.ws(f"A{i}", (N, w.shape[1])) for i, w in enumerate(weights[:-1])]
        self.G = self.ws("G", (N, weights[-1].shape[1]))
        self.P = self.ws("P", (N, weights[-1].shape[1]))
        # what backprop writes: the gradients, and the deltas in two alternating buffers
        self.gW = [np.empty_like(w) for w in weights]
        self.gb = [np.empty_like(v) for v in biases]
        size = self.N * max(w.shape[1] for w in weights)
        self.work_delta = (self.ws("delta0", (size,)), self.ws("delta1", (size,)))

    def forward(self):
        """Loss and accuracy at the current parameters; keeps what backprop needs."""
        self.k.network_forward(self.X, self.W, self.b, self.kind, self.A, self.G,
                               self.n_threads)
        ce, n_correct = self.k.softmax_ce(self.G, self.y, self.P)
        return ce / self.N, n_correct / self.N

    def update(self):
        """One gradient step from the caches of the last forward(): backpropagation and the
        update of every layer in one backend call."""
        self.k.backprop_step(self.P, self.X, self.A, self.W, self.b, self.kind, self.lr,
                             self.gW, self.gb, self.work_delta, self.n_threads)
