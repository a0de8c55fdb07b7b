"""Compiled activation kernel (MATH.md §1): value and derivative in one pass."""
from cython cimport floating
from _elementwise cimport act_forward, lysep_simd_level


def activation(const floating[:, ::1] Z, int kind, floating[:, ::1] A_out,
               floating[:, ::1] D_out=None):
    """A_out := sigma(Z); D_out := sigma'(Z) when given.  `kind` is an activation code."""
    cdef Py_ssize_t n = Z.shape[0] * Z.shape[1]
    if A_out.shape[0] != Z.shape[0] or A_out.shape[1] != Z.shape[1]:
        raise ValueError("A_out must have the shape of Z")
    if D_out is not None and (D_out.shape[0] != Z.shape[0] or D_out.shape[1] != Z.shape[1]):
        raise ValueError("D_out must have the shape of Z")
    if not 0 <= kind <= 3:
        raise ValueError(f"unknown activation code {kind}")
    if n == 0:
        return
    cdef floating *d = &D_out[0, 0] if D_out is not None else NULL
    with nogil:
        act_forward(kind, n, &Z[0, 0], &A_out[0, 0], d)


def simd_level():
    """Instruction set the vectorised activations run: 'avx512', 'avx2+fma' or 'baseline'."""
    return ("baseline", "avx2+fma", "avx512")[lysep_simd_level()]
