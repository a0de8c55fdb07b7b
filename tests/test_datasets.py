"""Tests for lysep.datasets: toy circle, Allen--Cahn interfaces, IDX readers."""

import gzip
import math
import os
import struct

import numpy as np
import pytest

from lysep import datasets
from lysep.datasets import (
    ALLEN_CAHN_DT,
    ALLEN_CAHN_EPSILON,
    ALLEN_CAHN_GRID,
    INTERFACE_TIMES,
    allen_cahn_energy,
    allen_cahn_field,
    allen_cahn_grid,
    allen_cahn_initial,
    allen_cahn_interface,
    allen_cahn_solve,
    circle,
    load_fashion_mnist,
    load_idx,
    load_mnist,
    periodic_interpolate,
    read_idx,
)


# ---------------------------------------------------------------------------
# circle
# ---------------------------------------------------------------------------


def test_circle_shapes_and_dtypes():
    X, y = circle(50, random_state=0)
    assert X.shape == (50, 2) and X.dtype == np.float64
    assert y.shape == (50,) and y.dtype == np.int64
    assert np.all(np.abs(X) <= 1.0)
    assert set(np.unique(y)) <= {0, 1}
    X32, y32 = circle(50, random_state=0, dtype=np.float32)
    assert X32.dtype == np.float32 and y32.dtype == np.int64


def test_circle_labels_follow_radius():
    X, y = circle(2000, random_state=1)
    r = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_array_equal(y, (r < math.sqrt(2.0 / math.pi)).astype(np.int64))


def test_circle_balance():
    # pi r^2 = 2 is half of the square's area 4, so P(y = 1) = 1/2 exactly.
    # With n = 100000 the binomial standard deviation of the fraction is
    # sqrt(0.25 / n) = 0.00158; 0.008 is 5 standard deviations (a false
    # failure probability below 1e-6, and the seed is fixed anyway).
    n = 100_000
    _, y = circle(n, random_state=123)
    assert abs(y.mean() - 0.5) < 5 * math.sqrt(0.25 / n)


def test_circle_determinism():
    X1, y1 = circle(100, random_state=7)
    X2, y2 = circle(100, random_state=7)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    X3, _ = circle(100, random_state=np.random.default_rng(7))
    np.testing.assert_array_equal(X1, X3)
    X4, _ = circle(100, random_state=8)
    assert not np.array_equal(X1, X4)
    rng = np.random.default_rng(0)
    Xa, _ = circle(10, random_state=rng)
    Xb, _ = circle(10, random_state=rng)  # the generator advances
    assert not np.array_equal(Xa, Xb)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n_samples=0), ValueError, "n_samples"),
        (dict(n_samples=2.5), TypeError, "n_samples"),
        (dict(n_samples=True), TypeError, "n_samples"),
        (dict(n_samples=5, random_state="seed"), TypeError, "random_state"),
        (dict(n_samples=5, random_state=-1), ValueError, "random_state"),
        (dict(n_samples=5, dtype=np.int32), TypeError, "dtype"),
    ],
)
def test_circle_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        circle(**kwargs)


# ---------------------------------------------------------------------------
# Allen--Cahn
# ---------------------------------------------------------------------------


def _smooth_area(u):
    """Area of {u > 0} on [-1, 1)^2 estimated by the integral of (1 + u)/2."""
    return 4.0 * float(np.mean(0.5 * (1.0 + u)))


def test_interface_times_and_defaults():
    assert len(INTERFACE_TIMES) == 4
    assert all(0 < a < b for a, b in zip(INTERFACE_TIMES, INTERFACE_TIMES[1:]))
    assert INTERFACE_TIMES[0] > 0
    # at least 4 grid points across the 2 sqrt(2) eps wide interface
    h = 2.0 / ALLEN_CAHN_GRID
    assert 2 * math.sqrt(2) * ALLEN_CAHN_EPSILON / h >= 4


