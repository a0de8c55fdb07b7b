"""The hidden Z steps' row blocks and the ridge blocks' stripes on several OpenMP
threads (n_threads): the same results, bit for bit, as on one thread, and no hang in a
child forked after the parent ran them (GNU OpenMP's threads do not survive fork)."""
import multiprocessing

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from lysep import CNNClassifier, FNNClassifier, _activation, _fnn_blocks
from lysep._backend import COMPILED, REFERENCE
from lysep._sweep import GDState, LySepState
from lysep._threads import split_threads, usable_cores

from conftest import assert_same_fit, image_data, make_problem, true_loss


def _sweeps(n_threads, n_sweeps=6, dtype=np.float64, low_memory=False):
    """J after each of a few sweeps of a narrow deep network, and its last Z; checks
    MATH.md's guarantees (J monotone, loss <= C J) at every sweep."""
    X, y, W, b = make_problem(N=1500, d=6, K=3, hidden=(12,) * 5, dtype=dtype, seed=3)
    with threadpool_limits(1):
        state = LySepState(COMPILED, X, y, W, b, "tanh", 0.01, n_threads=n_threads,
                           low_memory=low_memory)
        J, C = [state.J], state.bound_constant()
        for _ in range(n_sweeps):
            state.sweep()
            assert state.J <= J[-1]
            assert true_loss(X, y, state.W, state.b, "tanh") <= C * state.J
            J.append(state.J)
    return J, [z.copy() for z in state.Z]


