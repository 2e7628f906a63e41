/* `tessera info`: what a model takes and gives, what it is made of, and
 * what a plan of it costs. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char info_usage[] =
    "Usage: tessera info MODEL [options]\n"
    "\n"
    "Prints MODEL's inputs and outputs (symbolic dims by name), its node and op\n"
    "counts and parameter count, and the estimated FLOPs, arena bytes and constant\n"
    "bytes of a plan on --device with symbolic dims set to --batch (FLOPs after the\n"
    "device's graph passes: fused epilogues count their element-wise work).\n"
    "\n"
    "Options:\n"
    "  --graph      also print every node of the graph\n"
    "  --batch N    size of the symbolic dims for the plan (default 1)\n"
    "  --device DEV device to plan for (default: the library's default)\n"
    "  --stacks     also print the plan's depth-first stacks (which ops formed each,\n"
    "               and its tile sizes)\n"
    "  --ops        also print, per op, how many nodes use it and which backend runs\n"
    "               them on each device at --batch (\"fused\": folded into another\n"
    "               node by the device's passes). A model with ops Tessera does not\n"
    "               know fails to load with an error naming every one of them.\n"
    "  -h, --help   show this help\n";

/* Which backends run the nodes of one op type on one device. */
#define OPS_MAX_BACKENDS 8
typedef struct op_row {
    const char *op;
    int nodes;
    struct {
        const char *backend; /* "fused", "unnamed" or a backend's name */
        int count;
    } on[OPS_MAX_BACKENDS];
} op_row;

static void count_backend(op_row *row, const char *backend)
{
    int k = 0;
    while (k < OPS_MAX_BACKENDS && row->on[k].backend && strcmp(row->on[k].backend, backend) != 0)
        k++;
    if (k == OPS_MAX_BACKENDS)
        return;
    row->on[k].backend = backend;
    row->on[k].count++;
}

static void format_backends(const op_row *row, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = 0;
    for (int k = 0; k < OPS_MAX_BACKENDS && row->on[k].backend && len < size; k++)
        len += (size_t)snprintf(buf + len, size - len, "%s%s %d", k ? ", " : "", row->on[k].backend,
                                row->on[k].count);
}

/* One plan per device; the rows of every op type, by first use. */
static int print_ops_on(const tsr_graph *g, const char *device, long long batch, op_row *rows,
                        int n_rows)
{
    int n_in = tsr_graph_num_inputs(g);
    tsr_tensor *inputs = calloc((size_t)n_in + 1, sizeof *inputs);
    if (!inputs)
        return cli_fail("out of memory");
    tsr_plan *plan = NULL;
    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = device;
    opts.threads = 1;
    opts.autotune = 0; /* which backend a node gets does not depend on its algorithm */
    int rc = cli_default_input_shapes(g, batch, inputs);
    if (rc == CLI_OK && (tsr_plan_create(g, &opts, &plan) != TSR_OK ||
                         tsr_plan_reshape(plan, n_in, inputs) != TSR_OK))
        printf("  %s: cannot plan the model at batch %lld: %s\n", device, batch, tsr_last_error());
    for (int r = 0; r < n_rows; r++)
        memset(rows[r].on, 0, sizeof rows[r].on);
    for (int n = 0; plan && n < tsr_graph_num_nodes(g); n++) {
        const char *name, *op, *backend = "unnamed";
        tsr_graph_node_info(g, n, &name, &op);
        int r = 0;
        while (strcmp(rows[r].op, op) != 0)
            r++;
        if (name) {
            tsr_status st = tsr_plan_node_backend(plan, name, &backend);
            backend = st == TSR_OK ? backend : "fused";
        }
        count_backend(&rows[r], backend);
    }
    if (plan) {
        printf("  on %s (batch %lld):\n", device, batch);
        for (int r = 0; r < n_rows; r++) {
            char buf[256];
            format_backends(&rows[r], buf, sizeof buf);
            printf("    %-28s %5d  %s\n", rows[r].op, rows[r].nodes, buf);
        }
    }
    tsr_plan_destroy(plan);
    free(inputs);
    return rc;
}

static int print_ops(const tsr_graph *g, long long batch)
{
    int n_nodes = tsr_graph_num_nodes(g), n_rows = 0;
    op_row *rows = calloc((size_t)n_nodes + 1, sizeof *rows);
    char *devices = strdup(tsr_device_names());
    int rc = rows && devices ? CLI_OK : cli_fail("out of memory");
    for (int n = 0; rc == CLI_OK && n < n_nodes; n++) {
        const char *name, *op;
        tsr_graph_node_info(g, n, &name, &op);
        int r = 0;
        while (r < n_rows && strcmp(rows[r].op, op) != 0)
            r++;
        if (r == n_rows)
            rows[n_rows++].op = op;
        rows[r].nodes++;
    }
    if (rc == CLI_OK)
        printf("Ops (op, nodes, backends running them):\n");
    for (char *save = NULL, *d = devices ? strtok_r(devices, ", ", &save) : NULL; rc == CLI_OK && d;
         d = strtok_r(NULL, ", ", &save))
        rc = print_ops_on(g, d, batch, rows, n_rows);
    free(devices);
    free(rows);
    return rc;
}

static int info_main(int argc, char **argv);

const cli_command cli_info_command = {
    .name = "info",
    .summary = "describe a model: inputs, outputs, ops, parameters, cost",
    .usage = info_usage,
    .main = info_main,
};

