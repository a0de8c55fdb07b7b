"""FLOP model of one LySep sweep (Algorithm 1, MATH.md §4) as ``lysep._sweep`` runs it.

Notation: N samples; hidden layers i = 0..m-1 of widths n_i; p_i the input width of
layer i (p_0 = d features, p_i = n_{i-1}); K classes; output layer m (n_{m-1} x K).
A GEMM of an (a x k) by a (k x b) matrix counts 2abk flops, a SYRK of an (N x p) matrix
counts N p (p + 1) (the triangle computed), POTRF p^3/3, TRSM with a (q x p) right-hand
side q p^2 each.  Elementwise work (tanh and its derivative, exp/log of the softmax,
axpys, row norms, copies) counts zero: the figure is a matrix-product rate, comparable
with one large DGEMM.

Per sweep, block by block (what the compiled kernels in src/_fnn_blocks.pyx compute):

* output block (W_m, b_m), A = A_{m-1}, n = n_{m-1}:
  logits A W 2NnK, gradient (P - Y)^T A 2NnK, and 2NnK per backtracking trial.
  The trials are ``n_eval - 1``, recovered from the step memory: the search starts at
  ``min(grow * eta_before, eta_max)`` and halves until accepted, so
  trials = log2(start / eta_after) + 1 (capped at max_backtracks + 1).
* last hidden Z block (Z_{m-1}): logits 2NnK, gradient W (P - Y) 2NnK, and 2nK per
  row per trial.
* ridge block of layer i (p = p_i, q = n_i), unless the layer is at its fit (the sweep
  skips its ridge, ``stats['ridge_at_fit']``): right-hand side (Z - b) A^T 2Npq, Gram A A^T
  by SYRK Np(p+1), Cholesky p^3/3, two TRSMs 2qp^2, new residual 2Npq.  A fallback
  to the minimum-norm solve (``stats['fallbacks']``; which layer fell back is not
  reported, so each fallback is charged to a layer of the widest hidden width) adds an
  eigendecomposition counted 4p^3 (tridiagonal reduction 4/3 p^3 plus eigenvector
  back-transformation, divide and conquer) and two GEMMs 4qp^2.
* bias block: no matrix products.
* hidden Z block of layer j (n = n_j, n2 = n_{j+1}): gradient W_{j+1} R_{j+1}^T 2N n n2 (the
  target Zb = Z_{j+1} - b_{j+1} is a subtraction), and 2 n n2 per row per trial; nothing
  when the sweep skips it (both layers at their fit, ``stats['z_at_fit']``).

Rows actually evaluated: the kernels evaluate only the rows still searching (packed
into one GEMM per trial).  Each Z block runs once per sweep per layer, and the kernel
leaves each row's last step in the state's ``eta_z`` (per-sample steps): a row that
started at ``start_r = min(grow * eta_before_r, eta_max)`` and ended at ``eta_after_r``
was evaluated ``log2(start_r / eta_after_r) + 1`` times (capped at max_backtracks + 1,
the one case where the last shrink is not followed by a trial).  A row that gave up
(its promised decrease below the rounding level) was not evaluated at its last step:
before its first trial it ends at ``start_r`` and was evaluated 0 times, after k
rejected trials it ends k halvings down and was evaluated k times, one less than an
accepted row with the same steps.  It is told apart from an accepted row because its Z
row did not change.  ``row_trials`` computes this from snapshots of
``eta_z`` and ``Z`` taken before the sweep (outside the timed region); the maximum over
the rows of a block equals the block's trial count, and the sum over blocks of those
maxima is checked against the sweep's ``stats['trials']``.
"""
import numpy as np


def row_trials(eta_before, eta_after, search, moved=None):
    """Per-row number of trial evaluations of one Z block (see the module docstring);
    moved[r]: whether row r's Z changed (None: count rows that kept their step as
    evaluated once)."""
    start = np.minimum(np.asarray(eta_before, dtype=np.float64) * search.grow, search.eta_max)
    after = np.asarray(eta_after, dtype=np.float64)
    shrinks = np.rint(np.log(start / after) / np.log(1.0 / search.shrink)).astype(np.int64)
    k = np.clip(shrinks + 1, 1, search.max_backtracks + 1)
    if moved is not None:      # kept rows: every trial rejected, or given up before the last
        k[~np.asarray(moved) & (shrinks <= search.max_backtracks)] -= 1
    return k


def output_trials(eta_before, eta_after, search):
    return int(row_trials(np.array([eta_before]), np.array([eta_after]), search)[0])


def sweep_flops(sizes, N, rows, out_trials, fallbacks=0, ridge_at_fit=(), z_at_fit=()):
    """Flops of one sweep.

    sizes: (d, n_0, ..., n_{m-1}, K); rows[i]: total rows evaluated over all trials of
    layer i's Z block; out_trials: backtracking trials of the output block;
    ridge_at_fit, z_at_fit: the layers whose ridge block and hidden Z block the sweep did
    not run (its stats).  Returns (total, {block kind: flops}).
    """
    d, *hidden, K = sizes
    m = len(hidden)
    parts = {"output": 0.0, "z": 0.0, "ridge": 0.0, "bias": 0.0}
    n = hidden[-1]
    parts["output"] += 2.0 * N * n * K * (2 + out_trials)
    parts["z"] += 2.0 * N * n * K * 2 + 2.0 * n * K * rows[m - 1]
    for i in range(m):
        if i in ridge_at_fit:
            continue
        p, q = (d if i == 0 else hidden[i - 1]), hidden[i]
        parts["ridge"] += 4.0 * N * p * q + N * p * (p + 1.0) + p ** 3 / 3.0 + 2.0 * q * p * p
    for j in range(m - 1):
        if j in z_at_fit:
            continue
        n, n2 = hidden[j], hidden[j + 1]
        parts["z"] += 2.0 * N * n * n2 + 2.0 * n * n2 * rows[j]
    w = max(hidden)
    parts["ridge"] += fallbacks * (4.0 * w ** 3 + 4.0 * w ** 3)
    return sum(parts.values()), parts


class SweepCounter:
    """Snapshots a LySepState's step memory before a sweep and, after it, returns the
    sweep's flops, the rows evaluated and the check against stats['trials']."""

    def __init__(self, state, sizes):
        self.state, self.sizes = state, sizes

    def before(self):
        self.eta_z = [e.copy() for e in self.state.eta_z]
        self.Z = [z.copy() for z in self.state.Z]
        self.eta_out = self.state.eta_out

    def after(self, stats):
        st, search = self.state, self.state.search
        moved = [(z0 != z).reshape(z.shape[0], -1).any(axis=1) for z0, z in zip(self.Z, st.Z)]
        per_row = [row_trials(b, a, search, mv) if b.shape == a.shape == mv.shape else
                   row_trials(b, a, search)            # a shared step: one for all rows
                   for b, a, mv in zip(self.eta_z, st.eta_z, moved)]
        rows = [int(k.sum()) for k in per_row]
        block_trials = sum(int(k.max()) for k in per_row if k.size)
        out_t = output_trials(self.eta_out, st.eta_out, search)
        total, parts = sweep_flops(self.sizes, st.N, rows, out_t, stats.get("fallbacks", 0),
                                   stats.get("ridge_at_fit", ()), stats.get("z_at_fit", ()))
        return {"flops": total, "flops_by_block": parts, "rows_evaluated": rows,
                "rows_per_sample": sum(rows) / (st.N * len(rows)),
                "output_trials": out_t, "trials_from_steps": block_trials,
                "trials_stat": stats.get("trials"),
                "trials_match": block_trials == stats.get("trials")}
