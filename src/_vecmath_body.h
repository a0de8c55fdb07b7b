/* Body of _vecmath.h, included once per instruction set with LYSEP_NAME(x) naming
 * the variant (no include guard on purpose). */
/* expm1(t) for t <= 0 (down to -708; below, -1).  Cody-Waite reduction t = n ln2 + r with
 * |r| <= ln2/2, a degree-11 polynomial r + r^2 q(r) for expm1(r), then
 * expm1(t) = 2^n expm1(r) + (2^n - 1).  q (degree 9) is the Chebyshev fit of
 * (expm1(r) - r)/r^2 on [-1.0001 ln2/2, 1.0001 ln2/2] (mpmath.chebyfit at 50 digits):
 * 1.05e-16 absolute in q, 3.6e-17 relative in expm1(r), where the degree-13 Taylor
 * polynomial it replaced had 1.2e-17 with two more FMAs (tanh 1.87 -> 1.72 ns per element
 * on a Zen 2 core, the same 3-ulp maximum against libm).  Exact to a few ulp, also for
 * tiny |t|, with no division and no branch, so gcc vectorises the loops that call it. */
static inline double LYSEP_NAME(expm1_parts)(double t, double *scale_out)
{
    const double LOG2E = 1.4426950408889634073599;
    const double C1 = 6.93145751953125E-1, C2 = 1.42860682030941723212E-6;
    const double MAGIC = 6755399441055744.0;     /* 1.5 * 2^52: adding it rounds to an integer */
    t = t < -708.0 ? -708.0 : t;
    double k = LOG2E * t + MAGIC;                /* n = round(t / ln 2) sits in k's low bits */
    double n = k - MAGIC;
    int64_t kbits, mbits;
    memcpy(&kbits, &k, sizeof k);
    memcpy(&mbits, &MAGIC, sizeof k);
    double r = (t - n * C1) - n * C2;
    /* q by Estrin's scheme: Horner's chain of dependent FMAs kept too few loop
     * iterations in flight on a Zen 2 core (a small FP scheduler), so the loop ran at
     * the chain's latency; here the longest chain is five operations.  The
     * coefficients are close to 1/2!, 1/3!, ..., 1/11! */
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double a0 = 0.5000000000000001022112459 + r * 0.1666666666666666745273406;
    double a1 = 0.04166666666662412787299713 + r * 0.008333333333330061832518169;
    double a2 = 0.001388888891721371690143867 + r * 0.0001984126986305361687787146;
    double a3 = 0.00002480152129595437513120998 + r * 0.000002755726845999706477171102;
    double a4 = 0.0000002762008844540974816102474 + r * 2.510038549551031907761682e-8;
    double q = (a0 + r2 * a1) + r4 * (a2 + r2 * a3) + r8 * a4;
    double p = q * r2 + r;                       /* expm1(r) */
    int64_t bits = (kbits - mbits + 1023) << 52;
    memcpy(scale_out, &bits, sizeof bits);       /* 2^n */
    return p;
}

static inline double LYSEP_NAME(expm1_neg)(double t)
{
    double scale, p = LYSEP_NAME(expm1_parts)(t, &scale);
    return scale * p + (scale - 1.0);
}

/* exp(t) for t <= 0, from the same reduction: 2^n (1 + expm1(r)). */
static inline double LYSEP_NAME(exp_neg)(double t)
{
    double scale, p = LYSEP_NAME(expm1_parts)(t, &scale);
    return scale * p + scale;
}

/* tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)), sign restored: one division, no
 * cancellation for small |x| because expm1 is computed directly. */
static inline double LYSEP_NAME(tanh)(double x)
{
    double ax = __builtin_fabs(x);
    double em1 = LYSEP_NAME(expm1_neg)(-2.0 * ax);
    double t = -em1 / (2.0 + em1);
    return __builtin_copysign(t, x);
}

/* exp(t) for t <= 0, 0 below -708, where exp is subnormal (an absolute error under
 * 3.3e-308). */
static inline double LYSEP_NAME(exp_neg_flushed)(double t)
{
    double e = LYSEP_NAME(exp_neg)(t);
    return t < -708.0 ? 0.0 : e;
}

/* sigmoid(x) from e = e^{-|x|}: 1 / (1 + e), or e / (1 + e) for x < 0. */
static inline double LYSEP_NAME(sigmoid_from_exp)(double x, double e)
{
    double inv = 1.0 / (1.0 + e);
    return x >= 0 ? inv : e * inv;
}

static inline double LYSEP_NAME(sigmoid)(double x)
{
    double e = LYSEP_NAME(exp_neg)(-__builtin_fabs(x));             /* e^{-|x|} in (0, 1] */
    return LYSEP_NAME(sigmoid_from_exp)(x, e);
}

/* log1p(e) for e in [0, 1]: 2 atanh(s), s = e / (2 + e) in [0, 1/3], by the odd series
 * 2 s (1 + s^2/3 + s^4/5 + ... + s^32/33), truncation under 2e-18 relative at s = 1/3;
 * one division and no range reduction, so no branch (Estrin's scheme as in expm1). */
