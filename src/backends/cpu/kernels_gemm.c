/* float64 MatMul in the cpu backend: oneDNN's matmul runs float32 only,
 * and the ref kernel treats every leading dim of A as a batch of its own
 * (a [E, 7, 32] x [32, 32] map of ICT features is E products of 7 rows).
 * Here a B without batch dims multiplies all of A's rows at once, and
 * batched products with equal batch dims (per-atom weight tables, the
 * strain of each edge) run batch by batch; other broadcasts stay on ref.
 *
 * The tile keeps a 4 x 8 block of Y in AVX2 registers along all of K, so
 * each element of B that is loaded feeds four rows; K in these models is
 * small (3 to a few hundred), so B stays in cache across the row blocks.
 * Threads split the rows (or the batches), only when there is enough work
 * for them. Gemm(A, B, C) with C of Y's shape, alpha = beta = 1 and no
 * transposes (what fuse_gemm writes) accumulates onto C: the tiles start
 * from Y, which holds C (Y takes over C's buffer where the Gemm reads it
 * last, else C is copied in first). */
#include "backends/cpu/kernels_internal.h"

#if TSR_CPU_X86
#include <immintrin.h>
#endif
#include <omp.h>
#include <stdint.h>
#include <string.h>

/* The product's shape: `batches` products of [m, k] x [k, n]; B is shared
 * by all of them when b_shared (then the batches are one run of rows). */
typedef struct {
    int64_t batches, m, k, n;
    bool b_shared;
} gemm_shape;

static bool gemm_shape_of(int ra, const int64_t *da, int rb, const int64_t *db, gemm_shape *s)
{
    if (ra < 2 || rb < 2 || da[ra - 1] != db[rb - 2])
        return false;
    *s = (gemm_shape){.m = da[ra - 2], .k = da[ra - 1], .n = db[rb - 1], .b_shared = rb == 2};
    int64_t lead = 1;
    for (int d = 0; d < ra - 2; d++)
        lead *= da[d];
    if (s->b_shared) {
        s->batches = 1;
        s->m *= lead;
        return true;
    }
    if (ra != rb)
        return false;
    for (int d = 0; d < ra - 2; d++)
        if (da[d] != db[d])
            return false;
    s->batches = lead;
    return true;
}

/* Y[i0..i1) = A B over rows (acc: += A B), portable. */
static void rows_portable(const double *a, const double *b, double *y, int64_t i0, int64_t i1,
                          int64_t k, int64_t n, bool acc)
{
    for (int64_t i = i0; i < i1; i++) {
        double *yr = y + i * n;
        if (!acc)
            memset(yr, 0, (size_t)n * sizeof *yr);
        for (int64_t p = 0; p < k; p++) {
            double av = a[i * k + p];
            const double *br = b + p * n;
            for (int64_t j = 0; j < n; j++)
                yr[j] += av * br[j];
        }
    }
}

#if TSR_CPU_X86
#define AVX2_TARGET __attribute__((target("avx2,fma")))

/* How far ahead of a block of rows its tiles prefetch A and Y. */
enum { PREFETCH_ROWS = 8 };

/* R (1..4) rows from i of Y = A B (add: Y += A B), columns 8, then 4,
 * then one at a time. With rows i + PREFETCH_ROWS + R - 1 below `end`,
 * the tiles of 8 columns prefetch that block's rows of A (their lines
 * shared out over the tiles) and, when adding, its lines of Y in the
 * tile's columns. A and Y stream from memory in large products (the
 * radial maps of every edge), and the hardware prefetcher alone leaves
 * an accumulating tile waiting on Y: 13 -> 8 ms for [175097, 32] x
 * [32, 64] + Y, 2 threads. */
