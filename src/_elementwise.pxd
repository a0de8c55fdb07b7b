# Element-wise kernels inlined into the modules that need them: the activation
# value and its derivative in one pass (MATH.md §1).  Codes match
# lysep._activations.ACTIVATION_CODES.
from cython cimport floating

cdef extern from "_vecmath.h" nogil:
    void lysep_tanh_d(Py_ssize_t n, const double *z, double *a, double *d)
    void lysep_tanh_f(Py_ssize_t n, const float *z, float *a, float *d)
    void lysep_sigmoid_d(Py_ssize_t n, const double *z, double *a, double *d)
    void lysep_sigmoid_f(Py_ssize_t n, const float *z, float *a, float *d)
    void lysep_softplus_d(Py_ssize_t n, const double *z, double *a, double *d)
    void lysep_softplus_f(Py_ssize_t n, const float *z, float *a, float *d)
    void lysep_softplus_dv_d(Py_ssize_t n, const double *a, double *d, int mul)
    void lysep_softplus_dv_f(Py_ssize_t n, const float *a, float *d, int mul)
    int lysep_simd_level()

cdef enum:
    TANH = 0
    SIGMOID = 1
    RELU = 2
    SOFTPLUS = 3


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
        if floating is float:
            lysep_softplus_f(n, z, a, d)
        else:
            lysep_softplus_d(n, z, a, d)


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
        if floating is float:
            lysep_softplus_dv_f(n, a, d, 0)
        else:
            lysep_softplus_dv_d(n, a, d, 0)


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
        if floating is float:
            lysep_softplus_dv_f(n, a, x, 1)
        else:
            lysep_softplus_dv_d(n, a, x, 1)
