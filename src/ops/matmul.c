/* Matrix products: Gemm, MatMul (numpy semantics) and Einsum. Gemm and
 * MatMul share one blocked reference GEMM; Einsum is a general loop over
 * every label, slow but exact for any equation. */
#include "autodiff/autodiff.h"
#include "ops/op.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tsr_status require_same_float(tsr_infer_ctx *c)
{
    for (int i = 0; i < c->n_inputs; i++) {
        TSR_CHECK(tsr_infer_require_dtype(c, i, TSR_FLOAT_TYPES));
        const tsr_value *v = c->inputs[i];
        if (v && v->dtype != c->inputs[0]->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "input %d is %s but input 0 is %s", i,
                                   tsr_dtype_name(v->dtype), tsr_dtype_name(c->inputs[0]->dtype));
    }
    return TSR_OK;
}

/* ------------------------------------------------------------ blocked GEMM */

/* Y[m,n] += alpha * sum_k A[m,k] * B[k,n]. A and B are addressed through
 * row and column strides, so transposes and broadcast batches need no copy;
 * a B tile that is not row-contiguous is packed first so the innermost loop
 * always runs over contiguous memory. */
typedef struct gemm_desc {
    int64_t m, n, k;
    double alpha;
    const void *a;
    int64_t a_rs, a_cs;
    const void *b;
    int64_t b_rs, b_cs;
    void *y;
    int64_t y_rs;
} gemm_desc;

/* Tiles sized so a packed B tile (KC x NC) stays in L2 while MC rows of the
 * output stream past it. */
enum { GEMM_MC = 64, GEMM_NC = 256, GEMM_KC = 256, GEMM_DOT_MAX_M = 64 };

