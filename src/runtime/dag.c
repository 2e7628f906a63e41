/* A spec's steps as a graph of the memory they share, run by a team that
 * takes each step as soon as the steps it waits for are done, every step
 * on one thread.
 *
 * A plan of many small steps (an ICTP potential on a molecule: about 700
 * steps of 1 to 40 us each) gains nothing from splitting each step over
 * the team: a fork and join costs as much as the step, so two threads run
 * it no faster than one. Its steps are rarely a chain, though (the paths
 * of a product basis, the messages of an interaction, their gradients),
 * so the team runs independent steps side by side instead.
 *
 * Step j waits for step i < j where both touch overlapping memory and one
 * of them writes it: its inputs' producers, and every step that read or
 * wrote bytes it overwrites. A write that covers an access's whole range
 * ends the search for that access: what came before was ordered before
 * that write. Constants and the caller's inputs, never written, order
 * nothing.
 *
 * Memory shared by liveness in the steps' order would add dependencies
 * (at 21 atoms the longest chain grew from 0.38 to 1.88 of 2.46 ms), so
 * such a spec's arena is placed first (tsr_dag_place): two buffers share
 * memory only where the dependencies through the buffers themselves order
 * every access of one before every access of the other. That arena is
 * about twice the one by liveness, and the memory adds no dependency. */
#include "runtime/plan_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DAG_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define DAG_RELAX() __asm__ volatile("yield")
#else
#define DAG_RELAX() ((void)0)
#endif

/* What a step reads or writes: a byte range of one resource. Resources
 * are the arena of each space (by memory), or each arena buffer (by
 * buffer: a slice as its range of the buffer holding it), and each
 * caller output and input (whole). */
typedef struct {
    int resource;
    int64_t lo, hi;
    bool write;
} access;

struct plan_dag {
    int n;
    int *n_preds;      /* [n] */
    int *succ_start;   /* [n + 1] */
    int *succ;         /* the steps that wait for each */
    atomic_int *left;  /* per run: the steps each still waits for */
    atomic_int *ready; /* per run: steps in the order they became ready, -1 not yet */
};

static bool buffer_access(const spec *s, int buf, bool write, bool by_buffer, access *a)
{
    const plan_buffer *b = &s->bufs[buf];
    switch (b->kind) {
    case BUF_ARENA:
        if (by_buffer) {
            int root = b->slice ? b->parent : buf;
            a->resource = -1 - root;
            a->lo = b->slice ? (int64_t)b->slice_offset : 0;
        } else {
            a->resource = b->space;
            a->lo = (int64_t)b->offset;
        }
        a->hi = a->lo + (int64_t)b->bytes;
        break;
    case BUF_OUTPUT:
    case BUF_INPUT:
        a->resource = TSR_MAX_SPACES + 2 * b->index + (b->kind == BUF_INPUT);
        a->lo = 0;
        a->hi = 1;
        break;
    default: /* constants and their uploads: never written */ return false;
    }
    a->write = write;
    return a->hi > a->lo;
}

/* The accesses of a step, -1 if more than cap. */
static int step_accesses(const spec *s, const plan_step *st, bool by_buffer, access *out, int cap)
{
    if (st->n_in + st->n_out > cap)
        return -1;
    int n = 0;
    for (int i = 0; i < st->n_in; i++)
        if (st->in_bufs[i] >= 0 && buffer_access(s, st->in_bufs[i], false, by_buffer, &out[n]))
            n++;
    for (int o = 0; o < st->n_out; o++)
        if (st->out_bufs[o] >= 0 && buffer_access(s, st->out_bufs[o], true, by_buffer, &out[n]))
            n++;
    return n;
}

void tsr_dag_destroy(plan_dag *d)
{
    if (!d)
        return;
    free(d->n_preds);
    free(d->succ_start);
    free(d->succ);
    free(d->left);
    free(d->ready);
    free(d);
}

/* Edges i -> j, i < j, where steps i and j touch overlapping bytes of a
 * resource and one of them writes them; from[e] -> to[e], by increasing
 * to (collect_edges; *fits false: a step has more accesses than the
 * search holds, and no edges are found). */
typedef struct {
    int *from, *to;
    int n, cap;
} edges;

static bool add_edge(edges *e, int i, int j)
{
    if (e->n == e->cap) {
        int c = e->cap ? 2 * e->cap : 1024;
        int *f = realloc(e->from, (size_t)c * sizeof *f);
        if (!f)
            return false;
        e->from = f;
        int *t = realloc(e->to, (size_t)c * sizeof *t);
        if (!t)
            return false;
        e->to = t;
        e->cap = c;
    }
    e->from[e->n] = i;
    e->to[e->n++] = j;
    return true;
}

