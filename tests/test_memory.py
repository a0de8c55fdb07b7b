"""Memory of the LySep state (MATH.md §4 "Memory": the Z_l plus O(1) work arrays of that
size): the candidate buffers are one pool shared by all layers, and sharing them keeps
the safeguard intact (a rejected candidate leaves the model exactly as it was)."""
import math

import numpy as np
import pytest

from lysep._backend import COMPILED, REFERENCE
from lysep._cnn_sweep import CNN_BACKENDS, CNNLySepState
from lysep._sweep import LySepState

from conftest import J_from_scratch, make_problem
from test_cnn import make_cnn


def _shape_counts(arrays):
    counts = {}
    for a in arrays:
        counts[a.shape] = counts.get(a.shape, 0) + 1
    return counts


@pytest.mark.parametrize("backend", [COMPILED, REFERENCE], ids=["compiled", "reference"])
@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "shared"])
def test_candidate_buffers_are_shared_by_the_layers(backend, per_sample):
    """m = 6 hidden layers of one width n: Z and R are 2m arrays of N x n; the activations
    are recomputed, the one a block reads kept; a block writes candidates for at most
    Z, R of one layer and R of the next (3 arrays; a Z block's new activations are
    recomputed, not kept).  The Z steps' work arrays (D, grad, and the next layer's Zb,
    Rc) hold a block of rows with per-sample steps and all N rows with a shared step
    (4 arrays).  So the state's arrays of the auxiliaries' size total at most
    (2m + 4) N n items, (2m + 8) with a shared step; stored activations and per-layer
    candidate sets were (6m + 4)."""
    m, N, n = 6, 1200, 64
    X, y, W, b = make_problem(N=N, hidden=(n,) * m, seed=3)
    st = LySepState(backend, X, y, W, b, "tanh", 0.05, per_sample=per_sample)
    blocked = per_sample and backend is COMPILED
    for _ in range(3):
        st.sweep()
        big = [a for a in st.buffer_arrays() if a.size >= N * n]
        assert sum(a.nbytes for a in big) <= (2 * m + (4 if blocked else 8)) * N * n * X.itemsize
        assert len(st.spares.arrays()) + len(st.A.held()) <= 4
    work = [a for (name, _), a in st.ws._arrays.items() if name in ("D", "grad", "Zb", "Rc")]
    assert 4 <= len(work) <= 6            # D, grad shared by the two Z steps if rows agree
    if blocked:
        assert all(a.shape[0] < N // 2 for a in work)
    # every array is the state's own: no two lists share one (the swaps stayed clean)
    held = st.Z + st.A.held() + st.R + st.spares.arrays()
    assert len({id(a) for a in held}) == len(held)


def test_spares_per_shape_with_mixed_widths():
    """Layers of different widths: at most four spares of any one shape (three
    candidates and one activation), and the candidates of a layer always have that
    layer's shape."""
    X, y, W, b = make_problem(N=150, hidden=(12, 7, 12, 5), seed=4)
    st = LySepState(COMPILED, X, y, W, b, "tanh", 0.05)
    previous = st.J
    for _ in range(4):
        st.sweep()
        assert st.J <= previous
        previous = st.J
        assert [z.shape for z in st.Z] == [a.shape for a in list(st.A)] == [r.shape for r in st.R]
    counts = _shape_counts(st.spares.arrays() + st.A.held())
    assert counts and max(counts.values()) <= 4
    assert st.J == pytest.approx(J_from_scratch(X, y, st.W, st.b, st.Z, "tanh", 0.05),
                                 rel=1e-10)


def _snapshot(st):
    return [a.copy() for a in st.W + st.b + st.Z + list(st.A) + st.R]


def _reject_every_candidate(st):
    """A candidate objective of +inf: what a block whose candidate raised J sees."""
    st.objective = lambda *args, **kwargs: math.inf


@pytest.mark.parametrize("backend", [COMPILED, REFERENCE], ids=["compiled", "reference"])
@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "shared"])
def test_rejected_candidates_leave_the_model_unchanged_bit_for_bit(backend, per_sample):
    X, y, W, b = make_problem(N=90, hidden=(9, 9, 6), seed=7)
    st = LySepState(backend, X, y, W, b, "tanh", 0.05, per_sample=per_sample)
    st.sweep()                                   # move off the forward point: R != 0
    st.sweep()
    before, J, r, wn = _snapshot(st), st.J, list(st.r), list(st.wn)
    _reject_every_candidate(st)
    stats = st.sweep()
    after = _snapshot(st)
    assert len(before) == len(after)
    for a, c in zip(before, after):
        np.testing.assert_array_equal(a, c)
    assert (st.J, st.r, st.wn) == (J, r, wn)
    assert sum(v for k, v in stats.items() if k.startswith("rejected_")) >= 2 * st.m
    # and the next, honest sweep goes on from there
    del st.objective
    st.sweep()
    assert st.J <= J


