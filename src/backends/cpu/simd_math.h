/* Vectorized exp, exp2, log2 and log for float32 in the vector layer of
 * simd.h, for tiles that need transcendental functions. Included once per
 * ISA level, so no include guard.
 *
 * Each is written once; only the exponent split below and, where the
 * split does not cover zero, subnormals, infinities and NaN itself, the
 * test that sends those lanes to libm differ per level. */
#include "backends/cpu/simd.h"

#include <float.h>

#undef vmath_split
#undef vmath_special
#undef vmath_scale2_nonpos
#undef vmath_scale2_normal

/* x = m * 2^e with m in [0.75, 1.5). VMATH_SPLIT_EXACT: the split itself
 * gives the right log for every x (AVX-512's getexp and getmant take
 * subnormals, zero, infinities, NaN and negative x, the last as NaN);
 * elsewhere it covers positive normal x only. */
#undef VMATH_SPLIT_EXACT
#if TSR_SIMD_LEVEL == 2
#define VMATH_SPLIT_EXACT 1
#define vmath_split(x, m, e)                                                                       \
    do {                                                                                           \
        (m) = _mm512_getmant_ps(x, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_nan);                      \
        (e) = _mm512_getexp_ps(x);                                                                 \
        (e) = _mm512_mask_add_ps(e, _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.0f), _CMP_LT_OQ), e,    \
                                 _mm512_set1_ps(1.0f));                                            \
    } while (0)
#define vmath_scale2_nonpos(p, n) vf_scale2(p, n)
#define vmath_scale2_normal(p, n) vf_scale2(p, n)
#elif TSR_SIMD_LEVEL == 1
/* The bits less those of 0.75, shifted, are e (a mantissa of 1.5 or more
 * carries into the exponent); the bits less e's give m. */
#define VMATH_SPLIT_EXACT 0
#define vmath_split(x, m, e)                                                                       \
    do {                                                                                           \
        __m256i bits_ = _mm256_castps_si256(x);                                                    \
        __m256i ex_ =                                                                              \
            _mm256_srai_epi32(_mm256_sub_epi32(bits_, _mm256_set1_epi32(0x3f400000)), 23);         \
        (m) = _mm256_castsi256_ps(_mm256_sub_epi32(bits_, _mm256_slli_epi32(ex_, 23)));            \
        (e) = _mm256_cvtepi32_ps(ex_);                                                             \
    } while (0)
#define vmath_special(x) tsr_vmath_special_avx2(x)
/* p 2^n for integer-valued n and p in [0.7, 1.42] where the result is a
 * normal number: n added to the exponent field. */
#define vmath_scale2_normal(p, n)                                                                  \
    _mm256_castsi256_ps(                                                                           \
        _mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23)))
/* The same for integer-valued n <= 0, exact while the result is normal;
 * below 2^-125 it is flushed to zero. */
#define vmath_scale2_nonpos(p, n)                                                                  \
    _mm256_andnot_ps(_mm256_cmp_ps(n, _mm256_set1_ps(-125.0f), _CMP_LT_OQ),                        \
                     vmath_scale2_normal(p, n))
#ifndef TSR_VMATH_AVX2_HELPERS
#define TSR_VMATH_AVX2_HELPERS
/* Whether any lane is outside [FLT_MIN, FLT_MAX] or NaN: those lanes' bits
 * less FLT_MIN's, unsigned, exceed FLT_MAX's less FLT_MIN's. */
__attribute__((target("avx2,fma"))) static inline int tsr_vmath_special_avx2(__m256 x)
{
    __m256i off = _mm256_sub_epi32(_mm256_castps_si256(x), _mm256_set1_epi32(0x00800000));
    __m256i ok = _mm256_cmpeq_epi32(_mm256_min_epu32(off, _mm256_set1_epi32(0x7effffff)), off);
    return _mm256_movemask_ps(_mm256_castsi256_ps(ok)) != 0xff;
}
#endif
#elif TSR_SIMD_LEVEL == 3
/* As AVX2's, in NEON's integer lanes. */
#define VMATH_SPLIT_EXACT 0
#define vmath_split(x, m, e)                                                                       \
    do {                                                                                           \
        int32x4_t bits_ = vreinterpretq_s32_f32(x);                                                \
        int32x4_t ex_ = vshrq_n_s32(vsubq_s32(bits_, vdupq_n_s32(0x3f400000)), 23);                \
        (m) = vreinterpretq_f32_s32(vsubq_s32(bits_, vshlq_n_s32(ex_, 23)));                       \
        (e) = vcvtq_f32_s32(ex_);                                                                  \
    } while (0)
