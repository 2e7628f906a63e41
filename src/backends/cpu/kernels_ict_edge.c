/* The per-edge ops of ICTP in the cpu backend, float32 and float64: the
 * fused edge convolution, ICTEdgeMessage and ICTEdgeMessageGrad
 * (src/ops/ict_edge.c), the edge ICTs, ICT in coordinates (below), and
 * their radial basis, BesselBasis and its first derivative, and the
 * tabulated radial functions, RadialSpline and RadialSplineDot (at the end).
 *
 * Per edge, the coupling is first folded with the edge's ICT y, M[o][i] =
 * Σ_t W[t][o][i] y_t (at most 7 x 7 values, as vectors), so what runs along the
 * channels is a d_out x d_in matrix-vector product per channel. A message
 * adds w_e ⊙ M x[src] into z[dst]: edges that share a destination would
 * race, so threads take runs of edges that own their destinations (edges in
 * destination order) or add into private copies of z (edge_message_run).
 * The gradient's outputs belong to one edge each (with shared weight rows,
 * dw's to one row: edge_grad_run), so its threads split the edges; one
 * pass over p = a_s ⊙ b_r gives both dw (Σ M p) and
 * the channel sums D[r][s] = Σ_c w p that dy = Σ W D needs (kept as
 * vectors of partial sums until W has been applied).
 *
 * The loops are written once and compiled for each vector level (portable,
 * AVX2, AVX-512 through simd.h's targets), the channel loops as simd loops;
 * threads start only when the edges hold enough work. */
#include "backends/cpu/ict_vec.h"
#include "backends/cpu/kernels_internal.h"
#include "ops/ict_edge.h"
#include "ops/radial.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The node ranks the stack buffers hold: the folded coupling (d_out x
 * d_in, 7 x 7 at rank 3) and, one vector of channels at a time (ict_vec.h),
 * the sender's rows times the radial weights, or the gradient's inputs. The
 * gradient keeps its channel sums D[r][s] = Σ_c w a_s b_r as vectors of
 * partial sums, so that dy = Σ W D needs one horizontal sum per output
 * coordinate instead of one per (r, s). */
#define EDGE_MAX_L 3
#define EDGE_MAX_D (2 * EDGE_MAX_L + 1)
/* The folded coupling padded to whole vectors (49 values: 4 vectors of
 * float32, 7 of float64). */
#define EDGE_MAX_FOLD 64

typedef struct {
    int ls[3];
    bool transpose;
    int d_in, d_out, d2; /* the message's x and z widths (d1, d3 for the gradient) */
    int nqp;             /* d_out x d_in rounded up to whole vectors */
    /* The nonzero couplings of each y coordinate t: q = nzq[nzo[t]..nzo[t+1]). */
    int nzo[EDGE_MAX_D + 1], nzq[EDGE_MAX_D * EDGE_MAX_D * EDGE_MAX_D];
    const void *w;       /* [d2][nqp]: [d_out][d_in] coupling, zero-padded, the data's dtype */
} edge_data;

/* Shared weight rows are read (and their gradients added) out of order:
 * the rows of the edge EDGE_AHEAD further on are fetched while this one
 * runs. */
#define EDGE_AHEAD 4

static inline void edge_prefetch_rows(const void *w, const void *dw, int64_t row, int64_t bytes)
{
    for (int64_t o = 0; o < bytes; o += 64) {
        __builtin_prefetch((const char *)w + row * bytes + o, 0);
        if (dw)
            __builtin_prefetch((const char *)dw + row * bytes + o, 1);
    }
}

/* clang-format off */
/* BODY(..., width) with the node width (2l + 1, l <= EDGE_MAX_L) a constant,
 * so that the compiler keeps the rows of one vector of channels in
 * registers and unrolls the loops over them. */
#define EDGE_BY_WIDTH(width, BODY, ...)                                                            \
    switch (width) {                                                                               \
    case 1: BODY(__VA_ARGS__, 1); break;                                                           \
    case 3: BODY(__VA_ARGS__, 3); break;                                                           \
    case 5: BODY(__VA_ARGS__, 5); break;                                                           \
    default: BODY(__VA_ARGS__, 7); break;                                                          \
    }

/* m[q] = Σ_t W[t][q] y_t, a vector of q at a time kept in a register (W is
 * [d2][nqp], each row padded with zeros to whole vectors, nqp values). */
#define EDGE_FOLD(T, V, m, wc, yk, nqp, d2)                                                        \
    for (int j = 0; j < (nqp); j += (int)(ICT_VEC_BYTES / sizeof(T))) {                            \
        V acc_ = {0}, wv_;                                                                         \
        for (int t = 0; t < (d2); t++) {                                                           \
            memcpy(&wv_, wc + t * (nqp) + j, sizeof wv_);                                          \
            acc_ += wv_ * yk[t];                                                                   \
        }                                                                                          \
        memcpy(m + j, &acc_, sizeof acc_);                                                         \
    }

