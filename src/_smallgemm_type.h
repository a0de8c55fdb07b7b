/* The kernels of _smallgemm.h for one element type SG_T (suffix SG_S) and one vector
 * width LYSEP_VBYTES.  GCC's vector extensions give portable vectors; the tile functions
 * are inlined with constant shapes, so their accumulator arrays live in registers. */
#define SG_CAT3_(a, b, c) a##_##b##_##c
#define SG_CAT3(a, b, c) SG_CAT3_(a, b, c)
#define SG_FN(x) SG_CAT3(LYSEP_SG_PREFIX, x, SG_S)
#define SG_V SG_FN(vec)
#define SG_VL ((ptrdiff_t)(LYSEP_VBYTES / sizeof(SG_T)))

typedef SG_T SG_V __attribute__((vector_size(LYSEP_VBYTES), aligned(sizeof(SG_T))));

/* Unaligned vector loads and stores.  Not memcpy: inside the AVX2 target region gcc 12
 * expands a 32-byte memcpy as two 16-byte moves through a stack slot and reloads the
 * vector from there, a failed store forward on every element (the AVX2 narrow kernels
 * ran at a third of their speed); a may_alias vector access is one vmovupd. */
typedef SG_T SG_FN(vecu) __attribute__((vector_size(LYSEP_VBYTES), aligned(sizeof(SG_T)),
                                        may_alias));

static inline __attribute__((always_inline)) SG_V SG_FN(ld)(const SG_T *p)
{
    return *(const SG_FN(vecu) *)p;
}

static inline __attribute__((always_inline)) void SG_FN(st)(SG_T *p, SG_V v)
{
    *(SG_FN(vecu) *)p = v;
}

/* A half-width vector for a row's last few columns: a row of 20 doubles is two 512-bit
 * vectors and one 256-bit one rather than three 512-bit vectors with 4 lanes idle.  CPUs
 * that split 512-bit work into two 256-bit halves (AMD Zen 4) run the half at half
 * the cost; elsewhere it costs what the full vector did.  Tiles take `h` = 1 when the
 * row's tail fits in a half (see SG_FN(shape)); only where the half is 256 or 128 bits. */
#define SG_HALF_OK (LYSEP_VBYTES >= 32)
#define SG_H SG_FN(hvec)
#define SG_HL (SG_VL / 2)
typedef SG_T SG_H __attribute__((vector_size(LYSEP_VBYTES / 2), aligned(sizeof(SG_T))));

/* The first `tail` (1 <= tail <= VL) elements at p as a vector, zero past them, and the
 * converse store: masked loads and stores where the instruction set has them. */
