/* `tessera bench`: latency of a model's plan on random inputs. */
#include "cli.h"

#include <math.h>
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
    "  --no-depth-first  run layer by layer, without depth-first stacks\n"
    "  --no-autotune run each convolution's default algorithm instead of timing\n"
    "                the candidates (direct, Winograd) at plan time\n"
    "  --precision P fp32 (default) or bf16: bf16 compute-bound ops where the CPU\n"
    "                has bf16 arithmetic; also reports the outputs' max relative\n"
    "                error against an fp32 plan of the same device\n"
    "  --verbose     print the kernel each node got, and why others refused it\n"
    "  --profile     print the time of each step (kernel, reorder, stack) of the\n"
    "                timed runs to stderr\n"
    "  --json        print only one JSON object, on the last line, with keys model,\n"
    "                device, batch, threads, min_ms, median_ms, arena_bytes (and\n"
    "                iters, warmup, images_per_s, gflops, depth_first, n_stacks,\n"
    "                autotune, plan_ms);\n"
    "                no progress on stderr\n"
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
    bool json, no_depth_first, no_autotune, profile, verbose;
    tsr_precision precision;
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
    double plan_ms;   /* plan creation and specialization (autotuning included) */
    double rel_error; /* bf16 against fp32, max |y - y32| / max |y32| */
    tsr_plan_stats stats;
} bench_result;

/* Runs an fp32 plan of the same device on the same inputs and compares
 * its float outputs with `outputs`. */
