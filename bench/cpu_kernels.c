/* The cpu backend's memory-bound kernels beside the reference kernels, in
 * one run on one machine: MaxPool 3x3/2, Add and Relu on [8, 64, 112, 112]
 * and [8, 256, 56, 56]. The cpu kernels run on the device's blocked layout
 * (TSR_CPU_LAYOUT and TSR_CPU_ISA apply), the reference on plain. Reports
 * ms per run and GB/s (bytes read + written, compulsory traffic).
 *
 *   cc -O2 -fopenmp -Isrc -Iinclude bench/cpu_kernels.c build/lib/libtessera.a \
 *      $(pkg-config --libs libprotobuf-c) -ldnnl -lm -o /tmp/bench_cpu_kernels
 *   /tmp/bench_cpu_kernels [threads]
 */
#include "backends/cpu/cpu.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double time_runs(tsr_status (*run)(void *, const tsr_kernel_ctx *), void *state,
                        const tsr_kernel_ctx *k)
{
    run(state, k); /* warm up: page in the output */
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = omp_get_wtime();
        if (run(state, k) != TSR_OK) {
            fprintf(stderr, "run failed: %s\n", tsr_last_error());
            exit(1);
        }
        double t = omp_get_wtime() - t0;
        best = t < best ? t : best;
    }
    return best;
}

static tsr_status ref_run(void *state, const tsr_kernel_ctx *k)
{
    (void)state;
    return k->node->op->ref(k);
}

static void bench(const char *op, const int64_t *dims, int n_attrs, const tsr_attr *attrs,
                  int threads)
{
    tsr_graph *g = NULL;
    tsr_graph_create(&g);
    tsr_graph_add_input(g, "a", TSR_FLOAT32, 4, dims, NULL);
    tsr_graph_add_input(g, "b", TSR_FLOAT32, 4, dims, NULL);
    bool binary = strcmp(op, "Add") == 0;
    const char *ins[] = {"a", "b"};
    if (tsr_graph_add_node(g, op, "", "node", binary ? 2 : 1, ins, 1, (const char *[]){"y"},
                           n_attrs, attrs) != TSR_OK) {
        fprintf(stderr, "%s\n", tsr_last_error());
        exit(1);
    }
    const tsr_node *node = &g->nodes[0];
    tsr_layout layout = tsr_cpu_layout();
    tsr_tensor x = tsr_value_tensor(&g->values[node->inputs[0]]);
    tsr_tensor y = tsr_value_tensor(&g->values[node->outputs[0]]);
    size_t xb = tsr_layout_bytes(&x, layout), yb = tsr_layout_bytes(&y, layout);
    tsr_tensor a = x, b = x, out = y;
    a.data = tsr_aligned_alloc(xb);
    b.data = tsr_aligned_alloc(xb);
    out.data = tsr_aligned_alloc(yb);
    float *fa = a.data, *fb = b.data;
    for (size_t i = 0; i < xb / sizeof(float); i++) {
        fa[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
        fb[i] = 0.5f;
    }
    memset(out.data, 0, yb);

    uint8_t lin[2] = {(uint8_t)layout, (uint8_t)layout}, lout[1] = {(uint8_t)layout};
    tsr_prepare_ctx pc = {
        .graph = g, .node = node, .input_layouts = lin, .output_layouts = lout, .threads = threads};
    void *state = NULL;
    if (tsr_backend_cpu.prepare(&pc, &state) != TSR_OK) {
        fprintf(stderr, "%s\n", tsr_last_error());
        exit(1);
    }
    tsr_kernel_ctx k = {.node = node,
                        .n_inputs = node->n_inputs,
                        .n_outputs = 1,
                        .threads = threads,
                        .inputs = {&a, &b},
                        .outputs = {&out},
                        .input_layouts = {(uint8_t)layout, (uint8_t)layout},
                        .output_layouts = {(uint8_t)layout}};
    double t_cpu = time_runs(tsr_backend_cpu.run, state, &k);
    tsr_backend_cpu.release(state);
    for (int i = 0; i < 2; i++)
        k.input_layouts[i] = TSR_LAYOUT_PLAIN;
    k.output_layouts[0] = TSR_LAYOUT_PLAIN;
    double t_ref = time_runs(ref_run, NULL, &k);

    double bytes = (double)tsr_tensor_bytes(&x) * (binary ? 2 : 1) + (double)tsr_tensor_bytes(&y);
    printf("%-8s [%lld,%lld,%lld,%lld] %-8s cpu %8.2f ms %6.1f GB/s   ref %8.2f ms %6.1f GB/s   "
           "x%.1f\n",
           op, (long long)dims[0], (long long)dims[1], (long long)dims[2], (long long)dims[3],
           tsr_layout_name(layout), t_cpu * 1e3, bytes / t_cpu * 1e-9, t_ref * 1e3,
           bytes / t_ref * 1e-9, t_ref / t_cpu);
    tsr_aligned_free(a.data);
    tsr_aligned_free(b.data);
    tsr_aligned_free(out.data);
    tsr_graph_destroy(g);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    static const int64_t k3[] = {3, 3}, s2[] = {2, 2};
    const tsr_attr pool[] = {TSR_ATTR_INTS("kernel_shape", k3, 2), TSR_ATTR_INTS("strides", s2, 2)};
    const int64_t shapes[2][4] = {{8, 64, 112, 112}, {8, 256, 56, 56}};
    static const char *isa_names[] = {"portable", "avx2", "avx512"};
    printf("threads %d, isa %s\n", threads, isa_names[tsr_cpu_isa()]);
    for (int s = 0; s < 2; s++) {
        bench("MaxPool", shapes[s], 2, pool, threads);
        bench("Add", shapes[s], 0, NULL, threads);
        bench("Relu", shapes[s], 0, NULL, threads);
    }
    return 0;
}
