/* The cpu backend called directly on blocked buffers: each kernel's
 * result against the op's reference kernel, and the padded lanes of the
 * last channel block, which no plain view shows, must come out zero (the
 * output buffer starts as garbage). Reorders round-trip exactly. */
#include "backends/cpu/cpu.h"
#include "backends/cpu/matvec.h"
#include "harness.h"
#include "isa_skip.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *op;
    int n_attrs;
    tsr_attr attrs[3];
    int n_consts;    /* constant inputs after x: scalars or per-channel vectors */
    float consts[4]; /* value of each (per-channel ones get value + 0.1 * c) */
    bool per_channel[4];
    bool second_x;      /* a second full-shape input (Div x / x2) */
    bool dy_pooled;     /* the second input is [n, c, 4, 5], a 3x3/2 pool's output (MaxPoolGrad) */
    bool plain_out;     /* the output is plain whatever the input's layout (global pools) */
    const char *domain; /* NULL: ONNX's */
    bool x_second;      /* the constant comes first: const OP x */
} op_case;

static uint32_t rng_state = 12345;
static float rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* Runs `oc` on x [n, c, h, w] through the cpu backend in `layout` and
 * through the reference kernel, and compares. */
static void run_case(const op_case *oc, int64_t n, int64_t c, int64_t h, int64_t w,
                     tsr_layout layout)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    int64_t dims[4] = {n, c, h, w};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 4, dims, NULL));
    int64_t dy_dims[4] = {n, c, 4, 5};
    if (oc->second_x)
        CHECK_OK(
            tsr_graph_add_input(g, "x2", TSR_FLOAT32, 4, oc->dy_pooled ? dy_dims : dims, NULL));
    const char *names[6] = {"x"};
    int n_in = 1;
    if (oc->second_x)
        names[n_in++] = "x2";
    char cname[4][16];
    float *cdata[4] = {0};
    for (int i = 0; i < oc->n_consts; i++) {
        int64_t len = oc->per_channel[i] ? c : 1;
        cdata[i] = malloc(sizeof(float) * (size_t)len);
        for (int64_t k = 0; k < len; k++)
            cdata[i][k] = oc->consts[i] + 0.1f * (float)k;
        /* BatchNormalization takes [C]; a broadcast operand [C, 1, 1]. */
        bool bn = strcmp(oc->op, "BatchNormalization") == 0;
        tsr_tensor t = {.dtype = TSR_FLOAT32,
                        .rank = bn || len == 1 ? 1 : 3,
                        .dims = {len, 1, 1},
                        .data = cdata[i]};
        snprintf(cname[i], sizeof cname[i], "k%d", i);
        CHECK_OK(tsr_graph_add_constant(g, cname[i], &t));
        names[n_in++] = cname[i];
    }
    if (oc->x_second) {
        names[0] = names[1];
        names[1] = "x";
    }
    CHECK_OK(tsr_graph_add_node(g, oc->op, oc->domain ? oc->domain : "", "node", n_in, names, 1,
                                (const char *[]){"y"}, oc->n_attrs, oc->attrs));
    const tsr_node *node = &g->nodes[g->n_nodes - 1];
    tsr_tensor y_desc = tsr_value_tensor(&g->values[node->outputs[0]]);

    /* Plain inputs, and their blocked copies for the full-shape ones. */
    tsr_tensor in_plain[6], in_blocked[6];
    tsr_layout out_layout = oc->plain_out ? TSR_LAYOUT_PLAIN : layout;
    uint8_t in_layouts[6] = {0}, out_layouts[1] = {(uint8_t)out_layout};
    for (int i = 0; i < node->n_inputs; i++) {
        const tsr_value *v = &g->values[node->inputs[i]];
        in_plain[i] = tsr_value_tensor(v);
        in_blocked[i] = in_plain[i];
        if (v->data)
            continue;
        int64_t count = tsr_tensor_numel(&in_plain[i]);
        float *p = malloc(sizeof(float) * (size_t)count);
        for (int64_t k = 0; k < count; k++)
            p[k] = i == 0 || !oc->second_x ? 3.0f * rnd() : 0.5f + fabsf(rnd());
        in_plain[i].data = p;
        in_blocked[i].data = tsr_aligned_alloc(tsr_layout_bytes(&in_plain[i], layout));
        CHECK_OK(
            tsr_backend_cpu.reorder(&in_plain[i], TSR_LAYOUT_PLAIN, &in_blocked[i], layout, 2));
        in_layouts[i] = (uint8_t)layout;
    }

    char why[256] = "";
    bool ok = tsr_backend_cpu.supports(g, node, why, sizeof why);
    CHECK(ok);
    if (!ok)
        fprintf(stderr, "  %s refused: %s\n", oc->op, why);
    void *state = NULL;
    tsr_prepare_ctx pc = {.graph = g,
                          .node = node,
                          .input_layouts = in_layouts,
                          .output_layouts = out_layouts,
                          .threads = 2};
    CHECK_OK(tsr_backend_cpu.prepare(&pc, &state));

    size_t y_bytes = tsr_layout_bytes(&y_desc, out_layout);
    tsr_tensor y_blocked = y_desc, y_plain = y_desc, y_ref = y_desc;
    y_blocked.data = tsr_aligned_alloc(y_bytes);
    memset(y_blocked.data, 0x7f, y_bytes); /* garbage: 3.4e38 everywhere */
    y_plain.data = malloc(tsr_tensor_bytes(&y_desc));
    y_ref.data = malloc(tsr_tensor_bytes(&y_desc));

    tsr_kernel_ctx k = {.node = node, .n_inputs = node->n_inputs, .n_outputs = 1, .threads = 2};
    for (int i = 0; i < node->n_inputs; i++) {
        k.inputs[i] = &in_blocked[i];
        k.input_layouts[i] = in_layouts[i];
    }
    k.outputs[0] = &y_blocked;
    k.output_layouts[0] = (uint8_t)out_layout;
    CHECK_OK(tsr_backend_cpu.run(state, &k));
    tsr_backend_cpu.release(state);

    /* Padded lanes of the last block of every image and pixel are zero. */
    int b = tsr_layout_block(out_layout);
    int64_t cbs = (c + b - 1) / b, pixels = y_desc.dims[2] * y_desc.dims[3];
    const float *yb = y_blocked.data;
    int bad = 0;
    for (int64_t img = 0; img < n; img++)
        for (int64_t p = 0; p < pixels; p++)
            for (int64_t l = c - (cbs - 1) * b; l < b; l++)
                bad += yb[((img * cbs + cbs - 1) * pixels + p) * b + l] != 0.0f;
    CHECK(bad == 0);

    tsr_kernel_ctx rk = {.node = node, .n_inputs = node->n_inputs, .n_outputs = 1, .threads = 1};
    for (int i = 0; i < node->n_inputs; i++)
        rk.inputs[i] = &in_plain[i];
    rk.outputs[0] = &y_ref;
    CHECK_OK(node->op->ref(&rk));
    CHECK_OK(tsr_backend_cpu.reorder(&y_blocked, out_layout, &y_plain, TSR_LAYOUT_PLAIN, 2));
    const float *got = y_plain.data, *want = y_ref.data;
    float scale = 0.0f;
    for (int64_t i = 0; i < tsr_tensor_numel(&y_desc); i++)
        if (isfinite(want[i]))
            scale = fmaxf(scale, fabsf(want[i]));
    int wrong = 0;
    for (int64_t i = 0; i < tsr_tensor_numel(&y_desc); i++)
        if (got[i] != want[i] &&
            !(fabsf(got[i] - want[i]) <= 1e-6f * fabsf(want[i]) + 1e-6f * scale) && wrong++ == 0)
            fprintf(stderr, "  element %lld: %g, expected %g\n", (long long)i, got[i], want[i]);
    CHECK(wrong == 0);
    if (bad || wrong)
        fprintf(stderr, "  %s [%lld,%lld,%lld,%lld] %s: %d padded lanes nonzero, %d wrong\n",
                oc->op, (long long)n, (long long)c, (long long)h, (long long)w,
                tsr_layout_name(layout), bad, wrong);

    for (int i = 0; i < node->n_inputs; i++)
        if (!g->values[node->inputs[i]].data) {
            free(in_plain[i].data);
            tsr_aligned_free(in_blocked[i].data);
        }
    for (int i = 0; i < oc->n_consts; i++)
        free(cdata[i]);
    tsr_aligned_free(y_blocked.data);
    free(y_plain.data);
    free(y_ref.data);
    tsr_graph_destroy(g);
}

