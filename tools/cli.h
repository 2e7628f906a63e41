/* Shared pieces of the `tessera` command line program: option parsing,
 * error reporting, models (ONNX files or built-in ones), random inputs. */
#ifndef TSR_CLI_H
#define TSR_CLI_H

#include "core/random.h"
#include "tessera.h"

#include <stdbool.h>
#include <stdint.h>

#define CLI_CHECK(expr)                                                                            \
    do {                                                                                           \
        tsr_status cli_check_status_ = (expr);                                                     \
        if (cli_check_status_ != TSR_OK)                                                           \
            return cli_check_status_;                                                              \
    } while (0)

/* Exit codes: success, a failure while doing the work, a command line that
 * does not make sense. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

typedef struct cli_command {
    const char *name;
    const char *summary;
    const char *usage; /* full help text */
    int (*main)(int argc, char **argv);
} cli_command;

extern const cli_command cli_run_command;
extern const cli_command cli_info_command;
extern const cli_command cli_bench_command;
extern const cli_command cli_grad_command;
extern const cli_command cli_train_command;
extern const cli_command cli_ictp_command;
extern const cli_command cli_md_command;
/* `tessera ictp train` and `tessera ictp test` (cli_ictp_train.c). */
int ictp_train_main(int argc, char **argv);
int ictp_test_main(int argc, char **argv);

/* Prints "tessera: error: <message>" to stderr; returns CLI_FAIL. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same, followed by the command's usage; returns CLI_USAGE. */
int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Reports the library's last error, prefixed by `what` unless the library
 * message already says it; returns CLI_FAIL. */
int cli_fail_status(const char *what);

/* Walks a command's arguments. cli_arg_option matches `--name VALUE` and
 * `--name=VALUE`; cli_arg_flag a bare `--name`. Anything else starting
 * with '-' (after the options were tried) is an unknown option. */
typedef struct cli_args {
    const cli_command *cmd;
    int argc;
    char **argv;
    int i;
    bool only_positional; /* after "--" */
    int status;           /* CLI_USAGE once an error was printed */
} cli_args;

void cli_args_init(cli_args *a, const cli_command *cmd, int argc, char **argv);
/* The current argument, or NULL at the end (or after an error). */
const char *cli_args_peek(cli_args *a);
bool cli_arg_flag(cli_args *a, const char *name);
bool cli_arg_option(cli_args *a, const char *name, const char **value_out);
/* Handles the current argument if it is --help, "--", a positional one or
 * an unknown option: returns the positional argument, else NULL (with
 * a->status set on errors or help). */
const char *cli_arg_rest(cli_args *a, bool *help_out);

/* Strict integer parsing for option values; prints the error itself. */
bool cli_parse_int(cli_args *a, const char *option, const char *text, long long min, long long max,
                   long long *out);
bool cli_parse_u64(cli_args *a, const char *option, const char *text, uint64_t *out);
/* A finite number in [min, max] (max INFINITY: no upper bound). */
bool cli_parse_double(cli_args *a, const char *option, const char *text, double min, double max,
                      double *out);
/* "float32" or "float64" (the dtypes of ICTP evaluation and MD). */
bool cli_parse_real_dtype(cli_args *a, const char *option, const char *text, tsr_dtype *out);
/* Takes --device DEV, --threads N (0: all cores) or --dtype float32|float64,
 * the options every ICTP command shares; false when the next argument is
 * none of them. */
bool cli_arg_eval_options(cli_args *a, const char **device, long long *threads, tsr_dtype *dtype);

/* The functions below that return int print their own error and return
 * CLI_FAIL on failure, CLI_OK otherwise. */

/* A model: an ONNX file or "builtin:resnet50". */
#define CLI_BUILTIN_RESNET50 "builtin:resnet50"
int cli_load_model(const char *spec, tsr_graph **graph_out);
int cli_build_resnet50(tsr_graph **graph_out);

/* "[batch, 3, 224, 224]" from a value info. */
void cli_format_info_shape(const tsr_value_info *info, char *buf, size_t size);
/* "[1, 1000]" from a concrete tensor. */
void cli_format_dims(int rank, const int64_t *dims, char *buf, size_t size);

/* The library's generator (core/random.h) with a Box-Muller spare, so that
 * seeded runs give the same numbers on every machine. */
typedef struct cli_rng {
    tsr_random base;
    bool has_spare;
    double spare;
} cli_rng;

void cli_rng_seed(cli_rng *r, uint64_t seed);
uint64_t cli_rng_next(cli_rng *r);
double cli_rng_uniform(cli_rng *r); /* in (0, 1) */
double cli_rng_normal(cli_rng *r);

/* Allocates t's data for its dtype and shape and fills it with seeded
 * random values: normal(0, 1) for floats, 0..9 for integers, 0/1 for
 * bools. */
int cli_fill_random(tsr_tensor *t, const char *name, uint64_t seed);

/* Shapes for the inputs of `graph` when every non-fixed dim is `batch`:
 * the tensors get no data. */
int cli_default_input_shapes(const tsr_graph *graph, int64_t batch, tsr_tensor *inputs);

double cli_now_seconds(void); /* monotonic clock */

/* Stopping a long run cleanly (md, train, ictp train). cli_stop_catch
 * installs handlers for SIGINT and SIGTERM, also where a background shell
 * left SIGINT ignored (so `kill -INT` still stops a run): the first one
 * writes `note` to stderr and makes cli_stop_requested() return its name
 * ("SIGINT", "SIGTERM"; NULL before), which the run checks at its next safe
 * point (after an MD step, after an epoch and its checkpoint); a second one
 * ends the process at once, by the signal's default action.
 * cli_stop_release restores the handlers found. */
void cli_stop_catch(const char *note);
const char *cli_stop_requested(void);
void cli_stop_release(void);

/* Model inputs from --input [NAME=]FILE.npy arguments, as `tessera run`
 * takes them: NAME= binds by name, plain files bind the inputs in order;
 * inputs given no file get seeded random data (symbolic dims of size
 * `batch` unless a file sized them). The tensors' data is malloc'ed. */
typedef struct cli_input_args {
    const char *const *args; /* as given: "[NAME=]FILE" */
    int n;
    uint64_t seed;
    long long batch;
} cli_input_args;

int cli_make_inputs(const tsr_graph *g, const cli_input_args *a, tsr_tensor *inputs);

/* Output file names for --output-dir: every character outside
 * [A-Za-z0-9._-] becomes '_', names taken already (ignoring case) get _1,
 * _2, ... appended; paths[k] = "DIR/NAME.npy", malloc'ed. */
void cli_sanitize_name(const char *name, char *buf, size_t size);
int cli_output_paths(int n, const char *const *names, const char *dir, char **paths);
int cli_make_dir(const char *dir); /* mkdir -p */
/* "DIR/name.onnx", "DIR/name.npz" or "DIR/name.extxyz" -> "DIR/name<suffix>";
 * other names get the suffix appended. malloc'ed; NULL when out of memory. */
char *cli_path_beside(const char *path, const char *suffix);
/* A file can be written at `path`: its directory exists and it is not a
 * directory itself. Checked before long work, not after an hour of it. */
int cli_check_writable(const char *option, const char *path);
/* Writes every tensor, atomically each; on a failure removes the files
 * this call created, so no partial set is left. */
int cli_write_outputs(int n, char *const *paths, const tsr_tensor *outputs);

#endif