/* The kernel below is instantiated once per element type. */
/* clang-format off */
#define GEMM_DEFINE(T)                                                                             \
    static void gemm_tile_##T(const gemm_desc *g, int64_t i0, int64_t j0, T *pack)                 \
    {                                                                                              \
        const T *a = g->a, *b = g->b;                                                              \
        T *y = g->y;                                                                               \
        T alpha = (T)g->alpha;                                                                     \
        int64_t i1 = i0 + GEMM_MC < g->m ? i0 + GEMM_MC : g->m;                                    \
        int64_t nc = j0 + GEMM_NC < g->n ? GEMM_NC : g->n - j0;                                    \
        for (int64_t k0 = 0; k0 < g->k; k0 += GEMM_KC) {                                           \
            int64_t kc = k0 + GEMM_KC < g->k ? GEMM_KC : g->k - k0;                                \
            const T *bt = b + k0 * g->b_rs + j0 * g->b_cs;                                         \
            int64_t bt_rs = g->b_rs;                                                               \
            if (g->b_cs != 1) {                                                                    \
                for (int64_t j = 0; j < nc; j++)                                                   \
                    for (int64_t kk = 0; kk < kc; kk++)                                            \
                        pack[kk * nc + j] = bt[kk * g->b_rs + j * g->b_cs];                        \
                bt = pack;                                                                         \
                bt_rs = nc;                                                                        \
            }                                                                                      \
            for (int64_t i = i0; i < i1; i++) {                                                    \
                T *yr = y + i * g->y_rs + j0;                                                      \
                const T *ar = a + i * g->a_rs + k0 * g->a_cs;                                      \
                int64_t kk = 0;                                                                    \
                /* four k at a time: one load/store of the output row per four products */         \
                for (; kk + 4 <= kc; kk += 4) {                                                    \
                    T a0 = alpha * ar[kk * g->a_cs], a1 = alpha * ar[(kk + 1) * g->a_cs];          \
                    T a2 = alpha * ar[(kk + 2) * g->a_cs], a3 = alpha * ar[(kk + 3) * g->a_cs];    \
                    const T *b0 = bt + kk * bt_rs, *b1 = b0 + bt_rs, *b2 = b1 + bt_rs;             \
                    const T *b3 = b2 + bt_rs;                                                      \
                    for (int64_t j = 0; j < nc; j++)                                               \
                        yr[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];                \
                }                                                                                  \
                for (; kk < kc; kk++) {                                                            \
                    T a0 = alpha * ar[kk * g->a_cs];                                               \
                    const T *b0 = bt + kk * bt_rs;                                                 \
                    for (int64_t j = 0; j < nc; j++)                                               \
                        yr[j] += a0 * b0[j];                                                       \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* Few rows times a B stored N x K (transB, as in classifier heads), or a                      \
     * single column: dot products run contiguously over k in both operands. */                    \
    static void gemm_dot_##T(const gemm_desc *g, int threads)                                      \
    {                                                                                              \
        const T *a = g->a, *b = g->b;                                                              \
        T *y = g->y;                                                                               \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1)")         \
        for (int64_t t = 0; t < g->m * g->n; t++) {                                                \
            /* consecutive t share j, so one thread reuses the row of B from cache */              \
            int64_t i = t % g->m, j = t / g->m;                                                    \
            const T *ai = a + i * g->a_rs, *bj = b + j * g->b_cs;                                  \
            /* eight partial sums: independent chains the compiler can vectorize */                \
            T s[8] = {0};                                                                          \
            int64_t kk = 0;                                                                        \
            for (; kk + 8 <= g->k; kk += 8)                                                        \
                for (int u = 0; u < 8; u++)                                                        \
                    s[u] += ai[kk + u] * bj[kk + u];                                               \
            T acc = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));             \
            for (; kk < g->k; kk++)                                                                \
                acc += ai[kk] * bj[kk];                                                            \
            y[i * g->y_rs + j] += (T)g->alpha * acc;                                               \
        }                                                                                          \
    }                                                                                              \
    /* pack holds GEMM_KC * GEMM_NC elements per thread. */                                        \
    static void gemm_run_##T(const gemm_desc *g, T *pack, int threads)                             \
    {                                                                                              \
        bool dot = g->n == 1 || (g->b_cs != 1 && g->m <= GEMM_DOT_MAX_M);                          \
        if (dot && g->a_cs == 1 && g->b_rs == 1) {                                                 \
            gemm_dot_##T(g, threads);                                                              \
            return;                                                                                \
        }                                                                                          \
        int64_t mt = (g->m + GEMM_MC - 1) / GEMM_MC, nt = (g->n + GEMM_NC - 1) / GEMM_NC;          \
        int64_t tasks = mt * nt;                                                                   \
        _Pragma("omp parallel for schedule(dynamic) num_threads(threads) if (threads > 1)")        \
        for (int64_t t = 0; t < tasks; t++)                                                        \
            gemm_tile_##T(g, (t / nt) * GEMM_MC, (t % nt) * GEMM_NC,                               \
                          pack + (int64_t)omp_get_thread_num() * GEMM_KC * GEMM_NC);               \
    }
/* clang-format on */

GEMM_DEFINE(float)
GEMM_DEFINE(double)

static void gemm_run(tsr_dtype dtype, const gemm_desc *g, void *pack, int threads)
{
    if (g->m == 0 || g->n == 0 || g->k == 0)
        return;
    if (dtype == TSR_FLOAT32)
        gemm_run_float(g, pack, threads);
    else
        gemm_run_double(g, pack, threads);
}

static void *gemm_pack_alloc(tsr_dtype dtype, int threads)
{
    return tsr_malloc((size_t)threads * GEMM_KC * GEMM_NC * tsr_dtype_size(dtype));
}

/* ------------------------------------------------------------------ Gemm */

static const tsr_attr_def gemm_attrs[] = {{"alpha", TSR_ATTR_FLOAT, .f = 1.0},
                                          {"beta", TSR_ATTR_FLOAT, .f = 1.0},
                                          {"transA", TSR_ATTR_INT, .i = 0},
                                          {"transB", TSR_ATTR_INT, .i = 0},
                                          {NULL}};

static tsr_status gemm_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(require_same_float(c));
    const tsr_value *a = c->inputs[0], *b = c->inputs[1];
    const tsr_value *bias = c->n_inputs > 2 ? c->inputs[2] : NULL;
    int64_t dims[2] = {TSR_DIM_UNKNOWN, TSR_DIM_UNKNOWN};
    if (a->rank >= 0 && a->rank != 2)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "A must be 2-D, got rank %d", a->rank);
    if (b->rank >= 0 && b->rank != 2)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "B must be 2-D, got rank %d", b->rank);
    if (a->rank == 2 && b->rank == 2) {
        bool ta = tsr_attr_int(c->node, "transA") != 0, tb = tsr_attr_int(c->node, "transB") != 0;
        int64_t ka = a->dims[ta ? 0 : 1], kb = b->dims[tb ? 1 : 0];
        if (tsr_dims_differ(ka, kb)) {
            char sa[160], sb[160];
            tsr_shape_format(sa, sizeof sa, 2, a->dims);
            tsr_shape_format(sb, sizeof sb, 2, b->dims);
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "inner dims differ: A %s (transA=%d) has K=%lld, B %s "
                                   "(transB=%d) has K=%lld",
                                   sa, ta, (long long)ka, sb, tb, (long long)kb);
        }
        dims[0] = a->dims[ta ? 1 : 0];
        dims[1] = b->dims[tb ? 0 : 1];
    }
    if (bias && bias->rank > 2)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "C must have rank <= 2, got %d", bias->rank);
    for (int i = 0; bias && i < bias->rank; i++) {
        int64_t cd = bias->dims[bias->rank - 1 - i], yd = dims[1 - i];
        if (cd != 1 && tsr_dims_differ(cd, yd)) {
            char sc[160], sy[160];
            tsr_shape_format(sc, sizeof sc, bias->rank, bias->dims);
            tsr_shape_format(sy, sizeof sy, 2, dims);
            return tsr_infer_error(c, TSR_ERR_SHAPE, "C %s does not broadcast to the output %s", sc,
                                   sy);
        }
    }
    tsr_infer_set(c, 0, a->dtype, 2, dims);
    return TSR_OK;
}

