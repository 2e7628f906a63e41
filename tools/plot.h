/* PNG plots of the CLI's CSV logs (`tessera train`, `tessera ictp train`,
 * `tessera md`), drawn by gnuplot: one row of panels, each with curves
 * given as column numbers of the CSV. No plot is not an error: without
 * gnuplot, or when it fails, the caller is told once why and goes on. */
#ifndef TSR_CLI_PLOT_H
#define TSR_CLI_PLOT_H

#include <stdbool.h>

enum { CLI_PLOT_MAX_CURVES = 4 };

typedef struct cli_plot_curve {
    int column;        /* 1-based CSV column of the y values */
    const char *title; /* in the key */
} cli_plot_curve;

typedef struct cli_plot_panel {
    const char *title, *ylabel;
    bool log_y;
    int n_curves;
    cli_plot_curve curves[CLI_PLOT_MAX_CURVES];
} cli_plot_panel;

typedef struct cli_plot {
    const char *csv_path, *png_path;
    int x_column; /* 1-based */
    const char *xlabel;
    bool integer_x; /* whole numbers on the x axis (epochs) */
    bool points;    /* mark each row (few rows) instead of a plain line */
    int n_panels;
    const cli_plot_panel *panels;
} cli_plot;

/* Writes the PNG atomically (a temporary file beside it, then a rename).
 * Returns false, having said why on stderr (once per process), when
 * gnuplot is missing or fails. */
bool cli_plot_draw(const cli_plot *plot);

#endif
