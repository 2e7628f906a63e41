/* The oneDNN backend: convolutions (Conv, ai.tessera.FusedConv with its
 * bias, residual sum and activation as post-ops), their gradients
 * (ai.tessera.ConvGradInput, ConvGradFilter), ConvTranspose, matrix products
 * (Gemm, MatMul) and whole LSTM, GRU and RNN nodes (dnnl_rnn.c). Every
 * primitive is created once when the plan is built, with weights prepacked
 * into the format oneDNN chose; a run only points the primitive's memories
 * at the plan's buffers and executes.
 *
 * oneDNN's own trace (which implementation each primitive got, and its
 * time) is printed with the environment variable DNNL_VERBOSE=1 (=2 adds
 * primitive creation). */
#include "backends/cpu/dnnl_internal.h"

#include <dnnl_debug.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    pthread_once_t once;
    dnnl_engine_t engine;
    dnnl_status_t status;
    pthread_key_t stream_key; /* each thread's stream, destroyed when it exits */
    /* Each thread's scratchpad (thread_scratch), freed when it exits. */
    pthread_key_t scratch_key;
    bool have_key;
} dnnl_global = {.once = PTHREAD_ONCE_INIT};

typedef struct {
    void *data;
    size_t bytes;
} thread_scratch;

static void stream_destroy(void *stream)
{
    dnnl_stream_destroy(stream);
}

static void scratch_destroy(void *scratch)
{
    tsr_aligned_free(((thread_scratch *)scratch)->data);
    free(scratch);
}

static void dnnl_global_init(void)
{
    dnnl_global.have_key = pthread_key_create(&dnnl_global.stream_key, stream_destroy) == 0 &&
                           pthread_key_create(&dnnl_global.scratch_key, scratch_destroy) == 0;
    dnnl_global.status = dnnl_engine_create(&dnnl_global.engine, dnnl_cpu, 0);
}

tsr_status tsr_dnnl_engine(dnnl_engine_t *engine_out, dnnl_stream_t *stream_out)
{
    pthread_once(&dnnl_global.once, dnnl_global_init);
    TSR_DNNL_CHECK(dnnl_global.status, "engine creation");
    if (!dnnl_global.have_key)
        return tsr_error(TSR_ERR_INTERNAL, "no thread-specific key for oneDNN streams");
    *engine_out = dnnl_global.engine;
    if (!stream_out)
        return TSR_OK;
    dnnl_stream_t stream = pthread_getspecific(dnnl_global.stream_key);
    if (!stream) {
        TSR_DNNL_CHECK(dnnl_stream_create(&stream, dnnl_global.engine, dnnl_stream_default_flags),
                       "stream creation");
        if (pthread_setspecific(dnnl_global.stream_key, stream) != 0) {
            dnnl_stream_destroy(stream);
            return tsr_error(TSR_ERR_OUT_OF_MEMORY, "no room for this thread's oneDNN stream");
        }
    }
    *stream_out = stream;
    return TSR_OK;
}

/* The calling thread's scratchpad, grown to at least `bytes`. oneDNN's
 * own (library) scratchpad belongs to the thread that created the
 * primitive, so a plan specialized on one thread and run on another
 * would use memory it does not have; this one follows the running
 * thread, and a thread runs one primitive at a time. */
