/* `tessera md`: molecular dynamics on an ICTP potential (include/tessera/md.h)
 * with a report every interval, a trajectory appended frame by frame, a CSV
 * log with its PNG plot, and the energy drift at the end. */
#include "cli.h"
#include "plot.h"
#include "tessera/md.h"
#include "train_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char md_usage[] =
    "Usage: tessera md MODEL.npz START.extxyz --steps N --dt FS --trajectory OUT.extxyz\n"
    "                  [options]\n"
    "\n"
    "Runs molecular dynamics with an ICTP potential (MODEL.npz with MODEL.json beside\n"
    "it) from the last frame of START.extxyz. Units: A, fs, eV, amu, K; velocities in\n"
    "A/fs. Masses are START's \"masses\" column if it has one, else the standard atomic\n"
    "weights. Velocities are START's \"velocities\" column (a frame of an earlier\n"
    "trajectory continues it), else Maxwell-Boltzmann at --temperature with zero total\n"
    "momentum, scaled to exactly that temperature.\n"
    "\n"
    "Options:\n"
    "  --steps N             steps to run (required)\n"
    "  --dt FS               timestep in fs (required)\n"
    "  --ensemble E          nve (velocity Verlet, default), langevin (BAOAB) or\n"
    "                        nose-hoover (a Nose-Hoover chain)\n"
    "  --temperature K       thermostat target and start temperature (default 0)\n"
    "  --friction X          Langevin friction in 1/ps (default 10)\n"
    "  --tau FS              Nose-Hoover time constant in fs (default 50)\n"
    "  --chain N             Nose-Hoover chain length (default 3)\n"
    "  --skin A              neighbour list skin in A (default 1); the list is rebuilt\n"
    "                        when an atom moved more than half of it\n"
    "  --seed S              start velocities and Langevin noise (default 0)\n"
    "  --trajectory OUT      extended XYZ trajectory (required), replaced if it exists:\n"
    "                        positions, velocities, forces, energies, time; each frame\n"
    "                        is appended and flushed as it is made, so a run that stops\n"
    "                        keeps every frame written so far. Never the START file.\n"
    "  --every K             a frame every K steps, step 0 included (default 10)\n"
    "  --report K            a report line every K steps (default: 20 lines a run)\n"
    "  --log LOG.csv         the report lines as CSV (default: OUT.csv beside the\n"
    "                        trajectory); --plot PNG draws them (default: OUT.png)\n"
    "  --no-plot             no PNG\n"
    "  --dtype float32|float64  precision of the potential (default float64); the\n"
    "                        integration is in float64 either way\n"
    "  --device DEV          device to run on (default: the library's default)\n"
    "  --threads N           threads, 0 for all cores (default 0)\n"
    "  --radial-table N      the radial MLPs as cubic splines on N intervals (16 to\n"
    "                        65536; faster, within the spline's error: docs/ictp.md)\n"
    "  -h, --help            show this help\n"
    "\n"
    "Report lines (stdout): time (ps), potential, kinetic and total energy (eV),\n"
    "temperature (K) and speed (ns/day) over the last interval; a progress bar on\n"
    "stderr when it is a terminal. At the end: the drift of the conserved energy (the\n"
    "total energy in NVE; with the chain's energy or minus the thermostat's heat\n"
    "otherwise) in meV/atom/ps, a least-squares line through every step.\n";

static int md_main(int argc, char **argv);

const cli_command cli_md_command = {
    .name = "md",
    .summary = "molecular dynamics with an ICTP potential",
    .usage = md_usage,
    .main = md_main,
};

typedef struct {
    const char *model, *start, *trajectory, *log, *plot, *device;
    bool no_plot;
    long long steps, every, report, threads, chain, radial_table;
    double dt, temperature, friction, tau, skin;
    uint64_t seed;
    tsr_md_ensemble ensemble;
    tsr_dtype dtype;
} md_args;

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

