/* ICTP potentials in the cpu backend, float32 and float64: ICTProduct and
 * SumTo (the reduction that the gradients of broadcast products emit).
 *
 * ICTProduct runs the ref kernel's algorithm (src/ops/ict.c: project both
 * inputs onto the 2l+1 coordinates of the symmetric traceless tensors,
 * couple them, project back), with the coupling built once at prepare
 * instead of every run, its coefficients in the data's dtype, every loop
 * running along the channels (the fastest axis of [N, 3^l, C]) as vectors,
 * and threads over rows only when the rows hold enough work for them.
 * With coordinates, inputs and output are coordinates already: the
 * coupling reads and writes them in place, without projections. */
#include "backends/cpu/ict_vec.h"
#include "backends/cpu/kernels_internal.h"
#include "ops/ict_plan.h"
#include "ops/movement.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ ICTProduct */

/* One basis as the kernel uses it: the components of a class (equal in
 * every symmetric tensor, so also in the basis columns) share one
 * coefficient. Inputs are summed per class first, then projected with
 * qc [dim][ncls]; outputs are computed for one representative component
 * per class and copied to the others. */
typedef struct {
    int dim, ncls;
    int64_t size;
    const int *cls; /* [size]: the class of each component, 0..ncls-1 */
    const int *rep; /* [ncls]: the first component of each class */
    const void *qc; /* [dim][ncls], the dtype of the data */
} ict_kernel_basis;

typedef struct {
    ict_kernel_basis b[3];
    const void *w; /* [d3][d1][d2] coupling, the dtype of the data */
    /* The same as [d2][d3][d1] and [d1][d3][d2]: folding a channel-less
     * input into the coupling runs along the other two axes as vectors. */
    const void *wy, *wx;
    /* The nonzero couplings w_rst by output coordinate r: those of r are
     * k in [ro[r], ro[r+1]), with s = rs[k], t = rt[k], w = rc[k] (the dtype). */
    const int *ro, *rs, *rt;
    const void *rc;
    bool sum;      /* sum_channels: the output is summed over the channels */
    bool coords;   /* coordinates: no projections */
} ict_product_data;

static int64_t channels_of(const tsr_tensor *t)
{
    return t->rank == 3 ? t->dims[2] : 1;
}

/* Scratch per thread: both inputs' class sums and coordinates, the
 * output's coordinates, one output coordinate before its channel sum, the
 * channel sums of x_s y_t, and the coupling folded with a channel-less
 * input. */
static size_t ict_product_scratch(const ict_product_data *d, int64_t cx, int64_t cy, int64_t ch)
{
    const ict_kernel_basis *b = d->b;
    int most = b[0].dim > b[1].dim ? b[0].dim : b[1].dim;
    return (size_t)((b[0].ncls + b[0].dim) * cx + (b[1].ncls + b[1].dim) * cy + b[2].dim * ch +
                    ch + b[0].dim * b[1].dim + b[2].dim * most);
}

/* The general product's stack arrays hold ranks up to TSR_ICT_MAX_L. */
#define ICT_MAX_D (2 * TSR_ICT_MAX_L + 1)

