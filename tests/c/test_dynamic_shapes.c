/* Outputs sized by the data through the C API (docs/dynamic_shapes.md):
 * y = x[x > 0] by NonZero -> Transpose -> GatherND. tsr_plan_output_desc
 * says -1, the caller passes data NULL and reads the dims and data the run
 * set; a buffer given for it is refused; tails planned for new counts stay
 * within the cache's limits (run under the sanitizers, the frontier, tail
 * and held buffers must neither leak nor be read after eviction). */
#include "harness.h"
#include "tessera.h"

#include <stdint.h>
#include <stdlib.h>

#define ROWS 3
#define COLS 4

static tsr_graph *masking_graph(void)
{
    tsr_graph *g = NULL;
    if (tsr_graph_create(&g) != TSR_OK)
        return NULL;
    float zero = 0.0f;
    tsr_tensor z = {.dtype = TSR_FLOAT32, .rank = 0, .data = &zero};
    int64_t perm[2] = {1, 0};
    tsr_attr transpose = TSR_ATTR_INTS("perm", perm, 2);
    tsr_status st =
        tsr_graph_add_input(g, "x", TSR_FLOAT32, 2, (const int64_t[]){ROWS, COLS}, NULL);
    if (st == TSR_OK)
        st = tsr_graph_add_constant(g, "zero", &z);
    if (st == TSR_OK)
        st = tsr_graph_add_node(g, "Greater", "", "greater", 2, (const char *[]){"x", "zero"}, 1,
                                (const char *[]){"mask"}, 0, NULL);
    if (st == TSR_OK)
        st = tsr_graph_add_node(g, "NonZero", "", "nonzero", 1, (const char *[]){"mask"}, 1,
                                (const char *[]){"nz"}, 0, NULL);
    if (st == TSR_OK)
        st = tsr_graph_add_node(g, "Transpose", "", "transpose", 1, (const char *[]){"nz"}, 1,
                                (const char *[]){"idx"}, 1, &transpose);
    if (st == TSR_OK)
        st = tsr_graph_add_node(g, "GatherND", "", "gather", 2, (const char *[]){"x", "idx"}, 1,
                                (const char *[]){"y"}, 0, NULL);
    if (st == TSR_OK)
        st = tsr_graph_add_output(g, "y");
    if (st != TSR_OK) {
        fprintf(stderr, "masking_graph: %s\n", tsr_last_error());
        tsr_graph_destroy(g);
        return NULL;
    }
    return g;
}

/* x with `positive` of its elements positive, at a position of `seed`. */
static void fill(float *x, int positive, int seed)
{
    for (int i = 0; i < ROWS * COLS; i++)
        x[i] = -1.0f - (float)i;
    for (int k = 0; k < positive; k++)
        x[(k * 5 + seed) % (ROWS * COLS)] = (float)(k + 1) + 0.5f * (float)seed;
}

static void check_run(tsr_plan *plan, int positive, int seed)
{
    float x[ROWS * COLS];
    fill(x, positive, seed);
    tsr_tensor in = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {ROWS, COLS}, .data = x};
    tsr_tensor out = {.dtype = TSR_FLOAT32};
    CHECK_OK(tsr_plan_run(plan, 1, &in, 1, &out));
    CHECK(out.rank == 1 && out.dims[0] == positive);
    int found = 0;
    for (int i = 0; i < ROWS * COLS && out.rank == 1 && out.dims[0] == positive; i++)
        if (x[i] > 0)
            CHECK(((const float *)out.data)[found++] == x[i]);
    CHECK(found == positive);
}

/* A plan of masking_graph() on the default device; NULL (and a failed
 * check) when it cannot be made. */
static tsr_plan *masking_plan(void)
{
    tsr_graph *g = masking_graph();
    CHECK(g != NULL);
    if (!g)
        return NULL;
    tsr_plan *plan = NULL;
    CHECK_OK(tsr_plan_create(g, NULL, &plan));
    tsr_graph_destroy(g);
    return plan;
}

static void test_outputs_held_by_the_plan(void)
{
    tsr_plan *plan = masking_plan();
    if (!plan)
        return;
    float x[ROWS * COLS];
    fill(x, 5, 0);
    tsr_tensor in = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {ROWS, COLS}, .data = x};
    CHECK_OK(tsr_plan_reshape(plan, 1, &in));
    tsr_tensor desc;
    CHECK_OK(tsr_plan_output_desc(plan, 0, &desc));
    CHECK(desc.dtype == TSR_FLOAT32 && desc.rank == 1 && desc.dims[0] == -1);
    float buffer[ROWS * COLS];
    tsr_tensor given = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {5}, .data = buffer};
    CHECK_FAILS(tsr_plan_run(plan, 1, &in, 1, &given), TSR_ERR_INVALID_ARGUMENT, "data NULL");
    for (int round = 0; round < 2; round++)
        for (int positive = 0; positive <= ROWS * COLS; positive += 3)
            check_run(plan, positive, round);
    tsr_plan_stats stats;
    CHECK_OK(tsr_plan_get_stats(plan, &stats));
    CHECK(stats.n_builds == 1 + 5); /* the spec, one tail per count */
    tsr_plan_destroy(plan);
}

static void test_tails_within_the_cache_limits(void)
{
    tsr_plan *plan = masking_plan();
    if (!plan)
        return;
    CHECK_OK(tsr_plan_set_cache_limits(plan, 2, SIZE_MAX));
    for (int positive = 1; positive <= ROWS * COLS; positive++) {
        check_run(plan, positive, positive);
        tsr_plan_stats stats;
        CHECK_OK(tsr_plan_get_stats(plan, &stats));
        CHECK(stats.n_cached_specs == 2);
    }
    CHECK_OK(tsr_plan_set_cache_limits(plan, 1, 0));
    check_run(plan, 4, 1);
    tsr_plan_destroy(plan);
}

int main(void)
{
    test_outputs_held_by_the_plan();
    test_tails_within_the_cache_limits();
    return tsr_test_summary("test_dynamic_shapes");
}