static int parse_args(int argc, char **argv, md_args *o, bool *help)
{
    cli_args a;
    cli_args_init(&a, &cli_md_command, argc, argv);
    tsr_md_options defaults;
    tsr_md_options_init(&defaults);
    o->every = 10;
    o->dt = -1;
    o->steps = -1;
    o->friction = defaults.friction;
    o->tau = defaults.nh_tau;
    o->chain = defaults.nh_chain;
    o->skin = defaults.skin;
    o->dtype = TSR_FLOAT64;
    o->ensemble = TSR_MD_NVE;
    while (cli_args_peek(&a)) {
        const char *v;
        if (cli_arg_option(&a, "--steps", &v)) {
            if (v)
                cli_parse_int(&a, "--steps", v, 0, INT64_MAX / 2, &o->steps);
        } else if (cli_arg_option(&a, "--dt", &v)) {
            if (v)
                cli_parse_double(&a, "--dt", v, 1e-6, 1e3, &o->dt);
        } else if (cli_arg_option(&a, "--ensemble", &v)) {
            if (v && strcmp(v, "nve") == 0)
                o->ensemble = TSR_MD_NVE;
            else if (v && strcmp(v, "langevin") == 0)
                o->ensemble = TSR_MD_LANGEVIN;
            else if (v && strcmp(v, "nose-hoover") == 0)
                o->ensemble = TSR_MD_NOSE_HOOVER;
            else if (v)
                return cli_usage_error(&cli_md_command,
                                       "--ensemble must be nve, langevin or nose-hoover, not '%s'",
                                       v);
        } else if (cli_arg_option(&a, "--temperature", &v)) {
            if (v)
                cli_parse_double(&a, "--temperature", v, 0, 1e6, &o->temperature);
        } else if (cli_arg_option(&a, "--friction", &v)) {
            if (v)
                cli_parse_double(&a, "--friction", v, 1e-9, 1e9, &o->friction);
        } else if (cli_arg_option(&a, "--tau", &v)) {
            if (v)
                cli_parse_double(&a, "--tau", v, 1e-6, 1e9, &o->tau);
        } else if (cli_arg_option(&a, "--chain", &v)) {
            if (v)
                cli_parse_int(&a, "--chain", v, 1, 16, &o->chain);
        } else if (cli_arg_option(&a, "--skin", &v)) {
            if (v)
                cli_parse_double(&a, "--skin", v, 0, 100, &o->skin);
        } else if (cli_arg_option(&a, "--seed", &v)) {
            if (v)
                cli_parse_u64(&a, "--seed", v, &o->seed);
        } else if (cli_arg_option(&a, "--trajectory", &v)) {
            o->trajectory = v;
        } else if (cli_arg_option(&a, "--every", &v)) {
            if (v)
                cli_parse_int(&a, "--every", v, 1, INT64_MAX / 2, &o->every);
        } else if (cli_arg_option(&a, "--report", &v)) {
            if (v)
                cli_parse_int(&a, "--report", v, 1, INT64_MAX / 2, &o->report);
        } else if (cli_arg_option(&a, "--log", &v)) {
            o->log = v;
        } else if (cli_arg_option(&a, "--plot", &v)) {
            o->plot = v;
        } else if (cli_arg_flag(&a, "--no-plot")) {
            o->no_plot = true;
        } else if (cli_arg_option(&a, "--radial-table", &v)) {
            if (v)
                cli_parse_int(&a, "--radial-table", v, 16, 65536, &o->radial_table);
        } else if (!cli_arg_eval_options(&a, &o->device, &o->threads, &o->dtype)) {
            const char *pos = cli_arg_rest(&a, help);
            if (!pos)
                continue;
            if (!o->model)
                o->model = pos;
            else if (!o->start)
                o->start = pos;
            else
                return cli_usage_error(&cli_md_command, "unexpected argument '%s'", pos);
        }
    }
    if (a.status || *help)
        return a.status;
    if (!o->model || !o->start)
        return cli_usage_error(&cli_md_command, "missing %s",
                               o->model ? "START.extxyz" : "MODEL.npz");
    if (o->steps < 0)
        return cli_usage_error(&cli_md_command, "--steps N is required");
    if (o->dt < 0)
        return cli_usage_error(&cli_md_command, "--dt FS is required");
    if (!o->trajectory)
        return cli_usage_error(&cli_md_command, "--trajectory OUT.extxyz is required");
    if (o->ensemble != TSR_MD_NVE && !(o->temperature > 0))
        return cli_usage_error(&cli_md_command, "--ensemble %s needs --temperature K > 0",
                               o->ensemble == TSR_MD_LANGEVIN ? "langevin" : "nose-hoover");
    if (!o->report)
        o->report = o->steps >= 20 ? o->steps / 20 : 1;
    return CLI_OK;
}