static tsr_status gemm_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *a = k->inputs[0], *b = k->inputs[1];
    const tsr_tensor *bias = k->n_inputs > 2 ? k->inputs[2] : NULL;
    tsr_tensor *y = k->outputs[0];
    bool ta = tsr_attr_int(k->node, "transA") != 0, tb = tsr_attr_int(k->node, "transB") != 0;
    double beta = tsr_attr_float(k->node, "beta");
    int64_t m = y->dims[0], n = y->dims[1];
    /* Unidirectional broadcast of C: a size-1 (or missing) dim has stride 0. */
    int64_t c_rs = 0, c_cs = 0;
    if (bias && bias->rank >= 1 && bias->dims[bias->rank - 1] != 1)
        c_cs = 1;
    if (bias && bias->rank == 2 && bias->dims[0] != 1)
        c_rs = bias->dims[1];
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            tsr_set_f(y, i * n + j, bias ? beta * tsr_get_f(bias, i * c_rs + j * c_cs) : 0.0);
    gemm_desc g = {.m = m,
                   .n = n,
                   .k = ta ? a->dims[0] : a->dims[1],
                   .alpha = tsr_attr_float(k->node, "alpha"),
                   .a = a->data,
                   .a_rs = ta ? 1 : a->dims[1],
                   .a_cs = ta ? a->dims[1] : 1,
                   .b = b->data,
                   .b_rs = tb ? 1 : b->dims[1],
                   .b_cs = tb ? b->dims[1] : 1,
                   .y = y->data,
                   .y_rs = n};
    int threads = k->threads > 0 ? k->threads : 1;
    void *pack = gemm_pack_alloc(y->dtype, threads);
    if (!pack)
        return TSR_ERR_OUT_OF_MEMORY;
    gemm_run(y->dtype, &g, pack, threads);
    free(pack);
    return TSR_OK;
}

static double gemm_flops(const tsr_infer_ctx *c)
{
    const tsr_value *a = c->inputs[0], *y = c->outputs[0];
    if (a->rank != 2 || tsr_shape_numel(a->rank, a->dims) < 0 || tsr_shape_numel(2, y->dims) < 0)
        return 0.0; /* counted once shapes are concrete */
    int64_t kdim = a->dims[tsr_attr_int(c->node, "transA") ? 0 : 1];
    return 2.0 * (double)y->dims[0] * (double)y->dims[1] * (double)kdim;
}

/* With A' = op(A), B' = op(B): dA' = alpha dY B'^T, dB' = alpha A'^T dY,
 * each written as one Gemm on the original operands; dC = beta dY summed
 * to C's shape. */
static tsr_status gemm_grad(tsr_grad_ctx *c)
{
    const tsr_node *n = tsr_grad_node(c);
    int64_t ta = tsr_attr_int(n, "transA") != 0, tb = tsr_attr_int(n, "transB") != 0;
    double alpha = tsr_attr_float(n, "alpha"), beta = tsr_attr_float(n, "beta");
    const char *a = tsr_grad_input(c, 0), *b = tsr_grad_input(c, 1), *dy = tsr_grad_dy(c, 0);
    const char *g;
    if (tsr_grad_wants(c, 0)) {
        /* transA = 0: dA = dY op(B)^T; transA = 1: dA = op(B) dY^T */
        const char *ins[2] = {ta ? b : dy, ta ? dy : b};
        tsr_attr attrs[3] = {TSR_ATTR_F("alpha", alpha), TSR_ATTR_I("transA", ta ? tb : 0),
                             TSR_ATTR_I("transB", ta ? 1 : !tb)};
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Gemm, 2, ins, 3, attrs, 1, &g));
        TSR_CHECK(tsr_grad_contribute(c, 0, g));
    }
    if (tsr_grad_wants(c, 1)) {
        /* transB = 0: dB = op(A)^T dY; transB = 1: dB = dY^T op(A) */
        const char *ins[2] = {tb ? dy : a, tb ? a : dy};
        tsr_attr attrs[3] = {TSR_ATTR_F("alpha", alpha), TSR_ATTR_I("transA", tb ? 1 : !ta),
                             TSR_ATTR_I("transB", tb ? ta : 0)};
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Gemm, 2, ins, 3, attrs, 1, &g));
        TSR_CHECK(tsr_grad_contribute(c, 1, g));
    }
    if (tsr_grad_wants(c, 2)) {
        const char *scaled = dy, *k;
        if (beta != 1.0) {
            TSR_CHECK(tsr_grad_scalar(c, beta, tsr_grad_value(c, dy)->dtype, &k));
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, k, &scaled));
        }
        TSR_CHECK(tsr_grad_contribute_sum(c, 2, scaled));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_Gemm = {
    .name = "Gemm",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = gemm_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = gemm_infer,
    .ref = gemm_ref,
    .flops = gemm_flops,
    .grad = gemm_grad,
};

