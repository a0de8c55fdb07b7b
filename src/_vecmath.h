/* Vectorisable expm1 / tanh / sigmoid / softplus for the activation pass, and exp for the softmax (MATH.md §1).
 *
 * libm's scalar tanh costs ~15 ns per element here, ten times numpy's SIMD loops, and
 * the activation pass is the largest element-wise cost of a sweep.  _vecmath_body.h holds
 * branch-free approximations (a few ulp in double precision) that gcc vectorises; it is
 * compiled three times, for the baseline, for AVX2+FMA and for AVX-512, and the array
 * functions below pick the widest the CPU supports at run time, so a portable wheel
 * still runs wide vectors.  (gcc's target_clones did not vectorise these loops: the
 * inlined helpers stay at the baseline target.)
 */
#ifndef LYSEP_VECMATH_H
#define LYSEP_VECMATH_H
#include <stdint.h>
#include <string.h>
#include <stddef.h>

#define LYSEP_NAME(x) lysep_base_##x
#include "_vecmath_body.h"
#undef LYSEP_NAME

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LYSEP_X86_DISPATCH 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LYSEP_NAME(x) lysep_avx2_##x
#include "_vecmath_body.h"
#undef LYSEP_NAME
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")
#define LYSEP_NAME(x) lysep_avx512_##x
#include "_vecmath_body.h"
#undef LYSEP_NAME
#pragma GCC pop_options
#endif

#ifdef LYSEP_X86_DISPATCH
/* The AVX-512 variants use F, DQ and VL (256-bit halves in the narrow products): every
 * AVX-512 CPU but the Xeon Phi, which the DQ test already sent to AVX2. */
static inline int lysep_has_avx512(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl");
}
#define LYSEP_DISPATCH(fn, ...)                                              \
    do {                                                                    \
        if (lysep_has_avx512())                                             \
            lysep_avx512_##fn(__VA_ARGS__);                                 \
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) \
            lysep_avx2_##fn(__VA_ARGS__);                                   \
        else                                                                \
            lysep_base_##fn(__VA_ARGS__);                                   \
    } while (0)
#else
#define LYSEP_DISPATCH(fn, ...) lysep_base_##fn(__VA_ARGS__)
#endif

/* 2: AVX-512, 1: AVX2+FMA, 0: baseline — the variant the array functions run. */
static int lysep_simd_level(void)
{
#ifdef LYSEP_X86_DISPATCH
    if (lysep_has_avx512()) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

static void lysep_exp_neg_inplace(ptrdiff_t n, double *x)
{ LYSEP_DISPATCH(exp_neg_inplace, n, x); }
static void lysep_tanh_d(ptrdiff_t n, const double *z, double *a, double *d)
{ LYSEP_DISPATCH(tanh_d, n, z, a, d); }
static void lysep_tanh_f(ptrdiff_t n, const float *z, float *a, float *d)
{ LYSEP_DISPATCH(tanh_f, n, z, a, d); }
static void lysep_sigmoid_d(ptrdiff_t n, const double *z, double *a, double *d)
{ LYSEP_DISPATCH(sigmoid_d, n, z, a, d); }
static void lysep_sigmoid_f(ptrdiff_t n, const float *z, float *a, float *d)
{ LYSEP_DISPATCH(sigmoid_f, n, z, a, d); }
static void lysep_softplus_d(ptrdiff_t n, const double *z, double *a, double *d)
{ LYSEP_DISPATCH(softplus_d, n, z, a, d); }
static void lysep_softplus_f(ptrdiff_t n, const float *z, float *a, float *d)
{ LYSEP_DISPATCH(softplus_f, n, z, a, d); }
static void lysep_softplus_dv_d(ptrdiff_t n, const double *a, double *d, int mul)
{ LYSEP_DISPATCH(softplus_dv_d, n, a, d, mul); }
static void lysep_softplus_dv_f(ptrdiff_t n, const float *a, float *d, int mul)
{ LYSEP_DISPATCH(softplus_dv_f, n, a, d, mul); }
#endif