def test_circle_shrinks_by_mean_curvature_flow():
    # Sharp-interface limit: dR/dt = -eps^2 / R, so R^2 = R0^2 - 2 eps^2 t and
    # the enclosed area decreases by 2 pi eps^2 t. R0^2 is taken from the
    # measured initial area (the smooth estimate carries a constant O(eps^2)
    # offset from the tanh profile, which cancels in the decrease).
    # Measured with eps = 0.04, N = 128 (7 points across the interface),
    # dt = 0.005: the decrease is 0.79 %, 0.73 %, 0.68 % below theory at
    # t = 10, 20, 30. This is mostly the first-order time lag of the scheme,
    # (S + 0.4) dt = 1.2 %, partly offset by a +0.4 % asymptotic correction
    # (dt -> 0 extrapolation). The tolerance of 2 % covers that with margin.
    eps, dt, N = 0.04, 0.005, 128
    X, Y = allen_cahn_grid(N)
    u = allen_cahn_initial(X, Y, epsilon=eps, initial="circle")
    A0 = _smooth_area(u)
    assert abs(math.sqrt(A0 / math.pi) - 0.5) < 0.01
    t = 0.0
    for t_next in (10.0, 20.0, 30.0):
        u = allen_cahn_solve(u, t_next - t, epsilon=eps, dt=dt)
        t = t_next
        decrease = A0 - _smooth_area(u)
        predicted = 2 * math.pi * eps**2 * t
        assert abs(decrease / predicted - 1.0) < 0.02, (t, decrease, predicted)
        R = math.sqrt(_smooth_area(u) / math.pi)
        R_pred = math.sqrt(A0 / math.pi - 2 * eps**2 * t)
        assert abs(R / R_pred - 1.0) < 0.005
    # the disc stays centred and round: the sharp labels agree with it too
    assert abs(4 * np.mean(u > 0) - math.pi * R_pred**2) < 0.02


@pytest.mark.parametrize("dt, n_steps", [(ALLEN_CAHN_DT, 200), (1.0, 30)])
def test_energy_decreases_every_step(dt, n_steps):
    # dt = 1 is 200 times the default: the scheme is unconditionally stable.
    eps = ALLEN_CAHN_EPSILON
    u = allen_cahn_field(0.0)
    E = allen_cahn_energy(u, eps)
    E0 = E
    for step in range(n_steps):
        u = allen_cahn_solve(u, dt, epsilon=eps, dt=dt)
        E_new = allen_cahn_energy(u, eps)
        assert E_new <= E + 1e-13 * abs(E), (step, E, E_new)
        E = E_new
    assert E < E0


def test_energy_values():
    eps = 0.1
    X, Y = allen_cahn_grid(32)
    assert allen_cahn_energy(np.ones((32, 32)), eps) == pytest.approx(0.0, abs=1e-15)
    assert allen_cahn_energy(np.zeros((32, 32)), eps) == pytest.approx(1.0)  # area 4 * 1/4
    a = 0.3
    u = a * np.sin(np.pi * X)
    bulk = 4.0 * np.mean(0.25 * (u**2 - 1) ** 2)  # exact for this trig polynomial
    grad = eps**2 / 2 * a**2 * np.pi**2 * 2.0  # integral of cos^2(pi x) over the square = 2
    assert allen_cahn_energy(u, eps) == pytest.approx(bulk + grad, rel=1e-12)


def test_solve_steps_are_consistent():
    X, Y = allen_cahn_grid(32)
    u0 = allen_cahn_initial(X, Y, epsilon=0.1, initial="circle")
    np.testing.assert_array_equal(allen_cahn_solve(u0, 0.0, epsilon=0.1, dt=0.01), u0)
    two = allen_cahn_solve(u0, 0.02, epsilon=0.1, dt=0.01)
    one_one = allen_cahn_solve(allen_cahn_solve(u0, 0.01, epsilon=0.1, dt=0.01), 0.01, epsilon=0.1, dt=0.01)
    np.testing.assert_allclose(two, one_one, rtol=0, atol=1e-14)
    # a constant +-1 state is an equilibrium
    np.testing.assert_allclose(allen_cahn_solve(-np.ones((16, 16)), 1.0, epsilon=0.1, dt=0.1), -1.0, atol=1e-14)


def test_periodic_interpolate_is_exact_for_trig_polynomials():
    N = 16
    X, Y = allen_cahn_grid(N)

    def f(x, y):
        return 0.3 + np.sin(np.pi * x) * np.cos(3 * np.pi * y) + 0.5 * np.cos(7 * np.pi * x + 0.2)

    pts = np.random.default_rng(0).uniform(-3, 3, size=(500, 2))
    np.testing.assert_allclose(periodic_interpolate(f(X, Y), pts), f(pts[:, 0], pts[:, 1]), atol=1e-12)
    # interpolation at the nodes reproduces the data (Nyquist mode included)
    u = np.random.default_rng(1).standard_normal((N, N))
    nodes = np.column_stack([X.ravel(), Y.ravel()])
    np.testing.assert_allclose(periodic_interpolate(u, nodes, chunk_size=37), u.ravel(), atol=1e-12)


