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

/* Sizes given to symbolic dims by input files, by symbol name. */
typedef struct {
    const char *names[64 * TSR_MAX_RANK];
    int64_t sizes[64 * TSR_MAX_RANK];
    const char *from[64 * TSR_MAX_RANK];
    int n;
} symbol_sizes;

static int symbol_find(const symbol_sizes *s, const char *name)
{
    for (int k = 0; k < s->n; k++)
        if (strcmp(s->names[k], name) == 0)
            return k;
    return -1;
}

static void list_input_names(const tsr_graph *g, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < tsr_graph_num_inputs(g) && used < size; i++) {
        tsr_value_info info;
        if (tsr_graph_input_info(g, i, &info) == TSR_OK)
            used += (size_t)snprintf(buf + used, size - used, "%s'%s'", i ? ", " : "", info.name);
    }
}

/* Decides which graph input each --input binds. */
static int bind_input_args(const tsr_graph *g, const run_options *o, const char **file_for)
{
    int n_in = tsr_graph_num_inputs(g);
    int next_positional = 0;
    for (int k = 0; k < o->n_input_args; k++) {
        const char *arg = o->input_args[k];
        const char *file = arg;
        int index = -1;
        const char *eq = strchr(arg, '=');
        if (eq) {
            for (int i = 0; i < n_in && index < 0; i++) {
                tsr_value_info info;
                if (tsr_graph_input_info(g, i, &info) == TSR_OK &&
                    strlen(info.name) == (size_t)(eq - arg) &&
                    strncmp(info.name, arg, (size_t)(eq - arg)) == 0)
                    index = i;
            }
            if (index >= 0) {
                file = eq + 1;
                if (!*file)
                    return cli_fail("--input %s: no file after '='", arg);
            } else if (access(arg, F_OK) != 0) {
                /* Not a name of this model, and not a file with '=' in its
                 * name either. */
                char names[1024];
                list_input_names(g, names, sizeof names);
                return cli_fail("--input %s: the model has no input named '%.*s' (its inputs: %s)",
                                arg, (int)(eq - arg), arg, names);
            }
        }
        if (index < 0) {
            if (next_positional >= n_in)
                return cli_fail("--input %s: too many inputs, the model has %d", arg, n_in);
            index = next_positional++;
        }
        if (file_for[index]) {
            tsr_value_info info;
            tsr_graph_input_info(g, index, &info);
            return cli_fail("input '%s' is given twice ('%s' and '%s')", info.name, file_for[index],
                            file);
        }
        file_for[index] = file;
    }
    return CLI_OK;
}

/* Reads an input file and checks it against the model's input. */
static int load_input_file(const tsr_value_info *info, const char *file, symbol_sizes *syms,
                           tsr_tensor *t)
{
    if (tsr_npy_read(file, t) != TSR_OK)
        return cli_fail_status(file);
    char want[512], got[512];
    cli_format_info_shape(info, want, sizeof want);
    cli_format_dims(t->rank, t->dims, got, sizeof got);
    if (t->dtype != info->dtype)
        return cli_fail("input '%s' must be %s, but %s holds %s", info->name,
                        tsr_dtype_name(info->dtype), file, tsr_dtype_name(t->dtype));
    if (info->rank >= 0 && t->rank != info->rank)
        return cli_fail("input '%s' must have shape %s, but %s holds %s (rank %d, not %d)",
                        info->name, want, file, got, t->rank, info->rank);
    for (int d = 0; d < info->rank; d++) {
        if (info->dims[d] >= 0 && info->dims[d] != t->dims[d])
            return cli_fail("input '%s' must have shape %s, but %s holds %s (dim %d)", info->name,
                            want, file, got, d);
        if (info->dims[d] >= 0 || !info->dim_names[d])
            continue;
        int k = symbol_find(syms, info->dim_names[d]);
        if (k >= 0 && syms->sizes[k] != t->dims[d])
            return cli_fail("%s gives '%s' = %lld (input '%s' dim %d), but %s gave %lld", file,
                            info->dim_names[d], (long long)t->dims[d], info->name, d, syms->from[k],
                            (long long)syms->sizes[k]);
        if (k < 0 && syms->n < 64 * TSR_MAX_RANK) {
            syms->names[syms->n] = info->dim_names[d];
            syms->sizes[syms->n] = t->dims[d];
            syms->from[syms->n++] = file;
        }
    }
    return CLI_OK;
}

