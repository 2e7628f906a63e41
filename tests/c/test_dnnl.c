/* The oneDNN backend called directly on one-node graphs, against each
 * op's reference kernel: convolutions in every activation layout (the
 * blocked ones with their zero padding lanes checked), FusedConv's post-ops,
 * Gemm and MatMul, fp32 and bf16. */
#include "backends/cpu/cpu.h"
#include "harness.h"
#include "isa_skip.h"
#include "ir/graph.h"
#include "ops/op.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng_state = 12345u;

static float uniform(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

static float *random_data(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        p[i] = uniform();
    return p;
}

/* Round to nearest even bf16, as oneDNN's f32 -> bf16 reorders do. */
static float to_bf16(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* Plain NCHW <-> [N, ceil(C/b), H, W, b]; the blocked side's padding
 * lanes are written as zeros, and read back into *pad_nonzero. */
static void to_layout(const tsr_tensor *t, int b, float *dst)
{
    int64_t n = t->dims[0], c = t->dims[1], hw = t->dims[2] * t->dims[3], cb = (c + b - 1) / b;
    const float *src = t->data;
    memset(dst, 0, sizeof(float) * (size_t)(n * cb * b * hw));
    for (int64_t i = 0; i < n; i++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t p = 0; p < hw; p++)
                dst[((i * cb + ch / b) * hw + p) * b + ch % b] = src[(i * c + ch) * hw + p];
}

static void from_layout(const float *src, int b, tsr_tensor *t, bool *pad_nonzero)
{
    int64_t n = t->dims[0], c = t->dims[1], hw = t->dims[2] * t->dims[3], cb = (c + b - 1) / b;
    float *dst = t->data;
    for (int64_t i = 0; i < n; i++)
        for (int64_t ch = 0; ch < cb * b; ch++)
            for (int64_t p = 0; p < hw; p++) {
                float v = src[((i * cb + ch / b) * hw + p) * b + ch % b];
                if (ch < c)
                    dst[(i * c + ch) * hw + p] = v;
                else if (v != 0.0f)
                    *pad_nonzero = true;
            }
}

/* Runs the graph's single node on the dnnl backend and on its reference
 * kernel with the same random inputs; returns max |diff| / max |ref|. In
 * bf16, the reference sees the first two inputs (X and W, A and B) rounded
 * to bf16 as the backend does, so that the products agree exactly and the
 * sums up to f32 rounding: any difference means a wrong kernel. */
static double compare(tsr_graph *g, tsr_precision precision, bool *refused)
{
    const tsr_node *node = &g->nodes[g->n_nodes - 1];
    char why[256] = "";
    *refused = !tsr_backend_dnnl.supports(g, node, why, sizeof why);
    if (*refused) {
        fprintf(stderr, "refused: %s\n", why);
        return INFINITY;
    }
    uint8_t available[TSR_MAX_NODE_IO] = {0}, wanted[TSR_MAX_NODE_IO] = {0},
            produced[TSR_MAX_NODE_IO] = {0};
    if (tsr_backend_dnnl.layouts)
        tsr_backend_dnnl.layouts(g, node, available, wanted, produced);
    tsr_prepare_ctx pc = {.graph = g,
                          .node = node,
                          .input_layouts = wanted,
                          .output_layouts = produced,
                          .threads = 2,
                          .precision = precision};
    void *state = NULL;
    tsr_status st = tsr_backend_dnnl.prepare(&pc, &state);
    CHECK_OK(st);
    if (st != TSR_OK)
        return INFINITY;

    tsr_tensor plain_in[TSR_MAX_NODE_IO], fast_in[TSR_MAX_NODE_IO];
    tsr_tensor ref_rounded[TSR_MAX_NODE_IO] = {0};
    /* bf16 needs a prepacked (constant) W or B; else the node stays f32. */
    bool round_ab = precision == TSR_PRECISION_BF16 && g->values[node->inputs[1]].data;
    tsr_kernel_ctx ref = {.node = node, .n_inputs = node->n_inputs, .n_outputs = 1, .threads = 2};
    tsr_kernel_ctx fast = ref;
    for (int i = 0; i < node->n_inputs; i++) {
        if (node->inputs[i] < 0)
            continue;
        const tsr_value *v = &g->values[node->inputs[i]];
        plain_in[i] = tsr_value_tensor(v);
        plain_in[i].data = v->data ? v->data : random_data(tsr_tensor_numel(&plain_in[i]));
        fast_in[i] = plain_in[i];
        if (round_ab && i < 2) {
            int64_t count = tsr_tensor_numel(&plain_in[i]);
            float *rounded = malloc(sizeof(float) * (size_t)(count > 0 ? count : 1));
            for (int64_t e = 0; e < count; e++)
                rounded[e] = to_bf16(((const float *)plain_in[i].data)[e]);
            ref_rounded[i] = plain_in[i];
            ref_rounded[i].data = rounded;
        }
        int b = tsr_layout_block((tsr_layout)wanted[i]);
        if (b > 1) {
            fast_in[i].data = malloc(tsr_layout_bytes(&plain_in[i], (tsr_layout)wanted[i]));
            to_layout(&plain_in[i], b, fast_in[i].data);
        }
        ref.inputs[i] = ref_rounded[i].data ? &ref_rounded[i] : &plain_in[i];
        fast.inputs[i] = &fast_in[i];
        fast.input_layouts[i] = wanted[i];
    }
    tsr_tensor y_ref = tsr_value_tensor(&g->values[node->outputs[0]]);
    tsr_tensor y_fast = y_ref, y_back = y_ref;
    y_ref.data = malloc(tsr_tensor_bytes(&y_ref) + 4);
    y_back.data = malloc(tsr_tensor_bytes(&y_ref) + 4);
    /* NaN in the output buffer: the backend must write every element. */
    size_t fast_bytes = tsr_layout_bytes(&y_fast, (tsr_layout)produced[0]);
    y_fast.data = malloc(fast_bytes + 4);
    memset(y_fast.data, 0xff, fast_bytes);
    ref.outputs[0] = &y_ref;
    fast.outputs[0] = &y_fast;
    fast.output_layouts[0] = produced[0];

    CHECK_OK(node->op->ref(&ref));
    double worst = INFINITY;
    /* A second run reuses the state with another output buffer. */
    tsr_tensor y_first = y_fast;
    y_first.data = malloc(fast_bytes + 4);
    fast.outputs[0] = &y_first;
    CHECK_OK(st = tsr_backend_dnnl.run(state, &fast));
    fast.outputs[0] = &y_fast;
    if (st == TSR_OK)
        CHECK_OK(st = tsr_backend_dnnl.run(state, &fast));
    free(y_first.data);
    if (st == TSR_OK) {
        int b = tsr_layout_block((tsr_layout)produced[0]);
        bool pad_nonzero = false;
        if (b > 1)
            from_layout(y_fast.data, b, &y_back, &pad_nonzero);
        else
            memcpy(y_back.data, y_fast.data, tsr_tensor_bytes(&y_ref));
        CHECK(!pad_nonzero);
        double max_ref = 0.0, max_diff = 0.0;
        const float *r = y_ref.data, *f = y_back.data;
        for (int64_t i = 0; i < tsr_tensor_numel(&y_ref); i++) {
            max_ref = fmax(max_ref, fabs(r[i]));
            double d = fabs((double)r[i] - (double)f[i]);
            max_diff = isnan(f[i]) ? INFINITY : fmax(max_diff, d);
        }
        worst = max_diff / fmax(max_ref, 1e-30);
    }
    tsr_backend_dnnl.release(state);
    for (int i = 0; i < node->n_inputs; i++) {
        if (node->inputs[i] < 0)
            continue;
        if (fast_in[i].data != plain_in[i].data)
            free(fast_in[i].data);
        if (!g->values[node->inputs[i]].data)
            free(plain_in[i].data);
        free(ref_rounded[i].data);
    }
    free(y_ref.data);
    free(y_fast.data);
    free(y_back.data);
    return worst;
}

static void add_random_constant(tsr_graph *g, const char *name, int rank, const int64_t *dims)
{
    tsr_tensor t = {.dtype = TSR_FLOAT32, .rank = rank};
    memcpy(t.dims, dims, sizeof(int64_t) * (size_t)rank);
    t.data = random_data(tsr_tensor_numel(&t));
    CHECK_OK(tsr_graph_add_constant(g, name, &t));
    free(t.data);
}

typedef struct {
    int64_t n, c, h, w, m, kh, kw, group, stride, dilation, pad;
    bool bias, z;
    const char *act;
    double alpha, beta;
    const char *auto_pad;
} conv_case;

static tsr_graph *conv_graph(const conv_case *cc)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    int64_t xd[4] = {cc->n, cc->c, cc->h, cc->w};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 4, xd, NULL));
    int64_t wd[4] = {cc->m, cc->c / cc->group, cc->kh, cc->kw};
    add_random_constant(g, "w", 4, wd);
    if (cc->bias)
        add_random_constant(g, "b", 1, &cc->m);
    int64_t strides[2] = {cc->stride, cc->stride}, dil[2] = {cc->dilation, cc->dilation};
    int64_t pads[4] = {cc->pad, cc->pad + 1, cc->pad, cc->pad};
    tsr_attr attrs[8];
    int na = 0;
    attrs[na++] = TSR_ATTR_I("group", cc->group);
    attrs[na++] = TSR_ATTR_INTS("strides", strides, 2);
    attrs[na++] = TSR_ATTR_INTS("dilations", dil, 2);
    if (cc->auto_pad)
        attrs[na++] = TSR_ATTR_S("auto_pad", cc->auto_pad);
    else
        attrs[na++] = TSR_ATTR_INTS("pads", pads, 4);
    bool fused = cc->z || cc->act;
    if (cc->act) {
        attrs[na++] = TSR_ATTR_S("activation", cc->act);
        if (cc->alpha != 0.0)
            attrs[na++] = TSR_ATTR_F("activation_alpha", cc->alpha);
        if (cc->beta != 0.0)
            attrs[na++] = TSR_ATTR_F("activation_beta", cc->beta);
    }
    if (cc->z) {
        /* Z's shape is Y's: a plain Conv tells it. */
        CHECK_OK(tsr_graph_add_node(g, "Conv", "", "shape", cc->bias ? 3 : 2,
                                    (const char *[]){"x", "w", "b"}, 1, (const char *[]){"y0"},
                                    na - (cc->act ? 1 + (cc->alpha != 0) + (cc->beta != 0) : 0),
                                    attrs));
        const tsr_value *y0 = &g->values[tsr_graph_find_value(g, "y0")];
        CHECK_OK(tsr_graph_add_input(g, "z", TSR_FLOAT32, 4, y0->dims, NULL));
    }
    const char *ins[] = {"x", "w", cc->bias ? "b" : "", "z"};
    CHECK_OK(tsr_graph_add_node(g, fused ? "FusedConv" : "Conv", fused ? "ai.tessera" : "", "conv",
                                cc->z      ? 4
                                : cc->bias ? 3
                                           : 2,
                                ins, 1, (const char *[]){"y"}, na, attrs));
    CHECK_OK(tsr_graph_add_output(g, "y"));
    return g;
}

