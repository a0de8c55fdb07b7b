# Element-wise kernels inlined into the modules that need them: the activation
# value and its derivative in one pass (MATH.md §1).  Codes match
# lysep._activations.ACTIVATION_CODES.
from cython cimport floating
from libc.math cimport tanh, tanhf, exp, expf, log1p, log1pf, fabs, fabsf

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
        for i in range(n):
            if floating is float:
                t = tanhf(z[i])
            else:
                t = tanh(z[i])
            a[i] = t
            if d != NULL:
                d[i] = 1 - t * t
    elif kind == SIGMOID:
        for i in range(n):
            t = _sigmoid(z[i])
            a[i] = t
            if d != NULL:
                d[i] = t * (1 - t)
    elif kind == RELU:
        for i in range(n):
            t = z[i]
            a[i] = t if t > 0 else 0
            if d != NULL:
                d[i] = 1 if t > 0 else 0
    else:
        for i in range(n):
            a[i] = _softplus(z[i])
            if d != NULL:
                d[i] = _sigmoid(z[i])