static void test_kernels(void)
{
    static const int64_t kernel3[] = {3, 3}, stride2[] = {2, 2}, pads1[] = {1, 1, 1, 1};
    const op_case cases[] = {
        {"Sigmoid"},
        {"Exp"},
        {"Tanh"},
        {"HardSigmoid", 2, {TSR_ATTR_F("alpha", 0.2), TSR_ATTR_F("beta", 0.5)}},
        {"Clip", 0, .n_consts = 2, .consts = {0.5f, 2.0f}},
        {"Relu"},
        {"Div", .second_x = true},
        {"Add", .n_consts = 1, .consts = {0.75f}},
        {"Div", .n_consts = 1, .consts = {1.5f}, .per_channel = {true}, .x_second = true},
        {"Sub", .n_consts = 1, .consts = {0.25f}, .per_channel = {true}},
        {"BatchNormalization", .n_consts = 4, .consts = {1.0f, 0.5f, -0.2f, 0.8f},
         .per_channel = {true, true, true, true}},
        {"MaxPool",
         3,
         {TSR_ATTR_INTS("kernel_shape", kernel3, 2), TSR_ATTR_INTS("strides", stride2, 2),
          TSR_ATTR_INTS("pads", pads1, 4)}},
        {"AveragePool",
         3,
         {TSR_ATTR_INTS("kernel_shape", kernel3, 2), TSR_ATTR_INTS("strides", stride2, 2),
          TSR_ATTR_INTS("pads", pads1, 4)}},
        {"MaxPoolGrad",
         3,
         {TSR_ATTR_INTS("kernel_shape", kernel3, 2), TSR_ATTR_INTS("strides", stride2, 2),
          TSR_ATTR_INTS("pads", pads1, 4)},
         .second_x = true,
         .dy_pooled = true,
         .domain = "ai.tessera"},
        {"GlobalAveragePool", .plain_out = true},
        {"GlobalMaxPool", .plain_out = true},
    };
    const int64_t channels[] = {1, 3, 13, 24, 33};
    const char *env = getenv("TSR_CPU_ISA");
    char saved[32] = "";
    if (env)
        snprintf(saved, sizeof saved, "%s", env);
    tsr_isa top = tsr_cpu_isa();
    for (int level = TSR_ISA_PORTABLE; level <= TSR_ISA_SVE; level++) {
        if (tsr_isa_skip("test_cpu_kernels", (tsr_isa)level, top))
            continue;
        setenv("TSR_CPU_ISA", tsr_cpu_isa_name((tsr_isa)level), 1);
        /* The kernels prepared below really take this level's path. */
        CHECK(tsr_cpu_isa() == (tsr_isa)level);
        for (size_t o = 0; o < sizeof cases / sizeof *cases; o++)
            for (size_t ci = 0; ci < sizeof channels / sizeof *channels; ci++)
                for (tsr_layout l = TSR_LAYOUT_PLAIN; l <= TSR_LAYOUT_BLOCKED16; l++)
                    run_case(&cases[o], 1 + (int64_t)ci % 2, channels[ci], 7, 9, l);
    }
    if (env)
        setenv("TSR_CPU_ISA", saved, 1);
    else
        unsetenv("TSR_CPU_ISA");
}