static int make_inputs(const tsr_graph *g, const run_options *o, tsr_tensor *inputs)
{
    int n_in = tsr_graph_num_inputs(g);
    const char **file_for = calloc((size_t)n_in + 1, sizeof *file_for);
    symbol_sizes *syms = calloc(1, sizeof *syms);
    int rc = CLI_OK;
    if (!file_for || !syms) {
        rc = cli_fail("out of memory");
        goto done;
    }
    if ((rc = bind_input_args(g, o, file_for)) != CLI_OK)
        goto done;
    for (int i = 0; i < n_in && rc == CLI_OK; i++) {
        tsr_value_info info;
        if (tsr_graph_input_info(g, i, &info) != TSR_OK) {
            rc = cli_fail_status(NULL);
            break;
        }
        if (file_for[i])
            rc = load_input_file(&info, file_for[i], syms, &inputs[i]);
    }
    /* Each random input has its own stream, so that giving one input from
     * a file does not change the random values of the others. */
    cli_rng seeds;
    cli_rng_seed(&seeds, o->seed);
    for (int i = 0; i < n_in && rc == CLI_OK; i++) {
        uint64_t seed = cli_rng_next(&seeds);
        if (file_for[i])
            continue;
        tsr_value_info info;
        tsr_graph_input_info(g, i, &info);
        if (info.rank < 0) {
            rc = cli_fail("input '%s' has an unknown rank: give it with --input", info.name);
            break;
        }
        tsr_tensor *t = &inputs[i];
        t->dtype = info.dtype;
        t->rank = info.rank;
        for (int d = 0; d < info.rank; d++) {
            int k = info.dim_names[d] ? symbol_find(syms, info.dim_names[d]) : -1;
            t->dims[d] = info.dims[d] >= 0 ? info.dims[d] : k >= 0 ? syms->sizes[k] : o->batch;
        }
        rc = cli_fill_random(t, info.name, seed);
    }
done:
    free(file_for);
    free(syms);
    return rc;
}

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
    if (n <= 0) {
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

/* Output names become file names: only [A-Za-z0-9._-] survive, and names
 * that collide (ignoring case, for case-insensitive file systems) are
 * told apart by a numeric suffix. */
static void sanitize_name(const char *name, char *buf, size_t size)
{
    size_t n = 0;
    for (const char *c = name; *c && n + 1 < size && n < 200; c++) {
        bool keep = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
                    (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-';
        buf[n++] = keep ? *c : '_';
    }
    buf[n] = '\0';
    if (n == 0)
        snprintf(buf, size, "output");
}

static bool name_taken(char **names, int n, const char *name)
{
    for (int k = 0; k < n; k++)
        if (strcasecmp(names[k], name) == 0)
            return true;
    return false;
}

static int make_output_paths(const tsr_graph *g, const char *dir, char **paths)
{
    int n_out = tsr_graph_num_outputs(g);
    char **stems = calloc((size_t)n_out + 1, sizeof *stems);
    int rc = stems ? CLI_OK : cli_fail("out of memory");
    for (int o = 0; o < n_out && rc == CLI_OK; o++) {
        tsr_value_info info;
        tsr_graph_output_info(g, o, &info);
        char base[256], stem[300];
        sanitize_name(info.name, base, sizeof base);
        snprintf(stem, sizeof stem, "%s", base);
        for (int k = 1; name_taken(stems, o, stem); k++)
            snprintf(stem, sizeof stem, "%s_%d", base, k);
        size_t len = strlen(dir) + strlen(stem) + 8;
        stems[o] = strdup(stem);
        paths[o] = malloc(len);
        if (!stems[o] || !paths[o]) {
            rc = cli_fail("out of memory");
            break;
        }
        snprintf(paths[o], len, "%s/%s.npy", dir, stem);
    }
    for (int o = 0; stems && o < n_out; o++)
        free(stems[o]);
    free(stems);
    return rc;
}

/* mkdir -p */
static int make_dir(const char *dir)
{
    char *path = strdup(dir);
    if (!path)
        return cli_fail("out of memory");
    int rc = CLI_OK;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        struct stat sb;
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            rc = cli_fail("cannot create directory '%s': %s", path, strerror(errno));
            break;
        }
        if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            rc = cli_fail("cannot create directory '%s': a file of that name exists", path);
            break;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    free(path);
    return rc;
}

/* Writes every output; on a failure, removes the files this run created
 * so that no partial set of outputs is left. */
static int write_outputs(int n_out, char **paths, const tsr_tensor *outputs)
{
    bool *created = calloc((size_t)n_out + 1, sizeof *created);
    if (!created)
        return cli_fail("out of memory");
    int rc = CLI_OK;
    for (int o = 0; o < n_out; o++) {
        bool existed = access(paths[o], F_OK) == 0;
        if (tsr_npy_write(paths[o], &outputs[o]) != TSR_OK) {
            rc = cli_fail_status(paths[o]);
            for (int k = 0; k < o; k++)
                if (created[k])
                    unlink(paths[k]);
            break;
        }
        created[o] = !existed;
    }
    free(created);
    return rc;
}

/* --------------------------------------------------------------- main */

static int run_model(const run_options *o, tsr_graph *g)
{
    int n_in = tsr_graph_num_inputs(g), n_out = tsr_graph_num_outputs(g);
    tsr_tensor *inputs = calloc((size_t)n_in + 1, sizeof *inputs);
    tsr_tensor *outputs = calloc((size_t)n_out + 1, sizeof *outputs);
    char **paths = calloc((size_t)n_out + 1, sizeof *paths);
    tsr_plan *plan = NULL;
    int rc = CLI_OK;
    if (!inputs || !outputs || !paths) {
        rc = cli_fail("out of memory");
        goto done;
    }
    if (o->output && n_out != 1) {
        rc = cli_fail("--output needs a model with one output, %s has %d: use --output-dir",
                      o->model, n_out);
        goto done;
    }
    if ((rc = make_inputs(g, o, inputs)) != CLI_OK)
        goto done;

    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = o->device;
    opts.threads = (int)o->threads;
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
        size_t bytes = tsr_tensor_bytes(&outputs[k]);
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
        if ((rc = make_output_paths(g, o->output_dir, paths)) == CLI_OK &&
            (rc = make_dir(o->output_dir)) == CLI_OK)
            rc = write_outputs(n_out, paths, outputs);
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
    for (int k = 0; outputs && k < n_out; k++)
        free(outputs[k].data);
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
