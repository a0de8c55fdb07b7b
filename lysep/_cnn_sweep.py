"""Orchestration of Algorithm 2 (LySep-CNN, MATH.md §5) and of the CE-CNN baseline.

The network: ``L_c`` conv layers (conv -> sigma -> pool, NHWC), the last one's pooled
output flattened, then ``L_f`` dense layers, the last producing the logits.  Layers are
indexed i = 0..m (conv layers first, the output layer is m); auxiliary block i < m holds
Z[i], A[i] = sigma(Z[i]) and the residual R[i] = Z[i] - lin_i(input_i) - b[i], where
input_0 = X, input_i = pool(A[i-1]) for i <= L_c (flattened at i = L_c) and A[i-1] for
the later dense layers.  ``CNNLySepState`` extends the FNN state of ``lysep._sweep``:
the dense blocks are the FNN's, the conv blocks are new, and the weights omega carry the
factors rho_j = beta^2 gamma_j^2 kappa_j of MATH.md §5.
"""
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from . import _cnn_reference, _conv, _conv_reference
from ._activations import ACTIVATION_CODES, LIPSCHITZ
from ._backend import BACKENDS
from ._cnn_blocks import (conv_weight_grad, conv_z_gradient, residual_rows, ridge_solve,
                          row_sq_norms, z_trial_rows)
from ._sweep import LineSearch, LySepState, _Workspace

_CONV_NAMES = ("conv_forward", "conv_transpose", "conv_gram", "avgpool", "avgpool_adjoint",
               "maxpool", "maxpool_adjoint")
_CNN_NAMES = ("ridge_solve", "conv_weight_grad", "conv_z_gradient", "z_trial_rows",
              "residual_rows", "row_sq_norms")
_COMPILED_CNN = dict(ridge_solve=ridge_solve, conv_weight_grad=conv_weight_grad,
                     conv_z_gradient=conv_z_gradient, z_trial_rows=z_trial_rows,
                     residual_rows=residual_rows, row_sq_norms=row_sq_norms)

#: the FNN backends extended with the conv/pool kernels and the CNN block pieces
CNN_BACKENDS = {
    "compiled": SimpleNamespace(**vars(BACKENDS["compiled"]),
                                **{n: getattr(_conv, n) for n in _CONV_NAMES}, **_COMPILED_CNN),
    "reference": SimpleNamespace(**vars(BACKENDS["reference"]),
                                 **{n: getattr(_conv_reference, n) for n in _CONV_NAMES},
                                 **{n: getattr(_cnn_reference, n) for n in _CNN_NAMES}),
}

#: bytes of one patch-matrix chunk (im2col buffer) of the conv kernels
CHUNK_BYTES = 8 << 20


