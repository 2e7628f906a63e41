/* The cpu backend: our own vectorized kernels for the memory-bound ops,
 * working directly on the blocked layouts oneDNN produces, and the
 * device's layout reorders. Each op family lists its ops in a table; this
 * file dispatches the backend's calls to them. */
#include "backends/cpu/kernels_internal.h"

#include <stdlib.h>
#include <string.h>

static const tsr_cpu_op *const families[] = {tsr_cpu_eltwise_ops, tsr_cpu_pool_ops,
                                             tsr_cpu_misc_ops, tsr_cpu_dpp_ops, tsr_cpu_ict_ops,
                                             tsr_cpu_ict_edge_ops,
                                             tsr_cpu_resize_ops, tsr_cpu_gemm_ops,
                                             tsr_cpu_train_ops, tsr_cpu_reduce_ops};

static const tsr_cpu_op *find_op(const tsr_op_def *op)
{
    for (size_t f = 0; f < sizeof families / sizeof *families; f++)
        for (const tsr_cpu_op *o = families[f]; o->op; o++)
            if (o->op == op)
                return o;
    return NULL;
}

bool tsr_cpu_require_f32(const tsr_graph *g, const tsr_node *n, int i, char *why, size_t size)
{
    const tsr_value *v = tsr_cpu_input(g, n, i);
    if (!v || v->dtype == TSR_FLOAT32)
        return true;
    snprintf(why, size, "%s: the ref backend runs %s", tsr_dtype_name(v->dtype),
             v->dtype == TSR_FLOAT64 ? "float64" : "other types");
    return false;
}

tsr_layout tsr_cpu_keep_layout(const tsr_value *v, uint8_t available)
{
    if (v && v->rank == 4 && available != TSR_LAYOUT_PLAIN)
        return (tsr_layout)available;
    return TSR_LAYOUT_PLAIN;
}

void tsr_cpu_plain_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                           uint8_t *wanted, uint8_t *produced)
{
    (void)g;
    (void)available;
    for (int i = 0; i < node->n_inputs; i++)
        wanted[i] = TSR_LAYOUT_PLAIN;
    for (int i = 0; i < node->n_outputs; i++)
        produced[i] = TSR_LAYOUT_PLAIN;
}

int tsr_cpu_threads_for(int threads, int64_t work)
{
    /* Below this, starting a team costs more than the loop. */
    const int64_t per_thread = 16384;
    int64_t useful = work / per_thread;
    if (useful < 1)
        useful = 1;
    return threads < useful ? threads : (int)useful;
}

tsr_isa tsr_cpu_isa_for_block(tsr_isa isa, int block)
{
    if (block == 1)
        return TSR_ISA_PORTABLE;
    if (block == 8 && isa == TSR_ISA_AVX512)
        return TSR_ISA_AVX2;
    return isa;
}

bool tsr_cpu_planes_of(const tsr_value *v, uint8_t layout, tsr_cpu_planes *p)
{
    if (!v || v->rank != 4)
        return false;
    int b = tsr_layout_block((tsr_layout)layout);
    int64_t c = v->dims[1];
    *p = (tsr_cpu_planes){.pitch = v->dims[3] * b,
                          .channels = c,
                          .cbs = (c + b - 1) / b,
                          .block = b,
                          .pad_from = c % b == 0 ? b : (int)(c % b)};
    return true;
}

tsr_band_info tsr_cpu_pointwise_band(unsigned streamed)
{
    return (tsr_band_info){.stride = 1, .pad = 0, .extent = 1, .streamed = streamed};
}

static bool cpu_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t why_size)
{
    const tsr_cpu_op *o = find_op(node->op);
    if (!o) {
        snprintf(why, why_size, "%s has no kernel in the cpu backend", node->op->name);
        return false;
    }
    return o->supports(g, node, why, why_size);
}

static void cpu_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                        uint8_t *wanted, uint8_t *produced)
{
    const tsr_cpu_op *o = find_op(node->op);
    if (o && o->layouts) {
        o->layouts(g, node, available, wanted, produced);
        return;
    }
    tsr_layout main = tsr_cpu_keep_layout(tsr_cpu_input(g, node, 0), available[0]);
    for (int i = 0; i < node->n_inputs; i++)
        wanted[i] = i == 0 ? (uint8_t)main : TSR_LAYOUT_PLAIN;
    for (int i = 0; i < node->n_outputs; i++)
        produced[i] = (uint8_t)main;
}

static tsr_status cpu_prepare(const tsr_prepare_ctx *ctx, void **state_out)
{
    *state_out = NULL;
    const tsr_cpu_op *o = find_op(ctx->node->op);
    if (!o)
        return tsr_error(TSR_ERR_INTERNAL, "the cpu backend has no kernel for %s",
                         ctx->node->op->name);
    tsr_cpu_state *s = tsr_calloc(1, sizeof *s);
    if (!s)
        return TSR_ERR_OUT_OF_MEMORY;
    s->isa = tsr_cpu_isa();
    if (s->isa == TSR_ISA_SVE && !o->sve)
        s->isa = TSR_ISA_NEON;
    tsr_status st = o->prepare(ctx, s);
    if (st != TSR_OK) {
        free(s->data);
        free(s);
        return st;
    }
    /* A test hook: TSR_TEST_FAIL_BAND=<node name> makes that node's band
     * kernel fail on the batch's last image, so that tests see an error
     * raised on a worker thread come out of a depth-first stack. */
    const char *fail = getenv("TSR_TEST_FAIL_BAND");
    s->fail_image = fail && s->band && strcmp(fail, ctx->node->name) == 0
                        ? tsr_cpu_output(ctx->graph, ctx->node, 0)->dims[0] - 1
                        : -1;
    *state_out = s;
    return TSR_OK;
}

static void cpu_release(void *state)
{
    tsr_cpu_state *s = state;
    if (!s)
        return;
    free(s->data);
    free(s);
}

/* The vector level the node's tiles were picked for (--verbose). */
static const char *cpu_kernel_name(const void *state)
{
    const tsr_cpu_state *s = state;
    return s ? tsr_cpu_isa_label(s->isa) : NULL;
}

static tsr_status cpu_run(void *state, const tsr_kernel_ctx *ctx)
{
    const tsr_cpu_state *s = state;
    return s->run(s, ctx);
}

static bool cpu_band_info(const void *state, tsr_band_info *info_out)
{
    const tsr_cpu_state *s = state;
    if (!s || !s->band)
        return false;
    *info_out = s->band_info;
    return true;
}

static tsr_status cpu_run_band(const void *state, const tsr_band_call *call)
{
    const tsr_cpu_state *s = state;
    if (call->n == s->fail_image)
        return tsr_error(TSR_ERR_INTERNAL, "band of image %lld failed (TSR_TEST_FAIL_BAND)",
                         (long long)call->n);
    s->band(s, call);
    return TSR_OK;
}

static int cpu_inplace_input(const tsr_graph *g, const tsr_node *node)
{
    return tsr_cpu_gemm_accumulates(g, node) ? 2 : -1;
}

const tsr_backend tsr_backend_cpu = {
    .name = "cpu",
    .supports = cpu_supports,
    .layouts = cpu_layouts,
    .prepare = cpu_prepare,
    .release = cpu_release,
    .inplace_input = cpu_inplace_input,
    .kernel_name = cpu_kernel_name,
    .run = cpu_run,
    .reorder = tsr_cpu_reorder,
    .band_info = cpu_band_info,
    .run_band = cpu_run_band,
    .memory = &tsr_host_memory,
};