/* The matrix-vector tile of `level` (kernels_matvec.c) against Gemm's
 * reference kernel: y = 0.5 A op(B) + 2 C, A [m, k], B [k, n] or (trans_b)
 * [n, k], C [n]; k and n odd, so that rows and column slices end in
 * partial vectors. */
static void run_matvec(tsr_isa level, int64_t m, int64_t k, int64_t n, bool trans_b)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    int64_t ad[2] = {m, k}, bd[2] = {trans_b ? n : k, trans_b ? k : n}, cd[1] = {n};
    CHECK_OK(tsr_graph_add_input(g, "a", TSR_FLOAT32, 2, ad, NULL));
    CHECK_OK(tsr_graph_add_input(g, "b", TSR_FLOAT32, 2, bd, NULL));
    CHECK_OK(tsr_graph_add_input(g, "c", TSR_FLOAT32, 1, cd, NULL));
    tsr_attr attrs[3] = {TSR_ATTR_I("transB", trans_b), TSR_ATTR_F("alpha", 0.5),
                         TSR_ATTR_F("beta", 2.0)};
    CHECK_OK(tsr_graph_add_node(g, "Gemm", "", "gemm", 3, (const char *[]){"a", "b", "c"}, 1,
                                (const char *[]){"y"}, 3, attrs));
    const tsr_node *node = &g->nodes[g->n_nodes - 1];
    tsr_tensor t[4];
    for (int i = 0; i < 3; i++) {
        t[i] = tsr_value_tensor(&g->values[node->inputs[i]]);
        int64_t count = tsr_tensor_numel(&t[i]);
        float *p = malloc(sizeof(float) * (size_t)count);
        for (int64_t e = 0; e < count; e++)
            p[e] = rnd();
        t[i].data = p;
    }
    t[3] = tsr_value_tensor(&g->values[node->outputs[0]]);
    float *want = malloc(sizeof(float) * (size_t)(m * n)),
          *got = malloc(sizeof(float) * (size_t)(m * n));
    t[3].data = want;
    tsr_kernel_ctx rk = {.node = node,
                         .n_inputs = 3,
                         .n_outputs = 1,
                         .threads = 1,
                         .inputs = {&t[0], &t[1], &t[2]},
                         .outputs = {&t[3]}};
    CHECK_OK(node->op->ref(&rk));
    tsr_cpu_matvec p = {.m = m,
                        .k = k,
                        .n = n,
                        .lda = k,
                        .trans_b = trans_b,
                        .has_c = true,
                        .alpha = 0.5f,
                        .beta = 2.0f,
                        .c_rs = 0,
                        .c_cs = 1,
                        .isa = level};
    tsr_cpu_matvec_run(&p, t[0].data, t[1].data, t[2].data, got, 2);
    int wrong = 0;
    for (int64_t i = 0; i < m * n; i++)
        if (!(fabsf(got[i] - want[i]) <= 1e-5f * (float)k) && wrong++ == 0)
            fprintf(stderr, "  matvec %s m=%lld k=%lld n=%lld trans_b=%d: y[%lld] = %g, want %g\n",
                    tsr_cpu_isa_name(level), (long long)m, (long long)k, (long long)n, trans_b,
                    (long long)i, got[i], want[i]);
    CHECK(wrong == 0);
    for (int i = 0; i < 3; i++)
        free(t[i].data);
    free(want);
    free(got);
    tsr_graph_destroy(g);
}

