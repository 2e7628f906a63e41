/* `tessera bench`: latency of a model's plan on random inputs. */
#include "cli.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char bench_usage[] =
    "Usage: tessera bench [MODEL] [options]\n"
    "\n"
    "Times runs of MODEL (an ONNX file; default " CLI_BUILTIN_RESNET50 ", the\n"
    "built-in ResNet-50 with random weights) on seeded random inputs whose\n"
    "symbolic dims are --batch: warm-up runs first, then timed runs on a\n"
    "monotonic clock. Prints the min and median time per run, the throughput\n"
    "(batch / median) and the plan's arena bytes.\n"
    "\n"
    "Options:\n"
    "  --batch N     size of the symbolic dims (default 1)\n"
    "  --threads N   threads, 0 for all cores (default 0)\n"
    "  --iters N     timed runs (default 10)\n"
    "  --warmup N    untimed runs before them (default 2)\n"
    "  --device DEV  device to run on (default: the library's default)\n"
    "  --json        print only one JSON object, on the last line, with keys model,\n"
    "                device, batch, threads, min_ms, median_ms, arena_bytes (and\n"
    "                iters, warmup, images_per_s, gflops); no progress on stderr\n"
    "  -h, --help    show this help\n";

static int bench_main(int argc, char **argv);

const cli_command cli_bench_command = {
    .name = "bench",
    .summary = "benchmark a model (default: the built-in ResNet-50)",
    .usage = bench_usage,
    .main = bench_main,
};

typedef struct {
    const char *model;
    const char *device;
    long long batch, threads, iters, warmup;
    bool json;
} bench_options;

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(out, "\\u%04x", *c);
        else
            fputc(*c, out);
    }
    fputc('"', out);
}

typedef struct {
    double min_ms, median_ms;
    tsr_plan_stats stats;
} bench_result;

static int bench_plan(const bench_options *o, tsr_graph *g, bench_result *res)
{
    int n_in = tsr_graph_num_inputs(g), n_out = tsr_graph_num_outputs(g);
    tsr_tensor *inputs = calloc((size_t)n_in + 1, sizeof *inputs);
    tsr_tensor *outputs = calloc((size_t)n_out + 1, sizeof *outputs);
    double *times = calloc((size_t)o->iters, sizeof *times);
    tsr_plan *plan = NULL;
    int rc = inputs && outputs && times ? CLI_OK : cli_fail("out of memory");
    if (rc == CLI_OK)
        rc = cli_default_input_shapes(g, o->batch, inputs);
    cli_rng seeds;
    cli_rng_seed(&seeds, 0);
    for (int i = 0; i < n_in && rc == CLI_OK; i++) {
        tsr_value_info info;
        tsr_graph_input_info(g, i, &info);
        rc = cli_fill_random(&inputs[i], info.name, cli_rng_next(&seeds));
    }
    if (rc != CLI_OK)
        goto done;

    if (!o->json)
        fprintf(stderr, "tessera: planning for device %s, batch %lld\n",
                o->device ? o->device : tsr_default_device(), o->batch);
    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = o->device;
    opts.threads = (int)o->threads;
    if (tsr_plan_create(g, &opts, &plan) != TSR_OK ||
        tsr_plan_reshape(plan, n_in, inputs) != TSR_OK ||
        tsr_plan_get_stats(plan, &res->stats) != TSR_OK) {
        rc = cli_fail_status(NULL);
        goto done;
    }
    for (int k = 0; k < n_out; k++) {
        if (tsr_plan_output_desc(plan, k, &outputs[k]) != TSR_OK) {
            rc = cli_fail_status(NULL);
            goto done;
        }
        size_t bytes = tsr_tensor_bytes(&outputs[k]);
        if (!(outputs[k].data = malloc(bytes ? bytes : 1))) {
            rc = cli_fail("out of memory for output %d (%zu bytes)", k, bytes);
            goto done;
        }
    }
    long long total = o->warmup + o->iters;
    for (long long it = 0; it < total; it++) {
        if (!o->json && (it == 0 || it == o->warmup))
            fprintf(stderr, "tessera: %s %lld run%s\n", it < o->warmup ? "warming up," : "timing,",
                    it < o->warmup ? o->warmup : o->iters,
                    (it < o->warmup ? o->warmup : o->iters) == 1 ? "" : "s");
        double t0 = cli_now_seconds();
        if (tsr_plan_run(plan, n_in, inputs, n_out, outputs) != TSR_OK) {
            rc = cli_fail_status(NULL);
            goto done;
        }
        double ms = (cli_now_seconds() - t0) * 1e3;
        if (it >= o->warmup)
            times[it - o->warmup] = ms;
    }
    qsort(times, (size_t)o->iters, sizeof *times, compare_double);
    res->min_ms = times[0];
    res->median_ms =
        o->iters % 2 ? times[o->iters / 2] : 0.5 * (times[o->iters / 2 - 1] + times[o->iters / 2]);
done:
    tsr_plan_destroy(plan);
    for (int k = 0; inputs && k < n_in; k++)
        free(inputs[k].data);
    for (int k = 0; outputs && k < n_out; k++)
        free(outputs[k].data);
    free(inputs);
    free(outputs);
    free(times);
    return rc;
}

