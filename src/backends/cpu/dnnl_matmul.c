/* Gemm and MatMul through oneDNN's matmul primitive. Transposes are
 * strides, not copies. A constant B (a classifier's weights) is
 * prepacked once into the format oneDNN chose, with Gemm's alpha folded
 * in; Gemm's C becomes a bias when it is one row, else it is copied
 * (broadcast) into Y and accumulated onto with a sum post-op scaled by
 * beta. MatMul's batch dims broadcast as numpy's do. A few rows against
 * a large B (a classifier at batches 2 to 4) run on the cpu backend's
 * matrix-vector path instead, which streams B as it is stored. */
#include "backends/cpu/dnnl_internal.h"
#include "backends/cpu/matvec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MM_MAX_RANK 4

typedef struct {
    tsr_dnnl_kind kind; /* first, see dnnl_release */
    tsr_dnnl_convert convert;
    tsr_dnnl_exec exec;
    /* Gemm's C copied into Y before each run: Y[i, j] = C[i * c_rs + j * c_cs]. */
    bool copy_c;
    int64_t m, n, c_rs, c_cs;
    /* Run by tsr_cpu_matvec_run instead of oneDNN. */
    bool use_matvec;
    tsr_cpu_matvec matvec;
} matmul_state;

/* The product as oneDNN sees it: operands of equal rank, batch dims
 * broadcast, A and B addressed through strides. */
typedef struct {
    int rank;
    int64_t a_dims[MM_MAX_RANK], a_strides[MM_MAX_RANK];
    int64_t b_dims[MM_MAX_RANK], b_strides[MM_MAX_RANK];
    int64_t y_dims[MM_MAX_RANK];
    float alpha, beta;
    int c_input; /* Gemm's C, -1 if none or beta is 0 */
} mm_shape;

static void dense_strides(int rank, const int64_t *dims, int64_t *strides)
{
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        strides[i] = s;
        s *= dims[i] > 0 ? dims[i] : 1;
    }
}

static void gemm_shape(const tsr_graph *g, const tsr_node *node, mm_shape *s)
{
    const tsr_value *a = &g->values[node->inputs[0]], *b = &g->values[node->inputs[1]];
    bool ta = tsr_attr_int(node, "transA") != 0, tb = tsr_attr_int(node, "transB") != 0;
    int64_t m = ta ? a->dims[1] : a->dims[0], k = ta ? a->dims[0] : a->dims[1];
    int64_t n = tb ? b->dims[0] : b->dims[1];
    s->rank = 2;
    s->a_dims[0] = m;
    s->a_dims[1] = k;
    s->a_strides[0] = ta ? 1 : k;
    s->a_strides[1] = ta ? m : 1;
    s->b_dims[0] = k;
    s->b_dims[1] = n;
    s->b_strides[0] = tb ? 1 : n;
    s->b_strides[1] = tb ? k : 1;
    s->y_dims[0] = m;
    s->y_dims[1] = n;
    s->alpha = (float)tsr_attr_float(node, "alpha");
    s->beta = (float)tsr_attr_float(node, "beta");
    s->c_input = node->n_inputs > 2 && node->inputs[2] >= 0 && s->beta != 0.0f ? 2 : -1;
}

/* A 1-D A is a row, a 1-D B a column (their dims dropped from Y, which
 * changes nothing in memory); batch dims are padded with leading 1s. */
