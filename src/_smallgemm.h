/* Products with a narrow output for the thin layers of a deep network (MATH.md §1, §4).
 *
 * At width 20 a layer product Z = A W has N x 20 x 20 shape: OpenBLAS packs both
 * operands for it and runs at about a third of the FMA rate, and the layer's element-wise
 * work is a second pass over memory.  These kernels keep the small operand in registers
 * (a tile of 4 rows x up to 5 vectors of accumulators; 2 rows of 5 with 16 registers)
 * and stream the long one once, so callers can process a few rows at a time and fuse the
 * element-wise work while the rows are in L1.  _smallgemm_body.h is compiled for the
 * baseline, AVX2+FMA and AVX-512 with run-time dispatch, like _vecmath.h.
 *
 *   lysep_rows_nn_ex_{d,f}(vb, M, k, n, A, lda, B, ldb, alpha, C0, ldc0, idx, bias, C, ldc, ssq)
 *       C[r, :] = C0[r, :] + bias + alpha * A[r, :] B      (row-major; C0, bias may be NULL;
 *       C0 may equal C).  B is k x n with row stride ldb.  With idx, C0's rows are
 *       gathered as C0[idx[r]]; with ssq, each output row's squared norm goes to ssq[r].
 *   lysep_tn_acc_{d,f}(vb, M, k, n, A, lda, B, ldb, C, ldc)
 *       C[p, :] += sum_r A[r, p] B[r, :]                  (C is k x n, A is M x k, B M x n)
 *   lysep_trial_rows_{d,f}(vb, m, n, active, step, Z, R, g, Z_out, R_out, Zc, rs)
 *       the trial rows of a Z step (see _smallgemm_type.h), any n
 *   lysep_zgrad_rows_{d,f}(vb, m, n, R, Z, D, from_value, c1, c2, G, rs, zsq, gsq)
 *   lysep_target_rows_{d,f}(vb, m, n, Zn, b, Rn, Zb, zbsq, rnsq)
 *       a hidden Z step's work on its rows before the first trial (_smallgemm_type.h)
 *   lysep_gram_acc_{d,f}(vb, M, n, A, lda, C, ldc)    upper triangle of C += A^T A
 *   lysep_backprop_{d,f}(vb, M, k, n, A, delta, W, S, deriv, gW, gb, Dp)
 *       one backpropagation layer: gW = A^T delta, gb = column sums of delta, and
 *       Dp = (delta W^T) * sigma' with the derivative applied in the store (see
 *       _smallgemm_type.h); all arrays with contiguous rows
 *   lysep_ssq_d(vb, n, x)                             sum of squares of a double array
 *
 * The products return 0 when done and 1 when n is wider than the kernel handles
 * (lysep_smallgemm_max_n) or scratch memory is unavailable; the caller then uses BLAS.
 */
#ifndef LYSEP_SMALLGEMM_H
#define LYSEP_SMALLGEMM_H
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "_vecmath.h"

/* The widest row the kernels take, in vectors (the tiles' accumulator arrays and
 * lysep_smallgemm_max_n below). */
#define LYSEP_SG_MAX_SLOTS 5

#define LYSEP_SG_PREFIX lysep_sgbase
#define LYSEP_VBYTES 16
#include "_smallgemm_body.h"
#undef LYSEP_VBYTES
#undef LYSEP_SG_PREFIX

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LYSEP_SG_X86 1
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LYSEP_SG_PREFIX lysep_sgavx2
#define LYSEP_VBYTES 32
#include "_smallgemm_body.h"
#undef LYSEP_VBYTES
#undef LYSEP_SG_PREFIX
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")
#define LYSEP_SG_PREFIX lysep_sgavx512
#define LYSEP_VBYTES 64
#include "_smallgemm_body.h"
#undef LYSEP_VBYTES
#undef LYSEP_SG_PREFIX
#pragma GCC pop_options
#endif

/* Vector width in bytes of the variant the CPU runs: the level _vecmath.h picks. */
static int lysep_smallgemm_vbytes(void)
{
    return 16 << lysep_simd_level();
}

/* Widest output (columns) the kernels take, for vector width vb and elements of `size` bytes. */
static ptrdiff_t lysep_smallgemm_max_n(int vb, size_t size)
{
    return (ptrdiff_t)(LYSEP_SG_MAX_SLOTS * vb / size);
}

/* `vb` picks the variant by its vector width: lysep_smallgemm_vbytes() for the widest
 * the CPU runs, a smaller supported width to test the others. */
#ifdef LYSEP_SG_X86
#define LYSEP_SG_DISPATCH(fn, ...)                                          \
    do {                                                                    \
        if (vb == 64) return lysep_sgavx512_##fn(__VA_ARGS__);              \
        if (vb == 32) return lysep_sgavx2_##fn(__VA_ARGS__);                \
        return lysep_sgbase_##fn(__VA_ARGS__);                              \
    } while (0)
#else
#define LYSEP_SG_DISPATCH(fn, ...) do { (void)vb; return lysep_sgbase_##fn(__VA_ARGS__); } while (0)
#endif

