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
#include <float.h>
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
    if (sscanf(tab + 1, "%39s %lf %lf %lf %c", choice->algorithm, &choice->default_seconds,
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

static tsr_status trial_tensor(tsr_autotune_trial *t, int slot, const tsr_value *v,
                               tsr_layout layout, unsigned seed)
{
    tsr_tensor *x = &t->tensors[slot];
    *x = (tsr_tensor){.dtype = TSR_FLOAT32, .rank = v->rank};
    memcpy(x->dims, v->dims, sizeof x->dims);
    if (v->data) {
        x->dtype = v->dtype;
        x->data = v->data;
        return TSR_OK;
    }
    size_t bytes = tsr_layout_bytes(x, layout);
    t->owned[slot] = x->data = tsr_aligned_alloc(bytes ? bytes : 1);
    if (!x->data)
        return TSR_ERR_OUT_OF_MEMORY;
    memset(x->data, 0, bytes);
    if (seed == 0)
        return TSR_OK;
    float *data = x->data;
    int block = tsr_layout_block(layout);
    if (block == 1) {
        tsr_autotune_fill_random(data, bytes / sizeof(float), seed);
        return TSR_OK;
    }
    /* [N, ceil(C/b), H*W, b]: random lanes below C, one row at a time. */
    int64_t c = x->dims[1], plane = x->dims[2] * x->dims[3], cb = (c + block - 1) / block;
    for (int64_t n = 0; n < x->dims[0]; n++)
        for (int64_t b = 0; b < cb; b++) {
            int64_t lanes = c - b * block < block ? c - b * block : block;
            float *row = data + (n * cb + b) * plane * block;
            for (int64_t p = 0; p < plane; p++)
                tsr_autotune_fill_random(row + p * block, (size_t)lanes,
                                         seed + (unsigned)((n * cb + b) * plane + p));
        }
    return TSR_OK;
}

tsr_status tsr_autotune_trial_init(const tsr_prepare_ctx *ctx, tsr_autotune_trial *t)
{
    const tsr_graph *g = ctx->graph;
    const tsr_node *node = ctx->node;
    *t = (tsr_autotune_trial){.k = {.node = node, .n_inputs = node->n_inputs, .n_outputs = 1}};
    for (int i = 0; i < node->n_inputs; i++) {
        if (node->inputs[i] < 0)
            continue;
        TSR_CHECK(trial_tensor(t, i, &g->values[node->inputs[i]],
                               (tsr_layout)ctx->input_layouts[i], 1u + 7919u * (unsigned)i));
        t->k.inputs[i] = &t->tensors[i];
        t->k.input_layouts[i] = ctx->input_layouts[i];
    }
    tsr_tensor *y = &t->tensors[TSR_MAX_NODE_IO];
    TSR_CHECK(trial_tensor(t, TSR_MAX_NODE_IO, &g->values[node->outputs[0]],
                           (tsr_layout)ctx->output_layouts[0], 0));
    t->y_bytes = tsr_layout_bytes(y, (tsr_layout)ctx->output_layouts[0]);
    t->k.outputs[0] = y;
    t->k.output_layouts[0] = ctx->output_layouts[0];
    return TSR_OK;
}

void tsr_autotune_trial_release(tsr_autotune_trial *t)
{
    for (int i = 0; i <= TSR_MAX_NODE_IO; i++)
        tsr_aligned_free(t->owned[i]);
}

typedef struct {
    tsr_status (*run)(void *state, const tsr_kernel_ctx *k);
    void *state;
    const tsr_kernel_ctx *k;
} trial_call;

static tsr_status trial_call_run(void *arg)
{
    const trial_call *c = arg;
    return c->run(c->state, c->k);
}

tsr_status tsr_autotune_measure(int n, void *const *states,
                                tsr_status (*run)(void *state, const tsr_kernel_ctx *k),
                                tsr_autotune_trial *t, double *seconds, double *errors,
                                int *taken)
{
    *taken = 0;
    if (n < 1 || n > TSR_AUTOTUNE_MAX_CANDIDATES || !states[0])
        return tsr_error(TSR_ERR_INTERNAL, "autotune: %d candidates, default %s", n,
                         n > 0 && states[0] ? "built" : "missing");
    for (int i = 0; i < n; i++)
        seconds[i] = errors[i] = INFINITY;
    errors[0] = 0.0;
    size_t n_y = t->y_bytes / sizeof(float);
    float *ref = tsr_aligned_alloc(t->y_bytes ? t->y_bytes : 1);
    if (!ref)
        return TSR_ERR_OUT_OF_MEMORY;
    /* The guard's runs are the first timed ones. */
    trial_call calls[TSR_AUTOTUNE_MAX_CANDIDATES];
    void *args[TSR_AUTOTUNE_MAX_CANDIDATES];
    double times[TSR_AUTOTUNE_MAX_CANDIDATES];
    int index[TSR_AUTOTUNE_MAX_CANDIDATES], built = 0;
    const float *y = t->tensors[TSR_MAX_NODE_IO].data;
    tsr_status status = TSR_OK;
    for (int i = 0; i < n && status == TSR_OK; i++) {
        if (!states[i])
            continue;
        calls[built] = (trial_call){run, states[i], &t->k};
        args[built] = &calls[built];
        index[built] = i;
        status = tsr_autotune_run_timed(trial_call_run, args[built], &times[built]);
        if (status == TSR_OK && i == 0)
            memcpy(ref, y, t->y_bytes);
        else if (status == TSR_OK)
            errors[i] = tsr_autotune_rel_error(y, ref, n_y);
        built++;
    }
    if (status == TSR_OK)
        status = tsr_autotune_time(built, trial_call_run, args, times);
    tsr_aligned_free(ref);
    for (int b = 0; status == TSR_OK && b < built; b++) {
        int i = index[b];
        seconds[i] = times[b];
        if (i > 0 && tsr_autotune_takes(seconds[0], seconds[i], errors[i]) &&
            seconds[i] < seconds[*taken])
            *taken = i;
    }
    return status;
}

tsr_autotune_choice tsr_autotune_record(int n, const char *const *names, const double *seconds,
                                        const double *errors, int taken)
{
    int other = taken;
    for (int i = 1; i < n && taken == 0; i++)
        if (other == 0 || seconds[i] < seconds[other])
            other = i;
    tsr_autotune_choice c = {
        .default_seconds = isfinite(seconds[0]) ? seconds[0] : FLT_MAX,
        .alternative_seconds = isfinite(seconds[other]) ? seconds[other] : FLT_MAX,
        .alternative_error = isfinite(errors[other]) ? errors[other] : FLT_MAX};
    snprintf(c.algorithm, sizeof c.algorithm, "%s", names[taken]);
    return c;
}

void tsr_autotune_report(const char *node, int n, const char *const *names,
                         const double *seconds, const tsr_autotune_choice *c, bool cached,
                         int taken)
{
    char line[512];
    int len = snprintf(line, sizeof line, "tessera: autotune '%s':", node ? node : "");
    for (int i = 0; i < n && !cached && len > 0 && (size_t)len < sizeof line; i++)
        len += snprintf(line + len, sizeof line - (size_t)len, "%s %s %.3f ms", i ? "," : "",
                        names[i], seconds[i] * 1e3);
    if (cached && len > 0 && (size_t)len < sizeof line)
        len += snprintf(line + len, sizeof line - (size_t)len, " %s %.3f ms, fastest other %.3f ms",
                        names[0], c->default_seconds * 1e3, c->alternative_seconds * 1e3);
    if (len > 0 && (size_t)len < sizeof line)
        fprintf(stderr, "%s (error %.1e%s) -> %s%s\n", line, c->alternative_error,
                c->alternative_error > TSR_AUTOTUNE_TOLERANCE ? ", over the guard" : "",
                names[taken], cached ? " (cached)" : "");
}