/* clang-format off */
/* o[m][c] = Σ_k qc[m][k] Σ_{i in class k} in[i][c], with sums [ncls][cc]. */
#define ICT_PROJECT(T, B, IN, CC, SUMS, O)                                                         \
    do {                                                                                           \
        const T *qc_ = (B)->qc;                                                                    \
        memset(SUMS, 0, (size_t)((B)->ncls * (CC)) * sizeof(T));                                   \
        for (int64_t i = 0; i < (B)->size; i++) {                                                  \
            T *s_ = SUMS + (B)->cls[i] * (CC);                                                     \
            const T *in_ = IN + i * (CC);                                                          \
            _Pragma("omp simd")                                                                    \
            for (int64_t c = 0; c < (CC); c++)                                                     \
                s_[c] += in_[c];                                                                   \
        }                                                                                          \
        for (int m = 0; m < (B)->dim; m++) {                                                       \
            T *o_ = O + m * (CC);                                                                  \
            memset(o_, 0, (size_t)(CC) * sizeof(T));                                               \
            for (int k = 0; k < (B)->ncls; k++) {                                                  \
                T q = qc_[m * (B)->ncls + k];                                                      \
                const T *s_ = SUMS + k * (CC);                                                     \
                if (q != 0) {                                                                      \
                    _Pragma("omp simd")                                                            \
                    for (int64_t c = 0; c < (CC); c++)                                             \
                        o_[c] += q * s_[c];                                                        \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* z_r = Σ w_rst x_s ⊙ y_t over the nonzero couplings, for n rows in
 * coordinates with ch channels on x, y and z (row i at x + i·sx, its
 * coordinate s at + s·ch; y and z alike). The rows' vectors of channels
 * (a row's last one zero-padded) run TILE at a time: packed side by side,
 * each coupling's multiply-adds then address both inputs at constant
 * offsets, and each vector has its own accumulator, so that they overlap
 * instead of waiting on one another. */
#define ICT_COUPLE(T, SUFFIX, TARGET, TILE)                                                        \
    typedef T ict_vec_##SUFFIX __attribute__((vector_size(ICT_VEC_BYTES)));                       \
    TARGET static void ict_couple_##SUFFIX(const ict_product_data *d, const T *x, const T *y,      \
                                           T *z, int64_t n, int64_t sx, int64_t sy, int64_t sz,    \
                                           int64_t ch)                                             \
    {                                                                                              \
        typedef ict_vec_##SUFFIX V;                                                                \
        const int64_t lanes = ICT_VEC_BYTES / sizeof(T), nv = (ch + lanes - 1) / lanes;            \
        const int64_t slots = n * nv;                                                              \
        const int d1 = d->b[0].dim, d2 = d->b[1].dim, d3 = d->b[2].dim;                            \
        const int *ro = d->ro, *rs = d->rs, *rt = d->rt;                                           \
        const T *rc = d->rc;                                                                       \
        V xp[ICT_MAX_D * (TILE)], yp[ICT_MAX_D * (TILE)];                                          \
        for (int64_t v0 = 0; v0 < slots; v0 += (TILE)) {                                           \
            int64_t oz[TILE], len[TILE];                                                           \
            for (int v = 0; v < (TILE); v++) {                                                     \
                /* Past the last slot: zeros, stored nowhere. */                                   \
                bool live = v0 + v < slots;                                                        \
                int64_t i = live ? (v0 + v) / nv : 0, cb = live ? (v0 + v) % nv * lanes : 0;       \
                len[v] = !live ? 0 : ch - cb < lanes ? ch - cb : lanes;                            \
                oz[v] = i * sz + cb;                                                               \
                for (int s = 0; s < d1; s++)                                                       \
                    ICT_VEC_LOAD(xp[s * (TILE) + v], x + i * sx + s * ch + cb, len[v]);            \
                for (int t = 0; t < d2; t++)                                                       \
                    ICT_VEC_LOAD(yp[t * (TILE) + v], y + i * sy + t * ch + cb, len[v]);            \
            }                                                                                      \
            for (int r = 0; r < d3; r++) {                                                         \
                V acc[TILE];                                                                       \
                _Pragma("GCC unroll 8") for (int v = 0; v < (TILE); v++) acc[v] = (V){0};          \
                for (int k = ro[r]; k < ro[r + 1]; k++) {                                          \
                    const V *xs = xp + rs[k] * (TILE), *yt = yp + rt[k] * (TILE);                  \
                    const T c = rc[k];                                                             \
                    _Pragma("GCC unroll 8") for (int v = 0; v < (TILE); v++) acc[v] +=             \
                        (c * xs[v]) * yt[v];                                                       \
                }                                                                                  \
                for (int v = 0; v < (TILE); v++)                                                   \
                    ICT_VEC_STORE(z + oz[v] + r * ch, acc[v], len[v]);                             \
            }                                                                                      \
        }                                                                                          \
    }

#define ICT_PRODUCT_ROWS(T, SUFFIX, TARGET)                                                        \
    TARGET static void ict_product_rows_##SUFFIX(const ict_product_data *d, const T *x,            \
                                                 const T *y, T *z, int64_t r0, int64_t r1,         \
                                                 int64_t cx, int64_t cy, int64_t ch, T *scratch)   \
    {                                                                                              \
        const ict_kernel_basis *b1 = &d->b[0], *b2 = &d->b[1], *b3 = &d->b[2];                     \
        const int d1 = b1->dim, d2 = b2->dim, d3 = b3->dim;                                        \
        const T *w = d->w, *q3 = b3->qc;                                                           \
        T *xs = scratch, *xp = xs + b1->ncls * cx, *ys = xp + d1 * cx, *yp = ys + b2->ncls * cy;   \
        T *zp = yp + d2 * cy, *one = zp + d3 * ch, *h = one + ch;                                  \
        T *folded = h + d1 * d2;                                                                   \
        const T *wy = d->wy, *wx = d->wx;                                                          \
        /* With sum: cho = 1 output channel, coordinates zt[r] (stride zs = 1). */                 \
        const int64_t cho = d->sum ? 1 : ch, zs = cho;                                             \
        const bool coords = d->coords;                                                             \
        const int64_t w1 = coords ? d1 : b1->size, w2 = coords ? d2 : b2->size;                    \
        const int64_t w3 = coords ? d3 : b3->size;                                                 \
        if (coords && cx != 1 && cy != 1 && !d->sum) {                                             \
            ict_couple_##SUFFIX(d, x + r0 * w1 * ch, y + r0 * w2 * ch, z + r0 * w3 * ch, r1 - r0,  \
                                w1 * ch, w2 * ch, w3 * ch, ch);                                    \
            return;                                                                                \
        }                                                                                          \
        for (int64_t a = r0; a < r1; a++) {                                                        \
            const T *xa = x + a * w1 * cx, *ya = y + a * w2 * cy, *xt = xa, *yt = ya;              \
            T *za = z + a * w3 * cho, *zt = za;                                                    \
            if (!coords) {                                                                         \
                ICT_PROJECT(T, b1, xa, cx, xs, xp);                                                \
                ICT_PROJECT(T, b2, ya, cy, ys, yp);                                                \
                xt = xp;                                                                           \
                yt = yp;                                                                           \
                zt = zp;                                                                           \
            }                                                                                      \
            if (d->sum && cx == ch && cy == ch) {                                                  \
                /* z_r = Σ_st w_rst Σ_c x_s,c y_t,c: the channels summed first. */                 \
                for (int st = 0; st < d1 * d2; st++) {                                             \
                    const T *xv = xt + (st / d2) * cx, *yv = yt + (st % d2) * cy;                  \
                    T acc = 0;                                                                     \
                    _Pragma("omp simd reduction(+ : acc)")                                         \
                    for (int64_t c = 0; c < ch; c++)                                               \
                        acc += xv[c] * yv[c];                                                      \
                    h[st] = acc;                                                                   \
                }                                                                                  \
                for (int r = 0; r < d3; r++) {                                                     \
                    T acc = 0;                                                                     \
                    for (int st = 0; st < d1 * d2; st++)                                           \
                        acc += w[(int64_t)r * d1 * d2 + st] * h[st];                               \
                    zt[r] = acc;                                                                   \
                }                                                                                  \
            }                                                                                      \
            /* folded[r][s] = Σ_t w_rst y_t (or [r][t], Σ_s w_rst x_s), as vectors over r, s. */    \
            if (cy == 1 || cx == 1) {                                                              \
                const int64_t fn = (int64_t)d3 * (cy == 1 ? d1 : d2);                              \
                const int nt = cy == 1 ? d2 : d1;                                                  \
                const T *wf = cy == 1 ? wy : wx, *v = cy == 1 ? yt : xt;                           \
                memset(folded, 0, (size_t)fn * sizeof *folded);                                    \
                for (int t = 0; t < nt; t++) {                                                     \
                    const T vt = v[t], *wt = wf + t * fn;                                          \
                    _Pragma("omp simd")                                                            \
                    for (int64_t i = 0; i < fn; i++)                                               \
                        folded[i] += vt * wt[i];                                                   \
                }                                                                                  \
            }                                                                                      \
            /* Both with channels (and no channel sum): the projected row alone. */              \
            if (cx != 1 && cy != 1 && !d->sum)                                                     \
                ict_couple_##SUFFIX(d, xt, yt, zt, 1, 0, 0, 0, ch);                                \
            /* One input without channels: the coupling folded with it, per r. */                  \
            for (int r = 0; r < d3 && (cx == 1 || cy == 1) && !(d->sum && cx == ch && cy == ch);   \
                 r++) {                                                                            \
                T *zr = d->sum ? one : zt + r * ch;                                                \
                memset(zr, 0, (size_t)ch * sizeof *zr);                                            \
                if (cy == 1) {                                                                     \
                    for (int s = 0; s < d1; s++) {                                                 \
                        const T f = folded[r * d1 + s];                                            \
                        const T *xv = xt + s * cx;                                                 \
                        _Pragma("omp simd")                                                        \
                        for (int64_t c = 0; c < ch; c++)                                           \
                            zr[c] += f * xv[c];                                                    \
                    }                                                                              \
                } else if (cx == 1) {                                                              \
                    for (int t = 0; t < d2; t++) {                                                 \
                        const T f = folded[r * d2 + t];                                            \
                        const T *yv = yt + t * cy;                                                 \
                        _Pragma("omp simd")                                                        \
                        for (int64_t c = 0; c < ch; c++)                                           \
                            zr[c] += f * yv[c];                                                    \
                    }                                                                              \
                }                                                                                  \
                if (d->sum) {                                                                      \
                    T acc = 0;                                                                     \
                    for (int64_t c = 0; c < ch; c++)                                               \
                        acc += zr[c];                                                              \
                    zt[r] = acc;                                                                   \
                }                                                                                  \
            }                                                                                      \
            for (int k = 0; !coords && k < b3->ncls; k++) {                                        \
                T *o = za + b3->rep[k] * cho;                                                      \
                memset(o, 0, (size_t)cho * sizeof *o);                                             \
                for (int r = 0; r < d3; r++) {                                                     \
                    T q = q3[r * b3->ncls + k];                                                    \
                    const T *zr = zt + r * zs;                                                     \
                    if (q != 0) {                                                                  \
                        _Pragma("omp simd")                                                        \
                        for (int64_t c = 0; c < cho; c++)                                          \
                            o[c] += q * zr[c];                                                     \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
            for (int64_t i = 0; !coords && i < b3->size; i++) {                                    \
                int64_t from = b3->rep[b3->cls[i]];                                                \
                if (from != i)                                                                     \
                    memcpy(za + i * cho, za + from * cho, (size_t)cho * sizeof *za);               \
            }                                                                                      \
        }                                                                                          \
    }
/* clang-format on */

/* The tile of whole vectors in registers: 8 of 32 AVX-512 registers, 4
 * vectors (8 of 16 registers) with AVX2 and on the portable path. */
ICT_COUPLE(float, float_portable, , 4)
ICT_COUPLE(double, double_portable, , 4)
ICT_PRODUCT_ROWS(float, float_portable, )
ICT_PRODUCT_ROWS(double, double_portable, )
#if TSR_CPU_X86
#define AVX2_TARGET __attribute__((target("avx2,fma")))
#define AVX512_TARGET __attribute__((target("avx512f,avx2,fma")))
ICT_COUPLE(float, float_avx2, AVX2_TARGET, 4)
ICT_COUPLE(double, double_avx2, AVX2_TARGET, 4)
ICT_COUPLE(float, float_avx512, AVX512_TARGET, 8)
ICT_COUPLE(double, double_avx512, AVX512_TARGET, 8)
ICT_PRODUCT_ROWS(float, float_avx2, AVX2_TARGET)
ICT_PRODUCT_ROWS(double, double_avx2, AVX2_TARGET)
ICT_PRODUCT_ROWS(float, float_avx512, AVX512_TARGET)
ICT_PRODUCT_ROWS(double, double_avx512, AVX512_TARGET)
#define ICT_PRODUCT_PICK(T, isa)                                                                   \
    ((isa) == TSR_ISA_AVX512 ? ict_product_rows_##T##_avx512                                       \
     : (isa) == TSR_ISA_AVX2 ? ict_product_rows_##T##_avx2                                         \
                             : ict_product_rows_##T##_portable)
#else
/* No x86 level elsewhere: the portable loops (auto-vectorized for the target). */
#define ICT_PRODUCT_PICK(T, isa) ict_product_rows_##T##_portable
#endif

static tsr_status ict_product_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const ict_product_data *d = s->data;
    const tsr_tensor *x = k->inputs[0], *y = k->inputs[1];
    tsr_tensor *z = k->outputs[0];
    int64_t n = x->dims[0], cx = channels_of(x), cy = channels_of(y), ch = cx > cy ? cx : cy;
    const ict_kernel_basis *b = d->b;
    int64_t w[3];
    for (int i = 0; i < 3; i++)
        w[i] = d->coords ? b[i].dim : b[i].size;
    if (y->dims[0] != n || x->dims[1] != w[0] || y->dims[1] != w[1] || z->dims[1] != w[2] ||
        (cx != 1 && cx != ch) || (cy != 1 && cy != ch) || channels_of(z) != (d->sum ? 1 : ch))
        return tsr_error(TSR_ERR_SHAPE, "ICTProduct: x, y and z have inconsistent shapes");
    bool f64 = z->dtype == TSR_FLOAT64;
    size_t es = f64 ? sizeof(double) : sizeof(float), per = ict_product_scratch(d, cx, cy, ch);
    /* Multiply-adds per row: class sums and projections, coupling, output. */
    int64_t row_work = d->coords ? (int64_t)b[0].dim * b[1].dim * b[2].dim * ch
                                 : (b[0].size + b[0].dim * b[0].ncls) * cx +
                                       (b[1].size + b[1].dim * b[1].ncls) * cy +
                                       (int64_t)(b[0].dim * b[1].dim + b[2].ncls) * b[2].dim * ch;
    int nt = ict_threads_for(k->threads, n * row_work);
    tsr_status st = TSR_OK;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        void *scratch = tsr_malloc(per * es);
        int team = omp_get_num_threads(), me = omp_get_thread_num();
        int64_t r0 = n * me / team, r1 = n * (me + 1) / team;
        if (!scratch) {
#pragma omp atomic write
            st = TSR_ERR_OUT_OF_MEMORY;
        } else if (f64) {
            ICT_PRODUCT_PICK(double, s->isa)(d, x->data, y->data, z->data, r0, r1, cx, cy, ch,
                                             scratch);
        } else {
            ICT_PRODUCT_PICK(float, s->isa)(d, x->data, y->data, z->data, r0, r1, cx, cy, ch,
                                            scratch);
        }
        free(scratch);
    }
    return st;
}

static bool ict_product_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    const tsr_value *z = tsr_cpu_output(g, node, 0);
    if (z->dtype != TSR_FLOAT32 && z->dtype != TSR_FLOAT64) {
        snprintf(why, size, "ICTProduct: %s runs on the ref backend", tsr_dtype_name(z->dtype));
        return false;
    }
    return true;
}

/* Lays out basis b at *at (ints, then the coefficients as the dtype, es
 * bytes each) and advances *at; with kb NULL only measures. */
static size_t kernel_basis_build(const tsr_ict_basis *b, const int *cls_raw, size_t es,
                                 ict_kernel_basis *kb, char **at)
{
    int l = b->l, ncls = (l + 1) * (l + 2) / 2;
    size_t ints = (size_t)(b->size + ncls) * sizeof(int);
    ints = (ints + 7) / 8 * 8;
    size_t bytes = ints + (size_t)(b->dim * ncls) * es;
    if (!kb)
        return bytes;
    int *cls = (int *)*at, *rep = cls + b->size, dense[(TSR_ICT_MAX_L + 1) * (TSR_ICT_MAX_L + 1)];
    void *qc = *at + ints;
    for (int i = 0; i < (l + 1) * (l + 1); i++)
        dense[i] = -1;
    int n = 0;
    for (int64_t i = 0; i < b->size; i++) {
        if (dense[cls_raw[i]] < 0) {
            rep[n] = (int)i;
            dense[cls_raw[i]] = n++;
        }
        cls[i] = dense[cls_raw[i]];
    }
    for (int m = 0; m < b->dim; m++)
        for (int k = 0; k < ncls; k++) {
            double q = b->q[m * b->size + rep[k]];
            if (es == sizeof(double))
                ((double *)qc)[m * ncls + k] = q;
            else
                ((float *)qc)[m * ncls + k] = (float)q;
        }
    *kb = (ict_kernel_basis){
        .dim = b->dim, .ncls = ncls, .size = b->size, .cls = cls, .rep = rep, .qc = qc};
    *at += bytes;
    return bytes;
}

static tsr_status ict_product_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    int ls[3];
    double alpha;
    bool sum, coords;
    TSR_CHECK(tsr_ict_product_attrs_read(ctx->node, ls, &alpha, &sum, &coords));
    tsr_ict_plan plan;
    TSR_CHECK(tsr_ict_plan_build(ls[0], ls[1], ls[2], alpha, &plan));
    size_t es = tsr_dtype_size(tsr_cpu_output(ctx->graph, ctx->node, 0)->dtype);
    int d1 = plan.b[0].dim, d2 = plan.b[1].dim, d3 = plan.b[2].dim;
    int64_t nw = (int64_t)d1 * d2 * d3, nnz = 0;
    for (int64_t i = 0; i < nw; i++)
        nnz += plan.w[i] != 0;
    /* The struct and its arrays in one allocation, which release frees. */
    size_t head = (sizeof(ict_product_data) + 7) / 8 * 8, wbytes = ((size_t)nw * es + 7) / 8 * 8;
    size_t lists = ((size_t)(d3 + 1 + 2 * nnz) * sizeof(int) + 7) / 8 * 8;
    size_t fbytes = ((size_t)nnz * es + 7) / 8 * 8, bytes = head + 3 * wbytes + lists + fbytes;
    for (int i = 0; i < 3; i++)
        bytes += kernel_basis_build(&plan.b[i], NULL, es, NULL, NULL);
    ict_product_data *d = tsr_malloc(bytes);
    int64_t most = plan.b[0].size > plan.b[1].size ? plan.b[0].size : plan.b[1].size;
    int *cls = tsr_malloc((size_t)(most > plan.b[2].size ? most : plan.b[2].size) * sizeof *cls);
    if (!d || !cls) {
        free(d);
        free(cls);
        tsr_ict_plan_free(&plan);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    char *at = (char *)d + head;
    void *w = at, *wy = at + wbytes, *wx = at + 2 * wbytes;
    int *ro = (int *)(at + 3 * wbytes), *rs = ro + d3 + 1, *rt = rs + nnz;
    void *rc = at + 3 * wbytes + lists;
    int k = 0;
    for (int r = 0; r < d3; r++) {
        ro[r] = k;
        for (int p = 0; p < d1; p++)
            for (int q = 0; q < d2; q++) {
                int64_t i = ((int64_t)r * d1 + p) * d2 + q, iy = ((int64_t)q * d3 + r) * d1 + p;
                int64_t ix = ((int64_t)p * d3 + r) * d2 + q;
                double v = plan.w[i];
                if (v != 0) {
                    rs[k] = p;
                    rt[k] = q;
                    if (es == sizeof(double))
                        ((double *)rc)[k] = v;
                    else
                        ((float *)rc)[k] = (float)v;
                    k++;
                }
                if (es == sizeof(double)) {
                    ((double *)w)[i] = ((double *)wy)[iy] = ((double *)wx)[ix] = v;
                } else {
                    ((float *)w)[i] = ((float *)wy)[iy] = ((float *)wx)[ix] = (float)v;
                }
            }
    }
    ro[d3] = k;
    *d = (ict_product_data){.w = w, .wy = wy, .wx = wx, .ro = ro, .rs = rs, .rt = rt, .rc = rc,
                            .sum = sum, .coords = coords};
    at += 3 * wbytes + lists + fbytes;
    for (int i = 0; i < 3; i++) {
        tsr_ict_classes(ls[i], cls);
        kernel_basis_build(&plan.b[i], cls, es, &d->b[i], &at);
    }
    free(cls);
    tsr_ict_plan_free(&plan);
    s->data = d;
    s->run = ict_product_run;
    return TSR_OK;
}

/* ----------------------------------------------------------------- SumTo */

/* Sums X down to Y's shape (Y's dims 1 or X's, right-aligned): runs along
 * X's last axis, each added into Y's row or summed into one element. */
#define SUM_TO_DEFINE(T)                                                                           \
    static void sum_to_##T(const tsr_tensor *x, tsr_tensor *y)                                     \
    {                                                                                              \
        int rank = x->rank, lead = x->rank - y->rank;                                              \
        int64_t ystr[TSR_MAX_RANK], stride[TSR_MAX_RANK] = {0}, idx[TSR_MAX_RANK] = {0};           \
        tsr_contiguous_strides(y->rank, y->dims, ystr);                                            \
        for (int d = 0; d < y->rank; d++)                                                          \
            stride[lead + d] = y->dims[d] == 1 ? 0 : ystr[d];                                      \
        const T *xs = x->data;                                                                     \
        T *ys = y->data;                                                                           \
        memset(ys, 0, (size_t)tsr_tensor_numel(y) * sizeof(T));                                    \
        int64_t len = rank > 0 ? x->dims[rank - 1] : 1, rows = tsr_tensor_numel(x) / len;          \
        bool along = rank > 0 && stride[rank - 1] != 0;                                            \
        int64_t off = 0;                                                                           \
        for (int64_t r = 0; r < rows; r++) {                                                       \
            const T *xr = xs + r * len;                                                            \
            T *yr = ys + off;                                                                      \
            if (along) {                                                                           \
                _Pragma("omp simd") for (int64_t i = 0; i < len; i++) yr[i] += xr[i];              \
            } else {                                                                               \
                T acc = 0;                                                                         \
                for (int64_t i = 0; i < len; i++)                                                  \
                    acc += xr[i];                                                                  \
                *yr += acc;                                                                        \
            }                                                                                      \
            for (int d = rank - 2; d >= 0; d--) {                                                  \
                off += stride[d];                                                                  \
                if (++idx[d] < x->dims[d])                                                         \
                    break;                                                                         \
                off -= stride[d] * x->dims[d];                                                     \
                idx[d] = 0;                                                                        \
            }                                                                                      \
        }                                                                                          \
    }

SUM_TO_DEFINE(float)
SUM_TO_DEFINE(double)

static tsr_status sum_to_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    if (y->rank > x->rank)
        return tsr_error(TSR_ERR_SHAPE, "SumTo: Y has rank %d, X only %d", y->rank, x->rank);
    for (int d = 0; d < y->rank; d++) {
        int64_t xd = x->dims[x->rank - y->rank + d];
        if (y->dims[d] != 1 && y->dims[d] != xd)
            return tsr_error(TSR_ERR_SHAPE, "size %lld does not broadcast to X's %lld (axis %d)",
                             (long long)y->dims[d], (long long)xd, d);
    }
    if (tsr_tensor_numel(x) == 0) {
        memset(y->data, 0, (size_t)tsr_tensor_numel(y) * tsr_dtype_size(y->dtype));
        return TSR_OK;
    }
    if (k->input_layouts[0] != TSR_LAYOUT_PLAIN) {
        int64_t b = tsr_layout_block((tsr_layout)k->input_layouts[0]);
        int64_t padded = x->dims[0] * ((x->dims[1] + b - 1) / b) * b * x->dims[2] * x->dims[3];
        memcpy(y->data, x->data, (size_t)padded * tsr_dtype_size(x->dtype));
        return TSR_OK;
    }
    if (y->dtype == TSR_FLOAT64)
        sum_to_double(x, y);
    else
        sum_to_float(x, y);
    return TSR_OK;
}

static bool sum_to_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    const tsr_value *y = tsr_cpu_output(g, node, 0);
    if (y->dtype != TSR_FLOAT32 && y->dtype != TSR_FLOAT64) {
        snprintf(why, size, "SumTo: %s runs on the ref backend", tsr_dtype_name(y->dtype));
        return false;
    }
    return true;
}

static tsr_status sum_to_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    s->run = sum_to_run;
    return TSR_OK;
}

/* Both take plain inputs and give plain outputs. */
/* A SumTo that sums nothing (the gradient of a residual Add, whose shapes
 * were known only at run time when autodiff emitted it) copies its input
 * in whatever blocked layout it arrives, so no reorder surrounds it. */
static void sum_to_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                           uint8_t *wanted, uint8_t *produced)
{
    const tsr_value *x = tsr_cpu_input(g, node, 0), *y = tsr_cpu_output(g, node, 0);
    bool copy = x->rank == y->rank && x->dtype == TSR_FLOAT32;
    for (int d = 0; copy && d < x->rank; d++)
        copy = x->dims[d] == y->dims[d] && tsr_dim_known(x->dims[d]);
    tsr_cpu_plain_layouts(g, node, available, wanted, produced);
    if (copy)
        wanted[0] = produced[0] = (uint8_t)tsr_cpu_keep_layout(x, available[0]);
}

const tsr_cpu_op tsr_cpu_ict_ops[] = {
    {&tsr_op_ICTProduct, ict_product_supports, tsr_cpu_plain_layouts, ict_product_prepare},
    {&tsr_op_SumTo, sum_to_supports, sum_to_layouts, sum_to_prepare},
    {NULL},
};
