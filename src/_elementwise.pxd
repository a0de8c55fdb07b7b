# Element-wise kernels inlined into the modules that need them: the activation
# value and its derivative in one pass (MATH.md §1).  Codes match
# lysep._activations.ACTIVATION_CODES.
from cython cimport floating
from libc.math cimport exp, expf, expm1, log1p, log1pf, fabs, fabsf

cdef extern from "_vecmath.h" nogil:
    void lysep_tanh_d(Py_ssize_t n, const double *z, double *a, double *d)
    void lysep_tanh_f(Py_ssize_t n, const float *z, float *a, float *d)
    void lysep_sigmoid_d(Py_ssize_t n, const double *z, double *a, double *d)
    void lysep_sigmoid_f(Py_ssize_t n, const float *z, float *a, float *d)
    int lysep_simd_level()

cdef enum:
    TANH = 0
    SIGMOID = 1
    RELU = 2
    SOFTPLUS = 3


cdef inline floating _sigmoid(floating x) noexcept nogil:
    cdef floating e
    if floating is float:
        if x >= 0:
            return 1.0 / (1.0 + expf(-x))
        e = expf(x)
        return e / (1.0 + e)
    else:
        if x >= 0:
            return 1.0 / (1.0 + exp(-x))
        e = exp(x)
        return e / (1.0 + e)


cdef inline floating _softplus(floating x) noexcept nogil:
    cdef floating pos = x if x > 0 else 0
    if floating is float:
        return pos + log1pf(expf(-fabsf(x)))
    else:
        return pos + log1p(exp(-fabs(x)))


cdef inline void act_forward(int kind, Py_ssize_t n, const floating *z,
                             floating *a, floating *d) noexcept nogil:
    """a := sigma(z) and, when d is not NULL, d := sigma'(z), in one pass."""
    cdef Py_ssize_t i
    cdef floating t
    if kind == TANH:
        if floating is float:
            lysep_tanh_f(n, z, a, d)
        else:
            lysep_tanh_d(n, z, a, d)
    elif kind == SIGMOID:
        if floating is float:
            lysep_sigmoid_f(n, z, a, d)
        else:
            lysep_sigmoid_d(n, z, a, d)
    elif kind == RELU:
        # separate branch-free loops: with the test of d inside, gcc kept the loop
        # scalar and branchy (6 ns per element on random signs, 20x a vector pass)
        for i in range(n):
            t = z[i]
            a[i] = t if t > 0 else 0
        if d != NULL:
            for i in range(n):
                d[i] = 1 if z[i] > 0 else 0
    else:
        for i in range(n):
            a[i] = _softplus(z[i])
            if d != NULL:
                d[i] = _sigmoid(z[i])


cdef inline void act_derivative_from_value(int kind, Py_ssize_t n, const floating *a,
                                           floating *d) noexcept nogil:
    """d := sigma'(z) computed from a = sigma(z): 1 - a^2 (tanh), a (1 - a) (sigmoid),
    [a > 0] (relu), -expm1(-a) (softplus, whose derivative is 1 - exp(-softplus))."""
    cdef Py_ssize_t i
    if kind == TANH:
        for i in range(n):
            d[i] = 1 - a[i] * a[i]
    elif kind == SIGMOID:
        for i in range(n):
            d[i] = a[i] * (1 - a[i])
    elif kind == RELU:
        for i in range(n):
            d[i] = 1 if a[i] > 0 else 0
    else:
        for i in range(n):
            d[i] = <floating>(-expm1(-<double>a[i]))


cdef inline void act_derivative_times(int kind, Py_ssize_t n, const floating *a,
                                      floating *x) noexcept nogil:
    """x := x * sigma'(z), the derivative computed from a = sigma(z) as in
    act_derivative_from_value, in the same pass as the product (backprop)."""
    cdef Py_ssize_t i
    if kind == TANH:
        for i in range(n):
            x[i] = x[i] * (1 - a[i] * a[i])
    elif kind == SIGMOID:
        for i in range(n):
            x[i] = x[i] * (a[i] * (1 - a[i]))
    elif kind == RELU:
        for i in range(n):
            x[i] = x[i] if a[i] > 0 else 0
    else:
        for i in range(n):
            x[i] = x[i] * <floating>(-expm1(-<double>a[i]))
