r"""Data sets for the layer-separation experiments.

Three families of data are provided, all as plain NumPy arrays:

* :func:`circle` -- the two-dimensional "disc in a square" toy problem.
* :func:`allen_cahn_interface` -- points of the square labelled by the sign of
  a solution of the Allen--Cahn equation at a given time ("interface
  tracking"), together with the solver :func:`allen_cahn_solve`, its energy
  :func:`allen_cahn_energy` and helpers.
* :func:`read_idx`, :func:`load_idx`, :func:`load_mnist` and
  :func:`load_fashion_mnist` -- readers for the IDX files of MNIST and
  Fashion-MNIST.

Allen--Cahn interface data
--------------------------
The field ``u(x, t)`` solves

.. math::

    u_t = \varepsilon^2 \Delta u + u - u^3 \quad \text{on } [-1, 1)^2,

with periodic boundary conditions. Space is discretised by a Fourier
pseudo-spectral method on the uniform grid ``x_j = -1 + 2 j / N``,
``j = 0, ..., N - 1`` (the same in both directions), time by the first-order
stabilised semi-implicit scheme

.. math::

    \Bigl(\tfrac{1}{\Delta t} + S - \varepsilon^2 \Delta\Bigr) u^{n+1}
    = \tfrac{1}{\Delta t} u^n + S u^n + u^n - (u^n)^3, \qquad S = 2,

which needs one real FFT and one inverse FFT per step (the operator on the
left is diagonal in Fourier space). Writing ``F(u) = (u^2 - 1)^2 / 4`` and
``L = max |F''(u)| = 2`` on ``|u| <= 1``, testing the scheme with
``u^{n+1} - u^n`` and using a Taylor bound on ``F`` gives
``E(u^{n+1}) - E(u^n) <= -(1/dt + S - L/2) ||u^{n+1} - u^n||^2 <= 0``
for every ``dt > 0`` as soon as ``S >= L / 2 = 1`` (Shen & Yang, 2010); the
choice ``S = 2`` leaves a margin for the small overshoots ``|u| > 1`` that a
spectral method can produce. The scheme is therefore unconditionally energy
stable; ``dt`` only controls accuracy. Its leading error is a time lag: the
slow interface motion runs too slowly by the relative amount ``(S + c) dt``,
where ``c = 0.4`` is the mean of ``f'(u) = 1 - 3u^2`` across a ``tanh``
interface, i.e. about 1.2 % with the default ``dt`` (confirmed by refining
``dt`` for a shrinking circle).

Default constants (module attributes, all used by
:func:`allen_cahn_interface`):

* ``ALLEN_CAHN_EPSILON = 0.05``: interface width ``2 sqrt(2) eps = 0.141``;
* ``ALLEN_CAHN_GRID = 128``: spacing ``h = 2/128 = 0.0156``, so about nine
  grid points across the interface;
* ``ALLEN_CAHN_DT = 0.005``: 2400 steps to the last time (about 0.3 s);
* ``ALLEN_CAHN_INITIAL = "star_and_disc"``: the smooth union
  ``u0 = 1 - 2 prod_i (1 - v_i) / 2`` of ``tanh`` profiles
  ``v_i = tanh(d_i / (sqrt(2) eps))`` of two shapes and their periodic
  copies, where

  - ``d_disc = 0.2 - |x - (0.62, 0.62)|`` is the signed distance to a disc of
    radius 0.2, and
  - ``d_star = (rho - r) / sqrt(1 + (rho_theta / rho)^2)`` approximates the
    signed distance to the five-petal star ``r < rho = 0.62 + 0.18 s(r)
    cos(5 theta - pi/4)`` centred at ``(-0.1, -0.1)``, with polar
    coordinates ``(r, theta)`` about the centre and ``s(r) = r^6 / (r^6 +
    0.2^6)`` (which only smooths the centre; ``s > 0.99`` on the boundary).

  The positive phase (label 1) is the union of both shapes, which is not
  convex; its boundary is the star's and disc's boundaries up to
  exponentially small shifts.
* ``INTERFACE_TIMES = (0.5, 3.0, 6.0, 12.0)``: sharp star and disc; rounded
  star and shrinking disc; small disc about to vanish (it disappears at
  t ~ 6.9); disc gone and the star relaxing towards a rounded pentagon. The
  fraction of the grid with ``u > 0`` is 0.344, 0.324, 0.298 and 0.268 at
  these times (0.347 at t = 0).

Under mean-curvature flow (the sharp-interface limit) a closed interface
encloses an area decreasing at the rate ``2 pi eps^2`` (about 0.016 per unit
time here), so both classes stay well represented.

The field at arbitrary points is obtained by exact trigonometric (Fourier)
interpolation of the grid values, see :func:`periodic_interpolate`.
"""