/* Any lane outside [FLT_MIN, FLT_MAX] or NaN, as AVX2's test. */
#define vmath_special(x)                                                                           \
    (vmaxvq_u32(vcgtq_u32(vsubq_u32(vreinterpretq_u32_f32(x), vdupq_n_u32(0x00800000)),            \
                          vdupq_n_u32(0x7effffff))) != 0)
/* As AVX2's: the exponent field plus n, and for nonpos flushed to zero
 * below 2^-125. */
#define vmath_scale2_normal(p, n)                                                                  \
    vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p), vshlq_n_s32(vcvtq_s32_f32(n), 23)))
#define vmath_scale2_nonpos(p, n)                                                                  \
    vbslq_f32(vcltq_f32(n, vdupq_n_f32(-125.0f)), vdupq_n_f32(0.0f), vmath_scale2_normal(p, n))
#elif TSR_SIMD_LEVEL == 4
/* As AVX2's, in SVE's integer lanes; only the scaling of v_exp and v_exp2
 * differs (FSCALE, exact as AVX-512's scalef). */
#define VMATH_SPLIT_EXACT 0
#define vmath_split(x, m, e)                                                                       \
    do {                                                                                           \
        svint32_t bits_ = svreinterpret_s32_f32(x);                                                \
        svint32_t ex_ = svasr_n_s32_x(SVE_ALL, svsub_n_s32_x(SVE_ALL, bits_, 0x3f400000), 23);     \
        (m) = svreinterpret_f32_s32(svsub_s32_x(SVE_ALL, bits_, svlsl_n_s32_x(SVE_ALL, ex_, 23))); \
        (e) = svcvt_f32_s32_x(SVE_ALL, ex_);                                                       \
    } while (0)
/* Any lane outside [FLT_MIN, FLT_MAX] or NaN, as AVX2's test. */
#define vmath_special(x)                                                                           \
    svptest_any(SVE_ALL,                                                                           \
                svcmpgt_n_u32(SVE_ALL,                                                             \
                              svsub_n_u32_x(SVE_ALL, svreinterpret_u32_f32(x), 0x00800000u),       \
                              0x7effffffu))
/* As AVX2's: the exponent field plus n, and for nonpos flushed to zero
 * below 2^-125. */
#define vmath_scale2_normal(p, n)                                                                  \
    svreinterpret_f32_s32(svadd_s32_x(SVE_ALL, svreinterpret_s32_f32(p),                           \
                                      svlsl_n_s32_x(SVE_ALL, svcvt_s32_f32_x(SVE_ALL, n), 23)))
#define vmath_scale2_nonpos(p, n)                                                                  \
    svsel_f32(svcmplt_n_f32(SVE_ALL, n, -125.0f), svdup_n_f32(0.0f), vmath_scale2_normal(p, n))
#else
#define VMATH_SPLIT_EXACT 0
#define vmath_split(x, m, e)                                                                       \
    do {                                                                                           \
        int ex_;                                                                                   \
        float m1_ = frexpf(x, &ex_);                                                               \
        if (m1_ < 0.75f) {                                                                         \
            m1_ *= 2.0f;                                                                           \
            ex_--;                                                                                 \
        }                                                                                          \
        (m) = m1_;                                                                                 \
        (e) = (float)ex_;                                                                          \
    } while (0)
#define vmath_special(x) (!((x) >= FLT_MIN && (x) <= FLT_MAX))
#define vmath_scale2_nonpos(p, n) vf_scale2(p, n)
#define vmath_scale2_normal(p, n) vf_scale2(p, n)
#endif

