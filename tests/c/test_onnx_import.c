/* The ONNX importer on models encoded here by hand, byte by byte, so that
 * the test does not share the importer's protobuf code: a model that loads
 * and runs, every truncation of it, byte corruptions, and models that must
 * be refused with a clear message. Run under ASan it also checks that no
 * failure leaks or touches freed memory. */
#include "harness.h"
#include "tessera.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A growable protobuf writer: just the wire format's varints, tags and
 * length-delimited fields. */
typedef struct pb {
    unsigned char *data;
    size_t len, cap;
} pb;

static void pb_raw(pb *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *grown = realloc(b->data, cap);
        if (!grown) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
}

static void pb_varint(pb *b, uint64_t v)
{
    unsigned char byte;
    do {
        byte = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            byte |= 0x80;
        pb_raw(b, &byte, 1);
    } while (v);
}

static void pb_int(pb *b, int field, int64_t v)
{
    pb_varint(b, (uint64_t)field << 3);
    pb_varint(b, (uint64_t)v);
}

static void pb_bytes(pb *b, int field, const void *data, size_t n)
{
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, n);
    pb_raw(b, data, n);
}

static void pb_str(pb *b, int field, const char *s)
{
    pb_bytes(b, field, s, strlen(s));
}

/* Appends `sub` as a nested message and frees it. */
static void pb_msg(pb *b, int field, pb *sub)
{
    pb_bytes(b, field, sub->data, sub->len);
    free(sub->data);
    *sub = (pb){0};
}

static pb opset(const char *domain, int64_t version)
{
    pb o = {0};
    pb_str(&o, 1, domain);
    pb_int(&o, 2, version);
    return o;
}

/* ValueInfoProto of a float tensor; a NULL entry of `params` is dims[i]. */
static pb value_info(const char *name, int rank, const int64_t *dims, const char *const *params)
{
    pb shape = {0}, tensor = {0}, type = {0}, vi = {0};
    for (int i = 0; i < rank; i++) {
        pb dim = {0};
        if (params && params[i])
            pb_str(&dim, 2, params[i]);
        else
            pb_int(&dim, 1, dims[i]);
        pb_msg(&shape, 1, &dim);
    }
    pb_int(&tensor, 1, TSR_FLOAT32);
    pb_msg(&tensor, 2, &shape);
    pb_msg(&type, 1, &tensor);
    pb_str(&vi, 1, name);
    pb_msg(&vi, 2, &type);
    return vi;
}

static pb node(const char *op, const char *name, const char *in0, const char *in1, const char *out)
{
    pb n = {0};
    pb_str(&n, 1, in0);
    if (in1)
        pb_str(&n, 1, in1);
    pb_str(&n, 2, out);
    pb_str(&n, 3, name);
    pb_str(&n, 4, op);
    return n;
}

static const float weight[3] = {0.5f, -1.25f, 2.0f};

/* y = LeakyRelu(x, alpha=0.125) + w, x: float[batch, 3], w: raw float[3];
 * plus an unused int64 initializer given through int64_data. */
static pb build_model(int64_t opset_version, const char *op)
{
    pb graph = {0}, sub = {0};
    sub = node(op, "act", "x", NULL, "a");
    pb attr = {0};
    pb_str(&attr, 1, "alpha");
    float alpha = 0.125f;
    unsigned char le[4];
    memcpy(le, &alpha, 4); /* the tests run on little-endian hosts */
    pb_varint(&attr, 2 << 3 | 5);
    pb_raw(&attr, le, 4);
    pb_int(&attr, 20, 1); /* AttributeProto.FLOAT */
    pb_msg(&sub, 5, &attr);
    pb_msg(&graph, 1, &sub);
    sub = node("Add", "add", "a", "w", "y");
    pb_msg(&graph, 1, &sub);
    pb_str(&graph, 2, "hand_made");

    pb w = {0};
    pb_int(&w, 1, 3);
    pb_int(&w, 2, TSR_FLOAT32);
    pb_str(&w, 8, "w");
    pb_bytes(&w, 9, weight, sizeof weight);
    pb_msg(&graph, 5, &w);
    pb unused = {0}, packed = {0};
    pb_int(&unused, 1, 2);
    pb_int(&unused, 2, TSR_INT64);
    pb_varint(&packed, 7);
    pb_varint(&packed, 9);
    pb_msg(&unused, 7, &packed);
    pb_str(&unused, 8, "unused");
    pb_msg(&graph, 5, &unused);

    const int64_t dims[2] = {0, 3};
    const char *params[2] = {"batch", NULL};
    sub = value_info("x", 2, dims, params);
    pb_msg(&graph, 11, &sub);
    sub = value_info("y", 2, dims, params);
    pb_msg(&graph, 12, &sub);

    pb model = {0};
    pb_int(&model, 1, 8);
    pb_str(&model, 2, "test_onnx_import");
    pb_msg(&model, 7, &graph);
    sub = opset("", opset_version);
    pb_msg(&model, 8, &sub);
    return model;
}

