/* Progress, CSV log and plot of `tessera train`. */
#include "cli.h"
#include "plot.h"
#include "train_report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- log */

static const char log_header[] =
    "epoch,step,train_loss,train_acc,val_loss,val_acc,lr,seconds,val_seconds\n";

void train_log_free(train_log *log)
{
    free(log->rows);
    memset(log, 0, sizeof *log);
}

int train_log_append(train_log *log, const train_row *row)
{
    if (log->n == log->cap) {
        int cap = log->cap ? 2 * log->cap : 16;
        train_row *rows = realloc(log->rows, (size_t)cap * sizeof *rows);
        if (!rows)
            return cli_fail("out of memory");
        log->rows = rows;
        log->cap = cap;
    }
    log->rows[log->n++] = *row;
    return CLI_OK;
}

/* The field starting at line[*pos]; an empty field is a missing value. */
static double parse_field(const char *line, size_t *pos)
{
    const char *start = line + *pos;
    char *end;
    double v = strtod(start, &end);
    if (end == start)
        v = NAN;
    size_t field = strcspn(start, ",");
    *pos += field + (start[field] == ',' ? 1 : 0);
    return v;
}

int train_log_read(train_log *log, const char *path, int64_t max_epoch)
{
    memset(log, 0, sizeof *log);
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? CLI_OK : cli_fail("%s: cannot open: %s", path, strerror(errno));
    char line[1024];
    int rc = CLI_OK;
    if (!fgets(line, sizeof line, f) || strcmp(line, log_header) != 0)
        rc = cli_fail("%s: not a log of 'tessera train' (unexpected header); move it away or "
                      "pass another --log",
                      path);
    while (rc == CLI_OK && fgets(line, sizeof line, f)) {
        size_t p = 0;
        train_row r;
        r.epoch = (int64_t)parse_field(line, &p);
        r.step = (int64_t)parse_field(line, &p);
        r.train_loss = parse_field(line, &p);
        r.train_acc = parse_field(line, &p);
        r.val_loss = parse_field(line, &p);
        r.val_acc = parse_field(line, &p);
        r.lr = parse_field(line, &p);
        r.seconds = parse_field(line, &p);
        r.val_seconds = parse_field(line, &p);
        if (r.epoch >= 1 && r.epoch <= max_epoch)
            rc = train_log_append(log, &r);
    }
    fclose(f);
    if (rc != CLI_OK)
        train_log_free(log);
    return rc;
}

static void put_field(FILE *f, double v, const char *fmt, bool last)
{
    if (!isnan(v))
        fprintf(f, fmt, v);
    fputc(last ? '\n' : ',', f);
}

/* A temporary file beside `path`, for writes that must never leave a
 * half-written file under the final name. */
static FILE *open_temp_beside(const char *path, char *tmp, size_t size)
{
    snprintf(tmp, size, "%s.tmp-%ld", path, (long)getpid());
    return fopen(tmp, "w");
}

static int finish_temp(FILE *f, const char *tmp, const char *path)
{
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
        return CLI_OK;
    saved = errno ? errno : saved;
    unlink(tmp);
    return cli_fail("%s: cannot write: %s", path, strerror(saved));
}

int train_log_write(const train_log *log, const char *path)
{
    char tmp[4200];
    FILE *f = open_temp_beside(path, tmp, sizeof tmp);
    if (!f)
        return cli_fail("%s: cannot create a temporary file beside it: %s", path, strerror(errno));
    fputs(log_header, f);
    for (int k = 0; k < log->n; k++) {
        const train_row *r = &log->rows[k];
        fprintf(f, "%lld,%lld,", (long long)r->epoch, (long long)r->step);
        put_field(f, r->train_loss, "%.6g", false);
        put_field(f, r->train_acc, "%.6f", false);
        put_field(f, r->val_loss, "%.6g", false);
        put_field(f, r->val_acc, "%.6f", false);
        put_field(f, r->lr, "%.6g", false);
        put_field(f, r->seconds, "%.3f", false);
        put_field(f, r->val_seconds, "%.3f", true);
    }
    return finish_temp(f, tmp, path);
}