AVX2_TARGET static inline __attribute__((always_inline)) void
block_avx2(const double *a, const double *b, double *y, int64_t i, int R, int64_t k, int64_t n,
           bool add, int64_t end)
{
    bool ahead = i + PREFETCH_ROWS + R <= end;
    const double *a_ahead = a + (i + PREFETCH_ROWS) * k;
    int64_t a_lines = (R * k + 7) / 8, tiles = n / 8;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        if (ahead) {
            int64_t t = j / 8;
            for (int64_t l = a_lines * t / tiles; l < a_lines * (t + 1) / tiles; l++)
                _mm_prefetch((const char *)(a_ahead + 8 * l), _MM_HINT_T0);
            for (int r = 0; add && r < R; r++)
                _mm_prefetch((const char *)(y + (i + PREFETCH_ROWS + r) * n + j), _MM_HINT_T0);
        }
        __m256d acc[4][2];
        for (int r = 0; r < R; r++) {
            acc[r][0] = add ? _mm256_loadu_pd(y + (i + r) * n + j) : _mm256_setzero_pd();
            acc[r][1] = add ? _mm256_loadu_pd(y + (i + r) * n + j + 4) : _mm256_setzero_pd();
        }
        for (int64_t p = 0; p < k; p++) {
            __m256d b0 = _mm256_loadu_pd(b + p * n + j), b1 = _mm256_loadu_pd(b + p * n + j + 4);
            for (int r = 0; r < R; r++) {
                __m256d av = _mm256_broadcast_sd(a + (i + r) * k + p);
                acc[r][0] = _mm256_fmadd_pd(av, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_pd(av, b1, acc[r][1]);
            }
        }
        for (int r = 0; r < R; r++) {
            _mm256_storeu_pd(y + (i + r) * n + j, acc[r][0]);
            _mm256_storeu_pd(y + (i + r) * n + j + 4, acc[r][1]);
        }
    }
    for (; j + 4 <= n; j += 4) {
        __m256d acc[4];
        for (int r = 0; r < R; r++)
            acc[r] = add ? _mm256_loadu_pd(y + (i + r) * n + j) : _mm256_setzero_pd();
        for (int64_t p = 0; p < k; p++) {
            __m256d b0 = _mm256_loadu_pd(b + p * n + j);
            for (int r = 0; r < R; r++)
                acc[r] = _mm256_fmadd_pd(_mm256_broadcast_sd(a + (i + r) * k + p), b0, acc[r]);
        }
        for (int r = 0; r < R; r++)
            _mm256_storeu_pd(y + (i + r) * n + j, acc[r]);
    }
    for (; j < n; j++)
        for (int r = 0; r < R; r++) {
            double acc = add ? y[(i + r) * n + j] : 0.0;
            for (int64_t p = 0; p < k; p++)
                acc += a[(i + r) * k + p] * b[p * n + j];
            y[(i + r) * n + j] = acc;
        }
}

AVX2_TARGET static void rows_avx2(const double *a, const double *b, double *y, int64_t i0,
                                  int64_t i1, int64_t k, int64_t n, bool acc)
{
    int64_t i = i0;
    for (; i + 4 <= i1; i += 4)
        block_avx2(a, b, y, i, 4, k, n, acc, i1);
    switch (i1 - i) {
    case 3: block_avx2(a, b, y, i, 3, k, n, acc, i1); break;
    case 2: block_avx2(a, b, y, i, 2, k, n, acc, i1); break;
    case 1: block_avx2(a, b, y, i, 1, k, n, acc, i1); break;
    default: break;
    }
}
#endif

static tsr_status gemm_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const tsr_tensor *a = k->inputs[0], *b = k->inputs[1];
    tsr_tensor *y = k->outputs[0];
    gemm_shape g;
    if (!gemm_shape_of(a->rank, a->dims, b->rank, b->dims, &g))
        return tsr_error(TSR_ERR_SHAPE,
                         "%s: A of rank %d and B of rank %d do not match the "
                         "shapes this kernel was prepared for",
                         k->node->op->name, a->rank, b->rank);
    if (tsr_tensor_numel(y) != g.batches * g.m * g.n)
        return tsr_error(TSR_ERR_SHAPE, "%s: Y holds %lld values, %lld expected",
                         k->node->op->name, (long long)tsr_tensor_numel(y),
                         (long long)(g.batches * g.m * g.n));
    if (tsr_tensor_numel(y) == 0)
        return TSR_OK;
    /* Gemm: Y starts as C. */
    bool acc = k->n_inputs > 2 && k->inputs[2];
    if (acc && k->inputs[2]->data != y->data)
        memcpy(y->data, k->inputs[2]->data, (size_t)tsr_tensor_numel(y) * sizeof(double));
    void (*rows)(const double *, const double *, double *, int64_t, int64_t, int64_t, int64_t,
                 bool) =
