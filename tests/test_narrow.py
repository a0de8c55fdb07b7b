"""The narrow products of _smallgemm.h (thin layers) and the blocked kernels built on
them, against NumPy: every instruction-set variant the CPU runs, tails of every length,
the BLAS fallback for wide outputs, and row counts spanning many blocks."""
import numpy as np
import pytest

from lysep import _fnn_blocks, _reference
from lysep._activations import ACTIVATION_CODES

from conftest import RTOL, next_layer

rng = np.random.default_rng(7)
WIDTHS = _fnn_blocks._simd_widths()
MAX_SLOTS = 5           # the widest output the narrow products take, in vectors


def close(a, b, dtype, scale=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(), 1.0) if scale is None else scale
    np.testing.assert_allclose(a, b, rtol=0, atol=RTOL[dtype] * scale * 10)


def test_this_cpu_runs_the_baseline_variant():
    assert WIDTHS[0] == 16


@pytest.mark.parametrize("vb", WIDTHS)
@pytest.mark.parametrize("M,k,n", [(1, 1, 1), (3, 7, 2), (4, 20, 20), (5, 20, 17),
                                   (17, 3, 8), (9, 33, 9), (6, 2, 32), (11, 5, 33),
                                   (8, 0, 5), (0, 4, 4), (13, 64, 24)])
@pytest.mark.parametrize("mode", ["plain", "bias", "C0", "in_place"])
def test_rows_product_matches_numpy(vb, M, k, n, mode, dtype):
    A = rng.normal(size=(M, k)).astype(dtype)
    B = rng.normal(size=(k, n)).astype(dtype)
    bias = rng.normal(size=n).astype(dtype) if mode != "plain" else None
    C0 = rng.normal(size=(M, n)).astype(dtype) if mode in ("C0", "in_place") else None
    expect = -0.5 * (A.astype(np.float64) @ B) + (0 if bias is None else bias) \
        + (0 if C0 is None else C0)
    C = C0 if mode == "in_place" else np.full((M, n), np.nan, dtype)
    _fnn_blocks._rows_product(A, B, -0.5, C0, bias, C, vb)
    close(C, expect, dtype, scale=max(k, 1) * 4.0)


@pytest.mark.parametrize("vb", WIDTHS)
@pytest.mark.parametrize("M,k,n", [(1, 1, 1), (7, 3, 2), (300, 20, 20), (50, 5, 17),
                                   (9, 33, 9), (31, 2, 32), (12, 6, 40), (400, 40, 3),
                                   (0, 4, 4)])
def test_tn_product_accumulates(vb, M, k, n, dtype):
    A = rng.normal(size=(M, k)).astype(dtype)
    B = rng.normal(size=(M, n)).astype(dtype)
    C = rng.normal(size=(k, n)).astype(dtype)
    expect = C.astype(np.float64) + A.astype(np.float64).T @ B
    _fnn_blocks._tn_product(A, B, C, vb)
    close(C, expect, dtype, scale=max(M, 1) * 4.0)


@pytest.mark.parametrize("vb", WIDTHS)
def test_every_tile_shape_of_the_narrow_kernels(vb, dtype):
    """Every output width the kernels take, 1 .. 5 vectors: the rows' last columns go in
    a full vector or, when they fit, a half-width one (2 nv + h shapes), so each shape of
    the rows product, the A^T B product and the fused backprop kernel (gW, gb, Dp) runs
    here for each variant."""
    width = MAX_SLOTS * vb // np.dtype(dtype).itemsize
    M = 13                  # three 4-row tiles (six 2-row ones) and a single row
    for n in range(1, width + 1):
        k = (n * 7) % width + 1               # the other dimension varies too
        A = rng.normal(size=(M, k)).astype(dtype)
        B = rng.normal(size=(k, n)).astype(dtype)
        bias = rng.normal(size=n).astype(dtype)
        C0 = rng.normal(size=(M, n)).astype(dtype)
        C = np.full((M, n), np.nan, dtype)
        _fnn_blocks._rows_product(A, B, 0.75, C0, bias, C, vb)
        close(C, 0.75 * (A.astype(np.float64) @ B) + bias + C0, dtype, scale=k * 4.0)
        D = rng.normal(size=(M, n)).astype(dtype)
        G = rng.normal(size=(k, n)).astype(dtype)
        expect = G.astype(np.float64) + A.astype(np.float64).T @ D
        _fnn_blocks._tn_product(A, D, G, vb)
        close(G, expect, dtype, scale=M * 4.0)
        S = np.tanh(A)
        gW, gb = np.full((k, n), np.nan, dtype), np.full(n, np.nan)
        Dp = np.full((M, k), np.nan, dtype)
        assert _fnn_blocks._backprop_product(S, D, B, S, 1, gW, gb, Dp, vb)
        S64, D64 = S.astype(np.float64), D.astype(np.float64)
        close(gW, S64.T @ D64, dtype, scale=M * 1.0)
        close(gb, D64.sum(axis=0), dtype, scale=M * 1.0)
        close(Dp, (D64 @ B.T.astype(np.float64)) * (1 - S64 * S64), dtype, scale=n * 4.0)