static tsr_status collect_edges(const spec *s, bool by_buffer, edges *e, bool *fits)
{
    enum { MAX_ACCESS = 2 * TSR_MAX_NODE_IO };
    const int n = s->n_steps;
    access *acc = tsr_calloc((size_t)n * MAX_ACCESS + 1, sizeof *acc);
    int *n_acc = tsr_calloc((size_t)n + 1, sizeof *n_acc);
    int *marked = tsr_malloc(((size_t)n + 1) * sizeof *marked);
    tsr_status st = acc && n_acc && marked ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    *fits = true;
    for (int j = 0; j < n && st == TSR_OK && *fits; j++) {
        n_acc[j] =
            step_accesses(s, &s->steps[j], by_buffer, acc + (size_t)j * MAX_ACCESS, MAX_ACCESS);
        *fits = n_acc[j] >= 0;
        marked[j] = -1;
    }
    for (int j = 0; j < n && st == TSR_OK && *fits; j++) {
        const access *aj = acc + (size_t)j * MAX_ACCESS;
        for (int x = 0; x < n_acc[j] && st == TSR_OK; x++) {
            const access *a = &aj[x];
            bool covered = false;
            for (int i = j - 1; i >= 0 && !covered && st == TSR_OK; i--) {
                const access *ai = acc + (size_t)i * MAX_ACCESS;
                for (int y = 0; y < n_acc[i]; y++) {
                    const access *b = &ai[y];
                    if (b->resource != a->resource || b->hi <= a->lo || a->hi <= b->lo ||
                        (!a->write && !b->write))
                        continue;
                    if (marked[i] != j) {
                        marked[i] = j;
                        if (!add_edge(e, i, j)) {
                            st = TSR_ERR_OUT_OF_MEMORY;
                            break;
                        }
                    }
                    covered = covered || (b->write && b->lo <= a->lo && b->hi >= a->hi);
                }
            }
        }
    }
    free(acc);
    free(n_acc);
    free(marked);
    return st;
}

/* Placement by the steps' order through their buffers: anc holds, per
 * step, the set of steps it waits for, directly or not (n bits each);
 * per arena buffer (a slice's is its parent's), the steps touching it. */
typedef struct {
    const uint64_t *anc;
    int words;
    const int *touch_start, *touch;
} order_ctx;

static bool waits_for(const order_ctx *c, int later, int earlier)
{
    return c->anc[(size_t)later * c->words + earlier / 64] >> (earlier % 64) & 1;
}

/* Every step touching a before every step touching b. */
static bool all_before(const order_ctx *c, int a, int b)
{
    for (int x = c->touch_start[a]; x < c->touch_start[a + 1]; x++)
        for (int y = c->touch_start[b]; y < c->touch_start[b + 1]; y++)
            if (!waits_for(c, c->touch[y], c->touch[x]))
                return false;
    return true;
}

static bool unordered(const spec *s, int a, int b, void *arg)
{
    (void)s;
    const order_ctx *c = arg;
    return !all_before(c, a, b) && !all_before(c, b, a);
}

tsr_status tsr_dag_place(spec *s)
{
    const int n = s->n_steps, words = (n + 63) / 64;
    edges e = {0};
    bool fits;
    tsr_status st = collect_edges(s, true, &e, &fits);
    uint64_t *anc = st == TSR_OK && fits ? tsr_calloc((size_t)n * words + 1, sizeof *anc) : NULL;
    int *touch_start = tsr_calloc((size_t)s->n_bufs + 2, sizeof *touch_start);
    int *touch = NULL;
    if (st == TSR_OK && fits && (!anc || !touch_start))
        st = TSR_ERR_OUT_OF_MEMORY;
    if (st == TSR_OK && fits) {
        /* Edges come by increasing target, and every source precedes its
         * target, so each step's set is complete before it is read. */
        for (int k = 0; k < e.n; k++) {
            uint64_t *to = anc + (size_t)e.to[k] * words;
            const uint64_t *from = anc + (size_t)e.from[k] * words;
            for (int w = 0; w < words; w++)
                to[w] |= from[w];
            to[e.from[k] / 64] |= (uint64_t)1 << (e.from[k] % 64);
        }
        /* Two passes: count each buffer's steps, then list them. */
        int *fill = NULL;
        for (int pass = 0; pass < 2 && st == TSR_OK; pass++) {
            for (int i = 0; i < n; i++) {
                const plan_step *sp = &s->steps[i];
                for (int k = 0; k < sp->n_in + sp->n_out; k++) {
                    int buf = k < sp->n_in ? sp->in_bufs[k] : sp->out_bufs[k - sp->n_in];
                    if (buf < 0 || s->bufs[buf].kind != BUF_ARENA)
                        continue;
                    int root = s->bufs[buf].slice ? s->bufs[buf].parent : buf;
                    if (pass == 0)
                        touch_start[root + 1]++;
                    else
                        touch[fill[root]++] = i;
                }
            }
            if (pass == 0) {
                for (int b = 0; b < s->n_bufs; b++)
                    touch_start[b + 1] += touch_start[b];
                touch = tsr_malloc(((size_t)touch_start[s->n_bufs] + 1) * sizeof *touch);
                fill = tsr_malloc(((size_t)s->n_bufs + 1) * sizeof *fill);
                if (!touch || !fill)
                    st = TSR_ERR_OUT_OF_MEMORY;
                else
                    memcpy(fill, touch_start, (size_t)s->n_bufs * sizeof *fill);
            }
        }
        free(fill);
    }
    if (st == TSR_OK && fits) {
        order_ctx c = {anc, words, touch_start, touch};
        st = tsr_place_arenas(s, unordered, &c);
    }
    free(anc);
    free(touch_start);
    free(touch);
    free(e.from);
    free(e.to);
    return st;
}