#define EDGE_DEFINE(T, SUFFIX, TARGET)                                                             \
    typedef T edge_vec_##T##_##SUFFIX __attribute__((vector_size(ICT_VEC_BYTES)));                 \
    TARGET static inline __attribute__((always_inline)) void edge_message_body_##T##_##SUFFIX(     \
        const edge_data *d, const T *x, const T *y, const T *w, const int64_t *src,                \
        const int64_t *dst, const int64_t *rows, T *z, int64_t a0, int64_t a1, int64_t k0,         \
        int64_t k1, int64_t ch, int64_t c0, int64_t c1, const int di)                              \
    {                                                                                              \
        typedef edge_vec_##T##_##SUFFIX V;                                                         \
        const int64_t nl = ICT_VEC_BYTES / sizeof(T);                                              \
        const T *wc = d->w;                                                                        \
        int dout = d->d_out, d2 = d->d2;                                                           \
        T m[EDGE_MAX_FOLD];                                                                        \
        V xw[EDGE_MAX_D];                                                                          \
        for (int64_t a = a0 * dout; a < a1 * dout; a++)                                            \
            memset(z + a * ch + c0, 0, (size_t)(c1 - c0) * sizeof(T));                             \
        for (int64_t k = k0; k < k1; k++) {                                                        \
            const T *yk = y + k * d2, *wk = w + (rows ? rows[k] : k) * ch;                         \
            const T *xs = x + src[k] * di * ch;                                                    \
            if (rows && k + EDGE_AHEAD < k1)                                                       \
                edge_prefetch_rows(w, NULL, rows[k + EDGE_AHEAD], ch * (int64_t)sizeof(T));        \
            T *zd = z + dst[k] * dout * ch;                                                        \
            EDGE_FOLD(T, V, m, wc, yk, d->nqp, d2)                                                 \
            for (int64_t cb = c0; cb < c1; cb += nl) {                                             \
                int64_t len = c1 - cb < nl ? c1 - cb : nl;                                         \
                V wv;                                                                              \
                ICT_VEC_LOAD(wv, wk + cb, len);                                                    \
                for (int i = 0; i < di; i++) {                                                     \
                    ICT_VEC_LOAD(xw[i], xs + i * ch + cb, len);                                    \
                    xw[i] *= wv;                                                                   \
                }                                                                                  \
                /* The edge's term first, then one add into z: consecutive edges mostly   \
                   share their destination, and only that add waits for the previous one. */   \
                for (int o = 0; o < dout; o++) {                                                   \
                    const T *mo = m + o * di;                                                      \
                    V term = mo[0] * xw[0], acc;                                                   \
                    for (int i = 1; i < di; i++)                                                   \
                        term += mo[i] * xw[i];                                                     \
                    ICT_VEC_LOAD(acc, zd + o * ch + cb, len);                                      \
                    acc += term;                                                                   \
                    ICT_VEC_STORE(zd + o * ch + cb, acc, len);                                     \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* The message with its input width a constant of each call: z's rows of atoms [a0, a1)       \
       and channels [c0, c1) from edges [k0, k1), whose destinations are among those atoms. */    \
    TARGET static void edge_message_##T##_##SUFFIX(                                                \
        const edge_data *d, const T *x, const T *y, const T *w, const int64_t *src,                \
        const int64_t *dst, const int64_t *rows, T *z, int64_t a0, int64_t a1, int64_t k0,         \
        int64_t k1, int64_t ch, int64_t c0, int64_t c1)                                            \
    {                                                                                              \
        EDGE_BY_WIDTH(d->d_in, edge_message_body_##T##_##SUFFIX, d, x, y, w, src, dst, rows, z,    \
                      a0, a1, k0, k1, ch, c0, c1);                                                 \
    }                                                                                              \
                                                                                                   \
    TARGET static inline __attribute__((always_inline)) void edge_grad_body_##T##_##SUFFIX(        \
        const edge_data *d, const T *a, const T *y, const T *w, const T *b, const int64_t *ia,     \
        const int64_t *ib, const int64_t *rows, const int64_t *order, bool slots, T *dw, T *dy,    \
        int64_t p0, int64_t p1, int64_t ch, const int d1)                                          \
    {                                                                                              \
        typedef edge_vec_##T##_##SUFFIX V;                                                         \
        const int64_t nl = ICT_VEC_BYTES / sizeof(T);                                              \
        const T *wc = d->w;                                                                        \
        int d3 = d->d_out, d2 = d->d2;                                                             \
        T m[EDGE_MAX_FOLD];                                                                        \
        V av[EDGE_MAX_D], av1[EDGE_MAX_D], lanes[EDGE_MAX_D * EDGE_MAX_D];                         \
        /* The edges order[p0..p1) (or p0..p1); with rows, each adds into its row of dw,   \
           or with slots stores into row p - p0. */                                            \
        for (int64_t p = p0; p < p1; p++) {                                                        \
            const int64_t k = order ? order[p] : p, u = rows ? rows[k] : k;                        \
            const T *yk = y + k * d2, *wk = w + u * ch;                                            \
            const T *as = a + ia[k] * d1 * ch, *bs = b + ib[k] * d3 * ch;                          \
            T *dwk = dw + (slots ? p - p0 : u) * ch;                                               \
            if (rows && p + EDGE_AHEAD < p1)                                                       \
                edge_prefetch_rows(w, slots ? NULL : dw,                                           \
                                   rows[order ? order[p + EDGE_AHEAD] : p + EDGE_AHEAD],           \
                                   ch * (int64_t)sizeof(T));                                       \
            EDGE_FOLD(T, V, m, wc, yk, d->nqp, d2)                                                 \
            /* Two vectors of channels at a time: each (r, s) sums both into one vector of     \
               partial sums, written by the first pair and added to by later ones (zero        \
               without channels). */                                                           \
            for (int q = 0; ch == 0 && q < d3 * d1; q++)                                           \
                lanes[q] = (V){0};                                                                 \
            for (int64_t cb = 0; cb < ch; cb += 2 * nl) {                                          \
                const int64_t len0 = ch - cb < nl ? ch - cb : nl;                                  \
                const int64_t rest = ch - cb - nl, len1 = rest <= 0 ? 0 : rest < nl ? rest : nl;   \
                const int64_t c1 = len1 ? cb + nl : cb;                                            \
                const bool first = cb == 0;                                                        \
                V w0, w1, dw0 = {0}, dw1 = {0};                                                    \
                ICT_VEC_LOAD(w0, wk + cb, len0);                                                   \
                ICT_VEC_LOAD(w1, wk + c1, len1);                                                   \
                for (int s = 0; s < d1; s++) {                                                     \
                    ICT_VEC_LOAD(av[s], as + s * ch + cb, len0);                                   \
                    ICT_VEC_LOAD(av1[s], as + s * ch + c1, len1);                                  \
                }                                                                                  \
                /* dw = Σ_r b_r ⊙ (Σ_s m_rs a_s): the inner sums are independent, so     \
                   no chain of d3 x d1 dependent adds forms. */                                 \
                for (int r = 0; r < d3; r++) {                                                     \
                    const T *mr = m + r * d1;                                                      \
                    V b0, b1;                                                                      \
                    ICT_VEC_LOAD(b0, bs + r * ch + cb, len0);                                      \
                    ICT_VEC_LOAD(b1, bs + r * ch + c1, len1);                                      \
                    V u0 = mr[0] * av[0], u1 = mr[0] * av1[0];                                     \
                    for (int s = 1; s < d1; s++) {                                                 \
                        u0 += mr[s] * av[s];                                                       \
                        u1 += mr[s] * av1[s];                                                      \
                    }                                                                              \
                    dw0 += u0 * b0;                                                                \
                    dw1 += u1 * b1;                                                                \
                    V wb0 = w0 * b0, wb1 = w1 * b1;                                                \
                    for (int s = 0; s < d1; s++) {                                                 \
                        V l = wb0 * av[s] + wb1 * av1[s];                                          \
                        lanes[r * d1 + s] = first ? l : lanes[r * d1 + s] + l;                     \
                    }                                                                              \
                }                                                                                  \
                if (rows && !slots) {                                                              \
                    V o0, o1;                                                                      \
                    ICT_VEC_LOAD(o0, dwk + cb, len0);                                              \
                    ICT_VEC_LOAD(o1, dwk + c1, len1);                                              \
                    dw0 += o0;                                                                     \
                    dw1 += o1;                                                                     \
                }                                                                                  \
                ICT_VEC_STORE(dwk + cb, dw0, len0);                                                \
                ICT_VEC_STORE(dwk + c1, dw1, len1);                                                \
            }                                                                                      \
            for (int t = 0; t < d2; t++) {                                                         \
                const T *wt = wc + t * d->nqp;                                                     \
                /* Over the nonzero couplings of t only, in two independent sums. */      \
                V acc = {0}, acc1 = {0};                                                           \
                T sum;                                                                             \
                int i = d->nzo[t];                                                                 \
                for (; i + 2 <= d->nzo[t + 1]; i += 2) {                                           \
                    acc += wt[d->nzq[i]] * lanes[d->nzq[i]];                                       \
                    acc1 += wt[d->nzq[i + 1]] * lanes[d->nzq[i + 1]];                              \
                }                                                                                  \
                if (i < d->nzo[t + 1])                                                             \
                    acc += wt[d->nzq[i]] * lanes[d->nzq[i]];                                       \
                acc += acc1;                                                                       \
                ICT_VEC_HSUM(T, acc, sum);                                                         \
                dy[k * d2 + t] = sum;                                                              \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    TARGET static void edge_grad_##T##_##SUFFIX(                                                   \
        const edge_data *d, const T *a, const T *y, const T *w, const T *b, const int64_t *ia,     \
        const int64_t *ib, const int64_t *rows, const int64_t *order, bool slots, T *dw, T *dy,    \
        int64_t p0, int64_t p1, int64_t ch)                                                        \
    {                                                                                              \
        EDGE_BY_WIDTH(d->d_in, edge_grad_body_##T##_##SUFFIX, d, a, y, w, b, ia, ib, rows, order,  \
                      slots, dw, dy, p0, p1, ch);                                                  \
    }
/* clang-format on */

#if TSR_CPU_X86
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define EDGE_LEVELS(T)                                                                             \
    EDGE_DEFINE(T, portable, )                                                                     \
    EDGE_DEFINE(T, avx2, TARGET_AVX2)                                                              \
    EDGE_DEFINE(T, avx512, TARGET_AVX512)
#else
#define EDGE_LEVELS(T) EDGE_DEFINE(T, portable, )
#endif

EDGE_LEVELS(float)
EDGE_LEVELS(double)

#if TSR_CPU_X86
#define EDGE_PICK(fn, T, isa)                                                                      \
    ((isa) == TSR_ISA_AVX512 ? fn##_##T##_avx512                                                   \
     : (isa) == TSR_ISA_AVX2 ? fn##_##T##_avx2                                                     \
                             : fn##_##T##_portable)
#else
#define EDGE_PICK(fn, T, isa) fn##_##T##_portable
#endif

/* Channel slices of whole vectors (16 float32 or 8 float64 lanes), so no
 * thread's slice splits a vector. */
static void channel_slice(int64_t ch, int64_t lanes, int team, int me, int64_t *c0, int64_t *c1)
{
    int64_t vecs = (ch + lanes - 1) / lanes;
    *c0 = vecs * me / team * lanes;
    *c1 = vecs * (me + 1) / team * lanes;
    *c0 = *c0 < ch ? *c0 : ch;
    *c1 = *c1 < ch ? *c1 : ch;
}

/* Whether the destinations never decrease (the receivers of a neighbour
 * list, which lists each atom's edges together). */
static bool sorted_by(const int64_t *dst, int64_t e)
{
    for (int64_t k = 1; k < e; k++)
        if (dst[k] < dst[k - 1])
            return false;
    return true;
}

/* Thread me's edges [*k0, *k1) of e sorted by destination, cut where the
 * destination changes, and the atoms [*a0, *a1) it owns: from its first
 * edge's destination (atom 0 for the first thread) to the next thread's. */
static void edge_slice(const int64_t *dst, int64_t n, int64_t e, int team, int me, int64_t *a0,
                       int64_t *a1, int64_t *k0, int64_t *k1)
{
    int64_t cut[2];
    for (int j = 0; j < 2; j++) {
        int64_t k = e * (me + j) / team;
        while (k > 0 && k < e && dst[k] == dst[k - 1])
            k++;
        cut[j] = k;
    }
    *k0 = cut[0];
    *k1 = cut[1];
    *a0 = me == 0 ? 0 : cut[0] < e ? dst[cut[0]] : n;
    *a1 = me + 1 == team ? n : cut[1] < e ? dst[cut[1]] : n;
}

/* The most memory the threads' private copies of a message's output may
 * take; beyond it threads split the channels. */
#define EDGE_PRIVATE_BYTES ((size_t)64 << 20)

/* The most threads a gradient with shared weight rows runs on (its
 * per-thread tables are on the stack). */
#define EDGE_MAX_TEAM 256

static tsr_status edge_message_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const edge_data *d = s->data;
    TSR_CHECK(tsr_ict_edge_check_run(k, d->ls, d->transpose, false));
    const tsr_tensor *x = k->inputs[0], *y = k->inputs[1], *w = k->inputs[2];
    const int64_t *src = k->inputs[3]->data, *dst = k->inputs[4]->data;
    const int64_t *rows = tsr_ict_edge_rows(k, false);
    tsr_tensor *z = k->outputs[0];
    int64_t n = x->dims[0], e = y->dims[0], ch = w->dims[1];
    bool f64 = z->dtype == TSR_FLOAT64;
    size_t es = f64 ? sizeof(double) : sizeof(float);
    int64_t lanes = f64 ? 8 : 16, vecs = (ch + lanes - 1) / lanes, zn = n * d->d_out * ch;
    int nt = ict_threads_for(k->threads, e * d->d_out * d->d_in * ch);
    /* How threads share the edges without racing on a destination:
     * - destinations in order (the receivers of a neighbour list): runs of
     *   edges cut where the destination changes, each with its atoms;
     * - else runs of edges, each thread but the first adding into a private
     *   copy of z, summed into z at the end;
     * - else (copies too large) slices of the channels, every thread then
     *   folding every edge's coupling. */
    bool by_edges = nt > 1 && sorted_by(dst, e);
    char *copies = NULL;
    if (nt > 1 && !by_edges && (size_t)(nt - 1) * (size_t)zn * es <= EDGE_PRIVATE_BYTES)
        copies = tsr_malloc((size_t)(nt - 1) * (size_t)zn * es);
    if (nt > 1 && !by_edges && !copies)
        nt = nt < vecs ? nt : (int)vecs;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int team = omp_get_num_threads(), me = omp_get_thread_num();
        int64_t a0 = 0, a1 = n, k0 = 0, k1 = e, c0 = 0, c1 = ch;
        void *out = z->data;
        if (by_edges) {
            edge_slice(dst, n, e, team, me, &a0, &a1, &k0, &k1);
        } else if (copies) {
            k0 = e * me / team;
            k1 = e * (me + 1) / team;
            if (me > 0)
                out = copies + (size_t)(me - 1) * (size_t)zn * es;
        } else {
            channel_slice(ch, lanes, team, me, &c0, &c1);
        }
        if (c1 > c0) {
            if (f64)
                EDGE_PICK(edge_message, double, s->isa)
            (d, x->data, y->data, w->data, src, dst, rows, out, a0, a1, k0, k1, ch, c0, c1);
            else EDGE_PICK(edge_message, float, s->isa)(d, x->data, y->data, w->data, src, dst,
                                                        rows, out, a0, a1, k0, k1, ch, c0, c1);
        }
        if (copies) {
#pragma omp barrier
            for (int t = 0; t + 1 < team; t++) {
                if (f64) {
                    double *zs = z->data;
                    const double *cs = (const double *)copies + (int64_t)t * zn;
#pragma omp for schedule(static)
                    for (int64_t i = 0; i < zn; i++)
                        zs[i] += cs[i];
                } else {
                    float *zs = z->data;
                    const float *cs = (const float *)copies + (int64_t)t * zn;
#pragma omp for schedule(static)
                    for (int64_t i = 0; i < zn; i++)
                        zs[i] += cs[i];
                }
            }
        }
    }
    free(copies);
    return TSR_OK;
}

/* The thread owning row u: the first t with u < hi[t]. */
static int row_owner(const int64_t *hi, int64_t u)
{
    int t = 0;
    while (u >= hi[t])
        t++;
    return t;
}

/* Thread me's share of a gradient with shared weight rows (edge_grad_run):
 * its edges [k0, k1) into list[k0..k1) in edge order, those on its own rows
 * (from hi[me - 1]) first, *n_own of them, then the others grouped by the
 * thread owning their rows, count[t] of them for each thread t < me. */
static void split_by_owner(const int64_t *rows, const int64_t *hi, int me, int64_t k0, int64_t k1,
                           int64_t *list, int64_t *n_own, int64_t *count)
{
    int64_t lo = me ? hi[me - 1] : 0, at = k0, next[EDGE_MAX_TEAM];
    for (int t = 0; t < me; t++)
        count[t] = 0;
    for (int64_t k = k0; k < k1; k++) {
        if (rows[k] >= lo)
            list[at++] = k;
        else
            count[row_owner(hi, rows[k])]++;
    }
    *n_own = at - k0;
    for (int t = 0; t < me; t++) {
        next[t] = at;
        at += count[t];
    }
    for (int64_t k = k0; k < k1; k++)
        if (rows[k] < lo)
            list[next[row_owner(hi, rows[k])]++] = k;
}

/* The gradient op's edges list[p0..p1) (or p0..p1), their dw into out
 * (with slots, edge p's into row p - p0). */
static void grad_edges(const tsr_cpu_state *s, const tsr_kernel_ctx *k, const int64_t *list,
                       bool slots, void *out, int64_t p0, int64_t p1)
{
    const edge_data *d = s->data;
    const tsr_tensor *a = k->inputs[0], *y = k->inputs[1], *w = k->inputs[2], *b = k->inputs[3];
    const int64_t *ia = k->inputs[4]->data, *ib = k->inputs[5]->data;
    const int64_t *rows = tsr_ict_edge_rows(k, true);
    void *dy = k->outputs[1]->data;
    int64_t ch = w->dims[1];
    if (k->outputs[0]->dtype == TSR_FLOAT64)
        EDGE_PICK(edge_grad, double, s->isa)
    (d, a->data, y->data, w->data, b->data, ia, ib, rows, list, slots, out, dy, p0, p1, ch);
    else EDGE_PICK(edge_grad, float, s->isa)(d, a->data, y->data, w->data, b->data, ia, ib, rows,
                                             list, slots, out, dy, p0, p1, ch);
}

/* dw[rows[list[q]]] += part[q - first] for q in [q0, q1): the rows'
 * contributions another thread computed. */
static void add_parts(bool f64, void *dw, const void *part, const int64_t *rows,
                      const int64_t *list, int64_t first, int64_t q0, int64_t q1, int64_t ch)
{
    for (int64_t q = q0; q < q1; q++) {
        int64_t u = rows[list[q]], i = (q - first) * ch;
        if (f64) {
            double *z = (double *)dw + u * ch;
            const double *c = (const double *)part + i;
            for (int64_t j = 0; j < ch; j++)
                z[j] += c[j];
        } else {
            float *z = (float *)dw + u * ch;
            const float *c = (const float *)part + i;
            for (int64_t j = 0; j < ch; j++)
                z[j] += c[j];
        }
    }
}

/* The gradient: threads take runs of edges, each edge's row of dy its own.
 * With shared weight rows, an edge adds into its row of dw, which another
 * thread's edge may share. Thread t owns the rows below the largest row of
 * its edges and of the threads' before it (with rows numbered in the order
 * of their first edges, as ictp_radial_rows numbers them, the rows its
 * edges start): it zeroes them and adds its edges on them into them; its
 * edges on other threads' rows store their contributions in a private
 * buffer, one row per edge, which the owners add in after a barrier. Each
 * thread runs its own edges, in edge order, with no copy of dw. */
static tsr_status edge_grad_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const edge_data *d = s->data;
    TSR_CHECK(tsr_ict_edge_check_run(k, d->ls, false, true));
    const tsr_tensor *w = k->inputs[2];
    const int64_t *rows = tsr_ict_edge_rows(k, true);
    tsr_tensor *dw = k->outputs[0];
    int64_t e = k->inputs[1]->dims[0], ch = w->dims[1], n_rows = w->dims[0];
    bool f64 = dw->dtype == TSR_FLOAT64;
    size_t row_bytes = (size_t)ch * tsr_dtype_size(dw->dtype);
    int nt = ict_threads_for(k->threads, e * d->d_out * d->d_in * ch);
    nt = nt < EDGE_MAX_TEAM ? nt : EDGE_MAX_TEAM;
    int64_t *list = rows ? tsr_malloc((size_t)(e ? e : 1) * sizeof *list) : NULL;
    /* Per thread: the end of its rows, the first of its other edges in
     * list, their counts per owner, and their contributions. */
    int64_t hi[EDGE_MAX_TEAM], first[EDGE_MAX_TEAM];
    int64_t(*count)[EDGE_MAX_TEAM] = rows ? tsr_malloc((size_t)nt * sizeof *count) : NULL;
    void *parts[EDGE_MAX_TEAM] = {0};
    bool failed = false;
    if (rows && (!list || !count)) {
        free(list);
        free(count);
        return TSR_ERR_OUT_OF_MEMORY;
    }
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int team = omp_get_num_threads(), me = omp_get_thread_num();
        int64_t k0 = e * me / team, k1 = e * (me + 1) / team, n_own = k1 - k0;
        if (rows) {
            int64_t top = 0;
            for (int64_t q = k0; q < k1; q++)
                top = rows[q] >= top ? rows[q] + 1 : top;
            hi[me] = top;
#pragma omp barrier
#pragma omp single
            {
                for (int t = 1; t < team; t++)
                    hi[t] = hi[t] > hi[t - 1] ? hi[t] : hi[t - 1];
                hi[team - 1] = n_rows;
            }
            int64_t lo = me ? hi[me - 1] : 0;
            memset((char *)dw->data + (size_t)lo * row_bytes, 0, (size_t)(hi[me] - lo) * row_bytes);
            split_by_owner(rows, hi, me, k0, k1, list, &n_own, count[me]);
            first[me] = k0 + n_own;
#pragma omp barrier
#pragma omp single
            for (int t = 0; t < team; t++) {
                int64_t n_other = e * (t + 1) / team - first[t];
                if (n_other > 0 && !(parts[t] = tsr_malloc((size_t)n_other * row_bytes)))
                    failed = true;
            }
        }
        if (!failed)
            grad_edges(s, k, list, false, dw->data, k0, k0 + n_own);
        if (rows && !failed && parts[me])
            grad_edges(s, k, list, true, parts[me], first[me], k1);
        if (rows) {
#pragma omp barrier
            /* Thread t's other edges on my rows follow those on the rows of
             * threads before me. */
            for (int t = me + 1; t < team && !failed; t++) {
                int64_t q0 = first[t];
                for (int o = 0; o < me; o++)
                    q0 += count[t][o];
                add_parts(f64, dw->data, parts[t], rows, list, first[t], q0, q0 + count[t][me], ch);
            }
        }
    }
    for (int t = 0; t < nt; t++)
        free(parts[t]);
    free(count);
    free(list);
    return failed ? TSR_ERR_OUT_OF_MEMORY : TSR_OK;
}

/* The ops of this file run float32 and float64; other dtypes on ref. */
static bool float_output(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    tsr_dtype dt = tsr_cpu_output(g, node, 0)->dtype;
    if (dt == TSR_FLOAT32 || dt == TSR_FLOAT64)
        return true;
    snprintf(why, size, "%s: %s runs on the ref backend", node->op->name, tsr_dtype_name(dt));
    return false;
}

static bool edge_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (!float_output(g, node, why, size))
        return false;
    int ls[3];
    double alpha;
    bool tr;
    if (tsr_ict_edge_attrs_read(node, ls, &alpha, &tr) != TSR_OK) {
        snprintf(why, size, "%s: invalid attributes (the ref backend reports them)",
                 node->op->name);
        return false;
    }
    if (ls[0] > EDGE_MAX_L || ls[2] > EDGE_MAX_L) {
        snprintf(why, size, "%s: node ranks %d and %d, above %d, run on the ref backend",
                 node->op->name, ls[0], ls[2], EDGE_MAX_L);
        return false;
    }
    return true;
}

