/* Pieces every subcommand uses: errors, option parsing, models, random
 * data. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void vreport(const char *fmt, va_list ap)
{
    fputs("tessera: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
    return CLI_FAIL;
}

int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
    if (cmd) {
        /* The synopsis only: the whole help would bury the message. */
        const char *end = strstr(cmd->usage, "\n\n");
        fprintf(stderr, "%.*s\nRun 'tessera help %s' for the options.\n",
                end ? (int)(end - cmd->usage) : (int)strlen(cmd->usage), cmd->usage, cmd->name);
    } else
        fputs("Run 'tessera --help' for the list of commands.\n", stderr);
    return CLI_USAGE;
}

int cli_fail_status(const char *what)
{
    const char *msg = tsr_last_error();
    if (!*msg)
        msg = "unknown failure";
    if (what && !strstr(msg, what))
        return cli_fail("%s: %s", what, msg);
    return cli_fail("%s", msg);
}

/* ------------------------------------------------------------ options */

void cli_args_init(cli_args *a, const cli_command *cmd, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->argc = argc;
    a->argv = argv;
}

const char *cli_args_peek(cli_args *a)
{
    if (a->status || a->i >= a->argc)
        return NULL;
    return a->argv[a->i];
}

bool cli_arg_flag(cli_args *a, const char *name)
{
    const char *arg = cli_args_peek(a);
    if (!arg || a->only_positional || strcmp(arg, name) != 0)
        return false;
    a->i++;
    return true;
}

bool cli_arg_option(cli_args *a, const char *name, const char **value_out)
{
    const char *arg = cli_args_peek(a);
    size_t n = strlen(name);
    *value_out = NULL;
    if (!arg || a->only_positional || strncmp(arg, name, n) != 0)
        return false;
    const char *value;
    if (arg[n] == '=') {
        value = arg + n + 1;
        a->i++;
    } else if (arg[n] == '\0') {
        value = a->i + 1 < a->argc ? a->argv[a->i + 1] : NULL;
        a->i += 2;
    } else {
        return false;
    }
    /* "--output --json" is a forgotten value, not a file named "--json". */
    if (!value || !*value || strncmp(value, "--", 2) == 0) {
        a->status = cli_usage_error(a->cmd, "option '%s' needs a value", name);
        return true;
    }
    *value_out = value;
    return true;
}

const char *cli_arg_rest(cli_args *a, bool *help_out)
{
    const char *arg = cli_args_peek(a);
    *help_out = false;
    if (!arg)
        return NULL;
    a->i++;
    if (a->only_positional)
        return arg;
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        fputs(a->cmd->usage, stdout);
        *help_out = true;
        a->status = CLI_OK;
        a->i = a->argc;
        return NULL;
    }
    if (strcmp(arg, "--") == 0) {
        a->only_positional = true;
        return NULL;
    }
    if (arg[0] == '-' && arg[1] != '\0') {
        a->status =
            cli_usage_error(a->cmd, "unknown option '%s' for 'tessera %s'", arg, a->cmd->name);
        return NULL;
    }
    return arg;
}