/* --------------------------------------------------------------- plot */

bool train_plot(const char *csv_path, const char *png_path, int n_epochs, bool have_val,
                bool have_acc)
{
    cli_plot_panel panels[2];
    for (int k = 0; k < 2; k++) {
        /* loss in column 3, accuracy in 4; their validation values 2 further on */
        panels[k] = (cli_plot_panel){.title = k ? "accuracy" : "loss",
                                     .n_curves = have_val ? 2 : 1,
                                     .curves = {{3 + k, "train"}, {5 + k, "validation"}}};
    }
    cli_plot plot = {.csv_path = csv_path,
                     .png_path = png_path,
                     .x_column = 1,
                     .xlabel = "epoch",
                     .integer_x = n_epochs <= 20, /* whole epochs while few enough to label */
                     .points = true,
                     .n_panels = have_acc ? 2 : 1,
                     .panels = panels};
    return cli_plot_draw(&plot);
}

/* ----------------------------------------------------------- progress */

void train_format_duration(double seconds, char *buf, size_t size)
{
    if (!isfinite(seconds) || seconds < 0)
        seconds = 0;
    long long s = (long long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, size, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, size, "%lld:%02lld", s / 60, s % 60);
}

void train_progress_start(train_progress *p, int64_t epoch, int64_t epochs, int64_t total)
{
    p->tty = isatty(STDERR_FILENO);
    p->epoch = epoch;
    p->epochs = epochs;
    p->total = total;
    p->start = cli_now_seconds();
    p->last_draw = 0;
    p->width = 0;
}

void train_progress_update(train_progress *p, int64_t done, double loss, double acc, bool force)
{
    if (!p->tty)
        return;
    double now = cli_now_seconds();
    if (!force && now - p->last_draw < 0.1)
        return;
    p->last_draw = now;
    double elapsed = now - p->start, rate = elapsed > 0 ? (double)done / elapsed : 0;
    char eta[32], bar[32], acc_text[32] = "";
    train_format_duration(rate > 0 ? (double)(p->total - done) / rate : 0, eta, sizeof eta);
    int fill = p->total ? (int)(24 * done / p->total) : 24;
    for (int k = 0; k < 24; k++)
        bar[k] = k < fill ? '=' : k == fill ? '>' : ' ';
    bar[24] = '\0';
    if (!isnan(acc))
        snprintf(acc_text, sizeof acc_text, "  acc %.4f", acc);
    char line[256];
    int n = snprintf(line, sizeof line,
                     "epoch %lld/%lld [%s] %lld/%lld  loss %.4f%s  %.0f samples/s  ETA %s",
                     (long long)p->epoch, (long long)p->epochs, bar, (long long)done,
                     (long long)p->total, loss, acc_text, rate, eta);
    fprintf(stderr, "\r%s%*s", line, p->width > n ? p->width - n : 0, "");
    fflush(stderr);
    p->width = n;
}

void train_progress_finish(train_progress *p, const train_row *r, bool have_val)
{
    if (p->tty && p->width)
        fprintf(stderr, "\r%*s\r", p->width, "");
    char line[512], took[32];
    int n = snprintf(line, sizeof line, "epoch %lld/%lld: train loss %.4f", (long long)r->epoch,
                     (long long)p->epochs, r->train_loss);
    if (!isnan(r->train_acc))
        n += snprintf(line + n, sizeof line - (size_t)n, " acc %.4f", r->train_acc);
    if (have_val) {
        n += snprintf(line + n, sizeof line - (size_t)n, ", val loss %.4f", r->val_loss);
        if (!isnan(r->val_acc))
            n += snprintf(line + n, sizeof line - (size_t)n, " acc %.4f", r->val_acc);
    }
    train_format_duration(r->seconds, took, sizeof took);
    snprintf(line + n, sizeof line - (size_t)n, ", lr %.3g, %s (%.1f s, %.0f samples/s)", r->lr,
             took, r->seconds, r->seconds > 0 ? (double)p->total / r->seconds : 0);
    fprintf(stderr, "%s\n", line);
}
