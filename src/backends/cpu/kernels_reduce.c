/* Sums and means over axes in the cpu backend (ReduceSum, ReduceMean):
 * float32 and float64 on plain layouts, the axes known when the plan is
 * built, the dims read at every run. Sums accumulate in double, as the ref
 * kernel's do. The input is walked by its runs of kept and reduced axes
 * (ops/reduce.h):
 *  - innermost run kept, K contiguous outputs: each reduced index adds a
 *    row of K inputs into a row of accumulators, vectorized along the row
 *    (ICTP's sum over paths, a bias gradient's sum over the batch);
 *  - innermost run reduced, R contiguous inputs per output: each output
 *    sums its runs of R, vectorized along them (a sum of squares over a
 *    vector's components, a sum over the pixels of a channel).
 * Threads share the outputs (pieces of a kept row count as outputs). */
#include "backends/cpu/kernels_internal.h"
#include "ops/reduce.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Accumulators of one piece of a kept row: 2 KiB of doubles. */
#define ROW_PIECE 256

typedef struct {
    bool mask[TSR_MAX_RANK];
    bool mean;
} reduce_data;

/* The offset of combination q of runs from..n-1 (the first fastest). */
static int64_t run_offset(int64_t q, int from, int n, const int64_t *size, const int64_t *stride)
{
    int64_t off = 0;
    for (int g = from; g < n; g++) {
        off += q % size[g] * stride[g];
        q /= size[g];
    }
    return off;
}

/* Steps the combination of runs from..n-1 in idx on by one, keeping *off
 * its offset. */
static void run_step(int64_t *idx, int from, int n, const int64_t *size, const int64_t *stride,
                     int64_t *off)
{
    for (int g = from; g < n; g++) {
        *off += stride[g];
        if (++idx[g] < size[g])
            return;
        *off -= stride[g] * size[g];
        idx[g] = 0;
    }
}