def test_rejected_cnn_candidates_leave_the_model_unchanged_bit_for_bit():
    """The CNN state uses the same shared candidates (conv Z blocks, kernel blocks)."""
    for cfg in (dict(channels=(3, 4), pools=(2, 1), pool="avg"),
                dict(channels=(3, 2), pools=(2, 2), pool="max")):
        arch, X, y, W, b = make_cnn(**cfg, seed=2)
        st = CNNLySepState(CNN_BACKENDS["compiled"], arch, X, y, W, b, "tanh", 0.3)
        st.sweep()
        V = [v.copy() for v in st.V]
        before, J = _snapshot(st), st.J
        _reject_every_candidate(st)
        st.sweep()
        for a, c in zip(before, _snapshot(st)):
            np.testing.assert_array_equal(a, c)
        for a, c in zip(V, st.V):
            np.testing.assert_array_equal(a, c)
        assert st.J == J
        del st.objective
        previous = st.J
        for _ in range(2):
            st.sweep()
            assert st.J <= previous
            previous = st.J


@pytest.mark.parametrize("backend", [COMPILED, REFERENCE], ids=["compiled", "reference"])
def test_forward_without_keeping_runs_by_row_chunks(backend, monkeypatch):
    """The loss evaluation of fit (nothing kept) holds the logits and two chunk buffers:
    same logits as the pass that keeps every layer, chunks of a few rows plus a
    remainder here."""
    from lysep._sweep import Forward
    X, y, W, b = make_problem(N=103, hidden=(16, 16, 9), seed=8)
    kept = Forward(backend, "tanh", X.dtype)
    G_kept = kept.logits(X, W, b, keep_layers=True).copy()
    monkeypatch.setattr(Forward, "CHUNK_BYTES", 10 * 16 * X.itemsize)   # 10 rows
    fwd = Forward(backend, "tanh", X.dtype)
    G = fwd.logits(X, W, b)
    np.testing.assert_allclose(G, G_kept, rtol=1e-12, atol=1e-14)
    assert fwd.A == [] and fwd.Z == []
    layer_buffers = [a for a in fwd.ws._arrays.values() if a.shape != G.shape]
    assert layer_buffers and all(a.shape[0] == 10 for a in layer_buffers)
    assert len(layer_buffers) <= 2 * 2                 # two slots, two widths at most
    loss, acc = fwd.loss(X, y, W, b)
    loss_kept, acc_kept = kept.loss(X, y, W, b, keep_layers=True)
    assert loss == pytest.approx(loss_kept, rel=1e-12) and acc == acc_kept


@pytest.mark.parametrize("kind", ["fnn", "cnn"])
def test_a_dropped_state_is_freed_without_the_cyclic_collector(kind):
    """No reference cycle through the state's helpers (the activations on demand, the
    candidate slots): its arrays go when the last reference does.  A cycle kept every
    fit's Z, R and spares alive until a collection: 300 small fits grew the RSS 16 MiB."""
    import gc
    import weakref
    if kind == "fnn":
        X, y, W, b = make_problem(N=200, hidden=(8, 7, 6), seed=2)
        st = LySepState(COMPILED, X, y, W, b, "tanh", 0.05)
    else:
        arch, X, y, W, b = make_cnn(pool="avg", seed=2)
        st = CNNLySepState(CNN_BACKENDS["compiled"], arch, X, y, W, b, "tanh", 0.3)
    st.sweep()
    ref, Z0 = weakref.ref(st), weakref.ref(st.Z[0])
    gc.disable()
    try:
        del st
        assert ref() is None and Z0() is None
    finally:
        gc.enable()