/* ---------------------------------------------------------------- MatMul */

/* numpy.matmul's view of two shapes: 1-D operands are promoted to a row
 * (A) or a column (B) and the promoted dim is dropped from the result. */
typedef struct matmul_shape {
    int64_t m, k_a, k_b, n;
    int batch_rank;
    int64_t batch[TSR_MAX_RANK];
    int out_rank;
    int64_t out[TSR_MAX_RANK];
} matmul_shape;

static tsr_status matmul_shape_of(int ra, const int64_t *da, int rb, const int64_t *db,
                                  matmul_shape *s)
{
    if (ra < 1 || rb < 1)
        return tsr_error(TSR_ERR_SHAPE, "MatMul needs inputs of rank >= 1, got ranks %d and %d", ra,
                         rb);
    s->k_a = da[ra - 1];
    s->m = ra >= 2 ? da[ra - 2] : 1;
    s->k_b = rb >= 2 ? db[rb - 2] : db[0];
    s->n = rb >= 2 ? db[rb - 1] : 1;
    if (tsr_dims_differ(s->k_a, s->k_b)) {
        char sa[160], sb[160];
        tsr_shape_format(sa, sizeof sa, ra, da);
        tsr_shape_format(sb, sizeof sb, rb, db);
        return tsr_error(TSR_ERR_SHAPE, "inner dims differ: A %s has K=%lld, B %s has K=%lld", sa,
                         (long long)s->k_a, sb, (long long)s->k_b);
    }
    int ba = ra > 2 ? ra - 2 : 0, bb = rb > 2 ? rb - 2 : 0;
    if (tsr_shape_broadcast(ba, da, bb, db, &s->batch_rank, s->batch) != TSR_OK) {
        tsr_error_prefix("batch dims: ");
        return TSR_ERR_SHAPE;
    }
    s->out_rank = 0;
    for (int i = 0; i < s->batch_rank; i++)
        s->out[s->out_rank++] = s->batch[i];
    if (ra >= 2)
        s->out[s->out_rank++] = s->m;
    if (rb >= 2)
        s->out[s->out_rank++] = s->n;
    return TSR_OK;
}

static tsr_status matmul_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(require_same_float(c));
    const tsr_value *a = c->inputs[0], *b = c->inputs[1];
    if (a->rank < 0 || b->rank < 0) {
        tsr_infer_set(c, 0, a->dtype, -1, NULL);
        return TSR_OK;
    }
    matmul_shape s;
    TSR_CHECK(matmul_shape_of(a->rank, a->dims, b->rank, b->dims, &s));
    tsr_infer_set(c, 0, a->dtype, s.out_rank, s.out);
    return TSR_OK;
}

/* Element offset of batch `index` in an operand whose batch dims (the
 * leading `rank` of `dims`) broadcast to s->batch. */
static int64_t batch_offset(const matmul_shape *s, int64_t index, int rank, const int64_t *dims,
                            int64_t matrix_size)
{
    int64_t offset = 0, stride = matrix_size;
    for (int d = s->batch_rank - 1, od = rank - 1; d >= 0; d--, od--) {
        int64_t i = index % s->batch[d];
        index /= s->batch[d];
        if (od >= 0) {
            if (dims[od] != 1)
                offset += i * stride;
            stride *= dims[od];
        }
    }
    return offset;
}

static tsr_status matmul_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *a = k->inputs[0], *b = k->inputs[1];
    tsr_tensor *y = k->outputs[0];
    matmul_shape s;
    TSR_CHECK(matmul_shape_of(a->rank, a->dims, b->rank, b->dims, &s));
    int64_t batches = tsr_shape_numel(s.batch_rank, s.batch);
    int ba = a->rank > 2 ? a->rank - 2 : 0, bb = b->rank > 2 ? b->rank - 2 : 0;
    size_t elt = tsr_dtype_size(y->dtype);
    int threads = k->threads > 0 ? k->threads : 1;
    void *pack = gemm_pack_alloc(y->dtype, threads);
    if (!pack)
        return TSR_ERR_OUT_OF_MEMORY;
    memset(y->data, 0, tsr_tensor_bytes(y));
    /* Enough batches to keep every thread busy: one thread per batch;
     * otherwise the threads share each product. */
    bool per_batch = batches >= threads;
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (per_batch && threads > 1)
    for (int64_t bi = 0; bi < batches; bi++) {
        int64_t oa = batch_offset(&s, bi, ba, a->dims, s.m * s.k_a);
        int64_t ob = batch_offset(&s, bi, bb, b->dims, s.k_b * s.n);
        gemm_desc g = {.m = s.m,
                       .n = s.n,
                       .k = s.k_a,
                       .alpha = 1.0,
                       .a = (const char *)a->data + (size_t)oa * elt,
                       .a_rs = s.k_a,
                       .a_cs = 1,
                       .b = (const char *)b->data + (size_t)ob * elt,
                       .b_rs = s.n,
                       .b_cs = 1,
                       .y = (char *)y->data + (size_t)(bi * s.m * s.n) * elt,
                       .y_rs = s.n};
        int inner = per_batch ? 1 : threads;
        void *mine = (char *)pack + (size_t)omp_get_thread_num() * GEMM_KC * GEMM_NC * elt;
        gemm_run(y->dtype, &g, mine, inner);
    }
    free(pack);
    return TSR_OK;
}