#define REDUCE_KERNELS(T)                                                                          \
    static void sum_rows_##T(const T *x, T *y, const tsr_reduce_runs *r, bool mean, int nt)        \
    {                                                                                              \
        const int64_t K = r->kept_size[0], outer = r->out_count / K;                               \
        const int64_t pieces = (K + ROW_PIECE - 1) / ROW_PIECE;                                    \
        _Pragma("omp parallel for schedule(static) num_threads(nt) if (nt > 1)")                   \
        for (int64_t u = 0; u < outer * pieces; u++) {                                             \
            int64_t o = u / pieces, k0 = u % pieces * ROW_PIECE;                                   \
            int64_t len = K - k0 < ROW_PIECE ? K - k0 : ROW_PIECE;                                 \
            const T *xs = x + run_offset(o, 1, r->n_kept, r->kept_size, r->kept_stride) + k0;      \
            double acc[ROW_PIECE];                                                                 \
            for (int64_t i = 0; i < len; i++)                                                      \
                acc[i] = 0;                                                                        \
            int64_t idx[TSR_MAX_RANK] = {0}, off = 0;                                              \
            for (int64_t q = 0; q < r->red_count; q++) {                                           \
                const T *row = xs + off;                                                           \
                _Pragma("omp simd")                                                                \
                for (int64_t i = 0; i < len; i++)                                                  \
                    acc[i] += row[i];                                                              \
                run_step(idx, 0, r->n_red, r->red_size, r->red_stride, &off);                      \
            }                                                                                      \
            T *ys = y + o * K + k0;                                                                \
            for (int64_t i = 0; i < len; i++)                                                      \
                ys[i] = (T)(mean ? acc[i] / (double)r->red_count : acc[i]);                        \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    static void sum_runs_##T(const T *x, T *y, const tsr_reduce_runs *r, bool mean, int nt)        \
    {                                                                                              \
        const int64_t R = r->red_size[0], rest = r->red_count / R;                                 \
        _Pragma("omp parallel for schedule(static) num_threads(nt) if (nt > 1)")                   \
        for (int64_t o = 0; o < r->out_count; o++) {                                               \
            const T *xs = x + run_offset(o, 0, r->n_kept, r->kept_size, r->kept_stride);           \
            double acc = 0;                                                                        \
            int64_t idx[TSR_MAX_RANK] = {0}, off = 0;                                              \
            for (int64_t q = 0; q < rest; q++) {                                                   \
                const T *run = xs + off;                                                           \
                _Pragma("omp simd reduction(+ : acc)")                                             \
                for (int64_t i = 0; i < R; i++)                                                    \
                    acc += run[i];                                                                 \
                run_step(idx, 1, r->n_red, r->red_size, r->red_stride, &off);                      \
            }                                                                                      \
            y[o] = (T)(mean ? acc / (double)r->red_count : acc);                                   \
        }                                                                                          \
    }

REDUCE_KERNELS(float)
REDUCE_KERNELS(double)

static tsr_status reduce_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const reduce_data *d = s->data;
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    tsr_reduce_runs r;
    tsr_reduce_runs_of(x->rank, x->dims, d->mask, &r);
    if (tsr_tensor_numel(y) != r.out_count)
        return tsr_error(TSR_ERR_SHAPE,
                         "%s: the output has %lld elements, the reduction gives %lld",
                         k->node->op->name, (long long)tsr_tensor_numel(y),
                         (long long)r.out_count);
    bool f64 = x->dtype == TSR_FLOAT64;
    if (r.out_count == 0)
        return TSR_OK;
    if (r.n_red == 0 || r.red_count == 0) {
        /* Nothing to sum (the reduced axes have size 1) or an empty sum
         * (0, and the mean 0 / 0). */
        if (r.red_count != 0) {
            memcpy(y->data, x->data, (size_t)r.out_count * tsr_dtype_size(x->dtype));
        } else {
            double v = d->mean ? NAN : 0.0;
            for (int64_t i = 0; i < r.out_count; i++) {
                if (f64)
                    ((double *)y->data)[i] = v;
                else
                    ((float *)y->data)[i] = (float)v;
            }
        }
        return TSR_OK;
    }
    int nt = tsr_cpu_threads_for(k->threads, r.out_count * r.red_count);
    bool rows = r.n_kept > 0 && r.kept_stride[0] == 1;
    if (f64 && rows)
        sum_rows_double(x->data, y->data, &r, d->mean, nt);
    else if (f64)
        sum_runs_double(x->data, y->data, &r, d->mean, nt);
    else if (rows)
        sum_rows_float(x->data, y->data, &r, d->mean, nt);
    else
        sum_runs_float(x->data, y->data, &r, d->mean, nt);
    return TSR_OK;
}

static bool reduce_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    const tsr_value *x = tsr_cpu_input(g, node, 0);
    bool mask[TSR_MAX_RANK];
    if (!x || (x->dtype != TSR_FLOAT32 && x->dtype != TSR_FLOAT64)) {
        snprintf(why, size, "%s: the ref backend runs %s", node->op->name,
                 x ? tsr_dtype_name(x->dtype) : "a missing input");
        return false;
    }
    if (!tsr_reduce_graph_mask(g, node, mask)) {
        snprintf(why, size, "%s: the axes are known only at run time: the ref backend runs it",
                 node->op->name);
        return false;
    }
    return true;
}

static tsr_status reduce_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    reduce_data *d = tsr_calloc(1, sizeof *d);
    if (!d)
        return TSR_ERR_OUT_OF_MEMORY;
    if (!tsr_reduce_graph_mask(ctx->graph, ctx->node, d->mask)) {
        free(d);
        return tsr_error(TSR_ERR_INTERNAL, "cpu %s: the axes are not known", ctx->node->op->name);
    }
    d->mean = ctx->node->op == &tsr_op_ReduceMean;
    s->data = d;
    s->run = reduce_run;
    return TSR_OK;
}

const tsr_cpu_op tsr_cpu_reduce_ops[] = {
    {&tsr_op_ReduceSum, reduce_supports, tsr_cpu_plain_layouts, reduce_prepare},
    {&tsr_op_ReduceMean, reduce_supports, tsr_cpu_plain_layouts, reduce_prepare},
    {NULL},
};
