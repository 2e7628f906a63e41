/* Plans that refuse NaN where a kernel would hide it: a backend says which
 * prepared kernels can turn a NaN they read into a finite value
 * (tsr_backend.flushes_nan: oneDNN's fused ReLU, Clip and HardSigmoid take
 * max and min); a specialization marks the inputs that reach one, and
 * each run checks them (docs/hal.md, "Kernels that would hide NaN"). */
#include "runtime/plan_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool step_flushes_nan(const plan_step *st)
{
    return st->backend->flushes_nan && st->backend->flushes_nan(st->state);
}

/* Marks in `reach` the values node's inputs depend on (themselves
 * included); `stack` has room for every value, each pushed once. */
static void mark_sources(const tsr_graph *g, const tsr_node *node, bool *reach, int *stack)
{
    int top = 0;
    for (int i = 0; i < node->n_inputs; i++)
        if (node->inputs[i] >= 0 && !reach[node->inputs[i]])
            reach[stack[top++] = node->inputs[i]] = true;
    while (top > 0) {
        int n = g->values[stack[--top]].producer;
        for (int i = 0; n >= 0 && i < g->nodes[n].n_inputs; i++) {
            int u = g->nodes[n].inputs[i];
            if (u >= 0 && !reach[u])
                reach[stack[top++] = u] = true;
        }
    }
}

tsr_status tsr_spec_nan_guard(spec *s)
{
    const tsr_graph *g = s->graph;
    bool *reach = NULL;
    int *stack = NULL;
    for (int i = 0; i < s->n_steps; i++) {
        const plan_step *st = &s->steps[i];
        int members = st->kind == STEP_STACK ? tsr_stack_size(st->stack) : 1;
        for (int m = 0; m < members; m++) {
            const plan_step *k = st->kind == STEP_STACK ? tsr_stack_member(st->stack, m) : st;
            if (k->kind != STEP_KERNEL || !step_flushes_nan(k))
                continue;
            if (!s->nan_guard) {
                s->nan_guard = tsr_malloc((size_t)s->n_inputs * sizeof *s->nan_guard + 1);
                reach = tsr_malloc((size_t)g->n_values + 1);
                stack = tsr_malloc((size_t)g->n_values * sizeof *stack + 1);
                if (!s->nan_guard || !reach || !stack) {
                    free(reach);
                    free(stack);
                    return TSR_ERR_OUT_OF_MEMORY;
                }
                for (int j = 0; j < s->n_inputs; j++)
                    s->nan_guard[j] = -1;
            }
            memset(reach, 0, (size_t)g->n_values);
            mark_sources(g, &g->nodes[k->node], reach, stack);
            for (int j = 0; j < s->n_inputs; j++)
                if (s->nan_guard[j] < 0 && reach[g->inputs[j]])
                    s->nan_guard[j] = k->node;
        }
    }
    free(reach);
    free(stack);
    return TSR_OK;
}

/* The first NaN among the n values at x (float32 or float64), or n: blocks
 * are tested with a vectorized reduction, and only a block holding one is
 * searched. */
static int64_t first_nan(const void *x, bool f64, int64_t n, int threads)
{
    enum { BLOCK = 4096 };
    int64_t blocks = (n + BLOCK - 1) / BLOCK, first = n;
    int nt = n >= (1 << 20) ? threads : 1;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(min : first) if (nt > 1)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
        int bad = 0;
        if (f64) {
            const double *d = (const double *)x + lo;
#pragma omp simd reduction(| : bad)
            for (int64_t j = 0; j < hi - lo; j++)
                bad |= d[j] != d[j];
        } else {
            const float *f = (const float *)x + lo;
#pragma omp simd reduction(| : bad)
            for (int64_t j = 0; j < hi - lo; j++)
                bad |= f[j] != f[j];
        }
        for (int64_t j = lo; bad && j < hi; j++)
            if (f64 ? isnan(((const double *)x)[j]) : isnan(((const float *)x)[j])) {
                first = j < first ? j : first;
                break;
            }
    }
    return first;
}

tsr_status tsr_spec_check_nan_inputs(const spec *s, const tsr_tensor *inputs, int threads)
{
    for (int i = 0; s->nan_guard && i < s->n_inputs; i++) {
        const tsr_tensor *t = &inputs[i];
        if (s->nan_guard[i] < 0 || t->memory ||
            (t->dtype != TSR_FLOAT32 && t->dtype != TSR_FLOAT64))
            continue;
        int64_t n = tsr_tensor_numel(t);
        int64_t first = first_nan(t->data, t->dtype == TSR_FLOAT64, n, threads);
        if (first == n)
            continue;
        const tsr_node *node = &s->graph->nodes[s->nan_guard[i]];
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "input '%s' holds NaN (element %lld of %lld); the cpu kernel of %s "
                         "'%s' fuses a %s whose max and min would give a number for it, so "
                         "the plan refuses NaN there (the ref device propagates it)",
                         s->graph->values[s->graph->inputs[i]].name, (long long)first, (long long)n,
                         node->op->name, node->name ? node->name : "",
                         tsr_attr_string(node, "activation"));
    }
    return TSR_OK;
}