static void edge_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                         uint8_t *wanted, uint8_t *produced)
{
    for (int i = 0; i < node->n_inputs; i++)
        wanted[i] = TSR_LAYOUT_PLAIN;
    for (int i = 0; i < node->n_outputs; i++)
        produced[i] = TSR_LAYOUT_PLAIN;
}

/* The coupling as [d2][d3][d1] ([d2][d1][d3] for a transposed message, so
 * that both directions run the same loops), each row of d3 x d1 values
 * padded with zeros to whole vectors: folding an edge's y runs along them
 * as vectors. */
static tsr_status edge_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    int ls[3];
    double alpha;
    bool tr;
    TSR_CHECK(tsr_ict_edge_attrs_read(ctx->node, ls, &alpha, &tr));
    tsr_ict_plan plan;
    TSR_CHECK(tsr_ict_plan_build(ls[0], ls[1], ls[2], alpha, &plan));
    int d1 = plan.b[0].dim, d2 = plan.b[1].dim, d3 = plan.b[2].dim;
    tsr_dtype dt = tsr_cpu_output(ctx->graph, ctx->node, 0)->dtype;
    size_t es = tsr_dtype_size(dt), lanes = ICT_VEC_BYTES / es;
    int nqp = (int)(((size_t)d1 * d3 + lanes - 1) / lanes * lanes);
    edge_data *d = tsr_calloc(1, sizeof *d + (size_t)d2 * nqp * es);
    if (!d) {
        tsr_ict_plan_free(&plan);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    *d = (edge_data){.transpose = tr,
                     .d_in = tr ? d3 : d1,
                     .d_out = tr ? d1 : d3,
                     .d2 = d2,
                     .nqp = nqp,
                     .w = d + 1};
    memcpy(d->ls, ls, sizeof ls);
    for (int r = 0; r < d3; r++)
        for (int p = 0; p < d1; p++)
            for (int q = 0; q < d2; q++) {
                double v = plan.w[((int64_t)r * d1 + p) * d2 + q];
                int64_t i = (int64_t)q * nqp + (tr ? p * d3 + r : r * d1 + p);
                if (es == sizeof(double))
                    ((double *)(d + 1))[i] = v;
                else
                    ((float *)(d + 1))[i] = (float)v;
            }
    for (int q = 0, k = 0; q < d2; q++) {
        d->nzo[q] = k;
        for (int i = 0; i < d1 * d3; i++) {
            double v = es == sizeof(double) ? ((double *)(d + 1))[q * nqp + i]
                                            : ((float *)(d + 1))[q * nqp + i];
            if (v != 0)
                d->nzq[k++] = i;
        }
        d->nzo[q + 1] = k;
    }
    tsr_ict_plan_free(&plan);
    s->data = d;
    s->run = ctx->node->op == &tsr_op_ICTEdgeMessage ? edge_message_run : edge_grad_run;
    return TSR_OK;
}