@pytest.mark.parametrize("low_memory", [False, True], ids=["default", "low_memory"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sweeps_are_the_same_on_two_threads(dtype, low_memory):
    J1, Z1 = _sweeps(1, dtype=dtype, low_memory=low_memory)
    J2, Z2 = _sweeps(2, dtype=dtype, low_memory=low_memory)
    assert J1 == J2
    assert J1[-1] < J1[0]
    for a, b in zip(Z1, Z2):
        np.testing.assert_array_equal(a, b)


def test_state_refuses_no_threads():
    X, y, W, b = make_problem()
    with pytest.raises(ValueError, match="n_threads"):
        LySepState(COMPILED, X, y, W, b, "tanh", 0.01, n_threads=0)


def test_estimators_fit_the_same_on_every_thread_count():
    X, y, _, _ = make_problem(N=1200, d=6, K=3, seed=4)
    fits = [FNNClassifier(hidden_layer_sizes=(12,) * 4, max_iter=8, tol=0, random_state=0,
                          n_threads=t).fit(X, y) for t in (1, 2, -1)]
    assert_same_fit(fits[0], fits[1])
    assert_same_fit(fits[0], fits[2])
    two = fits[1]                # MATH.md's guarantees at every iteration on two threads
    J = np.array(two.surrogate_curve_)
    assert np.all(np.diff(J) <= 0)
    assert np.all(np.array(two.loss_curve_) <= two.bound_constant_ * J)
    assert two._kernel_threads == _fnn_blocks.openmp_threads(2)
    # a CNN whose dense layers hold most of the products: its kernels get the threads
    Xi, yi = image_data(n=600, H=8)
    cnns = [CNNClassifier(conv_channels=(1,), hidden_layer_sizes=(20, 20, 20), max_iter=4,
                          tol=0, random_state=0, n_threads=t).fit(Xi, yi) for t in (1, 2)]
    assert_same_fit(*cnns)
    two = cnns[1]                # batch-wise bound (MATH.md §6) at every iteration
    assert two._kernel_threads == _fnn_blocks.openmp_threads(2)
    assert np.all(np.array(two.batch_loss_curve_)
                  <= two.bound_constant_ * np.array(two.surrogate_curve_))


def test_split_threads_gives_the_budget_to_one_pool():
    w = _fnn_blocks.narrow_width(8)
    omp = _fnn_blocks.openmp_threads(2) == 2
    narrow, wide = w // 2, 4 * w
    deep = [(2, narrow)] + [(narrow, narrow)] * 6
    assert split_threads(2, deep, 8) == ((1, 2) if omp else (2, 1))
    assert split_threads(1, deep, 8) == (1, 1)
    assert split_threads(2, deep, 8, kernels=False) == (2, 1)   # e.g. the CNN's GD
    cores = usable_cores()
    assert split_threads(-1, deep, 8) == ((1, cores) if omp and cores > 1
                                                   else (-1, 1))
    # a wide layer holding most of the products: BLAS gets the threads (-1 leaves it alone)
    mixed = [(2, wide), (wide, narrow)] + [(narrow, narrow)] * 2
    assert split_threads(2, mixed, 8) == (2, 1)
    assert split_threads(-1, mixed, 8) == (-1, 1)
    # the narrow pairs' third of the work is the boundary; conv work counts as BLAS
    half = [(narrow, narrow), (narrow, wide)]     # narrow work n^2, BLAS work 4 w n = 8 n^2
    assert split_threads(2, half, 8) == (2, 1)
    assert split_threads(2, [(narrow, narrow)], 8, 2 * narrow ** 2) == (
        (1, 2) if omp else (2, 1))
    assert split_threads(2, [(narrow, narrow)], 8, 2 * narrow ** 2 + 1) == (2, 1)
    with pytest.raises(ValueError, match="itemsize"):
        _fnn_blocks.narrow_width(2)


def test_the_forward_pass_is_the_same_on_two_threads():
    """network_forward and layer_forward share a narrow layer's row blocks between
    threads (rows are independent): the same values, bit for bit; a wide layer stays
    on one call."""
    X, y, W, b = make_problem(N=1003, d=6, K=3, hidden=(12, 12, 60, 12), seed=5)
    outs = []
    for t in (1, 2, 3):
        A = [np.empty((X.shape[0], w.shape[1])) for w in W[:-1]]
        G = np.empty((X.shape[0], W[-1].shape[1]))
        COMPILED.network_forward(X, W, b, 0, A, G, t)
        Z = np.empty_like(A[0])
        A0 = np.empty_like(A[0])
        COMPILED.layer_forward(X, W[0], b[0], 0, A0, Z, t)
        outs.append((A, G, Z, A0))
    for A, G, Z, A0 in outs[1:]:
        for a, a1 in zip(A + [G, Z, A0], outs[0][0] + list(outs[0][1:])):
            np.testing.assert_array_equal(a, a1)
    with pytest.raises(ValueError, match="n_threads"):
        COMPILED.layer_forward(X, W[0], b[0], 0, A0, None, 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_z_last_step_is_the_same_on_every_thread_count(dtype):
    """The last hidden Z step's blocks of rows on 1, 2 and 3 threads: the same candidate,
    sums, counts and step memory, bit for bit."""
    X, y, W, b = make_problem(N=12001, d=6, K=3, hidden=(12, 20), dtype=dtype, seed=8)
    N, n, K = X.shape[0], 20, 3
    rng = np.random.default_rng(8)
    Z = rng.standard_normal((N, n)).astype(dtype)
    A = np.tanh(Z)
    R = (rng.standard_normal((N, n)) * 0.1).astype(dtype)
    rows = _fnn_blocks.z_last_work_rows(N, n, X.itemsize, False)
    assert rows < N // 2                   # several blocks, so the threads share them
    outs = []
    for t in (1, 2, 3):
        eta = np.ones(N)
        Zo, Ao, Ro = np.empty_like(Z), np.empty_like(Z), np.empty_like(Z)
        res = _fnn_blocks.z_last_step(
            Z, A, R, W[-1], b[-1], y, 0, 0.3, eta, 5.0, 20, 0.5, 1e-4, 2.0, 1e6, Zo, Ao, Ro,
            np.empty((rows, n), dtype), np.empty((rows, n), dtype), np.empty((rows, K), dtype),
            t)
        outs.append((res, eta, Zo, Ao, Ro))
    for res, eta, Zo, Ao, Ro in outs[1:]:
        assert res == outs[0][0]
        for a, c in zip((eta, Zo, Ao, Ro), outs[0][1:]):
            np.testing.assert_array_equal(a, c)
    assert outs[0][0][2] < N                # some rows moved


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("first", [False, True], ids=["hidden", "first_layer"])
def test_low_memory_z_steps_are_the_same_on_every_thread_count(first, dtype):
    """The low-memory Z steps (which recompute R, sigma(Z) and R_next per block) on 1, 2
    and 3 threads: the same candidate, sums, column sums, counts and step memory, bit
    for bit, with some rows kept (a short search from large steps) and some moved."""
    rng = np.random.default_rng(9)
    N, n_prev, n, n2, K = 9001, 7, 20, 11, 3
    kind_prev = -1 if first else 0
    src = rng.standard_normal((N, n_prev)).astype(dtype)
    W = (rng.standard_normal((n_prev, n)) / 3).astype(dtype)
    b, b2, bo = (0.1 * rng.standard_normal(n)).astype(dtype), \
        (0.1 * rng.standard_normal(n2)).astype(dtype), (0.1 * rng.standard_normal(K)).astype(dtype)
    Z = rng.standard_normal((N, n)).astype(dtype)
    W2 = (rng.standard_normal((n, n2)) / 4).astype(dtype)
    Z2 = rng.standard_normal((N, n2)).astype(dtype)
    Wo = rng.standard_normal((n, K)).astype(dtype)
    y = rng.integers(0, K, N).astype(np.int64)
    eta0 = np.exp(rng.uniform(0, 12, N))            # some rows start far too large
    assert _fnn_blocks.z_hidden_work_rows(N, n, n2, Z.itemsize, False) < N // 2
    assert _fnn_blocks.z_last_work_rows(N, n, Z.itemsize, False) < N // 2
    hidden, last = [], []
    for t in (1, 2, 3):
        eta, Zo, col = eta0.copy(), np.empty_like(Z), np.empty((2, n))
        res = _fnn_blocks.z_hidden_step_lean(src, kind_prev, W, b, Z, W2, Z2, b2, 0, 0.7, 1.3,
                                             eta, 10.0, 3, 0.5, 1e-4, 2.0, 1e6, Zo, col, t)
        hidden.append((res, eta, Zo, col))
        eta, Zo, col = eta0.copy(), np.empty_like(Z), np.empty((2, n))
        res = _fnn_blocks.z_last_step_lean(src, kind_prev, W, b, Z, Wo, bo, y, 0, 0.4, eta,
                                           5.0, 3, 0.5, 1e-4, 2.0, 1e6, Zo, col, t)
        last.append((res, eta, Zo, col))
    for outs in (hidden, last):
        assert 0 < outs[0][0][2] < N                # some rows kept, some moved
        for res, *arrays in outs[1:]:
            assert res == outs[0][0]
            for a, c in zip(arrays, outs[0][1:]):
                np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_activation_rows_is_the_same_on_every_thread_count(kind, dtype):
    """The sweep's activation pass in stripes of whole 8-row groups: the values of one
    call, bit for bit, for odd shapes too."""
    rng = np.random.default_rng(kind)
    for N, n in ((3001, 20), (1029, 17), (20000, 3), (5, 7)):
        Z = (rng.standard_normal((N, n)) * 3).astype(dtype)
        one = np.empty_like(Z)
        _activation.activation(Z, kind, one)
        for t in (2, 3):
            A = np.empty_like(Z)
            _fnn_blocks.activation_rows(Z, kind, A, t)
            np.testing.assert_array_equal(A, one)
    with pytest.raises(ValueError, match="n_threads"):
        _fnn_blocks.activation_rows(Z, kind, A, 0)


def test_backprop_step_is_the_same_on_every_thread_count():
    """Narrow layers' rows in up to 8 stripes fixed by N and the widths, their gradient
    sums added in stripe order: the same step, bit for bit, on 1, 2 and 3 threads, and
    the reference's to rounding; a wide layer (60) goes to BLAS as before."""
    X, y, W0, b0 = make_problem(N=3001, d=6, K=3, hidden=(12, 60, 12, 12), seed=7)
    results = []
    for backend, t in ((COMPILED, 1), (COMPILED, 2), (COMPILED, 3), (REFERENCE, 1)):
        W, b = [w.copy() for w in W0], [v.copy() for v in b0]
        state = GDState(backend, X, y, W, b, "tanh", 0.5, n_threads=t)
        state.forward()
        state.update()
        results.append(W + b + state.gW + state.gb)
    for other in results[1:3]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)
    for a, c in zip(results[0], results[3]):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-15)


def test_gd_fits_the_same_on_two_threads():
    X, y, _, _ = make_problem(N=900, d=6, K=3, seed=6)
    fits = [FNNClassifier(hidden_layer_sizes=(12,) * 4, solver="gd", max_iter=15, tol=0,
                          random_state=0, n_threads=t).fit(X, y) for t in (1, 2)]
    assert_same_fit(*fits)
    assert fits[1]._kernel_threads == _fnn_blocks.openmp_threads(2)
    np.testing.assert_array_equal(fits[0].predict_proba(X), fits[1].predict_proba(X))


@pytest.mark.parametrize("hidden, pool", [((12,) * 4, "kernels"), ((300, 12, 12), "blas")])
def test_a_fit_runs_one_thread_pool(hidden, pool):
    """n_threads=2 gives both threads to lysep's kernels or to BLAS, never to both: the
    BLAS limit seen during the fit and the state's kernel threads."""
    if _fnn_blocks.openmp_threads(2) < 2:
        pytest.skip("lysep was built without OpenMP")
    X, y, _, _ = make_problem(N=600, d=6, K=3, seed=4)
    seen = []

    def callback(info):
        seen.append({lib["num_threads"] for lib in threadpool_info()
                     if lib["user_api"] == "blas"})
    clf = FNNClassifier(hidden_layer_sizes=hidden, max_iter=2, tol=0, random_state=0,
                        n_threads=2, callback=callback).fit(X, y)
    blas, kernel = (1, 2) if pool == "kernels" else (2, 1)
    assert seen and all(s == {blas} for s in seen)
    assert clf._state.n_threads == kernel


def _child():
    """In a forked child: the threads a kernel would get, and the sweeps on two."""
    return _fnn_blocks.openmp_threads(2), _sweeps(2, n_sweeps=3)[0]


def test_a_child_forked_after_parallel_steps_finishes():
    J, _ = _sweeps(2, n_sweeps=3)       # this process has now run parallel regions
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        threads, J_child = pool.apply_async(_child).get(timeout=120)
    assert J_child == J
    assert threads == 1                  # the child stays on one thread