static double matmul_flops(const tsr_infer_ctx *c)
{
    matmul_shape s;
    const tsr_value *a = c->inputs[0], *b = c->inputs[1];
    if (a->rank < 0 || b->rank < 0 || tsr_shape_numel(a->rank, a->dims) < 0 ||
        tsr_shape_numel(b->rank, b->dims) < 0 ||
        matmul_shape_of(a->rank, a->dims, b->rank, b->dims, &s) != TSR_OK)
        return 0.0; /* counted once shapes are concrete */
    return 2.0 * (double)tsr_shape_numel(s.batch_rank, s.batch) * (double)s.m * (double)s.n *
           (double)s.k_a;
}

/* Swaps the last two axes of a value of rank >= 2. */
static tsr_status transpose_last(tsr_grad_ctx *c, const char *v, const char **out)
{
    int rank = tsr_grad_value(c, v)->rank;
    int64_t perm[TSR_MAX_RANK];
    for (int d = 0; d < rank; d++)
        perm[d] = d;
    perm[rank - 2] = rank - 1;
    perm[rank - 1] = rank - 2;
    tsr_attr attr = TSR_ATTR_INTS("perm", perm, (size_t)rank);
    return tsr_grad_emit(c, &tsr_op_Transpose, 1, &v, 1, &attr, 1, out);
}

static tsr_status unsqueeze_at(tsr_grad_ctx *c, const char *v, int64_t axis, const char **out)
{
    const char *axes;
    TSR_CHECK(tsr_grad_ints(c, 1, &axis, &axes));
    const char *ins[2] = {v, axes};
    return tsr_grad_emit(c, &tsr_op_Unsqueeze, 2, ins, 0, NULL, 1, out);
}

/* 1-D operands are promoted as numpy does (A to a row, B to a column, dY
 * gets the dropped axis back), then dA = dY B^T and dB = A^T dY, summed
 * over broadcast batch axes and squeezed back. */
static tsr_status matmul_grad(tsr_grad_ctx *c)
{
    const char *a = tsr_grad_input(c, 0), *b = tsr_grad_input(c, 1), *dy = tsr_grad_dy(c, 0);
    bool a_vec = tsr_grad_value(c, a)->rank == 1, b_vec = tsr_grad_value(c, b)->rank == 1;
    if (a_vec && b_vec) {
        /* a dot product: dA = dy b, dB = dy a */
        for (int i = 0; i < 2; i++) {
            const char *g;
            if (!tsr_grad_wants(c, i))
                continue;
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, i ? a : b, &g));
            TSR_CHECK(tsr_grad_contribute(c, i, g));
        }
        return TSR_OK;
    }
    const char *a2 = a, *b2 = b, *dy2 = dy;
    if (a_vec) {
        TSR_CHECK(unsqueeze_at(c, a, 0, &a2));
        TSR_CHECK(unsqueeze_at(c, dy, -2, &dy2));
    }
    if (b_vec) {
        TSR_CHECK(unsqueeze_at(c, b, 1, &b2));
        TSR_CHECK(unsqueeze_at(c, dy2, -1, &dy2));
    }
    for (int i = 0; i < 2; i++) {
        if (!tsr_grad_wants(c, i))
            continue;
        const char *t, *g, *summed;
        TSR_CHECK(transpose_last(c, i ? a2 : b2, &t));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_MatMul, i ? t : dy2, i ? dy2 : t, &g));
        TSR_CHECK(tsr_grad_sum_to(c, g, i ? b2 : a2, &summed));
        if ((i == 0 && a_vec) || (i == 1 && b_vec)) {
            const char *axes, *sq;
            int64_t axis = i == 0 ? 0 : 1;
            TSR_CHECK(tsr_grad_ints(c, 1, &axis, &axes));
            const char *ins[2] = {summed, axes};
            TSR_CHECK(tsr_grad_emit(c, &tsr_op_Squeeze, 2, ins, 0, NULL, 1, &sq));
            summed = sq;
        }
        TSR_CHECK(tsr_grad_contribute(c, i, summed));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_MatMul = {
    .name = "MatMul",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = matmul_infer,
    .ref = matmul_ref,
    .flops = matmul_flops,
    .grad = matmul_grad,
};

