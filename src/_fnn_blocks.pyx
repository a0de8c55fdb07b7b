"""Compiled block updates of Algorithm 1 (MATH.md §4) and the backprop layer of the
gradient-descent baseline (MATH.md §7).

Storage: samples are rows, so a C-contiguous (N, n) array is MATH.md's n-by-N matrix in
BLAS column-major terms, and a weight array of shape (n_in, n_out) is MATH.md's W_l.
Every block writes its candidate into *_out arrays and returns the quantities J needs;
the Python sweep (lysep._sweep) accepts a candidate only if J does not rise.
Scratch arrays (`work_*`) are owned by the caller so that sweeps do not allocate.

Threads (n_threads, narrow layers): every parallel loop splits the rows into blocks or
stripes fixed by N and the widths and sums per block, so the results do not depend on
the thread count.  The loops use OpenMP's static schedule, so thread t takes the same
contiguous share of the rows in every kernel (its rows stay in its core's cache from
one kernel to the next), and per-block sums live in locals or in padded slots
(`_padded`), so that two threads never write to one cache line.
"""
from cython cimport floating
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset
from libc.math cimport fabs
from cython.parallel cimport prange, threadid

from _blas cimport (gemm, axpy, narrow, rows_gemm, tn_gemm_acc, rows_gemm_gather, gram_upper_acc,
                   zgrad_rows, target_rows,
                   trial_rows, lysep_smallgemm_vbytes, lysep_smallgemm_max_n, lysep_ssq_d, lysep_rows_nn_ex_d,
                   lysep_backprop_d, lysep_backprop_f,
                   lysep_rows_nn_ex_f, lysep_trial_rows_d, lysep_trial_rows_f,
                   lysep_gram_acc_d, lysep_gram_acc_f, lysep_zgrad_rows_d, lysep_zgrad_rows_f,
                   lysep_target_rows_d, lysep_target_rows_f)
from _ridge cimport solve_right_spd
from _checks cimport check1, check2, check4, check_rows
from libc.math cimport sqrt
from _elementwise cimport (act_forward, act_derivative_from_value, act_derivative_times,
                          TANH, SOFTPLUS)
from _cross_entropy cimport ce_rows, ce_rows_each

cdef extern from "_forksafe.h" nogil:
    int lysep_omp_init()
    int lysep_omp_count(int n)
    int lysep_omp_threads(int n)

if lysep_omp_init() != 0:
    raise ImportError("lysep: pthread_atfork failed (cannot guard OpenMP across fork)")


def openmp_threads(int n):
    """The threads a parallel kernel asked for n threads runs on here: n when lysep was
    built with OpenMP, 1 without it or in a child forked after this process ran a
    parallel kernel (GNU OpenMP's threads do not survive fork)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return lysep_omp_count(n)


def narrow_width(size_t itemsize):
    """The widest layer (units) the narrow kernels take on this CPU for elements of
    `itemsize` bytes: the blocks between two layers this narrow run lysep's own products
    (and its OpenMP row blocks, with n_threads > 1); a wider layer's products run in BLAS."""
    if itemsize not in (4, 8):
        raise ValueError(f"itemsize must be 4 (float32) or 8 (float64), got {itemsize}")
    return lysep_smallgemm_max_n(lysep_smallgemm_vbytes(), itemsize)