static int bench_main(int argc, char **argv)
{
    cli_args a;
    cli_args_init(&a, &cli_bench_command, argc, argv);
    bench_options o = {.batch = 1, .threads = 0, .iters = 10, .warmup = 2};
    bool help = false;
    while (cli_args_peek(&a)) {
        const char *v;
        if (cli_arg_flag(&a, "--json")) {
            o.json = true;
        } else if (cli_arg_option(&a, "--batch", &v)) {
            if (v)
                cli_parse_int(&a, "--batch", v, 1, 1 << 24, &o.batch);
        } else if (cli_arg_option(&a, "--threads", &v)) {
            if (v)
                cli_parse_int(&a, "--threads", v, 0, 4096, &o.threads);
        } else if (cli_arg_option(&a, "--iters", &v)) {
            if (v)
                cli_parse_int(&a, "--iters", v, 1, 1000000, &o.iters);
        } else if (cli_arg_option(&a, "--warmup", &v)) {
            if (v)
                cli_parse_int(&a, "--warmup", v, 0, 1000000, &o.warmup);
        } else if (cli_arg_option(&a, "--device", &v)) {
            o.device = v;
        } else {
            const char *pos = cli_arg_rest(&a, &help);
            if (!pos)
                continue;
            if (o.model)
                return cli_usage_error(&cli_bench_command, "unexpected argument '%s'", pos);
            o.model = pos;
        }
    }
    if (a.status || help)
        return a.status;
    if (!o.model)
        o.model = CLI_BUILTIN_RESNET50;

    if (!o.json)
        fprintf(stderr, "tessera: loading %s\n", o.model);
    double t0 = cli_now_seconds();
    tsr_graph *g = NULL;
    int rc = cli_load_model(o.model, &g);
    if (rc != CLI_OK)
        return rc;
    if (!o.json)
        fprintf(stderr, "tessera: loaded in %.2f s\n", cli_now_seconds() - t0);
    bench_result res = {0};
    rc = bench_plan(&o, g, &res);
    tsr_graph_destroy(g);
    if (rc != CLI_OK)
        return rc;

    const char *device = o.device ? o.device : tsr_default_device();
    int threads = o.threads ? (int)o.threads : omp_get_num_procs();
    double images_per_s = res.median_ms > 0 ? (double)o.batch * 1e3 / res.median_ms : 0;
    if (o.json) {
        printf("{\"model\": ");
        json_string(stdout, o.model);
        printf(", \"device\": ");
        json_string(stdout, device);
        printf(", \"batch\": %lld, \"threads\": %d, \"iters\": %lld, \"warmup\": %lld, "
               "\"min_ms\": %.4f, \"median_ms\": %.4f, \"images_per_s\": %.4f, "
               "\"gflops\": %.6g, \"arena_bytes\": %zu}\n",
               o.batch, threads, o.iters, o.warmup, res.min_ms, res.median_ms, images_per_s,
               res.stats.flops * 1e-9, res.stats.arena_bytes);
        return CLI_OK;
    }
    printf("model:       %s\n", o.model);
    printf("device:      %s\n", device);
    printf("batch:       %lld\n", o.batch);
    printf("threads:     %d\n", threads);
    printf("runs:        %lld timed after %lld warm-up\n", o.iters, o.warmup);
    printf("min:         %.3f ms\n", res.min_ms);
    printf("median:      %.3f ms\n", res.median_ms);
    printf("throughput:  %.2f images/s\n", images_per_s);
    printf("compute:     %.3f GFLOPs per run (%.2f GFLOP/s)\n", res.stats.flops * 1e-9,
           res.median_ms > 0 ? res.stats.flops * 1e-6 / res.median_ms : 0.0);
    printf("arena:       %zu bytes (%.2f MiB)\n", res.stats.arena_bytes,
           (double)res.stats.arena_bytes / (1024.0 * 1024.0));
    return CLI_OK;
}