/* ------------------------------------------------------------------ ICT */

/* In coordinates, t = Qᵀ T^l = C_l Qᵀ v^⊗l (Qᵀ Π = Qᵀ: Q spans the
 * symmetric traceless tensors), a homogeneous polynomial of degree l in
 * the (normalized) vector: t_m = Σ_class coef[m][class] x^a y^b z^(l-a-b),
 * class = a (l + 1) + b as tsr_ict_classes numbers them, the coefficients
 * the class sums of Q's columns times C_l, built once here instead of the
 * basis at every run. */
typedef struct {
    int l, dim, ncls;
    bool normalize;
    double coef[]; /* [dim][ncls] */
} ict_data;

/* x^p by p multiplies, p a constant where the rank is: the monomials of a
 * vector stay in registers (from arrays of powers, GCC stored them one
 * by one and loaded them in pairs, stalling on every store forwarded). */
static inline __attribute__((always_inline)) double ict_pow(double x, int p)
{
    double r = 1.0;
    for (int i = 0; i < p; i++)
        r *= x;
    return r;
}

/* clang-format off */
/* One vector's components, with the rank a constant of each call (the
 * switch of ict_run's loop; ranks above 3 read it at run time), so that
 * the loops over monomials and components unroll and the components' sums
 * run side by side instead of one dependent chain after another. 45902
 * vectors, 2 threads: rank 3 1.41 -> 0.79 ms, rank 2 0.93 -> 0.36. */