static void check_conv(const conv_case *cc, tsr_precision precision, double tol)
{
    tsr_graph *g = conv_graph(cc);
    bool refused;
    double err = compare(g, precision, &refused);
    CHECK(!refused);
    if (!(err <= tol))
        fprintf(stderr,
                "conv n%lld c%lld %lldx%lld m%lld k%lldx%lld g%lld s%lld d%lld p%lld b%d z%d "
                "act=%s layout=%s: error %g > %g\n",
                (long long)cc->n, (long long)cc->c, (long long)cc->h, (long long)cc->w,
                (long long)cc->m, (long long)cc->kh, (long long)cc->kw, (long long)cc->group,
                (long long)cc->stride, (long long)cc->dilation, (long long)cc->pad, cc->bias, cc->z,
                cc->act ? cc->act : "-", tsr_layout_name(tsr_cpu_layout()), err, tol);
    CHECK(err <= tol);
    tsr_graph_destroy(g);
}

static void test_conv(void)
{
    static const char *layouts[] = {"nChw16c", "nChw8c", "plain"};
    const conv_case cases[] = {
        {1, 3, 11, 9, 5, 3, 3, 1, 1, 1, 1, true, false, NULL, 0, 0, NULL},
        {3, 24, 7, 8, 33, 3, 3, 1, 2, 1, 1, false, false, NULL, 0, 0, NULL},
        {2, 33, 9, 7, 24, 1, 1, 1, 1, 1, 0, true, true, "Relu", 0, 0, NULL},
        {1, 24, 9, 9, 24, 3, 3, 24, 1, 1, 1, true, false, "Clip", 0.0, 6.0, NULL},
        {1, 24, 10, 9, 48, 3, 3, 24, 2, 1, 1, true, true, "HardSwish", 0, 0, NULL},
        {3, 10, 8, 8, 6, 3, 3, 2, 1, 2, 2, true, true, "LeakyRelu", 0.1, 0, NULL},
        {1, 5, 7, 7, 5, 5, 3, 1, 1, 1, 0, false, true, "Sigmoid", 0, 0, "SAME_UPPER"},
        {1, 16, 6, 6, 17, 3, 3, 1, 2, 1, 0, true, false, "HardSigmoid", 0.3, 0.4, "SAME_LOWER"},
        {2, 32, 5, 5, 16, 3, 3, 1, 1, 1, 1, true, false, "Tanh", 0, 0, NULL},
        {1, 16, 5, 6, 16, 3, 3, 1, 1, 1, 1, false, false, "LeakyRelu", 0, 0, NULL},
        {1, 16, 5, 6, 16, 3, 3, 1, 1, 1, 1, false, false, "HardSigmoid", 0, 0, NULL},
        {1, 16, 5, 6, 16, 3, 3, 1, 1, 1, 1, false, false, "Clip", -0.5, 0.25, NULL},
        {1, 4, 13, 13, 8, 7, 7, 1, 2, 1, 3, false, false, "Relu", 0, 0, NULL},
        {1, 32, 8, 8, 32, 3, 3, 1, 1, 1, 1, true, true, "Relu", 0, 0, NULL},
        {1, 32, 8, 8, 24, 3, 3, 1, 1, 1, 1, true, true, "Relu", 0, 0, NULL},
        {1, 24, 8, 8, 32, 3, 3, 1, 1, 1, 1, true, true, "Relu", 0, 0, NULL},
        {1, 24, 8, 8, 32, 1, 1, 1, 1, 1, 0, true, true, "", 0, 0, NULL},
        {1, 24, 8, 8, 24, 1, 1, 1, 1, 1, 0, true, false, "", 0, 0, NULL},
    };
    for (size_t l = 0; l < sizeof layouts / sizeof layouts[0]; l++) {
        setenv("TSR_CPU_LAYOUT", layouts[l], 1);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            check_conv(&cases[i], TSR_PRECISION_FP32, 1e-5);
    }
    unsetenv("TSR_CPU_LAYOUT");
    if (!tsr_bf16_skip("test_dnnl", "convolutions"))
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            check_conv(&cases[i], TSR_PRECISION_BF16, 1e-5);
}

