/* ONNX models from memory: import (bounded by fuzz_check_load), summary
 * and printing, a plan on the `ref` device with one thread, a reshape to
 * concrete input shapes (symbolic dims get 2), and a run on deterministic
 * inputs when the plan is small enough (arena, inputs and outputs each
 * under FUZZ_MAX_BYTES, at most 1e8 estimated FLOPs). Bigger plans are
 * valid and not run; planning them must still work or fail cleanly. */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_IO 16

/* A valid model may ask its plan for more memory than any machine has (a
 * small input tiled a billion times, sized only at reshape): here every
 * allocation of 1 GB or more fails, as it would on a small machine, and the
 * plan must say so cleanly. Loading must never get there (checked below).
 * The other targets have no such legitimate case: there the fuzzer's
 * -malloc_limit_mb reports any allocation of 1 GB or more. ASan's limit is
 * one MB lower than the fuzzer's because the fuzzer reports an allocation
 * of exactly 1024 MB, which ASan's limit of 1024 lets through. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1:max_allocation_size_mb=1023";
}

static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    devnull = fopen("/dev/null", "w");
    return devnull ? 0 : 1;
}

/* The bytes of a tensor of this dtype and shape into *out; 0 when the
 * dtype is unknown or the size over the bound. */
static int bounded_bytes(tsr_dtype dtype, int rank, const int64_t *dims, size_t *out)
{
    size_t bytes = tsr_dtype_size(dtype);
    if (bytes == 0 || rank < 0 || rank > TSR_MAX_RANK)
        return 0;
    for (int d = 0; d < rank; d++)
        if (dims[d] < 0 || !fuzz_mul_bounded(bytes, (size_t)dims[d], &bytes))
            return 0;
    *out = bytes;
    return 1;
}

static void fill(tsr_tensor *t, size_t bytes)
{
    size_t n = bytes / tsr_dtype_size(t->dtype);
    for (size_t i = 0; i < n; i++) {
        int v = (int)(i % 3); /* small integers stay valid indices and shapes */
        switch (t->dtype) {
        case TSR_FLOAT32: ((float *)t->data)[i] = (float)v * 0.5f - 0.25f; break;
        case TSR_FLOAT64: ((double *)t->data)[i] = (double)v * 0.5 - 0.25; break;
        case TSR_INT64: ((int64_t *)t->data)[i] = v; break;
        case TSR_INT32: ((int32_t *)t->data)[i] = v; break;
        default: ((uint8_t *)t->data)[i] = (uint8_t)(v & 1); break;
        }
    }
}

static void plan_and_run(const tsr_graph *g)
{
    int n_in = tsr_graph_num_inputs(g), n_out = tsr_graph_num_outputs(g);
    if (n_in > MAX_IO || n_out > MAX_IO || n_out < 1)
        return;
    tsr_tensor in[MAX_IO] = {{0}}, out[MAX_IO] = {{0}};
    tsr_plan *plan = NULL;
    tsr_compile_options co;
    tsr_compile_options_init(&co);
    co.device = "ref";
    co.threads = 1;
    for (int i = 0; i < n_in; i++) {
        tsr_value_info info;
        if (tsr_graph_input_info(g, i, &info) != TSR_OK || info.rank < 0 ||
            info.rank > TSR_MAX_RANK)
            goto cleanup;
        in[i].dtype = info.dtype;
        in[i].rank = info.rank;
        for (int d = 0; d < info.rank; d++)
            in[i].dims[d] = info.dims[d] < 0 ? 2 : info.dims[d];
        size_t bytes;
        if (!bounded_bytes(in[i].dtype, in[i].rank, in[i].dims, &bytes) ||
            !(in[i].data = malloc(bytes ? bytes : 1)))
            goto cleanup;
        fill(&in[i], bytes);
    }
    if (tsr_plan_create(g, &co, &plan) != TSR_OK || tsr_plan_reshape(plan, n_in, in) != TSR_OK)
        goto cleanup;
    tsr_plan_stats stats;
    if (tsr_plan_get_stats(plan, &stats) != TSR_OK || stats.arena_bytes > FUZZ_MAX_BYTES ||
        !(stats.flops <= 1e8))
        goto cleanup;
    for (int i = 0; i < n_out; i++) {
        if (tsr_plan_output_desc(plan, i, &out[i]) != TSR_OK)
            goto cleanup;
        size_t bytes;
        out[i].data = NULL;
        if (!bounded_bytes(out[i].dtype, out[i].rank, out[i].dims, &bytes) ||
            !(out[i].data = malloc(bytes ? bytes : 1)))
            goto cleanup;
    }
    (void)tsr_plan_run(plan, n_in, in, n_out, out);
cleanup:
    tsr_plan_destroy(plan);
    for (int i = 0; i < MAX_IO; i++) {
        free(in[i].data);
        free(out[i].data);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsr_graph *g = NULL;
    size_t before = fuzz_allocated();
    tsr_status st = tsr_graph_load_onnx_buffer(data, size, NULL, &g);
    fuzz_check_load(before, size, "tsr_graph_load_onnx_buffer");
    if (st == TSR_ERR_OUT_OF_MEMORY) {
        printf("fuzz: a %zu-byte model ran out of memory while loading: %s\n", size,
               tsr_last_error());
        fflush(stdout);
        abort();
    }
    if (st != TSR_OK)
        return 0;
    tsr_graph_stats stats;
    (void)tsr_graph_get_stats(g, &stats);
    (void)tsr_graph_print(g, devnull);
    plan_and_run(g);
    tsr_graph_destroy(g);
    return 0;
}
