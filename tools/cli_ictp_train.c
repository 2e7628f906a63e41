/* `tessera ictp train`: fits an ICTP potential to labelled structures with
 * the published recipe (tsr_ictp_trainer, include/tessera/ictp.h): per
 * epoch the validation errors, a progress bar on a terminal, a CSV log and
 * a PNG of it, an atomic checkpoint that resumes bit-exactly, the best model kept, early
 * stopping. `tessera ictp test`: the same errors of a model on a data set. */
#include "cli.h"
#include "plot.h"
#include "tessera/ictp.h"
#include "train_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The published settings (docs/ictp.md), used without --config; the
 * species come from the training data. */
static int write_default_config(const char *path, int64_t n, tsr_atoms *const *frames)
{
    bool seen[TSR_ATOMS_MAX_Z + 1] = {0};
    for (int64_t b = 0; b < n; b++) {
        const int32_t *z = tsr_atoms_numbers(frames[b]);
        for (int64_t a = 0; a < tsr_atoms_count(frames[b]); a++)
            seen[z[a]] = true;
    }
    FILE *f = fopen(path, "w");
    if (!f)
        return cli_fail("cannot write %s", path);
    fprintf(f, "{\"config\": {\"atomic_types\": [");
    int count = 0;
    for (int z = 0; z <= TSR_ATOMS_MAX_Z; z++)
        if (seen[z])
            fprintf(f, "%s%d", count++ ? ", " : "", z);
    fprintf(f,
            "], \"n_species\": %d, \"r_cutoff\": 5.0, \"n_basis\": 8,\n"
            " \"n_polynomial_cutoff\": 5, \"radial_MLP\": [64, 64, 64], \"readout_MLP\": [16],\n"
            " \"n_hidden_feats\": 32, \"n_product_feats\": 32, \"n_interactions\": 2,\n"
            " \"l_max_hidden_feats\": 2, \"l_max_edge_attrs\": 3, \"correlation\": 3,\n"
            " \"symmetric_product\": true, \"coupled_product_feats\": false,\n"
            " \"avg_n_neighbors\": 1.0}}\n",
            count);
    return fclose(f) == 0 ? CLI_OK : cli_fail("cannot write %s", path);
}

static void show_progress(void *ctx, int64_t done, int64_t total, double loss)
{
    (void)total;
    train_progress_update(ctx, done, loss, NAN, false);
}

static int read_frames(const char *path, int64_t *n, tsr_atoms ***frames)
{
    if (tsr_extxyz_read(path, n, frames) != TSR_OK)
        return cli_fail_status(path);
    if (*n == 0)
        return cli_fail("%s: no frames", path);
    return CLI_OK;
}

static void print_metrics(FILE *f, const char *what, const tsr_ictp_metrics *m)
{
    fprintf(f, "%s: energy MAE %.3f RMSE %.3f meV/atom, forces MAE %.3f RMSE %.3f meV/A", what,
            1e3 * m->energy_mae, 1e3 * m->energy_rmse, 1e3 * m->forces_mae, 1e3 * m->forces_rmse);
    if (m->n_stress)
        fprintf(f, ", stress MAE %.4f RMSE %.4f meV/A^3", 1e3 * m->stress_mae,
                1e3 * m->stress_rmse);
    fputc('\n', f);
}

typedef struct {
    const char *train, *valid, *config, *out, *log, *plot, *checkpoint, *device;
    bool no_plot;
    long long epochs, early_stopping, threads, batch;
    double lr, w_e, w_f, w_s;
    uint64_t seed;
    tsr_dtype dtype;
} train_args;