def _layer(dtype, N, n_in, n_out):
    A = np.tanh(rng.normal(size=(N, n_in))).astype(dtype)
    W = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype)
    return A, W, b


# narrow layers over many row blocks, and a layer too wide for the narrow kernels
SHAPES = [(1000, 20, 20), (257, 3, 31), (300, 40, 48)]


@pytest.mark.parametrize("N,n_in,n_out", SHAPES)
@pytest.mark.parametrize("name", list(ACTIVATION_CODES))
def test_layer_forward_matches_reference(N, n_in, n_out, name, dtype):
    A, W, b = _layer(dtype, N, n_in, n_out)
    kind = ACTIVATION_CODES[name]
    out = []
    for backend in (_fnn_blocks, _reference):
        Z, Y = np.full((N, n_out), np.nan, dtype), np.full((N, n_out), np.nan, dtype)
        backend.layer_forward(A, W, b, kind, Y, Z)
        Y2 = np.full((N, n_out), np.nan, dtype)
        backend.layer_forward(A, W, b, kind, Y2)            # without keeping Z
        np.testing.assert_array_equal(Y, Y2)
        out.append((Z, Y))
    close(out[0][0], out[1][0], dtype)
    close(out[0][1], out[1][1], dtype)


@pytest.mark.parametrize("N,n_in,n_out", SHAPES)
@pytest.mark.parametrize("name", list(ACTIVATION_CODES))
def test_backprop_from_activation_values_matches_reference(N, n_in, n_out, name, dtype):
    A, W, _ = _layer(dtype, N, n_in, n_out)
    delta = rng.normal(size=(N, n_out)).astype(dtype)
    kind = ACTIVATION_CODES[name]
    out = []
    for backend in (_fnn_blocks, _reference):
        gW, gb = np.empty((n_in, n_out), dtype), np.empty(n_out, dtype)
        dp = np.empty((N, n_in), dtype)
        backend.backprop_layer(delta, A, W, gW, gb, None, dp, kind)
        out.append((gW, gb, dp))
    for a, b in zip(*out):
        close(a, b, dtype, scale=N * 1.0)


def test_backprop_without_derivative_source_is_refused():
    A, W, _ = _layer(np.float64, 10, 3, 2)
    with pytest.raises(ValueError, match="D_prev or the activation kind"):
        _fnn_blocks.backprop_layer(np.ones((10, 2)), A, W, np.empty((3, 2)), np.empty(2),
                                   None, np.empty((10, 3)))


def _z_hidden_problem(N, n, n2, dtype):
    """Z, A = tanh(Z), R, R_next and W_next of a z_hidden_step call."""
    Z = rng.normal(size=(N, n)).astype(dtype)
    A = np.tanh(Z).astype(dtype)
    R = (0.3 * rng.normal(size=(N, n))).astype(dtype)
    Rn = (0.3 * rng.normal(size=(N, n2))).astype(dtype)
    W = (rng.normal(size=(n, n2)) / np.sqrt(n)).astype(dtype)
    return Z, A, R, Rn, W


def _run_z_hidden(backend, Z, A, R, Rn, W, per_sample, work_rows, n_threads=1):
    """One z_hidden_step with fresh outputs and work arrays of `work_rows` rows (and
    `n_threads` threads); returns (its result, the outputs, the step memory)."""
    (N, n), n2, dtype = Z.shape, W.shape[1], Z.dtype
    eta = np.ones(N if per_sample else 1)
    outs = [np.zeros((N, n), dtype) for _ in range(3)] + [np.zeros((N, n2), dtype)]
    work = [np.zeros((work_rows, n), dtype), np.zeros((work_rows, n), dtype),
            np.zeros((work_rows, n2), dtype), np.zeros((work_rows, n2), dtype)]
    r = backend.z_hidden_step(Z, A, R, Rn, W, *next_layer(A, Rn, W), 0, 0.7, 0.4, eta, 3.0,
                              30, 0.5, 1e-4, 2.0, 1e4, *outs, *work, n_threads)
    return r, outs, eta