#define ICT_DEFINE(T)                                                                              \
    static inline __attribute__((always_inline)) void ict_one_##T(                                 \
        const ict_data *d, const double n[3], double inv, T *o, const int l)                       \
    {                                                                                              \
        const int ncls = (l + 1) * (l + 1);                                                        \
        const double x = n[0] * inv, y = n[1] * inv, z = n[2] * inv;                               \
        for (int m = 0; m < 2 * l + 1; m++) {                                                      \
            const double *cm = d->coef + (int64_t)m * ncls;                                        \
            double t = 0.0;                                                                        \
            for (int a = 0; a <= l; a++)                                                           \
                for (int b = 0; a + b <= l; b++) {                                                 \
                    double mono = ict_pow(x, a) * ict_pow(y, b) * ict_pow(z, l - a - b);           \
                    t += cm[a * (l + 1) + b] * mono;                                               \
                }                                                                                  \
            o[m] = (T)t;                                                                           \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    static int64_t ict_run_##T(const ict_data *d, const T *v, T *out, int64_t e, int threads)      \
    {                                                                                              \
        int l = d->l, dim = d->dim;                                                                \
        int64_t bad = e;                                                                           \
        _Pragma("omp parallel for num_threads(threads) reduction(min : bad) if (threads > 1)")     \
        for (int64_t i = 0; i < e; i++) {                                                          \
            double n[3] = {v[3 * i], v[3 * i + 1], v[3 * i + 2]};                                  \
            double len = sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);                            \
            if (d->normalize && !(len > 0.0 && isfinite(len))) {                                   \
                bad = i < bad ? i : bad;                                                           \
                continue;                                                                          \
            }                                                                                      \
            T *o = out + i * dim;                                                                  \
            double inv = d->normalize ? 1.0 / len : 1.0;                                           \
            switch (l) {                                                                           \
            case 0: ict_one_##T(d, n, inv, o, 0); break;                                           \
            case 1: ict_one_##T(d, n, inv, o, 1); break;                                           \
            case 2: ict_one_##T(d, n, inv, o, 2); break;                                           \
            case 3: ict_one_##T(d, n, inv, o, 3); break;                                           \
            default: ict_one_##T(d, n, inv, o, l); break;                                          \
            }                                                                                      \
        }                                                                                          \
        return bad < e ? bad : -1;                                                                 \
    }
/* clang-format on */

ICT_DEFINE(float)
ICT_DEFINE(double)

static tsr_status ict_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const ict_data *d = s->data;
    const tsr_tensor *v = k->inputs[0];
    if (v->rank != 2 || v->dims[1] != 3)
        return tsr_error(TSR_ERR_SHAPE, "ICT takes vectors [E, 3], got rank %d", v->rank);
    int64_t e = v->dims[0];
    int nt = ict_threads_for(k->threads, e * d->dim * d->ncls);
    int64_t bad = v->dtype == TSR_FLOAT64 ? ict_run_double(d, v->data, k->outputs[0]->data, e, nt)
                                          : ict_run_float(d, v->data, k->outputs[0]->data, e, nt);
    if (bad >= 0) {
        double n[3] = {tsr_get_f(v, 3 * bad), tsr_get_f(v, 3 * bad + 1), tsr_get_f(v, 3 * bad + 2)};
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "vector %lld is (%g, %g, %g); ICT with normalize = 1 needs vectors of "
                         "positive finite length",
                         (long long)bad, n[0], n[1], n[2]);
    }
    return TSR_OK;
}