static inline __attribute__((always_inline)) SG_V
SG_FN(load_tail)(const SG_T *p, ptrdiff_t tail)
{
#if LYSEP_VBYTES == 64
    if (sizeof(SG_T) == 8)
        return (SG_V)_mm512_maskz_loadu_pd((__mmask8)((1u << tail) - 1), p);
    return (SG_V)_mm512_maskz_loadu_ps((__mmask16)((1u << tail) - 1), p);
#elif LYSEP_VBYTES == 32
    if (sizeof(SG_T) == 8)
        return (SG_V)_mm256_maskload_pd((const double *)p, _mm256_cmpgt_epi64(
            _mm256_set1_epi64x(tail), _mm256_setr_epi64x(0, 1, 2, 3)));
    return (SG_V)_mm256_maskload_ps((const float *)p, _mm256_cmpgt_epi32(
        _mm256_set1_epi32((int)tail), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
#else
    SG_V t = {0};
    for (ptrdiff_t l = 0; l < tail; l++)
        t[l] = p[l];
    return t;
#endif
}

static inline __attribute__((always_inline)) void
SG_FN(store_tail)(SG_T *p, SG_V v, ptrdiff_t tail)
{
#if LYSEP_VBYTES == 64
    if (sizeof(SG_T) == 8)
        _mm512_mask_storeu_pd(p, (__mmask8)((1u << tail) - 1), (__m512d)v);
    else
        _mm512_mask_storeu_ps(p, (__mmask16)((1u << tail) - 1), (__m512)v);
#elif LYSEP_VBYTES == 32
    if (sizeof(SG_T) == 8)
        _mm256_maskstore_pd((double *)p, _mm256_cmpgt_epi64(
            _mm256_set1_epi64x(tail), _mm256_setr_epi64x(0, 1, 2, 3)), (__m256d)v);
    else
        _mm256_maskstore_ps((float *)p, _mm256_cmpgt_epi32(
            _mm256_set1_epi32((int)tail), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), (__m256)v);
#else
    for (ptrdiff_t l = 0; l < tail; l++)
        p[l] = v[l];
#endif
}

/* Sum of the lanes of a vector, in double. */
static inline __attribute__((always_inline)) double SG_FN(hsum)(SG_V q)
{
    double t = 0;
    for (ptrdiff_t l = 0; l < SG_VL; l++)
        t += (double)q[l];
    return t;
}

/* Columns [0, n) of row c := row v (n <= nv * VL; the last vector may be partial). */
static inline __attribute__((always_inline)) void
SG_FN(store_row)(SG_T *c, const SG_V *v, int nv, ptrdiff_t n)
{
    for (int j = 0; j < nv - 1; j++)
        SG_FN(st)(c + j * SG_VL, v[j]);
    if (n == nv * SG_VL)
        SG_FN(st)(c + (nv - 1) * SG_VL, v[nv - 1]);
    else
        SG_FN(store_tail)(c + (nv - 1) * SG_VL, v[nv - 1], n - (nv - 1) * SG_VL);
}

/* Row c (n columns) as nv vectors, zero past n. */
static inline __attribute__((always_inline)) void
SG_FN(load_row)(SG_V *v, const SG_T *c, int nv, ptrdiff_t n)
{
    for (int j = 0; j < nv - 1; j++)
        v[j] = SG_FN(ld)(c + j * SG_VL);
    v[nv - 1] = SG_FN(load_tail)(c + (nv - 1) * SG_VL, n - (nv - 1) * SG_VL);
}

/* The first `tail` (1 <= tail <= VL/2) elements at p as a half vector, zero past them,
 * and the converse store. */
static inline __attribute__((always_inline)) SG_H
SG_FN(load_tail_h)(const SG_T *p, ptrdiff_t tail)
{
#if LYSEP_VBYTES == 64
    if (sizeof(SG_T) == 8)
        return (SG_H)_mm256_maskz_loadu_pd((__mmask8)((1u << tail) - 1), p);
    return (SG_H)_mm256_maskz_loadu_ps((__mmask8)((1u << tail) - 1), p);
#elif LYSEP_VBYTES == 32
    if (sizeof(SG_T) == 8)
        return (SG_H)_mm_maskload_pd((const double *)p, _mm_set_epi64x(tail > 1 ? -1 : 0, -1));
    return (SG_H)_mm_maskload_ps((const float *)p, _mm_cmpgt_epi32(
        _mm_set1_epi32((int)tail), _mm_setr_epi32(0, 1, 2, 3)));
#else
    SG_H t = {0};
    for (ptrdiff_t l = 0; l < tail; l++)
        t[l] = p[l];
    return t;
#endif
}

static inline __attribute__((always_inline)) void
SG_FN(store_tail_h)(SG_T *p, SG_H v, ptrdiff_t tail)
{
#if LYSEP_VBYTES == 64
    if (sizeof(SG_T) == 8)
        _mm256_mask_storeu_pd(p, (__mmask8)((1u << tail) - 1), (__m256d)v);
    else
        _mm256_mask_storeu_ps(p, (__mmask8)((1u << tail) - 1), (__m256)v);
#elif LYSEP_VBYTES == 32
    if (sizeof(SG_T) == 8)
        _mm_maskstore_pd((double *)p, _mm_set_epi64x(tail > 1 ? -1 : 0, -1), (__m128d)v);
    else
        _mm_maskstore_ps((float *)p, _mm_cmpgt_epi32(
            _mm_set1_epi32((int)tail), _mm_setr_epi32(0, 1, 2, 3)), (__m128)v);
#else
    for (ptrdiff_t l = 0; l < tail; l++)
        p[l] = v[l];
#endif
}

/* The low half of a vector (a packed row's last slot when the tile takes a half). */
static inline __attribute__((always_inline)) SG_H
SG_FN(lo)(const SG_V *v)
{
    SG_H r;
    memcpy(&r, v, sizeof r);
    return r;
}

/* x in every lane, and the low half of that: the tiles multiply a broadcast scalar into
 * both full and half vectors, and one broadcast (from memory) serves both; scalar
 * operands made gcc load the scalar, then broadcast it twice on the shuffle ports. */
static inline __attribute__((always_inline)) SG_V
SG_FN(splat)(SG_T x)
{
    return x - (SG_V){0};          /* x - 0 is x, also for -0: a plain broadcast */
}

static inline __attribute__((always_inline)) SG_H
SG_FN(lov)(SG_V v)
{
    SG_H r;
    memcpy(&r, &v, sizeof r);
    return r;
}

/* Row c (n columns) as nv full vectors and, when h, a half vector holding the rest
 * (n - nv VL <= VL/2 columns); without h as load_row.  Zero past n. */
static inline __attribute__((always_inline)) void
SG_FN(load_row2)(SG_V *v, SG_H *vh, const SG_T *c, int nv, int h, ptrdiff_t n)
{
    if (!h) {
        SG_FN(load_row)(v, c, nv, n);
        return;
    }
    for (int j = 0; j < nv; j++)
        v[j] = SG_FN(ld)(c + j * SG_VL);
    *vh = SG_FN(load_tail_h)(c + nv * SG_VL, n - nv * SG_VL);
}

static inline __attribute__((always_inline)) void
SG_FN(store_row2)(SG_T *c, const SG_V *v, SG_H vh, int nv, int h, ptrdiff_t n)
{
    if (!h) {
        SG_FN(store_row)(c, v, nv, n);
        return;
    }
    for (int j = 0; j < nv; j++)
        SG_FN(st)(c + j * SG_VL, v[j]);
    SG_FN(store_tail_h)(c + nv * SG_VL, vh, n - nv * SG_VL);
}

/* The tile shape of a row of n columns (n >= 1): nv full vectors and h half vectors,
 * the code 2 nv + h; nv + h = ceil(n / VL) slots in packed rows either way. */
static inline int SG_FN(shape)(ptrdiff_t n)
{
    ptrdiff_t slots = (n + SG_VL - 1) / SG_VL, rest = n - (slots - 1) * SG_VL;
    int h = SG_HALF_OK && rest <= SG_HL;
    return (int)(2 * (slots - h) + h);
}

/* Every shape code of at most SG_MAXS = 5 slots, for switches: X(nv, h).  Five slots
 * take a row of 20 doubles in 256-bit vectors (AVX2). */
#define SG_MAXS LYSEP_SG_MAX_SLOTS
#if SG_HALF_OK
#define SG_SHAPES(X) X(1, 0) X(2, 0) X(3, 0) X(4, 0) X(5, 0) \
    X(0, 1) X(1, 1) X(2, 1) X(3, 1) X(4, 1)
#else
#define SG_SHAPES(X) X(1, 0) X(2, 0) X(3, 0) X(4, 0) X(5, 0)
#endif

/* Rows per chunk of a product over many rows whose rows of `cols` elements should about
 * fill L1 (32 KB), at least 8, so that every tile passing over the chunk reads it there. */
static inline ptrdiff_t SG_FN(l1_rows)(ptrdiff_t cols)
{
    ptrdiff_t rb = 32768 / (ptrdiff_t)(cols * sizeof(SG_T));
    return rb < 8 ? 8 : rb;
}

/* Rows per register tile for rows of `slots` vectors: 4 x 5 accumulators fit 32 vector
 * registers, but with 16 (AVX2, SSE2) five slots take 2 rows (10 accumulators, the
 * operand row and the broadcast). */
#define SG_TILE_ROWS(slots) (LYSEP_VBYTES == 64 || (slots) <= 4 ? 4 : 2)

/* mr rows x (nv full + h half) vectors of C = C0 + bias + A Bp (Bp: k packed rows of
 * nv + h vectors, alpha folded in; bias packed likewise). */
static inline __attribute__((always_inline)) void
SG_FN(nn_tile)(int mr, int nv, int h, ptrdiff_t k, ptrdiff_t n, const SG_T *A, ptrdiff_t lda,
               const SG_V *Bp, const SG_V *bias, const SG_T *C0, ptrdiff_t ldc0,
               const ptrdiff_t *idx, SG_T *C, ptrdiff_t ldc, double *ssq)
{
    const int nt = nv + h;
    SG_V acc[4][SG_MAXS], b[SG_MAXS], c0[SG_MAXS];
    SG_H acch[4], bh = {0}, c0h = {0};
    for (int i = 0; i < mr; i++) {
        for (int j = 0; j < nv; j++)
            acc[i][j] = bias[j];
        if (h)
            acch[i] = SG_FN(lo)(&bias[nv]);
    }
    for (ptrdiff_t p = 0; p < k; p++) {
        for (int j = 0; j < nv; j++)
            b[j] = Bp[p * nt + j];
        if (h)
            bh = SG_FN(lo)(&Bp[p * nt + nv]);
        for (int i = 0; i < mr; i++) {
            SG_V a = SG_FN(splat)(A[i * lda + p]);
            for (int j = 0; j < nv; j++)
                acc[i][j] += a * b[j];
            if (h)
                acch[i] += SG_FN(lov)(a) * bh;
        }
    }
    for (int i = 0; i < mr; i++) {
        if (C0) {
            SG_FN(load_row2)(c0, &c0h, C0 + (idx ? idx[i] : i) * ldc0, nv, h, n);
            for (int j = 0; j < nv; j++)
                acc[i][j] += c0[j];
            if (h)
                acch[i] += c0h;
        }
        SG_FN(store_row2)(C + i * ldc, acc[i], h ? acch[i] : bh, nv, h, n);
        if (ssq) {                       /* lanes past n are zero: B and C0 padded so */
            double t = 0;
            if (nv) {
                SG_V q = acc[i][0] * acc[i][0];
                for (int j = 1; j < nv; j++)
                    q += acc[i][j] * acc[i][j];
                t = SG_FN(hsum)(q);
            }
            if (h) {
                SG_H qh = acch[i] * acch[i];
                for (ptrdiff_t l = 0; l < SG_HL; l++)
                    t += (double)qh[l];
            }
            ssq[i] = t;
        }
    }
}

static inline __attribute__((always_inline)) void
SG_FN(nn_rows)(int nv, int h, ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const SG_T *A,
               ptrdiff_t lda, const SG_V *Bp, const SG_V *bias, const SG_T *C0, ptrdiff_t ldc0,
               const ptrdiff_t *idx, SG_T *C, ptrdiff_t ldc, double *ssq)
{
    const int tr = SG_TILE_ROWS(nv + h);
    ptrdiff_t r = 0;
    for (; r + tr <= M; r += tr)
        SG_FN(nn_tile)(tr, nv, h, k, n, A + r * lda, lda, Bp, bias,
                       C0 && !idx ? C0 + r * ldc0 : C0, ldc0, idx ? idx + r : NULL,
                       C + r * ldc, ldc, ssq ? ssq + r : NULL);
    for (; r < M; r++)
        SG_FN(nn_tile)(1, nv, h, k, n, A + r * lda, lda, Bp, bias,
                       C0 && !idx ? C0 + r * ldc0 : C0, ldc0, idx ? idx + r : NULL,
                       C + r * ldc, ldc, ssq ? ssq + r : NULL);
}

/* C[r, :] = C0[r, :] + bias + alpha * A[r, :] B, with C0's rows gathered as C0[idx[r]]
 * when idx is not NULL and the squared norm of every output row written to ssq[r] when
 * ssq is not NULL (C0, bias may be NULL; C0 may equal C). */
static int SG_FN(rows_nn_ex)(ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const SG_T *A,
                             ptrdiff_t lda, const SG_T *B, ptrdiff_t ldb, SG_T alpha,
                             const SG_T *C0, ptrdiff_t ldc0, const ptrdiff_t *idx,
                             const SG_T *bias, SG_T *C, ptrdiff_t ldc, double *ssq)
{
    if (n <= 0 || M <= 0)
        return 0;
    int nv = (int)((n + SG_VL - 1) / SG_VL);
    if (nv > SG_MAXS)
        return 1;
    /* B scaled by alpha, each row padded with zeros to nv whole vectors: on the stack
     * for the small B of a thin layer (these calls come a block of rows at a time) */
    SG_V Bstack[128];
    size_t need = (size_t)(k > 0 ? k : 1) * nv;
    SG_V *Bp = need <= 128 ? Bstack : (SG_V *)malloc(need * sizeof(SG_V));
    if (!Bp)
        return 1;
    SG_V bv[SG_MAXS];
    for (ptrdiff_t p = 0; p < k; p++) {
        SG_FN(load_row)(Bp + p * nv, B + p * ldb, nv, n);
        for (int j = 0; j < nv; j++)
            Bp[p * nv + j] *= alpha;
    }
    if (bias) {
        SG_FN(load_row)(bv, bias, nv, n);
    } else {
        for (int j = 0; j < nv; j++)
            bv[j] = (SG_V){0};
    }
    switch (SG_FN(shape)(n)) {  /* constant tile shapes: the accumulators stay in registers */
#define SG_NN_CASE(v, hh) \
    case 2 * (v) + (hh): SG_FN(nn_rows)(v, hh, M, k, n, A, lda, Bp, bv, C0, ldc0, idx, C, ldc, ssq); break;
    SG_SHAPES(SG_NN_CASE)
#undef SG_NN_CASE
    default: break;
    }
    if (Bp != Bstack)
        free(Bp);
    return 0;
}

/* The trial rows of a Z step (MATH.md §4): for a < m and i = active[a], with
 * st = step[i]:  Z_out_i := Z_i - st g_i,  R_out_i := R_i + (Z_out_i - Z_i), row a of Zc
 * := Z_out_i (when Zc is not NULL) and rs[a] := ||R_out_i||^2.  Any width n. */
static int SG_FN(trial_rows)(ptrdiff_t m, ptrdiff_t n, const ptrdiff_t *active,
                              const double *step, const SG_T *Z, const SG_T *R,
                              const SG_T *g, SG_T *Z_out, SG_T *R_out, SG_T *Zc, double *rs)
{
    for (ptrdiff_t a = 0; a < m; a++) {
        ptrdiff_t i = active[a], j = 0;
        SG_T st = (SG_T)step[i];
        const SG_T *z = Z + i * n, *r = R + i * n, *gi = g + i * n;
        SG_T *zo = Z_out + i * n, *ro = R_out + i * n, *zc = Zc ? Zc + a * n : NULL;
        SG_V q = {0}, zv, rv, gv, zt, rt;
        for (; j + SG_VL <= n; j += SG_VL) {
            zv = SG_FN(ld)(z + j);
            rv = SG_FN(ld)(r + j);
            gv = SG_FN(ld)(gi + j);
            zt = zv - st * gv;
            rt = rv + (zt - zv);
            SG_FN(st)(zo + j, zt);
            SG_FN(st)(ro + j, rt);
            if (zc)
                SG_FN(st)(zc + j, zt);
            q += rt * rt;
        }
        if (j < n) {
            ptrdiff_t tail = n - j;
            zv = SG_FN(load_tail)(z + j, tail);
            rv = SG_FN(load_tail)(r + j, tail);
            gv = SG_FN(load_tail)(gi + j, tail);
            zt = zv - st * gv;
            rt = rv + (zt - zv);
            SG_FN(store_tail)(zo + j, zt, tail);
            SG_FN(store_tail)(ro + j, rt, tail);
            if (zc)
                SG_FN(store_tail)(zc + j, zt, tail);
            q += rt * rt;
        }
        rs[a] = SG_FN(hsum)(q);
    }
    return 0;
}

/* What a hidden Z step needs of its rows before the first trial, in one pass (m rows of
 * n columns): G_i := c1 R_i - c2 d_i * G_i (G holds the product R_next W^T on entry),
 * with d_i = 1 - D_i^2 when from_value (D holds tanh's values) or d_i = D_i; and the
 * squared norms rs_i = ||R_i||^2, zsq_i = ||Z_i||^2 and gsq_i = ||G_i||^2 (out). */
static int SG_FN(zgrad_rows)(ptrdiff_t m, ptrdiff_t n, const SG_T *R, const SG_T *Z,
                             const SG_T *D, int from_value, SG_T c1, SG_T c2, SG_T *G,
                             double *rs, double *zsq, double *gsq)
{
    for (ptrdiff_t i = 0; i < m; i++) {
        const SG_T *r = R + i * n, *z = Z + i * n, *dd = D + i * n;
        SG_T *g = G + i * n;
        SG_V qr = {0}, qz = {0}, qg = {0}, rv, zv, dv, gv;
        ptrdiff_t j = 0;
        for (; j + SG_VL <= n; j += SG_VL) {
            rv = SG_FN(ld)(r + j);
            zv = SG_FN(ld)(z + j);
            dv = SG_FN(ld)(dd + j);
            gv = SG_FN(ld)(g + j);
            if (from_value)
                dv = (SG_T)1 - dv * dv;
            gv = c1 * rv - c2 * (dv * gv);
            SG_FN(st)(g + j, gv);
            qr += rv * rv; qz += zv * zv; qg += gv * gv;
        }
        if (j < n) {                     /* zero lanes past n: g = 0 there */
            ptrdiff_t tail = n - j;
            rv = SG_FN(load_tail)(r + j, tail);
            zv = SG_FN(load_tail)(z + j, tail);
            dv = SG_FN(load_tail)(dd + j, tail);
            gv = SG_FN(load_tail)(g + j, tail);
            if (from_value)
                dv = (SG_T)1 - dv * dv;
            gv = c1 * rv - c2 * (dv * gv);
            SG_FN(store_tail)(g + j, gv, tail);
            qr += rv * rv; qz += zv * zv; qg += gv * gv;
        }
        rs[i] = SG_FN(hsum)(qr);
        zsq[i] = SG_FN(hsum)(qz);
        gsq[i] = SG_FN(hsum)(qg);
    }
    return 0;
}

/* The next layer's fixed target of a hidden Z step, for m rows of n columns:
 * Zb_i := Zn_i - b, with zbsq_i = ||Zb_i||^2 and rnsq_i = ||Rn_i||^2 (out). */
static int SG_FN(target_rows)(ptrdiff_t m, ptrdiff_t n, const SG_T *Zn, const SG_T *b,
                              const SG_T *Rn, SG_T *Zb, double *zbsq, double *rnsq)
{
    for (ptrdiff_t i = 0; i < m; i++) {
        const SG_T *zn = Zn + i * n, *rn = Rn + i * n;
        SG_T *zb = Zb + i * n;
        SG_V qb = {0}, qn = {0}, zv, bv, rv;
        ptrdiff_t j = 0;
        for (; j + SG_VL <= n; j += SG_VL) {
            zv = SG_FN(ld)(zn + j);
            bv = SG_FN(ld)(b + j);
            rv = SG_FN(ld)(rn + j);
            zv = zv - bv;
            SG_FN(st)(zb + j, zv);
            qb += zv * zv; qn += rv * rv;
        }
        if (j < n) {
            ptrdiff_t tail = n - j;
            zv = SG_FN(load_tail)(zn + j, tail) - SG_FN(load_tail)(b + j, tail);
            rv = SG_FN(load_tail)(rn + j, tail);
            SG_FN(store_tail)(zb + j, zv, tail);
            qb += zv * zv; qn += rv * rv;
        }
        zbsq[i] = SG_FN(hsum)(qb);
        rnsq[i] = SG_FN(hsum)(qn);
    }
    return 0;
}

/* Rows [p0, p0 + pr) of C += A^T B (nv full + h half vectors of columns), the sum over
 * all M rows held in registers; with colsum, colsum (nv + h slots) := the column sums of B
 * over the M rows, from the rows the tile loads anyway. */
static inline __attribute__((always_inline)) void
SG_FN(tn_tile)(int pr, int nv, int h, ptrdiff_t M, ptrdiff_t n, const SG_T *A, ptrdiff_t lda,
               const SG_T *B, ptrdiff_t ldb, SG_T *C, ptrdiff_t ldc, SG_V *colsum)
{
    /* pr <= 8: 8 only with 32 vector registers */
    SG_V acc[8][SG_MAXS], b[SG_MAXS], c[SG_MAXS], cs[SG_MAXS];
    SG_H acch[8], bh = {0}, ch = {0}, csh = {0};
    for (int i = 0; i < pr; i++) {
        for (int j = 0; j < nv; j++)
            acc[i][j] = (SG_V){0};
        acch[i] = (SG_H){0};
    }
    for (int j = 0; j < nv; j++)
        cs[j] = (SG_V){0};
    for (ptrdiff_t r = 0; r < M; r++) {
        SG_FN(load_row2)(b, &bh, B + r * ldb, nv, h, n);
        if (colsum) {
            for (int j = 0; j < nv; j++)
                cs[j] += b[j];
            if (h)
                csh += bh;
        }
        for (int i = 0; i < pr; i++) {
            SG_V a = SG_FN(splat)(A[r * lda + i]);
            for (int j = 0; j < nv; j++)
                acc[i][j] += a * b[j];
            if (h)
                acch[i] += SG_FN(lov)(a) * bh;
        }
    }
    for (int i = 0; i < pr; i++) {
        SG_FN(load_row2)(c, &ch, C + i * ldc, nv, h, n);
        for (int j = 0; j < nv; j++)
            c[j] += acc[i][j];
        if (h)
            ch += acch[i];
        SG_FN(store_row2)(C + i * ldc, c, ch, nv, h, n);
    }
    if (colsum) {
        for (int j = 0; j < nv; j++)
            colsum[j] = cs[j];
        if (h) {
            colsum[nv] = (SG_V){0};
            memcpy(&colsum[nv], &csh, sizeof csh);
        }
    }
}

static inline __attribute__((always_inline)) void
SG_FN(tn_cols)(int nv, int h, ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const SG_T *A,
               ptrdiff_t lda, const SG_T *B, ptrdiff_t ldb, SG_T *C, ptrdiff_t ldc)
{
    const int tr = SG_TILE_ROWS(nv + h);
    ptrdiff_t p = 0;
    for (; p + tr <= k; p += tr)
        SG_FN(tn_tile)(tr, nv, h, M, n, A + p, lda, B, ldb, C + p * ldc, ldc, NULL);
    for (; p < k; p++)
        SG_FN(tn_tile)(1, nv, h, M, n, A + p, lda, B, ldb, C + p * ldc, ldc, NULL);
}

static int SG_FN(tn_acc)(ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const SG_T *A,
                         ptrdiff_t lda, const SG_T *B, ptrdiff_t ldb, SG_T *C, ptrdiff_t ldc)
{
    if (n <= 0 || k <= 0)
        return 0;
    if ((n + SG_VL - 1) / SG_VL > SG_MAXS)
        return 1;
    /* rows in L1-sized chunks of A and B: unchunked, the 10 tiles of a 20x20 C in
     * float64 on AVX2 streamed all of a 3000-row B from L2 ten times */
    const ptrdiff_t rb = SG_FN(l1_rows)(k + n);
    int shape = SG_FN(shape)(n);
    for (ptrdiff_t r0 = 0; r0 < M; r0 += rb) {
        ptrdiff_t mb = M - r0 < rb ? M - r0 : rb;
        const SG_T *a = A + r0 * lda, *b = B + r0 * ldb;
        switch (shape) {
#define SG_TN_CASE(v, hh) \
        case 2 * (v) + (hh): SG_FN(tn_cols)(v, hh, mb, k, n, a, lda, b, ldb, C, ldc); break;
        SG_SHAPES(SG_TN_CASE)
#undef SG_TN_CASE
        default: return 1;
        }
    }
    return 0;
}

/* The derivative factor applied to a vector x of the product from the vector s of S:
 * deriv 1: 1 - s^2 (tanh, S = A), 2: s (1 - s) (sigmoid), 3: [s > 0] (relu), 4: s itself
 * (S = sigma'(Z)), 0: none.  For full and half vectors alike. */
#define SG_DERIV_APPLY(x, s, one, deriv)                                          \
    do {                                                                        \
        if ((deriv) == 1)                                                       \
            (x) *= (one) - (s) * (s);                                           \
        else if ((deriv) == 2)                                                  \
            (x) *= (s) * ((one) - (s));                                         \
        else if ((deriv) == 3)                                                  \
            (x) = (__typeof__(x))((__typeof__((s) > (s)))(x) & ((s) > (one) * 0)); \
        else if ((deriv) == 4)                                                  \
            (x) *= (s);                                                         \
    } while (0)

/* mr rows x (nv full + h half) vectors of Dp := (delta Wt) * sigma' (Wt: W^T packed as n
 * rows of nv + h vectors, zero past k), the derivative applied in the store from the rows
 * of S per `deriv` (SG_DERIV_APPLY). */
static inline __attribute__((always_inline)) void
SG_FN(bp_tile)(int mr, int nv, int h, ptrdiff_t n, ptrdiff_t k, const SG_T *delta,
               const SG_V *Wt, const SG_T *S, int deriv, SG_T *Dp)
{
    const int nt = nv + h;
    SG_V acc[4][SG_MAXS], w[SG_MAXS], s[SG_MAXS];
    SG_H acch[4], wh = {0}, sh = {0};
    const SG_V one = (SG_V){0} + (SG_T)1;
    const SG_H oneh = (SG_H){0} + (SG_T)1;
    for (int i = 0; i < mr; i++) {
        for (int j = 0; j < nv; j++)
            acc[i][j] = (SG_V){0};
        acch[i] = (SG_H){0};
    }
    for (ptrdiff_t p = 0; p < n; p++) {
        for (int j = 0; j < nv; j++)
            w[j] = Wt[p * nt + j];
        if (h)
            wh = SG_FN(lo)(&Wt[p * nt + nv]);
        for (int i = 0; i < mr; i++) {
            SG_V d = SG_FN(splat)(delta[i * n + p]);
            for (int j = 0; j < nv; j++)
                acc[i][j] += d * w[j];
            if (h)
                acch[i] += SG_FN(lov)(d) * wh;
        }
    }
    for (int i = 0; i < mr; i++) {
        if (deriv) {
            SG_FN(load_row2)(s, &sh, S + i * k, nv, h, k);
            for (int j = 0; j < nv; j++)
                SG_DERIV_APPLY(acc[i][j], s[j], one, deriv);
            if (h)
                SG_DERIV_APPLY(acch[i], sh, oneh, deriv);
        }
        SG_FN(store_row2)(Dp + i * k, acc[i], acch[i], nv, h, k);
    }
}

static inline __attribute__((always_inline)) void
SG_FN(bp_rows)(int nv, int h, ptrdiff_t M, ptrdiff_t n, ptrdiff_t k, const SG_T *delta,
               const SG_V *Wt, const SG_T *S, int deriv, SG_T *Dp, const SG_T *pa,
               const SG_T *pd)
{
    const int tr = SG_TILE_ROWS(nv + h);
    ptrdiff_t r = 0;
    for (; r + tr <= M; r += tr) {
        if (pa) {
            for (ptrdiff_t o = 0; o < tr * k; o += 64 / (ptrdiff_t)sizeof(SG_T))
                __builtin_prefetch(pa + r * k + o);
            for (ptrdiff_t o = 0; o < tr * n; o += 64 / (ptrdiff_t)sizeof(SG_T))
                __builtin_prefetch(pd + r * n + o);
        }
        SG_FN(bp_tile)(tr, nv, h, n, k, delta + r * n, Wt, S + r * k, deriv, Dp + r * k);
    }
    for (; r < M; r++)
        SG_FN(bp_tile)(1, nv, h, n, k, delta + r * n, Wt, S + r * k, deriv, Dp + r * k);
}

/* C += A^T B as tn_cols, in tiles of 8 rows of C where the registers hold them (AVX-512,
 * up to 3 vector slots), and colsum := the column sums of B (from the first tile's pass
 * over B's rows). */
static inline __attribute__((always_inline)) void
SG_FN(tn_cols_bp)(int nv, int h, ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const SG_T *A,
                  ptrdiff_t lda, const SG_T *B, ptrdiff_t ldb, SG_T *C, ptrdiff_t ldc,
                  SG_V *colsum)
{
    ptrdiff_t p = 0;    /* the first tile, whichever it is, also sums B's columns */
#if LYSEP_VBYTES == 64
    if (nv + h <= 3 && k >= 8) {
        SG_FN(tn_tile)(8, nv, h, M, n, A, lda, B, ldb, C, ldc, colsum);
        for (p = 8; p + 8 <= k; p += 8)
            SG_FN(tn_tile)(8, nv, h, M, n, A + p, lda, B, ldb, C + p * ldc, ldc, NULL);
    }
#endif
    const int tr = SG_TILE_ROWS(nv + h);
    if (p == 0 && k >= tr) {
        SG_FN(tn_tile)(tr, nv, h, M, n, A, lda, B, ldb, C, ldc, colsum);
        p = tr;
    }
    for (; p + tr <= k; p += tr)
        SG_FN(tn_tile)(tr, nv, h, M, n, A + p, lda, B, ldb, C + p * ldc, ldc, NULL);
    if (p == 0) {
        SG_FN(tn_tile)(1, nv, h, M, n, A, lda, B, ldb, C, ldc, colsum);
        p = 1;
    }
    for (; p < k; p++)
        SG_FN(tn_tile)(1, nv, h, M, n, A + p, lda, B, ldb, C + p * ldc, ldc, NULL);
}

/* One layer of backpropagation (MATH.md §7), its rows in chunks of about 64 KB of A, delta
 * and Dp, so that a chunk's A and delta (read by every pass) about fill L1; 48-row chunks
 * measured 1-4 us slower at 3000x20x20 (the tiles' start-up and the store of gW per chunk): gW := A^T delta,
 * gb := column sums of delta (chunk sums added in double) and, when Dp is not NULL,
 * Dp := (delta W^T) * sigma' with sigma' from the rows of S per `deriv` (as in bp_tile).
 * A and S are M x k, delta M x n, W k x n, Dp M x k, all with contiguous rows.  Returns 1
 * when n (or, with Dp, k) is wider than the kernels take or scratch memory is unavailable;
 * the caller then uses BLAS. */
static int SG_FN(backprop)(ptrdiff_t M, ptrdiff_t k, ptrdiff_t n, const SG_T *A,
                           const SG_T *delta, const SG_T *W, const SG_T *S, int deriv,
                           SG_T *gW, double *gb, SG_T *Dp)
{
    int nvn = (int)((n + SG_VL - 1) / SG_VL), nvk = (int)((k + SG_VL - 1) / SG_VL);
    if (n <= 0 || k <= 0 || nvn > SG_MAXS || (Dp && nvk > SG_MAXS))
        return 1;
    SG_V Wstack[128], sum[SG_MAXS];
    size_t need = Dp ? (size_t)n * nvk : 1;
    SG_V *Wt = need <= 128 ? Wstack : (SG_V *)malloc(need * sizeof(SG_V));
    if (!Wt)
        return 1;
    if (Dp) {
        for (size_t v = 0; v < need; v++)
            Wt[v] = (SG_V){0};
        for (ptrdiff_t q = 0; q < k; q++)
            for (ptrdiff_t p = 0; p < n; p++)
                Wt[p * nvk + q / SG_VL][q % SG_VL] = W[q * n + p];
    }
    memset(gW, 0, (size_t)(k * n) * sizeof(SG_T));
    for (ptrdiff_t j = 0; j < n; j++)
        gb[j] = 0;
    ptrdiff_t rb = 65536 / (ptrdiff_t)((2 * k + n) * sizeof(SG_T));
    rb = rb < 8 ? 8 : rb & ~(ptrdiff_t)3;
    int shape_n = SG_FN(shape)(n), shape_k = Dp ? SG_FN(shape)(k) : 0;
    int dv = deriv >= 0 && deriv <= 4 ? deriv : 0;
    for (ptrdiff_t r0 = 0; r0 < M; r0 += rb) {
        ptrdiff_t mb = M - r0 < rb ? M - r0 : rb;
        const SG_T *a = A + r0 * k, *d = delta + r0 * n;
        switch (shape_n) {      /* gW and the chunk's column sums of delta in one pass */
#define SG_TNB_CASE(v, hh) \
        case 2 * (v) + (hh): SG_FN(tn_cols_bp)(v, hh, mb, k, n, a, k, d, n, gW, n, sum); break;
        SG_SHAPES(SG_TNB_CASE)
#undef SG_TNB_CASE
        default: break;
        }
        for (ptrdiff_t j = 0; j < n; j++)
            gb[j] += (double)sum[j / SG_VL][j % SG_VL];
        if (Dp) {   /* constant tile shape and derivative: the tile stays in registers */
            const SG_T *s = S ? S + r0 * k : NULL;
            SG_T *dp = Dp + r0 * k;
            /* the next chunk's A and delta are requested while this one computes */
            const SG_T *pa = r0 + rb + mb <= M ? A + (r0 + rb) * k : NULL;
            const SG_T *pd = pa ? delta + (r0 + rb) * n : NULL;
#define SG_BP_CASE(v, hh, dd) \
            case 16 * (2 * (v) + (hh)) + (dd): \
                SG_FN(bp_rows)(v, hh, mb, n, k, d, Wt, s, dd, dp, pa, pd); break;
#define SG_BP_CASES(v, hh) SG_BP_CASE(v, hh, 0) SG_BP_CASE(v, hh, 1) SG_BP_CASE(v, hh, 2) \
            SG_BP_CASE(v, hh, 3) SG_BP_CASE(v, hh, 4)
            switch (16 * shape_k + dv) {
            SG_SHAPES(SG_BP_CASES)
            default: break;
            }
#undef SG_BP_CASES
#undef SG_BP_CASE
        }
    }
    if (Wt != Wstack)
        free(Wt);
    return 0;
}

/* Column group [j0, j0 + w) of the Gram matrix, rows [0, j0 + w): C += A^T A there. */
static inline __attribute__((always_inline)) void
SG_FN(gram_group)(int nv, ptrdiff_t M, ptrdiff_t j0, ptrdiff_t w, const SG_T *A,
                  ptrdiff_t lda, SG_T *C, ptrdiff_t ldc)
{
    ptrdiff_t p = 0, j1 = j0 + w;
    for (; p + 4 <= j1; p += 4)
        SG_FN(tn_tile)(4, nv, 0, M, w, A + p, lda, A + j0, lda, C + p * ldc + j0, ldc, NULL);
    for (; p < j1; p++)
        SG_FN(tn_tile)(1, nv, 0, M, w, A + p, lda, A + j0, lda, C + p * ldc + j0, ldc, NULL);
}

/* The upper triangle (p <= j) of the Gram matrix of A's rows: C (n x n) += A^T A there;
 * entries below the diagonal inside the diagonal blocks are touched too (garbage for the
 * caller to overwrite by symmetry).  Columns go in groups of three vectors, rows of A in
 * blocks of about 32 KB so that the block stays in L1 while every tile of the triangle
 * passes over it: the Gram matrix of a conv layer's patches (k*k*C_in ~ 72 columns),
 * where syrk on a chunk of patch rows ran at about half the DGEMM rate. */
static int SG_FN(gram_acc)(ptrdiff_t M, ptrdiff_t n, const SG_T *A, ptrdiff_t lda,
                           SG_T *C, ptrdiff_t ldc)
{
    const ptrdiff_t W = 3 * SG_VL;
    const ptrdiff_t rb = SG_FN(l1_rows)(n);
    for (ptrdiff_t r0 = 0; r0 < M; r0 += rb) {
        ptrdiff_t mb = M - r0 < rb ? M - r0 : rb;
        const SG_T *Ab = A + r0 * lda;
        for (ptrdiff_t j0 = 0; j0 < n; j0 += W) {
            ptrdiff_t w = n - j0 < W ? n - j0 : W;
            switch ((int)((w + SG_VL - 1) / SG_VL)) {
            case 1: SG_FN(gram_group)(1, mb, j0, w, Ab, lda, C, ldc); break;
            case 2: SG_FN(gram_group)(2, mb, j0, w, Ab, lda, C, ldc); break;
            default: SG_FN(gram_group)(3, mb, j0, w, Ab, lda, C, ldc); break;
            }
        }
    }
    return 0;
}

/* Sum of squares of x[0..n) in vectors of the element type, four independent
 * accumulators so the additions do not wait on each other, lanes summed last.  Only
 * the double variant is exposed (float arrays keep their sums in double elsewhere). */
static double SG_FN(ssq)(ptrdiff_t n, const SG_T *x)
{
    SG_V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, v0, v1, v2, v3;
    ptrdiff_t i = 0;
    for (; i + 4 * SG_VL <= n; i += 4 * SG_VL) {
        v0 = SG_FN(ld)(x + i);
        v1 = SG_FN(ld)(x + i + SG_VL);
        v2 = SG_FN(ld)(x + i + 2 * SG_VL);
        v3 = SG_FN(ld)(x + i + 3 * SG_VL);
        s0 += v0 * v0; s1 += v1 * v1; s2 += v2 * v2; s3 += v3 * v3;
    }
    for (; i + SG_VL <= n; i += SG_VL) {
        v0 = SG_FN(ld)(x + i);
        s0 += v0 * v0;
    }
    if (i < n) {
        v1 = SG_FN(load_tail)(x + i, n - i);
        s1 += v1 * v1;
    }
    return SG_FN(hsum)((s0 + s1) + (s2 + s3));
}

#undef SG_CAT3_
#undef SG_CAT3
#undef SG_HALF_OK
#undef SG_H
#undef SG_HL
#undef SG_SHAPES
#undef SG_MAXS
#undef SG_TILE_ROWS
#undef SG_DERIV_APPLY
#undef SG_FN
#undef SG_V
#undef SG_VL