@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "shared"])
@pytest.mark.parametrize("n,n2", [(20, 20), (7, 16), (120, 300)])
def test_z_hidden_step_is_the_same_on_every_thread_count(per_sample, n, n2, dtype):
    """The row blocks run on OpenMP threads (narrow layers, per-sample steps): the
    outputs, norms, counts and step memory are those of one thread, bit for bit, and
    match the reference; wide layers and shared steps stay on one thread."""
    block = _fnn_blocks.z_hidden_work_rows(10**6, n, n2, np.dtype(dtype).itemsize, False)
    N = 5 * block + 3
    Z, A, R, Rn, W = _z_hidden_problem(N, n, n2, dtype)
    R[::7] = 0.0                         # rows that give up (kept) in several blocks
    Rn[::7] = 0.0
    work = _fnn_blocks.z_hidden_work_rows(N, n, n2, np.dtype(dtype).itemsize, not per_sample)
    one = _run_z_hidden(_fnn_blocks, Z, A, R, Rn, W, per_sample, work)
    if per_sample:
        assert 0 < one[0][2] < N         # some rows kept, some moved
    for n_threads in (2, 3, 8):
        many = _run_z_hidden(_fnn_blocks, Z, A, R, Rn, W, per_sample, work, n_threads)
        assert many[0] == one[0]
        for a, b in zip(many[1], one[1]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(many[2], one[2])
    ref = _run_z_hidden(_reference, Z, A, R, Rn, W, per_sample, work)
    close(one[0][:2], ref[0][:2], dtype, scale=ref[0][0])
    assert one[0][2:] == ref[0][2:]
    for a, b in zip(one[1], ref[1]):
        close(a, b, dtype)


def test_z_hidden_step_refuses_no_threads():
    Z, A, R, Rn, W = _z_hidden_problem(50, 4, 4, np.float64)
    with pytest.raises(ValueError, match="n_threads"):
        _run_z_hidden(_fnn_blocks, Z, A, R, Rn, W, True, 50, 0)
    with pytest.raises(ValueError, match="n must be"):
        _fnn_blocks.openmp_threads(0)


@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "shared"])
@pytest.mark.parametrize("n,n2", [(20, 20), (7, 30), (40, 36), (120, 300)])
def test_z_hidden_step_over_many_blocks_matches_reference(per_sample, n, n2, dtype):
    """Rows far beyond one block, so the per-sample search runs block by block."""
    # the block size depends on which widths the CPU's narrow kernels take: at least
    # two whole blocks and a partial one
    block = _fnn_blocks.z_hidden_work_rows(10**6, n, n2, np.dtype(dtype).itemsize, False)
    N = max(2500 if n2 <= 40 else 700, 2 * block + block // 2)
    assert _fnn_blocks.z_hidden_work_rows(N, n, n2, np.dtype(dtype).itemsize, False) * 2 <= N
    Z, A, R, Rn, W = _z_hidden_problem(N, n, n2, dtype)
    res = []
    for backend in (_fnn_blocks, _reference):
        res.append(_run_z_hidden(backend, Z, A, R, Rn, W, per_sample, N))
    (rc, oc, ec), (rr, orf, er) = res
    close(rc[:2], rr[:2], dtype, scale=rr[0])
    assert rc[2:] == rr[2:]
    for a, b in zip(oc, orf):
        close(a, b, dtype)
    np.testing.assert_array_equal(ec, er)


@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "shared"])
@pytest.mark.parametrize("n,K", [(20, 3), (300, 2), (120, 10)])
def test_z_last_step_over_many_blocks_matches_reference(per_sample, n, K, dtype):
    """Rows beyond one block of z_last_step (narrow rows: about 64 KB per array in an
    even number of equal blocks; wider: 256 rows at least, about 256 KB per array), with
    work arrays of only the rows z_last_work_rows asks for: the same result, bit for
    bit, as with work arrays of all N rows, and the reference's to rounding."""
    N = 4000 if n == 20 else 700
    Z = rng.normal(size=(N, n)).astype(dtype)
    A = np.tanh(Z).astype(dtype)
    R = (0.3 * rng.normal(size=(N, n))).astype(dtype)
    W = (rng.normal(size=(n, K)) / np.sqrt(n)).astype(dtype)
    b = rng.normal(size=K).astype(dtype)
    y = rng.integers(0, K, N).astype(np.int64)
    rows = _fnn_blocks.z_last_work_rows(N, n, np.dtype(dtype).itemsize, not per_sample)
    size = np.dtype(dtype).itemsize
    if not per_sample:
        expected = N
    elif n <= _fnn_blocks.narrow_width(size):
        blocks = -(-N // max(64, 65536 // (n * size)))
        expected = -(-N // (blocks + blocks % 2))
    else:
        expected = min(N, max(256, 262144 // (n * size)))
    assert rows == expected
    if per_sample:
        assert rows < N                              # really several blocks
    res = []
    for backend, M in ((_fnn_blocks, rows), (_fnn_blocks, N), (_reference, N)):
        eta = np.ones(N if per_sample else 1)
        outs = [np.zeros((N, n), dtype) for _ in range(3)]
        work = [np.zeros((M, n), dtype), np.zeros((M, n), dtype), np.zeros((M, K), dtype)]
        r = backend.z_last_step(Z, A, R, W, b, y, 0, 0.7, eta, 3.0, 30, 0.5, 1e-4,
                                2.0, 1e4, *outs, *work)
        res.append((r, outs, eta))
    (rb, ob, eb), (rc, oc, ec), (rr, orf, er) = res
    assert rb == rc
    for a, c in zip(ob + [eb], oc + [ec]):
        np.testing.assert_array_equal(a, c)
    close(rc[:2], rr[:2], dtype, scale=max(rr[0], rr[1]))
    assert rc[2:] == rr[2:]
    for a, c in zip(oc, orf):
        close(a, c, dtype)
    np.testing.assert_array_equal(ec, er)


@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "shared"])
def test_z_hidden_step_with_block_sized_work_arrays(per_sample, dtype):
    """Work arrays of z_hidden_work_rows rows give the result of N-row ones, bit for bit;
    fewer rows are refused before the kernel runs."""
    N, n, n2 = 900, 300, 200
    Z, A, R, Rn, W = _z_hidden_problem(N, n, n2, dtype)
    rows = _fnn_blocks.z_hidden_work_rows(N, n, n2, np.dtype(dtype).itemsize, not per_sample)
    assert rows < N if per_sample else rows == N
    res = []
    for M in (rows, N):
        res.append(_run_z_hidden(_fnn_blocks, Z, A, R, Rn, W, per_sample, M))
    assert res[0][0] == res[1][0]
    for a, c in zip(res[0][1] + [res[0][2]], res[1][1] + [res[1][2]]):
        np.testing.assert_array_equal(a, c)
    eta = np.ones(N if per_sample else 1)
    outs = [np.zeros((N, n), dtype) for _ in range(3)] + [np.zeros((N, n2), dtype)]
    small = [np.zeros((rows - 1, n), dtype), np.zeros((rows, n), dtype),
             np.zeros((rows, n2), dtype), np.zeros((rows, n2), dtype)]
    with pytest.raises(ValueError, match="work_D"):
        _fnn_blocks.z_hidden_step(Z, A, R, Rn, W, *next_layer(A, Rn, W), 0, 0.7, 0.4, eta,
                                  3.0, 30, 0.5, 1e-4, 2.0, 1e4, *outs, *small)
    with pytest.raises(ValueError, match="work_P"):
        _fnn_blocks.z_last_step(Z, A, R, W[:, :3].copy(), np.zeros(3, dtype),
                                np.zeros(N, np.int64), 0, 0.7, eta, 3.0, 30, 0.5, 1e-4, 2.0,
                                1e4, *outs[:3], np.zeros((N, n), dtype),
                                np.zeros((N, n), dtype), np.zeros((1, 3), dtype))


@pytest.mark.parametrize("backend", [_fnn_blocks, _reference], ids=["compiled", "reference"])
@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "shared"])
def test_z_steps_without_candidate_activations(backend, per_sample, dtype):
    """A_out=None (the sweep recomputes A from Z): every other output is the same, bit
    for bit, as when the candidate's activations are written."""
    N, n, n2, K = 700, 300, 40, 3
    Z, A, R, Rn, W = _z_hidden_problem(N, n, n2, dtype)
    Wk = (rng.normal(size=(n, K)) / np.sqrt(n)).astype(dtype)
    bk = rng.normal(size=K).astype(dtype)
    y = rng.integers(0, K, N).astype(np.int64)
    for step in ("last", "hidden"):
        res = []
        for keep in (True, False):
            eta = np.ones(N if per_sample else 1)
            Zo, Ao, Ro = (np.zeros((N, n), dtype) for _ in range(3))
            Rno = np.zeros((N, n2), dtype)
            if step == "last":
                work = [np.zeros((N, n), dtype), np.zeros((N, n), dtype), np.zeros((N, K), dtype)]
                r = backend.z_last_step(Z, A, R, Wk, bk, y, 0, 0.7, eta, 3.0, 30, 0.5, 1e-4,
                                        2.0, 1e4, Zo, Ao if keep else None, Ro, *work)
            else:
                work = [np.zeros((N, n), dtype), np.zeros((N, n), dtype),
                        np.zeros((N, n2), dtype), np.zeros((N, n2), dtype)]
                r = backend.z_hidden_step(Z, A, R, Rn, W, *next_layer(A, Rn, W), 0, 0.7, 0.4,
                                          eta, 3.0, 30, 0.5, 1e-4, 2.0, 1e4, Zo,
                                          Ao if keep else None, Ro, Rno,
                                          *work)
            res.append((r, [Zo, Ro, Rno, eta], Ao))
        (r1, o1, A1), (r2, o2, A2) = res
        assert r1 == r2
        for a, c in zip(o1, o2):
            np.testing.assert_array_equal(a, c)
        assert not A2.any()                           # really not written
        close(A1, np.tanh(o1[0].astype(np.float64)), dtype)


