/* The vector layer the cpu backend's tiles are written in, for one
 * instruction set: TSR_SIMD_LEVEL 0 (portable C, one lane), 1 (AVX2 + FMA,
 * 8 lanes), 2 (AVX-512F, 16 lanes), 3 (aarch64 NEON, 4 lanes) or 4
 * (aarch64 SVE, svcntw() lanes: 4 to 64, known at run time only). A tile
 * template includes this header and is itself included once per level,
 * so the loops are written once and only these definitions differ (BLIS
 * style). SVE's vectors are sizeless: a template that keeps them in
 * arrays, or tests SIMD_W in #if, needs its own SVE body
 * (docs/arm64.md).
 *
 * No include guard: every inclusion redefines the macros for the level set.
 * Conventions that keep the levels bit-compatible where it matters:
 * vf_max(a, b) is `a > b ? a : b` and vf_min(a, b) is `a < b ? a : b`, as
 * the x86 instructions define them (NaN in either gives b; NEON's own
 * vmaxq/vminq would give NaN, so that level compares and selects).
 * vm_any(m) is whether any lane of mask m is set.
 * vf_max_nan(a, b) is NaN where either is (the pools' max; only b is on
 * the dependency chain, so a running maximum goes in b).
 * vf_load_lanes(p, l, len) and vf_store_lanes(p, v, l, len) move lanes
 * [l, l + SIMD_W) of a run of len (a channel block), p pointing at lane
 * l: a whole vector where SIMD_W divides every block (the fixed widths),
 * the lanes below len only where it need not (SVE). sd_fma(a, b, c) is a
 * scalar double a b + c, rounded once where the level has FMA (scalar code
 * in simd loops, which ISO C mode keeps from fusing on its own). */
#include <math.h>
#include <stdint.h>

#ifndef TSR_SIMD_LEVEL
#error "define TSR_SIMD_LEVEL before including simd.h"
#endif

#undef SIMD_W
#undef SIMD_SUFFIX
#undef SIMD_TARGET
#undef vf
#undef vm
#undef vf_zero
#undef vf_set1
#undef vf_load
#undef vf_store
#undef vf_load_n
#undef vf_store_n
#undef vf_load_lanes
#undef vf_store_lanes
#undef vf_add
#undef vf_sub
#undef vf_mul
#undef vf_div
#undef vf_fmadd
#undef sd_fma
#undef vf_max
#undef vf_min
#undef vf_max_nan
#undef vf_load_even
#undef vf_round
#undef vf_scale2
#undef vf_abs
#undef vf_copysign
#undef vm_lt
#undef vm_nan
#undef vm_or
#undef vm_none
#undef vm_any
#undef vf_select
#undef SVE_ALL

#define SIMD_CAT2(a, b) a##_##b
#define SIMD_CAT(a, b) SIMD_CAT2(a, b)
/* A name of this level's variant: SIMD_NAME(unary_relu) -> unary_relu_avx2. */
#define SIMD_NAME(x) SIMD_CAT(x, SIMD_SUFFIX)

#if TSR_SIMD_LEVEL == 2

#include <immintrin.h>
#define SIMD_W 16
#define SIMD_SUFFIX avx512
#define SIMD_TARGET __attribute__((target("avx512f,avx2,fma")))
#define vf __m512
#define vm __mmask16
#define vf_zero() _mm512_setzero_ps()
#define vf_set1(x) _mm512_set1_ps(x)
#define vf_load(p) _mm512_loadu_ps(p)
#define vf_store(p, v) _mm512_storeu_ps((p), (v))
#define vf_load_n(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1u), (p))
#define vf_store_n(p, v, n) _mm512_mask_storeu_ps((p), (__mmask16)((1u << (n)) - 1u), (v))
#define vf_load_lanes(p, l, len) vf_load(p)
#define vf_store_lanes(p, v, l, len) vf_store(p, v)
#define vf_add(a, b) _mm512_add_ps(a, b)
#define vf_sub(a, b) _mm512_sub_ps(a, b)
#define vf_mul(a, b) _mm512_mul_ps(a, b)
#define vf_div(a, b) _mm512_div_ps(a, b)
#define vf_fmadd(a, b, c) _mm512_fmadd_ps(a, b, c)
#define sd_fma(a, b, c) __builtin_fma(a, b, c)
#define vf_max(a, b) _mm512_max_ps(a, b)
#define vf_min(a, b) _mm512_min_ps(a, b)
#define vf_max_nan(a, b) _mm512_mask_max_ps(a, _mm512_cmp_ps_mask(a, a, _CMP_ORD_Q), a, b)
/* p[0], p[2], ..., p[2 * SIMD_W - 2] */
#define vf_load_even(p)                                                                            \
    _mm512_permutex2var_ps(                                                                        \
        _mm512_loadu_ps(p),                                                                        \
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),              \
        _mm512_loadu_ps((p) + 16))
