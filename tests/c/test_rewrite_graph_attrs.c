/* Rewrites keep graph-valued attributes: a node that a pass changes
 * (tsr_rewrite_change_node, as fold_batchnorm and fuse_conv do) copies
 * If's branches and Loop's body with its other attributes, and the graph
 * still plans and runs both after the passes. The If's cond and the Loop's
 * trip count are inputs, so both nodes stay whole until a plan's tail
 * knows them. */
#include "harness.h"
#include "ir/rewrite.h"
#include "passes/passes.h"
#include "tessera.h"

#include <math.h>
#include <stdlib.h>

static const int64_t three[] = {3};

/* A graph of one input x [3] and one node `op` on it, written to y. */
static tsr_graph *unary_graph(const char *op)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 1, three, NULL));
    CHECK_OK(tsr_graph_add_node(g, op, "", op, 1, (const char *[]){"x"}, 1, (const char *[]){"y"},
                                0, NULL));
    CHECK_OK(tsr_graph_add_output(g, "y"));
    return g;
}

/* A Loop body doubling its one loop-carried value, cond passed through. */
static tsr_graph *doubling_body(void)
{
    tsr_graph *b = NULL;
    CHECK_OK(tsr_graph_create(&b));
    CHECK_OK(tsr_graph_add_input(b, "i", TSR_INT64, 0, NULL, NULL));
    CHECK_OK(tsr_graph_add_input(b, "keep_going", TSR_BOOL, 0, NULL, NULL));
    CHECK_OK(tsr_graph_add_input(b, "acc", TSR_FLOAT32, 1, three, NULL));
    CHECK_OK(tsr_graph_add_node(b, "Identity", "", "pass", 1, (const char *[]){"keep_going"}, 1,
                                (const char *[]){"cond_out"}, 0, NULL));
    CHECK_OK(tsr_graph_add_node(b, "Add", "", "double", 2, (const char *[]){"acc", "acc"}, 1,
                                (const char *[]){"acc_out"}, 0, NULL));
    CHECK_OK(tsr_graph_add_output(b, "cond_out"));
    CHECK_OK(tsr_graph_add_output(b, "acc_out"));
    return b;
}

/* y = c ? -x : exp(x), z = x * 2^m. */
static tsr_graph *control_graph(void)
{
    tsr_graph *g = NULL, *then_g = unary_graph("Neg"), *else_g = unary_graph("Exp");
    tsr_graph *body = doubling_body();
    CHECK_OK(tsr_graph_create(&g));
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 1, three, NULL));
    CHECK_OK(tsr_graph_add_input(g, "c", TSR_BOOL, 0, NULL, NULL));
    CHECK_OK(tsr_graph_add_input(g, "m", TSR_INT64, 0, NULL, NULL));
    tsr_attr branches[] = {{.name = "then_branch", .type = TSR_ATTR_GRAPH, .graph = then_g},
                           {.name = "else_branch", .type = TSR_ATTR_GRAPH, .graph = else_g}};
    CHECK_OK(tsr_graph_add_node(g, "If", "", "branch", 2, (const char *[]){"c", "x"}, 1,
                                (const char *[]){"y"}, 2, branches));
    tsr_attr loop_body = {.name = "body", .type = TSR_ATTR_GRAPH, .graph = body};
    CHECK_OK(tsr_graph_add_node(g, "Loop", "", "loop", 3, (const char *[]){"m", "", "x"}, 1,
                                (const char *[]){"z"}, 1, &loop_body));
    CHECK_OK(tsr_graph_add_output(g, "y"));
    CHECK_OK(tsr_graph_add_output(g, "z"));
    tsr_graph_destroy(then_g);
    tsr_graph_destroy(else_g);
    tsr_graph_destroy(body);
    return g;
}

static int sub_graph_nodes(const tsr_node *n, const char *name)
{
    for (int a = 0; a < n->n_attrs; a++)
        if (strcmp(n->attrs[a].name, name) == 0)
            return n->attrs[a].graph ? n->attrs[a].graph->n_nodes : -1;
    return -1;
}

static void check_runs(const tsr_graph *g)
{
    tsr_compile_options opts = {.device = "ref", .threads = 1, .depth_first = -1, .autotune = -1};
    tsr_plan *plan = NULL;
    CHECK_OK(tsr_plan_create(g, &opts, &plan));
    if (!plan)
        return;
    float x[3] = {0.5f, -1.0f, 2.0f};
    for (int c = 0; c < 2; c++)
        for (int64_t m = 0; m < 4; m += 3) {
            uint8_t cv = (uint8_t)c;
            tsr_tensor ins[3] = {{.dtype = TSR_FLOAT32, .rank = 1, .dims = {3}, .data = x},
                                 {.dtype = TSR_BOOL, .rank = 0, .data = &cv},
                                 {.dtype = TSR_INT64, .rank = 0, .data = &m}};
            tsr_tensor outs[2] = {{.dtype = TSR_FLOAT32}, {.dtype = TSR_FLOAT32}};
            CHECK_OK(tsr_plan_run(plan, 3, ins, 2, outs));
            CHECK(outs[0].rank == 1 && outs[0].dims[0] == 3 && outs[1].rank == 1 &&
                  outs[1].dims[0] == 3);
            for (int i = 0; i < 3 && outs[0].data && outs[1].data; i++) {
                float y = ((const float *)outs[0].data)[i], z = ((const float *)outs[1].data)[i];
                CHECK(fabsf(y - (c ? -x[i] : expf(x[i]))) <= 1e-6f * fmaxf(1.0f, fabsf(y)));
                CHECK(z == x[i] * (float)(1 << m));
            }
        }
    tsr_plan_destroy(plan);
}

static void test_change_node_keeps_sub_graphs(void)
{
    tsr_graph *g = control_graph();
    CHECK(g->n_nodes == 2);
    for (int n = 0; n < g->n_nodes; n++) {
        tsr_node *node = &g->nodes[n];
        int inputs[TSR_MAX_NODE_IO];
        memcpy(inputs, node->inputs, (size_t)node->n_inputs * sizeof *inputs);
        CHECK_OK(
            tsr_rewrite_change_node(g, n, node->op, node->opset, node->n_inputs, inputs, 0, NULL));
    }
    CHECK(sub_graph_nodes(&g->nodes[0], "then_branch") == 1);
    CHECK(sub_graph_nodes(&g->nodes[0], "else_branch") == 1);
    CHECK(sub_graph_nodes(&g->nodes[1], "body") == 2);
    CHECK_OK(tsr_graph_verify(g));
    check_runs(g);
    tsr_graph_destroy(g);
}

static void test_passes_keep_sub_graphs(void)
{
    tsr_graph *g = control_graph();
    CHECK_OK(tsr_passes_run(g));
    CHECK_OK(tsr_graph_verify(g));
    check_runs(g);
    tsr_graph_destroy(g);
}

int main(void)
{
    test_change_node_keeps_sub_graphs();
    test_passes_keep_sub_graphs();
    return tsr_test_summary("test_rewrite_graph_attrs");
}