/* ---------------------------------------------------------------- Einsum */

#define EINSUM_LABELS 52 /* a-z then A-Z */
#define EINSUM_MAX_EQUATION 1024

typedef struct einsum_spec {
    int n_terms;
    int term_rank[TSR_MAX_NODE_IO];
    int8_t term[TSR_MAX_NODE_IO][TSR_MAX_RANK];
    int out_rank;
    int8_t out[TSR_MAX_RANK];
    /* labels that appear in an input but not in the output: summed over */
    int n_sum;
    int8_t sum[EINSUM_LABELS];
} einsum_spec;

static int einsum_label(char ch)
{
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a';
    if (ch >= 'A' && ch <= 'Z')
        return 26 + ch - 'A';
    return -1;
}

static char einsum_char(int label)
{
    return (char)(label < 26 ? 'a' + label : 'A' + label - 26);
}

static tsr_status einsum_parse(const char *equation, int n_inputs, einsum_spec *s)
{
    char eq[EINSUM_MAX_EQUATION];
    size_t len = 0;
    for (const char *p = equation; *p; p++) {
        if (*p == ' ' || *p == '\t')
            continue;
        if (len + 1 >= sizeof eq)
            return tsr_error(TSR_ERR_UNSUPPORTED, "equation longer than %d characters",
                             EINSUM_MAX_EQUATION - 1);
        eq[len++] = *p;
    }
    eq[len] = '\0';
    if (strstr(eq, "."))
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "equation '%s': ellipsis ('...') is not supported, name every dim",
                         equation);
    memset(s, 0, sizeof *s);
    char *arrow = strstr(eq, "->");
    const char *lhs_end = arrow ? arrow : eq + len;
    int count[EINSUM_LABELS] = {0};
    const char *p = eq;
    for (;;) {
        if (s->n_terms >= TSR_MAX_NODE_IO)
            return tsr_error(TSR_ERR_UNSUPPORTED, "equation '%s' has too many terms", equation);
        int t = s->n_terms++;
        for (; p < lhs_end && *p != ','; p++) {
            int l = einsum_label(*p);
            if (l < 0)
                return tsr_error(TSR_ERR_PARSE, "equation '%s': unexpected character '%c'",
                                 equation, *p);
            if (s->term_rank[t] >= TSR_MAX_RANK)
                return tsr_error(TSR_ERR_SHAPE, "equation '%s': term %d has more than %d labels",
                                 equation, t, TSR_MAX_RANK);
            s->term[t][s->term_rank[t]++] = (int8_t)l;
            count[l]++;
        }
        if (p >= lhs_end)
            break;
        p++; /* the comma */
    }
    if (s->n_terms != n_inputs)
        return tsr_error(TSR_ERR_SHAPE,
                         "equation '%s' has %d input terms but the node has %d inputs", equation,
                         s->n_terms, n_inputs);
    bool in_out[EINSUM_LABELS] = {false};
    if (arrow) {
        for (p = arrow + 2; *p; p++) {
            int l = einsum_label(*p);
            if (l < 0)
                return tsr_error(TSR_ERR_PARSE,
                                 "equation '%s': unexpected character '%c' in output", equation,
                                 *p);
            if (!count[l])
                return tsr_error(TSR_ERR_SHAPE, "equation '%s': output label '%c' is in no input",
                                 equation, *p);
            if (in_out[l])
                return tsr_error(TSR_ERR_SHAPE, "equation '%s': output label '%c' is repeated",
                                 equation, *p);
            if (s->out_rank >= TSR_MAX_RANK)
                return tsr_error(TSR_ERR_UNSUPPORTED, "equation '%s': output rank above %d",
                                 equation, TSR_MAX_RANK);
            in_out[l] = true;
            s->out[s->out_rank++] = (int8_t)l;
        }
    } else {
        /* Implicit output: the labels seen once, in ASCII order (upper case
         * first), as numpy and PyTorch do. */
        for (int pass = 0; pass < 2; pass++)
            for (int l = pass ? 0 : 26; l < (pass ? 26 : EINSUM_LABELS); l++) {
                if (count[l] != 1)
                    continue;
                if (s->out_rank >= TSR_MAX_RANK)
                    return tsr_error(TSR_ERR_UNSUPPORTED, "equation '%s': output rank above %d",
                                     equation, TSR_MAX_RANK);
                in_out[l] = true;
                s->out[s->out_rank++] = (int8_t)l;
            }
    }
    for (int l = 0; l < EINSUM_LABELS; l++)
        if (count[l] && !in_out[l])
            s->sum[s->n_sum++] = (int8_t)l;
    return TSR_OK;
}

