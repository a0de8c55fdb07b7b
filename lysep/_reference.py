"""NumPy reference of every compiled block (MATH.md §1, §4, §7).

Each function has the name, signature and return value of its compiled twin in
``lysep._fnn_blocks`` / ``lysep._softmax`` / ``lysep._activation``: it writes into the
``*_out`` arrays and returns the same tuple.  Clear and slow on purpose; the tests run
the same sweep (``lysep._sweep``) on both backends and compare.
Storage: samples are rows; a weight array of shape (n_in, n_out) maps rows by ``A @ W``.
"""
import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from ._activations import activation, derivative_from_value  # noqa: F401


def softmax_ce(G, y, P_out=None):
    """Return (sum of row losses, n_correct); P_out := softmax(G) - onehot(y)."""
    loss, correct, P = _ce_rows(G, y)
    if P_out is not None:
        P_out[...] = P
    return float(loss.sum()), int(correct.sum())


def _ce_rows(G, y):
    """Row losses logsumexp(g) - g_y (max-shifted, in float64), argmax hits, P - Y."""
    N = G.shape[0]
    rows = np.arange(N)
    gmax = G.max(axis=1)
    e = np.exp(G.astype(np.float64) - gmax[:, None])
    s = e.sum(axis=1)
    loss = gmax + np.log(s) - G[rows, y]
    P = (e.astype(G.dtype) / s[:, None]).astype(G.dtype)
    P[rows, y] -= 1
    return loss, G.argmax(axis=1) == y, P


def affine(A, W, b, Z_out):
    """Z_out := A W + b."""
    Z_out[...] = A @ W + b


def activation_rows(Z, kind, A_out, n_threads=1):
    """A_out := sigma(Z); n_threads is the compiled kernel's (one thread here)."""
    activation(Z, kind, A_out)


def layer_forward(A_prev, W, b, kind, A_out, Z_out=None, n_threads=1):
    """A_out := sigma(A_prev W + b); Z_out := A_prev W + b when given.  n_threads is the
    compiled kernel's; the reference runs in one thread."""
    Z = A_prev @ W + b
    activation(Z, kind, A_out)
    if Z_out is not None:
        Z_out[...] = Z


def network_forward(X, W, b, kind, A_out, G_out, n_threads=1):
    """A_out[i] := sigma(A_out[i-1] W[i] + b[i]) for every hidden layer (A_out[-1] = X);
    G_out := the logits A_out[m-1] W[m] + b[m]."""
    prev = X
    for i in range(len(W) - 1):
        layer_forward(prev, W[i], b[i], kind, A_out[i])
        prev = A_out[i]
    affine(prev, W[-1], b[-1], G_out)


def residual(Z, A_prev, W, b, R_out):
    """R_out := Z - A_prev W - b; returns ||R||^2."""
    R_out[...] = (Z - b) - A_prev @ W
    return _ssq(R_out)


def squared_norm(x):
    """Return ||x||^2 in float64."""
    return _ssq(x)


def _ssq(x):
    x = np.asarray(x, dtype=np.float64).ravel()
    return float(x @ x)


def output_step(A, y, W, b, mu, eta, lipschitz, max_backtracks, shrink, armijo,
                W_out, b_out, work_G, work_P, work_gW, work_gb):
    """One Armijo-backtracking gradient step on CE(A W + b)/N + mu ||W||^2."""
    N = A.shape[0]
    dt = A.dtype.type
    ce0, _ = softmax_ce(A @ W + b, y, work_P)
    phi0 = ce0 / N + mu * _ssq(W)
    gW = A.T @ work_P * dt(1.0 / N) + dt(2 * mu) * W
    gb = work_P.sum(axis=0, dtype=np.float64) / N
    gsq = _ssq(gW) + _ssq(gb)
    step = eta / lipschitz
    n_eval = 1
    for _ in range(max_backtracks + 1):
        W_out[...] = W - dt(step) * gW
        b_out[...] = b - dt(step) * gb.astype(A.dtype)
        ce, _ = softmax_ce(A @ W_out + b_out, y)
        n_eval += 1
        if ce / N + mu * _ssq(W_out) <= phi0 - armijo * step * gsq:
            return True, step * lipschitz, ce, ce0, n_eval
        step *= shrink
    W_out[...] = W
    b_out[...] = b
    return False, step * lipschitz, ce0, ce0, n_eval


