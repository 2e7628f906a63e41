/* The CPU device (x86-64, aarch64): oneDNN for the compute-bound ops (backend
 * "dnnl"), our own vectorized kernels for the rest (backend "cpu"), the
 * reference backend for anything left. Activations flow between them in
 * the machine's blocked layout. */
#ifndef TSR_BACKENDS_CPU_H
#define TSR_BACKENDS_CPU_H

#include "backends/backend.h"

/* The x86 vector levels (AVX2, AVX-512) are compiled for x86-64 only, the
 * NEON level for aarch64 only (docs/arm64.md); elsewhere the cpu backend
 * runs its portable tiles and tsr_cpu_isa() is always TSR_ISA_PORTABLE. */
#if defined(__x86_64__)
#define TSR_CPU_X86 1
#else
#define TSR_CPU_X86 0
#endif
#if defined(__aarch64__)
#define TSR_CPU_ARM64 1
#else
#define TSR_CPU_ARM64 0
#endif

/* Ordered within each architecture, portable lowest: an override can only
 * lower the level (aarch64: NEON below SVE). */
typedef enum tsr_isa {
    TSR_ISA_PORTABLE = 0,
    TSR_ISA_AVX2,
    TSR_ISA_AVX512,
    TSR_ISA_NEON,
    TSR_ISA_SVE
} tsr_isa;

/* The vector extensions of this CPU (read once);
 * TSR_CPU_ISA=portable|avx2|avx512|neon|sve lowers it, for tests and
 * comparisons (a level of another architecture is ignored). */
tsr_isa tsr_cpu_isa(void);
/* The lower-case name TSR_CPU_ISA takes for `isa`: "portable", "avx2",
 * "avx512", "neon", "sve". */
const char *tsr_cpu_isa_name(tsr_isa isa);
/* The name with SVE's vector length ("sve 512-bit"), for --verbose. */
const char *tsr_cpu_isa_label(tsr_isa isa);
/* float32 lanes of one vector at `isa`: SVE's from the kernel's vector
 * length (prctl), 4 to 64. */
int tsr_cpu_isa_lanes(tsr_isa isa);
/* The blocked layout activations use: nChw16c with AVX-512, nChw8c with
 * AVX2, plain otherwise (NEON included: docs/arm64.md); TSR_CPU_LAYOUT=plain|nChw8c|nChw16c
 * overrides it. */
tsr_layout tsr_cpu_layout(void);
/* Whether this CPU computes bf16 in hardware (AVX512_BF16 or AMX). */
bool tsr_cpu_has_bf16(void);

/* oneDNN: Conv, ai.tessera.FusedConv, Gemm, MatMul. */
extern const tsr_backend tsr_backend_dnnl;
/* Our own kernels, and the layout reorders of the device. */
extern const tsr_backend tsr_backend_cpu;

#endif