def test_labels_at_time_zero_match_initial_sign():
    X, y = allen_cahn_interface(0.0, 20_000, random_state=0)
    u0 = allen_cahn_initial(X[:, 0], X[:, 1])
    mismatch = y != (u0 > 0)
    # Spectral interpolation of the grid is accurate to ~1e-4 here, so only
    # points essentially on the zero level set could disagree.
    assert np.all(np.abs(u0[mismatch]) < 1e-3)
    assert mismatch.sum() <= 2
    assert 0.3 < y.mean() < 0.4


def test_interface_class_balance_and_motion():
    fractions = []
    labels = []
    for t in INTERFACE_TIMES:
        X, y = allen_cahn_interface(t, 20_000, random_state=1)
        assert X.shape == (20_000, 2) and X.dtype == np.float64 and y.dtype == np.int64
        fractions.append(y.mean())
        labels.append(y)
    for t, f in zip(INTERFACE_TIMES, fractions):
        assert 0.15 <= f <= 0.85, (t, f)
    # the positive phase shrinks (mean-curvature flow) ...
    assert all(a > b for a, b in zip(fractions, fractions[1:]))
    # ... and consecutive slices differ visibly (same points, seed 1)
    for a, b in zip(labels, labels[1:]):
        assert np.mean(a != b) > 0.01
    # the small disc centred at (0.62, 0.62) is present first and gone at t_4
    u1 = periodic_interpolate(allen_cahn_field(INTERFACE_TIMES[0]), [[0.62, 0.62]])
    u4 = periodic_interpolate(allen_cahn_field(INTERFACE_TIMES[-1]), [[0.62, 0.62]])
    assert u1[0] > 0.9 and u4[0] < -0.9


def test_interface_determinism_and_cache():
    t = INTERFACE_TIMES[1]
    X1, y1 = allen_cahn_interface(t, 500, random_state=3)
    hits = datasets._cached_field.cache_info().hits
    X2, y2 = allen_cahn_interface(t, 500, random_state=3)
    assert datasets._cached_field.cache_info().hits == hits + 1
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    X3, y3 = allen_cahn_interface(t, 500, random_state=np.random.default_rng(3))
    np.testing.assert_array_equal(X1, X3)
    X4, _ = allen_cahn_interface(t, 500, random_state=4)
    assert not np.array_equal(X1, X4)
    X32, y32 = allen_cahn_interface(t, 500, random_state=3, dtype=np.float32)
    assert X32.dtype == np.float32
    assert np.mean(y32 != y1) < 0.01
    # the cached field is protected; allen_cahn_field returns a copy
    u = allen_cahn_field(t)
    u[:] = 0.0
    assert np.any(allen_cahn_field(t) != 0.0)


def test_allen_cahn_validation():
    with pytest.raises(ValueError, match="time"):
        allen_cahn_interface(-1.0, 10)
    with pytest.raises(ValueError, match="epsilon"):
        allen_cahn_interface(1.0, 10, epsilon=0.0)
    with pytest.raises(ValueError, match="initial"):
        allen_cahn_interface(1.0, 10, initial="square")
    with pytest.raises(ValueError, match="n_samples"):
        allen_cahn_interface(1.0, 0)
    with pytest.raises(ValueError, match="u0"):
        allen_cahn_solve(np.zeros(10), 1.0, epsilon=0.1, dt=0.1)
    with pytest.raises(ValueError, match="dt"):
        allen_cahn_solve(np.zeros((8, 8)), 1.0, epsilon=0.1, dt=-0.1)
    with pytest.raises(ValueError, match="points"):
        periodic_interpolate(np.zeros((8, 8)), np.zeros((3, 3)))
    with pytest.warns(RuntimeWarning, match="grid"):
        allen_cahn_field(0.0, epsilon=0.01, grid=32)


def test_custom_initial_callable():
    def two_discs(x, y, epsilon):
        d = np.maximum(0.3 - np.hypot(x + 0.4, y), 0.3 - np.hypot(x - 0.4, y))
        return np.tanh(d / (math.sqrt(2) * epsilon))

    X, y = allen_cahn_interface(0.0, 2000, random_state=0, grid=64, epsilon=0.1, initial=two_discs)
    d = np.maximum(0.3 - np.hypot(X[:, 0] + 0.4, X[:, 1]), 0.3 - np.hypot(X[:, 0] - 0.4, X[:, 1]))
    far = np.abs(d) > 0.02
    np.testing.assert_array_equal(y[far], (d[far] > 0).astype(np.int64))


# ---------------------------------------------------------------------------
# IDX readers
# ---------------------------------------------------------------------------

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
          np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def _idx_bytes(arr, code=None):
    arr = np.asarray(arr)
    be = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    if code is None:
        code = _CODES[be]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(be).tobytes()