from __future__ import annotations

import functools
import gzip
import math
import numbers
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import scipy.fft as sfft

__all__ = [
    "ALLEN_CAHN_DT",
    "ALLEN_CAHN_EPSILON",
    "ALLEN_CAHN_GRID",
    "ALLEN_CAHN_INITIAL",
    "ALLEN_CAHN_INITIALS",
    "FASHION_MNIST_DIR",
    "INTERFACE_TIMES",
    "MNIST_ENV_VAR",
    "allen_cahn_energy",
    "allen_cahn_field",
    "allen_cahn_grid",
    "allen_cahn_initial",
    "allen_cahn_interface",
    "allen_cahn_solve",
    "circle",
    "load_fashion_mnist",
    "load_idx",
    "load_mnist",
    "periodic_interpolate",
    "read_idx",
]

ALLEN_CAHN_EPSILON = 0.05
ALLEN_CAHN_GRID = 128
ALLEN_CAHN_DT = 0.005
ALLEN_CAHN_INITIAL = "star_and_disc"
ALLEN_CAHN_INITIALS = ("star_and_disc", "star", "circle")
INTERFACE_TIMES = (0.5, 3.0, 6.0, 12.0)

#: Stabilisation constant of the semi-implicit scheme (``S >= 1`` suffices).
_STABILISER = 2.0
#: Side length of the periodic square [-1, 1).
_LENGTH = 2.0
_AREA = _LENGTH * _LENGTH

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_ENV_VAR = "LYSEP_MNIST_DIR"


# ---------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------