static void print_values(const tsr_graph *g, bool inputs)
{
    int n = inputs ? tsr_graph_num_inputs(g) : tsr_graph_num_outputs(g);
    printf("%s (%d):\n", inputs ? "Inputs" : "Outputs", n);
    for (int i = 0; i < n; i++) {
        tsr_value_info info;
        tsr_status st =
            inputs ? tsr_graph_input_info(g, i, &info) : tsr_graph_output_info(g, i, &info);
        if (st != TSR_OK)
            continue;
        char shape[512];
        cli_format_info_shape(&info, shape, sizeof shape);
        printf("  %s: %s %s\n", info.name, tsr_dtype_name(info.dtype), shape);
    }
}

static void print_bytes(const char *label, size_t bytes)
{
    double mib = (double)bytes / (1024.0 * 1024.0);
    printf("  %s %zu bytes (%.2f MiB)\n", label, bytes, mib);
}

/* The cost part needs a plan: concrete shapes and every node on a kernel. */
static int print_plan(const tsr_graph *g, const char *device, long long batch, bool stacks)
{
    int n_in = tsr_graph_num_inputs(g);
    tsr_tensor *inputs = calloc((size_t)n_in + 1, sizeof *inputs);
    tsr_plan *plan = NULL;
    tsr_plan_stats stats;
    int rc = inputs ? CLI_OK : cli_fail("out of memory");
    if (rc == CLI_OK)
        rc = cli_default_input_shapes(g, batch, inputs);
    if (rc == CLI_OK) {
        tsr_compile_options opts;
        tsr_compile_options_init(&opts);
        opts.device = device;
        opts.threads = 1;
        opts.autotune = 0; /* FLOPs and arena bytes do not depend on the algorithms */
        if (tsr_plan_create(g, &opts, &plan) != TSR_OK ||
            tsr_plan_reshape(plan, n_in, inputs) != TSR_OK ||
            tsr_plan_get_stats(plan, &stats) != TSR_OK)
            rc = cli_fail_status("cannot plan the model");
    }
    if (rc == CLI_OK) {
        printf("Plan (device %s, batch %lld):\n", device, batch);
        printf("  FLOPs: %.0f (%.3f GFLOPs)\n", stats.flops, stats.flops * 1e-9);
        print_bytes("Arena:", stats.arena_bytes);
        print_bytes("Constants:", stats.constant_bytes);
        printf("  Steps: %d\n", stats.n_steps);
        if (stats.n_transfers || stats.uploaded_bytes) {
            printf("  Transfers: %d per run\n", stats.n_transfers);
            print_bytes("Uploaded to the device:", stats.uploaded_bytes);
        }
    }
    if (rc == CLI_OK && stacks) {
        printf("Depth-first stacks:\n");
        fflush(stdout);
        if (tsr_plan_print_stacks(plan, stdout) != TSR_OK)
            rc = cli_fail_status(NULL);
    }
    tsr_plan_destroy(plan);
    free(inputs);
    return rc;
}

static int info_main(int argc, char **argv)
{
    cli_args a;
    cli_args_init(&a, &cli_info_command, argc, argv);
    const char *model = NULL;
    const char *device = tsr_default_device();
    bool graph = false, stacks = false, ops = false, help = false;
    long long batch = 1;
    while (cli_args_peek(&a)) {
        const char *v;
        if (cli_arg_flag(&a, "--graph")) {
            graph = true;
        } else if (cli_arg_flag(&a, "--stacks")) {
            stacks = true;
        } else if (cli_arg_flag(&a, "--ops")) {
            ops = true;
        } else if (cli_arg_option(&a, "--device", &v)) {
            if (v)
                device = v;
        } else if (cli_arg_option(&a, "--batch", &v)) {
            if (v)
                cli_parse_int(&a, "--batch", v, 1, 1 << 24, &batch);
        } else {
            const char *pos = cli_arg_rest(&a, &help);
            if (!pos)
                continue;
            if (model)
                return cli_usage_error(&cli_info_command, "unexpected argument '%s'", pos);
            model = pos;
        }
    }
    if (a.status || help)
        return a.status;
    if (!model)
        return cli_usage_error(&cli_info_command, "missing MODEL");

    tsr_graph *g = NULL;
    int rc = cli_load_model(model, &g);
    if (rc != CLI_OK)
        return rc;
    tsr_graph_stats stats;
    if (tsr_graph_get_stats(g, &stats) != TSR_OK) {
        tsr_graph_destroy(g);
        return cli_fail_status(NULL);
    }
    printf("Model: %s\n", model);
    print_values(g, true);
    print_values(g, false);
    printf("Nodes: %d\n", stats.n_nodes);
    printf("Ops:");
    for (int k = 0; k < stats.n_op_types; k++)
        printf("%s %s %d", k ? "," : "", stats.op_types[k], stats.op_counts[k]);
    printf("%s\n", stats.n_op_types ? "" : " none");
    printf("Parameters: %lld (%.2f M)\n", (long long)stats.n_parameters,
           (double)stats.n_parameters * 1e-6);
    if (graph) {
        printf("Graph:\n");
        fflush(stdout);
        if (tsr_graph_print(g, stdout) != TSR_OK)
            rc = cli_fail_status(NULL);
    }
    if (rc == CLI_OK) {
        fflush(stdout);
        rc = print_plan(g, device, batch, stacks);
    }
    if (rc == CLI_OK && ops)
        rc = print_ops(g, batch);
    tsr_graph_destroy(g);
    return rc;
}