def _write(path, payload, gz=False):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_round_trip(tmp_path, gz, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.uniform(-100, 100, size=(3, 4, 5)) if np.dtype(dtype).kind != "u"
           else rng.integers(0, 256, size=(3, 4, 5))).astype(dtype)
    path = _write(tmp_path / "data.idx", _idx_bytes(arr), gz=gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 0  # writable
    assert read_idx(str(path)).shape == (3, 4, 5)


def test_read_idx_detects_gzip_by_content(tmp_path):
    arr = np.arange(12, dtype=np.uint8)
    a = _write(tmp_path / "plain-but-named.gz", _idx_bytes(arr))
    b = _write(tmp_path / "gzipped-no-suffix", _idx_bytes(arr), gz=True)
    np.testing.assert_array_equal(read_idx(a), arr)
    np.testing.assert_array_equal(read_idx(b), arr)


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"ab", "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab", "data type"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc", "truncated IDX data"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"abc", "unexpected bytes"),
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_errors(tmp_path, payload, match, gz):
    path = _write(tmp_path / "bad-file", payload, gz=gz)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert "bad-file" in str(info.value)


def test_read_idx_corrupt_gzip(tmp_path):
    blob = gzip.compress(_idx_bytes(np.arange(1000, dtype=np.uint8)))
    path = _write(tmp_path / "cut.gz", blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="gzip") as info:
        read_idx(path)
    assert "cut.gz" in str(info.value)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")
    with pytest.raises(TypeError, match="path"):
        read_idx(3)


def _make_mnist_folder(folder, n_train=7, n_test=4, gz_mask=(True, False, False, True), rows=28, cols=28):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, rows, cols), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, rows, cols), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    for gz, (name, arr) in zip(gz_mask, data.items()):
        _write(folder / (name + (".gz" if gz else "")), _idx_bytes(arr), gz=gz)
    return data


def test_load_idx_round_trip(tmp_path):
    data = _make_mnist_folder(tmp_path / "mnist", rows=5, cols=6)
    X_train, y_train, X_test, y_test = load_idx(tmp_path / "mnist")
    assert X_train.shape == (7, 5, 6) and X_test.shape == (4, 5, 6)
    assert X_train.dtype == np.float64 and y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert X_train.min() >= 0.0 and X_train.max() <= 1.0
    np.testing.assert_allclose(X_train, data["train-images-idx3-ubyte"] / 255.0)
    np.testing.assert_allclose(X_test, data["t10k-images-idx3-ubyte"] / 255.0)
    np.testing.assert_array_equal(y_train, data["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(y_test, data["t10k-labels-idx1-ubyte"])


def test_load_idx_missing_files(tmp_path):
    folder = tmp_path / "partial"
    _make_mnist_folder(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_idx(folder)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte" in msg and str(folder) in msg
    assert "train-images" not in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_idx(tmp_path / "no-such-folder")


def test_load_idx_count_mismatch(tmp_path):
    folder = tmp_path / "mismatch"
    _make_mnist_folder(folder)
    _write(folder / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="7 images"):
        load_idx(folder)


def test_load_mnist_path_and_env(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    data = _make_mnist_folder(folder, gz_mask=(False, False, False, False))
    out = load_mnist(folder)
    np.testing.assert_array_equal(out[3], data["t10k-labels-idx1-ubyte"])
    monkeypatch.setenv("LYSEP_MNIST_DIR", str(folder))
    out_env = load_mnist()
    np.testing.assert_array_equal(out_env[0], out[0])
    monkeypatch.delenv("LYSEP_MNIST_DIR")
    with pytest.raises(FileNotFoundError) as info:
        load_mnist()
    assert "path=" in str(info.value) and "LYSEP_MNIST_DIR" in str(info.value)


def test_load_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist()
    msg = str(info.value)
    assert "install with `apt-get install dataset-fashion-mnist`, or pass `path=`" in msg
    folder = tmp_path / "fm"
    _make_mnist_folder(folder)
    assert load_fashion_mnist(folder)[0].shape == (7, 28, 28)


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_load_real_fashion_mnist():
    X_train, y_train, X_test, y_test = load_fashion_mnist()
    assert X_train.shape == (60000, 28, 28) and X_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert X_train.dtype == np.float64 and y_train.dtype == np.int64
    assert 0.0 <= X_train.min() and X_train.max() <= 1.0
    assert set(np.unique(y_train)) == set(range(10)) and set(np.unique(y_test)) == set(range(10))
    assert np.all(np.bincount(y_train) == 6000) and np.all(np.bincount(y_test) == 1000)