static void matmul_shape(const tsr_graph *g, const tsr_node *node, mm_shape *s)
{
    const tsr_value *a = &g->values[node->inputs[0]], *b = &g->values[node->inputs[1]];
    int64_t ad[MM_MAX_RANK], bd[MM_MAX_RANK];
    int ra = a->rank, rb = b->rank;
    memcpy(ad, a->dims, sizeof(int64_t) * (size_t)ra);
    memcpy(bd, b->dims, sizeof(int64_t) * (size_t)rb);
    if (ra == 1) {
        ad[1] = ad[0];
        ad[0] = 1;
        ra = 2;
    }
    if (rb == 1) {
        bd[1] = 1;
        rb = 2;
    }
    s->rank = ra > rb ? ra : rb;
    for (int i = 0; i < s->rank; i++) {
        int ia = i - (s->rank - ra), ib = i - (s->rank - rb);
        s->a_dims[i] = ia >= 0 ? ad[ia] : 1;
        s->b_dims[i] = ib >= 0 ? bd[ib] : 1;
        s->y_dims[i] = s->a_dims[i] > s->b_dims[i] ? s->a_dims[i] : s->b_dims[i];
    }
    s->y_dims[s->rank - 2] = s->a_dims[s->rank - 2];
    s->y_dims[s->rank - 1] = s->b_dims[s->rank - 1];
    /* One B for every batch (a Linear layer on [T, B, K]): A's batch dims
     * are rows of one product, as in memory they already are. oneDNN ran
     * the batched form as products of M = T rows each, 2x slower at
     * [32, 8, 128] x [128, 512] on Zen 4. */
    int64_t b_batch = 1, a_batch = 1;
    for (int i = 0; i < s->rank - 2; i++) {
        b_batch *= s->b_dims[i];
        a_batch *= s->a_dims[i];
    }
    if (b_batch == 1 && a_batch > 1) {
        for (int i = 0; i < s->rank - 2; i++)
            s->a_dims[i] = s->y_dims[i] = 1;
        s->a_dims[s->rank - 2] *= a_batch;
        s->y_dims[s->rank - 2] *= a_batch;
    }
    dense_strides(s->rank, s->a_dims, s->a_strides);
    dense_strides(s->rank, s->b_dims, s->b_strides);
    s->alpha = 1.0f;
    s->beta = 0.0f;
    s->c_input = -1;
}

bool tsr_dnnl_matmul_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    const tsr_value *a = &g->values[node->inputs[0]], *b = &g->values[node->inputs[1]];
    if (a->dtype != TSR_FLOAT32) {
        snprintf(why, size, "A is %s; oneDNN matmul runs float32 (float64 runs on ref)",
                 tsr_dtype_name(a->dtype));
        return false;
    }
    if (node->op == &tsr_op_MatMul && (a->rank > MM_MAX_RANK || b->rank > MM_MAX_RANK)) {
        snprintf(why, size, "A has rank %d and B rank %d; oneDNN matmul takes ranks 1 to %d",
                 a->rank, b->rank, MM_MAX_RANK);
        return false;
    }
    const tsr_value *y = &g->values[node->outputs[0]];
    if (tsr_shape_numel(y->rank, y->dims) == 0 || tsr_shape_numel(a->rank, a->dims) == 0) {
        snprintf(why, size, "empty tensors are left to ref");
        return false;
    }
    return true;
}

static tsr_status md_strided(dnnl_memory_desc_t *md, int rank, const int64_t *dims,
                             const int64_t *strides, dnnl_data_type_t type)
{
    dnnl_dims_t d, s;
    for (int i = 0; i < rank; i++) {
        d[i] = dims[i];
        s[i] = strides[i];
    }
    TSR_DNNL_CHECK(dnnl_memory_desc_init_by_strides(md, rank, d, type, s), "matmul descriptor");
    return TSR_OK;
}

/* Gemm's C as strides over Y's [M, N]: 0 along broadcast dims. */
static void c_strides(const tsr_value *c, int64_t *rs, int64_t *cs)
{
    *rs = *cs = 0;
    if (c->rank >= 1 && c->dims[c->rank - 1] != 1)
        *cs = 1;
    if (c->rank == 2 && c->dims[0] != 1)
        *rs = c->dims[1];
}

