/* The autotuning cache and its measurements. The cache is one text file
 * read once per process (again if its path changes, as tests do), kept in
 * memory, and appended to with one write per decision, so that a plan
 * never rewrites what another process wrote meanwhile. Its format
 * (docs/autotune.md):
 *
 *     tessera-autotune 1
 *     <key>\t<algorithm> <default seconds> <alternative seconds> <alternative error>
 *
 * A later line for the same key wins; lines that do not parse are
 * skipped. The key names everything the choice depends on (shape, ISA,
 * oneDNN version, threads), so stale entries are never matched. */
#include "backends/cpu/autotune.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CACHE_HEADER "tessera-autotune 1\n"
/* The buffer for one line, read or written: an entry that would not fit
 * (a conv key is at most 511 characters) is not written, so that every
 * entry written is read back whole. */
#define CACHE_LINE_MAX 2048

typedef struct {
    char *key;
    tsr_autotune_choice choice;
} cache_entry;

static struct {
    pthread_mutex_t lock;
    char path[PATH_MAX]; /* the file the entries were read from; "" before the first read */
    bool writable;       /* absent, or ours (starts with the header) */
    bool needs_newline;  /* ours, but its last line has no newline (a cut-off write) */
    cache_entry *entries;
    int n_entries, cap_entries;
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

bool tsr_autotune_cache_path(char *path, size_t size)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    int n;
    /* The XDG spec ignores relative values. */
    if (xdg && xdg[0] == '/') {
        n = snprintf(path, size, "%s/tessera/autotune.txt", xdg);
    } else {
        const char *home = getenv("HOME");
        if (!home || home[0] != '/')
            return false;
        n = snprintf(path, size, "%s/.cache/tessera/autotune.txt", home);
    }
    return n > 0 && (size_t)n < size;
}

static void cache_clear(void)
{
    for (int i = 0; i < cache.n_entries; i++)
        free(cache.entries[i].key);
    free(cache.entries);
    cache.entries = NULL;
    cache.n_entries = cache.cap_entries = 0;
}

static cache_entry *cache_find(const char *key)
{
    for (int i = cache.n_entries - 1; i >= 0; i--)
        if (strcmp(cache.entries[i].key, key) == 0)
            return &cache.entries[i];
    return NULL;
}

static void cache_remember(const char *key, const tsr_autotune_choice *choice)
{
    cache_entry *e = cache_find(key);
    if (e) {
        e->choice = *choice;
        return;
    }
    if (cache.n_entries == cache.cap_entries) {
        int cap = cache.cap_entries ? 2 * cache.cap_entries : 64;
        cache_entry *grown = realloc(cache.entries, sizeof *grown * (size_t)cap);
        if (!grown)
            return;
        cache.entries = grown;
        cache.cap_entries = cap;
    }
    char *copy = strdup(key);
    if (!copy)
        return;
    cache.entries[cache.n_entries++] = (cache_entry){.key = copy, .choice = *choice};
}

/* "<key>\t<algorithm> <t0> <t1> <err>" with finite, non-negative numbers. */
static bool parse_line(char *line, tsr_autotune_choice *choice)
{
    char *tab = strchr(line, '\t');
    if (!tab || tab == line)
        return false;
    *tab = '\0';
    char tail;
    if (sscanf(tab + 1, "%31s %lf %lf %lf %c", choice->algorithm, &choice->default_seconds,
               &choice->alternative_seconds, &choice->alternative_error, &tail) != 4)
        return false;
    double v[3] = {choice->default_seconds, choice->alternative_seconds, choice->alternative_error};
    for (int i = 0; i < 3; i++)
        if (!isfinite(v[i]) || v[i] < 0)
            return false;
    return true;
}

static void cache_load(const char *path)
{
    cache_clear();
    snprintf(cache.path, sizeof cache.path, "%s", path);
    cache.writable = false;
    cache.needs_newline = false;
    int fd = open(path, O_RDONLY | O_NOFOLLOW);
    if (fd < 0) {
        cache.writable = errno == ENOENT;
        return;
    }
    struct stat sb;
    FILE *f = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) ? fdopen(fd, "r") : NULL;
    if (!f) {
        close(fd);
        return;
    }
    char line[CACHE_LINE_MAX];
    if (!fgets(line, sizeof line, f) || strcmp(line, CACHE_HEADER) != 0) {
        fclose(f);
        return;
    }
    cache.writable = true;
    bool whole = true; /* the line read so far started at a line start */
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        bool complete = len > 0 && line[len - 1] == '\n';
        if (complete)
            line[len - 1] = '\0';
        tsr_autotune_choice choice;
        if (whole && complete && parse_line(line, &choice))
            cache_remember(line, &choice);
        whole = complete;
        cache.needs_newline = !complete;
    }
    fclose(f);
}

/* Reads the file again when the path changed since the last call. */
static bool cache_sync(void)
{
    char path[PATH_MAX];
    if (!tsr_autotune_cache_path(path, sizeof path))
        return false;
    if (strcmp(path, cache.path) != 0)
        cache_load(path);
    return true;
}

bool tsr_autotune_cache_get(const char *key, tsr_autotune_choice *choice_out)
{
    pthread_mutex_lock(&cache.lock);
    const cache_entry *e = cache_sync() ? cache_find(key) : NULL;
    if (e)
        *choice_out = e->choice;
    pthread_mutex_unlock(&cache.lock);
    return e != NULL;
}

