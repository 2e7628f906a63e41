/* `tessera run`: one inference with inputs from .npy files or seeded random
 * data; outputs to .npy files or summarized on stdout. Everything is
 * computed before the first file is written, so a failure leaves no
 * output behind. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char run_usage[] =
    "Usage: tessera run MODEL [options]\n"
    "\n"
    "Runs MODEL (an ONNX file or " CLI_BUILTIN_RESNET50 ") once.\n"
    "\n"
    "Options:\n"
    "  --input [NAME=]FILE.npy  an input from a .npy file (float32, float64, int64, ...).\n"
    "                           With NAME= it binds the input of that name; without, the\n"
    "                           first unnamed --input binds the model's first input, the\n"
    "                           second its second, and so on. Repeat for each input.\n"
    "                           Inputs given no file get seeded random data: normal(0, 1)\n"
    "                           for floats, 0..9 for integers, 0/1 for bools.\n"
    "  --output FILE.npy        write the output there (models with one output only)\n"
    "  --output-dir DIR         write every output to DIR/NAME.npy, DIR created if needed.\n"
    "                           NAME is the output's name with every character outside\n"
    "                           [A-Za-z0-9._-] replaced by '_'; a name already taken\n"
    "                           (ignoring case) gets _1, _2, ... appended, in output order.\n"
    "  --device DEV             device to run on (default: the library's default)\n"
    "  --threads N              threads, 0 for all cores (default 0)\n"
    "  --no-depth-first         run layer by layer, without depth-first stacks\n"
    "  --no-autotune            run each convolution's default algorithm instead of\n"
    "                           timing the candidates (direct, Winograd) at plan time\n"
    "  --precision P            fp32 (default) or bf16 (compute-bound ops in bf16 where\n"
    "                           the CPU has bf16 arithmetic, fp32 everywhere else)\n"
    "  --verbose                print the kernel each node got, and why others refused it\n"
    "  --batch N                size of symbolic dims of random inputs (default 1); a\n"
    "                           symbolic dim takes its size from a file when one gives it\n"
    "  --seed S                 seed of the random inputs (default 0)\n"
    "  -h, --help               show this help\n"
    "\n"
    "Without --output or --output-dir, each output's name, shape and a summary\n"
    "(min, max, mean; argmax for a [1, K] output) are printed. Files are written\n"
    "atomically and only after the whole run succeeded.\n";

static int run_main(int argc, char **argv);

const cli_command cli_run_command = {
    .name = "run",
    .summary = "run a model on .npy or random inputs",
    .usage = run_usage,
    .main = run_main,
};

typedef struct {
    const char *model;
    const char **input_args; /* as given: "[NAME=]FILE" */
    int n_input_args;
    const char *output;
    const char *output_dir;
    const char *device;
    long long threads;
    long long batch;
    uint64_t seed;
    bool no_depth_first, no_autotune, verbose;
    tsr_precision precision;
} run_options;

