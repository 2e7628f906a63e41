/* `tessera ictp eval`: energies, forces and stress of an ICTP model
 * (include/tessera/ictp.h) for every frame of an extended XYZ file;
 * `tessera ictp bench`: the time and memory one evaluation takes. */
#include "cli.h"
#include "tessera/ictp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char ictp_usage[] =
    "Usage: tessera ictp eval MODEL.npz STRUCTURES.extxyz [options]\n"
    "\n"
    "Evaluates an ICTP potential (MODEL.npz with MODEL.json beside it, see\n"
    "docs/ictp.md) on every frame of STRUCTURES.extxyz: the energy, the forces\n"
    "-dE/dr and, with --stress, the stress (1/V) dE/d(strain).\n"
    "\n"
    "Options:\n"
    "  --stress              compute the stress too (every frame needs a cell)\n"
    "  --dtype float32|float64  precision of the evaluation (default float64)\n"
    "  --device DEV          device to run on (default: the library's default)\n"
    "  --threads N           threads, 0 for all cores (default 0)\n"
    "  --radial-table N      tabulate the radial MLPs as cubic splines on N intervals\n"
    "                        (16..65536; faster, within the spline's error of the\n"
    "                        model, docs/ictp.md; default: the MLPs, exact)\n"
    "  --output OUT.extxyz   write every frame back with energy, forces (and stress)\n"
    "                        from the model; OUT must not be the input file\n"
    "  --json                print the results as JSON instead of a table\n"
    "  -h, --help            show this help\n"
    "\n"
    "Nothing is written unless every frame succeeded; files are written atomically.\n"
    "\n"
    "Usage: tessera ictp bench MODEL.npz STRUCTURE [--iters N] [--stress] [--dtype D]\n"
    "                          [--device DEV] [--threads N] [--radial-table N] [--profile]\n"
    "\n"
    "Times energy + forces (+ stress) evaluations of the first frame of STRUCTURE\n"
    "(.extxyz or .npz) after one untimed warm-up: milliseconds per evaluation,\n"
    "atom-steps per second and the peak resident memory of the process.\n"
    "  --iters N             timed evaluations (default 10)\n"
    "  --profile             then the time of each plan step over the timed\n"
    "                        evaluations (on stderr)\n"
    "\n"
    "Usage: tessera ictp train TRAIN.extxyz --valid VALID.extxyz --out MODEL.npz [options]\n"
    "\n"
    "Fits a new ICTP potential to the energies and forces of TRAIN.extxyz with the\n"
    "published recipe (docs/ictp.md, Training) and writes the best model (lowest\n"
    "validation loss, moving-average weights) as MODEL.npz + MODEL.json.\n"
    "  --config CONFIG.json  model configuration (a model .json's \"config\"); default:\n"
    "                        the published settings for the species of the data\n"
    "  --epochs N            epochs (default 100)\n"
    "  --batch-size N        structures per step (default 5)\n"
    "  --lr X                learning rate (default 0.01; x0.8 after 50 flat epochs)\n"
    "  --energy-weight X     w_E (default 1)    --forces-weight X   w_F (default 10)\n"
    "  --stress-weight X     w_S (default 1), for frames with a stress or virial and\n"
    "                        a cell\n"
    "  --seed N              initial weights and shuffling (default 0)\n"
    "  --log LOG.csv         one row of validation errors per epoch (default: beside\n"
    "                        --out, .csv)\n"
    "  --plot PLOT.png       loss and validation errors per epoch, drawn by gnuplot\n"
    "                        (default: beside --out, .png)   --no-plot   none\n"
    "  --checkpoint PATH     saved every epoch; an existing one is resumed\n"
    "  --early-stopping N    stop after N epochs without improvement (0: never)\n"
    "  --dtype, --device, --threads as above\n"
    "Ctrl-C or SIGTERM stops the run after the epoch in progress (a second one at\n"
    "once); the same command resumes from the checkpoint.\n"
    "\n"
    "Usage: tessera ictp test MODEL.npz DATA.extxyz [--dtype D] [--device DEV] [--threads N]\n"
    "\n"
    "Energy (meV/atom) and force (meV/A) MAE and RMSE of a model on labelled data.\n";