/* e^x = p 2^n: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two so n ln2
 * is exact), p a degree-7 Taylor polynomial for e^r (error below 1e-8 on
 * that range). */
SIMD_TARGET static inline vf SIMD_NAME(v_exp_parts)(vf x, vf *np)
{
    vf n = vf_round(vf_mul(x, vf_set1(1.44269504088896341f)));
    vf r = vf_fmadd(n, vf_set1(-0.693359375f), x);
    r = vf_fmadd(n, vf_set1(2.12194440e-4f), r);
    vf p = vf_set1(1.0f / 5040.0f);
    p = vf_fmadd(p, r, vf_set1(1.0f / 720.0f));
    p = vf_fmadd(p, r, vf_set1(1.0f / 120.0f));
    p = vf_fmadd(p, r, vf_set1(1.0f / 24.0f));
    p = vf_fmadd(p, r, vf_set1(1.0f / 6.0f));
    p = vf_fmadd(p, r, vf_set1(0.5f));
    p = vf_fmadd(p, r, vf_set1(1.0f));
    *np = n;
    return vf_fmadd(p, r, vf_set1(1.0f));
}

/* e^x, with the exact scaling by 2^n. Clamping keeps n in the range
 * vf_scale2 handles; the bounds lie past overflow and underflow of the
 * result, and keep NaN (x as the second operand). */
SIMD_TARGET static inline vf SIMD_NAME(v_exp)(vf x)
{
    vf n, p = SIMD_NAME(v_exp_parts)(vf_min(vf_set1(89.0f), vf_max(vf_set1(-104.0f), x)), &n);
    return vf_scale2(p, n);
}

/* e^x as v_exp for x in [-86, 87] (or NaN), where the result is a normal
 * number and the exponent field takes 2^n: three instructions where the
 * exact scaling takes eleven on AVX2, NEON and SVE. Other x give
 * unspecified values. */
SIMD_TARGET static inline vf SIMD_NAME(v_exp_normal)(vf x)
{
    vf n, p = SIMD_NAME(v_exp_parts)(x, &n);
    return vmath_scale2_normal(p, n);
}

/* 2^r for |r| <= 1/2: a degree-6 polynomial fitted here for relative
 * error (2e-9; about 1e-7 once rounded to float32). */
SIMD_TARGET static inline vf SIMD_NAME(v_exp2_poly)(vf r)
{
    vf p = vf_set1(1.5353300841525197e-4f);
    p = vf_fmadd(p, r, vf_set1(1.3398848241195083e-3f));
    p = vf_fmadd(p, r, vf_set1(9.61843691766262e-3f));
    p = vf_fmadd(p, r, vf_set1(5.5503323674201965e-2f));
    p = vf_fmadd(p, r, vf_set1(0.24022647738456726f));
    p = vf_fmadd(p, r, vf_set1(0.6931471824645996f));
    return vf_fmadd(p, r, vf_set1(1.0f));
}

/* 2^x for x in [-150, 128] or NaN: x = n + r with n an integer and
 * |r| <= 1/2 (exact), 2^r, then the exact scaling by 2^n; clamping as
 * v_exp. */
SIMD_TARGET static inline vf SIMD_NAME(v_exp2)(vf x)
{
    x = vf_min(vf_set1(128.0f), vf_max(vf_set1(-150.0f), x));
    vf n = vf_round(x);
    return vf_scale2(SIMD_NAME(v_exp2_poly)(vf_sub(x, n)), n);
}

/* 2^x for x <= 0 (or NaN), one clamp fewer and, on AVX2, results below
 * 2^-125 flushed to zero: a scaling of three instructions where the exact
 * one takes eleven (DPP's weights, where such a term is nothing next to
 * the largest, which is 1). */
SIMD_TARGET static inline vf SIMD_NAME(v_exp2_nonpos)(vf x)
{
    x = vf_max(vf_set1(-150.0f), x);
    vf n = vf_round(x);
    return vmath_scale2_nonpos(SIMD_NAME(v_exp2_poly)(vf_sub(x, n)), n);
}