static tsr_status matmul_build(const tsr_prepare_ctx *ctx, matmul_state *st, const mm_shape *s,
                               bool bf16)
{
    const tsr_graph *g = ctx->graph;
    const tsr_node *node = ctx->node;
    const tsr_value *b = &g->values[node->inputs[1]];
    bool b_const = b->data != NULL;
    dnnl_data_type_t in_type = bf16 ? dnnl_bf16 : dnnl_f32;
    int r = s->rank;

    dnnl_memory_desc_t user_a_md, a_md, b_md, b_user_md, y_md, bias_md;
    int64_t dense[MM_MAX_RANK];
    dense_strides(r, s->a_dims, dense);
    TSR_CHECK(md_strided(&user_a_md, r, s->a_dims, s->a_strides, dnnl_f32));
    if (bf16)
        TSR_CHECK(md_strided(&a_md, r, s->a_dims, dense, dnnl_bf16));
    else
        a_md = user_a_md;
    TSR_CHECK(md_strided(&b_user_md, r, s->b_dims, s->b_strides, dnnl_f32));
    if (b_const) {
        dnnl_dims_t bd;
        for (int i = 0; i < r; i++)
            bd[i] = s->b_dims[i];
        TSR_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&b_md, r, bd, in_type, dnnl_format_tag_any),
                       "weights descriptor");
    } else {
        b_md = b_user_md;
    }
    TSR_CHECK(tsr_dnnl_plain_md(&y_md, r, s->y_dims, dnnl_f32));

    /* C as a bias needs one row and no output scale that would scale it too. */
    const tsr_value *c = s->c_input >= 0 ? &g->values[node->inputs[s->c_input]] : NULL;
    bool alpha_in_weights = b_const;
    bool output_scale = !alpha_in_weights && s->alpha != 1.0f;
    if (c)
        c_strides(c, &st->c_rs, &st->c_cs);
    bool c_bias = c && c->data && st->c_rs == 0 && !output_scale;
    st->copy_c = c && !c_bias;
    st->m = s->y_dims[0];
    st->n = s->y_dims[1];
    if (c_bias) {
        int64_t bias_dims[2] = {1, s->y_dims[1]};
        TSR_CHECK(tsr_dnnl_plain_md(&bias_md, 2, bias_dims, dnnl_f32));
    }

    dnnl_matmul_desc_t md;
    TSR_DNNL_CHECK(dnnl_matmul_desc_init(&md, &a_md, &b_md, c_bias ? &bias_md : NULL, &y_md),
                   "matmul descriptor");
    dnnl_engine_t engine = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, NULL));
    dnnl_primitive_attr_t attr;
    TSR_DNNL_CHECK(dnnl_primitive_attr_create(&attr), "attribute creation");
    dnnl_status_t ds = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    float alpha = s->alpha;
    if (ds == dnnl_success && output_scale)
        ds = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha);
    if (ds == dnnl_success && st->copy_c) {
        dnnl_post_ops_t ops;
        ds = dnnl_post_ops_create(&ops);
        if (ds == dnnl_success) {
            ds = dnnl_post_ops_append_sum(ops, s->beta);
            if (ds == dnnl_success)
                ds = dnnl_primitive_attr_set_post_ops(attr, ops);
            dnnl_post_ops_destroy(ops);
        }
    }
    dnnl_primitive_desc_t pd = NULL;
    if (ds == dnnl_success)
        ds = dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    TSR_DNNL_CHECK(ds, bf16 ? "bf16 matmul" : "matmul");

    tsr_dnnl_exec *e = &st->exec;
    void *a_data = NULL;
    tsr_status status = TSR_OK;
    if (bf16)
        status = tsr_dnnl_convert_init(&st->convert, &user_a_md, &a_md, 0, &a_data);
    if (status == TSR_OK)
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_SRC, &a_md,
                                   bf16 ? TSR_DNNL_FIXED : TSR_DNNL_FROM_INPUT, 0, &a_data);
    if (status == TSR_OK && b_const)
        status =
            tsr_dnnl_pack(e, DNNL_ARG_WEIGHTS, &b_user_md, b->data,
                          dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), s->alpha);
    else if (status == TSR_OK)
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_WEIGHTS, &b_md, TSR_DNNL_FROM_INPUT, 1, NULL);
    if (status == TSR_OK && c_bias) {
        float *bias = NULL;
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_BIAS, &bias_md, TSR_DNNL_OWNED, 0, (void **)&bias);
        for (int64_t j = 0; status == TSR_OK && j < st->n; j++)
            bias[j] = s->beta * ((const float *)c->data)[j * st->c_cs];
    }
    if (status == TSR_OK)
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_DST, &y_md, TSR_DNNL_FROM_OUTPUT, 0, NULL);
    if (status != TSR_OK) {
        dnnl_primitive_desc_destroy(pd);
        return status;
    }
    return tsr_dnnl_exec_finish(e, pd, "matmul");
}

/* The matrix-vector path's parameters, when the product is one it fits:
 * no batch, A unit-strided along K, B dense in either order. */