void *tsr_dnnl_thread_scratchpad(size_t bytes)
{
    thread_scratch *s = pthread_getspecific(dnnl_global.scratch_key);
    if (!s) {
        s = tsr_calloc(1, sizeof *s);
        if (!s)
            return NULL;
        if (pthread_setspecific(dnnl_global.scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->bytes < bytes) {
        void *data = tsr_aligned_alloc(bytes);
        if (!data)
            return NULL;
        tsr_aligned_free(s->data);
        s->data = data;
        s->bytes = bytes;
    }
    return s->data;
}

tsr_status tsr_dnnl_check(dnnl_status_t status, const char *what)
{
    if (status == dnnl_success)
        return TSR_OK;
    tsr_status code = TSR_ERR_INTERNAL;
    if (status == dnnl_unimplemented)
        code = TSR_ERR_UNSUPPORTED;
    else if (status == dnnl_out_of_memory)
        code = TSR_ERR_OUT_OF_MEMORY;
    return tsr_error(code, "oneDNN %s failed: %s", what, dnnl_status2str(status));
}

tsr_status tsr_dnnl_plain_md(dnnl_memory_desc_t *md, int rank, const int64_t *dims,
                             dnnl_data_type_t type)
{
    dnnl_dims_t d, strides;
    int64_t stride = 1;
    for (int i = rank - 1; i >= 0; i--) {
        d[i] = dims[i];
        strides[i] = stride;
        stride *= dims[i] > 0 ? dims[i] : 1;
    }
    TSR_DNNL_CHECK(dnnl_memory_desc_init_by_strides(md, rank, d, type, strides),
                   "plain memory descriptor");
    return TSR_OK;
}

tsr_status tsr_dnnl_layout_md(dnnl_memory_desc_t *md, const int64_t *dims, tsr_layout layout,
                              dnnl_data_type_t type)
{
    dnnl_format_tag_t tag = layout == TSR_LAYOUT_BLOCKED16  ? dnnl_nChw16c
                            : layout == TSR_LAYOUT_BLOCKED8 ? dnnl_nChw8c
                                                            : dnnl_nchw;
    dnnl_dims_t d = {dims[0], dims[1], dims[2], dims[3]};
    TSR_DNNL_CHECK(dnnl_memory_desc_init_by_tag(md, 4, d, type, tag), "activation descriptor");
    return TSR_OK;
}

tsr_status tsr_dnnl_exec_arg(tsr_dnnl_exec *e, int arg, const dnnl_memory_desc_t *md,
                             tsr_dnnl_source source, int index, void **data)
{
    if (e->n_args == TSR_DNNL_MAX_ARGS)
        return tsr_error(TSR_ERR_INTERNAL, "too many oneDNN arguments");
    dnnl_engine_t engine = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, NULL));
    int a = e->n_args;
    void *handle = DNNL_MEMORY_NONE;
    if (source == TSR_DNNL_OWNED) {
        size_t bytes = dnnl_memory_desc_get_size(md);
        e->owned[a] = tsr_aligned_alloc(bytes ? bytes : 1);
        if (!e->owned[a])
            return TSR_ERR_OUT_OF_MEMORY;
        memset(e->owned[a], 0, bytes);
        handle = e->owned[a];
        if (data)
            *data = handle;
    } else if (source == TSR_DNNL_FIXED) {
        handle = *data;
    }
    e->current[a] = handle == DNNL_MEMORY_NONE ? NULL : handle;
    dnnl_memory_t mem;
    TSR_DNNL_CHECK(dnnl_memory_create(&mem, md, engine, handle), "memory creation");
    e->args[a] = (dnnl_exec_arg_t){.arg = arg, .memory = mem};
    e->sources[a] = source;
    e->indices[a] = index;
    e->n_args++;
    return TSR_OK;
}

const char *tsr_dnnl_impl_name(const_dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        return "";
    return impl;
}

bool tsr_dnnl_impl_is_fast(const_dnnl_primitive_desc_t pd)
{
    const char *name = tsr_dnnl_impl_name(pd);
    return name[0] && strncmp(name, "ref", 3) != 0;
}