def _run_ridge(backend, A, Z, b, W_now, R_now, mode, n_threads=1):
    """One ridge_update in `mode` (min_norm, closest, closest recomputing R_now, or
    lean: no stored residual); returns its result, W_out, R_out and column sums."""
    N, n_in = A.shape
    n_out = Z.shape[1]
    W = np.full((n_in, n_out), np.nan, A.dtype)
    R = None if mode == "lean" else np.full((N, n_out), np.nan, A.dtype)
    col = np.full(n_out, np.nan)
    res = backend.ridge_update(
        A, Z, b, 0.3, 1e4 * np.finfo(A.dtype).eps, W, R, np.empty((n_in, n_in), A.dtype),
        np.empty((n_in, n_in), A.dtype), col, W_now if mode.startswith("closest") else None,
        R_now if mode == "closest" else None, n_threads)
    return res, W, R, col


@pytest.mark.parametrize("mode", ["min_norm", "closest", "closest_recomputed", "lean"])
@pytest.mark.parametrize("n_in,n_out", [(20, 20), (7, 3), (40, 36), (120, 20)])
def test_ridge_update_is_the_same_on_every_thread_count(mode, n_in, n_out, dtype):
    """A narrow layer's rows are summed in stripes that do not depend on the thread
    count (up to 8, here more blocks than that and an uneven split), the stripes'
    sums added in order: W, R, its norm and column sums are those of one thread, bit
    for bit, and match the reference; a wide layer is one stripe."""
    block = 32768 // (max(n_in, n_out) * np.dtype(dtype).itemsize)
    N = 37 * block + 5
    A = np.tanh(rng.normal(size=(N, n_in))).astype(dtype)
    Z = rng.normal(size=(N, n_out)).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype)
    W_now = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    R_now = (Z - b - A @ W_now).astype(dtype)
    one = _run_ridge(_fnn_blocks, A, Z, b, W_now, R_now, mode)
    assert one[0][2] == 0 and np.isfinite(one[1]).all() and np.isfinite(one[3]).all()
    for n_threads in (2, 3, 8):
        many = _run_ridge(_fnn_blocks, A, Z, b, W_now, R_now, mode, n_threads)
        assert many[0] == one[0]
        for a, c in zip(many[1:], one[1:]):
            if a is not None:
                np.testing.assert_array_equal(a, c)
    ref = _run_ridge(_reference, A, Z, b, W_now, R_now, mode)
    close(one[0][:2], ref[0][:2], dtype, scale=ref[0][0])
    close(one[1], ref[1], dtype, scale=np.abs(ref[1]).max() * 100)
    if mode != "lean":
        close(one[2], ref[2], dtype)
    close(one[3], ref[3], dtype, scale=np.sqrt(N) * np.abs(Z).max())