static void test_refusals(void)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    int64_t xd[3] = {1, 2, 9}, wd[3] = {3, 2, 3};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 3, xd, NULL));
    add_random_constant(g, "w", 3, wd);
    CHECK_OK(tsr_graph_add_node(g, "Conv", "", NULL, 2, (const char *[]){"x", "w"}, 1,
                                (const char *[]){"y"}, 0, NULL));
    char why[256] = "";
    CHECK(!tsr_backend_dnnl.supports(g, &g->nodes[0], why, sizeof why));
    CHECK(strstr(why, "rank 3") != NULL);
    tsr_graph_destroy(g);

    CHECK_OK(tsr_graph_create(&g));
    int64_t x4[4] = {1, 2, 5, 5}, w4[4] = {3, 2, 3, 3};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT64, 4, x4, NULL));
    CHECK_OK(tsr_graph_add_input(g, "w", TSR_FLOAT64, 4, w4, NULL));
    CHECK_OK(tsr_graph_add_node(g, "Conv", "", NULL, 2, (const char *[]){"x", "w"}, 1,
                                (const char *[]){"y"}, 0, NULL));
    CHECK(!tsr_backend_dnnl.supports(g, &g->nodes[0], why, sizeof why));
    CHECK(strstr(why, "float64") != NULL);
    tsr_graph_destroy(g);
}