# ---------------------------------------------------------------------------
# small helpers
cdef inline double _ssq(Py_ssize_t n, const floating *x) noexcept nogil:
    """sum of squares, accumulated in double: vector accumulators (_smallgemm.h) for
    a long double array; else four interleaved scalar partial sums, so the additions
    do not wait on each other (a single running sum was latency-bound and the largest
    cost of the Z blocks' own code)."""
    cdef Py_ssize_t i = 0
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    if floating is double:
        if n >= 64:             # whole arrays; a short row is done before a call returns
            return lysep_ssq_d(lysep_smallgemm_vbytes(), n, x)
    while i + 4 <= n:
        s0 += <double>x[i] * x[i]
        s1 += <double>x[i + 1] * x[i + 1]
        s2 += <double>x[i + 2] * x[i + 2]
        s3 += <double>x[i + 3] * x[i + 3]
        i += 4
    while i < n:
        s0 += <double>x[i] * x[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef double *_colsum_start(double[:, ::1] colsum_out, Py_ssize_t n) except? NULL:
    """The (2, n) colsum_out of the low-memory Z blocks, zeroed, as a pointer (NULL for
    None)."""
    if colsum_out is None:
        return NULL
    check2("colsum_out", colsum_out.shape, 2, n)
    if n == 0:
        return NULL
    memset(&colsum_out[0, 0], 0, 2 * n * sizeof(double))
    return &colsum_out[0, 0]


cdef inline void _col_sums_add(Py_ssize_t m, Py_ssize_t n, const floating *R,
                               double *col) noexcept nogil:
    """col[j] += sum of column j of the m x n rows R (row by row: contiguous)."""
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            col[j] += R[i * n + j]


cdef inline Py_ssize_t _padded(Py_ssize_t n) noexcept nogil:
    """Elements per slot of per-thread (or per-block) sums of n elements (float32 or
    float64), so that no two slots share a 64-byte cache line whatever the buffer's
    alignment: threads add to their slots row by row, and a shared line would bounce
    between their cores (on a VM whose vCPUs sat far apart, that made a two-thread
    sweep slower than one thread)."""
    return (n + 15) // 16 * 16 + 16


cdef inline double _eps(const floating *x) noexcept nogil:
    """Machine epsilon of the fused type (x only picks the specialisation)."""
    return 1.1920929e-07 if floating is float else 2.220446049250313e-16


cdef inline void _rows_minus_vector(Py_ssize_t N, Py_ssize_t n, const floating *Z,
                                    const floating *b, floating *out) noexcept nogil:
    """out[i, :] := Z[i, :] - b."""
    cdef Py_ssize_t i, j
    for i in range(N):
        for j in range(n):
            out[i * n + j] = Z[i * n + j] - b[j]


cdef inline void _affine(Py_ssize_t N, Py_ssize_t n_in, Py_ssize_t n_out,
                         const floating *A, const floating *W, const floating *b,
                         floating *Z) noexcept nogil:
    """Z := A W + b (rows), i.e. MATH.md's W A + b 1^T."""
    rows_gemm(N, n_in, n_out, A, n_in, W, n_out, <floating>1, <floating *>NULL, 0, b, Z, n_out)


cdef inline Py_ssize_t _l1_rows(Py_ssize_t width, size_t itemsize) noexcept nogil:
    """Rows of `width` elements in about 32 KB, at least 16."""
    cdef Py_ssize_t rows = 32768 // <Py_ssize_t>(width * itemsize)
    return 16 if rows < 16 else rows


cdef inline Py_ssize_t _layer_block(Py_ssize_t N, Py_ssize_t n_in, Py_ssize_t n_out,
                                    size_t itemsize) noexcept nogil:
    """Rows per block of a fused layer pass: a few KB of rows when the narrow kernels
    take the layer (its products stay in cache for the element-wise work that follows),
    else all N rows in one BLAS call."""
    cdef Py_ssize_t rows
    if not (narrow(n_in, itemsize) and narrow(n_out, itemsize)):
        return N if N > 0 else 1
    rows = _l1_rows(n_in if n_in > n_out else n_out, itemsize)
    return rows if rows < N else (N if N > 0 else 1)


# ---------------------------------------------------------------------------
# forward pieces
def affine(const floating[:, ::1] A, const floating[:, ::1] W, const floating[::1] b,
           floating[:, ::1] Z_out):
    """Z_out := A W + b  (one layer of the true network, MATH.md §1)."""
    cdef Py_ssize_t N = A.shape[0], n_in = A.shape[1], n_out = W.shape[1]
    check2("W", W.shape, n_in, n_out); check1("b", b.shape, n_out); check2("Z_out", Z_out.shape, N, n_out)
    if N == 0 or n_out == 0:
        return
    with nogil:
        _affine(N, n_in, n_out, &A[0, 0], &W[0, 0], &b[0], &Z_out[0, 0])


cdef int _layer_forward(Py_ssize_t N, Py_ssize_t n_in, Py_ssize_t n_out,
                        const floating *A_prev, const floating *W, const floating *b,
                        int kind, floating *A_out, floating *Z_out) noexcept nogil:
    """A_out := sigma(A_prev W + b), and Z_out := A_prev W + b when not NULL, a block of
    rows at a time (layer_forward's block).  Returns 1 when scratch memory is unavailable."""
    cdef Py_ssize_t r0 = 0, nb, block = _layer_block(N, n_in, n_out, sizeof(floating))
    cdef floating *Zs = Z_out if Z_out != NULL else \
        <floating *>malloc(block * n_out * sizeof(floating))
    cdef floating *Zb
    if Zs == NULL:
        return 1
    while r0 < N:
        nb = block if r0 + block <= N else N - r0
        Zb = Zs + r0 * n_out if Z_out != NULL else Zs
        _affine(nb, n_in, n_out, A_prev + r0 * n_in, W, b, Zb)
        act_forward(kind, nb * n_out, Zb, A_out + r0 * n_out, <floating *>NULL)
        r0 += nb
    if Z_out == NULL:
        free(Zs)
    return 0


cdef int _layer_forward_threads(Py_ssize_t N, Py_ssize_t n_in, Py_ssize_t n_out,
                                const floating *A_prev, const floating *W,
                                const floating *b, int kind, floating *A_out,
                                floating *Z_out, int n_threads) noexcept nogil:
    """_layer_forward with the rows shared by up to n_threads OpenMP threads when both
    widths fit the narrow kernels (no BLAS call inside): each thread takes a stripe of
    whole blocks of _layer_forward's rows, so every block is computed as on one
    thread and the results are the same, bit for bit.  Wider layers: one call (BLAS)."""
    cdef Py_ssize_t block, n_blocks, s, r0, r1
    cdef int nt = 1, failed = 0
    if n_threads > 1 and narrow(n_in, sizeof(floating)) and narrow(n_out, sizeof(floating)):
        block = _layer_block(N, n_in, n_out, sizeof(floating))
        n_blocks = (N + block - 1) // block
        nt = lysep_omp_threads(<int>(n_threads if n_threads < n_blocks else n_blocks))
    if nt == 1:
        return _layer_forward(N, n_in, n_out, A_prev, W, b, kind, A_out, Z_out)
    for s in prange(nt, num_threads=nt, schedule="static"):
        _stripe_rows(s, nt, n_blocks, block, N, &r0, &r1)
        failed |= _layer_forward(r1 - r0, n_in, n_out, A_prev + r0 * n_in, W, b, kind,
                                 A_out + r0 * n_out,
                                 Z_out + r0 * n_out if Z_out != NULL else NULL)
    return failed


def activation_rows(const floating[:, ::1] Z, int kind, floating[:, ::1] A_out,
                    int n_threads=1):
    """A_out := sigma(Z) (the activation pass of a LySep sweep) with the rows shared by up
    to n_threads OpenMP threads: stripes of whole groups of 8 rows, so each stripe starts
    on a whole SIMD vector and only the last has the single call's tail; the values are
    those of one call, bit for bit (tests/test_threads.py)."""
    cdef Py_ssize_t N = Z.shape[0], n = Z.shape[1], rows, s, r0, r1
    cdef int nt = 1
    check2("A_out", A_out.shape, N, n)
    if not 0 <= kind <= 3:
        raise ValueError(f"unknown activation code {kind}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if N == 0 or n == 0:
        return
    # below about 16k elements a parallel region costs more than it saves
    if n_threads > 1 and N * n >= 16384 and N >= 16:
        nt = lysep_omp_threads(n_threads)
    rows = ((N + nt - 1) // nt + 7) // 8 * 8
    with nogil:
        if nt == 1:
            act_forward(kind, N * n, &Z[0, 0], &A_out[0, 0], <floating *>NULL)
        else:
            for s in prange(nt, num_threads=nt, schedule="static"):
                r0 = s * rows
                r1 = r0 + rows if r0 + rows < N else N
                if r0 < r1:
                    act_forward(kind, (r1 - r0) * n, &Z[r0, 0], &A_out[r0, 0],
                                <floating *>NULL)


def layer_forward(const floating[:, ::1] A_prev, const floating[:, ::1] W,
                  const floating[::1] b, int kind, floating[:, ::1] A_out,
                  floating[:, ::1] Z_out=None, int n_threads=1):
    """A_out := sigma(A_prev W + b), and Z_out := A_prev W + b when given (one hidden
    layer of the true network, MATH.md §1).  Narrow layers run a block of rows at a
    time, the activation reading the product while it is in cache, and (n_threads > 1)
    their blocks on up to n_threads OpenMP threads, with the same results bit for bit."""
    cdef Py_ssize_t N = A_prev.shape[0], n_in = A_prev.shape[1], n_out = W.shape[1]
    cdef int failed
    check2("W", W.shape, n_in, n_out); check1("b", b.shape, n_out); check2("A_out", A_out.shape, N, n_out)
    cdef bint keep_z = Z_out is not None
    if keep_z:
        check2("Z_out", Z_out.shape, N, n_out)
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if N == 0 or n_out == 0:
        return
    with nogil:
        failed = _layer_forward_threads(N, n_in, n_out, &A_prev[0, 0], &W[0, 0], &b[0], kind,
                                        &A_out[0, 0], &Z_out[0, 0] if keep_z else NULL,
                                        n_threads)
    if failed:
        raise MemoryError()


cdef int _network_arrays(Py_ssize_t N, Py_ssize_t n0, W, b, A, grad_W, grad_b,
                         Py_ssize_t *size, floating **Wp, floating **bp, floating **Ap,
                         floating **gWp, floating **gbp, str a_name) except -1:
    """Check the per-layer arrays of a network with n0 inputs and N rows and collect their
    data pointers (network_forward's and backprop_step's validation): W[i] of shape
    (size[i], size[i+1]) and b[i] for each of the L = len(W) layers into Wp, bp; A[i] of
    shape (N, size[i+1]) for each hidden layer into Ap[i]; and, when grad_W is not None,
    grad_W[i], grad_b[i] shaped as W[i], b[i] into gWp, gbp.  Writable: A without grad_W
    (the forward pass fills it), W and b with it (the step updates them in place).  size
    gets the L + 1 widths; a_name names A in errors."""
    cdef Py_ssize_t L = len(W), i, n_in, n_out
    cdef bint grads = grad_W is not None
    cdef const floating[:, ::1] Wc, Ai
    cdef const floating[::1] bc
    cdef floating[:, ::1] Wm, gWi, Am
    cdef floating[::1] bm, gbi
    size[0] = n0
    for i in range(L):
        if grads:               # writable views: backprop_step updates W and b in place
            Wm, bm, gWi, gbi = W[i], b[i], grad_W[i], grad_b[i]
            Wc, bc = Wm, bm
        else:
            Wc, bc = W[i], b[i]
        n_in, n_out = size[i], Wc.shape[1]
        if Wc.shape[0] != n_in or n_out == 0 or bc.shape[0] != n_out or (grads and (
                gWi.shape[0] != n_in or gWi.shape[1] != n_out or gbi.shape[0] != n_out)):
            raise ValueError(f"layer {i}: W, b and their gradients do not match {n_in} inputs"
                             if grads else f"layer {i}: W and b do not match {n_in} inputs")
        size[i + 1] = n_out
        Wp[i], bp[i] = <floating *>&Wc[0, 0], <floating *>&bc[0]
        if grads:
            gWp[i], gbp[i] = &gWi[0, 0], &gbi[0]
        if i < L - 1:
            if grads:           # backprop reads the activations, the forward pass writes them
                Ai = A[i]
            else:
                Am = A[i]
                Ai = Am
            if Ai.shape[0] != N or Ai.shape[1] != n_out:
                raise ValueError(f"{a_name}[{i}] has shape {(Ai.shape[0], Ai.shape[1])}, "
                                 f"expected {(N, n_out)}")
            Ap[i] = <floating *>&Ai[0, 0]
    return 0


def network_forward(const floating[:, ::1] X, W, b, int kind, A_out,
                    floating[:, ::1] G_out, int n_threads=1):
    """The true network's forward pass (MATH.md §1) in one call: A_out[i] :=
    sigma(A_out[i-1] W[i] + b[i]) for every hidden layer (A_out[-1] = X), and the logits
    G_out := A_out[m-1] W[m] + b[m].  Validated once, run without the GIL; the hidden
    layers as layer_forward with n_threads (the same results for every count)."""
    cdef Py_ssize_t N = X.shape[0], L = len(W), i
    if L < 1 or len(b) != L or len(A_out) != L - 1:
        raise ValueError("W and b need one entry per layer and A_out one per hidden layer")
    if L > 1 and not 0 <= kind <= 3:
        raise ValueError("unknown activation kind")
    if N == 0 or X.shape[1] == 0:
        raise ValueError("X needs a row and a column")
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    cdef Py_ssize_t *size = <Py_ssize_t *>malloc((L + 1) * sizeof(Py_ssize_t))
    cdef floating **Wp = <floating **>malloc(L * sizeof(floating *))
    cdef floating **bp = <floating **>malloc(L * sizeof(floating *))
    cdef floating **Ap = <floating **>malloc(L * sizeof(floating *))
    cdef int failed = 0
    try:
        if not (size and Wp and bp and Ap):
            raise MemoryError()
        _network_arrays(N, X.shape[1], W, b, A_out, None, None, size, Wp, bp, Ap,
                        <floating **>NULL, <floating **>NULL, "A_out")
        check2("G_out", G_out.shape, N, size[L])
        Ap[L - 1] = &G_out[0, 0]
        with nogil:
            for i in range(L - 1):
                failed = _layer_forward_threads(
                    N, size[i], size[i + 1], &X[0, 0] if i == 0 else Ap[i - 1], Wp[i], bp[i],
                    kind, Ap[i], <floating *>NULL, n_threads)
                if failed:
                    break
            if not failed:
                _affine(N, size[L - 1], size[L], &X[0, 0] if L == 1 else Ap[L - 2],
                        Wp[L - 1], bp[L - 1], Ap[L - 1])
        if failed:
            raise MemoryError()
    finally:
        free(size); free(Wp); free(bp); free(Ap)


def residual(const floating[:, ::1] Z, const floating[:, ::1] A_prev,
             const floating[:, ::1] W, const floating[::1] b, floating[:, ::1] R_out):
    """R_out := Z - A_prev W - b (MATH.md §3's R_l); returns ||R||_F^2."""
    cdef Py_ssize_t N = Z.shape[0], n_out = Z.shape[1], n_in = A_prev.shape[1]
    cdef double s
    check2("A_prev", A_prev.shape, N, n_in); check2("W", W.shape, n_in, n_out)
    check1("b", b.shape, n_out); check2("R_out", R_out.shape, N, n_out)
    with nogil:
        _rows_minus_vector(N, n_out, &Z[0, 0], &b[0], &R_out[0, 0])
        gemm(c'N', c'N', <int>n_out, <int>N, <int>n_in, -1, &W[0, 0], <int>n_out,
             &A_prev[0, 0], <int>n_in, 1, &R_out[0, 0], <int>n_out)
        s = _ssq(N * n_out, &R_out[0, 0])
    return s


# ---------------------------------------------------------------------------
# step 1: output layer (W_L, b_L), one backtracking gradient step
def output_step(const floating[:, ::1] A, const int64_t[::1] y,
                const floating[:, ::1] W, const floating[::1] b,
                double mu, double eta, double lipschitz, int max_backtracks,
                double shrink, double armijo,
                floating[:, ::1] W_out, floating[::1] b_out,
                floating[:, ::1] work_G, floating[:, ::1] work_P,
                floating[:, ::1] work_gW, floating[::1] work_gb):
    """One monotone backtracking step on phi(W, b) = CE(A W + b)/N + mu ||W||^2.

    The trial step is eta/lipschitz, shrunk by `shrink` until the Armijo test with
    constant `armijo` passes, at most `max_backtracks` times.  Returns
    (accepted, eta_accepted, ce_sum_new, ce_sum_old, n_evaluations); on failure
    W_out, b_out are copies of W, b.
    """
    cdef Py_ssize_t N = A.shape[0], n = A.shape[1], K = W.shape[1], n_correct, j
    cdef int t, accepted = 0, n_eval = 1
    cdef double ce0, ce, phi0, phi, gsq, step = eta / lipschitz
    check1("y", y.shape, N); check2("W", W.shape, n, K); check1("b", b.shape, K)
    check2("W_out", W_out.shape, n, K); check1("b_out", b_out.shape, K)
    check2("work_G", work_G.shape, N, K); check2("work_P", work_P.shape, N, K)
    check2("work_gW", work_gW.shape, n, K); check1("work_gb", work_gb.shape, K)
    with nogil:
        _affine(N, n, K, &A[0, 0], &W[0, 0], &b[0], &work_G[0, 0])
        ce0 = ce_rows(N, K, &work_G[0, 0], &y[0], &work_P[0, 0], &n_correct)
        phi0 = ce0 / N + mu * _ssq(n * K, &W[0, 0])
        # gradient: (1/N) (P - Y) A^T + 2 mu W  and  (1/N) (P - Y) 1
        memcpy(&work_gW[0, 0], &W[0, 0], n * K * sizeof(floating))
        gemm(c'N', c'T', <int>K, <int>n, <int>N, <floating>(1.0 / N), &work_P[0, 0], <int>K,
             &A[0, 0], <int>n, <floating>(2 * mu), &work_gW[0, 0], <int>K)
        for j in range(K):
            work_gb[j] = 0
        for t in range(N):
            for j in range(K):
                work_gb[j] += work_P[t, j]
        for j in range(K):
            work_gb[j] /= N
        gsq = _ssq(n * K, &work_gW[0, 0]) + _ssq(K, &work_gb[0])
        for t in range(max_backtracks + 1):
            memcpy(&W_out[0, 0], &W[0, 0], n * K * sizeof(floating))
            memcpy(&b_out[0], &b[0], K * sizeof(floating))
            axpy(<int>(n * K), <floating>(-step), &work_gW[0, 0], &W_out[0, 0])
            axpy(<int>K, <floating>(-step), &work_gb[0], &b_out[0])
            _affine(N, n, K, &A[0, 0], &W_out[0, 0], &b_out[0], &work_G[0, 0])
            ce = ce_rows(N, K, &work_G[0, 0], &y[0], <floating *>NULL, &n_correct)
            n_eval += 1
            phi = ce / N + mu * _ssq(n * K, &W_out[0, 0])
            if phi <= phi0 - armijo * step * gsq:
                accepted = 1
                break
            step *= shrink
        if not accepted:
            memcpy(&W_out[0, 0], &W[0, 0], n * K * sizeof(floating))
            memcpy(&b_out[0], &b[0], K * sizeof(floating))
            ce = ce0
    return bool(accepted), step * lipschitz, ce, ce0, n_eval


# ---------------------------------------------------------------------------
# per-sample (or shared) monotone backtracking on Z blocks, MATH.md §4 steps 2-3.
# Each trial evaluates only the rows still searching: their trial activations are
# packed into a compact buffer so one gemm serves them all.
cdef struct _Search:
    Py_ssize_t N
    double lipschitz, shrink, armijo, grow, eta_max
    int shared          # 1: one step for all rows (the paper's version)
    double noise        # relative rounding level of a row objective
    double eps2         # squared relative rounding level of the values behind a residual
    double *f0          # row objective at the current Z
    double *floor       # rounding floor of the row objective's residual terms:
                        # eps2 (omega ||Z_i||^2 + omega_next ||Z_next_i - b_next||^2)
    double *gsq         # squared norm of the row gradient
    double *step        # current trial step of the row
    double *f_trial     # trial objective, indexed by compact position
    Py_ssize_t *active  # rows still searching, in increasing order
    char *accept        # decision by compact position: _RETRY, _ACCEPT or _GIVE_UP


cdef enum:
    _RETRY = 0
    _ACCEPT = 1
    _GIVE_UP = 2


cdef int _search_alloc(_Search *s, Py_ssize_t N, double lipschitz, double shrink,
                       double armijo, double grow, double eta_max, int shared,
                       double eps) noexcept nogil:
    s.N = N; s.lipschitz = lipschitz; s.shrink = shrink; s.armijo = armijo
    s.grow = grow; s.eta_max = eta_max; s.shared = shared; s.noise = 64 * eps
    s.eps2 = 64 * eps * eps
    s.f0 = <double *>malloc(N * sizeof(double))
    s.floor = <double *>calloc(N, sizeof(double))
    s.gsq = <double *>malloc(N * sizeof(double))
    s.step = <double *>malloc(N * sizeof(double))
    s.f_trial = <double *>malloc(N * sizeof(double))
    s.active = <Py_ssize_t *>malloc(N * sizeof(Py_ssize_t))
    s.accept = <char *>malloc(N)
    return not (s.f0 and s.floor and s.gsq and s.step and s.f_trial and s.active and s.accept)


cdef void _search_free(_Search *s) noexcept nogil:
    free(s.f0); free(s.floor); free(s.gsq); free(s.step); free(s.f_trial); free(s.active)
    free(s.accept)


cdef _Search *_searches_alloc(int nt, Py_ssize_t block, double lipschitz, double shrink,
                              double armijo, double grow, double eta_max, int shared,
                              double eps) noexcept nogil:
    """One search state per thread of a Z step, for blocks of `block` rows; NULL when
    memory is short (nothing is left allocated then)."""
    cdef _Search *srch = <_Search *>calloc(nt, sizeof(_Search))
    cdef int tid, failed = srch == NULL
    if failed:
        return NULL
    for tid in range(nt):
        failed |= _search_alloc(&srch[tid], block, lipschitz, shrink, armijo, grow, eta_max,
                                shared, eps)
    if failed:
        _searches_free(srch, nt)
        return NULL
    return srch


cdef void _searches_free(_Search *srch, int nt) noexcept nogil:
    cdef int tid
    if srch != NULL:
        for tid in range(nt):
            _search_free(&srch[tid])
        free(srch)


cdef void _search_start(_Search *s, const double *eta) noexcept nogil:
    """First trial step of each row: its remembered step times `grow`, capped."""
    cdef Py_ssize_t i
    cdef double e
    for i in range(s.N):
        e = eta[0 if s.shared else i] * s.grow
        s.step[i] = (e if e < s.eta_max else s.eta_max) / s.lipschitz
        s.active[i] = i


cdef void _search_give_up(_Search *s, Py_ssize_t n_active) noexcept nogil:
    """A row gives up (keeps its value) once the decrease its step promises,
    step*|g|^2, is below the rounding level of its objective: past that point the
    Armijo comparison is noise and two correct implementations would decide
    differently.  That level is 64 eps |f0| plus the floor of its residual terms: a
    residual is a difference of values of size |Z| (or |Z_next - b_next|), so below
    about 8 eps |Z| it is rounding noise, which no step can reduce (such rows used to
    backtrack all max_backtracks times in vain: most of a deep sweep's trials).  The
    test needs no trial, so it runs before the trial is evaluated."""
    cdef Py_ssize_t a, i
    cdef double G = 0, A0 = 0, F = 0
    cdef char decision
    if s.shared:
        for a in range(n_active):
            i = s.active[a]
            G += s.gsq[i]; A0 += fabs(s.f0[i]); F += s.floor[i]
        decision = _GIVE_UP if s.step[s.active[0]] * G <= s.noise * A0 + F else _RETRY
        for a in range(n_active):
            s.accept[a] = decision
    else:
        for a in range(n_active):
            i = s.active[a]
            s.accept[a] = (_GIVE_UP if s.step[i] * s.gsq[i]
                           <= s.noise * fabs(s.f0[i]) + s.floor[i] else _RETRY)


cdef Py_ssize_t _search_drop(_Search *s, Py_ssize_t n_active) noexcept nogil:
    """Drop the rows that gave up from the active list (order kept)."""
    cdef Py_ssize_t a, keep = 0
    for a in range(n_active):
        if s.accept[a] == _RETRY:
            s.active[keep] = s.active[a]
            keep += 1
    return keep


cdef void _search_decide(_Search *s, Py_ssize_t n_active) noexcept nogil:
    """Armijo test per row (or on the sums over rows when the step is shared)."""
    cdef Py_ssize_t a, i
    cdef double F0 = 0, F = 0, G = 0
    cdef char decision
    if s.shared:
        for a in range(n_active):
            i = s.active[a]
            F0 += s.f0[i]; F += s.f_trial[a]; G += s.gsq[i]
        decision = (_ACCEPT if F <= F0 - s.armijo * s.step[s.active[0]] * G else _RETRY)
        for a in range(n_active):
            s.accept[a] = decision
    else:
        for a in range(n_active):
            i = s.active[a]
            s.accept[a] = (_ACCEPT if s.f_trial[a] <= s.f0[i] - s.armijo * s.step[i] * s.gsq[i]
                           else _RETRY)


cdef Py_ssize_t _search_compact(_Search *s, Py_ssize_t n_active) noexcept nogil:
    """Drop decided rows from the active list and shrink the steps of the others."""
    cdef Py_ssize_t a, i, keep = 0
    for a in range(n_active):
        if s.accept[a] == _RETRY:
            i = s.active[a]
            s.step[i] *= s.shrink
            s.active[keep] = i
            keep += 1
    return keep


cdef void _search_finish(_Search *s, double *eta) noexcept nogil:
    """Remember each row's last step (dimensionless) for the next sweep."""
    cdef Py_ssize_t i
    if s.shared:
        eta[0] = s.step[0] * s.lipschitz
    else:
        for i in range(s.N):
            eta[i] = s.step[i] * s.lipschitz


cdef inline void _keep_row(Py_ssize_t i, Py_ssize_t n, const floating *Z, const floating *A,
                           const floating *R, floating *Z_out, floating *A_out,
                           floating *R_out) noexcept nogil:
    """Row i of the candidate keeps the current values (no acceptable step); A_out is
    NULL when the caller does not take the candidate's activations."""
    memcpy(Z_out + i * n, Z + i * n, n * sizeof(floating))
    if A_out != NULL:
        memcpy(A_out + i * n, A + i * n, n * sizeof(floating))
    memcpy(R_out + i * n, R + i * n, n * sizeof(floating))


cdef inline void _trial_rows(_Search *s, Py_ssize_t n_active, Py_ssize_t n, int kind,
                             const floating *Z, const floating *R, const floating *g,
                             floating *Z_out, floating *R_out, floating *Ac,
                             floating *Zc, double *rs) noexcept nogil:
    """For each active row i: Z_out_i := Z_i - step_i g_i, R_out_i := R_i + (Z_out_i - Z_i),
    rs[a] := ||R_out_i||^2, and the compact row a of Ac := sigma(Z_out_i).  The
    activation runs once over all active rows (one call per short row cost more than
    the activation itself): on Z_out when every row is active, else on the compact
    copy Zc (n_active rows)."""
    cdef bint every = n_active == s.N
    trial_rows(n_active, n, s.active, s.step, Z, R, g, Z_out, R_out,
               <floating *>NULL if every else Zc, rs)
    act_forward(kind, n_active * n, Z_out if every else Zc, Ac, <floating *>NULL)


cdef int _make_search(Py_ssize_t N, Py_ssize_t n_eta, double lipschitz, double shrink,
                      double armijo, double grow, double eta_max) except -1:
    if n_eta != N and n_eta != 1:
        raise ValueError("eta must have length N (per-sample steps) or 1 (shared step)")
    if not (lipschitz > 0 and 0 < shrink < 1 and armijo >= 0 and grow >= 1 and eta_max > 0):
        raise ValueError("line-search constants out of range")


cdef struct _Blocks:
    # what each block of rows of a Z step's parallel loop leaves for the total
    Py_ssize_t n, n_col, cs      # blocks; column sums per block, and their padded slot
    double *sums                 # two sums per block
    Py_ssize_t *failed           # rows the block kept
    int *trials                  # the block's trial rounds
    double *col                  # the block's column sums (when n_col > 0)


cdef void _blocks_free(_Blocks *b) noexcept nogil:
    free(b.sums); free(b.failed); free(b.trials); free(b.col)
    b.sums, b.failed, b.trials, b.col = NULL, NULL, NULL, NULL


cdef int _blocks_alloc(_Blocks *b, Py_ssize_t n_blocks, Py_ssize_t n_col) noexcept nogil:
    """Zeroed slots for n_blocks blocks with n_col column sums each (0: none), each
    block's column sums in a padded slot (see _padded).  Returns nonzero, with nothing
    left allocated, when memory is short."""
    b.n, b.n_col = n_blocks, n_col
    b.cs = _padded(n_col) if n_col > 0 else 0
    b.sums = <double *>calloc(2 * n_blocks, sizeof(double))
    b.failed = <Py_ssize_t *>calloc(n_blocks, sizeof(Py_ssize_t))
    b.trials = <int *>calloc(n_blocks, sizeof(int))
    b.col = <double *>calloc(b.cs * n_blocks + 1, sizeof(double))
    if b.sums == NULL or b.failed == NULL or b.trials == NULL or b.col == NULL:
        _blocks_free(b)
        return 1
    return 0


cdef Py_ssize_t _blocks_total(const _Blocks *b, double *sum0, double *sum1, int *n_trials,
                              double *col, Py_ssize_t *kept, Py_ssize_t block) noexcept nogil:
    """The blocks' results added in block order (so the totals do not depend on which
    thread ran which block): their two sums to sum0[0] and sum1[0], their column sums
    to col (unless NULL), the most trial rounds any block took to n_trials[0]; with
    kept, the kept rows each block wrote at kept[blk * block:] gathered to the front.
    Returns the number of kept rows."""
    cdef Py_ssize_t blk, j, n_failed = 0
    for blk in range(b.n):
        sum0[0] += b.sums[2 * blk]
        sum1[0] += b.sums[2 * blk + 1]
        n_trials[0] = b.trials[blk] if b.trials[blk] > n_trials[0] else n_trials[0]
        if col != NULL:
            for j in range(b.n_col):
                col[j] += b.col[b.cs * blk + j]
        if kept != NULL:
            for j in range(b.failed[blk]):
                kept[n_failed + j] = kept[blk * block + j]
        n_failed += b.failed[blk]
    return n_failed


cdef inline Py_ssize_t _even_blocks(Py_ssize_t N, Py_ssize_t rows) noexcept nogil:
    """Rows per block near `rows` that split N rows into an even number of blocks of
    equal size (to a row), so that two threads of a Z step share them evenly; the blocks
    depend on N and the widths only, not on the thread count, and neither do the
    results."""
    cdef Py_ssize_t n_blocks = (N + rows - 1) // rows
    if n_blocks > 1:
        n_blocks += n_blocks % 2
        rows = (N + n_blocks - 1) // n_blocks
    return rows


cdef Py_ssize_t _block_rows(Py_ssize_t N, Py_ssize_t n, Py_ssize_t n2, size_t itemsize,
                            bint shared) noexcept nogil:
    """Rows per block of a Z step.  A per-sample search decides each row alone, so rows
    can be processed a block at a time with the element-wise work in cache: about 64 KB
    per array when both products of the block (by W and by W^T) fit the narrow kernels
    (a block's work arrays stay in L2; 4 KB blocks ran the search's per-round
    bookkeeping for 120 blocks of 25 rows per layer at N = 3000, and the Z blocks of the
    19x20 sweep took 19% longer), about 256 KB per array and at least 256 rows for
    wider layers (fewer rows made BLAS repack W too often: 0.55 instead of 0.61 of the
    DGEMM rate at 4x512).  A shared step couples all rows: one block of N rows."""
    cdef Py_ssize_t rows, width = n if n > n2 else n2
    if shared:
        return N
    if narrow(n, itemsize) and narrow(n2, itemsize):
        rows = 65536 // <Py_ssize_t>(width * itemsize)
        rows = _even_blocks(N, 8 if rows < 8 else rows)
    else:
        rows = 262144 // <Py_ssize_t>(width * itemsize)
        rows = 256 if rows < 256 else rows
    return rows if rows < N else N


cdef int _z_last_rows(_Search *s, Py_ssize_t nb, Py_ssize_t n, Py_ssize_t K, int kind,
                      const floating *Z, const floating *A, const floating *R,
                      const floating *W, const floating *b, const int64_t *y,
                      double omega, int max_backtracks, double *eta,
                      floating *Z_out, floating *A_out, floating *R_out,
                      floating *Ac, floating *g, floating *Gc, floating *Zc,
                      double *ce_i, double *ce_t, double *rs_t, Py_ssize_t *n_failed,
                      double *ce_sum) noexcept nogil:
    """The Z step of z_last_step on nb consecutive rows (pointers at their first row;
    the work arrays Ac, g, Gc, Zc and ce_i, ce_t, rs_t hold nb rows).  Adds the block's
    new row cross-entropies to ce_sum in row order.  Returns the number of trial rounds."""
    cdef Py_ssize_t i, a, n_active
    cdef int t, n_trials = 0
    cdef bint every
    # the block's counts and sums in locals, written back once: threads work on adjacent
    # blocks, whose slots share cache lines
    cdef Py_ssize_t nf = n_failed[0]
    cdef double ce_acc = 0
    cdef floating *At
    cdef floating two_omega = <floating>(2 * omega)
    s.N = nb
    # row objectives and gradient sigma'(Z) * (W (P - Y)) + 2 omega R at the current Z
    act_derivative_from_value(kind, nb * n, A, Ac)
    _affine(nb, n, K, A, W, b, Gc)
    ce_rows_each(nb, K, Gc, y, <Py_ssize_t *>NULL, Gc, ce_i, <Py_ssize_t *>NULL)
    for i in range(nb):
        s.f0[i] = ce_i[i] + omega * _ssq(n, R + i * n)
        s.floor[i] = s.eps2 * omega * _ssq(n, Z + i * n)
    gemm(c'T', c'N', <int>n, <int>nb, <int>K, 1, W, <int>K, Gc, <int>K, 0, g, <int>n)
    for i in range(nb * n):
        g[i] = g[i] * Ac[i] + two_omega * R[i]
    for i in range(nb):
        s.gsq[i] = _ssq(n, g + i * n)
    _search_start(s, eta)
    n_active = nb
    for t in range(max_backtracks + 1):
        _search_give_up(s, n_active)
        for a in range(n_active):
            if s.accept[a] == _GIVE_UP:
                nf += 1
                _keep_row(s.active[a], n, Z, A, R, Z_out, A_out, R_out)
        n_active = _search_drop(s, n_active)
        if n_active == 0:
            break
        n_trials += 1
        # while every row is active the compact order is the row order: write the
        # trial activations straight into A_out, saving the copy of accepted rows
        every = n_active == nb
        At = A_out if every and A_out != NULL else Ac
        _trial_rows(s, n_active, n, kind, Z, R, g, Z_out, R_out, At, Zc, rs_t)
        _affine(n_active, n, K, At, W, b, Gc)
        ce_rows_each(n_active, K, Gc, y, s.active, <floating *>NULL, ce_t,
                     <Py_ssize_t *>NULL)
        for a in range(n_active):
            s.f_trial[a] = ce_t[a] + omega * rs_t[a]
        _search_decide(s, n_active)
        for a in range(n_active):
            i = s.active[a]
            if s.accept[a] == _ACCEPT:
                if At != A_out and A_out != NULL:
                    memcpy(A_out + i * n, Ac + a * n, n * sizeof(floating))
                ce_i[i] = ce_t[a]
            elif t == max_backtracks:
                nf += 1       # no acceptable step: the row keeps its values
                _keep_row(i, n, Z, A, R, Z_out, A_out, R_out)
        n_active = _search_compact(s, n_active)
    _search_finish(s, eta)
    for i in range(nb):
        ce_acc += ce_i[i]
    ce_sum[0] += ce_acc
    n_failed[0] = nf
    return n_trials


cdef Py_ssize_t _last_block_rows(Py_ssize_t N, Py_ssize_t n, size_t itemsize,
                                 bint shared) noexcept nogil:
    """Rows per block of z_last_step: about 256 KB per (block, n) array and at least
    256 rows (its products by W are K columns wide: few rows would be mostly call
    overhead); one block of N rows for a shared step."""
    cdef Py_ssize_t rows
    if shared:
        return N
    if narrow(n, itemsize):      # about 64 KB per array (z_last_step's n_threads)
        rows = 65536 // <Py_ssize_t>(n * itemsize)
        rows = _even_blocks(N, 64 if rows < 64 else rows)
        return rows if rows < N else N
    rows = 262144 // <Py_ssize_t>(n * itemsize) if n > 0 else N
    rows = 256 if rows < 256 else rows
    return rows if rows < N else N


def z_hidden_work_rows(Py_ssize_t N, Py_ssize_t n, Py_ssize_t n2, size_t itemsize,
                       bint shared):
    """Rows the work arrays of z_hidden_step need: a block (per-sample steps) or N
    (a shared step); n2 is the width of the next layer."""
    return _block_rows(N, n, n2, itemsize, shared) if N > 0 else 0


def z_last_work_rows(Py_ssize_t N, Py_ssize_t n, size_t itemsize, bint shared):
    """Rows the work arrays of z_last_step need: a block (per-sample steps) or N."""
    return _last_block_rows(N, n, itemsize, shared) if N > 0 else 0


def z_last_step(const floating[:, ::1] Z, const floating[:, ::1] A, const floating[:, ::1] R,
                const floating[:, ::1] W, const floating[::1] b, const int64_t[::1] y,
                int kind, double omega, double[::1] eta, double lipschitz,
                int max_backtracks, double shrink, double armijo, double grow, double eta_max,
                floating[:, ::1] Z_out, floating[:, ::1] A_out, floating[:, ::1] R_out,
                floating[:, ::1] work_D, floating[:, ::1] work_grad, floating[:, ::1] work_P,
                int n_threads=1):
    """Backtracking gradient step on the last hidden pre-activation Z_m (MATH.md §4 step 2).

    Row objective f_i(z) = CE(W^T sigma(z) + b, y_i) + omega ||r_i||^2 where the residual
    R = Z - (W_m A_{m-1} + b_m) moves with Z.  len(eta) == N: one step per sample, the
    rows processed in blocks that stay in cache; len(eta) == 1: one shared step (one
    block of N rows).  The work arrays need hold only a block (z_last_work_rows(N, n,
    itemsize, shared) rows).  A_out may be None: the candidate's activations are then
    not written (the caller recomputes them from Z_out).  eta is updated in place.
    Each block's cross-entropies are summed, and the blocks' sums added in block order;
    with per-sample steps and both widths in the narrow kernels' range, up to n_threads
    OpenMP threads take the blocks, each with its own search state and work arrays
    (the given ones for the first thread), and the results are the same, bit for bit,
    for every thread count.
    Returns (ce_sum_new, ||R_out||^2, n_failed_rows, n_trials).
    """
    cdef Py_ssize_t N = Z.shape[0], n = Z.shape[1], K = W.shape[1]
    cdef Py_ssize_t r0, nb, block, n_blocks, blk, n_failed = 0
    cdef int t, tid, nt = 1, n_trials = 0
    cdef double ce_sum = 0, unused = 0, r_sum
    cdef bint shared = eta.shape[0] == 1
    cdef _Blocks blocks
    check2("A", A.shape, N, n); check2("R", R.shape, N, n)
    check2("Z_out", Z_out.shape, N, n); check2("R_out", R_out.shape, N, n)
    if A_out is not None:
        check2("A_out", A_out.shape, N, n)
    check2("W", W.shape, n, K); check1("b", b.shape, K); check1("y", y.shape, N)
    _make_search(N, eta.shape[0], lipschitz, shrink, armijo, grow, eta_max)
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if N == 0:
        return 0.0, 0.0, 0, 0
    block = _last_block_rows(N, n, sizeof(floating), shared)
    check_rows("work_D", work_D.shape, block, n); check_rows("work_grad", work_grad.shape, block, n)
    check_rows("work_P", work_P.shape, block, K)
    n_blocks = (N + block - 1) // block
    if not shared and narrow(n, sizeof(floating)) and narrow(K, sizeof(floating)):
        nt = lysep_omp_threads(<int>(n_threads if n_threads < n_blocks else n_blocks))
    # per thread: a search state, Zc (block x n), ce_i, ce_t, rs_t (block each) and,
    # beyond the first thread, its own work_D, work_grad (block x n), work_P (block x K)
    cdef Py_ssize_t per = block * (2 * n + K)
    cdef _Search *srch = _searches_alloc(nt, block, lipschitz, shrink, armijo, grow, eta_max,
                                         shared, _eps(&Z[0, 0]))
    cdef floating *extra = <floating *>malloc((nt - 1) * per * sizeof(floating) + 1)
    cdef floating *Zc = <floating *>malloc(nt * block * n * sizeof(floating) + 1)
    cdef double *dw = <double *>malloc(nt * 3 * block * sizeof(double) + 1)
    # per block: its cross-entropy sum, failed rows and trial rounds
    cdef int no_blocks = _blocks_alloc(&blocks, n_blocks, 0)
    if srch == NULL or extra == NULL or Zc == NULL or dw == NULL or no_blocks:
        _searches_free(srch, nt)
        free(extra); free(Zc); free(dw); _blocks_free(&blocks)
        raise MemoryError()
    cdef floating *Ao = NULL if A_out is None else &A_out[0, 0]
    cdef const floating *pZ = &Z[0, 0]
    cdef const floating *pA = &A[0, 0]
    cdef const floating *pR = &R[0, 0]
    cdef const int64_t *py = &y[0]
    cdef floating *pZo = &Z_out[0, 0]
    cdef floating *pRo = &R_out[0, 0]
    cdef floating *pD = &work_D[0, 0]
    cdef floating *pg = &work_grad[0, 0]
    cdef floating *pP = &work_P[0, 0]
    cdef floating *tw
    with nogil:
        # sigma'(Z) then compact trial activations in work_D; P - Y then compact trial
        # logits in work_P (one region per sweep: one thread needs no plain-loop copy)
        for blk in prange(n_blocks, num_threads=nt, schedule="static"):
            tid = threadid()
            r0 = blk * block
            nb = block if r0 + block <= N else N - r0
            tw = extra + (tid - 1) * per if tid > 0 else extra
            blocks.trials[blk] = _z_last_rows(
                &srch[tid], nb, n, K, kind, pZ + r0 * n, pA + r0 * n, pR + r0 * n,
                &W[0, 0], &b[0], py + r0, omega, max_backtracks,
                &eta[0 if shared else r0], pZo + r0 * n, NULL if Ao == NULL else Ao + r0 * n,
                pRo + r0 * n, pD if tid == 0 else tw, pg if tid == 0 else tw + block * n,
                pP if tid == 0 else tw + 2 * block * n, Zc + tid * block * n,
                dw + tid * 3 * block, dw + tid * 3 * block + block,
                dw + tid * 3 * block + 2 * block, &blocks.failed[blk], &blocks.sums[2 * blk])
        n_failed = _blocks_total(&blocks, &ce_sum, &unused, &n_trials, NULL, NULL, block)
        r_sum = _ssq(N * n, &R_out[0, 0])
    _searches_free(srch, nt)
    free(extra); free(Zc); free(dw); _blocks_free(&blocks)
    return ce_sum, r_sum, n_failed, n_trials


cdef int _z_hidden_rows(_Search *s, Py_ssize_t nb, Py_ssize_t n, Py_ssize_t n2, int kind,
                        const floating *Z, const floating *A, const floating *R,
                        const floating *R_next, const floating *Z_next,
                        const floating *b_next, const floating *W, const floating *WT,
                        double omega, double omega_next, int max_backtracks, double *eta,
                        floating *Z_out, floating *A_out, floating *R_out,
                        floating *R_next_out, floating *Ac, floating *g, floating *Zb,
                        floating *Rc, floating *Zc, double *sq, Py_ssize_t r0,
                        Py_ssize_t *kept, Py_ssize_t *n_failed, double *r_sum,
                        double *rn_sum) noexcept nogil:
    """The Z step of z_hidden_step on nb consecutive rows from row r0 (pointers at their
    first row; the work arrays and Zc hold nb rows, sq 4 nb doubles).  Rows that keep
    their values are not copied here: their indices go to kept[n_failed], for the
    caller to copy once it knows whether any row moved.  Adds the squared norms of
    the block's R_out and R_next_out to r_sum and rn_sum, from the row sums the search
    computes anyway.  Returns the number of trial rounds."""
    cdef Py_ssize_t i, j, a, n_active
    cdef int t, n_trials = 0
    cdef bint every
    cdef floating *At
    cdef floating *Rt
    # the block's counts and sums in locals, written back once (see _z_last_rows)
    cdef Py_ssize_t nf = n_failed[0]
    cdef double r_acc = 0, rn_acc = 0
    cdef floating two_omega = <floating>(2 * omega), two_omega_next = <floating>(2 * omega_next)
    cdef double *rs = sq             # ||R_out_i||^2 and ||R_next_out_i||^2 by row,
    cdef double *rns = sq + nb       # and the same for the trials by compact position
    cdef double *rs_t = sq + 2 * nb
    cdef double *rns_t = sq + 3 * nb
    s.N = nb
    if kind != TANH:                 # tanh's derivative is taken from A in zgrad_rows
        act_derivative_from_value(kind, nb * n, A, Ac)
    # zb = Z_next - b_next (= R_next + sigma(Z) W_next): the fixed target of the next
    # layer; rs_t and rns_t hold ||Z_i||^2 and ||zb_i||^2 until the first trial
    target_rows(nb, n2, Z_next, b_next, R_next, Zb, rns_t, rns)
    rows_gemm(nb, n2, n, R_next, n2, WT, n, <floating>1, <floating *>NULL, 0,
              <floating *>NULL, g, n)
    # g := 2 omega R - 2 omega_next sigma'(Z) * (R_next W^T), with ||R_i||^2, ||Z_i||^2
    # and ||g_i||^2 from the same pass
    zgrad_rows(nb, n, R, Z, A if kind == TANH else Ac, kind == TANH, two_omega,
               two_omega_next, g, rs, rs_t, s.gsq)
    for i in range(nb):
        s.f0[i] = omega * rs[i] + omega_next * rns[i]
        s.floor[i] = s.eps2 * (omega * rs_t[i] + omega_next * rns_t[i])
    _search_start(s, eta)
    n_active = nb
    for t in range(max_backtracks + 1):
        _search_give_up(s, n_active)
        for a in range(n_active):
            if s.accept[a] == _GIVE_UP:
                kept[nf] = r0 + s.active[a]
                nf += 1
        n_active = _search_drop(s, n_active)
        if n_active == 0:
            break
        n_trials += 1
        # while every row is active the compact order is the row order: write the
        # trial straight into A_out and R_next_out, saving the copy of accepted rows
        every = n_active == nb
        At = A_out if every and A_out != NULL else Ac
        Rt = R_next_out if every else Rc
        _trial_rows(s, n_active, n, kind, Z, R, g, Z_out, R_out, At, Zc, rs_t)
        # trial residual of the next layer, zb - W sigma(z), and its norm
        rows_gemm_gather(n_active, n, n2, At, n, W, n2, <floating>-1, Zb, n2, s.active,
                         Rt, n2, rns_t)
        for a in range(n_active):
            s.f_trial[a] = omega * rs_t[a] + omega_next * rns_t[a]
        _search_decide(s, n_active)
        for a in range(n_active):
            i = s.active[a]
            if s.accept[a] == _ACCEPT:
                rs[i] = rs_t[a]
                rns[i] = rns_t[a]
                if not every:
                    if A_out != NULL:
                        memcpy(A_out + i * n, Ac + a * n, n * sizeof(floating))
                    memcpy(R_next_out + i * n2, Rc + a * n2, n2 * sizeof(floating))
            elif s.accept[a] == _RETRY and t == max_backtracks:
                kept[nf] = r0 + i   # no acceptable step: the row keeps its values
                nf += 1
        n_active = _search_compact(s, n_active)
    _search_finish(s, eta)
    for i in range(nb):              # rows that kept their values kept their sums
        r_acc += rs[i]
        rn_acc += rns[i]
    r_sum[0] += r_acc
    rn_sum[0] += rn_acc
    n_failed[0] = nf
    return n_trials


def z_hidden_step(const floating[:, ::1] Z, const floating[:, ::1] A, const floating[:, ::1] R,
                  const floating[:, ::1] R_next, const floating[:, ::1] W_next,
                  const floating[:, ::1] Z_next, const floating[::1] b_next, int kind,
                  double omega, double omega_next, double[::1] eta, double lipschitz,
                  int max_backtracks, double shrink, double armijo, double grow, double eta_max,
                  floating[:, ::1] Z_out, floating[:, ::1] A_out, floating[:, ::1] R_out,
                  floating[:, ::1] R_next_out, floating[:, ::1] work_D,
                  floating[:, ::1] work_grad, floating[:, ::1] work_Zb, floating[:, ::1] work_Rc,
                  int n_threads=1):
    """Backtracking gradient step on a hidden pre-activation Z_{l-1} (MATH.md §4 step 3).

    Row objective f_i(z) = omega ||r_i||^2 + omega_next ||zb_i - W_next sigma(z)||^2, where
    r = z - t moves with z and zb = Z_next - b_next is fixed (the next layer's residual
    is R_next = zb - W_next A: the caller passes both, so the target costs a
    subtraction, not a product); gradient (paper's (3.12), times N)
    2 omega r - 2 omega_next sigma'(z) * (W_next^T r_next).
    With per-sample steps (eta of length N) the rows are processed in blocks that stay
    in cache and the work arrays need hold only a block (z_hidden_work_rows(N, n, n2,
    itemsize, shared) rows); a shared step is one block of N rows.  A_out may be None:
    the candidate's activations are then not written (the caller recomputes them).  When
    no row moves (n_failed_rows == N: every row gave up or found no step) the rows are
    not copied into the outputs, which then hold no candidate: it would be the current
    value, so the caller keeps that (a frozen layer costs no copy of its arrays).
    Blocks are independent (per-sample steps): with n_threads > 1 and both widths in
    the narrow kernels' range (no BLAS call inside a block) up to n_threads OpenMP
    threads take the blocks, each with its own search state and work arrays (the
    given ones for the first thread).  The norms are summed per block and then in
    block order, so the results are the same, bit for bit, for every thread count.
    Returns (||R_out||^2, ||R_next_out||^2, n_failed_rows, n_trials); eta updated in place.
    """
    cdef Py_ssize_t N = Z.shape[0], n = Z.shape[1], n2 = W_next.shape[1]
    cdef Py_ssize_t i, j, r0, nb, block, n_blocks, blk, n_failed = 0
    cdef int t, tid, nt, n_trials = 0
    cdef double r_sum = 0, rn_sum = 0
    cdef bint shared = eta.shape[0] == 1
    cdef _Blocks blocks
    check2("A", A.shape, N, n); check2("R", R.shape, N, n)
    check2("Z_out", Z_out.shape, N, n); check2("R_out", R_out.shape, N, n)
    if A_out is not None:
        check2("A_out", A_out.shape, N, n)
    check2("R_next", R_next.shape, N, n2); check2("R_next_out", R_next_out.shape, N, n2)
    check2("Z_next", Z_next.shape, N, n2)
    check2("W_next", W_next.shape, n, n2); check1("b_next", b_next.shape, n2)
    _make_search(N, eta.shape[0], lipschitz, shrink, armijo, grow, eta_max)
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if N == 0:
        return 0.0, 0.0, 0, 0
    block = _block_rows(N, n, n2, sizeof(floating), shared)
    check_rows("work_D", work_D.shape, block, n); check_rows("work_grad", work_grad.shape, block, n)
    check_rows("work_Zb", work_Zb.shape, block, n2); check_rows("work_Rc", work_Rc.shape, block, n2)
    n_blocks = (N + block - 1) // block
    nt = 1
    if narrow(n, sizeof(floating)) and narrow(n2, sizeof(floating)):
        nt = lysep_omp_threads(<int>(n_threads if n_threads < n_blocks else n_blocks))
    # per thread: a search state and, beyond the first thread, its own work arrays
    # (D, grad: block x n; Zb, Rc: block x n2); per thread too: Zc and the row sums sq
    cdef Py_ssize_t per = block * (2 * n + 2 * n2)
    cdef _Search *srch = _searches_alloc(nt, block, lipschitz, shrink, armijo, grow, eta_max,
                                         shared, _eps(&Z[0, 0]))
    cdef floating *extra = <floating *>malloc((nt - 1) * per * sizeof(floating) + 1)
    cdef floating *WT = <floating *>malloc(n * n2 * sizeof(floating) + 1)
    cdef floating *Zc = <floating *>malloc(nt * block * n * sizeof(floating) + 1)
    cdef double *sq = <double *>malloc(nt * 4 * block * sizeof(double))
    cdef Py_ssize_t *kept = <Py_ssize_t *>malloc(N * sizeof(Py_ssize_t))
    # per block: the sums of its rows' norms, its count of kept rows, its trial rounds
    cdef int no_blocks = _blocks_alloc(&blocks, n_blocks, 0)
    if (srch == NULL or extra == NULL or WT == NULL or Zc == NULL or sq == NULL
            or kept == NULL or no_blocks):
        _searches_free(srch, nt)
        free(extra); free(WT); free(Zc); free(sq); free(kept); _blocks_free(&blocks)
        raise MemoryError()
    cdef floating *Ao = NULL if A_out is None else &A_out[0, 0]
    # the arrays' first elements, read by every thread
    cdef const floating *pZ = &Z[0, 0]
    cdef const floating *pA = &A[0, 0]
    cdef const floating *pR = &R[0, 0]
    cdef const floating *pRn = &R_next[0, 0]
    cdef const floating *pZn = &Z_next[0, 0]
    cdef floating *pZo = &Z_out[0, 0]
    cdef floating *pRo = &R_out[0, 0]
    cdef floating *pRno = &R_next_out[0, 0]
    cdef floating *pD = &work_D[0, 0]
    cdef floating *pg = &work_grad[0, 0]
    cdef floating *pZb = &work_Zb[0, 0]
    cdef floating *pRc = &work_Rc[0, 0]
    cdef floating *tw
    with nogil:
        for i in range(n):               # W_next^T, the operand of the gradient product
            for j in range(n2):
                WT[j * n + i] = W_next[i, j]
        for blk in prange(n_blocks, num_threads=nt, schedule="static"):
            tid = threadid()
            r0 = blk * block
            nb = block if r0 + block <= N else N - r0
            tw = extra + (tid - 1) * per if tid > 0 else extra   # thread tid's work
            blocks.trials[blk] = _z_hidden_rows(
                &srch[tid], nb, n, n2, kind, pZ + r0 * n, pA + r0 * n, pR + r0 * n,
                pRn + r0 * n2, pZn + r0 * n2, &b_next[0], &W_next[0, 0], WT, omega,
                omega_next, max_backtracks, &eta[0 if shared else r0], pZo + r0 * n,
                NULL if Ao == NULL else Ao + r0 * n, pRo + r0 * n, pRno + r0 * n2,
                pD if tid == 0 else tw, pg if tid == 0 else tw + block * n,
                pZb if tid == 0 else tw + 2 * block * n,
                pRc if tid == 0 else tw + 2 * block * n + block * n2,
                Zc + tid * block * n, sq + tid * 4 * block, r0, kept + r0,
                &blocks.failed[blk], &blocks.sums[2 * blk], &blocks.sums[2 * blk + 1])
        # block blk wrote its kept rows at kept[r0:], r0 its first row
        n_failed = _blocks_total(&blocks, &r_sum, &rn_sum, &n_trials, NULL, kept, block)
        if n_failed < N:                 # some row moved: the others keep their values
            for j in range(n_failed):
                i = kept[j]
                _keep_row(i, n, &Z[0, 0], &A[0, 0], &R[0, 0], &Z_out[0, 0], Ao,
                          &R_out[0, 0])
                memcpy(&R_next_out[i, 0], &R_next[i, 0], n2 * sizeof(floating))
    _searches_free(srch, nt)
    free(extra); free(WT); free(Zc); free(sq); free(kept); _blocks_free(&blocks)
    return r_sum, rn_sum, n_failed, n_trials


# ---------------------------------------------------------------------------
# the low-memory sweep (MATH.md §4 "Memory"): no residuals and no activations are
# stored; a block of rows recomputes them from the Z it needs, so the state is the Z_l
# plus one candidate array
cdef inline Py_ssize_t _lean_rows(Py_ssize_t N, Py_ssize_t n_in, Py_ssize_t n_out,
                                  size_t itemsize) noexcept nogil:
    """Rows per block of a low-memory ridge or bias pass: the fused layer pass's block,
    capped at about 4 MiB per work array (a wide layer's block is all N rows)."""
    cdef Py_ssize_t width = n_in if n_in > n_out else n_out
    cdef Py_ssize_t rows = _layer_block(N, n_in, n_out, itemsize)
    cdef Py_ssize_t cap = (4 << 20) // <Py_ssize_t>((width if width > 0 else 1) * itemsize)
    cap = 16 if cap < 16 else cap
    return rows if rows < cap else cap


cdef inline void _residual_rows(Py_ssize_t nb, Py_ssize_t n_prev, Py_ssize_t n,
                                int kind_prev, const floating *src, const floating *W,
                                const floating *b, const floating *Z, floating *Ap,
                                floating *R) noexcept nogil:
    """R := (Z - b) - sigma(src) W on nb rows; src is the layer's input X itself when
    kind_prev < 0, else the previous layer's Z, whose activations go to Ap."""
    cdef const floating *ap = src
    if kind_prev >= 0:
        act_forward(kind_prev, nb * n_prev, src, Ap, <floating *>NULL)
        ap = Ap
    _rows_minus_vector(nb, n, Z, b, R)
    rows_gemm(nb, n_prev, n, ap, n_prev, W, n, <floating>-1, R, n, <floating *>NULL, R, n)


def z_last_step_lean(const floating[:, ::1] src, int kind_prev, const floating[:, ::1] W,
                     const floating[::1] b, const floating[:, ::1] Z,
                     const floating[:, ::1] W_next, const floating[::1] b_next,
                     const int64_t[::1] y, int kind, double omega, double[::1] eta,
                     double lipschitz, int max_backtracks, double shrink, double armijo,
                     double grow, double eta_max, floating[:, ::1] Z_out,
                     double[:, ::1] colsum_out=None, int n_threads=1):
    """z_last_step of the low-memory sweep.  Each block of rows recomputes its residual
    R = (Z - b) - sigma(src) W (src: X when kind_prev < 0, else the previous layer's Z)
    and its activations sigma(Z), then runs the same search against the output layer
    (W_next, b_next); only Z_out is written.  The work arrays hold a block of rows and
    are allocated here.  colsum_out (2 x n), if given, receives the column sums of R
    and of R_new (what the bias block needs: see bias_update_lean).
    Every sum (cross-entropies, norms, column sums) is taken per block and the blocks'
    sums added in block order; with per-sample steps and every width (src's, Z's and
    the output's) in the narrow kernels' range, up to n_threads OpenMP threads take the
    blocks, each with its own search state and work arrays, and the results are the
    same, bit for bit, for every thread count.
    Returns (ce_sum_new, ||R_new||^2, n_failed_rows, n_trials)."""
    cdef Py_ssize_t N = Z.shape[0], n = Z.shape[1], K = W_next.shape[1], n_prev = src.shape[1]
    cdef Py_ssize_t r0, nb, block, n_blocks, blk, n_failed = 0
    cdef int tid, nt = 1, n_trials = 0
    cdef double ce_sum = 0, r_sum = 0
    cdef bint shared = eta.shape[0] == 1
    cdef _Blocks blocks
    check2("src", src.shape, N, n_prev); check2("W", W.shape, n_prev, n); check1("b", b.shape, n)
    check2("Z_out", Z_out.shape, N, n); check2("W_next", W_next.shape, n, K)
    check1("b_next", b_next.shape, K); check1("y", y.shape, N)
    cdef double *col = _colsum_start(colsum_out, n)
    _make_search(N, eta.shape[0], lipschitz, shrink, armijo, grow, eta_max)
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if N == 0:
        return 0.0, 0.0, 0, 0
    block = _last_block_rows(N, n, sizeof(floating), shared)
    n_blocks = (N + block - 1) // block
    if (not shared and narrow(n, sizeof(floating)) and narrow(K, sizeof(floating))
            and narrow(n_prev, sizeof(floating))):
        nt = lysep_omp_threads(<int>(n_threads if n_threads < n_blocks else n_blocks))
    # per thread: a search state; per row of a block: sigma(src), A, R, D, grad, the
    # compact copy Zc, R_out; P; and the search's three row sums
    cdef Py_ssize_t per = block * (n_prev + 6 * n + K)
    cdef _Search *srch = _searches_alloc(nt, block, lipschitz, shrink, armijo, grow, eta_max,
                                         shared, _eps(&Z[0, 0]))
    cdef floating *buf = <floating *>malloc(nt * per * sizeof(floating) + 1)
    cdef double *sums = <double *>malloc(nt * 3 * block * sizeof(double))
    # per block: its cross-entropy and norm sums, failed rows, trial rounds, column sums
    cdef int no_blocks = _blocks_alloc(&blocks, n_blocks, 2 * n if col != NULL else 0)
    if srch == NULL or buf == NULL or sums == NULL or no_blocks:
        _searches_free(srch, nt)
        free(buf); free(sums); _blocks_free(&blocks)
        raise MemoryError()
    # the arrays' first elements, read by every thread
    cdef const floating *pS = &src[0, 0]
    cdef const floating *pZ = &Z[0, 0]
    cdef const int64_t *py = &y[0]
    cdef floating *pZo = &Z_out[0, 0]
    cdef floating *Ap
    cdef floating *Ab
    cdef floating *Rb
    cdef floating *Ro
    cdef double *ds
    with nogil:
        for blk in prange(n_blocks, num_threads=nt, schedule="static"):
            tid = threadid()
            r0 = blk * block
            nb = block if r0 + block <= N else N - r0
            Ap = buf + tid * per                 # sigma(src), then A, R, D, grad, Zc, R_out, P
            Ab = Ap + block * n_prev
            Rb = Ab + block * n
            Ro = Rb + 4 * block * n
            ds = sums + tid * 3 * block
            _residual_rows(nb, n_prev, n, kind_prev, pS + r0 * n_prev, &W[0, 0], &b[0],
                           pZ + r0 * n, Ap, Rb)
            act_forward(kind, nb * n, pZ + r0 * n, Ab, <floating *>NULL)
            blocks.trials[blk] = _z_last_rows(
                &srch[tid], nb, n, K, kind, pZ + r0 * n, Ab, Rb, &W_next[0, 0], &b_next[0],
                py + r0, omega, max_backtracks, &eta[0 if shared else r0], pZo + r0 * n,
                <floating *>NULL, Ro, Rb + block * n, Rb + 2 * block * n, Ro + block * n,
                Rb + 3 * block * n, ds, ds + block, ds + 2 * block, &blocks.failed[blk],
                &blocks.sums[2 * blk])
            blocks.sums[2 * blk + 1] = _ssq(nb * n, Ro)
            if col != NULL:              # Ro holds every row, kept ones too
                _col_sums_add(nb, n, Rb, blocks.col + blocks.cs * blk)
                _col_sums_add(nb, n, Ro, blocks.col + blocks.cs * blk + n)
        n_failed = _blocks_total(&blocks, &ce_sum, &r_sum, &n_trials, col, NULL, block)
    _searches_free(srch, nt)
    free(buf); free(sums); _blocks_free(&blocks)
    return ce_sum, r_sum, n_failed, n_trials


def z_hidden_step_lean(const floating[:, ::1] src, int kind_prev, const floating[:, ::1] W,
                       const floating[::1] b, const floating[:, ::1] Z,
                       const floating[:, ::1] W_next, const floating[:, ::1] Z_next,
                       const floating[::1] b_next, int kind, double omega,
                       double omega_next, double[::1] eta, double lipschitz,
                       int max_backtracks, double shrink, double armijo, double grow,
                       double eta_max, floating[:, ::1] Z_out,
                       double[:, ::1] colsum_out=None, int n_threads=1):
    """z_hidden_step of the low-memory sweep.  Each block of rows recomputes
    R = (Z - b) - sigma(src) W (src: X when kind_prev < 0, else the previous layer's Z),
    sigma(Z) and R_next = (Z_next - b_next) - sigma(Z) W_next, then runs the same search;
    only Z_out is written, and only when some row moved (n_failed_rows < N).  The work
    arrays hold a block of rows and are allocated here.  colsum_out (2 x n), if given,
    receives the column sums of R and of R_new (see z_last_step_lean).  Threads and
    sums as in z_last_step_lean: every width (src's, Z's, Z_next's) in the narrow
    kernels' range lets up to n_threads threads take the blocks, with the same
    results, bit for bit, for every thread count.  Returns
    (||R_new||^2, ||R_next_new||^2, n_failed_rows, n_trials)."""
    cdef Py_ssize_t N = Z.shape[0], n = Z.shape[1], n2 = W_next.shape[1], n_prev = src.shape[1]
    cdef Py_ssize_t i, j, r0, nb, block, n_blocks, blk, n_failed = 0
    cdef int tid, nt = 1, n_trials = 0
    cdef double r_sum = 0, rn_sum = 0
    cdef bint shared = eta.shape[0] == 1
    cdef _Blocks blocks
    check2("src", src.shape, N, n_prev); check2("W", W.shape, n_prev, n); check1("b", b.shape, n)
    check2("Z_out", Z_out.shape, N, n); check2("Z_next", Z_next.shape, N, n2)
    check2("W_next", W_next.shape, n, n2); check1("b_next", b_next.shape, n2)
    cdef double *col = _colsum_start(colsum_out, n)
    _make_search(N, eta.shape[0], lipschitz, shrink, armijo, grow, eta_max)
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if N == 0:
        return 0.0, 0.0, 0, 0
    block = _block_rows(N, n, n2, sizeof(floating), shared)
    n_blocks = (N + block - 1) // block
    if (not shared and narrow(n, sizeof(floating)) and narrow(n2, sizeof(floating))
            and narrow(n_prev, sizeof(floating))):
        nt = lysep_omp_threads(<int>(n_threads if n_threads < n_blocks else n_blocks))
    # per thread: a search state, the row sums sq and, per row of a block: sigma(src);
    # A, R, D, grad, Zc, R_out; R_next, R_next_out, Zb, Rc
    cdef Py_ssize_t per = block * (n_prev + 6 * n + 4 * n2)
    cdef _Search *srch = _searches_alloc(nt, block, lipschitz, shrink, armijo, grow, eta_max,
                                         shared, _eps(&Z[0, 0]))
    cdef floating *buf = <floating *>malloc(nt * per * sizeof(floating) + 1)
    cdef floating *WT = <floating *>malloc(n * n2 * sizeof(floating) + 1)
    cdef double *sq = <double *>malloc(nt * 4 * block * sizeof(double))
    cdef Py_ssize_t *kept = <Py_ssize_t *>malloc(N * sizeof(Py_ssize_t))
    # per block: its norm sums, kept rows, trial rounds and column sums
    cdef int no_blocks = _blocks_alloc(&blocks, n_blocks, 2 * n if col != NULL else 0)
    if srch == NULL or buf == NULL or WT == NULL or sq == NULL or kept == NULL or no_blocks:
        _searches_free(srch, nt)
        free(buf); free(WT); free(sq); free(kept); _blocks_free(&blocks)
        raise MemoryError()
    # the arrays' first elements, read by every thread
    cdef const floating *pS = &src[0, 0]
    cdef const floating *pZ = &Z[0, 0]
    cdef const floating *pZn = &Z_next[0, 0]
    cdef floating *pZo = &Z_out[0, 0]
    cdef floating *Ap
    cdef floating *Ab
    cdef floating *Rb
    cdef floating *Ro
    cdef floating *Rn
    with nogil:
        for i in range(n):               # W_next^T, the operand of the gradient product
            for j in range(n2):
                WT[j * n + i] = W_next[i, j]
        for blk in prange(n_blocks, num_threads=nt, schedule="static"):
            tid = threadid()
            r0 = blk * block
            nb = block if r0 + block <= N else N - r0
            Ap = buf + tid * per                 # sigma(src), then A, R, D, grad, Zc, R_out
            Ab = Ap + block * n_prev
            Rb = Ab + block * n
            Ro = Rb + 4 * block * n
            Rn = Ro + block * n                  # then R_next_out, Zb, Rc
            _residual_rows(nb, n_prev, n, kind_prev, pS + r0 * n_prev, &W[0, 0], &b[0],
                           pZ + r0 * n, Ap, Rb)
            act_forward(kind, nb * n, pZ + r0 * n, Ab, <floating *>NULL)
            _residual_rows(nb, n, n2, -1, Ab, &W_next[0, 0], &b_next[0], pZn + r0 * n2,
                           <floating *>NULL, Rn)
            blocks.trials[blk] = _z_hidden_rows(
                &srch[tid], nb, n, n2, kind, pZ + r0 * n, Ab, Rb, Rn, pZn + r0 * n2,
                &b_next[0], &W_next[0, 0], WT, omega, omega_next, max_backtracks,
                &eta[0 if shared else r0], pZo + r0 * n, <floating *>NULL, Ro,
                Rn + block * n2, Rb + block * n, Rb + 2 * block * n, Rn + 2 * block * n2,
                Rn + 3 * block * n2, Rb + 3 * block * n, sq + tid * 4 * block, r0,
                kept + r0, &blocks.failed[blk], &blocks.sums[2 * blk],
                &blocks.sums[2 * blk + 1])
            if col != NULL:              # Ro lacks the kept rows: theirs is Rb's
                for j in range(blocks.failed[blk]):
                    i = kept[r0 + j] - r0
                    memcpy(Ro + i * n, Rb + i * n, n * sizeof(floating))
                _col_sums_add(nb, n, Rb, blocks.col + blocks.cs * blk)
                _col_sums_add(nb, n, Ro, blocks.col + blocks.cs * blk + n)
        # block blk wrote its kept rows at kept[r0:], r0 its first row
        n_failed = _blocks_total(&blocks, &r_sum, &rn_sum, &n_trials, col, kept, block)
        if n_failed < N:                 # some row moved: the others keep their values
            for j in range(n_failed):
                i = kept[j]
                memcpy(&Z_out[i, 0], &Z[i, 0], n * sizeof(floating))
    _searches_free(srch, nt)
    free(buf); free(WT); free(sq); free(kept); _blocks_free(&blocks)
    return r_sum, rn_sum, n_failed, n_trials


# ---------------------------------------------------------------------------
# step 3: closed-form W_l (ridge) and b_l
cdef enum:
    _MAX_STRIPES = 8        # most stripes a ridge or bias pass splits the rows into


cdef void _ridge_gather(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t block, Py_ssize_t n_in,
                        Py_ssize_t n_out, const floating *A, const floating *Z,
                        const floating *b, const floating *Wn, const floating *Rn,
                        floating *R_out, floating *scratch, floating *rhs,
                        floating *G) noexcept nogil:
    """First pass of ridge_update over rows [r0, r1), a block of rows at a time so
    that the block of Z - b and of A is still in cache: rhs += A^T (Z - b) (closest,
    Wn not NULL: A^T R_now, R_now = Rn or recomputed into scratch) and G += A^T A on and
    above the diagonal.  R_out (not NULL, min_norm) receives Z - b, for the second
    pass to subtract A W from."""
    cdef Py_ssize_t r = r0, nb
    cdef floating *Rp
    cdef const floating *src
    while r < r1:
        nb = block if r + block <= r1 else r1 - r
        if Wn != NULL and Rn != NULL:
            src = Rn + r * n_out
        else:
            Rp = R_out + r * n_out if R_out != NULL and Wn == NULL else scratch
            _rows_minus_vector(nb, n_out, Z + r * n_out, b, Rp)
            if Wn != NULL:                 # the current residual, recomputed
                rows_gemm(nb, n_in, n_out, A + r * n_in, n_in, Wn, n_out,
                          <floating>-1, Rp, n_out, <floating *>NULL, Rp, n_out)
            src = Rp
        tn_gemm_acc(nb, n_in, n_out, A + r * n_in, n_in, src, n_out, rhs, n_out)
        gram_upper_acc(nb, n_in, A + r * n_in, n_in, G, n_in)
        r += nb


cdef double _ridge_residual(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t block,
                            Py_ssize_t n_in, Py_ssize_t n_out, const floating *A,
                            const floating *Z, const floating *b, const floating *W,
                            bint from_z, floating *R_out, floating *scratch,
                            double *colsum) noexcept nogil:
    """Second pass of ridge_update over rows [r0, r1): R := (Z - b) - A W into R_out
    (or, when NULL, a block at a time into scratch), its column sums added to colsum
    (unless NULL); returns its squared norm.  from_z: R_out does not hold Z - b yet."""
    cdef Py_ssize_t r = r0, nb
    cdef double r_sum = 0
    cdef floating *Rp
    while r < r1:
        nb = block if r + block <= r1 else r1 - r
        Rp = R_out + r * n_out if R_out != NULL else scratch
        if from_z:
            _rows_minus_vector(nb, n_out, Z + r * n_out, b, Rp)
        rows_gemm(nb, n_in, n_out, A + r * n_in, n_in, W, n_out, <floating>-1,
                  Rp, n_out, <floating *>NULL, Rp, n_out)
        r_sum += _ssq(nb * n_out, Rp)
        if colsum != NULL:
            _col_sums_add(nb, n_out, Rp, colsum)
        r += nb
    return r_sum


cdef inline void _stripe_rows(Py_ssize_t s, Py_ssize_t n_stripes, Py_ssize_t n_blocks,
                              Py_ssize_t block, Py_ssize_t N, Py_ssize_t *r0,
                              Py_ssize_t *r1) noexcept nogil:
    """Rows [r0, r1) of stripe s: whole blocks, the blocks shared out evenly."""
    r0[0] = min((s * n_blocks // n_stripes) * block, N)
    r1[0] = min(((s + 1) * n_blocks // n_stripes) * block, N)


cdef void _ridge_gather_stripe(Py_ssize_t s, Py_ssize_t n_stripes, Py_ssize_t n_blocks,
                               Py_ssize_t block, Py_ssize_t N, Py_ssize_t n_in,
                               Py_ssize_t n_out, const floating *A, const floating *Z,
                               const floating *b, const floating *Wn, const floating *Rn,
                               floating *R_out, floating *scratch, Py_ssize_t n_scratch,
                               floating *rhs, floating *G, floating *part,
                               Py_ssize_t per) noexcept nogil:
    """_ridge_gather over stripe s: stripe 0 sums into rhs and G, stripe s > 0 into its
    part (its Gram matrix, then its right-hand side), with its own scratch rows."""
    cdef Py_ssize_t r0, r1
    _stripe_rows(s, n_stripes, n_blocks, block, N, &r0, &r1)
    if s > 0:
        G = part + (s - 1) * per
        rhs = G + n_in * n_in
    _ridge_gather(r0, r1, block, n_in, n_out, A, Z, b, Wn, Rn, R_out,
                  scratch + s * n_scratch, rhs, G)


cdef void _ridge_residual_stripe(Py_ssize_t s, Py_ssize_t n_stripes, Py_ssize_t n_blocks,
                                 Py_ssize_t block, Py_ssize_t N, Py_ssize_t n_in,
                                 Py_ssize_t n_out, const floating *A, const floating *Z,
                                 const floating *b, const floating *W, bint from_z,
                                 floating *R_out, floating *scratch, Py_ssize_t n_scratch,
                                 double *stripe_sums, bint sums,
                                 Py_ssize_t cstride) noexcept nogil:
    """_ridge_residual over stripe s: its norm into stripe_sums[s] and its column sums
    (when `sums`) into stripe_sums[n_stripes + 8 + s * cstride:], cstride >= n_out."""
    cdef Py_ssize_t r0, r1
    _stripe_rows(s, n_stripes, n_blocks, block, N, &r0, &r1)
    stripe_sums[s] = _ridge_residual(
        r0, r1, block, n_in, n_out, A, Z, b, W, from_z, R_out, scratch + s * n_scratch,
        stripe_sums + n_stripes + 8 + s * cstride if sums else NULL)


def ridge_update(const floating[:, ::1] A_prev, const floating[:, ::1] Z,
                 const floating[::1] b, double lam, double rcond_min,
                 floating[:, ::1] W_out, floating[:, ::1] R_out,
                 floating[:, ::1] work_gram, floating[:, ::1] work_gram2,
                 double[::1] colsum_out=None, const floating[:, ::1] W_now=None,
                 const floating[:, ::1] R_now=None, int n_threads=1):
    """W_out := argmin_W ||Z - b - A_prev W||^2 + lam ||W||^2 (paper's (3.10)).

    Solves W (A A^T + lam I) = (Z - b) A^T in MATH.md's orientation: Gram by the narrow
    Gram kernel (syrk beyond 128 inputs),
    Cholesky (potrf) and two triangular solves from the right (what posv does, for a
    right-hand side on the right).  If the factorisation fails or its reciprocal
    condition number (pocon) is below rcond_min, a plain solve would return huge
    weights: fall back to the minimum-norm solution through the eigen-decomposition of
    the Gram matrix (syevd), numerically zero eigenvalues discarded.  The sweep keeps the
    result only if J does not rise.  R_out := Z - b - A_prev W_out; R_out may be None
    (the low-memory sweep): the residual is then computed a block of rows at a time
    for its norm and not stored.  colsum_out, if given, receives the residual's column
    sums (what the low-memory bias block needs besides the norm: bias_update_lean's
    `stats`, so that it does not compute the residual again).
    W_now, if given, selects the closest fallback by solving for the change:
    W_out := W_now + dW, dW (A A^T + lam I) = R_now A^T - lam W_now in MATH.md's
    orientation, R_now = Z - b - A_prev W_now the current residual (if None, recomputed
    a block of rows at a time: one more product).  With Cholesky that is the same
    minimiser to rounding; on a fallback dW is the minimum-norm change, so W_out is
    the least-squares solution closest to W_now (lam = 0): it keeps W_now's part in
    the discarded eigen-directions, where the minimum-norm W drops what reproduces Z.
    The right-hand side comes from the residual itself: forming it as
    A^T (Z - b) - G W_now cancels.
    When both widths fit the narrow kernels, the rows are split into up to 8 stripes
    of whole row blocks, a number that depends on N and the widths only: each stripe
    sums its own Gram matrix, right-hand side, residual norm and column sums, and the
    stripes' sums are added in stripe order.  Up to n_threads OpenMP threads take the
    stripes (one thread runs them in a plain loop: a parallel region of one thread cost
    5% of a 3000 x 20 x 20 ridge block), and the results are the same, bit for bit, for
    every thread count.
    Returns (||R_out||^2, ||W_out||^2, status): status 0 Cholesky, 1 minimum-norm (or
    closest), -1 LAPACK failure (W_out then holds zeros, or W_now when given).
    """
    cdef Py_ssize_t N = Z.shape[0], n_out = Z.shape[1], n_in = A_prev.shape[1], i, j
    cdef Py_ssize_t block, n_blocks, n_stripes, s, per, n_scratch, cstride
    cdef int status = 0, nt = 1
    cdef double r_sum = 0, w_sum
    cdef bint stored = R_out is not None
    check2("A_prev", A_prev.shape, N, n_in); check1("b", b.shape, n_out)
    check2("W_out", W_out.shape, n_in, n_out)
    if stored:
        check2("R_out", R_out.shape, N, n_out)
    check2("work_gram", work_gram.shape, n_in, n_in); check2("work_gram2", work_gram2.shape, n_in, n_in)
    cdef bint sums = colsum_out is not None
    if sums:
        check1("colsum_out", colsum_out.shape, n_out)
    cdef bint closest = W_now is not None
    if closest:
        check2("W_now", W_now.shape, n_in, n_out)
    if R_now is not None:
        if not closest:
            raise ValueError("R_now is the residual of W_now: give W_now too")
        check2("R_now", R_now.shape, N, n_out)
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if n_in == 0 or n_out == 0 or N == 0:
        raise ValueError("ridge_update needs a non-empty layer and at least one sample")
    cdef floating *G = &work_gram[0, 0]
    cdef floating *W = &W_out[0, 0]
    block = (_layer_block(N, n_in, n_out, sizeof(floating)) if stored
             else _lean_rows(N, n_in, n_out, sizeof(floating)))
    n_blocks = (N + block - 1) // block
    # stripes: only for narrow layers (their partial sums are small, no BLAS call runs
    # inside a stripe, and the lean block is the stored one: the same sums either way)
    n_stripes = 1
    if narrow(n_in, sizeof(floating)) and narrow(n_out, sizeof(floating)):
        n_stripes = n_blocks if n_blocks < _MAX_STRIPES else _MAX_STRIPES
    cdef const floating *pA = &A_prev[0, 0]
    cdef const floating *pZ = &Z[0, 0]
    cdef const floating *pb = &b[0]
    cdef const floating *Wn = &W_now[0, 0] if closest else NULL
    cdef const floating *Rn = &R_now[0, 0] if R_now is not None else NULL
    cdef floating *Ro = &R_out[0, 0] if stored else NULL
    cdef double *col = &colsum_out[0] if sums else NULL
    # scratch rows: the residual of a block when it is not stored, or the current one
    # (closest without R_now); one block per stripe
    n_scratch = _padded(block * n_out) if not stored or (closest and Rn == NULL) else 0
    # per stripe beyond the first: its Gram matrix and right-hand side; per stripe: its
    # residual norm and column sums (padded slots: see _padded)
    per = _padded(n_in * n_in + n_in * n_out)
    cdef floating *part = <floating *>malloc(((n_stripes - 1) * per + n_stripes * n_scratch)
                                             * sizeof(floating) + 1)
    # the stripes' norms, then their column sums, each stripe's a cache line apart from
    # the next (threads add to them row by row)
    cstride = _padded(n_out)
    cdef double *stripe_sums = <double *>calloc(n_stripes * (cstride + 1) + 8, sizeof(double))
    if part == NULL or stripe_sums == NULL:
        free(part); free(stripe_sums)
        raise MemoryError()
    cdef floating *scratch = part + (n_stripes - 1) * per
    if n_stripes > 1:
        nt = lysep_omp_threads(<int>(n_threads if n_threads < n_stripes else n_stripes))
    with nogil:
        # right-hand side (Z - b) A^T (closest: R_now A^T - lam W_now, for the change),
        # an n_out x n_in matrix stored where W will be, and the Gram matrix; stripe 0
        # sums into W and G, the others into their parts, added in stripe order
        memset(W, 0, n_in * n_out * sizeof(floating))
        memset(G, 0, n_in * n_in * sizeof(floating))
        if n_stripes > 1:
            memset(part, 0, (n_stripes - 1) * per * sizeof(floating))
        # (one thread: a plain loop, not a parallel region of one thread)
        for s in prange(n_stripes if nt > 1 else 0, num_threads=nt, schedule="static"):
            _ridge_gather_stripe(s, n_stripes, n_blocks, block, N, n_in, n_out, pA, pZ, pb,
                                 Wn, Rn, Ro, scratch, n_scratch, W, G, part, per)
        for s in range(n_stripes if nt == 1 else 0):
            _ridge_gather_stripe(s, n_stripes, n_blocks, block, N, n_in, n_out, pA, pZ, pb,
                                 Wn, Rn, Ro, scratch, n_scratch, W, G, part, per)
        for s in range(1, n_stripes):
            for i in range(n_in * n_in):
                G[i] += part[(s - 1) * per + i]
            for i in range(n_in * n_out):
                W[i] += part[(s - 1) * per + n_in * n_in + i]
        for i in range(n_in):              # the C-order upper triangle to the lower
            for j in range(i + 1, n_in):
                G[j * n_in + i] = G[i * n_in + j]
        for j in range(n_in):              # add lam I
            G[j * n_in + j] += <floating>lam
        if closest:
            axpy(<int>(n_in * n_out), <floating>(-lam), Wn, W)
        status = solve_right_spd(n_in, n_out, G, &work_gram2[0, 0], W, rcond_min)
        if closest:                        # W_now + the change (W_now if LAPACK failed)
            axpy(<int>(n_in * n_out), <floating>1, Wn, W)
        # R_out -= A_prev W (R_out holds Z - b from the first pass unless closest),
        # its norm and column sums while in cache
        for s in prange(n_stripes if nt > 1 else 0, num_threads=nt, schedule="static"):
            _ridge_residual_stripe(s, n_stripes, n_blocks, block, N, n_in, n_out, pA, pZ,
                                   pb, W, closest or not stored, Ro, scratch, n_scratch,
                                   stripe_sums, sums, cstride)
        for s in range(n_stripes if nt == 1 else 0):
            _ridge_residual_stripe(s, n_stripes, n_blocks, block, N, n_in, n_out, pA, pZ,
                                   pb, W, closest or not stored, Ro, scratch, n_scratch,
                                   stripe_sums, sums, cstride)
        if sums:
            memset(col, 0, n_out * sizeof(double))
        for s in range(n_stripes):
            r_sum += stripe_sums[s]
            if sums:
                for j in range(n_out):
                    col[j] += stripe_sums[n_stripes + 8 + s * cstride + j]
        w_sum = _ssq(n_in * n_out, W)
    free(part); free(stripe_sums)
    return r_sum, w_sum, status


cdef void _bias_stripe(Py_ssize_t s, Py_ssize_t n_stripes, Py_ssize_t n_blocks,
                       Py_ssize_t block, Py_ssize_t N, Py_ssize_t n, const floating *R,
                       const double *mean, floating *R_out, double *sums) noexcept nogil:
    """Stripe s of bias_update: with mean NULL, the column sums of its rows of R into
    sums[0:n]; else R_out := R - mean on its rows and their squared norm into sums[0]."""
    cdef Py_ssize_t r0, r1, i, j
    _stripe_rows(s, n_stripes, n_blocks, block, N, &r0, &r1)
    if mean == NULL:
        _col_sums_add(r1 - r0, n, R + r0 * n, sums)
        return
    for i in range(r0, r1):
        for j in range(n):
            R_out[i * n + j] = R[i * n + j] - <floating>mean[j]
    sums[0] = _ssq((r1 - r0) * n, R_out + r0 * n)


def bias_update(const floating[:, ::1] R, const floating[::1] b,
                floating[:, ::1] R_out, floating[::1] b_out, int n_threads=1):
    """b_out := b + mean of the rows of R (paper's (3.11), R = Z - W A - b);
    R_out := R - that mean.  Returns ||R_out||^2.

    The rows are split into up to 8 stripes of whole blocks of rows (as ridge_update's,
    a number fixed by N and n): column sums and norms are summed per stripe and the
    stripes' sums added in stripe order, so up to n_threads OpenMP threads give the
    same result, bit for bit, as one."""
    cdef Py_ssize_t N = R.shape[0], n = R.shape[1], j, s, block, n_blocks, n_stripes, stride
    cdef int nt = 1
    cdef double r_sum = 0
    check1("b", b.shape, n); check2("R_out", R_out.shape, N, n); check1("b_out", b_out.shape, n)
    if N == 0:
        raise ValueError("R must have at least one row")
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if n == 0:
        return 0.0
    block = _l1_rows(n, sizeof(floating))
    n_blocks = (N + block - 1) // block
    n_stripes = n_blocks if n_blocks < _MAX_STRIPES else _MAX_STRIPES
    # per stripe: its column sums (n doubles), then its norm, each stripe's slot a cache
    # line apart from the next (threads add to their slots row by row)
    stride = _padded(n)
    cdef double *sums = <double *>calloc(n_stripes * stride + n, sizeof(double))
    if sums == NULL:
        raise MemoryError()
    cdef double *mean = sums + n_stripes * stride
    cdef const floating *pR = &R[0, 0]
    cdef floating *pRo = &R_out[0, 0]
    if n_stripes > 1:
        nt = lysep_omp_threads(<int>(n_threads if n_threads < n_stripes else n_stripes))
    with nogil:
        # (one thread: plain loops, not parallel regions of one thread)
        for s in prange(n_stripes if nt > 1 else 0, num_threads=nt, schedule="static"):
            _bias_stripe(s, n_stripes, n_blocks, block, N, n, pR, NULL, pRo, sums + s * stride)
        for s in range(n_stripes if nt == 1 else 0):
            _bias_stripe(s, n_stripes, n_blocks, block, N, n, pR, NULL, pRo, sums + s * stride)
        for s in range(n_stripes):
            for j in range(n):
                mean[j] += sums[s * stride + j]
        for j in range(n):
            mean[j] /= N
            b_out[j] = b[j] + <floating>mean[j]
        for s in prange(n_stripes if nt > 1 else 0, num_threads=nt, schedule="static"):
            _bias_stripe(s, n_stripes, n_blocks, block, N, n, pR, mean, pRo, sums + s * stride)
        for s in range(n_stripes if nt == 1 else 0):
            _bias_stripe(s, n_stripes, n_blocks, block, N, n, pR, mean, pRo, sums + s * stride)
        for s in range(n_stripes):
            r_sum += sums[s * stride]
    free(sums)
    return r_sum


def bias_update_lean(const floating[:, ::1] A_prev, const floating[:, ::1] W,
                     const floating[:, ::1] Z, const floating[::1] b, floating[::1] b_out,
                     stats=None):
    """bias_update of the low-memory sweep, from the layer's input A_prev (X or the
    previous activations) instead of a stored residual: one pass over blocks of rows
    takes the column sums c and the squared norm s of R = (Z - b) - A_prev W (or they
    come in as stats = (s, c), from the ridge block that computed this residual); then
    b_out := b + d with d = c / N and ||R - d||^2 = s - 2 d.c + N ||d||^2, or, when
    that is below s / 2 (the subtraction would lose digits), a second pass computing
    ||(Z - b_out) - A_prev W||^2 exactly.  Returns the new residual's squared norm."""
    cdef Py_ssize_t N = Z.shape[0], n = Z.shape[1], n_in = A_prev.shape[1], j, r0, nb
    cdef double ssq = 0, r
    cdef const double[::1] given
    check2("A_prev", A_prev.shape, N, n_in); check2("W", W.shape, n_in, n); check1("b", b.shape, n)
    check1("b_out", b_out.shape, n)
    if N == 0:
        raise ValueError("Z must have at least one row")
    cdef Py_ssize_t block = _lean_rows(N, n_in, n, sizeof(floating))
    cdef double *col = <double *>calloc(n, sizeof(double))
    cdef floating *Rb = <floating *>malloc(block * n * sizeof(floating))
    if col == NULL or Rb == NULL:
        free(col); free(Rb)
        raise MemoryError()
    cdef bint have = stats is not None
    if have:
        ssq, given = stats[0], stats[1]
        if given.shape[0] != n:
            free(col); free(Rb)
            raise ValueError(f"stats: column sums of length {n} expected, got {given.shape[0]}")
        memcpy(col, &given[0], n * sizeof(double))
    cdef floating d
    with nogil:
        r0 = 0
        while r0 < N and not have:
            nb = block if r0 + block <= N else N - r0
            _residual_rows(nb, n_in, n, -1, &A_prev[r0, 0], &W[0, 0], &b[0], &Z[r0, 0],
                           <floating *>NULL, Rb)
            _col_sums_add(nb, n, Rb, col)
            ssq += _ssq(nb * n, Rb)
            r0 += nb
        r = ssq
        for j in range(n):
            d = <floating>(col[j] / N)
            b_out[j] = b[j] + d
            r += N * (<double>d * d) - 2 * d * col[j]
        if r < 0.5 * ssq:
            r = 0
            r0 = 0
            while r0 < N:
                nb = block if r0 + block <= N else N - r0
                _residual_rows(nb, n_in, n, -1, &A_prev[r0, 0], &W[0, 0], &b_out[0],
                               &Z[r0, 0], <floating *>NULL, Rb)
                r += _ssq(nb * n, Rb)
                r0 += nb
    free(col); free(Rb)
    return r


# ---------------------------------------------------------------------------
# the gradient-descent baseline (MATH.md §7)
cdef int _backprop_stripe(Py_ssize_t s, Py_ssize_t n_stripes, Py_ssize_t n_blocks,
                          Py_ssize_t block, Py_ssize_t N, Py_ssize_t n_in, Py_ssize_t n_out,
                          const floating *d, const floating *Ap, const floating *W,
                          const floating *D, floating *dp, int deriv, int kind,
                          floating *gW, floating *part, double *sums, Py_ssize_t cs,
                          Py_ssize_t gs) noexcept nogil:
    """The fused narrow kernel of _backprop on stripe s of the rows: its A_prev^T delta
    into gW (stripe 0) or its slot of `part` (gs elements each), its column sums into
    its slot of `sums` (cs each), its rows of dp.  Returns the kernel's status (nonzero:
    the layer is not narrow)."""
    cdef Py_ssize_t r0, r1
    cdef int status
    _stripe_rows(s, n_stripes, n_blocks, block, N, &r0, &r1)
    cdef floating *g = gW if s == 0 else part + (s - 1) * gs
    cdef const floating *Dr = (D if D != NULL else Ap) + r0 * n_in
    cdef floating *dpr = dp + r0 * n_in if dp != NULL else NULL
    if floating is double:
        status = lysep_backprop_d(lysep_smallgemm_vbytes(), r1 - r0, n_in, n_out,
                                  Ap + r0 * n_in, d + r0 * n_out, W, Dr, deriv, g,
                                  sums + s * cs, dpr)
    else:
        status = lysep_backprop_f(lysep_smallgemm_vbytes(), r1 - r0, n_in, n_out,
                                  Ap + r0 * n_in, d + r0 * n_out, W, Dr, deriv, g,
                                  sums + s * cs, dpr)
    if status == 0 and dp != NULL and deriv == 0:   # softplus: its derivative after
        act_derivative_times(kind, (r1 - r0) * n_in, Ap + r0 * n_in, dpr)
    return status


cdef int _backprop(Py_ssize_t N, Py_ssize_t n_in, Py_ssize_t n_out, const floating *d,
                   const floating *Ap, const floating *W, floating *gW, floating *gb,
                   const floating *D, floating *dp, int kind, int n_threads=1) noexcept nogil:
    """gW := A_prev^T delta, gb := column sums of delta and, when dp is not NULL,
    dp := (delta W^T) * sigma'(Z_prev) from D or, when D is NULL, from A_prev for
    activation `kind` (backprop_layer's block).  Narrow layers run the fused kernel of
    _smallgemm.h (the derivative applied in the product's store, row chunks in L1) on
    up to 8 stripes of whole 32 KB blocks of rows, a number fixed by N and the widths:
    each stripe sums its own gW and column sums, added in stripe order, so up to
    n_threads OpenMP threads give the same result, bit for bit, as one; else BLAS, a
    block of rows at a time.  Returns 1 when scratch memory is unavailable."""
    cdef Py_ssize_t i, j, r0 = 0, nb, block, n_blocks, n_stripes = 1, s
    cdef int deriv = 0, status = 1, nt = 1
    if dp != NULL:      # the kernel's derivative codes: 1 tanh, 2 sigmoid, 3 relu, 4 D itself
        deriv = 4 if D != NULL else (kind + 1 if kind != SOFTPLUS else 0)
    block = _l1_rows(n_in if n_in > n_out else n_out, sizeof(floating))
    n_blocks = (N + block - 1) // block
    if narrow(n_in, sizeof(floating)) and narrow(n_out, sizeof(floating)):
        n_stripes = n_blocks if n_blocks < _MAX_STRIPES else _MAX_STRIPES
    # per stripe: its column sums and (beyond the first) its gW, in padded slots
    cdef Py_ssize_t cs = _padded(n_out), gs = _padded(n_in * n_out)
    cdef double *sums = <double *>malloc(n_stripes * cs * sizeof(double) + 1)
    cdef floating *part = <floating *>malloc((n_stripes - 1) * gs * sizeof(floating) + 1)
    if sums == NULL or part == NULL:
        free(sums); free(part)
        return 1
    if n_stripes > 1 and n_threads > 1:
        nt = lysep_omp_threads(<int>(n_threads if n_threads < n_stripes else n_stripes))
    if nt > 1:
        status = 0
        for s in prange(n_stripes, num_threads=nt, schedule="static"):
            status |= _backprop_stripe(s, n_stripes, n_blocks, block, N, n_in, n_out, d,
                                       Ap, W, D, dp, deriv, kind, gW, part, sums, cs, gs)
    else:                   # one thread: a plain loop, not a parallel region of one
        for s in range(n_stripes):
            status = _backprop_stripe(s, n_stripes, n_blocks, block, N, n_in, n_out, d,
                                      Ap, W, D, dp, deriv, kind, gW, part, sums, cs, gs)
            if status:
                break
    if status == 0:
        for s in range(1, n_stripes):
            for i in range(n_in * n_out):
                gW[i] += part[(s - 1) * gs + i]
            for j in range(n_out):
                sums[j] += sums[s * cs + j]
        for j in range(n_out):
            gb[j] = <floating>sums[j]
        free(sums); free(part)
        return 0
    free(part)
    block = _layer_block(N, n_in, n_out, sizeof(floating))
    cdef floating *WT = <floating *>malloc(n_in * n_out * sizeof(floating) + 1)
    if WT == NULL:
        free(sums)
        return 1
    memset(gW, 0, n_in * n_out * sizeof(floating))
    for j in range(n_out):
        sums[j] = 0
    for i in range(n_in):            # W^T, the operand of delta W^T
        for j in range(n_out):
            WT[j * n_in + i] = W[i * n_out + j]
    while r0 < N:
        nb = block if r0 + block <= N else N - r0
        tn_gemm_acc(nb, n_in, n_out, Ap + r0 * n_in, n_in, d + r0 * n_out, n_out, gW, n_out)
        for i in range(r0, r0 + nb):  # row by row: contiguous, vectorisable
            for j in range(n_out):
                sums[j] += d[i * n_out + j]
        if dp != NULL:
            rows_gemm(nb, n_out, n_in, d + r0 * n_out, n_out, WT, n_in, <floating>1,
                      <floating *>NULL, 0, <floating *>NULL, dp + r0 * n_in, n_in)
            if D != NULL:
                for i in range(r0 * n_in, (r0 + nb) * n_in):
                    dp[i] = dp[i] * D[i]
            else:
                act_derivative_times(kind, nb * n_in, Ap + r0 * n_in, dp + r0 * n_in)
        r0 += nb
    for j in range(n_out):
        gb[j] = <floating>sums[j]
    free(sums); free(WT)
    return 0


def backprop_layer(const floating[:, ::1] delta, const floating[:, ::1] A_prev,
                   const floating[:, ::1] W, floating[:, ::1] grad_W_out,
                   floating[::1] grad_b_out, const floating[:, ::1] D_prev=None,
                   floating[:, ::1] delta_prev_out=None, int kind=-1):
    """Given delta = dLoss/dZ of a layer: grad_W_out := A_prev^T delta,
    grad_b_out := column sums of delta and, when delta_prev_out is given,
    delta_prev_out := (delta W^T) * sigma'(Z_prev), with sigma'(Z_prev) read from D_prev
    or, when D_prev is None, computed from A_prev = sigma(Z_prev) for activation `kind`.
    Narrow layers run in one fused pass over cache-sized chunks of rows."""
    cdef Py_ssize_t N = delta.shape[0], n_out = delta.shape[1], n_in = A_prev.shape[1]
    cdef int failed
    check2("A_prev", A_prev.shape, N, n_in); check2("W", W.shape, n_in, n_out)
    check2("grad_W_out", grad_W_out.shape, n_in, n_out); check1("grad_b_out", grad_b_out.shape, n_out)
    cdef bint has_prev = delta_prev_out is not None
    cdef bint has_D = D_prev is not None
    if has_prev:
        check2("delta_prev_out", delta_prev_out.shape, N, n_in)
        if has_D:
            check2("D_prev", D_prev.shape, N, n_in)
        elif not 0 <= kind <= 3:
            raise ValueError("delta_prev_out needs D_prev or the activation kind")
    elif has_D:
        raise ValueError("delta_prev_out is required with D_prev")
    cdef floating *dp = &delta_prev_out[0, 0] if has_prev and N > 0 and n_in > 0 else NULL
    cdef const floating *D = &D_prev[0, 0] if has_D and N > 0 and n_in > 0 else NULL
    cdef const floating *d = &delta[0, 0] if N > 0 and n_out > 0 else NULL
    cdef const floating *Ap = &A_prev[0, 0] if N > 0 and n_in > 0 else NULL
    cdef floating *gW = &grad_W_out[0, 0] if n_in > 0 and n_out > 0 else NULL
    cdef floating *gb = &grad_b_out[0] if n_out > 0 else NULL
    with nogil:
        failed = _backprop(N, n_in, n_out, d, Ap, &W[0, 0] if n_in > 0 and n_out > 0 else NULL,
                           gW, gb, D, dp, kind)
    if failed:
        raise MemoryError()


def backprop_step(const floating[:, ::1] P, const floating[:, ::1] X, A, W, b, int kind,
                  double learning_rate, grad_W_out, grad_b_out, work_delta,
                  int n_threads=1):
    """One gradient-descent step by backpropagation (MATH.md §7) from the last forward:
    P = softmax(G) - Y at the logits, A[i] the activations of hidden layer i (X feeds
    layer 0).  With delta = P / N at the logits, for each layer i from the top:
    grad_W_out[i] := A[i-1]^T delta, grad_b_out[i] := column sums of delta, the next
    delta := (delta W[i]^T) * sigma'(Z[i-1]) from A[i-1] for activation `kind`, then
    W[i] -= learning_rate grad_W_out[i] and b[i] -= learning_rate grad_b_out[i], in
    place.  work_delta: two 1-d arrays of at least N x (widest layer output) entries
    that hold the deltas.  One call for all layers: validated once, run without the GIL;
    a narrow layer's rows on up to n_threads OpenMP threads (the same results for every
    count, see _backprop)."""
    cdef Py_ssize_t N = P.shape[0], L = len(W), i, t, widest = P.shape[1]
    cdef floating[::1] buf0, buf1
    if L < 1 or len(b) != L or len(grad_W_out) != L or len(grad_b_out) != L \
            or len(A) != L - 1:
        raise ValueError("W, b, grad_W_out, grad_b_out need one entry per layer and A one "
                         "per hidden layer")
    if len(work_delta) != 2:
        raise ValueError("work_delta holds two buffers")
    if L > 1 and not 0 <= kind <= 3:
        raise ValueError("unknown activation kind")
    if N == 0 or X.shape[0] != N or X.shape[1] == 0:
        raise ValueError("X and P need the same, non-zero number of rows and X a column")
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    cdef Py_ssize_t *size = <Py_ssize_t *>malloc((L + 1) * sizeof(Py_ssize_t))
    cdef floating **Ap = <floating **>malloc(L * sizeof(floating *))
    cdef floating **Wp = <floating **>malloc(L * sizeof(floating *))
    cdef floating **bp = <floating **>malloc(L * sizeof(floating *))
    cdef floating **gWp = <floating **>malloc(L * sizeof(floating *))
    cdef floating **gbp = <floating **>malloc(L * sizeof(floating *))
    cdef floating *delta
    cdef floating *nxt
    cdef const floating *Pp = &P[0, 0] if P.shape[1] > 0 else NULL
    cdef floating lr = <floating>learning_rate, scale = <floating>(1.0 / N)
    cdef int failed = 0
    try:
        if not (size and Ap and Wp and bp and gWp and gbp):
            raise MemoryError()
        # Ap[i + 1] := A[i], the input of layer i + 1; Ap[0] := X
        _network_arrays(N, X.shape[1], W, b, A, grad_W_out, grad_b_out, size, Wp, bp,
                        Ap + 1, gWp, gbp, "A")
        Ap[0] = <floating *>&X[0, 0]
        for i in range(1, L):
            widest = size[i] if size[i] > widest else widest
        if size[L] != P.shape[1]:
            raise ValueError("P does not match the output layer")
        buf0, buf1 = work_delta[0], work_delta[1]
        if buf0.shape[0] < N * widest or buf1.shape[0] < N * widest:
            raise ValueError(f"work_delta buffers need {N * widest} entries")
        with nogil:
            delta = &buf0[0]
            for t in range(N * size[L]):         # the logits' delta, P / N
                delta[t] = Pp[t] * scale
            for i in range(L - 1, -1, -1):
                nxt = NULL if i == 0 else (&buf1[0] if (L - i) % 2 else &buf0[0])
                failed = _backprop(N, size[i], size[i + 1], delta, Ap[i], Wp[i], gWp[i],
                                   gbp[i], <floating *>NULL, nxt, kind, n_threads)
                if failed:
                    break
                for t in range(size[i] * size[i + 1]):   # W[i] -= lr grad_W, after its use
                    Wp[i][t] -= lr * gWp[i][t]
                for t in range(size[i + 1]):
                    bp[i][t] -= lr * gbp[i][t]
                delta = nxt
        if failed:
            raise MemoryError()
    finally:
        free(size); free(Ap); free(Wp); free(bp); free(gWp); free(gbp)


def squared_norm(const floating[::1] x):
    """Return ||x||^2 accumulated in double (flatten matrices with .reshape(-1))."""
    cdef double s = 0
    if x.shape[0] == 0:
        return 0.0
    with nogil:
        s = _ssq(x.shape[0], &x[0])
    return s


# ---------------------------------------------------------------------------
# test hooks for the narrow products of _smallgemm.h (every variant the CPU runs)
def _simd_widths():
    """Vector widths (bytes) of the narrow-product variants this CPU can run."""
    cdef int widest = lysep_smallgemm_vbytes()
    return [vb for vb in (16, 32, 64) if vb <= widest]


def _rows_product(const floating[:, ::1] A, const floating[:, ::1] B, double alpha,
                  floating[:, ::1] C0, const floating[::1] bias, floating[:, ::1] C, int vb):
    """C := C0 + bias + alpha A B through rows_gemm with variant vb (C0, bias may be None;
    C0 may be C)."""
    cdef Py_ssize_t M = A.shape[0], k = A.shape[1], n = B.shape[1]
    check2("B", B.shape, k, n); check2("C", C.shape, M, n)
    if C0 is not None:
        check2("C0", C0.shape, M, n)
    if bias is not None:
        check1("bias", bias.shape, n)
    if M == 0 or n == 0:
        return
    cdef const floating *a = &A[0, 0] if k > 0 else &C[0, 0]
    cdef const floating *b = &B[0, 0] if k > 0 else &C[0, 0]
    rows_gemm(M, k, n, a, k, b, n, <floating>alpha, &C0[0, 0] if C0 is not None else NULL, n,
              &bias[0] if bias is not None else NULL, &C[0, 0], n, vb)


def _tn_product(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C, int vb):
    """C += A^T B through tn_gemm_acc with variant vb."""
    cdef Py_ssize_t M = A.shape[0], k = A.shape[1], n = B.shape[1]
    check2("B", B.shape, M, n); check2("C", C.shape, k, n)
    if M == 0 or k == 0 or n == 0:
        return
    tn_gemm_acc(M, k, n, &A[0, 0], k, &B[0, 0], n, &C[0, 0], n, vb)


def _backprop_product(const floating[:, ::1] A, const floating[:, ::1] delta,
                      const floating[:, ::1] W, const floating[:, ::1] S, int deriv,
                      floating[:, ::1] gW, double[::1] gb, floating[:, ::1] Dp, int vb):
    """The fused backpropagation kernel with variant vb: gW := A^T delta, gb := column sums
    of delta, Dp := (delta W^T) * sigma' from S per deriv (1 tanh, 2 sigmoid, 3 relu,
    4 S itself, 0 none; Dp, S may be None).  Returns False when the kernel does not take
    the shape."""
    cdef Py_ssize_t M = A.shape[0], k = A.shape[1], n = delta.shape[1]
    check2("delta", delta.shape, M, n); check2("W", W.shape, k, n); check2("gW", gW.shape, k, n)
    check1("gb", gb.shape, n)
    if Dp is not None:
        check2("Dp", Dp.shape, M, k)
    if S is not None:
        check2("S", S.shape, M, k)
    elif deriv:
        raise ValueError("deriv needs S")
    if not 0 <= deriv <= 4:
        raise ValueError("deriv is 0..4")
    if M == 0 or k == 0 or n == 0:
        return False
    cdef floating *dp = &Dp[0, 0] if Dp is not None else NULL
    cdef const floating *sp = &S[0, 0] if S is not None else NULL
    if floating is double:
        return lysep_backprop_d(vb, M, k, n, &A[0, 0], &delta[0, 0], &W[0, 0], sp, deriv,
                                &gW[0, 0], &gb[0], dp) == 0
    else:
        return lysep_backprop_f(vb, M, k, n, &A[0, 0], &delta[0, 0], &W[0, 0], sp, deriv,
                                &gW[0, 0], &gb[0], dp) == 0


def _gather_product(const floating[:, ::1] A, const floating[:, ::1] B, double alpha,
                    const floating[:, ::1] C0, const Py_ssize_t[::1] idx, floating[:, ::1] C,
                    double[::1] ssq, int vb):
    """C[r] := C0[idx[r]] + alpha A[r] B and ssq[r] := ||C[r]||^2 with variant vb
    (the narrow kernel only; returns False when it does not take the shape)."""
    cdef Py_ssize_t M = A.shape[0], k = A.shape[1], n = B.shape[1], r
    check2("B", B.shape, k, n); check2("C", C.shape, M, n); check1("idx", idx.shape, M)
    check1("ssq", ssq.shape, M)
    for r in range(M):
        if not 0 <= idx[r] < C0.shape[0]:
            raise ValueError("idx out of range")
    if M == 0 or n == 0 or k == 0:
        return True
    if floating is double:
        return lysep_rows_nn_ex_d(vb, M, k, n, &A[0, 0], k, &B[0, 0], n, alpha, &C0[0, 0], n,
                                  &idx[0], NULL, &C[0, 0], n, &ssq[0]) == 0
    else:
        return lysep_rows_nn_ex_f(vb, M, k, n, &A[0, 0], k, &B[0, 0], n, <float>alpha,
                                  &C0[0, 0], n, &idx[0], NULL, &C[0, 0], n, &ssq[0]) == 0


def _trial_rows_check(const Py_ssize_t[::1] active, const double[::1] step,
                      const floating[:, ::1] Z, const floating[:, ::1] R,
                      const floating[:, ::1] g, floating[:, ::1] Z_out, floating[:, ::1] R_out,
                      floating[:, ::1] Zc, double[::1] rs, int vb):
    """The trial rows of a Z step with variant vb (test hook)."""
    cdef Py_ssize_t N = Z.shape[0], n = Z.shape[1], m = active.shape[0], a
    check2("R", R.shape, N, n); check2("g", g.shape, N, n)
    check2("Z_out", Z_out.shape, N, n); check2("R_out", R_out.shape, N, n)
    check2("Zc", Zc.shape, m, n); check1("rs", rs.shape, m); check1("step", step.shape, N)
    for a in range(m):
        if not 0 <= active[a] < N:
            raise ValueError("active out of range")
    if m == 0 or n == 0:
        return
    if floating is double:
        lysep_trial_rows_d(vb, m, n, &active[0], &step[0], &Z[0, 0], &R[0, 0], &g[0, 0],
                           &Z_out[0, 0], &R_out[0, 0], &Zc[0, 0], &rs[0])
    else:
        lysep_trial_rows_f(vb, m, n, &active[0], &step[0], &Z[0, 0], &R[0, 0], &g[0, 0],
                           &Z_out[0, 0], &R_out[0, 0], &Zc[0, 0], &rs[0])


def _zgrad_rows_check(const floating[:, ::1] R, const floating[:, ::1] Z,
                      const floating[:, ::1] D, bint from_value, double c1, double c2,
                      floating[:, ::1] G, double[::1] rs, double[::1] zsq, double[::1] gsq,
                      int vb):
    """The gradient rows of a hidden Z step with variant vb (test hook)."""
    cdef Py_ssize_t m = R.shape[0], n = R.shape[1]
    check2("Z", Z.shape, m, n); check2("D", D.shape, m, n); check2("G", G.shape, m, n)
    check1("rs", rs.shape, m); check1("zsq", zsq.shape, m); check1("gsq", gsq.shape, m)
    if m == 0 or n == 0:
        return
    if floating is double:
        lysep_zgrad_rows_d(vb, m, n, &R[0, 0], &Z[0, 0], &D[0, 0], from_value, c1, c2,
                           &G[0, 0], &rs[0], &zsq[0], &gsq[0])
    else:
        lysep_zgrad_rows_f(vb, m, n, &R[0, 0], &Z[0, 0], &D[0, 0], from_value, <float>c1,
                           <float>c2, &G[0, 0], &rs[0], &zsq[0], &gsq[0])


def _target_rows_check(const floating[:, ::1] Zn, const floating[::1] b,
                       const floating[:, ::1] Rn, floating[:, ::1] Zb, double[::1] zbsq,
                       double[::1] rnsq, int vb):
    """The next layer's target rows of a hidden Z step with variant vb (test hook)."""
    cdef Py_ssize_t m = Zn.shape[0], n = Zn.shape[1]
    check1("b", b.shape, n); check2("Rn", Rn.shape, m, n); check2("Zb", Zb.shape, m, n)
    check1("zbsq", zbsq.shape, m); check1("rnsq", rnsq.shape, m)
    if m == 0 or n == 0:
        return
    if floating is double:
        lysep_target_rows_d(vb, m, n, &Zn[0, 0], &b[0], &Rn[0, 0], &Zb[0, 0], &zbsq[0],
                            &rnsq[0])
    else:
        lysep_target_rows_f(vb, m, n, &Zn[0, 0], &b[0], &Rn[0, 0], &Zb[0, 0], &zbsq[0],
                            &rnsq[0])


def _gram_upper(const floating[:, ::1] A, floating[:, ::1] C, int vb):
    """C += A^T A on and above the diagonal with the narrow Gram kernel of variant vb."""
    cdef Py_ssize_t M = A.shape[0], n = A.shape[1]
    check2("C", C.shape, n, n)
    if M == 0 or n == 0:
        return
    if floating is double:
        lysep_gram_acc_d(vb, M, n, &A[0, 0], n, &C[0, 0], n)
    else:
        lysep_gram_acc_f(vb, M, n, &A[0, 0], n, &C[0, 0], n)