def test_ridge_update_refuses_no_threads():
    A, Z, b = np.ones((10, 2)), np.ones((10, 3)), np.zeros(3)
    with pytest.raises(ValueError, match="n_threads"):
        _run_ridge(_fnn_blocks, A, Z, b, None, None, "min_norm", 0)


@pytest.mark.parametrize("n", [1, 8, 20, 300])
def test_bias_update_is_the_same_on_every_thread_count(n, dtype):
    """The bias block's column sums and norms go by stripes of rows fixed by N and n:
    b, R and the norm are those of one thread, bit for bit, and match the reference."""
    N = 37 * max(16, 32768 // (n * np.dtype(dtype).itemsize)) + 5
    R = (rng.normal(size=(N, n)) + rng.normal(size=n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype)
    outs = []
    for backend, n_threads in ((_fnn_blocks, 1), (_fnn_blocks, 2), (_fnn_blocks, 3),
                               (_fnn_blocks, 8), (_reference, 1)):
        R_out, b_out = np.full_like(R, np.nan), np.full_like(b, np.nan)
        outs.append((backend.bias_update(R, b, R_out, b_out, n_threads), R_out, b_out))
    one, ref = outs[0], outs[-1]
    for many in outs[1:-1]:
        assert many[0] == one[0]
        np.testing.assert_array_equal(many[1], one[1])
        np.testing.assert_array_equal(many[2], one[2])
    close(one[0], ref[0], dtype, scale=ref[0])
    close(one[1], ref[1], dtype)
    close(one[2], ref[2], dtype)
    np.testing.assert_allclose(one[1].mean(axis=0, dtype=np.float64), 0,
                               atol=RTOL[dtype] * 10 * np.abs(R).max())
    with pytest.raises(ValueError, match="n_threads"):
        _fnn_blocks.bias_update(R, b, R_out, b_out, 0)


@pytest.mark.parametrize("n_in", [20, 40])
def test_ridge_with_long_data_matches_reference(n_in, dtype):
    N, n_out = 2000, 20
    A = np.tanh(rng.normal(size=(N, n_in))).astype(dtype)
    Z = rng.normal(size=(N, n_out)).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype)
    out = []
    for backend in (_fnn_blocks, _reference):
        W, R = np.zeros((n_in, n_out), dtype), np.zeros((N, n_out), dtype)
        res = backend.ridge_update(A, Z, b, 0.1, 1e4 * np.finfo(dtype).eps, W, R,
                                   np.zeros((n_in, n_in), dtype), np.zeros((n_in, n_in), dtype))
        out.append((res, W, R))
    (rc, Wc, Rc), (rr, Wr, Rr) = out
    assert rc[2] == rr[2] == 0
    close(rc[:2], rr[:2], dtype, scale=rr[0])
    close(Wc, Wr, dtype, scale=np.abs(Wr).max() * 100)
    close(Rc, Rr, dtype)


@pytest.mark.parametrize("vb", WIDTHS)
@pytest.mark.parametrize("M,k,n", [(1, 1, 1), (5, 20, 20), (9, 7, 17), (13, 3, 32), (4, 6, 33)])
def test_gathered_product_and_row_norms(vb, M, k, n, dtype):
    A = rng.normal(size=(M, k)).astype(dtype)
    B = rng.normal(size=(k, n)).astype(dtype)
    C0 = rng.normal(size=(3 * M, n)).astype(dtype)
    idx = np.sort(rng.choice(3 * M, M, replace=False)).astype(np.intp)
    C, ssq = np.full((M, n), np.nan, dtype), np.full(M, np.nan)
    took = _fnn_blocks._gather_product(A, B, -1.0, C0, idx, C, ssq, vb)
    if n > MAX_SLOTS * vb // np.dtype(dtype).itemsize:       # wider than the kernel: BLAS's turn
        assert not took
        return
    assert took
    expect = C0[idx].astype(np.float64) - A.astype(np.float64) @ B
    close(C, expect, dtype, scale=k * 4.0)
    close(ssq, np.sum(C.astype(np.float64) ** 2, axis=1), dtype, scale=np.abs(ssq).max())


@pytest.mark.parametrize("vb", WIDTHS)
@pytest.mark.parametrize("n", [1, 3, 8, 20, 41])
def test_trial_rows_match_numpy(vb, n, dtype):
    N = 30
    Z, R, g = (rng.normal(size=(N, n)).astype(dtype) for _ in range(3))
    step = rng.uniform(0.01, 2, N)
    active = np.sort(rng.choice(N, 11, replace=False)).astype(np.intp)
    Z_out, R_out = np.zeros((N, n), dtype), np.zeros((N, n), dtype)
    Zc, rs = np.zeros((11, n), dtype), np.zeros(11)
    _fnn_blocks._trial_rows_check(active, step, Z, R, g, Z_out, R_out, Zc, rs, vb)
    zt = Z[active] - step[active, None].astype(dtype) * g[active]
    rt = R[active] + (zt - Z[active])
    close(Z_out[active], zt, dtype)
    close(R_out[active], rt, dtype)
    close(Zc, zt, dtype)
    close(rs, np.sum(rt.astype(np.float64) ** 2, axis=1), dtype, scale=rs.max())
    untouched = np.setdiff1d(np.arange(N), active)
    assert not Z_out[untouched].any() and not R_out[untouched].any()


@pytest.mark.parametrize("vb", WIDTHS)
@pytest.mark.parametrize("n", [1, 3, 8, 20, 41])
@pytest.mark.parametrize("from_value", [True, False])
def test_z_gradient_rows_match_numpy(vb, n, from_value, dtype):
    m = 13
    R, Z, G = (rng.normal(size=(m, n)).astype(dtype) for _ in range(3))
    D = np.tanh(rng.normal(size=(m, n))).astype(dtype)
    c1, c2 = 0.7, 1.9
    d = 1 - D.astype(np.float64) ** 2 if from_value else D.astype(np.float64)
    expect = c1 * R.astype(np.float64) - c2 * d * G
    rs, zsq, gsq = (np.full(m, np.nan) for _ in range(3))
    _fnn_blocks._zgrad_rows_check(R, Z, D, from_value, c1, c2, G, rs, zsq, gsq, vb)
    close(G, expect, dtype, scale=4.0)
    close(rs, np.sum(R.astype(np.float64) ** 2, axis=1), dtype, scale=rs.max())
    close(zsq, np.sum(Z.astype(np.float64) ** 2, axis=1), dtype, scale=zsq.max())
    close(gsq, np.sum(G.astype(np.float64) ** 2, axis=1), dtype, scale=gsq.max())


@pytest.mark.parametrize("vb", WIDTHS)
@pytest.mark.parametrize("n", [1, 3, 8, 20, 41])
def test_z_target_rows_match_numpy(vb, n, dtype):
    m = 13
    Zn, Rn = (rng.normal(size=(m, n)).astype(dtype) for _ in range(2))
    b = rng.normal(size=n).astype(dtype)
    Zb, zbsq, rnsq = np.full((m, n), np.nan, dtype), np.full(m, np.nan), np.full(m, np.nan)
    _fnn_blocks._target_rows_check(Zn, b, Rn, Zb, zbsq, rnsq, vb)
    np.testing.assert_array_equal(Zb, Zn - b)      # one rounding, as NumPy's subtraction
    close(zbsq, np.sum(Zb.astype(np.float64) ** 2, axis=1), dtype, scale=zbsq.max())
    close(rnsq, np.sum(Rn.astype(np.float64) ** 2, axis=1), dtype, scale=rnsq.max())


@pytest.mark.parametrize("vb", WIDTHS)
@pytest.mark.parametrize("M,n", [(1, 1), (5, 7), (300, 72), (70, 24), (9, 50), (2000, 33)])
def test_gram_upper_triangle(vb, M, n, dtype):
    A = rng.normal(size=(M, n)).astype(dtype)
    C = rng.normal(size=(n, n)).astype(dtype)
    expect = C.astype(np.float64) + A.astype(np.float64).T @ A
    _fnn_blocks._gram_upper(A, C, vb)
    upper = np.triu_indices(n)
    close(C[upper], expect[upper], dtype, scale=M * 4.0)


# the fused backpropagation kernel (gW, gb and the next delta in one pass over row chunks)
def _derivative(S, deriv):
    S = S.astype(np.float64)
    return {0: np.ones_like(S), 1: 1 - S * S, 2: S * (1 - S), 3: (S > 0) * 1.0, 4: S}[deriv]


@pytest.mark.parametrize("vb", WIDTHS)
@pytest.mark.parametrize("M,k,n", [(1, 1, 1), (3, 7, 2), (4, 20, 20), (130, 20, 20),
                                   (57, 9, 17), (1000, 20, 20), (203, 33, 5), (66, 2, 32),
                                   (45, 16, 8)])
@pytest.mark.parametrize("deriv", [0, 1, 2, 3, 4, None], ids=lambda d: f"deriv{d}")
def test_backprop_kernel_matches_numpy(vb, M, k, n, deriv, dtype):
    """deriv None: only the gradients (no next delta)."""
    A = np.tanh(rng.normal(size=(M, k))).astype(dtype)
    delta = rng.normal(size=(M, n)).astype(dtype)
    W = rng.normal(size=(k, n)).astype(dtype)
    S = rng.normal(size=(M, k)).astype(dtype) if deriv == 3 else A
    gW, gb = np.full((k, n), np.nan, dtype), np.full(n, np.nan)
    Dp = np.full((M, k), np.nan, dtype) if deriv is not None else None
    width = MAX_SLOTS * vb // np.dtype(dtype).itemsize
    taken = _fnn_blocks._backprop_product(A, delta, W, S if deriv else None, deriv or 0,
                                          gW, gb, Dp, vb)
    assert taken == (n <= width and (deriv is None or k <= width))
    if not taken:
        return
    A64, d64 = A.astype(np.float64), delta.astype(np.float64)
    close(gW, A64.T @ d64, dtype, scale=M * 1.0)
    close(gb, d64.sum(axis=0), dtype, scale=M * 1.0)
    if deriv is not None:
        close(Dp, (d64 @ W.T.astype(np.float64)) * _derivative(S, deriv), dtype, scale=n * 4.0)


def _network(dtype, N, sizes, seed):
    r = np.random.default_rng(seed)
    X = r.normal(size=(N, sizes[0])).astype(dtype)
    W = [(r.normal(size=(a, c)) / np.sqrt(a)).astype(dtype) for a, c in zip(sizes, sizes[1:])]
    b = [r.normal(size=c).astype(dtype) * 0.1 for c in sizes[1:]]
    return X, W, b


@pytest.mark.parametrize("sizes", [(2, 20, 20, 20, 2), (3, 40, 7, 33, 20, 4), (5, 3)],
                         ids=["narrow", "mixed", "no_hidden"])
@pytest.mark.parametrize("name", list(ACTIVATION_CODES))
def test_backprop_step_matches_reference(sizes, name, dtype):
    """The whole backward pass and update in one call, against the reference (which runs
    backprop_layer and the NumPy update layer by layer); narrow and wide (BLAS) layers."""
    N, kind = 300, ACTIVATION_CODES[name]
    X, W0, b0 = _network(dtype, N, sizes, seed=5)
    A = [np.tanh(rng.normal(size=(N, c))).astype(dtype) for c in sizes[1:-1]]
    if name == "relu":
        A = [np.maximum(a, 0) for a in A]
    P = rng.normal(size=(N, sizes[-1])).astype(dtype)
    out = []
    for backend in (_fnn_blocks, _reference):
        W, b = [w.copy() for w in W0], [v.copy() for v in b0]
        gW, gb = [np.empty_like(w) for w in W], [np.empty_like(v) for v in b]
        work = [np.full(N * max(sizes[1:]), np.nan, dtype) for _ in range(2)]
        backend.backprop_step(P, X, A, W, b, kind, 0.7, gW, gb, work)
        out.append(W + b + gW + gb)
    for c, r in zip(*out):
        assert c.dtype == dtype
        close(c, r, dtype, scale=N * 1.0)


def test_backprop_step_is_deterministic():
    X, W0, b0 = _network(np.float64, 500, (2, 20, 20, 3), seed=9)
    A = [np.tanh(rng.normal(size=(500, 20))) for _ in range(2)]
    P = rng.normal(size=(500, 3))
    res = []
    for _ in range(2):
        W, b = [w.copy() for w in W0], [v.copy() for v in b0]
        gW, gb = [np.empty_like(w) for w in W], [np.empty_like(v) for v in b]
        _fnn_blocks.backprop_step(P, X, A, W, b, 0, 0.1, gW, gb,
                                  [np.empty(500 * 20) for _ in range(2)])
        res.append(W + b)
    for a, c in zip(*res):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("bad", ["short_A", "W_shape", "work", "kind", "dtype"])
def test_backprop_step_validates_before_running(bad):
    X, W, b = _network(np.float64, 50, (2, 6, 3), seed=1)
    A, P = [np.tanh(rng.normal(size=(50, 6)))], rng.normal(size=(50, 3))
    gW, gb = [np.empty_like(w) for w in W], [np.empty_like(v) for v in b]
    work, kind = [np.empty(50 * 6) for _ in range(2)], 0
    if bad == "short_A":
        A = []
    elif bad == "W_shape":
        W = [W[0], np.ones((5, 3))]
    elif bad == "work":
        work = [np.empty(10), np.empty(10)]
    elif bad == "kind":
        kind = 7
    else:
        W = [W[0].astype(np.float32), W[1]]
    before = [w.copy() for w in W] + [v.copy() for v in b]
    with pytest.raises(ValueError):
        _fnn_blocks.backprop_step(P, X, A, W, b, kind, 0.1, gW, gb, work)
    for x, y0 in zip(W + b, before):
        np.testing.assert_array_equal(x, y0)


@pytest.mark.parametrize("sizes", [(2, 20, 20, 20, 2), (3, 40, 7, 33, 20, 4), (5, 3)],
                         ids=["narrow", "mixed", "no_hidden"])
@pytest.mark.parametrize("name", list(ACTIVATION_CODES))
def test_network_forward_matches_reference(sizes, name, dtype):
    N, kind = 700, ACTIVATION_CODES[name]
    X, W, b = _network(dtype, N, sizes, seed=6)
    out = []
    for backend in (_fnn_blocks, _reference):
        A = [np.full((N, c), np.nan, dtype) for c in sizes[1:-1]]
        G = np.full((N, sizes[-1]), np.nan, dtype)
        backend.network_forward(X, W, b, kind, A, G)
        out.append(A + [G])
    for c, r in zip(*out):
        close(c, r, dtype, scale=max(sizes) * 1.0)


@pytest.mark.parametrize("bad", ["short_A", "A_shape", "G_shape", "b_shape"])
def test_network_forward_validates(bad):
    X, W, b = _network(np.float64, 30, (2, 6, 3), seed=2)
    A, G = [np.empty((30, 6))], np.empty((30, 3))
    if bad == "short_A":
        A = []
    elif bad == "A_shape":
        A = [np.empty((30, 5))]
    elif bad == "G_shape":
        G = np.empty((30, 2))
    else:
        b = [b[0], np.ones(4)]
    with pytest.raises(ValueError):
        _fnn_blocks.network_forward(X, W, b, 0, A, G)


@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "shared"])
def test_z_hidden_step_frozen_layer_writes_nothing(per_sample, dtype):
    """A layer whose residuals are zero (R = 0 and R_next = 0, so every row's gradient
    is zero: a layer frozen at its fit) has no row that moves: n_failed == N, no trial,
    the outputs untouched (the caller keeps the current values), and the reference's
    result.  When half the rows can move, the frozen half is copied exactly."""
    N, n, n2 = 2000, 20, 20
    Z, A, R, Rn, W = _z_hidden_problem(N, n, n2, dtype)
    R[:], Rn[:] = 0, 0
    eta = np.ones(N if per_sample else 1)
    outs = [np.full((N, n), 7, dtype) for _ in range(3)] + [np.full((N, n2), 7, dtype)]
    rows = _fnn_blocks.z_hidden_work_rows(N, n, n2, np.dtype(dtype).itemsize, not per_sample)
    work = [np.zeros((rows, c), dtype) for c in (n, n, n2, n2)]
    r = _fnn_blocks.z_hidden_step(Z, A, R, Rn, W, *next_layer(A, Rn, W), 0, 0.7, 0.4, eta,
                                  3.0, 30, 0.5, 1e-4, 2.0, 1e4, *outs, *work)
    assert r == (0.0, 0.0, N, 0)
    for out in outs:
        assert (out == 7).all()
    assert r == _run_z_hidden(_reference, Z, A, R, Rn, W, per_sample, N)[0]
    if not per_sample:
        return
    moving = np.arange(N) % 2 == 0
    R[moving] = (0.3 * rng.normal(size=(moving.sum(), n))).astype(dtype)
    (rc, oc, _), (rr, orf, _) = (_run_z_hidden(b, Z, A, R, Rn, W, True, N)
                                 for b in (_fnn_blocks, _reference))
    assert N // 2 <= rc[2] == rr[2] < N
    Zo, Ao, Ro, Rno = oc
    np.testing.assert_array_equal(Zo[~moving], Z[~moving])
    np.testing.assert_array_equal(Ao[~moving], A[~moving])
    np.testing.assert_array_equal(Ro[~moving], R[~moving])
    np.testing.assert_array_equal(Rno[~moving], Rn[~moving])
    for a, b in zip(oc, orf):
        close(a, b, dtype)