#if TSR_CPU_X86
        s->isa == TSR_ISA_PORTABLE ? rows_portable : rows_avx2;
#else
        rows_portable;
#endif
    const double *ad = a->data, *bd = b->data;
    double *yd = y->data;
    /* Multiply-adds, counted as streaming work of an eighth each. */
    int nt = tsr_cpu_threads_for(k->threads, g.batches * g.m * g.n * g.k / 8);
    if (g.batches == 1) {
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            int team = omp_get_num_threads(), me = omp_get_thread_num();
            /* Whole blocks of four rows per thread. */
            int64_t blocks = (g.m + 3) / 4;
            int64_t i0 = blocks * me / team * 4, i1 = blocks * (me + 1) / team * 4;
            rows(ad, bd, yd, i0, i1 < g.m ? i1 : g.m, g.k, g.n, acc);
        }
        return TSR_OK;
    }
#pragma omp parallel for num_threads(nt) if (nt > 1)
    for (int64_t t = 0; t < g.batches; t++)
        rows(ad + t * g.m * g.k, bd + t * g.k * g.n, yd + t * g.m * g.n, 0, g.m, g.k, g.n, acc);
    return TSR_OK;
}

static bool gemm_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    const tsr_value *a = tsr_cpu_input(g, node, 0), *b = tsr_cpu_input(g, node, 1);
    gemm_shape s;
    if (a->dtype != TSR_FLOAT64 || b->dtype != TSR_FLOAT64) {
        snprintf(why, size, "%s: the cpu kernel runs float64 (oneDNN float32), not %s",
                 node->op->name, tsr_dtype_name(a->dtype));
        return false;
    }
    if (a->rank < 0 || b->rank < 0 || tsr_shape_numel(a->rank, a->dims) < 0 ||
        tsr_shape_numel(b->rank, b->dims) < 0 ||
        !gemm_shape_of(a->rank, a->dims, b->rank, b->dims, &s)) {
        snprintf(why, size,
                 "%s: the cpu kernel takes A of rank >= 2 times a 2-D B or a B with A's batch "
                 "dims",
                 node->op->name);
        return false;
    }
    return true;
}

/* Gemm as fuse_gemm writes it: A B + C, C of Y's shape. */
static bool gemm_op_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (!tsr_cpu_gemm_accumulates(g, node)) {
        snprintf(why, size,
                 "Gemm: the cpu kernel runs float64 A B + C of 2-D A and B, C of the product's "
                 "shape, alpha = beta = 1, no transposes");
        return false;
    }
    return gemm_supports(g, node, why, size);
}

bool tsr_cpu_gemm_accumulates(const tsr_graph *g, const tsr_node *node)
{
    if (node->op != &tsr_op_Gemm || node->n_inputs < 3 || node->inputs[2] < 0 ||
        tsr_attr_float(node, "alpha") != 1.0 || tsr_attr_float(node, "beta") != 1.0 ||
        tsr_attr_int(node, "transA") || tsr_attr_int(node, "transB"))
        return false;
    const tsr_value *c = &g->values[node->inputs[2]], *y = &g->values[node->outputs[0]];
    if (c->dtype != TSR_FLOAT64 || y->dtype != TSR_FLOAT64 || c->rank != 2 || y->rank != 2)
        return false;
    for (int d = 0; d < 2; d++)
        if (c->dims[d] != y->dims[d] || !tsr_dim_known(c->dims[d]))
            return false;
    return true;
}

static tsr_status gemm_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    s->run = gemm_run;
    return TSR_OK;
}

const tsr_cpu_op tsr_cpu_gemm_ops[] = {
    {&tsr_op_MatMul, gemm_supports, tsr_cpu_plain_layouts, gemm_prepare},
    {&tsr_op_Gemm, gemm_op_supports, tsr_cpu_plain_layouts, gemm_prepare},
    {NULL},
};
