/* The cpu backend's vectorized log and exp (backends/cpu/simd_math.h) on
 * every ISA level this machine runs, against libm in double precision:
 * relative error over a sweep of float32 values, and the special values
 * (zero, subnormals, negatives, infinities, NaN) that log sends to its
 * slow path; exp2_nonpos (x <= 0) where its result is normal, and the
 * tiny results that AVX2 flushes to zero; and the shorter variants DPP's
 * taps use (log2_fast to an absolute bound, exp2_nonpos_fast as
 * exp2_nonpos). */
#include "backends/cpu/cpu.h"
#include "harness.h"
#include "isa_skip.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

/* The first N_FNS are held to a relative bound. */
enum { LOG, EXP, LOG2, EXP2, EXP2_NONPOS, N_FNS, LOG2_FAST = N_FNS, EXP2_NONPOS_FAST };
static const char *const fn_names[] = {
    "log", "exp", "log2", "exp2", "exp2_nonpos", "log2_fast", "exp2_nonpos_fast"};

/* fn over x, in the level simd_math.h was last included for: whole
 * vectors, then a partial one (whose lanes past n hold zeros). */
#define DEFINE_APPLY                                                                               \
    SIMD_TARGET static vf SIMD_NAME(apply_fn)(vf v, int fn)                                        \
    {                                                                                              \
        return fn == LOG                ? SIMD_NAME(v_log)(v)                                      \
               : fn == EXP              ? SIMD_NAME(v_exp)(v)                                      \
               : fn == LOG2             ? SIMD_NAME(v_log2)(v)                                     \
               : fn == EXP2             ? SIMD_NAME(v_exp2)(v)                                     \
               : fn == LOG2_FAST        ? SIMD_NAME(v_log2_fast)(v)                                \
               : fn == EXP2_NONPOS_FAST ? SIMD_NAME(v_exp2_nonpos_fast)(v)                         \
                                        : SIMD_NAME(v_exp2_nonpos)(v);                             \
    }                                                                                              \
    SIMD_TARGET static void SIMD_NAME(apply)(const float *x, float *y, int n, int fn)              \
    {                                                                                              \
        int i = 0;                                                                                 \
        for (; i + SIMD_W <= n; i += SIMD_W)                                                       \
            vf_store(y + i, SIMD_NAME(apply_fn)(vf_load(x + i), fn));                              \
        if (i < n)                                                                                 \
            vf_store_n(y + i, SIMD_NAME(apply_fn)(vf_load_n(x + i, n - i), fn), n - i);            \
    }

#define TSR_SIMD_LEVEL 0
#include "backends/cpu/simd_math.h"
DEFINE_APPLY
#undef TSR_SIMD_LEVEL
#if TSR_CPU_X86
#define TSR_SIMD_LEVEL 1
#include "backends/cpu/simd_math.h"
DEFINE_APPLY
#undef TSR_SIMD_LEVEL
#define TSR_SIMD_LEVEL 2
#include "backends/cpu/simd_math.h"
DEFINE_APPLY
#undef TSR_SIMD_LEVEL
#elif TSR_CPU_ARM64
#define TSR_SIMD_LEVEL 3
#include "backends/cpu/simd_math.h"
DEFINE_APPLY
#undef TSR_SIMD_LEVEL
#define TSR_SIMD_LEVEL 4
#include "backends/cpu/simd_math.h"
DEFINE_APPLY
#undef TSR_SIMD_LEVEL
#endif

typedef void (*apply_fn)(const float *x, float *y, int n, int fn);

/* Only this architecture's levels are compiled; isa_skip.h skips the others. */
static const apply_fn levels[] = {
    [TSR_ISA_PORTABLE] = apply_portable,
#if TSR_CPU_X86
    [TSR_ISA_AVX2] = apply_avx2,
    [TSR_ISA_AVX512] = apply_avx512,
#elif TSR_CPU_ARM64
    [TSR_ISA_NEON] = apply_neon,
    [TSR_ISA_SVE] = apply_sve,
#endif
};

