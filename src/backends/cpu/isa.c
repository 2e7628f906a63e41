/* What the CPU can do, from CPUID, and the environment overrides tests and
 * comparisons use. The overrides are read at every call (plan creation
 * time, not run time), so a process can switch them between plans. */
#include "backends/cpu/cpu.h"

#if TSR_CPU_X86
#include <cpuid.h>
#endif
#if TSR_CPU_ARM64 && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif
#include <stdlib.h>
#include <string.h>

static tsr_isa hardware_isa(void)
{
#if TSR_CPU_ARM64
    /* Advanced SIMD is architectural on aarch64, but the kernel says so in
     * the auxiliary vector; SVE CPUs have it too and run the NEON tiles. */
#if defined(__linux__)
    if (getauxval(AT_HWCAP) & HWCAP_ASIMD)
        return TSR_ISA_NEON;
#endif
    return TSR_ISA_PORTABLE;
#elif !TSR_CPU_X86
    return TSR_ISA_PORTABLE;
#else
    /* __builtin_cpu_supports also checks that the OS saves the vector
     * registers (XGETBV), not just the CPUID bits. */
    if (__builtin_cpu_supports("avx512f"))
        return TSR_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return TSR_ISA_AVX2;
    return TSR_ISA_PORTABLE;
#endif
}

tsr_isa tsr_cpu_isa(void)
{
    tsr_isa isa = hardware_isa();
    const char *env = getenv("TSR_CPU_ISA");
    if (!env || !*env)
        return isa;
    if (strcmp(env, "portable") == 0)
        return TSR_ISA_PORTABLE;
    /* The override can only lower what the hardware has, within its
     * architecture: a level of another one leaves the hardware's. */
    for (tsr_isa want = TSR_ISA_AVX2; want <= TSR_ISA_NEON; want++)
        if (strcmp(env, tsr_cpu_isa_name(want)) == 0)
            return want < isa && (want == TSR_ISA_NEON) == (isa == TSR_ISA_NEON) ? want : isa;
    return isa;
}

const char *tsr_cpu_isa_name(tsr_isa isa)
{
    switch (isa) {
    case TSR_ISA_AVX2: return "avx2";
    case TSR_ISA_AVX512: return "avx512";
    case TSR_ISA_NEON: return "neon";
    default: return "portable";
    }
}

tsr_layout tsr_cpu_layout(void)
{
    const char *env = getenv("TSR_CPU_LAYOUT");
    if (env && strcmp(env, "plain") == 0)
        return TSR_LAYOUT_PLAIN;
    if (env && strcmp(env, "nChw8c") == 0)
        return TSR_LAYOUT_BLOCKED8;
    if (env && strcmp(env, "nChw16c") == 0)
        return TSR_LAYOUT_BLOCKED16;
    switch (tsr_cpu_isa()) {
    case TSR_ISA_AVX512: return TSR_LAYOUT_BLOCKED16;
    case TSR_ISA_AVX2: return TSR_LAYOUT_BLOCKED8;
    default: return TSR_LAYOUT_PLAIN;
    }
}

bool tsr_cpu_has_bf16(void)
{
    /* Both bf16 paths are AVX-512 extensions, so TSR_CPU_ISA=avx2 turns
     * them off as it would be on an AVX2-only machine. */
    if (tsr_cpu_isa() != TSR_ISA_AVX512)
        return false;
#if TSR_CPU_X86
    unsigned eax, ebx, ecx, edx;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    /* Leaf 7, subleaf 1, EAX bit 5: AVX512_BF16. */
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    if (eax & (1u << 5))
        return true;
    /* Leaf 7, subleaf 0, EDX bit 22: AMX-BF16. */
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    return (edx & (1u << 22)) != 0;
#else
    return false;
#endif
}