/* Output paths, none of them an input or another output. */
static int check_outputs(const md_args *o, const char *log, const char *plot)
{
    const char *outputs[3][2] = {{"--trajectory", o->trajectory}, {"--log", log}, {"--plot", plot}};
    for (int k = 0; k < 3; k++) {
        const char *path = outputs[k][1];
        if (!path)
            continue;
        if (same_file(path, o->start) || strcmp(path, o->start) == 0)
            return cli_usage_error(&cli_md_command,
                                   "%s %s is the start file; it is never overwritten",
                                   outputs[k][0], path);
        if (same_file(path, o->model) || strcmp(path, o->model) == 0)
            return cli_usage_error(&cli_md_command, "%s %s is the model file", outputs[k][0], path);
        for (int j = 0; j < k; j++)
            if (outputs[j][1] && strcmp(outputs[j][1], path) == 0)
                return cli_usage_error(&cli_md_command, "%s and %s are the same file %s",
                                       outputs[j][0], outputs[k][0], path);
        int rc = cli_check_writable(outputs[k][0], path);
        if (rc)
            return rc;
    }
    return CLI_OK;
}

/* Least-squares slope of y(t) over every step, on values relative to the
 * first sample so that the sums keep their digits. */
typedef struct {
    double t0, y0, n, st, sy, stt, sty;
} line_fit;

static void fit_add(line_fit *f, double t, double y)
{
    if (f->n == 0) {
        f->t0 = t;
        f->y0 = y;
    }
    t -= f->t0;
    y -= f->y0;
    f->n += 1;
    f->st += t;
    f->sy += y;
    f->stt += t * t;
    f->sty += t * y;
}

static double fit_slope(const line_fit *f)
{
    double d = f->n * f->stt - f->st * f->st;
    return f->n >= 2 && d > 0 ? (f->n * f->sty - f->st * f->sy) / d : NAN;
}

typedef struct {
    bool tty;
    int width;
    double last_draw;
} md_progress;

static void progress_clear(md_progress *p)
{
    if (p->tty && p->width) {
        fprintf(stderr, "\r%*s\r", p->width, "");
        p->width = 0;
    }
}

static void progress_draw(md_progress *p, const tsr_md_state *s, long long steps, double elapsed,
                          double ns_per_day)
{
    double now = cli_now_seconds();
    if (!p->tty || now - p->last_draw < 0.1)
        return;
    p->last_draw = now;
    char bar[32], eta[32];
    int fill = steps ? (int)(24 * s->step / steps) : 24;
    for (int k = 0; k < 24; k++)
        bar[k] = k < fill ? '=' : k == fill ? '>' : ' ';
    bar[24] = '\0';
    double rate = elapsed > 0 ? (double)s->step / elapsed : 0;
    train_format_duration(rate > 0 ? (double)(steps - s->step) / rate : 0, eta, sizeof eta);
    char line[256];
    int n =
        snprintf(line, sizeof line, "[%s] step %lld/%lld  %.4f ps  T %.1f K  %.3g ns/day  ETA %s",
                 bar, (long long)s->step, steps, 1e-3 * s->time, s->temperature, ns_per_day, eta);
    fprintf(stderr, "\r%s%*s", line, p->width > n ? p->width - n : 0, "");
    fflush(stderr);
    p->width = n;
}