#define vf_round(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/* p * 2^n for integer-valued n; overflow and underflow as IEEE says. */
#define vf_scale2(p, n) _mm512_scalef_ps(p, n)
#define vf_abs(x)                                                                                  \
    _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)))
/* |mag| with the sign of sgn; mag must be non-negative. */
#define vf_copysign(mag, sgn)                                                                      \
    _mm512_castsi512_ps(_mm512_or_si512(                                                           \
        _mm512_castps_si512(mag),                                                                  \
        _mm512_and_si512(_mm512_castps_si512(sgn), _mm512_set1_epi32((int)0x80000000u))))
#define vm_lt(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)
#define vm_nan(a) _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q)
#define vm_or(a, b) ((__mmask16)((a) | (b)))
#define vm_none() ((__mmask16)0)
#define vm_any(m) ((m) != 0)
/* m ? x : y, lane by lane */
#define vf_select(m, x, y) _mm512_mask_blend_ps(m, y, x)

#elif TSR_SIMD_LEVEL == 1

#include <immintrin.h>
#define SIMD_W 8
#define SIMD_SUFFIX avx2
#define SIMD_TARGET __attribute__((target("avx2,fma")))
#define vf __m256
#define vm __m256
#define vf_zero() _mm256_setzero_ps()
#define vf_set1(x) _mm256_set1_ps(x)
#define vf_load(p) _mm256_loadu_ps(p)
#define vf_store(p, v) _mm256_storeu_ps((p), (v))
#define TSR_AVX2_TAIL(n)                                                                           \
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define vf_load_n(p, n) _mm256_maskload_ps((p), TSR_AVX2_TAIL(n))
#define vf_store_n(p, v, n) _mm256_maskstore_ps((p), TSR_AVX2_TAIL(n), (v))
#define vf_load_lanes(p, l, len) vf_load(p)
#define vf_store_lanes(p, v, l, len) vf_store(p, v)
#define vf_add(a, b) _mm256_add_ps(a, b)
#define vf_sub(a, b) _mm256_sub_ps(a, b)
#define vf_mul(a, b) _mm256_mul_ps(a, b)
#define vf_div(a, b) _mm256_div_ps(a, b)
#define vf_fmadd(a, b, c) _mm256_fmadd_ps(a, b, c)
#define sd_fma(a, b, c) __builtin_fma(a, b, c)
#define vf_max(a, b) _mm256_max_ps(a, b)
#define vf_min(a, b) _mm256_min_ps(a, b)
#define vf_max_nan(a, b) _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q))
#define vf_load_even(p)                                                                            \
    _mm256_castpd_ps(_mm256_permute4x64_pd(                                                        \
        _mm256_castps_pd(_mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps((p) + 8), 0x88)),   \
        0xd8))
#define vf_round(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vf_scale2(p, n) tsr_simd_scale2_avx2(p, n)
#define vf_abs(x) _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)))
#define vf_copysign(mag, sgn)                                                                      \
    _mm256_or_ps(mag, _mm256_and_ps(sgn, _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u))))
#define vm_lt(a, b) _mm256_cmp_ps(a, b, _CMP_LT_OQ)
#define vm_nan(a) _mm256_cmp_ps(a, a, _CMP_UNORD_Q)
#define vm_or(a, b) _mm256_or_ps(a, b)
#define vm_none() _mm256_setzero_ps()
#define vm_any(m) (_mm256_movemask_ps(m) != 0)
#define vf_select(m, x, y) _mm256_blendv_ps(y, x, m)

#ifndef TSR_SIMD_AVX2_HELPERS
#define TSR_SIMD_AVX2_HELPERS
/* p * 2^n for integer-valued n in [-150, 130]: two exponent-field scales,
 * so that each factor stays a normal number and the product over- or
 * underflows correctly. */
__attribute__((target("avx2,fma"))) static inline __m256 tsr_simd_scale2_avx2(__m256 p, __m256 n)
{
    __m256 half = _mm256_floor_ps(_mm256_mul_ps(n, _mm256_set1_ps(0.5f)));
    __m256i n1 = _mm256_cvtps_epi32(half);
    __m256i n2 = _mm256_cvtps_epi32(_mm256_sub_ps(n, half));
    __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}
#endif

#elif TSR_SIMD_LEVEL == 3