def _row_ssq(M):
    M = M.astype(np.float64)
    return np.einsum("ij,ij->i", M, M)


def _floor(dtype):
    """64 eps^2: a residual below about 8 eps times the values it is the difference of
    is rounding noise (the squared-norm floor of a row objective's residual terms)."""
    eps = float(np.finfo(dtype).eps)
    return 64 * eps * eps


def _z_search(Z, A, R, g, f0, floor, eta, lipschitz, max_backtracks, shrink, armijo, grow,
              eta_max, kind, trial_objective, Z_out, A_out, R_out, commit):
    """Shared backtracking driver of the Z blocks: per-row steps (len(eta) == N) or a
    shared step (len(eta) == 1).  trial_objective(rows, A_trial, R_trial) returns the
    trial row objectives; commit(rows, accepted_mask) stores what else the block keeps.
    A_out may be None (the candidate's activations are not kept).  floor: the rounding
    floor of each row objective's residual terms (a row whose promised decrease is
    below 64 eps |f0| + floor gives up: its comparison would be noise)."""
    N, n = Z.shape
    dt = Z.dtype.type
    shared = eta.shape[0] == 1
    gsq = _row_ssq(g)
    noise = 64 * np.finfo(Z.dtype).eps
    step = np.minimum(np.broadcast_to(eta, (N,)) * grow, eta_max) / lipschitz
    active = np.arange(N)
    failed = []
    n_trials = 0
    for t in range(max_backtracks + 1):
        if active.size == 0:
            break
        # a row whose promised decrease is below the rounding level of its objective
        # keeps its value: past that point the comparison is noise (needs no trial)
        if shared:
            give_up = np.full(active.size, step[active[0]] * gsq[active].sum()
                              <= noise * np.abs(f0[active]).sum() + floor[active].sum())
        else:
            give_up = step[active] * gsq[active] <= noise * np.abs(f0[active]) + floor[active]
        failed.append(active[give_up])
        active = active[~give_up]
        if active.size == 0:
            break
        n_trials += 1
        st = step[active].astype(Z.dtype)[:, None]
        Zt = Z[active] - st * g[active]
        Rt = R[active] + (Zt - Z[active])
        At = np.empty_like(Zt)
        activation(Zt, kind, At)
        f = trial_objective(active, At, Rt)
        if shared:   # one decision on the sums (the paper's single step size)
            s0 = step[active[0]]
            accept = np.full(active.size, f.sum() <= f0[active].sum() - armijo * s0 * gsq[active].sum())
        else:
            accept = f <= f0[active] - armijo * step[active] * gsq[active]
        retry = ~accept
        rows = active[accept]
        Z_out[rows], R_out[rows] = Zt[accept], Rt[accept]
        if A_out is not None:
            A_out[rows] = At[accept]
        commit(rows, accept)
        if t == max_backtracks:
            failed.append(active[retry])
        step[active[retry]] *= shrink
        active = active[retry]
    failed = np.sort(np.concatenate(failed)) if failed else np.zeros(0, dtype=np.intp)
    Z_out[failed], R_out[failed] = Z[failed], R[failed]
    if A_out is not None:
        A_out[failed] = A[failed]
    eta[...] = step[:1] * lipschitz if shared else step * lipschitz
    return failed, n_trials