tsr_status tsr_dnnl_exec_finish(tsr_dnnl_exec *e, dnnl_primitive_desc_t pd, const char *what)
{
    e->what = what;
    const dnnl_memory_desc_t *scratch =
        dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    tsr_status status = TSR_OK;
    snprintf(e->impl, sizeof e->impl, "%s", tsr_dnnl_impl_name(pd));
    e->scratch_bytes = scratch ? dnnl_memory_desc_get_size(scratch) : 0;
    if (e->scratch_bytes > 0)
        status =
            tsr_dnnl_exec_arg(e, DNNL_ARG_SCRATCHPAD, scratch,
                              e->thread_scratchpad ? TSR_DNNL_THREAD : TSR_DNNL_OWNED, 0, NULL);
    if (status == TSR_OK)
        status = tsr_dnnl_check(dnnl_primitive_create(&e->primitive, pd), what);
    dnnl_primitive_desc_destroy(pd);
    return status;
}

tsr_status tsr_dnnl_exec_run(tsr_dnnl_exec *e, const tsr_kernel_ctx *k)
{
    dnnl_engine_t engine = NULL;
    dnnl_stream_t stream = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, &stream));
    for (int a = 0; a < e->n_args; a++) {
        void *data;
        if (e->sources[a] == TSR_DNNL_FROM_INPUT)
            data = k->inputs[e->indices[a]]->data;
        else if (e->sources[a] == TSR_DNNL_FROM_OUTPUT)
            data = k->outputs[e->indices[a]]->data;
        else if (e->sources[a] == TSR_DNNL_THREAD)
            data = tsr_dnnl_thread_scratchpad(e->scratch_bytes);
        else
            continue;
        if (!data && e->sources[a] == TSR_DNNL_THREAD)
            return tsr_error(TSR_ERR_OUT_OF_MEMORY, "%s: no %zu-byte scratchpad for this thread",
                             e->what, e->scratch_bytes);
        if (data == e->current[a])
            continue;
        TSR_DNNL_CHECK(dnnl_memory_set_data_handle(e->args[a].memory, data), "setting a buffer");
        e->current[a] = data;
    }
    TSR_DNNL_CHECK(dnnl_primitive_execute(e->primitive, stream, e->n_args, e->args), e->what);
    TSR_DNNL_CHECK(dnnl_stream_wait(stream), e->what);
    return TSR_OK;
}

void tsr_dnnl_exec_release(tsr_dnnl_exec *e)
{
    if (e->primitive)
        dnnl_primitive_destroy(e->primitive);
    for (int a = 0; a < e->n_args; a++) {
        dnnl_memory_destroy(e->args[a].memory);
        tsr_aligned_free(e->owned[a]);
    }
    memset(e, 0, sizeof *e);
}

tsr_status tsr_dnnl_pack(tsr_dnnl_exec *e, int arg, const dnnl_memory_desc_t *src_md,
                         const void *src, const dnnl_memory_desc_t *dst_md, float scale)
{
    dnnl_engine_t engine = NULL;
    dnnl_stream_t stream = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, &stream));
    void *dst = NULL;
    TSR_CHECK(tsr_dnnl_exec_arg(e, arg, dst_md, TSR_DNNL_OWNED, 0, &dst));

    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t from = NULL, to = NULL;
    dnnl_status_t s = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success && scale != 1.0f)
        s = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale);
    if (s == dnnl_success)
        s = dnnl_reorder_primitive_desc_create(&pd, src_md, engine, dst_md, engine, attr);
    if (s == dnnl_success)
        s = dnnl_primitive_create(&reorder, pd);
    if (s == dnnl_success)
        s = dnnl_memory_create(&from, src_md, engine, (void *)src);
    if (s == dnnl_success)
        s = dnnl_memory_create(&to, dst_md, engine, dst);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
        s = dnnl_primitive_execute(reorder, stream, 2, args);
    }
    if (s == dnnl_success)
        s = dnnl_stream_wait(stream);
    if (to)
        dnnl_memory_destroy(to);
    if (from)
        dnnl_memory_destroy(from);
    if (reorder)
        dnnl_primitive_destroy(reorder);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return tsr_dnnl_check(s, "weights reorder");
}

