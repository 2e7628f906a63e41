/* `tessera grad`: gradients of a model's outputs (weighted by seed
 * gradients from .npy files) with respect to inputs or parameters, written
 * as .npy files. The model runs in inference mode (BatchNormalization
 * with its running statistics). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char grad_usage[] =
    "Usage: tessera grad MODEL --seed-grad [OUTPUT=]FILE.npy --wrt NAME[,NAME...]\n"
    "                    --output-dir DIR [options]\n"
    "\n"
    "Differentiates MODEL (an ONNX file or " CLI_BUILTIN_RESNET50 ") in reverse mode: for\n"
    "each NAME in --wrt (a graph input or an initializer) writes the gradient of\n"
    "sum(OUTPUT * SEED) with respect to it to DIR/NAME.npy.\n"
    "\n"
    "Options:\n"
    "  --input [NAME=]FILE.npy     an input, as for 'tessera run' (inputs given no file\n"
    "                              get seeded random data)\n"
    "  --seed-grad [OUTPUT=]FILE   the seed gradient of an output, of the output's dtype\n"
    "                              and shape; without OUTPUT=, the first output not named\n"
    "                              yet. Repeat to differentiate several outputs (their\n"
    "                              gradients add up).\n"
    "  --wrt NAME[,NAME...]        values to differentiate with respect to (repeatable)\n"
    "  --output-dir DIR            where the gradients go, DIR created if needed. Names\n"
    "                              become file names as for 'tessera run --output-dir'.\n"
    "  --device DEV                device to run on (default: the library's default)\n"
    "  --threads N                 threads, 0 for all cores (default 0)\n"
    "  --batch N                   size of symbolic dims of random inputs (default 1)\n"
    "  --seed S                    seed of the random inputs (default 0)\n"
    "  -h, --help                  show this help\n"
    "\n"
    "A wrt value the outputs do not depend on gets a gradient of zeros. Files are\n"
    "written atomically and only after the whole run succeeded.\n";

static int grad_main(int argc, char **argv);

const cli_command cli_grad_command = {
    .name = "grad",
    .summary = "gradients of a model's outputs by inputs or parameters",
    .usage = grad_usage,
    .main = grad_main,
};

typedef struct {
    const char *model;
    const char **input_args;
    int n_input_args;
    const char **seed_args;
    int n_seed_args;
    char *wrt_text; /* every --wrt joined by ',' */
    const char *output_dir;
    const char *device;
    long long threads;
    long long batch;
    uint64_t seed;
} grad_options;

static int append_wrt(grad_options *o, const char *v)
{
    size_t old = o->wrt_text ? strlen(o->wrt_text) : 0;
    char *s = realloc(o->wrt_text, old + strlen(v) + 2);
    if (!s)
        return cli_fail("out of memory");
    if (old)
        s[old++] = ',';
    strcpy(s + old, v);
    o->wrt_text = s;
    return CLI_OK;
}

static int parse_options(int argc, char **argv, grad_options *o, bool *help)
{
    cli_args a;
    cli_args_init(&a, &cli_grad_command, argc, argv);
    o->batch = 1;
    o->input_args = calloc((size_t)argc + 1, sizeof *o->input_args);
    o->seed_args = calloc((size_t)argc + 1, sizeof *o->seed_args);
    if (!o->input_args || !o->seed_args)
        return cli_fail("out of memory");
    while (cli_args_peek(&a)) {
        const char *v;
        if (cli_arg_option(&a, "--input", &v)) {
            if (v)
                o->input_args[o->n_input_args++] = v;
        } else if (cli_arg_option(&a, "--seed-grad", &v)) {
            if (v)
                o->seed_args[o->n_seed_args++] = v;
        } else if (cli_arg_option(&a, "--wrt", &v)) {
            if (v && append_wrt(o, v) != CLI_OK)
                return CLI_FAIL;
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
                return cli_usage_error(&cli_grad_command, "unexpected argument '%s'", pos);
            o->model = pos;
        }
    }
    if (a.status || *help)
        return a.status;
    if (!o->model)
        return cli_usage_error(&cli_grad_command, "missing MODEL");
    if (!o->n_seed_args)
        return cli_usage_error(&cli_grad_command, "missing --seed-grad");
    if (!o->wrt_text)
        return cli_usage_error(&cli_grad_command, "missing --wrt");
    if (!o->output_dir)
        return cli_usage_error(&cli_grad_command, "missing --output-dir");
    return CLI_OK;
}