static void test_matvec(void)
{
    const int64_t ks[] = {1, 7, 37, 130}, ns[] = {1, 5, 33, 70};
    tsr_isa top = tsr_cpu_isa();
    for (int level = TSR_ISA_PORTABLE; level <= TSR_ISA_SVE; level++) {
        if (tsr_isa_skip("test_cpu_kernels matvec", (tsr_isa)level, top))
            continue;
        for (int64_t m = 1; m <= TSR_MATVEC_MAX_M; m++)
            for (int ki = 0; ki < 4; ki++)
                for (int ni = 0; ni < 4; ni++)
                    for (int tb = 0; tb < 2; tb++)
                        run_matvec((tsr_isa)level, m, ks[ki], ns[ni], tb);
    }
}

static void test_reorders(void)
{
    tsr_tensor x = {.dtype = TSR_FLOAT32, .rank = 4, .dims = {3, 13, 5, 7}};
    int64_t count = tsr_tensor_numel(&x);
    float *p = malloc(sizeof(float) * (size_t)count), *back = malloc(sizeof(float) * (size_t)count);
    for (int64_t i = 0; i < count; i++)
        p[i] = (float)i;
    x.data = p;
    tsr_tensor b8 = x, b16 = x, out = x;
    b8.data = tsr_aligned_alloc(tsr_layout_bytes(&x, TSR_LAYOUT_BLOCKED8));
    b16.data = tsr_aligned_alloc(tsr_layout_bytes(&x, TSR_LAYOUT_BLOCKED16));
    out.data = back;
    CHECK_OK(tsr_backend_cpu.reorder(&x, TSR_LAYOUT_PLAIN, &b8, TSR_LAYOUT_BLOCKED8, 2));
    /* [n=1, c=9] sits in block 1, lane 1, of image 1. */
    const float *q = b8.data;
    CHECK(q[((1 * 2 + 1) * 35 + 4) * 8 + 1] == p[(1 * 13 + 9) * 35 + 4]);
    CHECK(q[((0 * 2 + 1) * 35 + 4) * 8 + 6] == 0.0f);
    CHECK_OK(tsr_backend_cpu.reorder(&b8, TSR_LAYOUT_BLOCKED8, &b16, TSR_LAYOUT_BLOCKED16, 2));
    CHECK(((const float *)b16.data)[(1 * 35 + 4) * 16 + 15] == 0.0f);
    CHECK_OK(tsr_backend_cpu.reorder(&b16, TSR_LAYOUT_BLOCKED16, &out, TSR_LAYOUT_PLAIN, 2));
    CHECK(memcmp(p, back, sizeof(float) * (size_t)count) == 0);
    tsr_aligned_free(b8.data);
    tsr_aligned_free(b16.data);
    free(p);
    free(back);
}

int main(void)
{
    test_reorders();
    test_kernels();
    test_matvec();
    return tsr_test_summary("test_cpu_kernels");
}