@pytest.mark.parametrize("backend", [_fnn_blocks, _reference], ids=["compiled", "reference"])
def test_rows_at_the_rounding_floor_give_up_before_a_trial(backend, dtype):
    """A row whose residuals are rounding noise (|R_i| ~ 2 eps |Z_i|, R_next_i = 0: what
    a deep network's early layers hold) cannot be improved by any step: it gives up
    without a trial instead of backtracking max_backtracks times.  Rows with real
    residuals (1e-2 |Z_i|) still move."""
    N, n, n2 = 600, 20, 20
    eps = np.finfo(dtype).eps
    Z, A, R, Rn, W = _z_hidden_problem(N, n, n2, dtype)
    noisy = np.arange(N) < N // 2
    sign = np.where(rng.random((N, n)) < 0.5, -1.0, 1.0)
    R[:] = np.where(noisy[:, None], 2 * eps * np.abs(Z) * sign, 1e-2 * Z).astype(dtype)
    Rn[noisy] = 0
    for per_sample in (True, False):
        rows = noisy if per_sample else np.ones(N, bool)
        Rs = R.copy() if per_sample else np.where(rows[:, None], 2 * eps * np.abs(Z) * sign,
                                                  0).astype(dtype)
        Rns = Rn.copy() if per_sample else np.zeros_like(Rn)
        (r, rn, failed, trials), outs, _ = _run_z_hidden(backend, Z, A, Rs, Rns, W,
                                                          per_sample, N)
        if per_sample:
            assert failed == N // 2 and trials >= 1
            np.testing.assert_array_equal(outs[0][noisy], Z[noisy])
            assert (outs[0][~noisy] != Z[~noisy]).any(axis=1).all()
        else:
            assert (failed, trials) == (N, 0)