static bool ict_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (!float_output(g, node, why, size))
        return false;
    int64_t l = tsr_attr_int(node, "l"), normalize = tsr_attr_int(node, "normalize");
    /* Up to rank 1 the components are the coordinates (Q = I). */
    bool coords = tsr_attr_int(node, "coordinates") == 1 || l == 0 || l == 1;
    if (!coords || l < 0 || l > TSR_ICT_MAX_L || (normalize != 0 && normalize != 1)) {
        snprintf(why, size, "ICT: components (coordinates = 0) above rank 1 run on ref");
        return false;
    }
    return true;
}

static tsr_status ict_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    int l = (int)tsr_attr_int(ctx->node, "l"), dim = 2 * l + 1, ncls = (l + 1) * (l + 1);
    /* The rank-l basis is the first of the path (l, 0 -> l). */
    tsr_ict_plan plan;
    TSR_CHECK(tsr_ict_plan_build(l, 0, l, 1.0, &plan));
    const tsr_ict_basis *q = &plan.b[0];
    ict_data *d = tsr_calloc(1, sizeof *d + (size_t)dim * ncls * sizeof(double));
    int *cls = tsr_malloc((size_t)q->size * sizeof *cls);
    if (!d || !cls) {
        free(d);
        free(cls);
        tsr_ict_plan_free(&plan);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    *d = (ict_data){
        .l = l, .dim = dim, .ncls = ncls, .normalize = tsr_attr_int(ctx->node, "normalize") == 1};
    double c_l = 1.0;
    for (int i = 1; i <= l; i++)
        c_l *= (2.0 * i - 1.0) / i;
    tsr_ict_classes(l, cls);
    for (int m = 0; m < dim; m++)
        for (int64_t i = 0; i < q->size; i++)
            d->coef[m * ncls + cls[i]] += c_l * q->q[m * q->size + i];
    free(cls);
    tsr_ict_plan_free(&plan);
    s->data = d;
    s->run = ict_run;
    return TSR_OK;
}