static int parse_train(int argc, char **argv, train_args *o, bool *help)
{
    cli_args a;
    cli_args_init(&a, &cli_ictp_command, argc, argv);
    while (cli_args_peek(&a)) {
        const char *v;
        if (cli_arg_option(&a, "--valid", &v)) {
            o->valid = v;
        } else if (cli_arg_option(&a, "--config", &v)) {
            o->config = v;
        } else if (cli_arg_option(&a, "--out", &v)) {
            o->out = v;
        } else if (cli_arg_option(&a, "--log", &v)) {
            o->log = v;
        } else if (cli_arg_option(&a, "--plot", &v)) {
            o->plot = v;
        } else if (cli_arg_flag(&a, "--no-plot")) {
            o->no_plot = true;
        } else if (cli_arg_option(&a, "--checkpoint", &v)) {
            o->checkpoint = v;
        } else if (cli_arg_option(&a, "--epochs", &v)) {
            if (v)
                cli_parse_int(&a, "--epochs", v, 1, 100000000, &o->epochs);
        } else if (cli_arg_option(&a, "--early-stopping", &v)) {
            if (v)
                cli_parse_int(&a, "--early-stopping", v, 0, 100000000, &o->early_stopping);
        } else if (cli_arg_option(&a, "--batch-size", &v)) {
            if (v)
                cli_parse_int(&a, "--batch-size", v, 1, 1000000, &o->batch);
        } else if (cli_arg_option(&a, "--seed", &v)) {
            if (v)
                cli_parse_u64(&a, "--seed", v, &o->seed);
        } else if (cli_arg_option(&a, "--lr", &v)) {
            if (v)
                cli_parse_double(&a, "--lr", v, 0, INFINITY, &o->lr);
        } else if (cli_arg_option(&a, "--energy-weight", &v)) {
            if (v)
                cli_parse_double(&a, "--energy-weight", v, 0, INFINITY, &o->w_e);
        } else if (cli_arg_option(&a, "--forces-weight", &v)) {
            if (v)
                cli_parse_double(&a, "--forces-weight", v, 0, INFINITY, &o->w_f);
        } else if (cli_arg_option(&a, "--stress-weight", &v)) {
            if (v)
                cli_parse_double(&a, "--stress-weight", v, 0, INFINITY, &o->w_s);
        } else if (!cli_arg_eval_options(&a, &o->device, &o->threads, &o->dtype)) {
            const char *pos = cli_arg_rest(&a, help);
            if (!pos)
                continue;
            if (o->train)
                return cli_usage_error(&cli_ictp_command, "unexpected argument '%s'", pos);
            o->train = pos;
        }
    }
    if (a.status || *help)
        return a.status;
    if (!o->train || !o->valid || !o->out)
        return cli_usage_error(&cli_ictp_command, "ictp train needs %s",
                               !o->train   ? "TRAIN.extxyz"
                               : !o->valid ? "--valid VALID.extxyz"
                                           : "--out MODEL.npz");
    return CLI_OK;
}

static const char log_header[] = "epoch,lr,train_loss,energy_mae_meV_atom,energy_rmse_meV_atom,"
                                 "forces_mae_meV_A,forces_rmse_meV_A,stress_mae_meV_A3,"
                                 "stress_rmse_meV_A3,seconds\n";

/* Starts the log of a run whose next epoch is `first`: the rows of earlier
 * epochs (a resumed run's) are kept, later ones (written after the
 * checkpoint the run resumes from) and those of other runs dropped; the
 * file is replaced atomically. */