static bool matvec_plan(const tsr_graph *g, const tsr_node *node, const mm_shape *s,
                        tsr_cpu_matvec *mv)
{
    int r = s->rank;
    for (int i = 0; i < r - 2; i++)
        if (s->a_dims[i] != 1 || s->b_dims[i] != 1)
            return false;
    int64_t m = s->a_dims[r - 2], k = s->a_dims[r - 1], n = s->b_dims[r - 1];
    bool nn = s->b_strides[r - 2] == n && s->b_strides[r - 1] == 1;
    bool nt = s->b_strides[r - 2] == 1 && s->b_strides[r - 1] == k;
    if (s->a_strides[r - 1] != 1 || !(nn || nt) || !tsr_cpu_matvec_fits(m, k, n))
        return false;
    *mv = (tsr_cpu_matvec){.m = m,
                           .k = k,
                           .n = n,
                           .lda = s->a_strides[r - 2],
                           .trans_b = !nn,
                           .has_c = s->c_input >= 0,
                           .alpha = s->alpha,
                           .beta = s->beta,
                           .isa = tsr_cpu_isa()};
    if (mv->has_c)
        c_strides(&g->values[node->inputs[s->c_input]], &mv->c_rs, &mv->c_cs);
    return true;
}

static void matmul_clear(matmul_state *st)
{
    tsr_dnnl_exec_release(&st->convert.exec);
    tsr_dnnl_exec_release(&st->exec);
    st->convert.active = false;
}

tsr_status tsr_dnnl_matmul_prepare(const tsr_prepare_ctx *ctx, void **state_out)
{
    mm_shape s = {0};
    if (ctx->node->op == &tsr_op_Gemm)
        gemm_shape(ctx->graph, ctx->node, &s);
    else
        matmul_shape(ctx->graph, ctx->node, &s);
    matmul_state *st = tsr_calloc(1, sizeof *st);
    if (!st)
        return TSR_ERR_OUT_OF_MEMORY;
    /* bf16 needs B prepacked: a B that changes per run stays f32. */
    bool bf16 = tsr_dnnl_use_bf16(ctx) && ctx->graph->values[ctx->node->inputs[1]].data;
    st->use_matvec = !bf16 && matvec_plan(ctx->graph, ctx->node, &s, &st->matvec);
    if (st->use_matvec) {
        *state_out = st;
        return TSR_OK;
    }
    tsr_status status = matmul_build(ctx, st, &s, bf16);
    if (status == TSR_ERR_UNSUPPORTED && bf16) {
        matmul_clear(st);
        status = matmul_build(ctx, st, &s, false);
    }
    if (status != TSR_OK) {
        tsr_dnnl_matmul_release(st);
        return status;
    }
    *state_out = st;
    return TSR_OK;
}

tsr_status tsr_dnnl_matmul_run(void *state, const tsr_kernel_ctx *k)
{
    matmul_state *st = state;
    float *y = k->outputs[0]->data;
    const float *c = st->copy_c || st->matvec.has_c ? k->inputs[2]->data : NULL;
    if (st->use_matvec) {
        /* C in Y's buffer (dnnl_inplace_input): the slices overwrite Y
         * before the epilogue reads C, so it reads a copy (a few rows). */
        float *saved = NULL;
        if (c && c == y) {
            size_t bytes = (size_t)(st->matvec.m * st->matvec.n) * sizeof(float);
            if (!(saved = tsr_malloc(bytes)))
                return TSR_ERR_OUT_OF_MEMORY;
            c = memcpy(saved, c, bytes);
        }
        tsr_cpu_matvec_run(&st->matvec, k->inputs[0]->data, k->inputs[1]->data, c, y, k->threads);
        free(saved);
        return TSR_OK;
    }
    if (st->convert.active)
        TSR_CHECK(tsr_dnnl_exec_run(&st->convert.exec, k));
    /* C into Y for the sum post-op, unless Y took over C's buffer. */
    if (st->copy_c && c != y) {
        if (st->c_rs == st->n && st->c_cs == 1) {
            memcpy(y, c, (size_t)(st->m * st->n) * sizeof(float));
        } else {
            for (int64_t i = 0; i < st->m; i++)
                for (int64_t j = 0; j < st->n; j++)
                    y[i * st->n + j] = c[i * st->c_rs + j * st->c_cs];
        }
    }
    return tsr_dnnl_exec_run(&st->exec, k);
}

const char *tsr_dnnl_matmul_kernel_name(const void *state)
{
    const matmul_state *st = state;
    return st->use_matvec ? "cpu:matvec" : st->exec.impl;
}

void tsr_dnnl_matmul_release(void *state)
{
    matmul_state *st = state;
    matmul_clear(st);
    free(st);
}