/* Advanced SIMD, part of every aarch64 CPU: no target attribute needed. */
#include <arm_neon.h>
#define SIMD_W 4
#define SIMD_SUFFIX neon
#define SIMD_TARGET
#define vf float32x4_t
#define vm uint32x4_t
#define vf_zero() vdupq_n_f32(0.0f)
#define vf_set1(x) vdupq_n_f32(x)
#define vf_load(p) vld1q_f32(p)
#define vf_store(p, v) vst1q_f32((p), (v))
#define vf_load_n(p, n) tsr_simd_load_n_neon((p), (n))
#define vf_store_n(p, v, n) tsr_simd_store_n_neon((p), (v), (n))
#define vf_load_lanes(p, l, len) vf_load(p)
#define vf_store_lanes(p, v, l, len) vf_store(p, v)
#define vf_add(a, b) vaddq_f32(a, b)
#define vf_sub(a, b) vsubq_f32(a, b)
#define vf_mul(a, b) vmulq_f32(a, b)
#define vf_div(a, b) vdivq_f32(a, b)
#define vf_fmadd(a, b, c) vfmaq_f32(c, a, b)
#define sd_fma(a, b, c) __builtin_fma(a, b, c)
#define vf_max(a, b) tsr_simd_max_neon(a, b)
#define vf_min(a, b) tsr_simd_min_neon(a, b)
#define vf_max_nan(a, b) vmaxq_f32(a, b)
#define vf_load_even(p) (vld2q_f32(p).val[0])
#define vf_round(x) vrndnq_f32(x)
#define vf_scale2(p, n) tsr_simd_scale2_neon(p, n)
#define vf_abs(x) vabsq_f32(x)
#define vf_copysign(mag, sgn) vbslq_f32(vdupq_n_u32(0x80000000u), sgn, mag)
#define vm_lt(a, b) vcltq_f32(a, b)
#define vm_nan(a) vmvnq_u32(vceqq_f32(a, a))
#define vm_or(a, b) vorrq_u32(a, b)
#define vm_none() vdupq_n_u32(0)
#define vm_any(m) (vmaxvq_u32(m) != 0)
#define vf_select(m, x, y) vbslq_f32(m, x, y)

#ifndef TSR_SIMD_NEON_HELPERS
#define TSR_SIMD_NEON_HELPERS
/* The first n < 4 lanes from p, the rest zero; nothing past p[n - 1] is
 * read (or, storing, written). */
static inline float32x4_t tsr_simd_load_n_neon(const float *p, int n)
{
    float lanes[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n; i++)
        lanes[i] = p[i];
    return vld1q_f32(lanes);
}
static inline void tsr_simd_store_n_neon(float *p, float32x4_t v, int n)
{
    float lanes[4];
    vst1q_f32(lanes, v);
    for (int i = 0; i < n; i++)
        p[i] = lanes[i];
}
static inline float32x4_t tsr_simd_max_neon(float32x4_t a, float32x4_t b)
{
    return vbslq_f32(vcgtq_f32(a, b), a, b);
}
static inline float32x4_t tsr_simd_min_neon(float32x4_t a, float32x4_t b)
{
    return vbslq_f32(vcltq_f32(a, b), a, b);
}
/* p * 2^n for integer-valued n in [-150, 130], as the AVX2 level: two
 * exponent-field scales, each factor a normal number. */
static inline float32x4_t tsr_simd_scale2_neon(float32x4_t p, float32x4_t n)
{
    float32x4_t half = vrndmq_f32(vmulq_f32(n, vdupq_n_f32(0.5f)));
    int32x4_t n1 = vcvtq_s32_f32(half), n2 = vcvtq_s32_f32(vsubq_f32(n, half));
    int32x4_t bias = vdupq_n_s32(127);
    float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
    float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
}
#endif

#elif TSR_SIMD_LEVEL == 4

/* SVE, vector-length agnostic: every operation on all lanes (svptrue),
 * tails and blocks narrower than a vector through svwhilelt predicates,
 * which neither read nor write the lanes they leave out. */