static int error_vs_fp32(const bench_options *o, tsr_graph *g, int n_in, const tsr_tensor *inputs,
                         int n_out, const tsr_tensor *outputs, double *rel_error)
{
    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = o->device;
    opts.threads = (int)o->threads;
    tsr_plan *plan = NULL;
    tsr_tensor *ref = calloc((size_t)n_out + 1, sizeof *ref);
    int rc = ref ? CLI_OK : cli_fail("out of memory");
    if (rc == CLI_OK && (tsr_plan_create(g, &opts, &plan) != TSR_OK ||
                         tsr_plan_reshape(plan, n_in, inputs) != TSR_OK))
        rc = cli_fail_status("fp32 comparison plan");
    for (int k = 0; rc == CLI_OK && k < n_out; k++) {
        ref[k] = outputs[k];
        size_t bytes = tsr_tensor_bytes(&ref[k]);
        if (!(ref[k].data = malloc(bytes ? bytes : 1)))
            rc = cli_fail("out of memory for output %d (%zu bytes)", k, bytes);
    }
    if (rc == CLI_OK && tsr_plan_run(plan, n_in, inputs, n_out, ref) != TSR_OK)
        rc = cli_fail_status("fp32 comparison run");
    double max_err = 0.0, max_ref = 0.0;
    for (int k = 0; rc == CLI_OK && k < n_out; k++) {
        if (ref[k].dtype != TSR_FLOAT32)
            continue;
        const float *a = outputs[k].data, *b = ref[k].data;
        for (int64_t i = 0; i < tsr_tensor_numel(&ref[k]); i++) {
            double d = fabs((double)a[i] - (double)b[i]), m = fabs((double)b[i]);
            max_err = d > max_err || d != d ? d : max_err;
            max_ref = m > max_ref ? m : max_ref;
        }
    }
    *rel_error = max_ref > 0 ? max_err / max_ref : max_err;
    for (int k = 0; ref && k < n_out; k++)
        free(ref[k].data);
    free(ref);
    tsr_plan_destroy(plan);
    return rc;
}

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
    opts.precision = o->precision;
    opts.verbose = opts.verbose || o->verbose;
    if (o->no_depth_first)
        opts.depth_first = 0;
    if (o->no_autotune)
        opts.autotune = 0;
    double plan_t0 = cli_now_seconds();
    if (tsr_plan_create(g, &opts, &plan) != TSR_OK ||
        tsr_plan_reshape(plan, n_in, inputs) != TSR_OK ||
        tsr_plan_get_stats(plan, &res->stats) != TSR_OK) {
        rc = cli_fail_status(NULL);
        goto done;
    }
    res->plan_ms = (cli_now_seconds() - plan_t0) * 1e3;
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
        if (o->profile && it == o->warmup)
            tsr_plan_set_profiling(plan, 1);
        double t0 = cli_now_seconds();
        if (tsr_plan_run(plan, n_in, inputs, n_out, outputs) != TSR_OK) {
            rc = cli_fail_status(NULL);
            goto done;
        }
        double ms = (cli_now_seconds() - t0) * 1e3;
        if (it >= o->warmup)
            times[it - o->warmup] = ms;
    }
    if (o->profile && tsr_plan_print_profile(plan, stderr) != TSR_OK) {
        rc = cli_fail_status(NULL);
        goto done;
    }
    if (o->precision != TSR_PRECISION_FP32) {
        if (!o->json)
            fprintf(stderr, "tessera: comparing with an fp32 plan\n");
        rc = error_vs_fp32(o, g, n_in, inputs, n_out, outputs, &res->rel_error);
        if (rc != CLI_OK)
            goto done;
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
        } else if (cli_arg_flag(&a, "--no-depth-first")) {
            o.no_depth_first = true;
        } else if (cli_arg_flag(&a, "--no-autotune")) {
            o.no_autotune = true;
        } else if (cli_arg_flag(&a, "--profile")) {
            o.profile = true;
        } else if (cli_arg_flag(&a, "--verbose")) {
            o.verbose = true;
        } else if (cli_arg_option(&a, "--precision", &v)) {
            if (v && strcmp(v, "bf16") == 0)
                o.precision = TSR_PRECISION_BF16;
            else if (v && strcmp(v, "fp32") != 0)
                return cli_usage_error(&cli_bench_command,
                                       "--precision must be fp32 or bf16, not '%s'", v);
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
               "\"gflops\": %.6g, \"arena_bytes\": %zu, \"depth_first\": %s, "
               "\"n_stacks\": %d, \"precision\": \"%s\", \"autotune\": %s, \"plan_ms\": %.3f",
               o.batch, threads, o.iters, o.warmup, res.min_ms, res.median_ms, images_per_s,
               res.stats.flops * 1e-9, res.stats.arena_bytes, o.no_depth_first ? "false" : "true",
               res.stats.n_stacks, o.precision == TSR_PRECISION_BF16 ? "bf16" : "fp32",
               o.no_autotune ? "false" : "true", res.plan_ms);
        if (o.precision != TSR_PRECISION_FP32)
            printf(", \"max_rel_error_vs_fp32\": %.6g", res.rel_error);
        printf("}\n");
        return CLI_OK;
    }
    printf("model:       %s\n", o.model);
    printf("device:      %s\n", device);
    printf("batch:       %lld\n", o.batch);
    printf("threads:     %d\n", threads);
    printf("plan:        %.1f ms%s\n", res.plan_ms, o.no_autotune ? " (autotune off)" : "");
    printf("runs:        %lld timed after %lld warm-up\n", o.iters, o.warmup);
    printf("min:         %.3f ms\n", res.min_ms);
    printf("median:      %.3f ms\n", res.median_ms);
    printf("throughput:  %.2f images/s\n", images_per_s);
    printf("compute:     %.3f GFLOPs per run (%.2f GFLOP/s)\n", res.stats.flops * 1e-9,
           res.median_ms > 0 ? res.stats.flops * 1e-6 / res.median_ms : 0.0);
    printf("arena:       %zu bytes (%.2f MiB)\n", res.stats.arena_bytes,
           (double)res.stats.arena_bytes / (1024.0 * 1024.0));
    printf("stacks:      %d depth-first (%d ops)%s\n", res.stats.n_stacks, res.stats.n_stack_ops,
           o.no_depth_first ? ", off" : "");
    if (o.precision != TSR_PRECISION_FP32)
        printf("precision:   bf16, max relative error against fp32 %.3g\n", res.rel_error);
    return CLI_OK;
}
