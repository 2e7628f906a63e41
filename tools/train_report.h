/* What `tessera train` tells the user while it runs: a progress bar (or
 * one line per epoch when stderr is not a terminal), a CSV log of the
 * epochs, and a PNG plot of the curves (plot.h). */
#ifndef TSR_CLI_TRAIN_REPORT_H
#define TSR_CLI_TRAIN_REPORT_H

#include <stdbool.h>
#include <stdint.h>

/* One epoch's line of the log; NaN where there is no value (no
 * validation set, accuracy for a regression loss). */
typedef struct train_row {
    int64_t epoch; /* 1-based */
    int64_t step;  /* optimizer steps done at the end of the epoch */
    double train_loss, train_acc;
    double val_loss, val_acc;
    double lr;          /* the learning rate the epoch trained with */
    double seconds;     /* training time of the epoch, validation excluded */
    double val_seconds; /* time of the validation pass */
} train_row;

typedef struct train_log {
    train_row *rows;
    int n, cap;
} train_log;

/* Reads the rows of an existing log with epoch <= max_epoch (what a
 * resumed run keeps); a missing file is an empty log. */
int train_log_read(train_log *log, const char *path, int64_t max_epoch);
int train_log_append(train_log *log, const train_row *row);
/* Writes the whole log atomically (temporary file, then rename). */
int train_log_write(const train_log *log, const char *path);
void train_log_free(train_log *log);

/* Draws loss and accuracy per epoch from the CSV log into a PNG with
 * gnuplot (pngcairo, else its libgd png terminal). Returns false, having
 * said why once, when gnuplot is missing or fails; training goes on. */
bool train_plot(const char *csv_path, const char *png_path, int n_epochs, bool have_val,
                bool have_acc);

/* The progress display of one epoch. */
typedef struct train_progress {
    bool tty;
    int64_t epoch, epochs; /* 1-based */
    int64_t total;         /* samples in the epoch */
    double start, last_draw;
    int width; /* of the last line drawn, to blank it */
} train_progress;

void train_progress_start(train_progress *p, int64_t epoch, int64_t epochs, int64_t total);
/* Redraws at most ten times a second (tty only). acc may be NaN. */
void train_progress_update(train_progress *p, int64_t done, double loss, double acc, bool force);
/* Clears the bar and prints the epoch's summary line. */
void train_progress_finish(train_progress *p, const train_row *row, bool have_val);

/* "1:02:03" or "2:03". */
void train_format_duration(double seconds, char *buf, size_t size);

#endif