def _check_random_state(random_state):
    """Return a :class:`numpy.random.Generator` for ``random_state``.

    Parameters
    ----------
    random_state : None, int or numpy.random.Generator
        ``None`` gives fresh OS entropy, an int seeds a new PCG64 generator,
        a Generator is returned unchanged (and is advanced by the caller).

    Returns
    -------
    numpy.random.Generator
    """
    if random_state is None or isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(
                f"random_state must be a non-negative int, got {random_state}; "
                "pass a seed >= 0, None or a numpy.random.Generator"
            )
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "random_state must be None, an int seed or a numpy.random.Generator, "
        f"got {type(random_state).__name__}; e.g. pass random_state=0 or "
        "random_state=np.random.default_rng(0)"
    )


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_float(value, name, *, positive=False, nonnegative=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonnegative and value < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be a NumPy floating dtype such as np.float64, got {dtype!r}") from exc
    if not np.issubdtype(dt, np.floating):
        raise TypeError(
            f"dtype must be a floating dtype (np.float32 or np.float64), got {dt}; "
            "labels are always returned as int64"
        )
    return dt


# ---------------------------------------------------------------------------
# the disc-in-a-square toy problem
# ---------------------------------------------------------------------------

#: Radius of the disc with half the area of [-1, 1]^2: pi r^2 = 2.
_CIRCLE_RADIUS = math.sqrt(2.0 / math.pi)


def circle(n_samples, random_state=None, dtype=np.float64):
    """Points of the square labelled by a centred disc of half its area.

    Parameters
    ----------
    n_samples : int
        Number of points, ``>= 1``.
    random_state : None, int or numpy.random.Generator, optional
        Source of randomness; an int makes the result reproducible.
    dtype : numpy floating dtype, optional
        Dtype of ``X`` (default ``np.float64``).

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
        Points drawn uniformly from ``[-1, 1]^2``.
    y : ndarray of shape (n_samples,), int64
        ``1`` where ``||x|| < r`` with ``pi r^2 = 2`` (so both classes have
        probability 1/2), ``0`` elsewhere. Labels are computed from the
        returned (possibly rounded) coordinates.

    Examples
    --------
    >>> X, y = circle(4, random_state=0)
    >>> X.shape, y.dtype
    ((4, 2), dtype('int64'))
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    dtype = _check_dtype(dtype)
    rng = _check_random_state(random_state)
    X = rng.uniform(-1.0, 1.0, size=(n_samples, 2)).astype(dtype, copy=False)
    Xd = X.astype(np.float64, copy=False)
    y = (np.hypot(Xd[:, 0], Xd[:, 1]) < _CIRCLE_RADIUS).astype(np.int64)
    return X, y


# ---------------------------------------------------------------------------
# Allen--Cahn equation
# ---------------------------------------------------------------------------


def allen_cahn_grid(grid=ALLEN_CAHN_GRID):
    """Coordinates of the periodic grid used by the Allen--Cahn solver.

    Parameters
    ----------
    grid : int, optional
        Number of grid points per direction, ``>= 4``.

    Returns
    -------
    X, Y : ndarray of shape (grid, grid)
        ``X[i, j] = x_i``, ``Y[i, j] = x_j`` with ``x_k = -1 + 2 k / grid``
        (``indexing="ij"``: axis 0 is the first coordinate).
    """
    grid = _check_int(grid, "grid", 4)
    x = -1.0 + _LENGTH * np.arange(grid) / grid
    return np.meshgrid(x, x, indexing="ij")


def _star_distance(dx, dy):
    """Approximate signed distance (positive inside) to the five-petal star.

    ``(dx, dy)`` is the displacement from the star's centre. The boundary is
    ``r = rho(r, theta) = 0.62 + 0.18 s(r) cos(5 theta - pi/4)`` where
    ``s(r) = r^6 / (r^6 + 0.2^6)`` switches the petals off at the centre (so
    the function is smooth there; ``s >= 0.99`` on the boundary), and the
    radial gap ``rho - r`` is divided by the norm of the angular gradient
    ``sqrt(1 + (rho_theta / rho)^2)``.
    """
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    r6 = r**6
    s = r6 / (r6 + 0.2**6)
    rho = 0.62 + 0.18 * s * np.cos(5.0 * theta - 0.25 * np.pi)
    drho = -0.9 * s * np.sin(5.0 * theta - 0.25 * np.pi)
    return (rho - r) / np.sqrt(1.0 + (drho / rho) ** 2)


def _disc_distance(radius):
    return lambda dx, dy: radius - np.hypot(dx, dy)


#: Named initial shapes: lists of (centre, signed-distance function).
_SHAPES = {
    "star_and_disc": (((-0.1, -0.1), _star_distance), ((0.62, 0.62), _disc_distance(0.2))),
    "star": (((-0.1, -0.1), _star_distance),),
    "circle": (((0.0, 0.0), _disc_distance(0.5)),),
}


def _named_initial(name, x, y, epsilon):
    """Smooth, periodic tanh profile of the union of the named shapes.

    Each shape (and each of its periodic copies shifted by (2i, 2j),
    i, j in {-1, 0, 1}) contributes ``v = tanh(d / (sqrt(2) epsilon))``; the
    contributions are combined by the smooth union ``u = 1 - 2 prod (1 - v)/2``,
    which equals ``v`` wherever all other factors are saturated at -1. Copies
    further away are -1 to within about ``exp(-2 * 1.1 / (sqrt(2) eps))``
    (1e-13 for eps = 0.05), so ``u`` is smooth and periodic to that accuracy;
    its zero level set is the union of the shapes' boundaries up to
    exponentially small shifts.
    """
    scale = 1.0 / (math.sqrt(2.0) * epsilon)
    q = np.ones(np.broadcast_shapes(x.shape, y.shape))
    for (cx, cy), dist in _SHAPES[name]:
        for sx in (-_LENGTH, 0.0, _LENGTH):
            for sy in (-_LENGTH, 0.0, _LENGTH):
                v = np.tanh(dist(x - cx - sx, y - cy - sy) * scale)
                q = q * (0.5 * (1.0 - v))
    return 1.0 - 2.0 * q


def _check_initial(initial):
    if callable(initial):
        return initial
    if isinstance(initial, str) and initial in ALLEN_CAHN_INITIALS:
        return initial
    raise ValueError(
        f"initial must be one of {ALLEN_CAHN_INITIALS} or a callable "
        f"f(x, y, epsilon) -> array, got {initial!r}"
    )


def allen_cahn_initial(x, y, *, epsilon=ALLEN_CAHN_EPSILON, initial=ALLEN_CAHN_INITIAL):
    """Evaluate an initial value of the Allen--Cahn problem at points.

    Parameters
    ----------
    x, y : array_like
        Coordinates (broadcast against each other).
    epsilon : float, optional
        Interface parameter; sets the width of the ``tanh`` profile.
    initial : {"star_and_disc", "star", "circle"} or callable, optional
        ``"star_and_disc"`` (default): union of a five-petal star and a small
        disc, see the module docstring; ``"star"``: the star alone;
        ``"circle"``: the disc of radius 0.5 centred at the origin. Each
        named shape gives ``tanh(d / (sqrt(2) epsilon))`` with ``d`` its
        signed distance (approximate for the star), positive inside; shapes
        and their periodic copies are combined by a smooth union, so the
        result is smooth and 2-periodic. A callable is called as
        ``initial(x, y, epsilon)`` and must return an array of the broadcast
        shape (it should be 2-periodic and smooth for spectral accuracy).

    Returns
    -------
    ndarray
        ``u0(x, y)``, values in ``(-1, 1)`` for the named shapes.
    """
    epsilon = _check_float(epsilon, "epsilon", positive=True)
    initial = _check_initial(initial)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if callable(initial):
        u = np.asarray(initial(x, y, epsilon), dtype=np.float64)
        shape = np.broadcast_shapes(x.shape, y.shape)
        if u.shape != shape:
            raise ValueError(
                f"initial(x, y, epsilon) returned shape {u.shape}, expected {shape}; "
                "the callable must evaluate pointwise"
            )
        return u
    return _named_initial(initial, x, y, epsilon)


def _check_field(u, name="u"):
    u = np.asarray(u)
    if u.ndim != 2:
        raise ValueError(f"{name} must be a 2-D grid of values, got an array of shape {u.shape}")
    if min(u.shape) < 4:
        raise ValueError(f"{name} must have at least 4 points per direction, got shape {u.shape}")
    if not (np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {u.dtype}")
    u = u.astype(np.float64, copy=False)
    if not np.all(np.isfinite(u)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return u


def _wavenumbers(n):
    """Angular wavenumbers pi*k of the FFT of n samples on a period of 2."""
    return (2.0 * np.pi / _LENGTH) * sfft.fftfreq(n, d=1.0 / n)


def allen_cahn_solve(u0, t_end, *, epsilon, dt):
    """Advance the periodic Allen--Cahn equation on ``[-1, 1)^2``.

    Solves ``u_t = epsilon^2 Lap(u) + u - u^3`` by the Fourier
    pseudo-spectral, stabilised semi-implicit scheme of the module docstring
    (``S = 2``), which is unconditionally energy stable.

    Parameters
    ----------
    u0 : array_like of shape (n1, n2)
        Values on the grid ``x_j = -1 + 2 j / n`` in each direction (see
        :func:`allen_cahn_grid`); each dimension ``>= 4``.
    t_end : float
        Final time, ``>= 0``.
    epsilon : float
        Interface parameter, ``> 0``.
    dt : float
        Largest time step, ``> 0``. The run uses ``m = ceil(t_end / dt)``
        equal steps of ``t_end / m`` (so ``t_end`` is hit exactly).

    Returns
    -------
    u : ndarray of shape (n1, n2), float64
        The solution at ``t_end`` (a new array).
    """
    u = _check_field(u0, "u0").copy()
    t_end = _check_float(t_end, "t_end", nonnegative=True)
    epsilon = _check_float(epsilon, "epsilon", positive=True)
    dt = _check_float(dt, "dt", positive=True)
    if t_end == 0.0:
        return u
    n_steps = max(1, math.ceil(t_end / dt - 1e-9))
    tau = t_end / n_steps
    n1, n2 = u.shape
    k1 = _wavenumbers(n1)
    k2 = (2.0 * np.pi / _LENGTH) * sfft.rfftfreq(n2, d=1.0 / n2)
    inv = 1.0 / (1.0 / tau + _STABILISER + epsilon**2 * (k1[:, None] ** 2 + k2[None, :] ** 2))
    a = 1.0 / tau + _STABILISER + 1.0
    for _ in range(n_steps):
        # u*u*u rather than u**3: the latter is several times slower in NumPy.
        rhs = sfft.rfft2(a * u - u * u * u)
        rhs *= inv
        u = sfft.irfft2(rhs, s=(n1, n2))
    return u


def allen_cahn_energy(u, epsilon):
    """Ginzburg--Landau energy of a periodic grid function on ``[-1, 1)^2``.

    Computes ``E(u) = integral of (epsilon^2 / 2) |grad u|^2 +
    (u^2 - 1)^2 / 4`` with the spectral gradient (via Parseval's identity)
    and the trapezoidal rule, which on a periodic grid is ``mean * area``.
    This is the discrete energy that :func:`allen_cahn_solve` does not
    increase.

    Parameters
    ----------
    u : array_like of shape (n1, n2)
        Grid values (see :func:`allen_cahn_grid`).
    epsilon : float
        Interface parameter, ``> 0``.

    Returns
    -------
    float
    """
    u = _check_field(u)
    epsilon = _check_float(epsilon, "epsilon", positive=True)
    n1, n2 = u.shape
    uhat = sfft.fft2(u) / (n1 * n2)
    k1 = _wavenumbers(n1)
    k2 = _wavenumbers(n2)
    grad2 = float(np.sum((k1[:, None] ** 2 + k2[None, :] ** 2) * np.abs(uhat) ** 2))
    bulk = float(np.mean(0.25 * (u * u - 1.0) ** 2))
    return _AREA * (0.5 * epsilon**2 * grad2 + bulk)


def _interp_matrix(coord, n):
    """Rows exp(i pi k (x + 1)) for the FFT ordering of n modes.

    The Nyquist mode of an even n uses cos(pi n/2 (x + 1)), which makes the
    interpolant the real, symmetric trigonometric interpolant.
    """
    k = sfft.fftfreq(n, d=1.0 / n)
    phase = (np.pi * (coord[:, None] + 1.0)) * k[None, :]
    E = np.exp(1j * phase)
    if n % 2 == 0:
        E[:, n // 2] = np.cos(phase[:, n // 2])
    return E


def periodic_interpolate(u, points, *, chunk_size=4096):
    """Trigonometric interpolation of a periodic grid function.

    Evaluates at arbitrary points the unique band-limited (degree < n/2,
    Nyquist mode symmetrised) trigonometric polynomial that matches ``u`` on
    the grid ``x_j = -1 + 2 j / n`` of the period ``[-1, 1)``. For smooth
    periodic data such as Allen--Cahn solutions this is spectrally accurate.
    The cost is ``O(n_points * n1 * n2)`` (two small matrix products per chunk
    of points).

    Parameters
    ----------
    u : array_like of shape (n1, n2)
        Grid values; axis 0 is the first coordinate.
    points : array_like of shape (n_points, 2)
        Evaluation points; any real values (the function is 2-periodic).
    chunk_size : int, optional
        Number of points processed at once (bounds the memory use).

    Returns
    -------
    ndarray of shape (n_points,), float64
    """
    u = _check_field(u)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (n_points, 2), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("points contains NaN or infinite values")
    chunk_size = _check_int(chunk_size, "chunk_size", 1)
    n1, n2 = u.shape
    # Real FFT along the second axis: modes l = 0..n2//2 with weights 2 for
    # the conjugate-paired ones and 1 for l = 0 and (even n2) the Nyquist mode.
    uhat = sfft.fft(sfft.rfft(u, axis=1), axis=0) / (n1 * n2)
    m2 = uhat.shape[1]
    w = np.full(m2, 2.0)
    w[0] = 1.0
    if n2 % 2 == 0:
        w[-1] = 1.0
    uhat = uhat * w[None, :]
    l2 = np.arange(m2)
    out = np.empty(points.shape[0])
    for start in range(0, points.shape[0], chunk_size):
        p = points[start:start + chunk_size]
        B = _interp_matrix(p[:, 0], n1) @ uhat  # (chunk, m2)
        Ey = np.exp(1j * np.pi * (p[:, 1:2] + 1.0) * l2[None, :])
        out[start:start + chunk_size] = np.einsum("ij,ij->i", B, Ey).real
    return out


@functools.lru_cache(maxsize=32)
def _cached_field(time, epsilon, grid, dt, initial):
    X, Y = allen_cahn_grid(grid)
    u0 = allen_cahn_initial(X, Y, epsilon=epsilon, initial=initial)
    u = allen_cahn_solve(u0, time, epsilon=epsilon, dt=dt)
    u.setflags(write=False)
    return u


def _field_args(time, epsilon, grid, dt, initial):
    time = _check_float(time, "time", nonnegative=True)
    epsilon = _check_float(epsilon, "epsilon", positive=True)
    grid = _check_int(grid, "grid", 4)
    dt = _check_float(dt, "dt", positive=True)
    initial = _check_initial(initial)
    points_across = 2.0 * math.sqrt(2.0) * epsilon / (_LENGTH / grid)
    if points_across < 4.0:
        warnings.warn(
            f"the interface (width 2*sqrt(2)*epsilon = {2 * math.sqrt(2) * epsilon:.3g}) "
            f"spans only {points_across:.1f} grid points; increase grid to at least "
            f"{math.ceil(4 * _LENGTH / (2 * math.sqrt(2) * epsilon))} or epsilon",
            RuntimeWarning,
            stacklevel=3,
        )
    return time, epsilon, grid, dt, initial


def allen_cahn_field(time, *, epsilon=ALLEN_CAHN_EPSILON, grid=ALLEN_CAHN_GRID,
                     dt=ALLEN_CAHN_DT, initial=ALLEN_CAHN_INITIAL):
    """Grid values of the Allen--Cahn solution at ``time``.

    Solves from the chosen initial value with :func:`allen_cahn_solve`. The
    result is cached in-process per ``(time, epsilon, grid, dt, initial)``
    (callables are keyed by identity), so repeated calls are free.

    Parameters
    ----------
    time : float
        Time, ``>= 0``.
    epsilon : float, optional
        Interface parameter (default ``ALLEN_CAHN_EPSILON = 0.05``).
    grid : int, optional
        Points per direction (default ``ALLEN_CAHN_GRID = 128``). A
        ``RuntimeWarning`` is issued when fewer than 4 grid points lie across
        the interface width ``2 sqrt(2) epsilon``.
    dt : float, optional
        Largest time step (default ``ALLEN_CAHN_DT = 0.005``).
    initial : str or callable, optional
        Initial value, see :func:`allen_cahn_initial` (default
        ``"star_and_disc"``).

    Returns
    -------
    u : ndarray of shape (grid, grid), float64
        A fresh copy; values at the points of :func:`allen_cahn_grid`.
    """
    args = _field_args(time, epsilon, grid, dt, initial)
    return _cached_field(*args).copy()


def allen_cahn_interface(time, n_samples, random_state=None, *, epsilon=ALLEN_CAHN_EPSILON,
                         grid=ALLEN_CAHN_GRID, dt=ALLEN_CAHN_DT, initial=ALLEN_CAHN_INITIAL,
                         dtype=np.float64):
    """Points of the square labelled by the sign of an Allen--Cahn solution.

    The field ``u(., time)`` of ``u_t = epsilon^2 Lap(u) + u - u^3`` on the
    periodic square ``[-1, 1)^2`` is computed by :func:`allen_cahn_field`
    (Fourier pseudo-spectral in space, stabilised semi-implicit Euler with
    ``S = 2`` in time, cached per parameters), then evaluated at uniformly
    drawn points by exact trigonometric interpolation
    (:func:`periodic_interpolate`).

    With the defaults (``epsilon = 0.05``, ``grid = 128``, ``dt = 0.005``,
    ``initial = "star_and_disc"``: a five-petal star plus a small disc with a
    ``tanh(d / (sqrt(2) epsilon))`` profile) the positive set at the
    :data:`INTERFACE_TIMES` ``(0.5, 3.0, 6.0, 12.0)`` covers 34 %, 32 %, 30 %
    and 27 % of the square (35 % at t = 0): the star rounds off and the disc shrinks and
    vanishes (near t = 6.9).

    Parameters
    ----------
    time : float
        Time at which the interface is taken, ``>= 0`` (``0`` gives the
        initial value).
    n_samples : int
        Number of points, ``>= 1``.
    random_state : None, int or numpy.random.Generator, optional
        Source of randomness for the points.
    epsilon, grid, dt, initial
        Solver parameters, see :func:`allen_cahn_field`.
    dtype : numpy floating dtype, optional
        Dtype of ``X`` (default ``np.float64``).

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
        Points drawn uniformly from ``[-1, 1]^2``.
    y : ndarray of shape (n_samples,), int64
        ``1`` where ``u(x, time) > 0``, else ``0`` (computed from the
        returned coordinates).

    Examples
    --------
    >>> X, y = allen_cahn_interface(INTERFACE_TIMES[0], 100, random_state=0)
    >>> X.shape, y.shape
    ((100, 2), (100,))
    """
    args = _field_args(time, epsilon, grid, dt, initial)
    n_samples = _check_int(n_samples, "n_samples", 1)
    dtype = _check_dtype(dtype)
    rng = _check_random_state(random_state)
    u = _cached_field(*args)
    X = rng.uniform(-1.0, 1.0, size=(n_samples, 2)).astype(dtype, copy=False)
    values = periodic_interpolate(u, X.astype(np.float64, copy=False))
    y = (values > 0.0).astype(np.int64)
    return X, y


# ---------------------------------------------------------------------------
# IDX (MNIST) files
# ---------------------------------------------------------------------------

_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _check_path(path, name="path"):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def read_idx(path):
    """Read one IDX file (the MNIST format), gzipped or not.

    The IDX layout is: two zero bytes, a type byte (``0x08`` unsigned byte,
    ``0x09`` signed byte, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32,
    ``0x0E`` float64), a byte giving the number of dimensions, one 4-byte
    big-endian size per dimension, then the data in C order, big-endian.
    Gzip compression is detected from the magic bytes ``1f 8b``, not from the
    file name.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    ndarray
        Array of the stored shape, in native byte order (``uint8`` for the
        MNIST files).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a valid IDX file (bad magic, unknown type,
        truncated or over-long data, corrupt gzip stream); the message names
        the file.
    """
    path = _check_path(path)
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic number starts with bytes "
            f"{data[0]:02x} {data[1]:02x}, expected 00 00)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        raise ValueError(
            f"{path}: unknown IDX data type 0x{type_code:02x}; expected one of "
            + ", ".join(f"0x{c:02x}" for c in _IDX_TYPES)
        )
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need {header} for {ndim} dims)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_TYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise ValueError(
            f"{path}: truncated IDX data: shape {shape} of {dtype.name} needs "
            f"{expected} bytes, found {found}"
        )
    if found > expected:
        raise ValueError(
            f"{path}: {found - expected} unexpected bytes after the IDX data "
            f"(shape {shape} needs {expected} bytes)"
        )
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header)
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _find_idx(folder, stem):
    """Return the path of stem (or stem.gz, or the 'stem with a dot' variant)."""
    alt = stem.replace("-idx", ".idx")  # e.g. train-images.idx3-ubyte
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def load_idx(path):
    """Load the four MNIST-format IDX files from a folder.

    Parameters
    ----------
    path : str or os.PathLike
        Folder containing ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each optionally gzipped with a ``.gz``
        suffix (the variants ``train-images.idx3-ubyte`` etc. are accepted
        too).

    Returns
    -------
    X_train : ndarray of shape (n_train, rows, cols), float64
        Training images scaled to ``[0, 1]`` (the file's dims are kept).
    y_train : ndarray of shape (n_train,), int64
    X_test : ndarray of shape (n_test, rows, cols), float64
    y_test : ndarray of shape (n_test,), int64

    Raises
    ------
    FileNotFoundError
        If the folder or any of the four files is missing (the message lists
        the missing files and the folder searched).
    ValueError
        If a file is invalid, images are not unsigned bytes, labels are not
        one-dimensional, or image and label counts differ.
    """
    folder = _check_path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"IDX folder {str(folder)!r} does not exist or is not a directory")
    found = {stem: _find_idx(folder, stem) for stem in _MNIST_FILES}
    missing = [stem for stem, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"missing IDX file(s) in folder {str(folder)!r}: "
            + ", ".join(f"{m} (or {m}.gz)" for m in missing)
        )
    out = []
    for split in ("train", "t10k"):
        ipath = found[f"{split}-images-idx3-ubyte"]
        lpath = found[f"{split}-labels-idx1-ubyte"]
        images = read_idx(ipath)
        labels = read_idx(lpath)
        if images.dtype != np.uint8 or images.ndim < 2:
            raise ValueError(
                f"{ipath}: expected unsigned-byte images with >= 2 dims, got "
                f"{images.dtype} of shape {images.shape}"
            )
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{lpath}: expected a 1-D integer label array, got {labels.dtype} of shape {labels.shape}"
            )
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{ipath} holds {images.shape[0]} images but {lpath} holds {labels.shape[0]} labels"
            )
        X = images.astype(np.float64)
        X /= 255.0
        out += [X, labels.astype(np.int64)]
    return tuple(out)


def load_fashion_mnist(path=None):
    """Load Fashion-MNIST (60000 training and 10000 test images, 28 x 28).

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder with the four IDX files (see :func:`load_idx`). By default
        :data:`FASHION_MNIST_DIR` = ``/usr/share/datasets/fashion-mnist``,
        where the Debian package ``dataset-fashion-mnist`` installs
        ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
        ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``.

    Returns
    -------
    X_train, y_train, X_test, y_test
        As for :func:`load_idx`: images float64 in ``[0, 1]``, labels int64
        in ``0..9``.

    Raises
    ------
    FileNotFoundError
        If the data are not found; with the default folder the message says
        to install with ``apt-get install dataset-fashion-mnist``, or pass
        ``path=``.
    """
    if path is not None:
        return load_idx(path)
    folder = Path(FASHION_MNIST_DIR)
    try:
        return load_idx(folder)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {str(folder)!r} ({exc}); "
            "install with `apt-get install dataset-fashion-mnist`, or pass `path=`."
        ) from exc


def load_mnist(path=None):
    """Load MNIST from a folder of IDX files.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder with the four IDX files (see :func:`load_idx`). When omitted,
        the folder named by the environment variable ``LYSEP_MNIST_DIR`` is
        used.

    Returns
    -------
    X_train, y_train, X_test, y_test
        As for :func:`load_idx`.

    Raises
    ------
    FileNotFoundError
        If neither ``path`` nor ``LYSEP_MNIST_DIR`` is given, or the files are
        missing.
    """
    if path is None:
        env = os.environ.get(MNIST_ENV_VAR, "")
        if not env:
            raise FileNotFoundError(
                "no MNIST folder given: pass path= (a folder with train-images-idx3-ubyte"
                "[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
                f"t10k-labels-idx1-ubyte[.gz]) or set the environment variable {MNIST_ENV_VAR}"
            )
        path = env
    return load_idx(path)
