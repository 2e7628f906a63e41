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
 * of them writes it: its inputs' producers, and, in arena memory reused
 * by liveness, every step that read or wrote the bytes it overwrites. A
 * write that covers an access's whole range ends the search for that
 * access: what came before was ordered before that write. Constants and
 * the caller's inputs, never written, order nothing. */
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

/* Memory a step reads or writes: a byte range of one resource (an arena,
 * or one caller output, input or constant). */
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

/* Resources: one per arena space, then each output, input and constant by
 * index or value (those are whole buffers). */
static bool buffer_access(const spec *s, int buf, bool write, access *a)
{
    const plan_buffer *b = &s->bufs[buf];
    switch (b->kind) {
    case BUF_ARENA:
        a->resource = b->space;
        a->lo = (int64_t)b->offset;
        a->hi = (int64_t)(b->offset + b->bytes);
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
static int step_accesses(const spec *s, const plan_step *st, access *out, int cap)
{
    if (st->n_in + st->n_out > cap)
        return -1;
    int n = 0;
    for (int i = 0; i < st->n_in; i++)
        if (st->in_bufs[i] >= 0 && buffer_access(s, st->in_bufs[i], false, &out[n]))
            n++;
    for (int o = 0; o < st->n_out; o++)
        if (st->out_bufs[o] >= 0 && buffer_access(s, st->out_bufs[o], true, &out[n]))
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

/* Appends edge i -> j to the growing list. */
static bool add_edge(int **from, int **to, int *n, int *cap, int i, int j)
{
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 1024;
        int *f = realloc(*from, (size_t)c * sizeof *f);
        if (!f)
            return false;
        *from = f;
        int *t = realloc(*to, (size_t)c * sizeof *t);
        if (!t)
            return false;
        *to = t;
        *cap = c;
    }
    (*from)[*n] = i;
    (*to)[(*n)++] = j;
    return true;
}

tsr_status tsr_dag_build(const spec *s, plan_dag **out)
{
    enum { MAX_ACCESS = 2 * TSR_MAX_NODE_IO };
    const int n = s->n_steps;
    *out = NULL;
    access *acc = tsr_calloc((size_t)n * MAX_ACCESS + 1, sizeof *acc);
    int *n_acc = tsr_calloc((size_t)n + 1, sizeof *n_acc);
    int *marked = tsr_malloc(((size_t)n + 1) * sizeof *marked);
    int *from = NULL, *to = NULL, n_edges = 0, cap = 0;
    plan_dag *d = tsr_calloc(1, sizeof *d);
    tsr_status st = acc && n_acc && marked && d ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    bool fits = true;
    for (int j = 0; j < n && st == TSR_OK && fits; j++) {
        n_acc[j] = step_accesses(s, &s->steps[j], acc + (size_t)j * MAX_ACCESS, MAX_ACCESS);
        fits = n_acc[j] >= 0;
        marked[j] = -1;
    }
    for (int j = 0; j < n && st == TSR_OK && fits; j++) {
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
                        if (!add_edge(&from, &to, &n_edges, &cap, i, j)) {
                            st = TSR_ERR_OUT_OF_MEMORY;
                            break;
                        }
                    }
                    covered = covered || (b->write && b->lo <= a->lo && b->hi >= a->hi);
                }
            }
        }
    }
    if (st == TSR_OK && fits) {
        d->n = n;
        d->n_preds = tsr_calloc((size_t)n + 1, sizeof *d->n_preds);
        d->succ_start = tsr_calloc((size_t)n + 2, sizeof *d->succ_start);
        d->succ = tsr_malloc(((size_t)n_edges + 1) * sizeof *d->succ);
        d->left = tsr_malloc(((size_t)n + 1) * sizeof *d->left);
        d->ready = tsr_malloc(((size_t)n + 1) * sizeof *d->ready);
        if (!d->n_preds || !d->succ_start || !d->succ || !d->left || !d->ready)
            st = TSR_ERR_OUT_OF_MEMORY;
    }
    if (st == TSR_OK && fits) {
        for (int e = 0; e < n_edges; e++) {
            d->succ_start[from[e] + 1]++;
            d->n_preds[to[e]]++;
        }
        for (int i = 0; i < n; i++)
            d->succ_start[i + 1] += d->succ_start[i];
        /* marked: the next free slot of each step's successors. */
        memcpy(marked, d->succ_start, (size_t)n * sizeof *marked);
        for (int e = 0; e < n_edges; e++)
            d->succ[marked[from[e]]++] = to[e];
        *out = d;
        d = NULL;
    }
    tsr_dag_destroy(d);
    free(acc);
    free(n_acc);
    free(marked);
    free(from);
    free(to);
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