/* Splits "a,b,c" in place into a new array of names (the caller frees it); empty names are
   errors. */
static int split_names(char *text, const char ***names_out, int *n)
{
    size_t count = 1;
    for (const char *c = text; *c; c++)
        count += *c == ',';
    const char **names = calloc(count, sizeof *names);
    if (!names)
        return cli_fail("out of memory");
    *names_out = names;
    *n = 0;
    for (char *p = text;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (!*p)
            return cli_fail("--wrt: empty name in the list");
        names[(*n)++] = p;
        if (!comma)
            return CLI_OK;
        p = comma + 1;
    }
}

static int output_index(const tsr_graph *g, const char *name, size_t len)
{
    for (int k = 0; k < tsr_graph_num_outputs(g); k++) {
        tsr_value_info info;
        if (tsr_graph_output_info(g, k, &info) == TSR_OK && strlen(info.name) == len &&
            strncmp(info.name, name, len) == 0)
            return k;
    }
    return -1;
}

/* Binds each --seed-grad to an output: *outputs gets the differentiated
 * output names, *files their seed files, in the order given. */
static int bind_seeds(const tsr_graph *g, const grad_options *o, const char **outputs,
                      const char **files)
{
    int n_out = tsr_graph_num_outputs(g);
    bool *used = calloc((size_t)n_out + 1, sizeof *used);
    if (!used)
        return cli_fail("out of memory");
    int rc = CLI_OK;
    for (int k = 0; k < o->n_seed_args && rc == CLI_OK; k++) {
        const char *arg = o->seed_args[k], *eq = strchr(arg, '=');
        int index = eq ? output_index(g, arg, (size_t)(eq - arg)) : -1;
        const char *file = index >= 0 ? eq + 1 : arg;
        if (eq && index < 0) {
            rc = cli_fail("--seed-grad %s: the model has no output named '%.*s'", arg,
                          (int)(eq - arg), arg);
            break;
        }
        for (int j = 0; index < 0 && j < n_out; j++)
            if (!used[j])
                index = j;
        if (index < 0) {
            rc = cli_fail("--seed-grad %s: every output of the model has a seed already", arg);
            break;
        }
        tsr_value_info info;
        tsr_graph_output_info(g, index, &info);
        if (used[index]) {
            rc = cli_fail("output '%s' is given two seed gradients", info.name);
            break;
        }
        if (!*file) {
            rc = cli_fail("--seed-grad %s: no file after '='", arg);
            break;
        }
        used[index] = true;
        outputs[k] = info.name;
        files[k] = file;
    }
    free(used);
    return rc;
}

/* Runs the gradient graph gg (inputs: the model's, then one seed per
 * differentiated output) and writes its gradient outputs. */
