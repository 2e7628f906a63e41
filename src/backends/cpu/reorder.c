/* Layout reorders of the cpu device: plain [N, C, H, W] to and from the
 * blocked [N, ceil(C/b), H, W, b] layouts, and between block sizes. The
 * lanes past C in the last block are written as zeros. Elements are moved
 * as raw 4- or 8-byte words, so float32 and float64 share the code. */
#include "backends/cpu/kernels_internal.h"

#include <string.h>

/* Pixels moved per tile: a tile's blocked side (TILE * b words) stays in
 * L1 while the b plain rows stream past. */
#define TILE 64

typedef struct {
    int64_t n, c, hw;
} geom;

/* clang-format mangles _Pragma inside macros. */
// clang-format off
#define REORDER_DEFINE(T, SUF)                                                                     \
    static void to_blocked_##SUF(const T *src, T *dst, geom g, int b, int threads)                 \
    {                                                                                              \
        int64_t cb_count = (g.c + b - 1) / b;                                                      \
        int64_t units = g.n * cb_count;                                                            \
        int nt = tsr_cpu_threads_for(threads, units * g.hw * b);                                   \
        _Pragma("omp parallel for schedule(static) num_threads(nt) if (nt > 1)")                   \
        for (int64_t u = 0; u < units; u++) {                                                      \
            int64_t n = u / cb_count, cb = u % cb_count;                                           \
            T *out = dst + u * g.hw * b;                                                           \
            for (int64_t p0 = 0; p0 < g.hw; p0 += TILE) {                                          \
                int64_t len = g.hw - p0 < TILE ? g.hw - p0 : TILE;                                 \
                for (int l = 0; l < b; l++) {                                                      \
                    int64_t c = cb * b + l;                                                        \
                    T *o = out + p0 * b + l;                                                       \
                    if (c < g.c) {                                                                 \
                        const T *in = src + (n * g.c + c) * g.hw + p0;                             \
                        for (int64_t t = 0; t < len; t++)                                          \
                            o[t * b] = in[t];                                                      \
                    } else {                                                                       \
                        for (int64_t t = 0; t < len; t++)                                          \
                            o[t * b] = 0;                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    static void to_plain_##SUF(const T *src, T *dst, geom g, int b, int threads)                   \
    {                                                                                              \
        int64_t cb_count = (g.c + b - 1) / b;                                                      \
        int64_t units = g.n * cb_count;                                                            \
        int nt = tsr_cpu_threads_for(threads, units * g.hw * b);                                   \
        _Pragma("omp parallel for schedule(static) num_threads(nt) if (nt > 1)")                   \
        for (int64_t u = 0; u < units; u++) {                                                      \
            int64_t n = u / cb_count, cb = u % cb_count;                                           \
            const T *in = src + u * g.hw * b;                                                      \
            int lanes = (int)(g.c - cb * b < b ? g.c - cb * b : b);                                \
            for (int64_t p0 = 0; p0 < g.hw; p0 += TILE) {                                          \
                int64_t len = g.hw - p0 < TILE ? g.hw - p0 : TILE;                                 \
                for (int l = 0; l < lanes; l++) {                                                  \
                    const T *i = in + p0 * b + l;                                                  \
                    T *o = dst + (n * g.c + cb * b + l) * g.hw + p0;                               \
                    for (int64_t t = 0; t < len; t++)                                              \
                        o[t] = i[t * b];                                                           \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    static void reblock_##SUF(const T *src, T *dst, geom g, int b_in, int b_out, int threads)      \
    {                                                                                              \
        int64_t cb_in = (g.c + b_in - 1) / b_in, cb_out = (g.c + b_out - 1) / b_out;               \
        int64_t units = g.n * cb_out;                                                              \
        int nt = tsr_cpu_threads_for(threads, units * g.hw * b_out);                               \
        _Pragma("omp parallel for schedule(static) num_threads(nt) if (nt > 1)")                   \
        for (int64_t u = 0; u < units; u++) {                                                      \
            int64_t n = u / cb_out, cb = u % cb_out;                                               \
            T *out = dst + u * g.hw * b_out;                                                       \
            for (int l = 0; l < b_out; l++) {                                                      \
                int64_t c = cb * b_out + l;                                                        \
                if (c >= g.c) {                                                                    \
                    for (int64_t p = 0; p < g.hw; p++)                                             \
                        out[p * b_out + l] = 0;                                                    \
                    continue;                                                                      \
                }                                                                                  \
                const T *in = src + ((n * cb_in + c / b_in) * g.hw) * b_in + c % b_in;             \
                for (int64_t p = 0; p < g.hw; p++)                                                 \
                    out[p * b_out + l] = in[p * b_in];                                             \
            }                                                                                      \
        }                                                                                          \
    }
// clang-format on

REORDER_DEFINE(uint32_t, w32)
REORDER_DEFINE(uint64_t, w64)

tsr_status tsr_cpu_reorder(const tsr_tensor *src, tsr_layout from, tsr_tensor *dst, tsr_layout to,
                           int threads)
{
    size_t word = src->dtype == TSR_FLOAT32 ? 4 : src->dtype == TSR_FLOAT64 ? 8 : 0;
    if (from == to) {
        size_t bytes = tsr_layout_bytes(src, from);
        if (bytes && src->data != dst->data)
            memcpy(dst->data, src->data, bytes);
        return TSR_OK;
    }
    if (src->rank != 4 || word == 0)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "reorder %s -> %s: blocked layouts hold rank-4 float tensors, got rank %d "
                         "%s",
                         tsr_layout_name(from), tsr_layout_name(to), src->rank,
                         tsr_dtype_name(src->dtype));
    geom g = {src->dims[0], src->dims[1], src->dims[2] * src->dims[3]};
    if (g.n * g.c * g.hw == 0)
        return TSR_OK;
    int bf = tsr_layout_block(from), bt = tsr_layout_block(to);
    if (word == 4) {
        if (from == TSR_LAYOUT_PLAIN)
            to_blocked_w32(src->data, dst->data, g, bt, threads);
        else if (to == TSR_LAYOUT_PLAIN)
            to_plain_w32(src->data, dst->data, g, bf, threads);
        else
            reblock_w32(src->data, dst->data, g, bf, bt, threads);
    } else {
        if (from == TSR_LAYOUT_PLAIN)
            to_blocked_w64(src->data, dst->data, g, bt, threads);
        else if (to == TSR_LAYOUT_PLAIN)
            to_plain_w64(src->data, dst->data, g, bf, threads);
        else
            reblock_w64(src->data, dst->data, g, bf, bt, threads);
    }
    return TSR_OK;
}