static int ictp_main(int argc, char **argv);

const cli_command cli_ictp_command = {
    .name = "ictp",
    .summary = "energies, forces and stress of an ICTP interatomic potential",
    .usage = ictp_usage,
    .main = ictp_main,
};

typedef struct {
    const char *model, *structures, *output, *device;
    bool stress, json, bench, profile;
    tsr_dtype dtype;
    long long threads, iters, radial_table;
} ictp_options;

static int parse_options(int argc, char **argv, ictp_options *o, bool *help)
{
    cli_args a;
    cli_args_init(&a, &cli_ictp_command, argc, argv);
    o->dtype = TSR_FLOAT64;
    o->iters = 10;
    while (cli_args_peek(&a)) {
        const char *v;
        if (cli_arg_flag(&a, "--stress")) {
            o->stress = true;
        } else if (!o->bench && cli_arg_flag(&a, "--json")) {
            o->json = true;
        } else if (!o->bench && cli_arg_option(&a, "--output", &v)) {
            o->output = v;
        } else if (o->bench && cli_arg_flag(&a, "--profile")) {
            o->profile = true;
        } else if (cli_arg_option(&a, "--radial-table", &v)) {
            if (v)
                cli_parse_int(&a, "--radial-table", v, 16, 65536, &o->radial_table);
        } else if (o->bench && cli_arg_option(&a, "--iters", &v)) {
            if (v)
                cli_parse_int(&a, "--iters", v, 1, 1000000000, &o->iters);
        } else if (!cli_arg_eval_options(&a, &o->device, &o->threads, &o->dtype)) {
            const char *pos = cli_arg_rest(&a, help);
            if (!pos)
                continue;
            if (!o->model)
                o->model = pos;
            else if (!o->structures)
                o->structures = pos;
            else
                return cli_usage_error(&cli_ictp_command, "unexpected argument '%s'", pos);
        }
    }
    if (a.status || *help)
        return a.status;
    if (!o->model || !o->structures)
        return cli_usage_error(&cli_ictp_command, "missing %s",
                               o->model ? (o->bench ? "STRUCTURE" : "STRUCTURES.extxyz")
                                        : "MODEL.npz");
    struct stat in_st, out_st;
    if (o->output && stat(o->output, &out_st) == 0 && stat(o->structures, &in_st) == 0 &&
        in_st.st_dev == out_st.st_dev && in_st.st_ino == out_st.st_ino)
        return cli_usage_error(&cli_ictp_command,
                               "--output %s is the input file; it is never overwritten", o->output);
    return CLI_OK;
}

static void print_matrix(const double *m, int rows, bool json)
{
    for (int r = 0; r < rows; r++) {
        if (json)
            printf("%s[%.17g, %.17g, %.17g]", r ? ", " : "", m[3 * r], m[3 * r + 1], m[3 * r + 2]);
        else
            printf("  %22.15g %22.15g %22.15g\n", m[3 * r], m[3 * r + 1], m[3 * r + 2]);
    }
}

static void print_results(const ictp_options *o, int64_t n_frames, tsr_atoms *const *frames,
                          const double *energies, double *const *forces, const double *stress)
{
    if (o->json)
        printf("[");
    for (int64_t f = 0; f < n_frames; f++) {
        int64_t n = tsr_atoms_count(frames[f]);
        if (o->json) {
            printf("%s\n {\"frame\": %lld, \"n_atoms\": %lld, \"energy\": %.17g, \"forces\": [",
                   f ? "," : "", (long long)f, (long long)n, energies[f]);
            print_matrix(forces[f], (int)n, true);
            printf("]");
            if (o->stress) {
                printf(", \"stress\": [");
                print_matrix(stress + 9 * f, 3, true);
                printf("]");
            }
            printf("}");
        } else {
            printf("frame %lld: %lld atoms, energy %.15g\nforces:\n", (long long)f, (long long)n,
                   energies[f]);
            print_matrix(forces[f], (int)n, false);
            if (o->stress) {
                printf("stress:\n");
                print_matrix(stress + 9 * f, 3, false);
            }
        }
    }
    if (o->json)
        printf("\n]\n");
}