#if !VMATH_SPLIT_EXACT
/* Lanes that the split does not cover (zero, subnormal, negative,
 * infinite, NaN) go through libm one by one: rare, and exact there. */
SIMD_TARGET static vf SIMD_NAME(v_log2_special)(vf x, vf fast)
{
    float xs[SIMD_W], rs[SIMD_W];
    vf_store(xs, x);
    vf_store(rs, fast);
    for (int i = 0; i < SIMD_W; i++)
        if (!(xs[i] >= FLT_MIN && xs[i] <= FLT_MAX))
            rs[i] = log2f(xs[i]);
    return vf_load(rs);
}
#endif

/* log2 x: x = m 2^e with m in [0.75, 1.5), f = m - 1 and
 * log2(1 + f) = f P(f), P of degree 8 fitted here for relative error
 * (3e-8; about 1.6e-7 once rounded to float32, near 1 too). */
SIMD_TARGET static inline vf SIMD_NAME(v_log2)(vf x)
{
    vf m, e;
    vmath_split(x, m, e);
    vf f = vf_sub(m, vf_set1(1.0f));
    vf p = vf_set1(0.07806090265512466f);
    p = vf_fmadd(p, f, vf_set1(-0.17421916127204895f));
    p = vf_fmadd(p, f, vf_set1(0.2163192480802536f));
    p = vf_fmadd(p, f, vf_set1(-0.24272343516349792f));
    p = vf_fmadd(p, f, vf_set1(0.2881919741630554f));
    p = vf_fmadd(p, f, vf_set1(-0.36057597398757935f));
    p = vf_fmadd(p, f, vf_set1(0.4809020757675171f));
    p = vf_fmadd(p, f, vf_set1(-0.7213484644889832f));
    p = vf_fmadd(p, f, vf_set1(1.4426950216293335f));
    vf r = vf_fmadd(p, f, e);
#if !VMATH_SPLIT_EXACT
    if (vmath_special(x))
        r = SIMD_NAME(v_log2_special)(x, r);
#endif
    return r;
}

/* log2 x within about 6e-8 absolute (before rounding; the rounding of the
 * result dominates once |log2 x| > 1), for the per-tap weights of DPP,
 * where it costs a third of v_log2's work: x = m 2^e with m in [1, 2),
 * whose leading mantissa bits pick r_i ~ 1 / m from a table held in one
 * register (16 entries with AVX-512, 8 with AVX2), so that m r_i = 1 + f
 * with |f| <= 1/33 (or 1/17) and log2 x = e - log2 r_i + f P(f), P of
 * degree 2 (or 3) fitted here; the levels without a lane permute take
 * v_log2. Special values as v_log2 (AVX-512's split covers them, AVX2
 * sends them to libm). v_log2_fast_normal is the same for positive normal
 * finite x only, what it gives for others unspecified, without the test
 * for special values: for callers that test once for many values (AVX2;
 * elsewhere it is v_log2_fast). */