static const tsr_attr_def einsum_attrs[] = {{"equation", TSR_ATTR_STRING, .required = true},
                                            {NULL}};

static tsr_status einsum_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(require_same_float(c));
    einsum_spec s;
    TSR_CHECK(einsum_parse(tsr_attr_string(c->node, "equation"), c->n_inputs, &s));
    int64_t size[EINSUM_LABELS];
    int first[EINSUM_LABELS];
    for (int l = 0; l < EINSUM_LABELS; l++) {
        size[l] = TSR_DIM_UNKNOWN;
        first[l] = -1;
    }
    for (int t = 0; t < s.n_terms; t++) {
        const tsr_value *v = c->inputs[t];
        if (!v)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "input %d is missing", t);
        if (v->rank < 0)
            continue;
        if (v->rank != s.term_rank[t])
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "input %d has rank %d but its equation term has %d labels", t,
                                   v->rank, s.term_rank[t]);
        for (int d = 0; d < v->rank; d++) {
            int l = s.term[t][d];
            if (tsr_dims_differ(size[l], v->dims[d]))
                return tsr_infer_error(
                    c, TSR_ERR_SHAPE, "label '%c' has size %lld in input %d and %lld in input %d",
                    einsum_char(l), (long long)size[l], first[l], (long long)v->dims[d], t);
            /* keep the most informative size seen: known, then symbolic */
            if (first[l] < 0 || (!tsr_dim_known(size[l]) && v->dims[d] != TSR_DIM_UNKNOWN)) {
                size[l] = v->dims[d];
                first[l] = t;
            }
        }
    }
    int64_t dims[TSR_MAX_RANK];
    for (int i = 0; i < s.out_rank; i++)
        dims[i] = size[s.out[i]];
    tsr_infer_set(c, 0, c->inputs[0]->dtype, s.out_rank, dims);
    return TSR_OK;
}

/* Sizes of every label and, per input, the element stride each label moves
 * (a label repeated in one term adds up its strides: a diagonal). */
typedef struct einsum_plan {
    einsum_spec s;
    int64_t size[EINSUM_LABELS];
    int64_t stride[TSR_MAX_NODE_IO][EINSUM_LABELS];
    int64_t sum_total;
} einsum_plan;

static tsr_status einsum_prepare(const tsr_kernel_ctx *k, einsum_plan *p)
{
    TSR_CHECK(einsum_parse(tsr_attr_string(k->node, "equation"), k->n_inputs, &p->s));
    memset(p->size, 0, sizeof p->size);
    memset(p->stride, 0, sizeof p->stride);
    for (int t = 0; t < p->s.n_terms; t++) {
        const tsr_tensor *x = k->inputs[t];
        int64_t stride = 1;
        for (int d = x->rank - 1; d >= 0; d--) {
            int l = p->s.term[t][d];
            p->size[l] = x->dims[d];
            p->stride[t][l] += stride;
            stride *= x->dims[d];
        }
    }
    p->sum_total = 1;
    for (int r = 0; r < p->s.n_sum; r++)
        if (!tsr_size_mul(p->sum_total, p->size[p->s.sum[r]], &p->sum_total))
            return tsr_error(TSR_ERR_SHAPE, "the summed labels take more than 2^62 combinations");
    return TSR_OK;
}

/* The kernel below is instantiated once per element type. */
/* clang-format off */
#define EINSUM_DEFINE(T)                                                                           \
    static void einsum_run_##T(const tsr_kernel_ctx *k, const einsum_plan *p, int64_t count)       \
    {                                                                                              \
        const einsum_spec *s = &p->s;                                                              \
        T *y = k->outputs[0]->data;                                                                \
        _Pragma("omp parallel for num_threads(k->threads) if (k->threads > 1 && count > 64)")      \
        for (int64_t o = 0; o < count; o++) {                                                      \
            int64_t off[TSR_MAX_NODE_IO] = {0}, idx[EINSUM_LABELS];                                \
            int64_t rest = o;                                                                      \
            for (int d = s->out_rank - 1; d >= 0; d--) {                                           \
                int l = s->out[d];                                                                 \
                int64_t i = rest % p->size[l];                                                     \
                rest /= p->size[l];                                                                \
                for (int t = 0; t < s->n_terms; t++)                                               \
                    off[t] += i * p->stride[t][l];                                                 \
            }                                                                                      \
            for (int r = 0; r < s->n_sum; r++)                                                     \
                idx[r] = 0;                                                                        \
            double acc = 0.0;                                                                      \
            for (int64_t step = 0; step < p->sum_total; step++) {                                  \
                double prod = 1.0;                                                                 \
                for (int t = 0; t < s->n_terms; t++)                                               \
                    prod *= ((const T *)k->inputs[t]->data)[off[t]];                               \
                acc += prod;                                                                       \
                /* odometer over the summed labels, last label fastest */                          \
                for (int r = s->n_sum - 1; r >= 0; r--) {                                          \
                    int l = s->sum[r];                                                             \
                    for (int t = 0; t < s->n_terms; t++)                                           \
                        off[t] += p->stride[t][l];                                                 \
                    if (++idx[r] < p->size[l])                                                     \
                        break;                                                                     \
                    for (int t = 0; t < s->n_terms; t++)                                           \
                        off[t] -= p->size[l] * p->stride[t][l];                                    \
                    idx[r] = 0;                                                                    \
                }                                                                                  \
            }                                                                                      \
            y[o] = (T)acc;                                                                         \
        }                                                                                          \
    }
