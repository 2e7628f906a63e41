/* The autotuning cache (backends/cpu/autotune.c) in a private
 * XDG_CACHE_HOME: decisions written and read back, the last line for a
 * key winning, malformed and cut-off lines skipped, a file without the
 * header (someone else's) never written to; and the accuracy guard, the
 * error measure and the timer. */
#include "backends/cpu/autotune.h"
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char home[64], path[128];

static void write_file(const char *text)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static char *read_file(void)
{
    static char text[4096];
    text[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (f) {
        text[fread(text, 1, sizeof text - 1, f)] = '\0';
        fclose(f);
    }
    return text;
}

/* A fresh cache location, so that the next call reads the file again. */
static void use_home(const char *sub)
{
    snprintf(home, sizeof home, "/tmp/tsr_autotune_test_%d_%s", (int)getpid(), sub);
    setenv("XDG_CACHE_HOME", home, 1);
    snprintf(path, sizeof path, "%s/tessera/autotune.txt", home);
}

static void remove_home(void)
{
    char dir[160];
    unlink(path);
    snprintf(dir, sizeof dir, "%s/tessera", home);
    rmdir(dir);
    rmdir(home);
}

static void test_round_trip(void)
{
    use_home("rt");
    char got_path[256];
    CHECK(tsr_autotune_cache_path(got_path, sizeof got_path) && strcmp(got_path, path) == 0);
    tsr_autotune_choice c = {"winograd", 2e-3, 1e-3, 3e-7}, r;
    CHECK(!tsr_autotune_cache_get("conv a", &r));
    tsr_autotune_cache_put("conv a", &c);
    CHECK(strncmp(read_file(), "tessera-autotune 1\nconv a\twinograd ", 35) == 0);
    strcpy(c.algorithm, "direct");
    tsr_autotune_cache_put("conv b", &c);
    use_home("rt2"); /* another path, then back: the file is read again */
    CHECK(!tsr_autotune_cache_get("conv a", &r));
    use_home("rt");
    CHECK(tsr_autotune_cache_get("conv a", &r) && strcmp(r.algorithm, "winograd") == 0);
    CHECK(fabs(r.default_seconds - 2e-3) < 1e-9 && fabs(r.alternative_error - 3e-7) < 1e-12);
    CHECK(tsr_autotune_cache_get("conv b", &r) && strcmp(r.algorithm, "direct") == 0);
    remove_home();
}

static void test_malformed_lines(void)
{
    use_home("bad");
    char dir[160];
    snprintf(dir, sizeof dir, "%s", home);
    mkdir(dir, 0700);
    snprintf(dir, sizeof dir, "%s/tessera", home);
    mkdir(dir, 0700);
    write_file("tessera-autotune 1\n"
               "conv a\twinograd 1 2 3\n"
               "no tab here\n"
               "conv b\twinograd nan 1 1\n"
               "conv c\tdirect -1 1 1\n"
               "conv d\tdirect 1 1\n"
               "conv e\tdirect 1 1 1 extra\n"
               "conv a\tdirect 4 5 6\n"
               "conv f\tdirect 1 1 1");
    tsr_autotune_choice r;
    CHECK(tsr_autotune_cache_get("conv a", &r) && strcmp(r.algorithm, "direct") == 0);
    const char *bad[] = {"no tab here", "conv b", "conv c", "conv d", "conv e", "conv f"};
    for (int i = 0; i < 6; i++)
        CHECK(!tsr_autotune_cache_get(bad[i], &r));
    tsr_autotune_choice c = {"winograd", 1, 0.5, 0};
    tsr_autotune_cache_put("conv g", &c);
    /* The cut-off last line stays, ended, and the new one follows it. */
    CHECK(strstr(read_file(), "conv f\tdirect 1 1 1\nconv g\twinograd 1 0.5 0\n") != NULL);
    remove_home();
}

static void test_foreign_file(void)
{
    use_home("foreign");
    char dir[160];
    snprintf(dir, sizeof dir, "%s", home);
    mkdir(dir, 0700);
    snprintf(dir, sizeof dir, "%s/tessera", home);
    mkdir(dir, 0700);
    write_file("my notes\nconv a\twinograd 1 2 3\n");
    tsr_autotune_choice c = {"winograd", 1, 0.5, 0}, r;
    CHECK(!tsr_autotune_cache_get("conv a", &r));
    tsr_autotune_cache_put("conv z", &c);
    CHECK(strcmp(read_file(), "my notes\nconv a\twinograd 1 2 3\n") == 0);
    CHECK(tsr_autotune_cache_get("conv z", &r)); /* remembered in this process */
    remove_home();
    setenv("XDG_CACHE_HOME", "relative", 1);
    char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    unsetenv("HOME");
    char p[64];
    CHECK(!tsr_autotune_cache_path(p, sizeof p));
    CHECK(!tsr_autotune_cache_get("conv a", &r));
    tsr_autotune_cache_put("conv a", &c);
    if (old_home) {
        setenv("HOME", old_home, 1);
        free(old_home);
    }
}

static void test_guard_and_error(void)
{
    CHECK(tsr_autotune_takes(1.0, 0.5, 1e-6));
    CHECK(!tsr_autotune_takes(1.0, 0.5, 2 * TSR_AUTOTUNE_TOLERANCE)); /* too inaccurate */
    CHECK(!tsr_autotune_takes(1.0, 0.97, 0.0));                       /* within the noise */
    CHECK(!tsr_autotune_takes(1.0, 0.5, INFINITY));
    float ref[4] = {1, -4, 2, 0}, y[4] = {1, -4, 2.002f, 0};
    CHECK(fabs(tsr_autotune_rel_error(y, ref, 4) - 0.0005) < 1e-6);
    CHECK(tsr_autotune_rel_error(ref, ref, 4) == 0.0);
    y[3] = NAN;
    CHECK(isinf(tsr_autotune_rel_error(y, ref, 4)));
    float zeros[2] = {0, 0}, ones[2] = {1, 1};
    CHECK(isinf(tsr_autotune_rel_error(ones, zeros, 2)));
    float x[1000];
    tsr_autotune_fill_random(x, 1000, 3);
    double lo = 1, hi = -1;
    for (int i = 0; i < 1000; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    CHECK(lo >= -1.0 && hi < 1.0 && lo < -0.9 && hi > 0.9);
}

static int calls[2];
static double cost[2]; /* seconds each candidate pretends to take */

static tsr_status count_call(void *arg)
{
    int i = *(int *)arg;
    calls[i]++;
    if (cost[i] > 0) {
        struct timespec ts = {0, (long)(cost[i] * 1e9)};
        nanosleep(&ts, NULL);
    }
    return i == 1 && calls[1] == 2 && cost[1] == 0 ? TSR_ERR_INTERNAL : TSR_OK;
}

static void test_timer(void)
{
    int a = 0, b = 1;
    void *args[2] = {&a, &b};
    double s[2] = {INFINITY, INFINITY};
    CHECK_OK(tsr_autotune_time(1, count_call, args, s));
    CHECK(calls[0] >= 3 && calls[0] <= 20 && s[0] >= 0 && isfinite(s[0]));
    calls[0] = calls[1] = 0;
    s[0] = s[1] = INFINITY;
    CHECK(tsr_autotune_time(2, count_call, args, s) == TSR_ERR_INTERNAL);
    CHECK(calls[0] == 2 && calls[1] == 2); /* alternating, stopped at the failure */
    /* A candidate 50x slower is dropped after two calls; with one left
     * the timing stops. (Sleeps, so that a loaded machine's noise stays
     * far from the factor of 2.) */
    calls[0] = calls[1] = 0;
    cost[0] = 0.001;
    cost[1] = 0.05;
    s[0] = s[1] = INFINITY;
    CHECK_OK(tsr_autotune_time(2, count_call, args, s));
    CHECK(calls[0] == 2 && calls[1] == 2 && s[1] > 2 * s[0]);
    /* A time measured before (the guard's run) is the first of the two. */
    calls[0] = calls[1] = 0;
    s[0] = 0.001;
    s[1] = 0.05;
    CHECK_OK(tsr_autotune_time(2, count_call, args, s));
    CHECK(calls[0] == 1 && calls[1] == 1);
    /* Close candidates are both timed for every round. */
    calls[0] = calls[1] = 0;
    cost[0] = cost[1] = 0.005;
    s[0] = s[1] = INFINITY;
    CHECK_OK(tsr_autotune_time(2, count_call, args, s));
    CHECK(calls[0] >= 3 && calls[0] == calls[1]);
    CHECK(tsr_autotune_time(0, count_call, args, s) == TSR_ERR_INTERNAL);
    double t = -1;
    CHECK_OK(tsr_autotune_run_timed(count_call, &a, &t));
    CHECK(t >= 0.0009);
}

int main(void)
{
    test_round_trip();
    test_malformed_lines();
    test_foreign_file();
    test_guard_and_error();
    test_timer();
    return tsr_test_summary("test_autotune");
}