#if TSR_SIMD_LEVEL == 2
SIMD_TARGET static inline vf SIMD_NAME(v_log2_fast)(vf x)
{
    const __m512 rcp = _mm512_setr_ps(
        0.9696969985961914f, 0.9142857193946838f, 0.8648648858070374f, 0.8205128312110901f,
        0.7804877758026123f, 0.7441860437393188f, 0.7111111283302307f, 0.6808510422706604f,
        0.6530612111091614f, 0.6274510025978088f, 0.6037735939025879f, 0.581818163394928f,
        0.5614035129547119f, 0.5423728823661804f, 0.5245901346206665f, 0.5079365372657776f);
    const __m512 lg = _mm512_setr_ps(
        0.044394075870513916f, 0.12928301095962524f, 0.20945332944393158f, 0.28540220856666565f,
        0.35755205154418945f, 0.42626476287841797f, 0.4918530583381653f, 0.5545889139175415f,
        0.6147098541259766f, 0.6724252700805664f, 0.727920413017273f, 0.7813597321510315f,
        0.832889974117279f, 0.8826430439949036f, 0.9307374358177185f, 0.9772798418998718f);
    __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_nan);
    __m512 e = _mm512_getexp_ps(x);
    /* vpermps reads the low 4 bits of each index: the mantissa's top 4. */
    __m512i i = _mm512_srli_epi32(_mm512_castps_si512(m), 19);
    __m512 f = _mm512_fmsub_ps(m, _mm512_permutexvar_ps(i, rcp), _mm512_set1_ps(1.0f));
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(0.4812808036804199f), f,
                               _mm512_set1_ps(-0.7216275930404663f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.442694902420044f));
    return _mm512_add_ps(e, _mm512_fmadd_ps(p, f, _mm512_permutexvar_ps(i, lg)));
}
#elif TSR_SIMD_LEVEL == 1
SIMD_TARGET static inline vf SIMD_NAME(v_log2_fast_normal)(vf x)
{
    const __m256 rcp = _mm256_setr_ps(0.9411764740943909f, 0.8421052694320679f, 0.761904776096344f,
                                      0.695652186870575f, 0.6399999856948853f, 0.5925925970077515f,
                                      0.5517241358757019f, 0.5161290168762207f);
    const __m256 lg = _mm256_setr_ps(0.08746283501386642f, 0.2479275017976761f,
                                     0.39231738448143005f, 0.523561954498291f, 0.6438562273979187f,
                                     0.7548874616622925f, 0.8579810261726379f, 0.9541963338851929f);
    __m256i bits = _mm256_castps_si256(x);
    __m256 e =
        _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000)));
    /* vpermps reads the low 3 bits of each index: the mantissa's top 3. */
    __m256i i = _mm256_srli_epi32(bits, 20);
    __m256 f = _mm256_fmsub_ps(m, _mm256_permutevar8x32_ps(rcp, i), _mm256_set1_ps(1.0f));
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(-0.3620647192001343f), f,
                               _mm256_set1_ps(0.48216941952705383f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(-0.7213456034660339f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.4426939487457275f));
    return _mm256_add_ps(e, _mm256_fmadd_ps(p, f, _mm256_permutevar8x32_ps(lg, i)));
}
SIMD_TARGET static inline vf SIMD_NAME(v_log2_fast)(vf x)
{
    vf r = SIMD_NAME(v_log2_fast_normal)(x);
    if (vmath_special(x))
        r = SIMD_NAME(v_log2_special)(x, r);
    return r;
}
#else
SIMD_TARGET static inline vf SIMD_NAME(v_log2_fast)(vf x)
{
    return SIMD_NAME(v_log2)(x);
}
#endif
#if TSR_SIMD_LEVEL != 1
SIMD_TARGET static inline vf SIMD_NAME(v_log2_fast_normal)(vf x)
{
    return SIMD_NAME(v_log2_fast)(x);
}
#endif

/* 2^x for x <= 0 (or NaN) as v_exp2_nonpos with a polynomial of degree 5
 * (2^r = 1 + r Q(r), fitted here: 9e-8 absolute, so 1 stays 1; 2e-7
 * relative once rounded to float32), one
 * multiply-add fewer for DPP's per-tap weights. */
SIMD_TARGET static inline vf SIMD_NAME(v_exp2_nonpos_fast)(vf x)
{
    x = vf_max(vf_set1(-150.0f), x);
    vf n = vf_round(x);
    vf r = vf_sub(x, n);
    vf q = vf_set1(0.0013407253427430987f);
    q = vf_fmadd(q, r, vf_set1(0.009671875275671482f));
    q = vf_fmadd(q, r, vf_set1(0.055503085255622864f));
    q = vf_fmadd(q, r, vf_set1(0.24022234976291656f));
    q = vf_fmadd(q, r, vf_set1(0.6931472420692444f));
    return vmath_scale2_nonpos(vf_fmadd(q, r, vf_set1(1.0f)), n);
}

/* ln x, as log2 x ln 2. */
SIMD_TARGET static inline vf SIMD_NAME(v_log)(vf x)
{
    return vf_mul(SIMD_NAME(v_log2)(x), vf_set1(0.69314718055994531f));
}