/* clang-format on */

EINSUM_DEFINE(float)
EINSUM_DEFINE(double)

static tsr_status einsum_ref(const tsr_kernel_ctx *k)
{
    einsum_plan *p = tsr_malloc(sizeof *p);
    if (!p)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = einsum_prepare(k, p);
    if (st == TSR_OK) {
        int64_t count = tsr_tensor_numel(k->outputs[0]);
        if (k->outputs[0]->dtype == TSR_FLOAT32)
            einsum_run_float(k, p, count);
        else
            einsum_run_double(k, p, count);
    }
    free(p);
    return st;
}

static double einsum_flops(const tsr_infer_ctx *c)
{
    einsum_spec s;
    if (einsum_parse(tsr_attr_string(c->node, "equation"), c->n_inputs, &s) != TSR_OK)
        return 0.0;
    int64_t size[EINSUM_LABELS] = {0};
    for (int t = 0; t < s.n_terms; t++)
        for (int d = 0; d < s.term_rank[t] && d < c->inputs[t]->rank; d++)
            size[s.term[t][d]] = c->inputs[t]->dims[d];
    double sum_total = 1.0;
    for (int r = 0; r < s.n_sum; r++)
        sum_total *= (double)size[s.sum[r]];
    /* n-1 multiplies and one add per input combination */
    return (double)tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims) * sum_total *
           (double)s.n_terms;
}

/* The gradient of input i is an Einsum of dY with the other inputs into
 * input i's term: "t0,..,out->ti" without ti on the left. Terms with a
 * repeated label (diagonals), labels summed over in input i alone, and
 * ellipses are not supported. */
static tsr_status einsum_grad(tsr_grad_ctx *c)
{
    const tsr_node *n = tsr_grad_node(c);
    const char *eq = tsr_attr_string(n, "equation");
    einsum_spec s;
    TSR_CHECK(einsum_parse(eq, n->n_inputs, &s));
    if (strchr(eq, '.'))
        return tsr_grad_unsupported(c, "Einsum '%s': ellipses have no gradient rule yet", eq);
    int n_in = n->n_inputs;
    for (int i = 0; i < n_in; i++) {
        if (!tsr_grad_wants(c, i))
            continue;
        int count[EINSUM_LABELS] = {0};
        for (int t = 0; t < n_in; t++)
            if (t != i)
                for (int d = 0; d < s.term_rank[t]; d++)
                    count[s.term[t][d]]++;
        for (int d = 0; d < s.out_rank; d++)
            count[s.out[d]]++;
        bool seen[EINSUM_LABELS] = {false};
        for (int d = 0; d < s.term_rank[i]; d++) {
            int l = s.term[i][d];
            if (seen[l] || !count[l])
                return tsr_grad_unsupported(c,
                                            "Einsum '%s': label '%c' of input %d is %s, which "
                                            "has no gradient rule yet",
                                            eq, einsum_char(l), i,
                                            seen[l] ? "repeated" : "summed in that input alone");
            seen[l] = true;
        }
        char spec[EINSUM_MAX_EQUATION];
        size_t at = 0;
        const char *ins[TSR_MAX_NODE_IO];
        int k = 0;
        for (int t = 0; t < n_in; t++) {
            if (t == i)
                continue;
            for (int d = 0; d < s.term_rank[t]; d++)
                spec[at++] = einsum_char(s.term[t][d]);
            spec[at++] = ',';
            ins[k++] = tsr_grad_input(c, t);
        }
        for (int d = 0; d < s.out_rank; d++)
            spec[at++] = einsum_char(s.out[d]);
        ins[k++] = tsr_grad_dy(c, 0);
        spec[at++] = '-';
        spec[at++] = '>';
        for (int d = 0; d < s.term_rank[i]; d++)
            spec[at++] = einsum_char(s.term[i][d]);
        spec[at] = 0;
        tsr_attr attr = TSR_ATTR_S("equation", spec);
        const char *g;
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Einsum, k, ins, 1, &attr, 1, &g));
        TSR_CHECK(tsr_grad_contribute(c, i, g));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_Einsum = {
    .name = "Einsum",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = TSR_MAX_NODE_IO,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = einsum_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = einsum_infer,
    .ref = einsum_ref,
    .flops = einsum_flops,
    .grad = einsum_grad,
};