def z_last_step(Z, A, R, W, b, y, kind, omega, eta, lipschitz, max_backtracks, shrink,
                armijo, grow, eta_max, Z_out, A_out, R_out, work_D, work_grad, work_P,
                n_threads=1):
    """Backtracking step on Z_m: rows f_i = CE(sigma(z) W + b, y_i) + omega ||r_i||^2.
    n_threads is the compiled kernel's; the reference runs in one thread."""
    dt = Z.dtype.type
    D = derivative_from_value(A, kind)
    ce_i, _, P = _ce_rows(A @ W + b, y)
    f0 = ce_i + omega * _row_ssq(R)
    floor = _floor(Z.dtype) * omega * _row_ssq(Z)
    g = (P @ W.T) * D + dt(2 * omega) * R
    ce_new = ce_i.copy()
    trial = {}

    def objective(rows, At, Rt):
        trial["ce"], _, _ = _ce_rows(At @ W + b, y[rows])
        return trial["ce"] + omega * _row_ssq(Rt)

    def commit(rows, accept):
        ce_new[rows] = trial["ce"][accept]

    failed, n_trials = _z_search(Z, A, R, g, f0, floor, eta, lipschitz, max_backtracks,
                                 shrink, armijo, grow, eta_max, kind, objective, Z_out,
                                 A_out, R_out, commit)
    return float(ce_new.sum()), _ssq(R_out), int(failed.size), n_trials


def z_hidden_step(Z, A, R, R_next, W_next, Z_next, b_next, kind, omega, omega_next, eta,
                  lipschitz, max_backtracks, shrink, armijo, grow, eta_max, Z_out, A_out, R_out,
                  R_next_out, work_D, work_grad, work_Zb, work_Rc, n_threads=1):
    """Backtracking step on a hidden Z: rows f_i = omega ||r_i||^2 + omega_next ||rn_i||^2,
    rn = zb - sigma(z) W_next with zb = Z_next - b_next fixed (paper's (3.12));
    R_next = zb - A W_next.  The outputs are written even when no row moves (the
    compiled kernel then leaves them: callers ignore them when n_failed == N).
    n_threads is the compiled kernel's; the reference runs in one thread."""
    dt = Z.dtype.type
    D = derivative_from_value(A, kind)
    Zb = Z_next - b_next
    f0 = omega * _row_ssq(R) + omega_next * _row_ssq(R_next)
    floor = _floor(Z.dtype) * (omega * _row_ssq(Z) + omega_next * _row_ssq(Zb))
    g = dt(2 * omega) * R - dt(2 * omega_next) * (D * (R_next @ W_next.T))
    trial = {}

    def objective(rows, At, Rt):
        trial["rn"] = Zb[rows] - At @ W_next
        return omega * _row_ssq(Rt) + omega_next * _row_ssq(trial["rn"])

    def commit(rows, accept):
        R_next_out[rows] = trial["rn"][accept]

    failed, n_trials = _z_search(Z, A, R, g, f0, floor, eta, lipschitz, max_backtracks,
                                 shrink, armijo, grow, eta_max, kind, objective, Z_out,
                                 A_out, R_out, commit)
    R_next_out[failed] = R_next[failed]
    return _ssq(R_out), _ssq(R_next_out), int(failed.size), n_trials


def z_last_work_rows(N, n, itemsize, shared):
    """Rows of z_last_step's work arrays: the reference uses NumPy temporaries instead
    (one row, so that the arrays are not empty)."""
    return min(N, 1)


def z_hidden_work_rows(N, n, n2, itemsize, shared):
    """Rows of z_hidden_step's work arrays: NumPy temporaries instead (one row)."""
    return min(N, 1)