typedef struct {
    int64_t m, k, n;
    int ta, tb;
    double alpha, beta;
    int c_rank;
    int64_t c_dims[2];
    bool b_const, c_const;
} gemm_case;

static void check_gemm(const gemm_case *gc, tsr_precision precision, double tol)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    int64_t ad[2] = {gc->ta ? gc->k : gc->m, gc->ta ? gc->m : gc->k};
    int64_t bd[2] = {gc->tb ? gc->n : gc->k, gc->tb ? gc->k : gc->n};
    CHECK_OK(tsr_graph_add_input(g, "a", TSR_FLOAT32, 2, ad, NULL));
    if (gc->b_const)
        add_random_constant(g, "b", 2, bd);
    else
        CHECK_OK(tsr_graph_add_input(g, "b", TSR_FLOAT32, 2, bd, NULL));
    if (gc->c_rank >= 0 && gc->c_const)
        add_random_constant(g, "c", gc->c_rank, gc->c_dims);
    else if (gc->c_rank >= 0)
        CHECK_OK(tsr_graph_add_input(g, "c", TSR_FLOAT32, gc->c_rank, gc->c_dims, NULL));
    tsr_attr attrs[] = {TSR_ATTR_I("transA", gc->ta), TSR_ATTR_I("transB", gc->tb),
                        TSR_ATTR_F("alpha", gc->alpha), TSR_ATTR_F("beta", gc->beta)};
    CHECK_OK(tsr_graph_add_node(g, "Gemm", "", NULL, gc->c_rank >= 0 ? 3 : 2,
                                (const char *[]){"a", "b", "c"}, 1, (const char *[]){"y"}, 4,
                                attrs));
    bool refused;
    double err = compare(g, precision, &refused);
    if (!(err <= tol))
        fprintf(stderr, "gemm %lldx%lldx%lld ta%d tb%d alpha %g beta %g C rank %d: error %g\n",
                (long long)gc->m, (long long)gc->k, (long long)gc->n, gc->ta, gc->tb, gc->alpha,
                gc->beta, gc->c_rank, err);
    CHECK(err <= tol);
    tsr_graph_destroy(g);
}