enum { N = 1 << 16 };

static double reference(int fn, double x)
{
    return fn == LOG                       ? log(x)
           : fn == EXP                     ? exp(x)
           : fn == LOG2 || fn == LOG2_FAST ? log2(x)
                                           : exp2(x);
}

/* Largest relative error of function fn at `level` over x against libm
 * in double; with `abs_floor`, relative to max(|want|, abs_floor). */
static double max_rel_error(apply_fn apply, int fn, const float *x, double abs_floor)
{
    static float y[N];
    apply(x, y, N, fn);
    double worst = 0.0;
    for (int i = 0; i < N; i++) {
        double want = reference(fn, (double)x[i]);
        double err = fabs((double)y[i] - want) / fmax(fabs(want), abs_floor);
        if (!(err <= worst))
            worst = err;
    }
    return worst;
}

static void check_level(int level)
{
    static float x[N];
    apply_fn apply = levels[level];
    /* The logs: log-uniform over the normal range, and a dense sweep
     * around 1 where the log is near 0 and relative accuracy is hardest
     * to keep. */
    uint32_t state = 7;
    for (int i = 0; i < N; i++) {
        state = state * 1664525u + 1013904223u;
        double u = (double)(state >> 8) / 16777216.0;
        x[i] = i % 2 ? (float)exp(-87.0 + 174.0 * u) : (float)(0.9 + 0.2 * u);
        if (x[i] == 1.0f)
            x[i] = 1.5f;
    }
    double err[N_FNS];
    err[LOG] = max_rel_error(apply, LOG, x, 0.0);
    err[LOG2] = max_rel_error(apply, LOG2, x, 0.0);
    /* The exps: where the result is a normal float. */
    for (int i = 0; i < N; i++) {
        state = state * 1664525u + 1013904223u;
        x[i] = (float)(-87.0 + 175.0 * (double)(state >> 8) / 16777216.0);
    }
    err[EXP] = max_rel_error(apply, EXP, x, 0.0);
    for (int i = 0; i < N; i++)
        x[i] *= 1.44269504f;
    err[EXP2] = max_rel_error(apply, EXP2, x, 0.0);
    for (int i = 0; i < N; i++) {
        state = state * 1664525u + 1013904223u;
        x[i] = (float)(-125.0 * (double)(state >> 8) / 16777216.0);
    }
    err[EXP2_NONPOS] = max_rel_error(apply, EXP2_NONPOS, x, 0.0);
    double fast_exp = max_rel_error(apply, EXP2_NONPOS_FAST, x, 0.0);
    for (int fn = 0; fn < N_FNS; fn++) {
        printf("%s: %s max relative error %.3g\n", tsr_cpu_isa_name((tsr_isa)level), fn_names[fn],
               err[fn]);
        CHECK(err[fn] < 3e-7);
    }
    /* log2_fast: within 1.5e-7 absolute near 1 (where log2 is near 0),
     * relative elsewhere. */
    for (int i = 0; i < N; i++) {
        state = state * 1664525u + 1013904223u;
        double u = (double)(state >> 8) / 16777216.0;
        x[i] = i % 2 ? (float)exp(-87.0 + 174.0 * u) : (float)(0.9 + 0.2 * u);
    }
    double fast_log = max_rel_error(apply, LOG2_FAST, x, 1.0);
    printf("%s: log2_fast max error %.3g (relative, absolute below 1), exp2_nonpos_fast %.3g\n",
           tsr_cpu_isa_name((tsr_isa)level), fast_log, fast_exp);
    CHECK(fast_log < 1.5e-7);
    CHECK(fast_exp < 3e-7);

    /* Special values of the logs, each in every lane position. */
    const float special[] = {0.0f,     -0.0f, FLT_TRUE_MIN, 1e-40f, FLT_MIN, FLT_MAX,
                             INFINITY, -1.0f, -INFINITY,    NAN,    1.0f,    3.0e38f};
    int ns = (int)(sizeof special / sizeof *special);
    const int logs[] = {LOG, LOG2, LOG2_FAST};
    for (int f = 0; f < 3; f++)
        for (int k = 0; k < 3 * ns; k++) {
            int fn = logs[f];
            /* Every third lane, starting at lane k % 3: each lane meets each value. */
            int s = k / 3;
            float in[16], out[16];
            for (int i = 0; i < 16; i++)
                in[i] = i % 3 == k % 3 ? special[s] : 2.0f;
            apply(in, out, 16, fn);
            for (int i = 0; i < 16; i++) {
                float want = fn == LOG ? logf(in[i]) : log2f(in[i]);
                bool ok = isnan(want)
                              ? isnan(out[i])
                              : out[i] == want || fabsf(out[i] - want) <=
                                                      3e-7f * fmaxf(fabsf(want), fn == LOG2_FAST);
                if (!ok)
                    fprintf(stderr, "%s: %s(%g) = %g, want %g\n", tsr_cpu_isa_name((tsr_isa)level),
                            fn_names[fn], in[i], out[i], want);
                CHECK(ok);
            }
        }
    /* The exps' clamps: overflow, underflow, infinities, NaN; 13 lanes, so
     * that every level ends in a partial vector. */
    const float big[] = {200.0f, -200.0f, INFINITY, -INFINITY, NAN};
    for (int s = 0; s < 5; s++)
        for (int fn = EXP; fn <= EXP2; fn += EXP2 - EXP) {
            float in[16], out[16];
            for (int i = 0; i < 16; i++)
                in[i] = big[s];
            apply(in, out, 13, fn);
            float want = fn == EXP ? expf(big[s]) : exp2f(big[s]);
            for (int i = 0; i < 13; i++) {
                bool ok = isnan(want) ? isnan(out[i]) : out[i] == want;
                if (!ok)
                    fprintf(stderr, "%s: %s(%g) = %g in lane %d, want %g\n",
                            tsr_cpu_isa_name((tsr_isa)level), fn_names[fn], in[i], out[i], i, want);
                CHECK(ok);
            }
        }
}

