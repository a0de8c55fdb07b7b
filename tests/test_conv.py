"""Tests for the convolution/pooling kernels ``lysep._conv``.

Checks, for float32 and float64:
* im2col / col2im, the linear part of conv_forward / conv_transpose and both
  poolings against explicit dense matrices built entry by entry from the
  index formulas (tiny sizes, strides 1 and 2, pads 0 and 1);
* adjoint identities <Cx, y> = <x, C^T y> on random data;
* compiled kernels against the NumPy reference ``lysep._conv_reference``;
* independence of the results from the chunk size;
* conv_gram against Phi^T Phi and Phi^T Zb from the full patch matrix;
* the bound ||C u|| <= ceil(k/s) ||Kmat||_F ||u||;
* overwrite / accumulate semantics, and ValueErrors naming the bad argument.
"""

import math

import numpy as np
import pytest

from lysep import _conv as conv
from lysep import _conv_reference as ref

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
IMPLS = [pytest.param(conv, id="compiled"), pytest.param(ref, id="reference")]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def out_size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def assert_close(a, b, dtype, scale=0.0):
    """||a - b|| <= rtol(dtype) * (||b|| + scale), with a dtype-aware rtol."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.linalg.norm(a - b)
    bound = RTOL[dtype] * (np.linalg.norm(b) + scale) + 1e-300
    assert err <= bound, f"error {err:.3e} > {bound:.3e}"


def assert_inner_equal(lhs, rhs, scale, dtype):
    assert abs(lhs - rhs) <= RTOL[dtype] * scale + 1e-300, (lhs, rhs, scale)


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def dense_im2col(N, H, W, C, k, s, p):
    """Matrix M with Phi.ravel() = M @ U.ravel(), built from the index formula."""
    Ho, Wo = out_size(H, k, s, p), out_size(W, k, s, p)
    KK = k * k * C
    M = np.zeros((N * Ho * Wo * KK, N * H * W * C))
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                row = (n * Ho + i) * Wo + j
                for di in range(k):
                    for dj in range(k):
                        ii, jj = i * s - p + di, j * s - p + dj
                        if 0 <= ii < H and 0 <= jj < W:
                            for c in range(C):
                                M[row * KK + (di * k + dj) * C + c,
                                  ((n * H + ii) * W + jj) * C + c] = 1.0
    return M


def dense_conv(Kmat, N, H, W, C, k, s, p):
    """Matrix A with Z.ravel() = A @ U.ravel() for the linear part of the conv."""
    Ho, Wo = out_size(H, k, s, p), out_size(W, k, s, p)
    Co = Kmat.shape[1]
    A = np.zeros((N * Ho * Wo * Co, N * H * W * C))
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                for di in range(k):
                    for dj in range(k):
                        ii, jj = i * s - p + di, j * s - p + dj
                        if not (0 <= ii < H and 0 <= jj < W):
                            continue
                        for c in range(C):
                            for co in range(Co):
                                A[((n * Ho + i) * Wo + j) * Co + co,
                                  ((n * H + ii) * W + jj) * C + c] += \
                                    Kmat[(di * k + dj) * C + c, co]
    return A


def dense_avgpool(N, H, W, C, q):
    Ho, Wo = H // q, W // q
    A = np.zeros((N * Ho * Wo * C, N * H * W * C))
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                for c in range(C):
                    for di in range(q):
                        for dj in range(q):
                            A[((n * Ho + i) * Wo + j) * C + c,
                              ((n * H + i * q + di) * W + j * q + dj) * C + c] = 1.0 / q**2
    return A


def dense_maxpool_selection(argmax, H, W, q):
    """0/1 matrix selecting, for each output, the input at its (fixed) argmax."""
    N, Ho, Wo, C = argmax.shape
    S = np.zeros((N * Ho * Wo * C, N * H * W * C))
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                for c in range(C):
                    a = int(argmax[n, i, j, c])
                    S[((n * Ho + i) * Wo + j) * C + c,
                      ((n * H + i * q + a // q) * W + j * q + a % q) * C + c] = 1.0
    return S


def call_im2col(impl, U, k, s, p, n_start=0, n_stop=None):
    N, H, W, C = U.shape
    nb = (N if n_stop is None else n_stop) - n_start
    Phi = np.full((nb * out_size(H, k, s, p) * out_size(W, k, s, p), k * k * C), np.nan, U.dtype)
    impl.im2col(U, k, s, p, Phi, n_start, n_stop)
    return Phi


def call_conv_forward(impl, U, Kmat, bias, k, s, p, chunk):
    N, H, W, _ = U.shape
    Z = np.full((N, out_size(H, k, s, p), out_size(W, k, s, p), Kmat.shape[1]), np.nan, U.dtype)
    impl.conv_forward(U, Kmat, bias, k, s, p, Z, chunk)
    return Z


def call_conv_transpose(impl, dZ, Kmat, k, s, p, shape, chunk):
    dU = np.full(shape, np.nan, dZ.dtype)
    impl.conv_transpose(dZ, Kmat, k, s, p, dU, chunk)
    return dU


def call_conv_gram(impl, U, Zb, k, s, p, chunk):
    KK = k * k * U.shape[3]
    G = np.full((KK, KK), np.nan, U.dtype)
    R = np.full((KK, Zb.shape[3]), np.nan, U.dtype)
    impl.conv_gram(U, Zb, k, s, p, G, R, chunk)
    return G, R


TINY = [(H, W, s, p) for H, W in [(5, 5), (6, 6), (5, 6)] for s in (1, 2) for p in (0, 1)]


# ---------------------------------------------------------------------------
# explicit dense matrices
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,W,s,p", TINY)
def test_im2col_col2im_dense(dtype, H, W, s, p):
    rng = np.random.default_rng(1)
    N, C, k = 2, 2, 3
    M = dense_im2col(N, H, W, C, k, s, p)
    U = rand(rng, (N, H, W, C), dtype)
    Phi = call_im2col(conv, U, k, s, p)
    # im2col only copies: the result is exact in both dtypes
    np.testing.assert_array_equal(Phi.ravel(), (M @ U.ravel().astype(np.float64)).astype(dtype))
    dPhi = rand(rng, Phi.shape, dtype)
    dU = np.zeros_like(U)
    conv.col2im(dPhi, k, s, p, dU)
    assert_close(dU.ravel(), M.T @ dPhi.ravel().astype(np.float64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,W,s,p", TINY)
def test_conv_dense(dtype, H, W, s, p):
    rng = np.random.default_rng(2)
    N, C, Co, k = 2, 2, 3, 3
    Kmat = rand(rng, (k * k * C, Co), dtype)
    A = dense_conv(Kmat.astype(np.float64), N, H, W, C, k, s, p)
    U = rand(rng, (N, H, W, C), dtype)
    u64 = U.ravel().astype(np.float64)
    absA = np.abs(A) @ np.abs(u64)          # scale of the summed terms
    Z = call_conv_forward(conv, U, Kmat, np.zeros(Co, dtype), k, s, p, chunk=1)
    assert_close(Z.ravel(), A @ u64, dtype, scale=np.linalg.norm(absA))
    bias = rand(rng, Co, dtype)
    Zb = call_conv_forward(conv, U, Kmat, bias, k, s, p, chunk=N)
    assert_close((Zb - bias).ravel(), A @ u64, dtype, scale=np.linalg.norm(absA) + np.linalg.norm(Zb))
    dZ = rand(rng, Z.shape, dtype)
    dU = call_conv_transpose(conv, dZ, Kmat, k, s, p, U.shape, chunk=1)
    d64 = dZ.ravel().astype(np.float64)
    assert_close(dU.ravel(), A.T @ d64, dtype, scale=np.linalg.norm(np.abs(A.T) @ np.abs(d64)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,W,q", [(4, 6, 2), (6, 6, 3), (5, 5, 1), (6, 4, 2)])
def test_pooling_dense(dtype, H, W, q):
    rng = np.random.default_rng(3)
    N, C = 2, 3
    Ho, Wo = H // q, W // q
    U = rand(rng, (N, H, W, C), dtype)
    u64 = U.ravel().astype(np.float64)
    A = dense_avgpool(N, H, W, C, q)
    V = np.full((N, Ho, Wo, C), np.nan, dtype)
    conv.avgpool(U, q, V)
    assert_close(V.ravel(), A @ u64, dtype, scale=np.linalg.norm(A @ np.abs(u64)))
    dV = rand(rng, V.shape, dtype)
    dU = np.full(U.shape, np.nan, dtype)
    conv.avgpool_adjoint(dV, q, dU)
    assert_close(dU.ravel(), A.T @ dV.ravel().astype(np.float64), dtype)

    am = np.full((N, Ho, Wo, C), -7, np.int64)
    conv.maxpool(U, q, V, am)
    assert am.min() >= 0 and am.max() < q * q
    S = dense_maxpool_selection(am, H, W, q)
    np.testing.assert_array_equal(V.ravel(), (S @ u64).astype(dtype))
    # the selected entry is the window maximum (brute force)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                for c in range(C):
                    assert V[n, i, j, c] == U[n, i * q:(i + 1) * q, j * q:(j + 1) * q, c].max()
    conv.maxpool_adjoint(dV, am, dU)
    np.testing.assert_array_equal(dU.ravel(), (S.T @ dV.ravel().astype(np.float64)).astype(dtype))


# ---------------------------------------------------------------------------
# adjoint identities <Cx, y> = <x, C^T y>
# ---------------------------------------------------------------------------

GEOMS = [(7, 9, 3, 1, 0), (7, 9, 3, 2, 1), (8, 8, 3, 3, 2), (6, 7, 1, 1, 0),
         (9, 6, 5, 2, 2), (6, 6, 2, 2, 0), (5, 8, 4, 1, 3)]   # (H, W, k, s, p)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,W,k,s,p", GEOMS)
def test_adjoint_im2col(impl, dtype, H, W, k, s, p):
    rng = np.random.default_rng(4)
    N, C = 4, 3
    U = rand(rng, (N, H, W, C), dtype)
    for a, b in [(0, N), (1, 3), (2, 2)]:
        Phi = call_im2col(impl, U, k, s, p, a, b)
        Y = rand(rng, Phi.shape, dtype)
        dU = np.zeros_like(U)
        impl.col2im(Y, k, s, p, dU, a, b)
        lhs = np.vdot(Phi.astype(np.float64), Y.astype(np.float64))
        rhs = np.vdot(U.astype(np.float64), dU.astype(np.float64))
        assert_inner_equal(lhs, rhs, np.abs(Phi).ravel() @ np.abs(Y).ravel() * k * k, dtype)
        # samples outside [a, b) are untouched
        assert not dU[:a].any() and not dU[b:].any()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,W,k,s,p", GEOMS)
def test_adjoint_conv(impl, dtype, H, W, k, s, p):
    rng = np.random.default_rng(5)
    N, C, Co = 3, 2, 4
    U = rand(rng, (N, H, W, C), dtype)
    Kmat = rand(rng, (k * k * C, Co), dtype)
    Z = call_conv_forward(impl, U, Kmat, np.zeros(Co, dtype), k, s, p, chunk=2)
    Y = rand(rng, Z.shape, dtype)
    dU = call_conv_transpose(impl, Y, Kmat, k, s, p, U.shape, chunk=2)
    lhs = np.vdot(Z.astype(np.float64), Y.astype(np.float64))
    rhs = np.vdot(U.astype(np.float64), dU.astype(np.float64))
    scale = np.linalg.norm(Z) * np.linalg.norm(Y) + np.linalg.norm(U) * np.linalg.norm(dU)
    assert_inner_equal(lhs, rhs, scale * k * k, dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,W,q", [(6, 8, 2), (9, 6, 3), (4, 4, 4), (3, 5, 1)])
def test_adjoint_pooling(impl, dtype, H, W, q):
    rng = np.random.default_rng(6)
    N, C = 3, 5
    U = rand(rng, (N, H, W, C), dtype)
    shape = (N, H // q, W // q, C)
    Y = rand(rng, shape, dtype)
    u, y = U.astype(np.float64), Y.astype(np.float64)
    V = np.empty(shape, dtype)
    dU = np.empty_like(U)
    impl.avgpool(U, q, V)
    impl.avgpool_adjoint(Y, q, dU)
    assert_inner_equal(np.vdot(V.astype(np.float64), y), np.vdot(u, dU.astype(np.float64)),
                       np.linalg.norm(u) * np.linalg.norm(y) * q, dtype)
    am = np.empty(shape, np.int64)
    impl.maxpool(U, q, V, am)
    impl.maxpool_adjoint(Y, am, dU)
    # at fixed argmax, maxpool is linear: exact equality of the two sums' terms
    assert_inner_equal(np.vdot(V.astype(np.float64), y), np.vdot(u, dU.astype(np.float64)),
                       np.abs(V).ravel() @ np.abs(Y).ravel(), dtype)


# ---------------------------------------------------------------------------
# compiled vs reference, chunk independence, conv_gram
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,W,k,s,p", GEOMS)
def test_compiled_vs_reference(dtype, H, W, k, s, p):
    rng = np.random.default_rng(7)
    N, C, Co = 5, 3, 4
    U = rand(rng, (N, H, W, C), dtype)
    Kmat = rand(rng, (k * k * C, Co), dtype)
    bias = rand(rng, Co, dtype)

    np.testing.assert_array_equal(call_im2col(conv, U, k, s, p), call_im2col(ref, U, k, s, p))
    np.testing.assert_array_equal(call_im2col(conv, U, k, s, p, 1, 4),
                                  call_im2col(ref, U, k, s, p, 1, 4))

    Phi = call_im2col(ref, U, k, s, p)
    dPhi = rand(rng, Phi.shape, dtype)
    dU0 = rand(rng, U.shape, dtype)
    a, b = dU0.copy(), dU0.copy()
    conv.col2im(dPhi, k, s, p, a)
    ref.col2im(dPhi, k, s, p, b)
    assert_close(a, b, dtype)

    Z = call_conv_forward(conv, U, Kmat, bias, k, s, p, chunk=2)
    assert_close(Z, call_conv_forward(ref, U, Kmat, bias, k, s, p, chunk=2), dtype)
    dZ = rand(rng, Z.shape, dtype)
    assert_close(call_conv_transpose(conv, dZ, Kmat, k, s, p, U.shape, 2),
                 call_conv_transpose(ref, dZ, Kmat, k, s, p, U.shape, 2), dtype)
    Gc, Rc = call_conv_gram(conv, U, dZ, k, s, p, 2)
    Gr, Rr = call_conv_gram(ref, U, dZ, k, s, p, 2)
    assert_close(Gc, Gr, dtype)
    assert_close(Rc, Rr, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q", [1, 2, 3])
def test_pooling_compiled_vs_reference(dtype, q):
    rng = np.random.default_rng(8)
    N, H, W, C = 3, 6, 12, 4
    U = rand(rng, (N, H, W, C), dtype)
    shape = (N, H // q, W // q, C)
    Vc, Vr = np.empty(shape, dtype), np.empty(shape, dtype)
    conv.avgpool(U, q, Vc)
    ref.avgpool(U, q, Vr)
    assert_close(Vc, Vr, dtype)
    dV = rand(rng, shape, dtype)
    dc, dr = np.empty_like(U), np.empty_like(U)
    conv.avgpool_adjoint(dV, q, dc)
    ref.avgpool_adjoint(dV, q, dr)
    assert_close(dc, dr, dtype)
    # small integers: many ties, so this also pins the tie rule (first max)
    for X in (U, rng.integers(-2, 3, U.shape).astype(dtype), np.zeros_like(U)):
        ac, ar = np.empty(shape, np.int64), np.empty(shape, np.int64)
        conv.maxpool(X, q, Vc, ac)
        ref.maxpool(X, q, Vr, ar)
        np.testing.assert_array_equal(Vc, Vr)
        np.testing.assert_array_equal(ac, ar)
        conv.maxpool_adjoint(dV, ac, dc)
        ref.maxpool_adjoint(dV, ar, dr)
        np.testing.assert_array_equal(dc, dr)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,W,k,s,p", [(7, 9, 3, 1, 1), (8, 8, 3, 2, 0), (6, 6, 5, 3, 2)])
def test_chunk_independence(dtype, H, W, k, s, p):
    rng = np.random.default_rng(9)
    N, C, Co = 5, 3, 4
    U = rand(rng, (N, H, W, C), dtype)
    Kmat = rand(rng, (k * k * C, Co), dtype)
    bias = rand(rng, Co, dtype)
    chunks = [1, 3, N, 4 * N]
    Zs = [call_conv_forward(conv, U, Kmat, bias, k, s, p, c) for c in chunks]
    dZ = rand(rng, Zs[0].shape, dtype)
    dUs = [call_conv_transpose(conv, dZ, Kmat, k, s, p, U.shape, c) for c in chunks]
    Gs = [call_conv_gram(conv, U, dZ, k, s, p, c) for c in chunks]
    for i in range(1, len(chunks)):
        # per-sample computations: identical whatever the chunk
        np.testing.assert_allclose(Zs[i], Zs[0], rtol=RTOL[dtype], atol=RTOL[dtype] * abs(Zs[0]).max())
        np.testing.assert_allclose(dUs[i], dUs[0], rtol=RTOL[dtype], atol=RTOL[dtype] * abs(dUs[0]).max())
        # sums over chunks: equal up to summation order
        assert_close(Gs[i][0], Gs[0][0], dtype)
        assert_close(Gs[i][1], Gs[0][1], dtype)
    # im2col by pieces == im2col of all; col2im by pieces accumulates to the whole
    full = call_im2col(conv, U, k, s, p)
    P = out_size(H, k, s, p) * out_size(W, k, s, p)
    pieces = [call_im2col(conv, U, k, s, p, a, min(a + 3, N)) for a in range(0, N, 3)]
    np.testing.assert_array_equal(np.concatenate(pieces), full)
    Y = rand(rng, full.shape, dtype)
    whole, parts = np.zeros_like(U), np.zeros_like(U)
    conv.col2im(Y, k, s, p, whole)
    for a in range(0, N, 2):
        b = min(a + 2, N)
        conv.col2im(Y[a * P:b * P], k, s, p, parts, a, b)
    np.testing.assert_array_equal(parts, whole)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,W,k,s,p", GEOMS)
@pytest.mark.parametrize("chunk", [1, 3, 6])
def test_conv_gram_matches_full_patch_matrix(dtype, H, W, k, s, p, chunk):
    rng = np.random.default_rng(10)
    N, C, Co = 6, 2, 3
    U = rand(rng, (N, H, W, C), dtype)
    Zb = rand(rng, (N, out_size(H, k, s, p), out_size(W, k, s, p), Co), dtype)
    G, R = call_conv_gram(conv, U, Zb, k, s, p, chunk)
    Phi = call_im2col(ref, U, k, s, p).astype(np.float64)
    assert_close(G, Phi.T @ Phi, dtype)
    assert_close(R, Phi.T @ Zb.reshape(-1, Co).astype(np.float64), dtype,
                 scale=np.linalg.norm(np.abs(Phi.T) @ np.abs(Zb.reshape(-1, Co))))
    np.testing.assert_array_equal(G, G.T)          # symmetrised exactly


# ---------------------------------------------------------------------------
# the norm bound ||C u|| <= ceil(k/s) ||Kmat||_F ||u||
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_bound(dtype):
    rng = np.random.default_rng(11)
    worst = 0.0
    for case in range(300):
        N = int(rng.integers(1, 4))
        H, W = (int(x) for x in rng.integers(3, 11, 2))
        C, Co = (int(x) for x in rng.integers(1, 5, 2))
        k = int(rng.integers(1, min(H, W) + 1))
        s = int(rng.integers(1, 4))
        p = int(rng.integers(0, k))
        if case % 3 == 0:      # near-extremal: nonnegative, smooth input and kernel
            U = (1.0 + 0.1 * rng.random((N, H, W, C))).astype(dtype)
            Kmat = (1.0 + 0.1 * rng.random((k * k * C, Co))).astype(dtype)
        else:
            U = rand(rng, (N, H, W, C), dtype)
            Kmat = rand(rng, (k * k * C, Co), dtype)
        Z = call_conv_forward(conv, U, Kmat, np.zeros(Co, dtype), k, s, p, chunk=2)
        lhs = np.linalg.norm(Z.astype(np.float64))
        rhs = math.ceil(k / s) * np.linalg.norm(Kmat.astype(np.float64)) \
            * np.linalg.norm(U.astype(np.float64))
        assert lhs <= rhs * (1 + 10 * RTOL[dtype]), (case, lhs, rhs)
        worst = max(worst, lhs / rhs)
    assert worst > 0.2          # the random cases do exercise the bound


# ---------------------------------------------------------------------------
# write semantics, read-only inputs, bad arguments
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_col2im_accumulates(impl):
    rng = np.random.default_rng(12)
    U = rng.standard_normal((2, 5, 5, 2))
    Phi = call_im2col(impl, U, 3, 1, 1)
    base = rng.standard_normal(U.shape)
    zero_start, acc = np.zeros_like(U), base.copy()
    impl.col2im(Phi, 3, 1, 1, zero_start)
    impl.col2im(Phi, 3, 1, 1, acc)
    np.testing.assert_allclose(acc, base + zero_start, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_only_inputs(dtype):
    rng = np.random.default_rng(13)
    U = rand(rng, (2, 6, 6, 2), dtype)
    Kmat = rand(rng, (18, 3), dtype)
    bias = rand(rng, 3, dtype)
    for a in (U, Kmat, bias):
        a.setflags(write=False)
    Z = call_conv_forward(conv, U, Kmat, bias, 3, 1, 1, 1)
    Z.setflags(write=False)
    call_conv_transpose(conv, Z, Kmat, 3, 1, 1, U.shape, 1)
    call_conv_gram(conv, U, Z, 3, 1, 1, 1)
    V = np.empty((2, 3, 3, 2), dtype)
    am = np.empty((2, 3, 3, 2), np.int64)
    conv.avgpool(U, 2, V)
    conv.maxpool(U, 2, V, am)
    am.setflags(write=False)
    conv.maxpool_adjoint(V, am, np.empty_like(U))


def test_mixed_dtypes_rejected():
    U = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises((TypeError, ValueError)):
        conv.im2col(U, 3, 1, 0, np.zeros((4, 9), np.float64))


def _bad_cases():
    f8 = np.float64
    U = np.zeros((2, 6, 6, 2), f8)          # k=3, s=1, p=0 -> Ho = Wo = 4
    K = np.zeros((18, 3), f8)
    b = np.zeros(3, f8)
    Z = np.zeros((2, 4, 4, 3), f8)
    Phi = np.zeros((32, 18), f8)
    G, R = np.zeros((18, 18), f8), np.zeros((18, 3), f8)
    V, am = np.zeros((2, 3, 3, 2), f8), np.zeros((2, 3, 3, 2), np.int64)
    return [
        ("Phi_out", lambda m: m.im2col(U, 3, 1, 0, np.zeros((31, 18), f8))),
        ("Phi_out", lambda m: m.im2col(U, 3, 1, 0, np.zeros((32, 17), f8))),
        ("Phi_out", lambda m: m.im2col(U, 3, 1, 0, Phi, 0, 1)),
        ("n_stop", lambda m: m.im2col(U, 3, 1, 0, Phi, 0, 3)),
        ("n_start", lambda m: m.im2col(U, 3, 1, 0, Phi, 2, 1)),
        ("k", lambda m: m.im2col(U, 0, 1, 0, Phi)),
        ("stride", lambda m: m.im2col(U, 3, 0, 0, Phi)),
        ("pad", lambda m: m.im2col(U, 3, 1, -1, Phi)),
        ("U height", lambda m: m.im2col(U, 9, 1, 0, Phi)),
        ("dPhi", lambda m: m.col2im(np.zeros((32, 9), f8), 3, 1, 0, U.copy())),
        ("dU_out", lambda m: m.col2im(Phi, 7, 1, 0, U.copy())),
        ("Kmat", lambda m: m.conv_forward(U, np.zeros((17, 3), f8), b, 3, 1, 0, Z.copy(), 1)),
        ("bias", lambda m: m.conv_forward(U, K, np.zeros(4, f8), 3, 1, 0, Z.copy(), 1)),
        ("Z_out", lambda m: m.conv_forward(U, K, b, 3, 1, 0, np.zeros((2, 4, 4, 2), f8), 1)),
        ("Z_out", lambda m: m.conv_forward(U, K, b, 3, 2, 0, Z.copy(), 1)),
        ("chunk", lambda m: m.conv_forward(U, K, b, 3, 1, 0, Z.copy(), 0)),
        ("chunk", lambda m: m.conv_gram(U, Z, 3, 1, 0, G, R, -1)),
        ("dZ", lambda m: m.conv_transpose(np.zeros((2, 4, 3, 3), f8), K, 3, 1, 0, U.copy(), 1)),
        ("Kmat", lambda m: m.conv_transpose(Z, np.zeros((18, 2), f8), 3, 1, 0, U.copy(), 1)),
        ("Zb", lambda m: m.conv_gram(U, np.zeros((1, 4, 4, 3), f8), 3, 1, 0, G, R, 1)),
        ("G_out", lambda m: m.conv_gram(U, Z, 3, 1, 0, np.zeros((18, 17), f8), R, 1)),
        ("RHS_out", lambda m: m.conv_gram(U, Z, 3, 1, 0, G, np.zeros((18, 2), f8), 1)),
        ("U", lambda m: m.avgpool(U, 4, np.zeros((2, 1, 1, 2), f8))),
        ("V_out", lambda m: m.avgpool(U, 2, np.zeros((2, 3, 2, 2), f8))),
        ("dV", lambda m: m.avgpool_adjoint(np.zeros((2, 3, 3, 1), f8), 2, U.copy())),
        ("dU_out", lambda m: m.avgpool_adjoint(V, 4, U.copy())),
        ("U", lambda m: m.maxpool(U, 5, V.copy(), am.copy())),
        ("V_out", lambda m: m.maxpool(U, 2, np.zeros((2, 2, 3, 2), f8), am.copy())),
        ("argmax_out", lambda m: m.maxpool(U, 2, V.copy(), np.zeros((2, 3, 3, 1), np.int64))),
        ("dV", lambda m: m.maxpool_adjoint(np.zeros((1, 3, 3, 2), f8), am, U.copy())),
        ("argmax", lambda m: m.maxpool_adjoint(V, np.zeros((2, 3, 3, 1), np.int64), U.copy())),
        ("argmax", lambda m: m.maxpool_adjoint(V, np.full((2, 3, 3, 2), 4, np.int64), U.copy())),
        ("dU_out", lambda m: m.maxpool_adjoint(V, am, np.zeros((2, 7, 6, 2), f8))),
    ]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_shapes_raise(impl, case):
    name, call = _bad_cases()[case]
    with pytest.raises(ValueError, match=rf"(^|\W){name}\W"):
        call(impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch_and_zero_channels(impl):
    K, b = np.ones((18, 3)), np.ones(3)
    U0, Z0 = np.zeros((0, 5, 5, 2)), np.zeros((0, 5, 5, 3))
    impl.conv_forward(U0, K, b, 3, 1, 1, Z0, 1)
    impl.conv_transpose(Z0, K, 3, 1, 1, np.zeros_like(U0), 1)
    G, R = call_conv_gram(impl, U0, Z0, 3, 1, 1, 1)
    assert not G.any() and not R.any()                 # empty sums are zero
    U = np.ones((2, 5, 5, 2))
    Z = np.full((2, 5, 5, 0), np.nan)
    impl.conv_forward(U, np.ones((18, 0)), np.ones(0), 3, 1, 1, Z, 1)
    dU = call_conv_transpose(impl, Z, np.ones((18, 0)), 3, 1, 1, U.shape, 1)
    assert not dU.any()
    G, R = call_conv_gram(impl, U, Z, 3, 1, 1, 1)
    np.testing.assert_array_equal(G, call_conv_gram(ref, U, np.zeros((2, 5, 5, 1)), 3, 1, 1, 1)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [8, 16])              # k*k*C = 72 (narrow Gram kernel), 144 (syrk)
def test_conv_gram_with_wide_patches(dtype, C):
    rng = np.random.default_rng(12)
    N, H, W, k, s, p, Co = 5, 9, 7, 3, 1, 1, 4
    U = rand(rng, (N, H, W, C), dtype)
    Zb = rand(rng, (N, out_size(H, k, s, p), out_size(W, k, s, p), Co), dtype)
    G, R = call_conv_gram(conv, U, Zb, k, s, p, 2)
    Phi = call_im2col(ref, U, k, s, p).astype(np.float64)
    assert_close(G, Phi.T @ Phi, dtype)
    assert_close(R, Phi.T @ Zb.reshape(-1, Co).astype(np.float64), dtype,
                 scale=np.linalg.norm(np.abs(Phi.T) @ np.abs(Zb.reshape(-1, Co))))
    np.testing.assert_array_equal(G, G.T)
