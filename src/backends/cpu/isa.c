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
#include <sys/prctl.h>
#endif
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static tsr_isa hardware_isa(void)
{
#if TSR_CPU_ARM64
    /* Advanced SIMD is architectural on aarch64, but the kernel says so in
     * the auxiliary vector; SVE CPUs have it too, and the families without
     * SVE tiles run their NEON ones there. */
#if defined(__linux__)
    unsigned long hwcap = getauxval(AT_HWCAP);
    if (hwcap & HWCAP_SVE)
        return TSR_ISA_SVE;
    if (hwcap & HWCAP_ASIMD)
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

static bool is_arm(tsr_isa isa)
{
    return isa == TSR_ISA_NEON || isa == TSR_ISA_SVE;
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
    for (tsr_isa want = TSR_ISA_AVX2; want <= TSR_ISA_SVE; want++)
        if (strcmp(env, tsr_cpu_isa_name(want)) == 0)
            return want < isa && is_arm(want) == is_arm(isa) ? want : isa;
    return isa;
}

const char *tsr_cpu_isa_name(tsr_isa isa)
{
    switch (isa) {
    case TSR_ISA_AVX2: return "avx2";
    case TSR_ISA_AVX512: return "avx512";
    case TSR_ISA_NEON: return "neon";
    case TSR_ISA_SVE: return "sve";
    default: return "portable";
    }
}

/* SVE's vector length in bytes, as the kernel set it (per thread; threads
 * inherit it), read once: kernels ask for it at every run. */
static int sve_bytes(void)
{
#if TSR_CPU_ARM64 && defined(__linux__) && defined(PR_SVE_GET_VL)
    static atomic_int bytes;
    int b = atomic_load_explicit(&bytes, memory_order_relaxed);
    if (!b) {
        int vl = prctl(PR_SVE_GET_VL);
        b = vl > 0 ? vl & PR_SVE_VL_LEN_MASK : 16;
        atomic_store_explicit(&bytes, b, memory_order_relaxed);
    }
    return b;
#else
    return 16;
#endif
}

int tsr_cpu_isa_lanes(tsr_isa isa)
{
    switch (isa) {
    case TSR_ISA_AVX2: return 8;
    case TSR_ISA_AVX512: return 16;
    case TSR_ISA_NEON: return 4;
    case TSR_ISA_SVE: return sve_bytes() / 4;
    default: return 1;
    }
}

const char *tsr_cpu_isa_label(tsr_isa isa)
{
    /* Every length SVE allows: 128 to 2048 bits in steps of 128. */
    static const char *const sve[16] = {
        "sve 128-bit",  "sve 256-bit",  "sve 384-bit",  "sve 512-bit",
        "sve 640-bit",  "sve 768-bit",  "sve 896-bit",  "sve 1024-bit",
        "sve 1152-bit", "sve 1280-bit", "sve 1408-bit", "sve 1536-bit",
        "sve 1664-bit", "sve 1792-bit", "sve 1920-bit", "sve 2048-bit"};
    if (isa != TSR_ISA_SVE)
        return tsr_cpu_isa_name(isa);
    int i = sve_bytes() / 16 - 1;
    return i >= 0 && i < 16 ? sve[i] : "sve";
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