static void test_load_and_run(void)
{
    pb model = build_model(17, "LeakyRelu");
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_load_onnx_buffer(model.data, model.len, NULL, &g));
    free(model.data);
    if (!g)
        return;
    CHECK(tsr_graph_num_inputs(g) == 1 && tsr_graph_num_outputs(g) == 1);
    tsr_value_info info;
    CHECK_OK(tsr_graph_input_info(g, 0, &info));
    CHECK(strcmp(info.name, "x") == 0 && info.rank == 2 && info.dims[0] == -1 &&
          info.dim_names[0] && strcmp(info.dim_names[0], "batch") == 0 && info.dims[1] == 3);
    tsr_graph_stats stats;
    CHECK_OK(tsr_graph_get_stats(g, &stats));
    CHECK(stats.n_nodes == 2 && stats.n_parameters == 3); /* the unused int64 is gone */

    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = "ref";
    opts.threads = 1;
    tsr_plan *plan = NULL;
    CHECK_OK(tsr_plan_create(g, &opts, &plan));
    tsr_graph_destroy(g);
    if (!plan)
        return;
    float x[4][3], y[4][3];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            x[i][j] = (float)(i * 3 + j) * 0.75f - 4.0f;
    tsr_tensor in = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {4, 3}, .data = x};
    tsr_tensor out = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {4, 3}, .data = y};
    CHECK_OK(tsr_plan_run(plan, 1, &in, 1, &out));
    double worst = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) {
            double v = x[i][j];
            double want = (v >= 0 ? v : 0.125 * v) + weight[j];
            worst = fmax(worst, fabs(want - y[i][j]));
        }
    CHECK(worst < 1e-6);
    tsr_plan_destroy(plan);
}

static void test_every_truncation_fails(void)
{
    pb model = build_model(17, "LeakyRelu");
    int clean = 0;
    for (size_t cut = 0; cut < model.len; cut++) {
        tsr_graph *g = (tsr_graph *)&model; /* must be reset to NULL */
        tsr_status st = tsr_graph_load_onnx_buffer(model.data, cut, NULL, &g);
        /* a cut between fields leaves a valid message that lacks the rest */
        const char *msg = tsr_last_error();
        clean += st == TSR_ERR_PARSE && g == NULL &&
                 (strstr(msg, "not an ONNX model") || strstr(msg, "opset_import does not list"));
        if (st == TSR_OK)
            tsr_graph_destroy(g);
    }
    CHECK(clean == (int)model.len);
    free(model.data);
}

/* Any corruption either loads or fails with a message; never a crash. */
static void test_corrupted_bytes(void)
{
    pb model = build_model(17, "LeakyRelu");
    unsigned char *copy = malloc(model.len);
    const unsigned char masks[] = {0x01, 0x40, 0x7f, 0x80, 0xff};
    int failures_without_message = 0;
    for (size_t pos = 0; copy && pos < model.len; pos++)
        for (size_t k = 0; k < sizeof masks; k++) {
            memcpy(copy, model.data, model.len);
            copy[pos] ^= masks[k];
            tsr_graph *g = NULL;
            tsr_status st = tsr_graph_load_onnx_buffer(copy, model.len, NULL, &g);
            if (st == TSR_OK)
                tsr_graph_destroy(g);
            else
                failures_without_message += g != NULL || !*tsr_last_error();
        }
    CHECK(failures_without_message == 0);
    free(copy);
    free(model.data);
}

static void expect_refusal(pb model, tsr_status want, const char *needle1, const char *needle2)
{
    tsr_graph *g = NULL;
    tsr_status st = tsr_graph_load_onnx_buffer(model.data, model.len, NULL, &g);
    free(model.data);
    CHECK(st == want && g == NULL);
    CHECK(strstr(tsr_last_error(), needle1) != NULL);
    CHECK(strstr(tsr_last_error(), needle2) != NULL);
    if (st != want || !strstr(tsr_last_error(), needle1) || !strstr(tsr_last_error(), needle2))
        fprintf(stderr, "  message was: %s\n", tsr_last_error());
    tsr_graph_destroy(g);
}

static void test_refusals(void)
{
    expect_refusal(build_model(10, "LeakyRelu"), TSR_ERR_UNSUPPORTED, "opset 10", "11 to 21");
    expect_refusal(build_model(22, "LeakyRelu"), TSR_ERR_UNSUPPORTED, "opset 22", "11 to 21");
    expect_refusal(build_model(17, "NotAnOp"), TSR_ERR_UNSUPPORTED, "'NotAnOp'", "'act'");

    pb text = {0};
    pb_raw(&text, "hello, world\n", 13);
    expect_refusal(text, TSR_ERR_PARSE, "not an ONNX model", "13 bytes");

    /* A node reading a value nobody defines. */
    pb graph = {0}, sub = node("Relu", "r", "ghost", NULL, "y"), model = {0};
    pb_msg(&graph, 1, &sub);
    const int64_t dims[1] = {3};
    sub = value_info("y", 1, dims, NULL);
    pb_msg(&graph, 12, &sub);
    pb_int(&model, 1, 8);
    pb_msg(&model, 7, &graph);
    sub = opset("", 13);
    pb_msg(&model, 8, &sub);
    expect_refusal(model, TSR_ERR_NOT_FOUND, "'r'", "'ghost'");

    tsr_graph *g = (tsr_graph *)&graph;
    CHECK_FAILS(tsr_graph_load_onnx_buffer(NULL, 0, NULL, &g), TSR_ERR_PARSE, "empty");
    CHECK(g == NULL);
    CHECK(tsr_graph_load_onnx_file("/nonexistent/model.onnx", &g) == TSR_ERR_IO && g == NULL);
    CHECK(strstr(tsr_last_error(), "/nonexistent/model.onnx") != NULL);
}

int main(void)
{
    test_load_and_run();
    test_every_truncation_fails();
    test_corrupted_bytes();
    test_refusals();
    return tsr_test_summary("test_onnx_import");
}