static void plot_log(const char *log, const char *png)
{
    const cli_plot_panel panels[] = {
        {.title = "potential energy", .ylabel = "eV", .n_curves = 1, .curves = {{3, "Epot"}}},
        {.title = "total and conserved energy",
         .ylabel = "eV",
         .n_curves = 2,
         .curves = {{5, "Etot"}, {6, "conserved"}}},
        {.title = "temperature", .ylabel = "K", .n_curves = 1, .curves = {{7, "T"}}},
    };
    cli_plot plot = {.csv_path = log,
                     .png_path = png,
                     .x_column = 2,
                     .xlabel = "time (ps)",
                     .n_panels = 3,
                     .panels = panels};
    cli_plot_draw(&plot);
}

/* The report line, its CSV row, and ns/day over the interval. */
static void report(FILE *csv, const tsr_md_state *s, double ns_per_day)
{
    char speed[32] = "         -";
    if (!isnan(ns_per_day))
        snprintf(speed, sizeof speed, "%10.3g", ns_per_day);
    printf("%10.4f %16.6f %12.6f %16.6f %10.2f %s\n", 1e-3 * s->time, s->potential_energy,
           s->kinetic_energy, s->total_energy, s->temperature, speed);
    if (csv) {
        fprintf(csv, "%lld,%.9g,%.12g,%.12g,%.12g,%.12g,%.8g,%.6g\n", (long long)s->step,
                1e-3 * s->time, s->potential_energy, s->kinetic_energy, s->total_energy,
                s->conserved, s->temperature, ns_per_day);
        fflush(csv);
    }
}

static int run(const md_args *o, tsr_md *md, int64_t n_atoms, FILE *csv)
{
    const char *traj = o->trajectory;
    const tsr_atoms *frame = tsr_md_atoms(md);
    if (tsr_extxyz_write(traj, 1, &frame) != TSR_OK)
        return cli_fail_status(traj);
    tsr_md_state s;
    tsr_md_get_state(md, &s);
    static const char *const names[] = {"NVE (velocity Verlet)", "Langevin (BAOAB)",
                                        "Nose-Hoover chain"};
    printf("# %s, %lld atoms, %lld degrees of freedom, dt %g fs, %lld steps\n", names[o->ensemble],
           (long long)n_atoms, (long long)s.degrees_of_freedom, o->dt, o->steps);
    printf("#  time/ps          Epot/eV      Ekin/eV          Etot/eV        T/K     ns/day\n");
    report(csv, &s, NAN);
    line_fit fit = {0};
    fit_add(&fit, s.time, s.conserved);
    md_progress bar = {.tty = isatty(STDERR_FILENO) != 0};
    double start = cli_now_seconds(), interval_start = start;
    int64_t interval_steps = 0;
    cli_stop_catch(NULL);
    int rc = CLI_OK;
    while (s.step < o->steps && !cli_stop_requested()) {
        if (tsr_md_run(md, 1) != TSR_OK) {
            progress_clear(&bar);
            rc = cli_fail_status(NULL);
            break;
        }
        tsr_md_get_state(md, &s);
        fit_add(&fit, s.time, s.conserved);
        interval_steps++;
        double now = cli_now_seconds();
        if (s.step % o->every == 0 && tsr_extxyz_append(traj, 1, &frame) != TSR_OK) {
            progress_clear(&bar);
            rc = cli_fail_status(traj);
            break;
        }
        double ns_per_day = now > interval_start ? (double)interval_steps * o->dt * 1e-6 * 86400.0 /
                                                       (now - interval_start)
                                                 : NAN;
        if (s.step % o->report == 0 || s.step == o->steps) {
            progress_clear(&bar);
            report(csv, &s, ns_per_day);
            interval_start = now;
            interval_steps = 0;
        }
        double total_rate = (double)s.step * o->dt * 1e-6 * 86400.0 / (now - start);
        progress_draw(&bar, &s, o->steps, now - start, total_rate);
    }
    cli_stop_release();
    progress_clear(&bar);
    double elapsed = cli_now_seconds() - start;
    bool interrupted = cli_stop_requested() != NULL;
    if (interrupted)
        fprintf(stderr,
                "tessera md: interrupted at step %lld; the trajectory keeps every frame "
                "written so far\n",
                (long long)s.step);
    /* meV/atom/ps from eV/fs */
    double drift = fit_slope(&fit) * 1e3 * 1e3 / (double)n_atoms;
    const char *what = o->ensemble == TSR_MD_NVE ? "total energy" : "conserved energy";
    printf("# %lld steps in %.2f s: %.3g steps/s, %.3g ns/day; %lld neighbour list builds\n",
           (long long)s.step, elapsed, elapsed > 0 ? (double)s.step / elapsed : 0,
           elapsed > 0 ? (double)s.step * o->dt * 1e-6 * 86400.0 / elapsed : 0,
           (long long)s.neighbor_builds);
    if (isnan(drift))
        printf("# drift of the %s: needs two steps or more\n", what);
    else
        printf("# drift of the %s: %.4g meV/atom/ps (least squares over %lld steps)\n", what, drift,
               (long long)s.step);
    if (rc == CLI_OK && interrupted)
        rc = CLI_FAIL;
    return rc;
}