/* ---------------------------------------------------------- BesselBasis */

/* One distance's basis (derivative 0) or its derivative in r (1), in
 * double whatever the output's dtype. sin(n θ) and cos(n θ), θ = π r/r_c,
 * come from one sine and cosine by the angle-addition recurrence instead of
 * a sine and cosine per n as in the ref kernel; with f the cutoff
 * polynomial, B_n = √(2/r_c) sin(w_n r)/r · f and
 * B_n' = √(2/r_c) ((w_n cos(w_n r)/r − sin(w_n r)/r²) f + sin(w_n r)/r · f'). */
static void bessel_row(const tsr_bessel_params *b, double r, double *od, float *of)
{
    const int64_t nb = b->n_basis;
    if (r >= b->rc) {
        if (od)
            memset(od, 0, (size_t)nb * sizeof *od);
        else
            memset(of, 0, (size_t)nb * sizeof *of);
        return;
    }
    const double pi = 3.14159265358979323846, p = b->p, x = r / b->rc;
    double xp1 = 1.0; /* x^(p-1) */
    for (int i = 1; i < b->p; i++)
        xp1 *= x;
    const double c0 = -(p + 1.0) * (p + 2.0) / 2.0, c1 = p * (p + 2.0), c2 = -p * (p + 1.0) / 2.0;
    const double f = 1.0 + xp1 * x * (c0 + x * (c1 + x * c2));
    const double df = xp1 * (p * c0 + x * ((p + 1.0) * c1 + x * (p + 2.0) * c2)) / b->rc;
    const double pre = sqrt(2.0 / b->rc), inv = 1.0 / r, th = pi * x;
    const double s1 = sin(th), k1 = cos(th);
    double sn = s1, cn = k1;
    for (int64_t n = 0; n < nb; n++) {
        double v = sn * inv * f;
        if (b->order == 1)
            v = ((double)(n + 1) * pi / b->rc * cn * inv - sn * inv * inv) * f + sn * inv * df;
        if (od)
            od[n] = pre * v;
        else
            of[n] = (float)(pre * v);
        const double next = sn * k1 + cn * s1;
        cn = cn * k1 - sn * s1;
        sn = next;
    }
}

static tsr_status bessel_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const tsr_bessel_params *b = s->data;
    const tsr_tensor *r = k->inputs[0];
    tsr_tensor *out = k->outputs[0];
    int64_t n = tsr_tensor_numel(r), nb = b->n_basis, bad = n;
    bool f64 = r->dtype == TSR_FLOAT64;
    int nt = ict_threads_for(k->threads, n * (nb * 8 + 40));
#pragma omp parallel for num_threads(nt) if (nt > 1) reduction(min : bad)
    for (int64_t i = 0; i < n; i++) {
        double ri = f64 ? ((const double *)r->data)[i] : ((const float *)r->data)[i];
        if (!(ri > 0.0)) {
            bad = i < bad ? i : bad;
            continue;
        }
        bessel_row(b, ri, f64 ? (double *)out->data + i * nb : NULL,
                   f64 ? NULL : (float *)out->data + i * nb);
    }
    if (bad < n)
        return tsr_bessel_bad_distance(
            bad, f64 ? ((const double *)r->data)[bad] : ((const float *)r->data)[bad]);
    return TSR_OK;
}