/* The model's evaluator and the frames of o->structures (.npz or extended XYZ). */
static int load(const ictp_options *o, tsr_ictp_evaluator **ev_out, int64_t *n_frames_out,
                tsr_atoms ***frames_out)
{
    tsr_ictp_model *model = NULL;
    if (tsr_ictp_model_load(o->model, &model) != TSR_OK)
        return cli_fail_status(o->model);
    tsr_ictp_options opt;
    tsr_ictp_options_init(&opt);
    opt.device = o->device;
    opt.dtype = o->dtype;
    opt.threads = (int)o->threads;
    opt.radial_table = (int)o->radial_table;
    tsr_status st = tsr_ictp_evaluator_create(model, &opt, ev_out);
    tsr_ictp_model_destroy(model);
    if (st != TSR_OK)
        return cli_fail_status(NULL);
    size_t len = strlen(o->structures);
    bool npz = len >= 4 && strcmp(o->structures + len - 4, ".npz") == 0;
    st = npz ? tsr_atoms_read_npz(o->structures, n_frames_out, frames_out)
             : tsr_extxyz_read(o->structures, n_frames_out, frames_out);
    if (st != TSR_OK) {
        tsr_ictp_evaluator_destroy(*ev_out);
        *ev_out = NULL;
        return cli_fail_status(o->structures);
    }
    return CLI_OK;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Peak resident memory (VmHWM) in MiB, or -1 where /proc does not tell. */
static double peak_rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    double kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lf kB", &kib) == 1)
            break;
    fclose(f);
    return kib < 0 ? -1 : kib / 1024.0;
}

static int bench_main(int argc, char **argv)
{
    ictp_options o = {.bench = true};
    bool help = false;
    int rc = parse_options(argc, argv, &o, &help);
    if (rc != CLI_OK || help)
        return rc;
    tsr_ictp_evaluator *ev = NULL;
    tsr_atoms **frames = NULL;
    int64_t n_frames = 0;
    double *forces = NULL;
    if ((rc = load(&o, &ev, &n_frames, &frames)) != CLI_OK)
        goto done;
    if (n_frames < 1) {
        rc = cli_fail("%s: no frames", o.structures);
        goto done;
    }
    int64_t n = tsr_atoms_count(frames[0]);
    forces = calloc(3 * (size_t)n + 1, sizeof *forces);
    if (!forces) {
        rc = cli_fail("out of memory");
        goto done;
    }
    /* The mean over the timed evaluations, and the fastest one: on a shared
     * machine the mean moves with the neighbours' load, the fastest less. */
    double e = 0, stress[9], t0 = 0, fastest = INFINITY;
    for (long long it = 0; it <= o.iters; it++) {
        if (it == 1) {
            t0 = now_seconds();
            if (o.profile && tsr_plan_set_profiling(tsr_ictp_evaluator_plan(ev), 1) != TSR_OK) {
                rc = cli_fail_status(NULL);
                goto done;
            }
        }
        double start = now_seconds();
        if (tsr_ictp_evaluate(ev, frames[0], &e, forces, o.stress ? stress : NULL, NULL) !=
            TSR_OK) {
            rc = cli_fail("%s: %s", o.structures, tsr_last_error());
            goto done;
        }
        double took = now_seconds() - start;
        if (it > 0 && took < fastest)
            fastest = took;
    }
    double per = (now_seconds() - t0) / (double)o.iters;
    printf("structure: %lld atoms (%s)\n", (long long)n, o.structures);
    printf("energy: %.15g\n", e);
    char radial[64] = "radial MLPs";
    if (o.radial_table > 0)
        snprintf(radial, sizeof radial, "radial table of %lld intervals", o.radial_table);
    printf("ms per evaluation: %.3f (energy + forces%s, %s, %s, %lld iterations)\n", per * 1e3,
           o.stress ? " + stress" : "", tsr_dtype_name(o.dtype), radial, o.iters);
    printf("fastest evaluation: %.3f ms\n", fastest * 1e3);
    printf("atom-steps per second: %.1f\n", (double)n / per);
    printf("peak resident memory: %.1f MiB\n", peak_rss_mib());
    if (o.profile && tsr_plan_print_profile(tsr_ictp_evaluator_plan(ev), stderr) != TSR_OK)
        rc = cli_fail_status(NULL);
done:
    free(forces);
    tsr_atoms_destroy_frames(n_frames, frames);
    tsr_ictp_evaluator_destroy(ev);
    return rc;
}

