/* PNG plots of CSV logs through gnuplot (plot.h). */
#include "plot.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static bool find_in_path(const char *program, char *buf, size_t size)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path; *p;) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        snprintf(buf, size, "%.*s/%s", (int)(n ? n : 1), n ? p : ".", program);
        if (access(buf, X_OK) == 0)
            return true;
        p += n + (colon ? 1 : 0);
    }
    return false;
}

/* A gnuplot string literal: in single quotes, a quote is written twice. */
static void put_quoted(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static void write_script(FILE *f, const cli_plot *p, const char *png)
{
    /* pngcairo draws antialiased curves; the libgd png terminal is the
     * fallback in builds without cairo. */
    int width = p->n_panels > 1 ? 550 * p->n_panels : 800;
    fprintf(f,
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
            "  set terminal pngcairo size %d,420 noenhanced font ',10'\n"
            "} else {\n"
            "  set terminal png size %d,420 noenhanced\n"
            "}\n"
            "set output ",
            width, width);
    put_quoted(f, png);
    fputs("\nset datafile separator ','\nset datafile missing ''\nset grid\nset key top right\n",
          f);
    fputs("set xlabel ", f);
    put_quoted(f, p->xlabel);
    fputc('\n', f);
    if (p->integer_x)
        fputs("set xtics 1\nset format x '%.0f'\n", f);
    fprintf(f, "set multiplot layout 1,%d\n", p->n_panels);
    for (int k = 0; k < p->n_panels; k++) {
        const cli_plot_panel *panel = &p->panels[k];
        fputs("set title ", f);
        put_quoted(f, panel->title);
        fputs("\nset ylabel ", f);
        put_quoted(f, panel->ylabel ? panel->ylabel : "");
        fputs(panel->log_y ? "\nset logscale y\n" : "\nunset logscale y\n", f);
        fputs("plot ", f);
        for (int c = 0; c < panel->n_curves; c++) {
            if (c)
                fputs(", ''", f);
            else
                put_quoted(f, p->csv_path);
            fprintf(f, " skip 1 using %d:%d with %s title ", p->x_column, panel->curves[c].column,
                    p->points ? "linespoints lw 2 pt 7" : "lines lw 2");
            put_quoted(f, panel->curves[c].title);
        }
        fputc('\n', f);
    }
    fputs("unset multiplot\nset output\n", f);
}

bool cli_plot_draw(const cli_plot *p)
{
    static bool warned;
    char gnuplot[4096], tmp[4200];
    if (!find_in_path("gnuplot", gnuplot, sizeof gnuplot)) {
        if (!warned)
            fprintf(stderr, "tessera: note: gnuplot is not installed, so no plot is drawn "
                            "(on Debian: apt-get install gnuplot-nox)\n");
        warned = true;
        return false;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld.png", p->png_path, (long)getpid());
    int fds[2];
    if (pipe(fds) != 0)
        return false;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return false;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(fds[0], 0);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        close(fds[0]);
        close(fds[1]);
        execl(gnuplot, "gnuplot", (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    /* A gnuplot that dies early must not kill us with SIGPIPE. */
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    FILE *f = fdopen(fds[1], "w");
    if (f) {
        write_script(f, p, tmp);
        fclose(f);
    } else {
        close(fds[1]);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    signal(SIGPIPE, old);
    struct stat sb;
    bool ok = f && WIFEXITED(status) && WEXITSTATUS(status) == 0 && stat(tmp, &sb) == 0 &&
              sb.st_size > 0 && rename(tmp, p->png_path) == 0;
    if (!ok) {
        unlink(tmp);
        if (!warned)
            fprintf(stderr, "tessera: note: gnuplot failed (exit status %d), no plot drawn\n",
                    WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        warned = true;
    }
    return ok;
}