tsr_status tsr_dag_build(const spec *s, plan_dag **out)
{
    const int n = s->n_steps;
    *out = NULL;
    edges e = {0};
    bool fits;
    tsr_status st = collect_edges(s, false, &e, &fits);
    plan_dag *d = st == TSR_OK && fits ? tsr_calloc(1, sizeof *d) : NULL;
    if (st == TSR_OK && fits && !d)
        st = TSR_ERR_OUT_OF_MEMORY;
    if (d) {
        d->n = n;
        d->n_preds = tsr_calloc((size_t)n + 1, sizeof *d->n_preds);
        d->succ_start = tsr_calloc((size_t)n + 2, sizeof *d->succ_start);
        d->succ = tsr_malloc(((size_t)e.n + 1) * sizeof *d->succ);
        d->left = tsr_malloc(((size_t)n + 1) * sizeof *d->left);
        d->ready = tsr_malloc(((size_t)n + 1) * sizeof *d->ready);
        int *next = tsr_malloc(((size_t)n + 1) * sizeof *next);
        if (!d->n_preds || !d->succ_start || !d->succ || !d->left || !d->ready || !next) {
            st = TSR_ERR_OUT_OF_MEMORY;
        } else {
            for (int k = 0; k < e.n; k++) {
                d->succ_start[e.from[k] + 1]++;
                d->n_preds[e.to[k]]++;
            }
            for (int i = 0; i < n; i++)
                d->succ_start[i + 1] += d->succ_start[i];
            memcpy(next, d->succ_start, (size_t)n * sizeof *next);
            for (int k = 0; k < e.n; k++)
                d->succ[next[e.from[k]]++] = e.to[k];
            *out = d;
            d = NULL;
        }
        free(next);
    }
    tsr_dag_destroy(d);
    free(e.from);
    free(e.to);
    return st;
}

/* Marks step i done. Of its successors that waited for it alone, the
 * first is returned for the same thread to run next (its inputs are in
 * this core's cache) and the others are queued; -1 if none. */
static int finish(plan_dag *d, int i, atomic_int *tail)
{
    int next = -1;
    for (int e = d->succ_start[i]; e < d->succ_start[i + 1]; e++) {
        int j = d->succ[e];
        if (atomic_fetch_sub_explicit(&d->left[j], 1, memory_order_acq_rel) != 1)
            continue;
        if (next < 0)
            next = j;
        else
            atomic_store_explicit(&d->ready[atomic_fetch_add(tail, 1)], j, memory_order_release);
    }
    return next;
}

tsr_status tsr_dag_run(plan_dag *d, int threads, tsr_dag_step_fn run, void *arg)
{
    atomic_int head = 0, tail = 0, done = 0, failed = TSR_OK;
    char message[1024] = "";
    for (int i = 0; i < d->n; i++) {
        atomic_init(&d->left[i], d->n_preds[i]);
        atomic_init(&d->ready[i], -1);
    }
    for (int i = 0; i < d->n; i++)
        if (!d->n_preds[i])
            atomic_init(&d->ready[atomic_fetch_add(&tail, 1)], i);
            /* A thread without a step to continue with claims the next slot of
             * the queue and waits until a step fills it, or until every step is
             * done (the last steps may all have been continuations). After a
             * failure the remaining steps are marked done unrun. */
#pragma omp parallel num_threads(threads)
    {
        int i = -1;
        for (;;) {
            if (i < 0) {
                int h = atomic_fetch_add_explicit(&head, 1, memory_order_relaxed);
                if (h >= d->n)
                    break;
                while ((i = atomic_load_explicit(&d->ready[h], memory_order_acquire)) < 0 &&
                       atomic_load_explicit(&done, memory_order_acquire) < d->n)
                    DAG_RELAX();
                if (i < 0)
                    break;
            }
            if (atomic_load_explicit(&failed, memory_order_relaxed) == TSR_OK) {
                tsr_status status = run(arg, i);
                int none = TSR_OK;
                if (status != TSR_OK && atomic_compare_exchange_strong(&failed, &none, (int)status))
                    snprintf(message, sizeof message, "%s", tsr_last_error());
            }
            int next = finish(d, i, &tail);
            atomic_fetch_add_explicit(&done, 1, memory_order_acq_rel);
            i = next;
        }
    }
    int status = atomic_load(&failed);
    return status == TSR_OK ? TSR_OK : tsr_error((tsr_status)status, "%s", message);
}
