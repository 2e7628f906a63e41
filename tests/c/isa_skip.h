/* The cpu backend's instruction-set levels in C tests: each level a test
 * loops over either runs or prints a SKIP line saying why it cannot run
 * here, so that an AVX2-only machine shows what it did not test. */
#ifndef TSR_TEST_ISA_SKIP_H
#define TSR_TEST_ISA_SKIP_H

#include "backends/cpu/cpu.h"

#include <stdio.h>

/* Why `level` cannot run here, or NULL. `top` is tsr_cpu_isa() read
 * before the test changed TSR_CPU_ISA: the hardware's level capped by the
 * environment the test started in. */
static inline const char *tsr_isa_skip_reason(tsr_isa level, tsr_isa top)
{
#if TSR_CPU_ARM64
    if (level == TSR_ISA_AVX2 || level == TSR_ISA_AVX512)
        return "not an x86-64 machine";
    if (level == TSR_ISA_NEON && top < TSR_ISA_NEON)
        return "no Advanced SIMD (HWCAP_ASIMD) here, or TSR_CPU_ISA caps it";
    if (level == TSR_ISA_SVE && top < TSR_ISA_SVE)
        return "no SVE (HWCAP_SVE) here, or TSR_CPU_ISA caps it";
#elif !TSR_CPU_X86
    if (level != TSR_ISA_PORTABLE)
        return "neither an x86-64 nor an aarch64 machine";
#else
    if (level == TSR_ISA_NEON || level == TSR_ISA_SVE)
        return "not an aarch64 machine";
    if (level == TSR_ISA_AVX512 && !__builtin_cpu_supports("avx512f"))
        return "machine lacks avx512f";
    if (level == TSR_ISA_AVX2 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return "machine lacks avx2 or fma";
#endif
    if (level > top)
        return "TSR_CPU_ISA in the environment caps the instruction set below it";
    return NULL;
}

/* Prints a SKIP line for `level` and returns true when it cannot run. */
static inline bool tsr_isa_skip(const char *test, tsr_isa level, tsr_isa top)
{
    const char *why = tsr_isa_skip_reason(level, top);
    if (why)
        printf("SKIP %s: %s kernels: %s\n", test, tsr_cpu_isa_name(level), why);
    return why != NULL;
}

/* Prints a SKIP line for the bf16 cases of `what` and returns true when
 * this CPU has no bf16 arithmetic (the cpu device then refuses bf16). */
static inline bool tsr_bf16_skip(const char *test, const char *what)
{
    if (tsr_cpu_has_bf16())
        return false;
    printf("SKIP %s: %s in bf16: machine lacks avx512_bf16 and amx_bf16\n", test, what);
    return true;
}

#endif