static inline double LYSEP_NAME(log1p_unit)(double e)
{
    double s = e / (2.0 + e);
    double w = s * s, w2 = w * w, w4 = w2 * w2, w8 = w4 * w4, w16 = w8 * w8;
    double b0 = 1.0 + w * (1.0 / 3.0), b1 = 1.0 / 5.0 + w * (1.0 / 7.0);
    double b2 = 1.0 / 9.0 + w * (1.0 / 11.0), b3 = 1.0 / 13.0 + w * (1.0 / 15.0);
    double b4 = 1.0 / 17.0 + w * (1.0 / 19.0), b5 = 1.0 / 21.0 + w * (1.0 / 23.0);
    double b6 = 1.0 / 25.0 + w * (1.0 / 27.0), b7 = 1.0 / 29.0 + w * (1.0 / 31.0);
    double lo = (b0 + w2 * b1) + w4 * (b2 + w2 * b3);
    double hi = (b4 + w2 * b5) + w4 * (b6 + w2 * b7);
    double q = (lo + w8 * hi) + w16 * (1.0 / 33.0);
    return 2.0 * s * q;
}

/* softplus(x) = max(x, 0) + log1p(e^{-|x|}), returning also e^{-|x|} for its derivative
 * sigmoid(x). */
static inline double LYSEP_NAME(softplus_parts)(double x, double *e_out)
{
    double e = LYSEP_NAME(exp_neg_flushed)(-__builtin_fabs(x));
    *e_out = e;
    return (x > 0 ? x : 0.0) + LYSEP_NAME(log1p_unit)(e);
}

/* x := exp(x) in place for x <= 0 (max-shifted softmax logits), flushed to 0 below -708. */
static void LYSEP_NAME(exp_neg_inplace)(ptrdiff_t n, double *x)
{
    for (ptrdiff_t i = 0; i < n; i++) x[i] = LYSEP_NAME(exp_neg_flushed)(x[i]);
}

static void LYSEP_NAME(tanh_d)(ptrdiff_t n, const double *z, double *a, double *d)
{
    for (ptrdiff_t i = 0; i < n; i++) a[i] = LYSEP_NAME(tanh)(z[i]);
    if (d) for (ptrdiff_t i = 0; i < n; i++) d[i] = 1.0 - a[i] * a[i];
}

static void LYSEP_NAME(tanh_f)(ptrdiff_t n, const float *z, float *a, float *d)
{
    for (ptrdiff_t i = 0; i < n; i++) a[i] = (float)LYSEP_NAME(tanh)((double)z[i]);
    if (d) for (ptrdiff_t i = 0; i < n; i++) d[i] = 1.0f - a[i] * a[i];
}

static void LYSEP_NAME(sigmoid_d)(ptrdiff_t n, const double *z, double *a, double *d)
{
    for (ptrdiff_t i = 0; i < n; i++) a[i] = LYSEP_NAME(sigmoid)(z[i]);
    if (d) for (ptrdiff_t i = 0; i < n; i++) d[i] = a[i] * (1.0 - a[i]);
}

static void LYSEP_NAME(sigmoid_f)(ptrdiff_t n, const float *z, float *a, float *d)
{
    for (ptrdiff_t i = 0; i < n; i++) a[i] = (float)LYSEP_NAME(sigmoid)((double)z[i]);
    if (d) for (ptrdiff_t i = 0; i < n; i++) d[i] = a[i] * (1.0f - a[i]);
}

static void LYSEP_NAME(softplus_d)(ptrdiff_t n, const double *z, double *a, double *d)
{
    double e;
    if (!d) { for (ptrdiff_t i = 0; i < n; i++) a[i] = LYSEP_NAME(softplus_parts)(z[i], &e); return; }
    for (ptrdiff_t i = 0; i < n; i++) {
        a[i] = LYSEP_NAME(softplus_parts)(z[i], &e);
        d[i] = LYSEP_NAME(sigmoid_from_exp)(z[i], e);
    }
}

static void LYSEP_NAME(softplus_f)(ptrdiff_t n, const float *z, float *a, float *d)
{
    double e;
    if (!d) { for (ptrdiff_t i = 0; i < n; i++) a[i] = (float)LYSEP_NAME(softplus_parts)((double)z[i], &e); return; }
    for (ptrdiff_t i = 0; i < n; i++) {
        a[i] = (float)LYSEP_NAME(softplus_parts)((double)z[i], &e);
        d[i] = (float)LYSEP_NAME(sigmoid_from_exp)((double)z[i], e);
    }
}

/* softplus' derivative from its value a >= 0: sigmoid(z) = 1 - e^{-a} = -expm1(-a);
 * into d (mul = 0) or multiplied into d (mul = 1, backprop). */
static void LYSEP_NAME(softplus_dv_d)(ptrdiff_t n, const double *a, double *d, int mul)
{
    if (mul) for (ptrdiff_t i = 0; i < n; i++) d[i] *= -LYSEP_NAME(expm1_neg)(-a[i]);
    else for (ptrdiff_t i = 0; i < n; i++) d[i] = -LYSEP_NAME(expm1_neg)(-a[i]);
}

static void LYSEP_NAME(softplus_dv_f)(ptrdiff_t n, const float *a, float *d, int mul)
{
    if (mul) for (ptrdiff_t i = 0; i < n; i++) d[i] = (float)(d[i] * -LYSEP_NAME(expm1_neg)(-(double)a[i]));
    else for (ptrdiff_t i = 0; i < n; i++) d[i] = (float)-LYSEP_NAME(expm1_neg)(-(double)a[i]);
}