/* mkdir -p of the directories above `path`, each new one private. */
static bool make_parents(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return false;
        *p = '/';
    }
    return true;
}

static bool write_all(int fd, const char *text, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, text, len);
        if (n <= 0)
            return false;
        text += n;
        len -= (size_t)n;
    }
    return true;
}

static void cache_append(const char *key, const tsr_autotune_choice *choice)
{
    if (!cache.writable || !make_parents(cache.path))
        return;
    /* O_EXCL first: a file created here gets the header; one that
     * appeared meanwhile is appended to only if it starts with it. */
    int fd = open(cache.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    bool fresh = fd >= 0;
    if (!fresh && errno == EEXIST) {
        fd = open(cache.path, O_RDWR | O_APPEND | O_NOFOLLOW);
        char head[sizeof CACHE_HEADER];
        ssize_t n = fd >= 0 ? pread(fd, head, sizeof head - 1, 0) : -1;
        if (n != (ssize_t)(sizeof head - 1) || memcmp(head, CACHE_HEADER, sizeof head - 1) != 0) {
            if (fd >= 0)
                close(fd);
            cache.writable = false;
            return;
        }
    }
    if (fd < 0) {
        cache.writable = false;
        return;
    }
    char line[CACHE_LINE_MAX];
    int len =
        snprintf(line, sizeof line, "%s%s%s\t%s %.6g %.6g %.3g\n", fresh ? CACHE_HEADER : "",
                 cache.needs_newline && !fresh ? "\n" : "", key, choice->algorithm,
                 choice->default_seconds, choice->alternative_seconds, choice->alternative_error);
    if (len > 0 && (size_t)len < sizeof line && write_all(fd, line, (size_t)len))
        cache.needs_newline = false;
    close(fd);
}

void tsr_autotune_cache_put(const char *key, const tsr_autotune_choice *choice)
{
    pthread_mutex_lock(&cache.lock);
    if (cache_sync()) {
        cache_remember(key, choice);
        cache_append(key, choice);
    }
    pthread_mutex_unlock(&cache.lock);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

tsr_status tsr_autotune_run_timed(tsr_status (*run)(void *arg), void *arg, double *seconds)
{
    double t0 = now_seconds();
    TSR_CHECK(run(arg));
    *seconds = now_seconds() - t0;
    return TSR_OK;
}

/* Marks the candidates whose best of at least two calls is more than
 * twice the best of any; returns how many are left. (One call alone can
 * be one the scheduler preempted.) */
static int drop_losers(int n, const double *seconds, const int *samples, bool *dropped)
{
    double best = INFINITY;
    for (int i = 0; i < n; i++)
        if (seconds[i] < best)
            best = seconds[i];
    int left = 0;
    for (int i = 0; i < n; i++) {
        if (samples[i] >= 2 && seconds[i] > 2.0 * best)
            dropped[i] = true;
        left += !dropped[i];
    }
    return left;
}

tsr_status tsr_autotune_time(int n, tsr_status (*run)(void *arg), void *const *args,
                             double *seconds)
{
    if (n < 1 || n > TSR_AUTOTUNE_MAX_CANDIDATES)
        return tsr_error(TSR_ERR_INTERNAL, "autotune: %d candidates", n);
    bool dropped[TSR_AUTOTUNE_MAX_CANDIDATES] = {false};
    int samples[TSR_AUTOTUNE_MAX_CANDIDATES];
    for (int i = 0; i < n; i++)
        samples[i] = isfinite(seconds[i]);
    double total = 0.0;
    for (int round = 0; round < 20; round++) {
        int fewest = INT_MAX;
        for (int i = 0; i < n; i++)
            if (!dropped[i] && samples[i] < fewest)
                fewest = samples[i];
        if (fewest >= 3 && total >= 0.05)
            break;
        if (n > 1 && drop_losers(n, seconds, samples, dropped) == 1)
            break;
        for (int i = 0; i < n; i++) {
            double t;
            if (dropped[i])
                continue;
            TSR_CHECK(tsr_autotune_run_timed(run, args[i], &t));
            samples[i]++;
            total += t;
            if (t < seconds[i])
                seconds[i] = t;
        }
    }
    return TSR_OK;
}

bool tsr_autotune_takes(double default_seconds, double alternative_seconds, double rel_error)
{
    return rel_error <= TSR_AUTOTUNE_TOLERANCE &&
           alternative_seconds < TSR_AUTOTUNE_MARGIN * default_seconds;
}

double tsr_autotune_rel_error(const float *y, const float *ref, size_t n)
{
    double max_ref = 0.0, max_diff = 0.0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)ref[i]), d = fabs((double)y[i] - (double)ref[i]);
        if (isfinite(ref[i]) && !isfinite(y[i]))
            return INFINITY;
        if (r > max_ref)
            max_ref = r;
        if (d > max_diff)
            max_diff = d;
    }
    if (max_diff == 0.0)
        return 0.0;
    return max_ref > 0.0 ? max_diff / max_ref : INFINITY;
}

void tsr_autotune_fill_random(float *x, size_t n, unsigned seed)
{
    uint64_t s = 0x9E3779B97F4A7C15ull * (seed + 1u);
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 40) / (double)(1u << 23)) - 1.0f;
    }
}