static void test_gemm(void)
{
    const gemm_case cases[] = {
        {3, 17, 10, 0, 1, 1.0, 1.0, 1, {10}, true, true},
        {3, 17, 10, 0, 1, 2.0, 0.5, 2, {1, 10}, true, true},
        {1, 64, 1000, 0, 1, 1.0, 1.0, 1, {1000}, true, true},
        {5, 7, 9, 1, 0, 0.5, 2.0, 2, {5, 9}, true, true},
        {5, 7, 9, 1, 1, 1.5, -1.0, 2, {5, 1}, false, false},
        {4, 6, 3, 0, 0, 2.0, 0.5, 0, {0}, false, true},
        {4, 6, 3, 0, 0, 1.0, 1.0, 2, {1, 3}, true, false},
        {4, 6, 3, 1, 1, 1.0, 0.0, 2, {4, 3}, true, true},
        {2, 33, 8, 0, 0, 0.7, 1.0, -1, {0}, false, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_gemm(&cases[i], TSR_PRECISION_FP32, 1e-5);
    if (!tsr_bf16_skip("test_dnnl", "Gemm"))
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            check_gemm(&cases[i], TSR_PRECISION_BF16, 1e-5);
}

static void check_matmul(int ra, const int64_t *ad, int rb, const int64_t *bd, bool b_const,
                         tsr_precision precision, double tol)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    CHECK_OK(tsr_graph_add_input(g, "a", TSR_FLOAT32, ra, ad, NULL));
    if (b_const)
        add_random_constant(g, "b", rb, bd);
    else
        CHECK_OK(tsr_graph_add_input(g, "b", TSR_FLOAT32, rb, bd, NULL));
    CHECK_OK(tsr_graph_add_node(g, "MatMul", "", NULL, 2, (const char *[]){"a", "b"}, 1,
                                (const char *[]){"y"}, 0, NULL));
    bool refused;
    double err = compare(g, precision, &refused);
    if (!(err <= tol))
        fprintf(stderr, "matmul ranks %d x %d (B const %d): error %g\n", ra, rb, b_const, err);
    CHECK(err <= tol);
    tsr_graph_destroy(g);
}

static void test_matmul(void)
{
    const int64_t a2[] = {5, 7}, b2[] = {7, 3}, a3[] = {4, 5, 7}, b3[] = {4, 7, 3};
    const int64_t a4[] = {2, 1, 5, 7}, b4[] = {1, 3, 7, 6}, b31[] = {1, 7, 3}, v7[] = {7};
    for (int p = 0; p < 2; p++) {
        tsr_precision prec = p ? TSR_PRECISION_BF16 : TSR_PRECISION_FP32;
        if (p && tsr_bf16_skip("test_dnnl", "MatMul"))
            break;
        double tol = 1e-5;
        for (int c = 0; c < 2; c++) {
            check_matmul(2, a2, 2, b2, c, prec, tol);
            check_matmul(3, a3, 3, b3, c, prec, tol);
            check_matmul(3, a3, 2, b2, c, prec, tol);
            check_matmul(4, a4, 4, b4, c, prec, tol);
            check_matmul(3, a3, 3, b31, c, prec, tol);
            check_matmul(1, v7, 2, b2, c, prec, tol);
            check_matmul(3, a3, 1, v7, c, prec, tol);
        }
    }
}

int main(void)
{
    omp_set_num_threads(2);
    test_refusals();
    test_conv();
    test_gemm();
    test_matmul();
    return tsr_test_summary("test_dnnl");
}