def ridge_update(A_prev, Z, b, lam, rcond_min, W_out, R_out, work_gram, work_gram2,
                 colsum_out=None, W_now=None, R_now=None, n_threads=1):
    """W_out := argmin ||Z - b - A_prev W||^2 + lam ||W||^2 via the normal equations
    (Cholesky), or the minimum-norm solution through the Gram matrix's eigenvalues when
    it is ill conditioned (reciprocal condition estimate below rcond_min).  With W_now
    (the closest fallback) both solve for the change, G dW = A_prev^T R_now - lam W_now,
    R_now = Z - b - A_prev W_now the current residual (recomputed if None), and
    W_out = W_now + dW: on a fallback the least-squares solution closest to W_now.
    R_out may be None (the low-memory sweep: the residual is not stored); colsum_out,
    if given, receives the residual's column sums (bias_update_lean's stats).
    n_threads: the compiled kernel's threads (one here).
    Returns (||R_out||^2, ||W_out||^2, status)."""
    N, n_in = A_prev.shape
    Zb = Z - b
    if W_now is None:
        rhs = A_prev.T @ Zb
    else:
        R0 = Zb - A_prev @ W_now if R_now is None else R_now
        rhs = A_prev.T @ R0 - A_prev.dtype.type(lam) * W_now
    G = A_prev.T @ A_prev + A_prev.dtype.type(lam) * np.eye(n_in, dtype=A_prev.dtype)
    pocon = scipy.linalg.lapack.get_lapack_funcs("pocon", (G,))
    U, info = scipy.linalg.lapack.get_lapack_funcs("potrf", (G,))(G, lower=False)
    rcond = pocon(U, np.abs(G).sum(axis=0).max())[0] if info == 0 else -1.0
    if info == 0 and rcond >= rcond_min:
        sol = scipy.linalg.cho_solve((U, False), rhs)
        status = 0
    else:
        w, Q = np.linalg.eigh(G)
        keep = w > n_in * np.finfo(G.dtype).eps * w[-1]
        inv = np.where(keep, 1 / np.where(keep, w, 1), 0).astype(G.dtype)
        sol = Q @ (inv[:, None] * (Q.T @ rhs))
        status = 1
    W_out[...] = sol if W_now is None else W_now + sol
    R = (Zb - A_prev @ W_out).astype(A_prev.dtype, copy=False)
    if R_out is not None:
        R_out[...] = R
    if colsum_out is not None:
        colsum_out[...] = R.sum(axis=0, dtype=np.float64)
    return _ssq(R), _ssq(W_out), status


def bias_update(R, b, R_out, b_out, n_threads=1):
    """b_out := b + mean of R's rows; R_out := R - that mean; returns ||R_out||^2.
    n_threads: the compiled kernel's threads (one here)."""
    mean = R.mean(axis=0, dtype=np.float64).astype(R.dtype)
    b_out[...] = b + mean
    R_out[...] = R - mean
    return _ssq(R_out)


# -- the low-memory sweep: residuals and activations recomputed, not stored ---------
def _recomputed(src, kind_prev, W, b, Z, kind):
    """The residual (Z - b) - sigma(src) W and the activations sigma(Z) a low-memory Z
    block recomputes; src is X when kind_prev < 0, else the previous layer's Z."""
    A_prev = src
    if kind_prev >= 0:
        A_prev = np.empty_like(src)
        activation(src, kind_prev, A_prev)
    R = np.empty_like(Z)
    residual(Z, A_prev, W, b, R)
    A = np.empty_like(Z)
    activation(Z, kind, A)
    return R, A


def _column_sums(colsum_out, R, R_new):
    """colsum_out (2 x n, or None) := the column sums of R and of R_new."""
    if colsum_out is not None:
        colsum_out[0] = R.sum(axis=0, dtype=np.float64)
        colsum_out[1] = R_new.sum(axis=0, dtype=np.float64)


def z_last_step_lean(src, kind_prev, W, b, Z, W_next, b_next, y, kind, omega, eta,
                     lipschitz, max_backtracks, shrink, armijo, grow, eta_max, Z_out,
                     colsum_out=None, n_threads=1):
    """z_last_step from recomputed R = (Z - b) - sigma(src) W and A = sigma(Z); only
    Z_out is written.  colsum_out (2 x n): the column sums of R and of R_new.
    n_threads is the compiled kernel's; the reference runs in one thread."""
    R, A = _recomputed(src, kind_prev, W, b, Z, kind)
    R_out = np.empty_like(R)
    out = z_last_step(Z, A, R, W_next, b_next, y, kind, omega, eta, lipschitz,
                      max_backtracks, shrink, armijo, grow, eta_max, Z_out, None,
                      R_out, None, None, None)
    _column_sums(colsum_out, R, R_out)
    return out