bool cli_parse_int(cli_args *a, const char *option, const char *text, long long min, long long max,
                   long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end) {
        a->status = cli_usage_error(a->cmd, "%s expects an integer, got '%s'", option, text);
        return false;
    }
    if (v < min || v > max) {
        a->status = cli_usage_error(a->cmd, "%s must be between %lld and %lld, got %lld", option,
                                    min, max, v);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_u64(cli_args *a, const char *option, const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-') {
        a->status =
            cli_usage_error(a->cmd, "%s expects a non-negative integer, got '%s'", option, text);
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

/* ------------------------------------------------------------- models */

int cli_load_model(const char *spec, tsr_graph **graph_out)
{
    *graph_out = NULL;
    if (strncmp(spec, "builtin:", 8) == 0) {
        if (strcmp(spec, CLI_BUILTIN_RESNET50) != 0)
            return cli_fail("unknown built-in model '%s' (available: %s)", spec,
                            CLI_BUILTIN_RESNET50);
        return cli_build_resnet50(graph_out);
    }
    if (tsr_graph_load_onnx_file(spec, graph_out) != TSR_OK) {
        tsr_graph_destroy(*graph_out);
        *graph_out = NULL;
        return cli_fail_status(spec);
    }
    return CLI_OK;
}

void cli_format_info_shape(const tsr_value_info *info, char *buf, size_t size)
{
    if (info->rank < 0) {
        snprintf(buf, size, "(unknown rank)");
        return;
    }
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < info->rank && used < size; d++) {
        const char *sep = d ? ", " : "";
        if (info->dims[d] >= 0)
            used +=
                (size_t)snprintf(buf + used, size - used, "%s%lld", sep, (long long)info->dims[d]);
        else if (info->dim_names[d])
            used += (size_t)snprintf(buf + used, size - used, "%s%s", sep, info->dim_names[d]);
        else
            used += (size_t)snprintf(buf + used, size - used, "%s?", sep);
    }
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

void cli_format_dims(int rank, const int64_t *dims, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < rank && used < size; d++)
        used +=
            (size_t)snprintf(buf + used, size - used, "%s%lld", d ? ", " : "", (long long)dims[d]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

int cli_default_input_shapes(const tsr_graph *graph, int64_t batch, tsr_tensor *inputs)
{
    for (int i = 0; i < tsr_graph_num_inputs(graph); i++) {
        tsr_value_info info;
        if (tsr_graph_input_info(graph, i, &info) != TSR_OK)
            return cli_fail_status(NULL);
        if (info.rank < 0)
            return cli_fail("input '%s' has an unknown rank", info.name);
        memset(&inputs[i], 0, sizeof inputs[i]);
        inputs[i].dtype = info.dtype;
        inputs[i].rank = info.rank;
        for (int d = 0; d < info.rank; d++)
            inputs[i].dims[d] = info.dims[d] >= 0 ? info.dims[d] : batch;
    }
    return CLI_OK;
}

/* ------------------------------------------------------------- random */

void cli_rng_seed(cli_rng *r, uint64_t seed)
{
    r->state = seed;
    r->has_spare = false;
}

/* splitmix64: tiny, fast, and good enough for test data and weights. */
uint64_t cli_rng_next(cli_rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double cli_rng_uniform(cli_rng *r)
{
    return ((double)(cli_rng_next(r) >> 11) + 0.5) * 0x1p-53;
}

/* Box-Muller, keeping the second value of each pair. */
double cli_rng_normal(cli_rng *r)
{
    if (r->has_spare) {
        r->has_spare = false;
        return r->spare;
    }
    double radius = sqrt(-2.0 * log(cli_rng_uniform(r)));
    double angle = 6.283185307179586 * cli_rng_uniform(r);
    r->spare = radius * sin(angle);
    r->has_spare = true;
    return radius * cos(angle);
}

int cli_fill_random(tsr_tensor *t, const char *name, uint64_t seed)
{
    size_t elem = tsr_dtype_size(t->dtype);
    if (!elem)
        return cli_fail("input '%s': cannot make random data of dtype %s", name,
                        tsr_dtype_name(t->dtype));
    int64_t n = tsr_tensor_numel(t);
    if (n < 0 || (uint64_t)n > SIZE_MAX / elem)
        return cli_fail("input '%s': cannot make random data for this shape", name);
    t->data = malloc(n ? (size_t)n * elem : 1);
    if (!t->data)
        return cli_fail("input '%s': out of memory for %lld random elements", name, (long long)n);
    cli_rng r;
    cli_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        int64_t k = (int64_t)(cli_rng_next(&r) % 10);
        switch (t->dtype) {
        case TSR_FLOAT32: ((float *)t->data)[i] = (float)cli_rng_normal(&r); break;
        case TSR_FLOAT64: ((double *)t->data)[i] = cli_rng_normal(&r); break;
        case TSR_INT64: ((int64_t *)t->data)[i] = k; break;
        case TSR_INT32: ((int32_t *)t->data)[i] = (int32_t)k; break;
        case TSR_INT8: ((int8_t *)t->data)[i] = (int8_t)k; break;
        case TSR_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)k; break;
        case TSR_BOOL: ((uint8_t *)t->data)[i] = (uint8_t)(k & 1); break;
        default: break;
        }
    }
    return CLI_OK;
}

double cli_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