static int lysep_tn_acc_d(int vb, ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const double *A,
                          ptrdiff_t lda, const double *B, ptrdiff_t ldb, double *C,
                          ptrdiff_t ldc)
{ LYSEP_SG_DISPATCH(tn_acc_d, M, k, n, A, lda, B, ldb, C, ldc); }
static int lysep_tn_acc_f(int vb, ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const float *A,
                          ptrdiff_t lda, const float *B, ptrdiff_t ldb, float *C,
                          ptrdiff_t ldc)
{ LYSEP_SG_DISPATCH(tn_acc_f, M, k, n, A, lda, B, ldb, C, ldc); }
static double lysep_ssq_d(int vb, ptrdiff_t n, const double *x)
{ LYSEP_SG_DISPATCH(ssq_d, n, x); }
static int lysep_rows_nn_ex_d(int vb, ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const double *A,
                              ptrdiff_t lda, const double *B, ptrdiff_t ldb, double alpha,
                              const double *C0, ptrdiff_t ldc0, const ptrdiff_t *idx,
                              const double *bias, double *C, ptrdiff_t ldc, double *ssq)
{ LYSEP_SG_DISPATCH(rows_nn_ex_d, M, k, n, A, lda, B, ldb, alpha, C0, ldc0, idx, bias, C, ldc, ssq); }
static int lysep_rows_nn_ex_f(int vb, ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const float *A,
                              ptrdiff_t lda, const float *B, ptrdiff_t ldb, float alpha,
                              const float *C0, ptrdiff_t ldc0, const ptrdiff_t *idx,
                              const float *bias, float *C, ptrdiff_t ldc, double *ssq)
{ LYSEP_SG_DISPATCH(rows_nn_ex_f, M, k, n, A, lda, B, ldb, alpha, C0, ldc0, idx, bias, C, ldc, ssq); }
static int lysep_trial_rows_d(int vb, ptrdiff_t m, ptrdiff_t n, const ptrdiff_t *active,
                               const double *step, const double *Z, const double *R,
                               const double *g, double *Z_out, double *R_out, double *Zc,
                               double *rs)
{ LYSEP_SG_DISPATCH(trial_rows_d, m, n, active, step, Z, R, g, Z_out, R_out, Zc, rs); }
static int lysep_trial_rows_f(int vb, ptrdiff_t m, ptrdiff_t n, const ptrdiff_t *active,
                               const double *step, const float *Z, const float *R,
                               const float *g, float *Z_out, float *R_out, float *Zc,
                               double *rs)
{ LYSEP_SG_DISPATCH(trial_rows_f, m, n, active, step, Z, R, g, Z_out, R_out, Zc, rs); }
static int lysep_zgrad_rows_d(int vb, ptrdiff_t m, ptrdiff_t n, const double *R,
                              const double *Z, const double *D, int from_value, double c1,
                              double c2, double *G, double *rs, double *zsq, double *gsq)
{ LYSEP_SG_DISPATCH(zgrad_rows_d, m, n, R, Z, D, from_value, c1, c2, G, rs, zsq, gsq); }
static int lysep_zgrad_rows_f(int vb, ptrdiff_t m, ptrdiff_t n, const float *R,
                              const float *Z, const float *D, int from_value, float c1,
                              float c2, float *G, double *rs, double *zsq, double *gsq)
{ LYSEP_SG_DISPATCH(zgrad_rows_f, m, n, R, Z, D, from_value, c1, c2, G, rs, zsq, gsq); }
static int lysep_target_rows_d(int vb, ptrdiff_t m, ptrdiff_t n, const double *Zn,
                               const double *b, const double *Rn, double *Zb, double *zbsq,
                               double *rnsq)
{ LYSEP_SG_DISPATCH(target_rows_d, m, n, Zn, b, Rn, Zb, zbsq, rnsq); }
static int lysep_target_rows_f(int vb, ptrdiff_t m, ptrdiff_t n, const float *Zn,
                               const float *b, const float *Rn, float *Zb, double *zbsq,
                               double *rnsq)
{ LYSEP_SG_DISPATCH(target_rows_f, m, n, Zn, b, Rn, Zb, zbsq, rnsq); }
static int lysep_backprop_d(int vb, ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const double *A,
                            const double *delta, const double *W, const double *S, int deriv,
                            double *gW, double *gb, double *Dp)
{ LYSEP_SG_DISPATCH(backprop_d, M, k, n, A, delta, W, S, deriv, gW, gb, Dp); }
static int lysep_backprop_f(int vb, ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const float *A,
                            const float *delta, const float *W, const float *S, int deriv,
                            float *gW, double *gb, float *Dp)
{ LYSEP_SG_DISPATCH(backprop_f, M, k, n, A, delta, W, S, deriv, gW, gb, Dp); }
static int lysep_gram_acc_d(int vb, ptrdiff_t M, ptrdiff_t n, const double *A, ptrdiff_t lda,
                            double *C, ptrdiff_t ldc)
{ LYSEP_SG_DISPATCH(gram_acc_d, M, n, A, lda, C, ldc); }
static int lysep_gram_acc_f(int vb, ptrdiff_t M, ptrdiff_t n, const float *A, ptrdiff_t lda,
                            float *C, ptrdiff_t ldc)
{ LYSEP_SG_DISPATCH(gram_acc_f, M, n, A, lda, C, ldc); }
#endif
