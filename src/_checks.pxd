# Shape checks of the kernels' array arguments, at C level, for every kernel module.
# A typed memoryview's shape is a C array: comparing it directly makes no Python object
# unless the check fails.  The Python-level check these replace built a tuple of each
# array's shape (the memoryview turned into an object first): 0.7 us per array, about
# 12 of the 16 us a hidden Z step's call cost at N = 1, and 0.3-0.4 ms of the 19x20
# sweep's 11.5 ms at N = 3000.


cdef inline int _shape_error(str name, const Py_ssize_t *shape, tuple want,
                             str need) except -1:
    got = tuple([shape[i] for i in range(len(want))])
    raise ValueError(f"{name} has shape {got}, {need} {want}")


cdef inline int check1(str name, const Py_ssize_t *shape, Py_ssize_t d0) except -1:
    """A 1-d array of length d0."""
    if shape[0] != d0:
        _shape_error(name, shape, (d0,), "expected")
    return 0


cdef inline int check2(str name, const Py_ssize_t *shape, Py_ssize_t d0,
                       Py_ssize_t d1) except -1:
    """A 2-d array of shape (d0, d1)."""
    if shape[0] != d0 or shape[1] != d1:
        _shape_error(name, shape, (d0, d1), "expected")
    return 0


cdef inline int check4(str name, const Py_ssize_t *shape, Py_ssize_t d0, Py_ssize_t d1,
                       Py_ssize_t d2, Py_ssize_t d3) except -1:
    """A 4-d (NHWC) array of shape (d0, d1, d2, d3)."""
    if shape[0] != d0 or shape[1] != d1 or shape[2] != d2 or shape[3] != d3:
        _shape_error(name, shape, (d0, d1, d2, d3), "expected")
    return 0


cdef inline int check_rows(str name, const Py_ssize_t *shape, Py_ssize_t rows,
                           Py_ssize_t cols) except -1:
    """A work array of at least `rows` rows (a block of rows, or all N) of `cols`
    columns."""
    if shape[0] < rows or shape[1] != cols:
        _shape_error(name, shape, (rows, cols), "needs at least")
    return 0