static int start_log(const char *path, int64_t first)
{
    char tmp[4200], line[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    FILE *out = fopen(tmp, "w");
    if (!out)
        return cli_fail("cannot write %s", tmp);
    fputs(log_header, out);
    FILE *in = first > 1 ? fopen(path, "r") : NULL;
    if (in) {
        bool header = fgets(line, sizeof line, in) && strcmp(line, log_header) == 0;
        while (header && fgets(line, sizeof line, in)) {
            long long epoch = strtoll(line, NULL, 10);
            if (epoch >= 1 && epoch < first)
                fputs(line, out);
        }
        fclose(in);
    }
    if (fclose(out) != 0 || rename(tmp, path) != 0) {
        remove(tmp);
        return cli_fail("cannot write %s", path);
    }
    return CLI_OK;
}

/* One CSV row per epoch; the stress columns are empty without stresses. */
static int log_row(const char *path, int64_t epoch, double lr, double loss,
                   const tsr_ictp_metrics *m, double seconds)
{
    FILE *f = fopen(path, "a");
    if (!f)
        return cli_fail("cannot write %s", path);
    fprintf(f, "%lld,%.9g,%.9g,%.6f,%.6f,%.6f,%.6f,", (long long)epoch, lr, loss,
            1e3 * m->energy_mae, 1e3 * m->energy_rmse, 1e3 * m->forces_mae, 1e3 * m->forces_rmse);
    if (m->n_stress)
        fprintf(f, "%.6f,%.6f", 1e3 * m->stress_mae, 1e3 * m->stress_rmse);
    else
        fputc(',', f);
    fprintf(f, ",%.3f\n", seconds);
    return fclose(f) == 0 ? CLI_OK : cli_fail("cannot write %s", path);
}

/* The training loss and the validation errors, from the log's columns. */
static void plot_log(const char *log, const char *png, int64_t epochs, bool stress)
{
    const cli_plot_panel panels[] = {
        {.title = "training loss", .log_y = true, .n_curves = 1, .curves = {{3, "train"}}},
        {.title = "validation energy error",
         .ylabel = "meV/atom",
         .log_y = true,
         .n_curves = 2,
         .curves = {{4, "MAE"}, {5, "RMSE"}}},
        {.title = "validation force error",
         .ylabel = "meV/A",
         .log_y = true,
         .n_curves = 2,
         .curves = {{6, "MAE"}, {7, "RMSE"}}},
        {.title = "validation stress error",
         .ylabel = "meV/A^3",
         .log_y = true,
         .n_curves = 2,
         .curves = {{8, "MAE"}, {9, "RMSE"}}},
    };
    cli_plot plot = {.csv_path = log,
                     .png_path = png,
                     .x_column = 1,
                     .xlabel = "epoch",
                     .integer_x = epochs <= 20,
                     .points = epochs <= 50,
                     .n_panels = stress ? 4 : 3,
                     .panels = panels};
    cli_plot_draw(&plot);
}

int ictp_train_main(int argc, char **argv)
{
    train_args o = {.epochs = 100,
                    .batch = 5,
                    .lr = 0.01,
                    .w_e = 1.0,
                    .w_f = 10.0,
                    .w_s = 1.0,
                    .dtype = TSR_FLOAT64};
    bool help = false;
    int rc = parse_train(argc, argv, &o, &help);
    if (rc || help)
        return rc;
    int64_t n_train = 0, n_valid = 0;
    tsr_atoms **train = NULL, **valid = NULL;
    tsr_ictp_trainer *tr = NULL;
    char config_tmp[] = "/tmp/tessera-ictp-config-XXXXXX";
    bool made_config = false;
    char *log = o.log ? strdup(o.log) : cli_path_beside(o.out, ".csv");
    char *plot = o.no_plot ? NULL : o.plot ? strdup(o.plot) : cli_path_beside(o.out, ".png");
    if (!log || (!o.no_plot && !plot)) {
        rc = cli_fail("out of memory");
        goto done;
    }
    if ((rc = cli_check_writable("--out", o.out)) || (rc = cli_check_writable("--log", log)) ||
        (plot && (rc = cli_check_writable("--plot", plot))) ||
        (rc = read_frames(o.train, &n_train, &train)) ||
        (rc = read_frames(o.valid, &n_valid, &valid)))
        goto done;
    if (!o.config) {
        int fd = mkstemp(config_tmp);
        if (fd < 0) {
            rc = cli_fail("cannot make a temporary configuration file");
            goto done;
        }
        close(fd);
        made_config = true;
        if ((rc = write_default_config(config_tmp, n_train, train)))
            goto done;
    }
    tsr_ictp_train_options opt;
    tsr_ictp_train_options_init(&opt);
    opt.device = o.device;
    opt.dtype = o.dtype;
    opt.threads = (int)o.threads;
    opt.seed = o.seed;
    opt.batch_size = (int)o.batch;
    opt.lr = o.lr;
    opt.w_energy = o.w_e;
    opt.w_forces = o.w_f;
    opt.w_stress = o.w_s;
    if (tsr_ictp_trainer_create(o.config ? o.config : config_tmp, n_train, train, &opt, &tr) !=
        TSR_OK) {
        rc = cli_fail_status(o.config ? o.config : o.train);
        goto done;
    }
    double best = INFINITY;
    int bad = 0;
    struct stat sb;
    if (o.checkpoint && stat(o.checkpoint, &sb) == 0) {
        if (tsr_ictp_trainer_load_checkpoint(tr, o.checkpoint, &best, &bad) != TSR_OK) {
            rc = cli_fail_status(o.checkpoint);
            goto done;
        }
        fprintf(stderr, "resuming %s at epoch %lld\n", o.checkpoint,
                (long long)tsr_ictp_trainer_epochs(tr));
    }
    if ((rc = start_log(log, tsr_ictp_trainer_epochs(tr) + 1)))
        goto done;
    cli_stop_catch("\ntessera ictp train: stopping after this epoch (again to stop now)\n");
    for (int64_t epoch = tsr_ictp_trainer_epochs(tr) + 1;
         epoch <= o.epochs && !cli_stop_requested(); epoch++) {
        train_progress p;
        train_progress_start(&p, epoch, o.epochs, n_train);
        double t0 = cli_now_seconds(), loss = 0, lr = tsr_ictp_trainer_lr(tr);
        tsr_ictp_metrics m;
        if (tsr_ictp_trainer_epoch(tr, show_progress, &p, &loss) != TSR_OK ||
            tsr_ictp_trainer_validate(tr, n_valid, valid, &m) != TSR_OK) {
            rc = cli_fail_status(NULL);
            goto done;
        }
        /* The validation loss: w_E RMSE_E^2 + 3 w_F RMSE_F^2 + 9 w_S RMSE_S^2
         * (energy per atom, force and stress components); it drives the
         * schedule, the best model and early stopping. */
        double metric = o.w_e * m.energy_rmse * m.energy_rmse +
                        o.w_f * 3.0 * m.forces_rmse * m.forces_rmse +
                        o.w_s * 9.0 * m.stress_rmse * m.stress_rmse;
        train_row row = {.epoch = epoch,
                         .train_loss = loss,
                         .train_acc = NAN,
                         .val_loss = metric,
                         .val_acc = NAN,
                         .lr = lr,
                         .seconds = cli_now_seconds() - t0};
        train_progress_finish(&p, &row, true);
        print_metrics(stderr, "  validation", &m);
        if (tsr_ictp_trainer_epoch_end(tr, metric) != TSR_OK) {
            rc = cli_fail_status(NULL);
            goto done;
        }
        if ((rc = log_row(log, epoch, lr, loss, &m, row.seconds)))
            goto done;
        if (plot)
            plot_log(log, plot, o.epochs, m.n_stress > 0);
        if (metric < best) {
            best = metric;
            bad = 0;
            if (tsr_ictp_trainer_save_model(tr, o.out) != TSR_OK) {
                rc = cli_fail_status(o.out);
                goto done;
            }
        } else {
            bad++;
        }
        if (o.checkpoint &&
            tsr_ictp_trainer_save_checkpoint(tr, o.checkpoint, best, bad) != TSR_OK) {
            rc = cli_fail_status(o.checkpoint);
            goto done;
        }
        if (o.early_stopping && bad >= o.early_stopping) {
            fprintf(stderr, "early stopping: %d epochs without improvement\n", bad);
            break;
        }
    }
    if (cli_stop_requested()) {
        fprintf(stderr,
                "tessera ictp train: stopped by %s after epoch %lld; the best model so far is "
                "%s%s%s\n",
                cli_stop_requested(), (long long)tsr_ictp_trainer_epochs(tr), o.out,
                o.checkpoint ? ", and the same command resumes from " : "",
                o.checkpoint ? o.checkpoint : "");
        rc = CLI_FAIL;
    }
done:
    cli_stop_release();
    if (made_config)
        remove(config_tmp);
    free(log);
    free(plot);
    tsr_ictp_trainer_destroy(tr);
    tsr_atoms_destroy_frames(n_train, train);
    tsr_atoms_destroy_frames(n_valid, valid);
    return rc;
}

int ictp_test_main(int argc, char **argv)
{
    cli_args a;
    cli_args_init(&a, &cli_ictp_command, argc, argv);
    const char *model_path = NULL, *data = NULL, *device = NULL;
    long long threads = 0;
    tsr_dtype dtype = TSR_FLOAT64;
    bool help = false;
    while (cli_args_peek(&a)) {
        if (!cli_arg_eval_options(&a, &device, &threads, &dtype)) {
            const char *pos = cli_arg_rest(&a, &help);
            if (!pos)
                continue;
            if (!model_path)
                model_path = pos;
            else if (!data)
                data = pos;
            else
                return cli_usage_error(&cli_ictp_command, "unexpected argument '%s'", pos);
        }
    }
    if (a.status || help)
        return a.status;
    if (!model_path || !data)
        return cli_usage_error(&cli_ictp_command, "ictp test needs MODEL.npz and DATA.extxyz");
    tsr_ictp_model *model = NULL;
    if (tsr_ictp_model_load(model_path, &model) != TSR_OK)
        return cli_fail_status(model_path);
    tsr_ictp_options opt;
    tsr_ictp_options_init(&opt);
    opt.device = device;
    opt.dtype = dtype;
    opt.threads = (int)threads;
    tsr_ictp_evaluator *ev = NULL;
    tsr_status st = tsr_ictp_evaluator_create(model, &opt, &ev);
    tsr_ictp_model_destroy(model);
    if (st != TSR_OK)
        return cli_fail_status(NULL);
    int64_t n = 0;
    tsr_atoms **frames = NULL;
    int rc = read_frames(data, &n, &frames);
    tsr_ictp_metrics m;
    if (!rc && tsr_ictp_metrics_compute(ev, n, frames, &m) != TSR_OK)
        rc = cli_fail_status(data);
    if (!rc) {
        printf("%lld structures\n", (long long)n);
        print_metrics(stdout, "test", &m);
    }
    tsr_atoms_destroy_frames(n, frames);
    tsr_ictp_evaluator_destroy(ev);
    return rc;
}