tsr_status tsr_dnnl_convert_init(tsr_dnnl_convert *c, const dnnl_memory_desc_t *f32_md,
                                 const dnnl_memory_desc_t *bf16_md, int index, void **bf16_out)
{
    dnnl_engine_t engine = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, NULL));
    c->active = true;
    TSR_CHECK(tsr_dnnl_exec_arg(&c->exec, DNNL_ARG_FROM, f32_md, TSR_DNNL_FROM_INPUT, index, NULL));
    TSR_CHECK(tsr_dnnl_exec_arg(&c->exec, DNNL_ARG_TO, bf16_md, TSR_DNNL_OWNED, 0, bf16_out));
    dnnl_primitive_desc_t pd;
    TSR_DNNL_CHECK(dnnl_reorder_primitive_desc_create(&pd, f32_md, engine, bf16_md, engine, NULL),
                   "input reorder");
    return tsr_dnnl_exec_finish(&c->exec, pd, "input reorder");
}

bool tsr_dnnl_use_bf16(const tsr_prepare_ctx *ctx)
{
    return ctx->precision == TSR_PRECISION_BF16 && tsr_cpu_has_bf16();
}

static bool is_conv_bwd(const tsr_node *node)
{
    return node->op == &tsr_op_ConvGradInput || node->op == &tsr_op_ConvGradFilter;
}

static bool is_rnn(const tsr_node *node)
{
    return node->op == &tsr_op_LSTM || node->op == &tsr_op_GRU || node->op == &tsr_op_RNN;
}

static bool dnnl_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (node->op == &tsr_op_Conv || node->op == &tsr_op_FusedConv)
        return tsr_dnnl_conv_supports(g, node, why, size);
    if (node->op == &tsr_op_Gemm || node->op == &tsr_op_MatMul)
        return tsr_dnnl_matmul_supports(g, node, why, size);
    if (is_conv_bwd(node))
        return tsr_dnnl_conv_bwd_supports(g, node, why, size);
    if (node->op == &tsr_op_ConvTranspose)
        return tsr_dnnl_deconv_supports(g, node, why, size);
    if (is_rnn(node))
        return tsr_dnnl_rnn_supports(g, node, why, size);
    snprintf(why, size,
             "oneDNN runs Conv, FusedConv, ConvGradInput, ConvGradFilter, ConvTranspose, Gemm, "
             "MatMul, LSTM, GRU and RNN only");
    return false;
}

static void dnnl_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                         uint8_t *wanted, uint8_t *produced)
{
    if (node->op == &tsr_op_Conv || node->op == &tsr_op_FusedConv)
        tsr_dnnl_conv_layouts(g, node, available, wanted, produced);
    else if (is_conv_bwd(node))
        tsr_dnnl_conv_bwd_layouts(g, node, available, wanted, produced);
    else if (node->op == &tsr_op_ConvTranspose)
        tsr_dnnl_deconv_layouts(g, node, available, wanted, produced);
}

static tsr_status dnnl_prepare(const tsr_prepare_ctx *ctx, void **state_out)
{
    /* oneDNN splits the work by the thread count it sees at creation. */
    int saved_threads = omp_get_max_threads();
    if (ctx->threads > 0)
        omp_set_num_threads(ctx->threads);
    tsr_status status;
    if (ctx->node->op == &tsr_op_Conv || ctx->node->op == &tsr_op_FusedConv)
        status = tsr_dnnl_conv_prepare(ctx, state_out);
    else if (is_conv_bwd(ctx->node))
        status = tsr_dnnl_conv_bwd_prepare(ctx, state_out);
    else if (ctx->node->op == &tsr_op_ConvTranspose)
        status = tsr_dnnl_deconv_prepare(ctx, state_out);
    else if (is_rnn(ctx->node))
        status = tsr_dnnl_rnn_prepare(ctx, state_out);
    else
        status = tsr_dnnl_matmul_prepare(ctx, state_out);
    omp_set_num_threads(saved_threads);
    return status;
}

