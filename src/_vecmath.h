/* Vectorisable exp / tanh / sigmoid for the activation pass (MATH.md §1).
 *
 * libm's scalar tanh costs ~15 ns per element here, ten times numpy's SIMD loops, and
 * the activation pass is the largest element-wise cost of a sweep.  These are branch-free
 * Cephes-style approximations (relative error a few ulp in double precision) written
 * so that gcc vectorises the array loops; target_clones adds AVX2 / AVX-512 variants
 * chosen at load time, so a portable wheel still runs wide vectors where it can.
 */
#ifndef LYSEP_VECMATH_H
#define LYSEP_VECMATH_H
#include <stdint.h>
#include <string.h>
#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(LYSEP_NO_CLONES)
#define LYSEP_CLONES __attribute__((target_clones("default", "avx2", "arch=skylake-avx512")))
#else
#define LYSEP_CLONES
#endif

/* exp(x) for x <= 0 down to -745 (callers only need that half-line). Cody-Waite
 * reduction x = n ln2 + r, |r| <= ln2/2, then Cephes' Pade form for e^r. */
static inline double lysep_exp_neg(double x)
{
    const double LOG2E = 1.4426950408889634073599;
    const double C1 = 6.93145751953125E-1, C2 = 1.42860682030941723212E-6;
    const double P0 = 1.26177193074810590878E-4, P1 = 3.02994407707441961300E-2,
                 P2 = 9.99999999999999999910E-1;
    const double Q0 = 3.00198505138664455042E-6, Q1 = 2.52448340349684104192E-3,
                 Q2 = 2.27265548208155028766E-1, Q3 = 2.00000000000000000009E0;
    const double MAGIC = 6755399441055744.0;     /* 1.5 * 2^52: adding it rounds to an integer */
    double lo = -708.0;
    x = x < lo ? lo : x;
    double t = LOG2E * x + MAGIC;               /* n = round(x / ln 2) sits in t's low bits */
    double n = t - MAGIC;
    int64_t tbits, mbits;
    memcpy(&tbits, &t, sizeof t);
    memcpy(&mbits, &MAGIC, sizeof t);
    double r = x - n * C1;
    r = r - n * C2;
    double rr = r * r;
    double px = r * ((P0 * rr + P1) * rr + P2);
    double e = 1.0 + 2.0 * px / ((((Q0 * rr + Q1) * rr + Q2) * rr + Q3) - px);
    int64_t bits = (tbits - mbits + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

/* tanh by Cephes: a rational approximation for |x| < 0.625, 1 - 2/(e^{2|x|} + 1)
 * otherwise; both are evaluated and one is selected, which keeps the loop branch-free. */
static inline double lysep_tanh(double x)
{
    const double P0 = -9.64399179425052238628E-1, P1 = -9.92877231001918586564E1,
                 P2 = -1.61468768441708447952E3;
    const double Q0 = 1.12811678491632931402E2, Q1 = 2.23548839060100448583E3,
                 Q2 = 4.84406305325125486048E3;
    double ax = __builtin_fabs(x);
    double e = lysep_exp_neg(-2.0 * ax);
    double big = (1.0 - e) / (1.0 + e);
    big = x < 0 ? -big : big;
    double z = x * x;
    double small = x + x * z * (((P0 * z + P1) * z + P2) / (((z + Q0) * z + Q1) * z + Q2));
    return ax < 0.625 ? small : big;
}

static inline double lysep_sigmoid(double x)
{
    double e = lysep_exp_neg(-__builtin_fabs(x));     /* in (0, 1]: no overflow */
    double inv = 1.0 / (1.0 + e);
    return x >= 0 ? inv : e * inv;
}

LYSEP_CLONES static void lysep_tanh_d(ptrdiff_t n, const double *z, double *a, double *d)
{
    for (ptrdiff_t i = 0; i < n; i++) a[i] = lysep_tanh(z[i]);
    if (d) for (ptrdiff_t i = 0; i < n; i++) d[i] = 1.0 - a[i] * a[i];
}

LYSEP_CLONES static void lysep_tanh_f(ptrdiff_t n, const float *z, float *a, float *d)
{
    for (ptrdiff_t i = 0; i < n; i++) a[i] = (float)lysep_tanh((double)z[i]);
    if (d) for (ptrdiff_t i = 0; i < n; i++) d[i] = 1.0f - a[i] * a[i];
}

LYSEP_CLONES static void lysep_sigmoid_d(ptrdiff_t n, const double *z, double *a, double *d)
{
    for (ptrdiff_t i = 0; i < n; i++) a[i] = lysep_sigmoid(z[i]);
    if (d) for (ptrdiff_t i = 0; i < n; i++) d[i] = a[i] * (1.0 - a[i]);
}

LYSEP_CLONES static void lysep_sigmoid_f(ptrdiff_t n, const float *z, float *a, float *d)
{
    for (ptrdiff_t i = 0; i < n; i++) a[i] = (float)lysep_sigmoid((double)z[i]);
    if (d) for (ptrdiff_t i = 0; i < n; i++) d[i] = a[i] * (1.0f - a[i]);
}
#endif
