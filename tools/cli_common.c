/* Pieces every subcommand uses: errors, option parsing, models, random
 * data. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

bool cli_parse_double(cli_args *a, const char *option, const char *text, double min, double max,
                      double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v)) {
        a->status = cli_usage_error(a->cmd, "%s expects a number, got '%s'", option, text);
        return false;
    }
    if (v < min || v > max) {
        a->status = isinf(max)
                        ? cli_usage_error(a->cmd, "%s must be at least %g, got %g", option, min, v)
                        : cli_usage_error(a->cmd, "%s must be between %g and %g, got %g", option,
                                          min, max, v);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_real_dtype(cli_args *a, const char *option, const char *text, tsr_dtype *out)
{
    if (strcmp(text, "float32") == 0)
        *out = TSR_FLOAT32;
    else if (strcmp(text, "float64") == 0)
        *out = TSR_FLOAT64;
    else {
        a->status =
            cli_usage_error(a->cmd, "%s must be float32 or float64, not '%s'", option, text);
        return false;
    }
    return true;
}

bool cli_arg_eval_options(cli_args *a, const char **device, long long *threads, tsr_dtype *dtype)
{
    const char *v;
    if (cli_arg_option(a, "--device", &v)) {
        *device = v;
    } else if (cli_arg_option(a, "--threads", &v)) {
        if (v)
            cli_parse_int(a, "--threads", v, 0, 4096, threads);
    } else if (cli_arg_option(a, "--dtype", &v)) {
        if (v)
            cli_parse_real_dtype(a, "--dtype", v, dtype);
    } else {
        return false;
    }
    return true;
}

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
    tsr_random_seed(&r->base, seed);
    r->has_spare = false;
}

uint64_t cli_rng_next(cli_rng *r)
{
    return tsr_random_next(&r->base);
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

/* ------------------------------------------------ stopping on signals */

static const int stop_signals[] = {SIGINT, SIGTERM};
static struct sigaction stop_previous[2];
static bool stop_caught[2];
static const char *stop_note;
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    if (stop_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_signal = sig;
    if (stop_note) {
        ssize_t ignored = write(STDERR_FILENO, stop_note, strlen(stop_note));
        (void)ignored;
    }
}

void cli_stop_catch(const char *note)
{
    stop_note = note;
    stop_signal = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int k = 0; k < 2; k++) {
        stop_caught[k] = sigaction(stop_signals[k], &sa, &stop_previous[k]) == 0;
    }
}

const char *cli_stop_requested(void)
{
    return stop_signal == SIGINT ? "SIGINT" : stop_signal == SIGTERM ? "SIGTERM" : NULL;
}

void cli_stop_release(void)
{
    for (int k = 0; k < 2; k++)
        if (stop_caught[k])
            sigaction(stop_signals[k], &stop_previous[k], NULL);
    stop_caught[0] = stop_caught[1] = false;
}

/* ------------------------------------------------ inputs from .npy files */

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
static int bind_input_args(const tsr_graph *g, const cli_input_args *o, const char **file_for)
{
    int n_in = tsr_graph_num_inputs(g);
    int next_positional = 0;
    for (int k = 0; k < o->n; k++) {
        const char *arg = o->args[k];
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

int cli_make_inputs(const tsr_graph *g, const cli_input_args *o, tsr_tensor *inputs)
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

/* ------------------------------------------------- outputs to .npy files */

/* Output names become file names: only [A-Za-z0-9._-] survive, and names
 * that collide (ignoring case, for case-insensitive file systems) are
 * told apart by a numeric suffix. */
void cli_sanitize_name(const char *name, char *buf, size_t size)
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

int cli_output_paths(int n_out, const char *const *names, const char *dir, char **paths)
{
    char **stems = calloc((size_t)n_out + 1, sizeof *stems);
    int rc = stems ? CLI_OK : cli_fail("out of memory");
    for (int o = 0; o < n_out && rc == CLI_OK; o++) {
        char base[256], stem[300];
        cli_sanitize_name(names[o], base, sizeof base);
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
int cli_make_dir(const char *dir)
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
int cli_write_outputs(int n_out, char *const *paths, const tsr_tensor *outputs)
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

char *cli_path_beside(const char *path, const char *suffix)
{
    size_t n = strlen(path);
    if (n > 5 && strcmp(path + n - 5, ".onnx") == 0)
        n -= 5;
    else if (n > 4 && strcmp(path + n - 4, ".npz") == 0)
        n -= 4;
    else if (n > 7 && strcmp(path + n - 7, ".extxyz") == 0)
        n -= 7;
    char *s = malloc(n + strlen(suffix) + 1);
    if (s) {
        memcpy(s, path, n);
        strcpy(s + n, suffix);
    }
    return s;
}

int cli_check_writable(const char *option, const char *path)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return cli_fail("%s %s: is a directory", option, path);
    char *dir = strdup(path);
    if (!dir)
        return cli_fail("out of memory");
    char *slash = strrchr(dir, '/');
    const char *d = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
    int rc = CLI_OK;
    if (stat(d, &sb) != 0 || !S_ISDIR(sb.st_mode))
        rc = cli_fail("%s %s: the directory '%s' does not exist", option, path, d);
    else if (access(d, W_OK) != 0)
        rc = cli_fail("%s %s: the directory '%s' is not writable", option, path, d);
    free(dir);
    return rc;
}