static tsr_status dnnl_run(void *state, const tsr_kernel_ctx *k)
{
    if (k->node->op == &tsr_op_Conv || k->node->op == &tsr_op_FusedConv)
        return tsr_dnnl_conv_run(state, k);
    if (is_conv_bwd(k->node))
        return tsr_dnnl_conv_bwd_run(state, k);
    if (k->node->op == &tsr_op_ConvTranspose)
        return tsr_dnnl_deconv_run(state, k);
    if (is_rnn(k->node))
        return tsr_dnnl_rnn_run(state, k);
    return tsr_dnnl_matmul_run(state, k);
}

static void dnnl_release(void *state)
{
    if (!state)
        return;
    tsr_dnnl_kind kind = *(const tsr_dnnl_kind *)state;
    if (kind == TSR_DNNL_KIND_CONV)
        tsr_dnnl_conv_release(state);
    else if (kind == TSR_DNNL_KIND_CONV_BWD)
        tsr_dnnl_conv_bwd_release(state);
    else if (kind == TSR_DNNL_KIND_DECONV)
        tsr_dnnl_deconv_release(state);
    else if (kind == TSR_DNNL_KIND_RNN)
        tsr_dnnl_rnn_release(state);
    else
        tsr_dnnl_matmul_release(state);
}

/* Gemm's C when it has the output's shape: the sum post-op accumulates
 * the product onto it in place (dnnl_matmul.c). */
static int dnnl_inplace_input(const tsr_graph *g, const tsr_node *node)
{
    if (node->op != &tsr_op_Gemm || node->n_inputs < 3 || node->inputs[2] < 0 ||
        tsr_attr_float(node, "beta") == 0.0)
        return -1;
    const tsr_value *c = &g->values[node->inputs[2]], *y = &g->values[node->outputs[0]];
    if (c->dtype != y->dtype || c->rank != y->rank)
        return -1;
    for (int d = 0; d < c->rank; d++)
        if (c->dims[d] != y->dims[d] || !tsr_dim_known(c->dims[d]))
            return -1;
    return 2;
}

/* Depth-first stacks: convolutions open them (dnnl_conv.c). */
static bool dnnl_band_info(const void *state, tsr_band_info *info_out)
{
    return state && *(const tsr_dnnl_kind *)state == TSR_DNNL_KIND_CONV &&
           tsr_dnnl_conv_band_info(state, info_out);
}

static bool dnnl_flushes_nan(const void *state)
{
    return state && *(const tsr_dnnl_kind *)state == TSR_DNNL_KIND_CONV &&
           tsr_dnnl_conv_flushes_nan(state);
}

static const char *dnnl_kernel_name(const void *state)
{
    tsr_dnnl_kind kind = *(const tsr_dnnl_kind *)state;
    if (kind == TSR_DNNL_KIND_CONV)
        return tsr_dnnl_conv_kernel_name(state);
    if (kind == TSR_DNNL_KIND_CONV_BWD)
        return tsr_dnnl_conv_bwd_kernel_name(state);
    if (kind == TSR_DNNL_KIND_DECONV)
        return tsr_dnnl_deconv_kernel_name(state);
    if (kind == TSR_DNNL_KIND_RNN)
        return tsr_dnnl_rnn_kernel_name(state);
    return tsr_dnnl_matmul_kernel_name(state);
}

const tsr_backend tsr_backend_dnnl = {
    .name = "dnnl",
    .supports = dnnl_supports,
    .layouts = dnnl_layouts,
    .prepare = dnnl_prepare,
    .release = dnnl_release,
    .inplace_input = dnnl_inplace_input,
    .kernel_name = dnnl_kernel_name,
    .run = dnnl_run,
    .band_info = dnnl_band_info,
    .run_band = tsr_dnnl_conv_run_band,
    .flushes_nan = dnnl_flushes_nan,
    .memory = &tsr_host_memory,
};