static int eval_main(int argc, char **argv)
{
    ictp_options o = {0};
    bool help = false;
    int rc = parse_options(argc, argv, &o, &help);
    if (rc != CLI_OK || help)
        return rc;
    tsr_ictp_evaluator *ev = NULL;
    tsr_atoms **frames = NULL;
    int64_t n_frames = 0;
    double *energies = NULL, *stress = NULL, **forces = NULL;
    if ((rc = load(&o, &ev, &n_frames, &frames)) != CLI_OK)
        goto done;
    energies = calloc((size_t)n_frames + 1, sizeof *energies);
    stress = calloc(9 * (size_t)n_frames + 1, sizeof *stress);
    forces = calloc((size_t)n_frames + 1, sizeof *forces);
    if (!energies || !stress || !forces) {
        rc = cli_fail("out of memory");
        goto done;
    }
    for (int64_t f = 0; f < n_frames; f++) {
        int64_t n = tsr_atoms_count(frames[f]);
        forces[f] = calloc(3 * (size_t)n + 1, sizeof **forces);
        if (!forces[f]) {
            rc = cli_fail("out of memory");
            goto done;
        }
        if (tsr_ictp_evaluate(ev, frames[f], &energies[f], forces[f],
                              o.stress ? stress + 9 * f : NULL, NULL) != TSR_OK) {
            char what[64];
            snprintf(what, sizeof what, "frame %lld", (long long)f);
            rc = cli_fail("%s: %s: %s", o.structures, what, tsr_last_error());
            goto done;
        }
    }
    if (o.output) {
        for (int64_t f = 0; f < n_frames; f++) {
            if (tsr_atoms_set_energy(frames[f], energies[f]) != TSR_OK ||
                tsr_atoms_set_forces(frames[f], forces[f]) != TSR_OK ||
                (o.stress && tsr_atoms_set_stress(frames[f], stress + 9 * f) != TSR_OK)) {
                rc = cli_fail_status(NULL);
                goto done;
            }
        }
        if (tsr_extxyz_write(o.output, n_frames, (const tsr_atoms *const *)frames) != TSR_OK) {
            rc = cli_fail_status(o.output);
            goto done;
        }
    }
    print_results(&o, n_frames, frames, energies, forces, stress);
done:
    for (int64_t f = 0; forces && f < n_frames; f++)
        free(forces[f]);
    free(forces);
    free(energies);
    free(stress);
    tsr_atoms_destroy_frames(n_frames, frames);
    tsr_ictp_evaluator_destroy(ev);
    return rc;
}

static int ictp_main(int argc, char **argv)
{
    if (argc < 1)
        return cli_usage_error(&cli_ictp_command, "missing a subcommand (eval or bench)");
    if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        fputs(ictp_usage, stdout);
        return CLI_OK;
    }
    if (strcmp(argv[0], "eval") == 0)
        return eval_main(argc - 1, argv + 1);
    if (strcmp(argv[0], "bench") == 0)
        return bench_main(argc - 1, argv + 1);
    if (strcmp(argv[0], "train") == 0)
        return ictp_train_main(argc - 1, argv + 1);
    if (strcmp(argv[0], "test") == 0)
        return ictp_test_main(argc - 1, argv + 1);
    return cli_usage_error(&cli_ictp_command,
                           "unknown subcommand '%s' (available: eval, bench, train, test)",
                           argv[0]);
}