static int md_main(int argc, char **argv)
{
    md_args o = {0};
    bool help = false;
    int rc = parse_args(argc, argv, &o, &help);
    if (rc || help) {
        if (help)
            fputs(md_usage, stdout);
        return rc;
    }
    char *log = o.log ? strdup(o.log) : cli_path_beside(o.trajectory, ".csv");
    char *plot = o.no_plot ? NULL : o.plot ? strdup(o.plot) : cli_path_beside(o.trajectory, ".png");
    tsr_ictp_model *model = NULL;
    tsr_ictp_evaluator *ev = NULL;
    tsr_md *md = NULL;
    int64_t n_frames = 0;
    tsr_atoms **frames = NULL;
    FILE *csv = NULL;
    if (!log || (!o.no_plot && !plot)) {
        rc = cli_fail("out of memory");
        goto cleanup;
    }
    if ((rc = check_outputs(&o, log, plot)))
        goto cleanup;
    if (tsr_ictp_model_load(o.model, &model) != TSR_OK) {
        rc = cli_fail_status(o.model);
        goto cleanup;
    }
    if (tsr_extxyz_read(o.start, &n_frames, &frames) != TSR_OK) {
        rc = cli_fail_status(o.start);
        goto cleanup;
    }
    if (n_frames == 0) {
        rc = cli_fail("%s: no frames", o.start);
        goto cleanup;
    }
    tsr_ictp_options eo;
    tsr_ictp_options_init(&eo);
    eo.device = o.device;
    eo.dtype = o.dtype;
    eo.threads = (int)o.threads;
    eo.radial_table = (int)o.radial_table;
    if (tsr_ictp_evaluator_create(model, &eo, &ev) != TSR_OK) {
        rc = cli_fail_status(NULL);
        goto cleanup;
    }
    tsr_md_options mo;
    tsr_md_options_init(&mo);
    mo.ensemble = o.ensemble;
    mo.timestep = o.dt;
    mo.temperature = o.temperature;
    mo.friction = o.friction;
    mo.nh_tau = o.tau;
    mo.nh_chain = (int)o.chain;
    mo.skin = o.skin;
    mo.seed = o.seed;
    const tsr_atoms *start = frames[n_frames - 1];
    if (tsr_md_create(ev, start, &mo, &md) != TSR_OK) {
        rc = cli_fail_status(o.start);
        goto cleanup;
    }
    csv = fopen(log, "w");
    if (!csv) {
        rc = cli_fail("--log %s: cannot write it", log);
        goto cleanup;
    }
    fprintf(csv, "step,time_ps,epot_eV,ekin_eV,etot_eV,conserved_eV,temperature_K,ns_per_day\n");
    rc = run(&o, md, tsr_atoms_count(start), csv);
    fclose(csv);
    csv = NULL;
    if (plot)
        plot_log(log, plot);
cleanup:
    if (csv)
        fclose(csv);
    tsr_md_destroy(md);
    tsr_ictp_evaluator_destroy(ev);
    tsr_ictp_model_destroy(model);
    tsr_atoms_destroy_frames(n_frames, frames);
    free(log);
    free(plot);
    return rc;
}