#include <arm_sve.h>
#define SIMD_W ((int)svcntw())
#define SIMD_SUFFIX sve
#define SIMD_TARGET __attribute__((target("+sve")))
#define vf svfloat32_t
#define vm svbool_t
#define SVE_ALL svptrue_b32()
#define vf_zero() svdup_n_f32(0.0f)
#define vf_set1(x) svdup_n_f32(x)
#define vf_load(p) svld1_f32(SVE_ALL, p)
#define vf_store(p, v) svst1_f32(SVE_ALL, (p), (v))
#define vf_load_n(p, n) svld1_f32(svwhilelt_b32(0, (int)(n)), p)
#define vf_store_n(p, v, n) svst1_f32(svwhilelt_b32(0, (int)(n)), (p), (v))
#define vf_load_lanes(p, l, len) svld1_f32(svwhilelt_b32((int)(l), (int)(len)), p)
#define vf_store_lanes(p, v, l, len) svst1_f32(svwhilelt_b32((int)(l), (int)(len)), (p), (v))
#define vf_add(a, b) svadd_f32_x(SVE_ALL, a, b)
#define vf_sub(a, b) svsub_f32_x(SVE_ALL, a, b)
#define vf_mul(a, b) svmul_f32_x(SVE_ALL, a, b)
#define vf_div(a, b) svdiv_f32_x(SVE_ALL, a, b)
#define vf_fmadd(a, b, c) svmla_f32_x(SVE_ALL, c, a, b)
#define sd_fma(a, b, c) __builtin_fma(a, b, c)
#define vf_max(a, b) svsel_f32(svcmpgt_f32(SVE_ALL, a, b), a, b)
#define vf_min(a, b) svsel_f32(svcmplt_f32(SVE_ALL, a, b), a, b)
/* FMAX returns NaN for a NaN in either operand. */
#define vf_max_nan(a, b) svmax_f32_x(SVE_ALL, a, b)
#define vf_load_even(p) svuzp1_f32(svld1_f32(SVE_ALL, p), svld1_f32(SVE_ALL, (p) + svcntw()))
#define vf_round(x) svrintn_f32_x(SVE_ALL, x)
/* FSCALE: p * 2^n, rounded once, over- and underflowing as IEEE says. */
#define vf_scale2(p, n) svscale_f32_x(SVE_ALL, p, svcvt_s32_f32_x(SVE_ALL, n))
#define vf_abs(x) svabs_f32_x(SVE_ALL, x)
#define vf_copysign(mag, sgn)                                                                      \
    svreinterpret_f32_u32(                                                                         \
        svorr_u32_x(SVE_ALL, svreinterpret_u32_f32(mag),                                           \
                    svand_n_u32_x(SVE_ALL, svreinterpret_u32_f32(sgn), 0x80000000u)))
#define vm_lt(a, b) svcmplt_f32(SVE_ALL, a, b)
#define vm_nan(a) svcmpuo_f32(SVE_ALL, a, a)
#define vm_or(a, b) svorr_b_z(SVE_ALL, a, b)
#define vm_none() svpfalse_b()
#define vm_any(m) svptest_any(SVE_ALL, m)
#define vf_select(m, x, y) svsel_f32(m, x, y)

#elif TSR_SIMD_LEVEL == 0

#define SIMD_W 1
#define SIMD_SUFFIX portable
#define SIMD_TARGET
#define vf float
#define vm int
#define vf_zero() 0.0f
#define vf_set1(x) ((float)(x))
#define vf_load(p) (*(p))
#define vf_store(p, v) (*(p) = (v))
#define vf_load_n(p, n) ((void)(n), *(p))
#define vf_store_n(p, v, n) ((void)(n), *(p) = (v))
#define vf_load_lanes(p, l, len) vf_load(p)
#define vf_store_lanes(p, v, l, len) vf_store(p, v)
#define vf_add(a, b) ((a) + (b))
#define vf_sub(a, b) ((a) - (b))
#define vf_mul(a, b) ((a) * (b))
#define vf_div(a, b) ((a) / (b))
#define vf_fmadd(a, b, c) ((a) * (b) + (c))
#define sd_fma(a, b, c) ((a) * (b) + (c))
#define vf_max(a, b) ((a) > (b) ? (a) : (b))
#define vf_min(a, b) ((a) < (b) ? (a) : (b))
#define vf_max_nan(a, b) ((a) != (a) || (a) > (b) ? (a) : (b))
#define vf_load_even(p) (*(p))
#define vf_round(x) rintf(x)
#define vf_scale2(p, n) ldexpf(p, (int)(n))
#define vf_abs(x) fabsf(x)
#define vf_copysign(mag, sgn) copysignf(mag, sgn)
#define vm_lt(a, b) ((a) < (b))
#define vm_nan(a) ((a) != (a))
#define vm_or(a, b) ((a) | (b))
#define vm_none() 0
#define vm_any(m) ((m) != 0)
#define vf_select(m, x, y) ((m) ? (x) : (y))

#else
#error "TSR_SIMD_LEVEL must be 0, 1, 2, 3 or 4"
#endif