def conv_chunk(n_positions, patch_size, itemsize):
    """Samples per im2col chunk: the patch rows of a chunk fill about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // max(1, n_positions * patch_size * itemsize))


@dataclass(frozen=True)
class Architecture:
    """Shapes of a CNN (MATH.md §5).  ``pools[l]`` is the window q of the pooling after
    conv layer l (1: none); ``pool`` is "avg" or "max"."""
    in_shape: tuple          # (H, W, C) of one image
    channels: tuple
    kernel_size: int
    stride: int
    padding: int
    pools: tuple
    pool: str
    hidden: tuple            # widths of the hidden dense layers
    n_classes: int

    def __post_init__(self):
        H, W, C = self.in_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        conv = []
        for l, (co, q) in enumerate(zip(self.channels, self.pools)):
            if H + 2 * p < k or W + 2 * p < k:
                raise ValueError(f"conv layer {l + 1}: input {H}x{W} is smaller than "
                                 f"kernel_size={k} with padding={p}")
            Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
            if Ho % q or Wo % q:
                raise ValueError(f"conv layer {l + 1}: output {Ho}x{Wo} is not divisible by "
                                 f"pool_size={q}; change pool_size, padding or the image size")
            conv.append(SimpleNamespace(in_shape=(H, W, C), out_shape=(Ho, Wo, co), q=q,
                                        pooled=(Ho // q, Wo // q, co), patch=k * k * C))
            H, W, C = Ho // q, Wo // q, co
        object.__setattr__(self, "conv", conv)

    @property
    def n_conv(self):
        return len(self.channels)

    @property
    def m(self):
        """Number of auxiliary blocks: every conv layer and every hidden dense layer."""
        return self.n_conv + len(self.hidden)

    @property
    def dense_sizes(self):
        Hp, Wp, C = self.conv[-1].pooled
        return (Hp * Wp * C, *self.hidden, self.n_classes)

    def param_shapes(self):
        """Shapes of (weights, biases) of layers 0..m: Kmat (k*k*C_in, C_out) for conv."""
        shapes = [((c.patch, c.out_shape[2]), (c.out_shape[2],)) for c in self.conv]
        d = self.dense_sizes
        shapes += [((a, b), (b,)) for a, b in zip(d[:-1], d[1:])]
        return shapes

    def fan_ins(self):
        """C_in k^2 for conv layers, n_in for dense layers (PyTorch's default init)."""
        return [c.patch for c in self.conv] + list(self.dense_sizes[:-1])

    def gamma(self, q):
        """Lipschitz constant of the pooling with window q: 1/q (avg), 1 (max or none)."""
        return 1.0 / q if self.pool == "avg" else 1.0

    def rho(self, beta):
        """rho_j = beta^2 gamma_j^2 kappa_j for layers j = 0..m (MATH.md §5)."""
        kappa = math.ceil(self.kernel_size / self.stride) ** 2
        out = []
        for j in range(self.m + 1):
            gamma = self.gamma(self.conv[j - 1].q) if 1 <= j <= self.n_conv else 1.0
            out.append(beta ** 2 * gamma ** 2 * (kappa if j < self.n_conv else 1.0))
        return out


def pool_forward(k, arch, l, A, V_out, arg_out):
    """V := pool(A) after conv layer l; returns V (A itself when there is no pooling)."""
    q = arch.conv[l].q
    if q == 1:
        return A
    if arch.pool == "avg":
        k.avgpool(A, q, V_out)
    else:
        k.maxpool(A, q, V_out, arg_out)
    return V_out


def pool_adjoint(k, arch, l, dV, arg, dA_out):
    """dA := pool^T dV after conv layer l (at the recorded argmax for max pooling)."""
    q = arch.conv[l].q
    if q == 1:
        return dV
    if arch.pool == "avg":
        k.avgpool_adjoint(dV, q, dA_out)
    else:
        k.maxpool_adjoint(dV, arg, dA_out)
    return dA_out


class CNNForward:
    """The true network's forward pass with reusable buffers; after ``logits`` the
    lists Z, A, V, arg (and D = sigma'(Z) when asked) hold every layer's values."""

    def __init__(self, backend, arch, activation, dtype):
        self.k, self.arch = backend, arch
        self.kind = ACTIVATION_CODES[activation]
        self.ws = _Workspace(dtype)
        self.itemsize = np.dtype(dtype).itemsize
        self._args = {}

    def _argmax(self, l, shape):
        buf = self._args.get(l)
        if buf is None or buf.shape != shape:
            buf = self._args[l] = np.empty(shape, np.int64)
        return buf

    def chunk(self, l):
        c = self.arch.conv[l]
        return conv_chunk(c.out_shape[0] * c.out_shape[1], c.patch, self.itemsize)

    def logits(self, X, weights, biases, keep_derivatives=False):
        k, arch, ws, N = self.k, self.arch, self.ws, X.shape[0]
        ks, s, p = arch.kernel_size, arch.stride, arch.padding
        self.Z, self.A, self.D, self.V, self.arg = [], [], [], [], []
        U = X
        for l, c in enumerate(arch.conv):
            Z = ws(f"Z{l}", (N, *c.out_shape))
            k.conv_forward(U, weights[l], biases[l], ks, s, p, Z, self.chunk(l))
            A = ws(f"A{l}", Z.shape)
            D = ws(f"D{l}", Z.shape) if keep_derivatives else None
            k.activation(Z.reshape(N, -1), self.kind, A.reshape(N, -1),
                         None if D is None else D.reshape(N, -1))
            arg = self._argmax(l, (N, *c.pooled)) if arch.pool == "max" else None
            V = pool_forward(k, arch, l, A, ws(f"V{l}", (N, *c.pooled)), arg)
            self.Z.append(Z); self.A.append(A); self.D.append(D)
            self.V.append(V); self.arg.append(arg)
            U = V
        prev = U.reshape(N, -1)
        L = len(weights)
        for i in range(arch.n_conv, L):
            Z = ws(f"Z{i}", (N, weights[i].shape[1]))
            k.affine(prev, weights[i], biases[i], Z)
            if i == L - 1:
                return Z
            A = ws(f"A{i}", Z.shape)
            D = ws(f"D{i}", Z.shape) if keep_derivatives else None
            k.activation(Z, self.kind, A, D)
            self.Z.append(Z); self.A.append(A); self.D.append(D)
            prev = A

    def loss(self, X, y, weights, biases, P_out=None, keep_derivatives=False):
        """Return (mean cross-entropy, accuracy) of the true network on (X, y)."""
        G = self.logits(X, weights, biases, keep_derivatives)
        ce, n_correct = self.k.softmax_ce(G, y, P_out)
        return ce / X.shape[0], n_correct / X.shape[0]


class CNNLySepState(LySepState):
    """Auxiliary variables and caches of Algorithm 2 on one (mini-)batch.

    Inherits J, the safeguard ``_try``, the bound constant and the dense blocks from
    the FNN state; overrides the weights (rho_j factors) and adds the conv blocks.
    Needs at least one hidden dense layer (the last auxiliary block is dense, so the
    output and last-hidden blocks are the FNN's).
    """

    def __init__(self, backend, arch, X, y, weights, biases, activation, penalty_scale,
                 per_sample=True, search=LineSearch(), ridge_fallback="closest", n_threads=1):
        if not arch.hidden:
            raise ValueError("LySep-CNN needs at least one hidden dense layer")
        self.arch, self.Lc = arch, arch.n_conv
        super().__init__(backend, X, y, weights, biases, activation, penalty_scale,
                         per_sample=per_sample, search=search, ridge_fallback=ridge_fallback,
                         n_threads=n_threads)
        self.V2 = [np.empty_like(v) for v in self.V]
        self.arg2 = [None if a is None else np.empty_like(a) for a in self.arg]

    # -- MATH.md §5: the weights carry rho_j = beta^2 gamma_j^2 kappa_j -----------
    def _norm_factors(self):
        return self.arch.rho(LIPSCHITZ[self.activation])

    def _init_auxiliary(self):
        """Z, A, the pooled activations V (and max-pool argmax) from a forward pass."""
        arch, N, dtype = self.arch, self.N, self.X.dtype
        self.fwd = CNNForward(self.k, arch, self.activation, dtype)
        G = self.fwd.logits(self.X, self.W, self.b)
        self.ce, _ = self.k.softmax_ce(G, self.y)
        self.Z = [z.copy() for z in self.fwd.Z]
        self.A = [a.copy() for a in self.fwd.A]
        self.arg = [None if a is None else a.copy() for a in self.fwd.arg]
        self.V = [pool_forward(self.k, arch, l, self.A[l], np.empty((N, *c.pooled), dtype),
                               self.arg[l]) for l, c in enumerate(arch.conv)]

    def layer_input(self, i):
        """The input of layer i: X, a pooled conv activation (flattened at the first
        dense layer) or a dense activation."""
        if i == 0:
            return self.X
        if i < self.Lc:
            return self.V[i - 1]
        if i == self.Lc:
            return self.V[i - 1].reshape(self.N, -1)
        return self.A[i - 1]

    def _chunk(self, i):
        return self.fwd.chunk(i)

    # -- one sweep from the output down (Algorithm 2) ------------------------------
    # The FNN's sweep (with its per-block timings): its blocks dispatch to the conv
    # versions below the first dense layer.
    def _hidden_block(self, j):
        if j < self.Lc:
            return self._conv_z_block(j)
        return super()._hidden_block(j)

    def _ridge_block(self, i):
        if i < self.Lc:
            return self._kernel_block(i)
        return super()._ridge_block(i)

    def _kernel_block(self, i):
        """K_i (Phi Phi^T + lambda_i I) = (Z_i - b_i) Phi^T, Gram and right-hand side
        accumulated in chunks of samples (MATH.md §5, paper's (4.5)-(4.6)).  The closest
        fallback solves for the change from the current K_i instead, with right-hand
        side R_i Phi^T - lambda_i K_i (the FNN ridge block's rule)."""
        k, arch = self.k, self.arch
        ks, s, p = arch.kernel_size, arch.stride, arch.padding
        U, Z, chunk = self.layer_input(i), self.Z[i], self._chunk(i)
        KK, Co = self.W[i].shape
        lam, closest = self.ridge_lambda(i), self.ridge_fallback == "closest"
        if closest:
            target = self.R[i]
        else:
            target = self.R2[i]                          # scratch until the residual
            np.subtract(Z, self.b[i], out=target)
        G, RHS = self.ws("kgram", (KK, KK)), self.ws("krhs", (KK, Co))
        k.conv_gram(U, target, ks, s, p, G, RHS, chunk)
        if closest:
            RHS -= RHS.dtype.type(lam) * self.W[i]
        status = k.ridge_solve(G, RHS, lam, self.rcond_min, self.W2[i],
                               self.ws("kgram1", (KK, KK)), self.ws("kgram2", (KK, KK)))
        if closest:                      # K_i + the change (K_i if LAPACK failed)
            self.W2[i] += self.W[i]
        self.stats["fallbacks"] += status != 0
        R = self.R2[i]
        k.conv_forward(U, self.W2[i], self.b[i], ks, s, p, R, chunk)
        np.subtract(Z, R, out=R)
        self._try("kernel", lambda: self._swap_wr(i), r={i: self._ssq(R)},
                  wn={i: self._ssq(self.W2[i])})

    def _conv_z_block(self, j):
        """Backtracking gradient step on a conv pre-activation Z_j (MATH.md §4-§5):
        row objective f_n = omega_j ||r_j||^2 + omega_i ||z_i - lin_i(pool(sigma(z_j))) - b_i||^2,
        gradient 2 omega_j r_j - 2 omega_i sigma'(z_j) * pool^T(lin_i^T r_i), i = j + 1."""
        k, arch, ws, N, i = self.k, self.arch, self.ws, self.N, j + 1
        om = self.omegas()
        shape, shape_i = self.Z[j].shape, self.Z[i].shape
        n, n_i = int(np.prod(shape[1:])), int(np.prod(shape_i[1:]))
        grad, gsq = self.conv_z_gradient(j)
        f0 = np.empty(N)
        rn = np.empty(N)
        k.row_sq_norms(self.R[j].reshape(N, n), f0)
        k.row_sq_norms(self.R[i].reshape(N, n_i), rn)
        f0 = om[j] * f0 + om[i] * rn
        # trial rows are compact: row a of each buffer is sample rows[a]
        Zc, Rc, Ac = ws("Zc", (N, n)), ws("Rc", (N, n)), ws("Ac", (N, n))
        Vc = ws("Vc", self.V[j].shape)
        argc = np.empty(self.V[j].shape, np.int64) if arch.pool == "max" else None
        Yc = ws("Yc", (N, n_i))
        # the rounding floor of the residual terms (lysep._fnn_blocks._search_give_up):
        # 64 eps^2 (omega_j ||z_j||^2 + omega_i ||z_i - b_i||^2), Yc as scratch
        zsq, zbsq = np.empty(N), np.empty(N)
        k.row_sq_norms(self.Z[j].reshape(N, n), zsq)
        np.subtract(self.Z[i], self.b[i], out=Yc.reshape(shape_i))
        k.row_sq_norms(Yc, zbsq)
        eps = float(np.finfo(self.X.dtype).eps)
        floor = 64 * eps * eps * (om[j] * zsq + om[i] * zbsq)
        rsq, rnsq = np.empty(N), np.empty(N)
        Z2, A2 = self.Z2[j].reshape(N, n), self.A2[j].reshape(N, n)
        R2j, R2i = self.R2[j].reshape(N, n), self.R2[i].reshape(N, n_i)
        Z1, R1, Zi = self.Z[j].reshape(N, n), self.R[j].reshape(N, n), self.Z[i].reshape(N, n_i)

        last = {"full": False}

        def trial(rows, step):
            na = rows.shape[0]
            last["full"] = na == N
            # all rows searching: write straight into the candidate arrays (rows that
            # fail later are overwritten by a later trial or restored below)
            zc, rc, ac, yc = (Z2, R2j, A2, R2i) if na == N else (Zc, Rc, Ac, Yc)
            k.z_trial_rows(Z1, R1, grad, step, rows, self.kind, zc, rc, ac, rsq)
            V = pool_forward(k, arch, j, ac[:na].reshape(na, *shape[1:]), Vc[:na],
                             None if argc is None else argc[:na])
            if i < self.Lc:
                k.conv_forward(V, self.W[i], self.b[i], arch.kernel_size, arch.stride,
                               arch.padding, yc[:na].reshape(na, *shape_i[1:]), self._chunk(i))
            else:
                k.affine(V.reshape(na, -1), self.W[i], self.b[i], yc[:na])
            k.residual_rows(Zi, rows, yc, rnsq)
            return om[j] * rsq[:na] + om[i] * rnsq[:na]

        def commit(rows, idx):
            if rows.shape[0] and not last["full"]:
                Z2[rows], A2[rows], R2j[rows], R2i[rows] = Zc[idx], Ac[idx], Rc[idx], Yc[idx]

        failed = self._row_search(f0, floor, gsq, self.eta_z[j],
                                  2 * (om[j] + om[i] * self.rho[i] * self.wn[i]),
                                  np.finfo(self.X.dtype).eps, trial, commit)
        Z2[failed], A2[failed] = Z1[failed], self.A[j].reshape(N, n)[failed]
        R2j[failed], R2i[failed] = R1[failed], self.R[i].reshape(N, n_i)[failed]
        V2 = pool_forward(k, arch, j, self.A2[j], self.V2[j], self.arg2[j])

        def commit_block():
            self._swap_z(j)
            if V2 is self.A[j]:                      # no pooling: V is A
                self.V[j], self.V2[j] = self.A[j], self.A2[j]
            else:
                self.V[j], self.V2[j] = self.V2[j], self.V[j]
                self.arg[j], self.arg2[j] = self.arg2[j], self.arg[j]
            self.R[i], self.R2[i] = self.R2[i], self.R[i]
        self._try("z", commit_block, r={j: self._ssq(self.R2[j]), i: self._ssq(self.R2[i])})

    def conv_z_gradient(self, j):
        """Row gradients of N*J with respect to the conv pre-activation Z_j (as an
        (N, n) array) and their squared norms."""
        k, arch, ws, N, i = self.k, self.arch, self.ws, self.N, j + 1
        om = self.omegas()
        n = self.Z[j][0].size
        dV = ws("dV", self.V[j].shape)
        if i < self.Lc:
            k.conv_transpose(self.R[i], self.W[i], arch.kernel_size, arch.stride,
                             arch.padding, dV, self._chunk(i))
        else:
            np.matmul(self.R[i], self.W[i].T, out=dV.reshape(N, -1))
        back = pool_adjoint(k, arch, j, dV, self.arg[j], ws("dA", self.Z[j].shape))
        grad, gsq = ws("zgrad", (N, n)), np.empty(N)
        k.conv_z_gradient(self.R[j].reshape(N, n), self.A[j].reshape(N, n),
                          back.reshape(N, n), self.kind, om[j], om[i], grad, gsq)
        return grad, gsq

    def _row_search(self, f0, floor, gsq, eta, lipschitz, eps, trial, commit):
        """Monotone backtracking per sample (len(eta) == N) or shared (len(eta) == 1),
        the rules of lysep._fnn_blocks: trial step min(eta*grow, eta_max)/lipschitz,
        Armijo test, shrink, give up below the rounding level (64 eps |f0| plus the
        rows' residual floor).  Returns the rows that found no step (they keep their
        values); eta is updated in place."""
        sr, N = self.search, f0.shape[0]
        shared = eta.shape[0] == 1
        noise = 64 * eps
        step = np.minimum(np.broadcast_to(eta, (N,)) * sr.grow, sr.eta_max) / lipschitz
        active = np.arange(N, dtype=np.intp)
        failed = []
        for t in range(sr.max_backtracks + 1):
            if active.size == 0:
                break
            self.stats["trials"] += 1
            f = trial(active, step)
            s, g0, a0, fl = step[active], gsq[active], f0[active], floor[active]
            if shared:
                give_up = np.full(active.size,
                                  s[0] * g0.sum() <= noise * np.abs(a0).sum() + fl.sum())
                accept = np.full(active.size, f.sum() <= a0.sum() - sr.armijo * s[0] * g0.sum())
            else:
                give_up = s * g0 <= noise * np.abs(a0) + fl
                accept = f <= a0 - sr.armijo * s * g0
            accept &= ~give_up
            retry = ~(accept | give_up)
            idx = np.flatnonzero(accept)
            commit(active[idx], idx)
            failed.append(active[give_up | (retry if t == sr.max_backtracks else False)])
            step[active[retry]] *= sr.shrink
            active = active[retry]
        failed = np.concatenate(failed) if failed else np.zeros(0, np.intp)
        self.stats["failed_rows"] += failed.size
        eta[...] = step[:1] * lipschitz if shared else step * lipschitz
        return failed



class CNNGDState:
    """Gradient descent by backpropagation on one (mini-)batch (the CE-CNN baseline)."""

    def __init__(self, backend, arch, X, y, weights, biases, activation, learning_rate):
        self.k, self.arch, self.X, self.y = backend, arch, X, y
        self.W, self.b = weights, biases
        self.lr = learning_rate
        self.fwd = CNNForward(backend, arch, activation, X.dtype)
        self.ws = _Workspace(X.dtype)
        self.N = X.shape[0]
        self.P = self.ws("P", (self.N, weights[-1].shape[1]))

    def forward(self):
        """Loss and accuracy at the current parameters; keeps what backprop needs."""
        return self.fwd.loss(self.X, self.y, self.W, self.b, self.P, keep_derivatives=True)

    def gradients(self):
        """Gradients of the mean cross-entropy from the caches of the last forward()."""
        k, arch, ws, f, W, N = self.k, self.arch, self.ws, self.fwd, self.W, self.N
        Lc, L = arch.n_conv, len(W)
        gW = [ws(f"gW{i}", w.shape) for i, w in enumerate(W)]
        gb = [ws(f"gb{i}", v.shape) for i, v in enumerate(self.b)]
        delta = ws(f"delta{L - 1}", self.P.shape)
        np.multiply(self.P, self.X.dtype.type(1.0 / N), out=delta)
        for i in range(L - 1, Lc, -1):
            prev = ws(f"delta{i - 1}", f.A[i - 1].shape)
            k.backprop_layer(delta, f.A[i - 1], W[i], gW[i], gb[i], f.D[i - 1], prev)
            delta = prev
        V = f.V[Lc - 1]
        k.backprop_layer(delta, V.reshape(N, -1), W[Lc], gW[Lc], gb[Lc])
        dV = ws("dV", V.shape)
        np.matmul(delta, W[Lc].T, out=dV.reshape(N, -1))
        ks, s, p = arch.kernel_size, arch.stride, arch.padding
        for l in range(Lc - 1, -1, -1):
            dZ = pool_adjoint(k, arch, l, dV, f.arg[l], ws(f"dZ{l}", f.Z[l].shape))
            np.multiply(dZ, f.D[l], out=dZ)
            U = f.V[l - 1] if l > 0 else self.X
            k.conv_weight_grad(U, dZ, ks, s, p, gW[l], gb[l], f.chunk(l))
            if l > 0:
                dV = ws(f"dV{l - 1}", U.shape)
                k.conv_transpose(dZ, W[l], ks, s, p, dV, f.chunk(l))
        return gW, gb

    def update(self):
        """One gradient step from the caches of the last forward()."""
        gW, gb = self.gradients()
        lr = self.X.dtype.type(self.lr)
        for i in range(len(self.W)):
            self.W[i] -= lr * gW[i]
            self.b[i] -= lr * gb[i]