static int parse_options(int argc, char **argv, run_options *o, bool *help)
{
    cli_args a;
    cli_args_init(&a, &cli_run_command, argc, argv);
    o->threads = 0;
    o->batch = 1;
    o->input_args = calloc((size_t)argc + 1, sizeof *o->input_args);
    if (!o->input_args)
        return cli_fail("out of memory");
    while (cli_args_peek(&a)) {
        const char *v;
        if (cli_arg_option(&a, "--input", &v)) {
            if (v)
                o->input_args[o->n_input_args++] = v;
        } else if (cli_arg_option(&a, "--output", &v)) {
            o->output = v;
        } else if (cli_arg_option(&a, "--output-dir", &v)) {
            o->output_dir = v;
        } else if (cli_arg_option(&a, "--device", &v)) {
            o->device = v;
        } else if (cli_arg_flag(&a, "--no-depth-first")) {
            o->no_depth_first = true;
        } else if (cli_arg_flag(&a, "--no-autotune")) {
            o->no_autotune = true;
        } else if (cli_arg_flag(&a, "--verbose")) {
            o->verbose = true;
        } else if (cli_arg_option(&a, "--precision", &v)) {
            if (v && strcmp(v, "bf16") == 0)
                o->precision = TSR_PRECISION_BF16;
            else if (v && strcmp(v, "fp32") != 0)
                return cli_usage_error(&cli_run_command, "--precision must be fp32 or bf16, not '%s'",
                                       v);
        } else if (cli_arg_option(&a, "--threads", &v)) {
            if (v)
                cli_parse_int(&a, "--threads", v, 0, 4096, &o->threads);
        } else if (cli_arg_option(&a, "--batch", &v)) {
            if (v)
                cli_parse_int(&a, "--batch", v, 1, 1 << 24, &o->batch);
        } else if (cli_arg_option(&a, "--seed", &v)) {
            if (v)
                cli_parse_u64(&a, "--seed", v, &o->seed);
        } else {
            const char *pos = cli_arg_rest(&a, help);
            if (!pos)
                continue;
            if (o->model)
                return cli_usage_error(&cli_run_command, "unexpected argument '%s'", pos);
            o->model = pos;
        }
    }
    if (a.status || *help)
        return a.status;
    if (!o->model)
        return cli_usage_error(&cli_run_command, "missing MODEL");
    if (o->output && o->output_dir)
        return cli_usage_error(&cli_run_command, "--output and --output-dir exclude each other");
    return CLI_OK;
}

/* ------------------------------------------------------------- inputs */

/* ------------------------------------------------------------ outputs */

static double element(const tsr_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case TSR_FLOAT32: return ((const float *)t->data)[i];
    case TSR_FLOAT64: return ((const double *)t->data)[i];
    case TSR_INT64: return (double)((const int64_t *)t->data)[i];
    case TSR_INT32: return ((const int32_t *)t->data)[i];
    case TSR_INT8: return ((const int8_t *)t->data)[i];
    case TSR_UINT8:
    case TSR_BOOL: return ((const uint8_t *)t->data)[i];
    default: return NAN;
    }
}

static void print_summary(const char *name, const tsr_tensor *t)
{
    char shape[512];
    cli_format_dims(t->rank, t->dims, shape, sizeof shape);
    printf("%s: %s %s", name, tsr_dtype_name(t->dtype), shape);
    int64_t n = tsr_tensor_numel(t);
    if (n == 0) {
        printf(" (empty)\n");
        return;
    }
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    int64_t argmax = -1, n_nan = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = element(t, i);
        if (isnan(v)) {
            n_nan++;
            continue;
        }
        if (v < lo)
            lo = v;
        if (v > hi || argmax < 0) {
            hi = v;
            argmax = i;
        }
        sum += v;
    }
    if (n_nan < n)
        printf(" min=%.6g max=%.6g mean=%.6g", lo, hi, sum / (double)(n - n_nan));
    if (n_nan)
        printf(" nan=%lld", (long long)n_nan);
    if (t->rank == 2 && t->dims[0] == 1 && argmax >= 0)
        printf(" argmax=%lld", (long long)argmax);
    printf("\n");
}

/* --------------------------------------------------------------- main */