static bool bessel_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (!float_output(g, node, why, size))
        return false;
    if (tsr_attr_int(node, "derivative") > 1) {
        snprintf(why, size, "BesselBasis: derivatives above the first run on ref");
        return false;
    }
    return true;
}

static tsr_status bessel_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    tsr_bessel_params *b = tsr_malloc(sizeof *b);
    if (!b)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = tsr_bessel_read(ctx->node, b);
    if (st != TSR_OK) {
        free(b);
        return st;
    }
    s->data = b;
    s->run = bessel_run;
    return TSR_OK;
}

/* ------------------------------------------------ RadialSpline(Dot) */

/* clang-format off */
/* Per distance, the weights of its interval's four coefficients (in
 * double), then for each block, along its functions, simd loops over the
 * interval's rows of coefficients, which lie side by side (one contiguous
 * read of 4 K values per distance for all blocks). */
#define SPLINE_DEFINE(T, SUFFIX, TARGET)                                                           \
    TARGET static void spline_rows_##T##_##SUFFIX(const tsr_spline_params *p, const T *r,         \
                                                  const T *tab, T *const *blocks, int m,           \
                                                  T *dot, int64_t n, int64_t kb, int64_t e0,       \
                                                  int64_t e1)                                      \
    {                                                                                              \
        const int64_t kk = kb * m;                                                                 \
        for (int64_t e = e0; e < e1; e++) {                                                        \
            double w[4] = {0.0, 0.0, 0.0, 0.0};                                                    \
            int64_t i = 0;                                                                         \
            bool in = tsr_spline_weights((double)r[e], p->r_max, n, p->order, &i, w);              \
            const T w0 = (T)w[0], w1 = (T)w[1], w2 = (T)w[2], w3 = (T)w[3];                        \
            T acc = 0;                                                                             \
            for (int q = 0; q < m; q++) {                                                          \
                const T *c0 = tab + 4 * i * kk + q * kb, *c1 = c0 + kk, *c2 = c1 + kk;             \
                const T *c3 = c2 + kk;                                                             \
                T *b = blocks[q] + e * kb;                                                         \
                if (!in) {                                                                         \
                    if (!dot)                                                                      \
                        memset(b, 0, (size_t)kb * sizeof(T));                                      \
                } else if (dot) {                                                                  \
                    _Pragma("omp simd reduction(+ : acc)")                                         \
                    for (int64_t j = 0; j < kb; j++)                                               \
                        acc += b[j] * (w0 * c0[j] + w1 * c1[j] + w2 * c2[j] + w3 * c3[j]);         \
                } else {                                                                           \
                    _Pragma("omp simd")                                                            \
                    for (int64_t j = 0; j < kb; j++)                                               \
                        b[j] = w0 * c0[j] + w1 * c1[j] + w2 * c2[j] + w3 * c3[j];                  \
                }                                                                                  \
            }                                                                                      \
            if (dot)                                                                               \
                dot[e] = acc;                                                                      \
        }                                                                                          \
    }

/* clang-format on */

#if TSR_CPU_X86
#define SPLINE_LEVELS(T)                                                                           \
    SPLINE_DEFINE(T, portable, )                                                                   \
    SPLINE_DEFINE(T, avx2, TARGET_AVX2)                                                            \
    SPLINE_DEFINE(T, avx512, TARGET_AVX512)
#else
#define SPLINE_LEVELS(T) SPLINE_DEFINE(T, portable, )
#endif

SPLINE_LEVELS(float)
SPLINE_LEVELS(double)

static tsr_status spline_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const tsr_spline_params *p = s->data;
    int64_t n, kb;
    int m;
    TSR_CHECK(tsr_spline_shapes(k, &n, &m, &kb));
    const tsr_tensor *r = k->inputs[0], *t = k->inputs[1];
    bool dot = k->node->op == &tsr_op_RadialSplineDot;
    /* The blocks: the Dot's dy inputs (read) or the outputs (written). */
    void *blocks[TSR_MAX_NODE_IO];
    for (int q = 0; q < m; q++)
        blocks[q] = dot ? k->inputs[2 + q]->data : k->outputs[q]->data;
    void *out = dot ? k->outputs[0]->data : NULL;
    int64_t len = tsr_tensor_numel(r);
    bool f64 = r->dtype == TSR_FLOAT64;
    for (int64_t e = 0; e < len; e++) {
        double re = f64 ? ((const double *)r->data)[e] : ((const float *)r->data)[e];
        if (!(re >= 0.0))
            return tsr_spline_bad_distance(e, re);
    }
    int nt = ict_threads_for(k->threads, len * (kb * m * 4 + 20));
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int team = omp_get_num_threads(), me = omp_get_thread_num();
        int64_t e0 = len * me / team, e1 = len * (me + 1) / team;
        if (f64)
            EDGE_PICK(spline_rows, double, s->isa)
        (p, r->data, t->data, (double *const *)blocks, m, out, n, kb, e0, e1);
        else EDGE_PICK(spline_rows, float, s->isa)(p, r->data, t->data, (float *const *)blocks, m,
                                                   out, n, kb, e0, e1);
    }
    return TSR_OK;
}

static tsr_status spline_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    tsr_spline_params *p = tsr_malloc(sizeof *p);
    if (!p)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = tsr_spline_read(ctx->node, p);
    if (st != TSR_OK) {
        free(p);
        return st;
    }
    s->data = p;
    s->run = spline_run;
    return TSR_OK;
}

const tsr_cpu_op tsr_cpu_ict_edge_ops[] = {
    {&tsr_op_ICT, ict_supports, edge_layouts, ict_prepare},
    {&tsr_op_BesselBasis, bessel_supports, edge_layouts, bessel_prepare},
    {&tsr_op_RadialSpline, float_output, edge_layouts, spline_prepare},
    {&tsr_op_RadialSplineDot, float_output, edge_layouts, spline_prepare},
    {&tsr_op_ICTEdgeMessage, edge_supports, edge_layouts, edge_prepare},
    {&tsr_op_ICTEdgeMessageGrad, edge_supports, edge_layouts, edge_prepare},
    {NULL},
};