static int run_gradient(const grad_options *o, const tsr_graph *gg, int n_seeds,
                        const char *const *seed_files, int n_wrt, const char *const *wrt)
{
    int n_in = tsr_graph_num_inputs(gg), n_out = tsr_graph_num_outputs(gg);
    int n_args = o->n_input_args + n_seeds;
    const char **args = calloc((size_t)n_args + 1, sizeof *args);
    char **seed_args = calloc((size_t)n_seeds + 1, sizeof *seed_args);
    tsr_tensor *inputs = calloc((size_t)n_in + 1, sizeof *inputs);
    tsr_tensor *outputs = calloc((size_t)n_out + 1, sizeof *outputs);
    char **paths = calloc((size_t)n_wrt + 1, sizeof *paths);
    tsr_plan *plan = NULL;
    int rc = CLI_OK;
    if (!args || !seed_args || !inputs || !outputs || !paths) {
        rc = cli_fail("out of memory");
        goto done;
    }
    for (int k = 0; k < o->n_input_args; k++)
        args[k] = o->input_args[k];
    for (int k = 0; k < n_seeds; k++) {
        /* The seed inputs are the last ones, in the order of the seeds. */
        tsr_value_info info;
        tsr_graph_input_info(gg, n_in - n_seeds + k, &info);
        size_t len = strlen(info.name) + strlen(seed_files[k]) + 2;
        seed_args[k] = malloc(len);
        if (!seed_args[k]) {
            rc = cli_fail("out of memory");
            goto done;
        }
        snprintf(seed_args[k], len, "%s=%s", info.name, seed_files[k]);
        args[o->n_input_args + k] = seed_args[k];
    }
    cli_input_args input_args = {args, n_args, o->seed, o->batch};
    if ((rc = cli_make_inputs(gg, &input_args, inputs)) != CLI_OK)
        goto done;
    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = o->device;
    opts.threads = (int)o->threads;
    if (tsr_plan_create(gg, &opts, &plan) != TSR_OK ||
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
    /* The gradients are the last n_wrt outputs. */
    const tsr_tensor *grads = outputs + (n_out - n_wrt);
    if ((rc = cli_output_paths(n_wrt, wrt, o->output_dir, paths)) == CLI_OK &&
        (rc = cli_make_dir(o->output_dir)) == CLI_OK)
        rc = cli_write_outputs(n_wrt, paths, grads);
    for (int k = 0; rc == CLI_OK && k < n_wrt; k++)
        printf("%s -> %s\n", wrt[k], paths[k]);
done:
    tsr_plan_destroy(plan);
    for (int k = 0; inputs && k < n_in; k++)
        free(inputs[k].data);
    for (int k = 0; outputs && k < n_out; k++)
        free(outputs[k].data);
    for (int k = 0; paths && k < n_wrt; k++)
        free(paths[k]);
    for (int k = 0; seed_args && k < n_seeds; k++)
        free(seed_args[k]);
    free(args);
    free(seed_args);
    free(inputs);
    free(outputs);
    free(paths);
    return rc;
}

static int grad_main(int argc, char **argv)
{
    grad_options o = {0};
    bool help = false;
    tsr_graph *g = NULL, *gg = NULL;
    const char **wrt = NULL, **outputs = NULL, **files = NULL;
    int n_wrt = 0;
    int rc = parse_options(argc, argv, &o, &help);
    if (rc != CLI_OK || help)
        goto done;
    struct stat sb;
    if (stat(o.output_dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        rc = cli_fail("--output-dir %s: exists and is not a directory", o.output_dir);
        goto done;
    }
    if ((rc = split_names(o.wrt_text, &wrt, &n_wrt)) != CLI_OK)
        goto done;
    if ((rc = cli_load_model(o.model, &g)) != CLI_OK)
        goto done;
    outputs = calloc((size_t)o.n_seed_args + 1, sizeof *outputs);
    files = calloc((size_t)o.n_seed_args + 1, sizeof *files);
    if (!outputs || !files) {
        rc = cli_fail("out of memory");
        goto done;
    }
    if ((rc = bind_seeds(g, &o, outputs, files)) != CLI_OK)
        goto done;
    if (tsr_graph_gradient(g, o.n_seed_args, outputs, n_wrt, wrt, &gg) != TSR_OK) {
        rc = cli_fail_status(NULL);
        goto done;
    }
    rc = run_gradient(&o, gg, o.n_seed_args, files, n_wrt, wrt);
done:
    tsr_graph_destroy(gg);
    tsr_graph_destroy(g);
    free(wrt);
    free(outputs);
    free(files);
    free(o.input_args);
    free(o.seed_args);
    free(o.wrt_text);
    return rc;
}