static int run_model(const run_options *o, tsr_graph *g)
{
    int n_in = tsr_graph_num_inputs(g), n_out = tsr_graph_num_outputs(g);
    tsr_tensor *inputs = calloc((size_t)n_in + 1, sizeof *inputs);
    tsr_tensor *outputs = calloc((size_t)n_out + 1, sizeof *outputs);
    char **paths = calloc((size_t)n_out + 1, sizeof *paths);
    bool *held = calloc((size_t)n_out + 1, sizeof *held); /* by the plan: sized by the data */
    tsr_plan *plan = NULL;
    int rc = CLI_OK;
    if (!inputs || !outputs || !paths || !held) {
        rc = cli_fail("out of memory");
        goto done;
    }
    if (o->output && n_out != 1) {
        rc = cli_fail("--output needs a model with one output, %s has %d: use --output-dir",
                      o->model, n_out);
        goto done;
    }
    cli_input_args input_args = {o->input_args, o->n_input_args, o->seed, o->batch};
    if ((rc = cli_make_inputs(g, &input_args, inputs)) != CLI_OK)
        goto done;

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
    if (tsr_plan_create(g, &opts, &plan) != TSR_OK ||
        tsr_plan_reshape(plan, n_in, inputs) != TSR_OK) {
        rc = cli_fail_status(NULL);
        goto done;
    }
    for (int k = 0; k < n_out; k++) {
        if (tsr_plan_output_desc(plan, k, &outputs[k]) != TSR_OK) {
            rc = cli_fail_status(NULL);
            goto done;
        }
        for (int d = 0; d < outputs[k].rank; d++)
            held[k] = held[k] || outputs[k].dims[d] < 0;
        if (held[k])
            continue;
        size_t bytes = tsr_tensor_bytes(&outputs[k]);
        if (tsr_tensor_numel(&outputs[k]) < 0) {
            char shape[512];
            cli_format_dims(outputs[k].rank, outputs[k].dims, shape, sizeof shape);
            rc = cli_fail("output %d has shape %s, whose size is not representable", k, shape);
            goto done;
        }
        outputs[k].data = malloc(bytes ? bytes : 1);
        if (!outputs[k].data) {
            rc = cli_fail("out of memory for output %d (%zu bytes)", k, bytes);
            goto done;
        }
    }
    if (tsr_plan_run(plan, n_in, inputs, n_out, outputs) != TSR_OK) {
        rc = cli_fail_status(NULL);
        goto done;
    }

    if (o->output) {
        if (tsr_npy_write(o->output, &outputs[0]) != TSR_OK)
            rc = cli_fail_status(o->output);
    } else if (o->output_dir) {
        const char **names = calloc((size_t)n_out + 1, sizeof *names);
        for (int k = 0; names && k < n_out; k++) {
            tsr_value_info info;
            tsr_graph_output_info(g, k, &info);
            names[k] = info.name;
        }
        rc = names ? cli_output_paths(n_out, names, o->output_dir, paths)
                   : cli_fail("out of memory");
        free(names);
        if (rc == CLI_OK && (rc = cli_make_dir(o->output_dir)) == CLI_OK)
            rc = cli_write_outputs(n_out, paths, outputs);
        for (int k = 0; rc == CLI_OK && k < n_out; k++) {
            tsr_value_info info;
            tsr_graph_output_info(g, k, &info);
            printf("%s -> %s\n", info.name, paths[k]);
        }
    } else {
        for (int k = 0; k < n_out; k++) {
            tsr_value_info info;
            tsr_graph_output_info(g, k, &info);
            print_summary(info.name, &outputs[k]);
        }
    }
done:
    tsr_plan_destroy(plan);
    for (int k = 0; inputs && k < n_in; k++)
        free(inputs[k].data);
    for (int k = 0; outputs && held && k < n_out; k++)
        if (!held[k])
            free(outputs[k].data);
    free(held);
    for (int k = 0; paths && k < n_out; k++)
        free(paths[k]);
    free(inputs);
    free(outputs);
    free(paths);
    return rc;
}

static int run_main(int argc, char **argv)
{
    run_options o = {0};
    bool help = false;
    int rc = parse_options(argc, argv, &o, &help);
    if (rc != CLI_OK || help) {
        free(o.input_args);
        return rc;
    }
    struct stat sb;
    if (o.output_dir && stat(o.output_dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        free(o.input_args);
        return cli_fail("--output-dir %s: exists and is not a directory", o.output_dir);
    }
    tsr_graph *g = NULL;
    rc = cli_load_model(o.model, &g);
    if (rc == CLI_OK)
        rc = run_model(&o, g);
    tsr_graph_destroy(g);
    free(o.input_args);
    return rc;
}