/* exp2_nonpos (and its fast variant) below 2^-125: exact, or (AVX2)
 * zero; -inf gives 0 exactly. */
static void check_tiny(int level)
{
    const float tiny[] = {-125.6f, -130.0f, -149.0f, -150.0f, -200.0f, -INFINITY, NAN};
    for (int k = 0; k < 14; k++) {
        int s = k % 7, fn = k < 7 ? EXP2_NONPOS : EXP2_NONPOS_FAST;
        float in[16], out[16];
        for (int i = 0; i < 16; i++)
            in[i] = tiny[s];
        levels[level](in, out, 16, fn);
        float want = exp2f(tiny[s] < -150.0f ? -150.0f : tiny[s]);
        if (tiny[s] == -INFINITY)
            want = 0.0f;
        for (int i = 0; i < 16; i++) {
            bool ok = isnan(want) ? isnan(out[i])
                      : fn == EXP2_NONPOS
                          ? out[i] == want || out[i] == 0.0f
                          : out[i] == 0.0f || fabsf(out[i] - want) <= 3e-7f * want + FLT_TRUE_MIN;
            if (!ok)
                fprintf(stderr, "%s: %s(%g) = %g, want %g or 0\n", tsr_cpu_isa_name((tsr_isa)level),
                        fn_names[fn], tiny[s], out[i], want);
            CHECK(ok);
        }
    }
}

int main(void)
{
    tsr_isa top = tsr_cpu_isa();
    for (int level = TSR_ISA_PORTABLE; level <= TSR_ISA_SVE; level++)
        if (!tsr_isa_skip("test_simd_math", (tsr_isa)level, top)) {
            check_level(level);
            check_tiny(level);
        }
    return tsr_test_summary("test_simd_math");
}