def z_hidden_step_lean(src, kind_prev, W, b, Z, W_next, Z_next, b_next, kind, omega,
                       omega_next, eta, lipschitz, max_backtracks, shrink, armijo, grow,
                       eta_max, Z_out, colsum_out=None, n_threads=1):
    """z_hidden_step from recomputed R = (Z - b) - sigma(src) W, A = sigma(Z) and
    R_next = (Z_next - b_next) - A W_next; only Z_out is written.  colsum_out (2 x n):
    the column sums of R and of R_new.  n_threads is the compiled kernel's; the
    reference runs in one thread."""
    R, A = _recomputed(src, kind_prev, W, b, Z, kind)
    R_next = (Z_next - b_next) - A @ W_next
    R_out = np.empty_like(R)
    out = z_hidden_step(Z, A, R, R_next, W_next, Z_next, b_next, kind, omega, omega_next,
                        eta, lipschitz, max_backtracks, shrink, armijo, grow, eta_max,
                        Z_out, None, R_out, np.empty_like(R_next), None, None, None, None)
    _column_sums(colsum_out, R, R_out)
    return out


def bias_update_lean(A_prev, W, Z, b, b_out, stats=None):
    """b_out := b + d, d the mean of the rows of R = (Z - b) - A_prev W; returns
    ||R - d||^2 = ||R||^2 - 2 d.sum(R) + N ||d||^2, or, when that is below ||R||^2 / 2,
    ||(Z - b_out) - A_prev W||^2 computed again.  stats = (||R||^2, R's column sums),
    when the caller has them (the ridge block's colsum_out), saves computing R."""
    N = Z.shape[0]
    if stats is None:
        R = (Z - b) - A_prev @ W
        s, col = _ssq(R), R.sum(axis=0, dtype=np.float64)
    else:
        s, col = float(stats[0]), np.asarray(stats[1], dtype=np.float64)
        if col.shape != (Z.shape[1],):
            raise ValueError(f"stats: column sums of length {Z.shape[1]} expected, "
                             f"got shape {col.shape}")
    d = (col / N).astype(Z.dtype)
    b_out[...] = b + d
    d = d.astype(np.float64)
    r = s + float(N * (d @ d) - 2 * (d @ col))
    if r < 0.5 * s:
        r = _ssq((Z - b_out) - A_prev @ W)
    return r


def backprop_layer(delta, A_prev, W, grad_W_out, grad_b_out, D_prev=None,
                   delta_prev_out=None, kind=-1):
    """grad_W := A_prev^T delta, grad_b := sum of delta's rows, delta_prev := (delta W^T)
    * sigma'(Z_prev), the derivative from D_prev or, without it, from A_prev's values."""
    grad_W_out[...] = A_prev.T @ delta
    grad_b_out[...] = delta.sum(axis=0)
    if delta_prev_out is not None:
        D = D_prev if D_prev is not None else derivative_from_value(A_prev, kind)
        delta_prev_out[...] = (delta @ W.T) * D


def backprop_step(P, X, A, W, b, kind, learning_rate, grad_W_out, grad_b_out, work_delta,
                  n_threads=1):
    """One gradient-descent step by backpropagation from the last forward's P =
    softmax(G) - Y and activations A (X feeds layer 0): delta = P / N at the logits,
    backprop_layer from the top layer down, W[i] -= lr grad_W[i] and b[i] -= lr grad_b[i]
    once layer i's delta has been passed on; the deltas live in work_delta's two buffers."""
    dt = P.dtype.type
    lr = dt(learning_rate)
    delta = work_delta[0][:P.size].reshape(P.shape)
    np.multiply(P, dt(1.0 / P.shape[0]), out=delta)
    for i in range(len(W) - 1, -1, -1):
        if i > 0:
            prev = A[i - 1]
            delta_prev = work_delta[(len(W) - i) % 2][:prev.size].reshape(prev.shape)
            backprop_layer(delta, prev, W[i], grad_W_out[i], grad_b_out[i], None, delta_prev,
                           kind)
        else:
            backprop_layer(delta, X, W[i], grad_W_out[i], grad_b_out[i])
        W[i] -= lr * grad_W_out[i]
        b[i] -= lr * grad_b_out[i]
        if i > 0:
            delta = delta_prev
