/* Depth-first stacks (BrainSlug): runs of memory-bound kernel steps whose
 * backends compute them band by band are run together, tile by tile,
 * maybe with compute-bound ones among them (convolutions, which mix
 * channels: their input or output then never leaves the cache). A tile
 * is (image, channel block, band of rows) of the stack's last output (its
 * sink), or (image, band of rows) over every channel when a member
 * computes every block in one call (a convolution); walking the members
 * backwards gives the rows every earlier value needs for it (windows add
 * halos, recomputed by neighbouring tiles rather than shared). Values
 * read only inside the stack live in per-thread scratch bands sized to
 * fit the L2 cache; values read outside get full buffers: the sink is
 * written in place, the others are copied out of their bands, each row by
 * exactly one tile. A stack forms only where it does not raise the
 * arena's peak. */
#include "runtime/plan_internal.h"

#include <omp.h>

#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

/* The most rows a stack may compute per row of output (halos computed
 * again by each band): past this, a shorter stack is better. */
#define MAX_RECOMPUTE 1.5
/* The same for a compute-bound member (a convolution): its halo rows
 * cost as much as its own, so a few percent recomputed eat what keeping
 * its output in cache saves. */
#define MAX_CONV_RECOMPUTE 1.0625
/* The most members a stack may have: planning tries every length up to
 * it from each step (DenseNet's blocks join in runs of hundreds). */
#define MAX_MEMBERS 32

typedef struct {
    int buf;      /* the plan buffer: BUF_BAND when internal */
    int producer; /* member index, -1 for a value the stack reads */
    int64_t h, pitch, cbs;
    bool internal; /* computed into bands (copy_out: and copied to buf) */
    bool copy_out;
    bool sink;
    int last_use;      /* the last member reading it */
    size_t floats;     /* of its widest band */
    size_t scratch_at; /* floats into a thread's scratch */
} stack_value;

typedef struct {
    plan_step step; /* the member's kernel step, moved out of the plan's list */
    tsr_band_info info;
    int out;                         /* stack value of its output */
    int in[TSR_MAX_NODE_IO];         /* stack value per streamed input, else -1 */
    int64_t at[TSR_MAX_NODE_IO + 1]; /* routing members: first block of each input */
} stack_member;

struct plan_stack {
    stack_member *members;
    int n_members;
    stack_value *values;
    int n_values;
    int sink;
    int64_t batch, sink_cbs, band_rows, n_bands;
    bool wide;        /* a member computes every block at once: so do tiles */
    int64_t tile_cbs; /* channel tiles per image: sink_cbs, 1 when wide */
    int64_t *range;        /* [band][value]{lo, hi}: rows computed */
    int64_t *owned;        /* [band][value]{lo, hi}: rows copied out */
    int *block;            /* [sink block][value]: the value's block computed for it, -1 none */
    bool *owner;           /* [sink block][value]: that tile copies the value's rows out */
    size_t scratch_floats; /* per thread */
    int scratch_buf;
    size_t working_set; /* bytes one tile touches */
    int *value_of;      /* [buf]: its stack value, -1 none (planning) */
    int n_bufs;
};

/* ------------------------------------------------------------ cache size */

/* The L2 cache of one core: sysconf, else CPUID's deterministic cache
 * parameters (leaf 4 on Intel, 0x8000001D on AMD), else 1 MiB. */
static size_t l2_bytes(void)
{
    /* Atomic: plans may be created on several threads at once. */
    static atomic_size_t cached;
    size_t known = atomic_load_explicit(&cached, memory_order_relaxed);
    if (known)
        return known;
    size_t bytes = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (v > 0)
        bytes = (size_t)v;
#endif
#if defined(__x86_64__) || defined(__i386__)
    const unsigned leaves[2] = {4, 0x8000001Du};
    for (int l = 0; l < 2 && !bytes; l++) {
        unsigned a, b, c, d;
        if (!__get_cpuid_count(leaves[l] & 0x80000000u, 0, &a, &b, &c, &d) || a < leaves[l])
            continue;
        for (unsigned sub = 0; sub < 16 && !bytes; sub++) {
            __cpuid_count(leaves[l], sub, a, b, c, d);
            unsigned type = a & 31, level = (a >> 5) & 7;
            if (type == 0)
                break;
            if (level == 2 && type != 2)
                bytes = (size_t)((b >> 22) + 1) * (((b >> 12) & 0x3ff) + 1) * ((b & 0xfff) + 1) *
                        ((size_t)c + 1);
        }
    }
#endif
    bytes = bytes ? bytes : (size_t)1 << 20;
    atomic_store_explicit(&cached, bytes, memory_order_relaxed);
    return bytes;
}

/* ------------------------------------------------------------- planning */

typedef struct {
    spec *s;
    int *reads; /* [buf]: reading steps' input slots over the whole plan */
    int threads;
    /* The plan's steps as they are now (NULL: to work out again): every
     * buffer's first and last step, and the arena bytes live at the
     * busiest step. */
    int *from, *until;
    size_t peak;
} former;

static bool is_empty(const int64_t *r)
{
    return r[0] >= r[1];
}

static void hull(int64_t *r, int64_t lo, int64_t hi)
{
    if (lo >= hi)
        return;
    if (is_empty(r)) {
        r[0] = lo;
        r[1] = hi;
        return;
    }
    if (lo < r[0])
        r[0] = lo;
    if (hi > r[1])
        r[1] = hi;
}

/* Rows of every value per band, for bands of `rows` rows of the sink.
 * Members are visited backwards, each over all bands, so the rows a
 * copied-out value owns (from where its band's needs start to where the
 * next band's start) are known before its inputs are. */
static void plan_rows(plan_stack *k, int64_t rows)
{
    int nv = k->n_values;
    k->band_rows = rows;
    k->n_bands = (k->values[k->sink].h + rows - 1) / rows;
    for (int64_t i = 0; i < k->n_bands * nv; i++) {
        k->range[2 * i] = k->owned[2 * i] = 0;
        k->range[2 * i + 1] = k->owned[2 * i + 1] = 0;
    }
    int64_t hs = k->values[k->sink].h;
    for (int64_t t = 0; t < k->n_bands; t++) {
        int64_t *r = &k->range[2 * (t * nv + k->sink)];
        r[0] = t * rows;
        r[1] = (t + 1) * rows < hs ? (t + 1) * rows : hs;
    }
    for (int m = k->n_members - 1; m >= 0; m--) {
        const stack_member *mb = &k->members[m];
        const stack_value *o = &k->values[mb->out];
        if (o->copy_out) {
            /* lo[t]: where band t's needs start, carried back over bands needing none. */
            int64_t next = o->h;
            for (int64_t t = k->n_bands - 1; t >= 0; t--) {
                int64_t *r = &k->range[2 * (t * nv + mb->out)];
                int64_t *w = &k->owned[2 * (t * nv + mb->out)];
                int64_t lo = t == 0 ? 0 : is_empty(r) ? next : r[0];
                w[0] = lo;
                w[1] = next;
                next = lo;
            }
            for (int64_t t = 0; t < k->n_bands; t++) {
                int64_t *w = &k->owned[2 * (t * nv + mb->out)];
                hull(&k->range[2 * (t * nv + mb->out)], w[0], w[1]);
            }
        }
        for (int64_t t = 0; t < k->n_bands; t++) {
            const int64_t *r = &k->range[2 * (t * nv + mb->out)];
            if (is_empty(r))
                continue;
            for (int i = 0; i < mb->step.n_in; i++) {
                if (mb->in[i] < 0)
                    continue;
                const stack_value *x = &k->values[mb->in[i]];
                int64_t lo = r[0] * mb->info.stride - mb->info.pad;
                int64_t hi = (r[1] - 1) * mb->info.stride - mb->info.pad + mb->info.extent;
                hull(&k->range[2 * (t * nv + mb->in[i])], lo < 0 ? 0 : lo, hi > x->h ? x->h : hi);
            }
        }
    }
}

/* Whether the bands of values a and b are needed at the same time. */
static bool overlap_in_time(const stack_value *a, const stack_value *b)
{
    return a->producer <= b->last_use && b->producer <= a->last_use;
}

/* Sizes every value's widest band, places the internal ones in a thread's
 * scratch (bands of values not live at once share memory, largest first
 * at the lowest offset free), and works out what one tile touches: the
 * scratch and the bands of the stack's inputs and output (a Concat's tile
 * reads one of its inputs). */
static void size_bands(plan_stack *k)
{
    int nv = k->n_values;
    for (int v = 0; v < nv; v++) {
        int64_t most = 0;
        for (int64_t t = 0; t < k->n_bands; t++) {
            const int64_t *r = &k->range[2 * (t * nv + v)];
            if (!is_empty(r) && r[1] - r[0] > most)
                most = r[1] - r[0];
        }
        /* 64-byte aligned bands, of every block when wide */
        int64_t planes = k->wide ? k->values[v].cbs : 1;
        k->values[v].floats = ((size_t)(most * k->values[v].pitch * planes) + 15) / 16 * 16;
        k->values[v].scratch_at = SIZE_MAX;
    }
    k->scratch_floats = 0;
    for (;;) {
        int pick = -1;
        for (int v = 0; v < nv; v++) {
            const stack_value *x = &k->values[v];
            if (x->internal && x->scratch_at == SIZE_MAX &&
                (pick < 0 || x->floats > k->values[pick].floats))
                pick = v;
        }
        if (pick < 0)
            break;
        stack_value *x = &k->values[pick];
        size_t at = 0;
        for (bool moved = true; moved;) {
            moved = false;
            for (int v = 0; v < nv; v++) {
                const stack_value *y = &k->values[v];
                if (v == pick || !y->internal || y->scratch_at == SIZE_MAX ||
                    !overlap_in_time(x, y))
                    continue;
                if (at < y->scratch_at + y->floats && y->scratch_at < at + x->floats) {
                    at = y->scratch_at + y->floats;
                    moved = true;
                }
            }
        }
        x->scratch_at = at;
        if (at + x->floats > k->scratch_floats)
            k->scratch_floats = at + x->floats;
    }
    size_t outside = 0;
    for (int v = 0; k->wide && v < nv; v++)
        if (!k->values[v].internal)
            outside += k->values[v].floats * sizeof(float);
    for (int64_t c = 0; !k->wide && c < k->sink_cbs; c++) {
        size_t bytes = 0;
        for (int v = 0; v < nv; v++)
            if (!k->values[v].internal && k->block[c * nv + v] >= 0)
                bytes += k->values[v].floats * sizeof(float);
        if (bytes > outside)
            outside = bytes;
    }
    k->working_set = k->scratch_floats * sizeof(float) + outside;
}

/* Convolutions that mix channels, or read their input whole. */
static bool is_compute_bound(const stack_member *mb)
{
    return !mb->info.streamed || mb->info.mixes_channels;
}

/* Whether the halos recomputed by every band at the planned height cost
 * less than the stack saves: rows computed per row of output, over the
 * members, and for each compute-bound member alone. */
static bool halos_pay(const plan_stack *k)
{
    double computed = 0.0, needed = 0.0;
    for (int m = 0; m < k->n_members; m++) {
        int o = k->members[m].out;
        double own = 0.0;
        for (int64_t t = 0; t < k->n_bands; t++) {
            const int64_t *r = &k->range[2 * (t * k->n_values + o)];
            own += is_empty(r) ? 0.0 : (double)(r[1] - r[0]);
        }
        if (is_compute_bound(&k->members[m]) && own > MAX_CONV_RECOMPUTE * (double)k->values[o].h)
            return false;
        computed += own;
        needed += (double)k->values[o].h;
    }
    return computed <= MAX_RECOMPUTE * needed;
}

/* Plans the fewest bands (of even heights) whose halos pay (more bands
 * only recompute more, so the search stops at the first that does not),
 * whose tile fits the L2 cache (bands of values not live at once share
 * it, so a tile touches a few bands at a time: halos cost more than
 * spilling to half the cache would save), whose scratch is smaller than
 * what it replaces, and that leave tiles for every thread (two each,
 * where there are that many rows; one each when tiles hold every
 * channel: more bands would recompute more halo rows of convolutions);
 * else bands of one row, if their halos pay. TSR_DF_BAND_ROWS forces a
 * height (tests use it for tiny tiles), halos or not. Returns whether a
 * height was planned. */
static bool choose_band_rows(plan_stack *k, int threads)
{
    int64_t h = k->values[k->sink].h;
    const char *env = getenv("TSR_DF_BAND_ROWS");
    if (env && atoll(env) > 0) {
        plan_rows(k, atoll(env) < h ? atoll(env) : h);
        size_bands(k);
        return true;
    }
    size_t budget = l2_bytes();
    /* All threads' scratch within half the largest intermediate it
     * replaces, so that the arena shrinks. */
    size_t cap = 0;
    for (int v = 0; v < k->n_values; v++) {
        const stack_value *x = &k->values[v];
        size_t full = (size_t)(k->batch * x->cbs * x->h * x->pitch) * sizeof(float);
        if (x->internal && !x->copy_out && full > cap)
            cap = full;
    }
    cap /= 2 * (size_t)threads;
    int64_t planes = k->batch * k->tile_cbs;
    int64_t each = (k->wide ? 1 : 2) * (int64_t)threads;
    int64_t want = each < planes * h ? each : planes * h;
    for (int64_t bands = 1, last = 0; bands <= h; bands++) {
        int64_t rows = (h + bands - 1) / bands;
        if (rows <= 1)
            break;
        if (rows == last)
            continue;
        last = rows;
        if (planes * ((h + rows - 1) / rows) < want)
            continue;
        plan_rows(k, rows);
        if (!halos_pay(k))
            return false;
        size_bands(k);
        if (k->working_set <= budget && k->scratch_floats * sizeof(float) <= cap)
            return true;
    }
    plan_rows(k, 1);
    size_bands(k);
    return halos_pay(k);
}

/* For every block of the sink, the block of each value it needs (-1:
 * none), following Concat's routing; false when one tile would need two
 * blocks of a value. Then who copies each block of a copied-out value. */
static bool plan_blocks(plan_stack *k)
{
    int nv = k->n_values;
    for (int64_t i = 0; i < k->sink_cbs * nv; i++)
        k->block[i] = -1;
    for (int64_t c = 0; c < k->sink_cbs; c++) {
        int *blk = &k->block[c * nv];
        blk[k->sink] = (int)c;
        for (int m = k->n_members - 1; m >= 0; m--) {
            const stack_member *mb = &k->members[m];
            int bo = blk[mb->out];
            if (bo < 0)
                continue;
            for (int i = 0; i < mb->step.n_in; i++) {
                int v = mb->in[i];
                if (v < 0)
                    continue;
                int b = bo;
                if (mb->info.routes_blocks)
                    b = bo >= mb->at[i] && bo < mb->at[i + 1] ? (int)(bo - mb->at[i]) : -1;
                if (b < 0)
                    continue;
                if (blk[v] >= 0 && blk[v] != b)
                    return false;
                blk[v] = b;
            }
        }
    }
    for (int v = 0; v < nv; v++) {
        if (!k->values[v].copy_out)
            continue;
        int64_t cbs = k->values[v].cbs;
        bool *seen = tsr_calloc((size_t)cbs + 1, sizeof(bool));
        if (!seen)
            return false;
        for (int64_t c = 0; c < k->sink_cbs; c++) {
            int b = k->block[c * nv + v];
            k->owner[c * nv + v] = b >= 0 && !seen[b];
            if (b >= 0)
                seen[b] = true;
        }
        free(seen);
    }
    return true;
}

/* Whether the stack's compute-bound members pay: each one's output, or
 * for one mixing channels its streamed input, must live in bands only,
 * so that the arena loses that buffer and its reader or writer in the
 * stack finds it in cache. */
static bool convs_keep_values(const plan_stack *k)
{
    for (int m = 0; m < k->n_members; m++) {
        const stack_member *mb = &k->members[m];
        if (!is_compute_bound(mb))
            continue;
        const stack_value *o = &k->values[mb->out];
        bool kept = o->internal && !o->copy_out;
        for (int i = 0; i < mb->step.n_in && mb->info.mixes_channels; i++) {
            const stack_value *x = mb->in[i] >= 0 ? &k->values[mb->in[i]] : NULL;
            kept = kept || (x && x->internal && !x->copy_out);
        }
        if (!kept)
            return false;
    }
    return true;
}

static bool can_join(const spec *s, const plan_step *st, tsr_band_info *info)
{
    if (st->kind != STEP_KERNEL || !st->backend->band_info || !st->backend->run_band ||
        st->n_out != 1 || !st->backend->band_info(st->state, info))
        return false;
    const plan_buffer *out = &s->bufs[st->out_bufs[0]];
    const tsr_value *v = &s->graph->values[out->value];
    return v->rank == 4 && v->dtype == TSR_FLOAT32 &&
           (out->kind == BUF_ARENA || out->kind == BUF_OUTPUT);
}

static int value_of_buf(const plan_stack *k, int buf)
{
    return buf >= 0 && buf < k->n_bufs ? k->value_of[buf] : -1;
}

/* Works out f's buffer lifetimes and peak for the plan's steps now. */
static bool lifetimes(former *f)
{
    const spec *s = f->s;
    f->from = tsr_calloc((size_t)s->n_bufs + 1, sizeof(int));
    f->until = tsr_calloc((size_t)s->n_bufs + 1, sizeof(int));
    size_t *live = tsr_calloc((size_t)s->n_steps + 1, sizeof(size_t));
    if (!f->from || !f->until || !live) {
        free(f->from);
        free(f->until);
        free(live);
        f->from = f->until = NULL;
        return false;
    }
    for (int b = 0; b < s->n_bufs; b++)
        f->from[b] = -1;
    for (int i = 0; i < s->n_steps; i++) {
        const plan_step *st = &s->steps[i];
        for (int o = 0; o < st->n_out; o++)
            if (f->from[st->out_bufs[o]] < 0)
                f->from[st->out_bufs[o]] = f->until[st->out_bufs[o]] = i;
        for (int j = 0; j < st->n_in; j++)
            if (st->in_bufs[j] >= 0 && f->from[st->in_bufs[j]] >= 0)
                f->until[st->in_bufs[j]] = i;
    }
    for (int b = 0; b < s->n_bufs; b++)
        if (s->bufs[b].kind == BUF_ARENA && f->from[b] >= 0) {
            live[f->from[b]] += s->bufs[b].bytes;
            live[f->until[b] + 1] -= s->bufs[b].bytes;
        }
    size_t sum = 0;
    f->peak = 0;
    for (int i = 0; i < s->n_steps; i++) {
        sum += live[i];
        f->peak = sum > f->peak ? sum : f->peak;
    }
    free(live);
    return true;
}

/* Whether the plan's arena can hold the stack: the buffers it reads and
 * writes, all live while it runs, and every thread's scratch, with the
 * buffers live across its steps, must not need more than the plan's
 * steps need at their peak now (live bytes summed), so that stacks do
 * not raise the arena. inside[buf]: the reads of buf by the stack's steps
 * [first, last]. */
static bool within_peak(former *f, const plan_stack *k, const int *inside, int first, int last)
{
    const spec *s = f->s;
    if (!f->from && !lifetimes(f))
        return false;
    size_t held = k->scratch_floats * sizeof(float) * (size_t)f->threads;
    for (int b = 0; b < s->n_bufs; b++) {
        if (s->bufs[b].kind != BUF_ARENA || f->from[b] < 0)
            continue;
        int v = value_of_buf(k, b);
        bool produced = v >= 0 && k->values[v].producer >= 0;
        if (produced && (k->values[v].sink || k->values[v].copy_out))
            held += s->bufs[b].bytes; /* written by the stack */
        else if (!produced && (inside[b] > 0 || (f->from[b] < first && f->until[b] > last)))
            held += s->bufs[b].bytes; /* read by it, or live across it */
    }
    return held <= f->peak;
}

/* The stack of steps [first, last], planned; NULL when they do not make
 * one (a gap in the data flow, more than one sink, mixed layouts or
 * batches, conflicting blocks). */
static plan_stack *try_stack(former *f, int first, int last)
{
    spec *s = f->s;
    int nm = last - first + 1;
    plan_stack *k = tsr_calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->members = tsr_calloc((size_t)nm, sizeof *k->members);
    k->values = tsr_calloc((size_t)nm * (TSR_MAX_NODE_IO + 1), sizeof *k->values);
    int *inside = tsr_calloc((size_t)s->n_bufs + 1, sizeof(int));
    k->value_of = tsr_malloc(((size_t)s->n_bufs + 1) * sizeof(int));
    if (!k->members || !k->values || !inside || !k->value_of)
        goto reject;
    k->n_bufs = s->n_bufs;
    for (int b = 0; b < s->n_bufs; b++)
        k->value_of[b] = -1;
    k->n_members = nm;
    uint8_t layout = s->bufs[s->steps[first].out_bufs[0]].layout;
    int block = tsr_layout_block((tsr_layout)layout);
    k->batch = s->graph->values[s->bufs[s->steps[first].out_bufs[0]].value].dims[0];
    for (int m = 0; m < nm; m++) {
        const plan_step *st = &s->steps[first + m];
        stack_member *mb = &k->members[m];
        mb->step = *st;
        can_join(s, st, &mb->info);
        int nbufs = st->n_in + 1;
        for (int j = 0; j < nbufs; j++) {
            bool is_out = j == st->n_in;
            int buf = is_out ? st->out_bufs[0] : st->in_bufs[j];
            if (!is_out) {
                mb->in[j] = -1;
                if (buf >= 0)
                    inside[buf]++;
                if (buf < 0 || !(mb->info.streamed & (1u << j)))
                    continue;
            }
            const plan_buffer *pb = &s->bufs[buf];
            /* The member's own value: a buffer taken over (a Reshape's
             * output in its input's buffer) first held another shape. */
            const tsr_node *node = &s->graph->nodes[st->node];
            const tsr_value *val =
                &s->graph->values[is_out ? node->outputs[0] : node->inputs[j]];
            if (pb->layout != layout || val->rank != 4 || val->dims[0] != k->batch ||
                val->dtype != TSR_FLOAT32)
                goto reject;
            int v = value_of_buf(k, buf);
            if (v < 0) {
                v = k->n_values++;
                k->value_of[buf] = v;
                k->values[v] = (stack_value){.buf = buf,
                                             .producer = -1,
                                             .h = val->dims[2],
                                             .pitch = val->dims[3] * block,
                                             .cbs = (val->dims[1] + block - 1) / block};
            }
            if (is_out) {
                k->values[v].producer = m;
                mb->out = v;
            } else {
                mb->in[j] = v;
            }
        }
        const stack_value *o = &k->values[mb->out];
        if (mb->info.routes_blocks) {
            for (int i = 0; i < st->n_in; i++) {
                if (mb->in[i] < 0)
                    goto reject;
                mb->at[i + 1] = mb->at[i] + k->values[mb->in[i]].cbs;
                if (k->values[mb->in[i]].cbs * block !=
                    s->graph->values[s->graph->nodes[st->node].inputs[i]].dims[1])
                    goto reject; /* a padded block inside the concatenation */
            }
            if (mb->at[st->n_in] != o->cbs)
                goto reject;
        }
        for (int i = 0; i < st->n_in; i++) {
            if (mb->in[i] < 0)
                continue;
            const stack_value *x = &k->values[mb->in[i]];
            if (x->pitch != o->pitch && mb->info.stride == 1 && mb->info.extent == 1)
                goto reject;
            if (!mb->info.routes_blocks && !mb->info.mixes_channels && x->cbs != o->cbs)
                goto reject;
        }
        k->wide = k->wide || mb->info.all_blocks;
    }
    /* Values produced here: inputs of members only through streamed slots. */
    for (int m = 0; m < nm; m++) {
        const plan_step *st = &s->steps[first + m];
        for (int i = 0; i < st->n_in; i++) {
            int v = st->in_bufs[i] >= 0 ? value_of_buf(k, st->in_bufs[i]) : -1;
            if (v >= 0 && k->values[v].producer >= 0 && k->members[m].in[i] < 0)
                goto reject;
        }
    }
    k->sink = -1;
    for (int v = 0; v < k->n_values; v++) {
        stack_value *x = &k->values[v];
        if (x->producer < 0)
            continue;
        bool read_inside = false;
        x->last_use = x->producer;
        for (int m = x->producer + 1; m < nm; m++)
            for (int i = 0; i < k->members[m].step.n_in; i++)
                if (k->members[m].in[i] == v) {
                    read_inside = true;
                    x->last_use = m;
                }
        bool read_outside = f->reads[x->buf] > inside[x->buf] || s->bufs[x->buf].kind == BUF_OUTPUT;
        if (!read_inside) {
            if (k->sink >= 0)
                goto reject;
            k->sink = v;
            x->sink = true;
        } else {
            x->internal = true;
            x->copy_out = read_outside;
        }
    }
    if (k->sink < 0 || k->values[k->sink].producer != nm - 1)
        goto reject;
    /* Tiles of every channel give a thread less than an image when there
     * are fewer images than threads: its convolutions then run on bands
     * of one image, recompute halo rows and copy rows in and out
     * (measured at batch 1 on 2 threads: mobilenet_v2 0.89x and
     * densenet121 0.91x layer by layer). */
    if (k->wide && k->batch < f->threads)
        goto reject;
    k->sink_cbs = k->values[k->sink].cbs;
    k->tile_cbs = k->wide ? 1 : k->sink_cbs;
    int64_t hs = k->values[k->sink].h;
    k->range = tsr_calloc((size_t)(hs + 1) * (size_t)k->n_values * 2, sizeof(int64_t));
    k->owned = tsr_calloc((size_t)(hs + 1) * (size_t)k->n_values * 2, sizeof(int64_t));
    k->block = tsr_calloc((size_t)k->sink_cbs * (size_t)k->n_values + 1, sizeof(int));
    k->owner = tsr_calloc((size_t)k->sink_cbs * (size_t)k->n_values + 1, sizeof(bool));
    if (!k->range || !k->owned || !k->block || !k->owner || hs == 0 || k->batch == 0 ||
        (!k->wide && !plan_blocks(k)))
        goto reject;
    if (!convs_keep_values(k) || !choose_band_rows(k, f->threads) ||
        !within_peak(f, k, inside, first, last))
        goto reject;
    free(inside);
    return k;
reject:
    free(inside);
    for (int m = 0; k && k->members && m < k->n_members; m++)
        k->members[m].step = (plan_step){0}; /* still owned by the plan's list */
    tsr_stack_destroy(k);
    return NULL;
}

/* Replaces steps [first, first + k->n_members) with one stack step. */
static tsr_status install(former *f, plan_stack *k, int first)
{
    spec *s = f->s;
    int nm = k->n_members;
    int n_in = 0, n_out = 0;
    int *ins = tsr_calloc((size_t)k->n_values * TSR_MAX_NODE_IO + 1, sizeof(int));
    int *outs = tsr_calloc((size_t)k->n_values + 2, sizeof(int));
    if (!ins || !outs) {
        free(ins);
        free(outs);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    for (int m = 0; m < nm; m++) {
        const plan_step *st = &k->members[m].step;
        for (int i = 0; i < st->n_in; i++) {
            int b = st->in_bufs[i];
            bool ours =
                b >= 0 && value_of_buf(k, b) >= 0 && k->values[value_of_buf(k, b)].producer >= 0;
            if (b >= 0 && !ours)
                ins[n_in++] = b;
        }
    }
    for (int v = 0; v < k->n_values; v++) {
        stack_value *x = &k->values[v];
        if (x->producer < 0)
            continue;
        if (x->sink || x->copy_out)
            outs[n_out++] = x->buf;
        else
            s->bufs[x->buf].kind = BUF_BAND;
    }
    /* The per-thread scratch, live only while the stack runs. */
    tsr_status st = tsr_grow((void **)&s->bufs, &s->cap_bufs, s->n_bufs + 1, sizeof *s->bufs);
    if (st != TSR_OK) {
        free(ins);
        free(outs);
        return st;
    }
    size_t bytes = k->scratch_floats * sizeof(float) * (size_t)f->threads;
    s->bufs[s->n_bufs] = (plan_buffer){.kind = BUF_ARENA,
                                       .index = -1,
                                       .value = s->bufs[k->values[k->sink].buf].value,
                                       .bytes = bytes ? bytes : TSR_ALIGNMENT,
                                       .first = -1,
                                       .last = -1};
    k->scratch_buf = s->n_bufs++;
    outs[n_out++] = k->scratch_buf;
    plan_step *stack = &s->steps[first];
    *stack = (plan_step){.kind = STEP_STACK,
                         .node = -1,
                         .stack = k,
                         .in_bufs = ins,
                         .out_bufs = outs,
                         .n_in = n_in,
                         .n_out = n_out};
    memmove(&s->steps[first + 1], &s->steps[first + nm],
            sizeof *s->steps * (size_t)(s->n_steps - first - nm));
    s->n_steps -= nm - 1;
    s->n_stacks++;
    return TSR_OK;
}

tsr_status tsr_stacks_form(spec *s, int threads, bool verbose)
{
    former f = {.s = s, .threads = threads > 0 ? threads : 1};
    f.reads = tsr_calloc((size_t)s->n_bufs + 1, sizeof(int));
    if (!f.reads)
        return TSR_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < s->n_steps; i++)
        for (int j = 0; j < s->steps[i].n_in; j++)
            if (s->steps[i].in_bufs[j] >= 0)
                f.reads[s->steps[i].in_bufs[j]]++;
    tsr_status st = TSR_OK;
    for (int i = 0; i < s->n_steps && st == TSR_OK;) {
        tsr_band_info info;
        int end = i;
        while (end < s->n_steps && can_join(s, &s->steps[end], &info))
            end++;
        plan_stack *k = NULL;
        if (end - i > MAX_MEMBERS)
            end = i + MAX_MEMBERS;
        for (int last = end - 1; last > i && !k; last--)
            k = try_stack(&f, i, last);
        if (!k) {
            i++;
            continue;
        }
        st = install(&f, k, i);
        if (st != TSR_OK) {
            for (int m = 0; m < k->n_members; m++)
                k->members[m].step = (plan_step){0};
            tsr_stack_destroy(k);
            break;
        }
        if (verbose)
            tsr_stack_print(s, k, stderr);
        /* The steps changed: lifetimes are worked out again when needed. */
        free(f.from);
        free(f.until);
        f.from = f.until = NULL;
        i++;
    }
    free(f.reads);
    free(f.from);
    free(f.until);
    return st;
}

void tsr_stack_destroy(plan_stack *k)
{
    if (!k)
        return;
    for (int m = 0; k->members && m < k->n_members; m++) {
        plan_step *st = &k->members[m].step;
        if (st->state && st->backend && st->backend->release)
            st->backend->release(st->state);
        free(st->in_bufs);
        free(st->out_bufs);
    }
    free(k->members);
    free(k->values);
    free(k->range);
    free(k->owned);
    free(k->block);
    free(k->owner);
    free(k->value_of);
    free(k);
}

/* ------------------------------------------------------------ reporting */

int tsr_stack_size(const plan_stack *k)
{
    return k->n_members;
}

const plan_step *tsr_stack_member(const plan_stack *k, int m) { return &k->members[m].step; }

void tsr_stack_ops(const spec *s, const plan_stack *k, char *buf, size_t size)
{
    size_t at = 0;
    buf[0] = '\0';
    for (int m = 0; m < k->n_members && at + 1 < size; m++) {
        int n = snprintf(buf + at, size - at, "%s%s", m ? "+" : "",
                         s->graph->nodes[k->members[m].step.node].op->name);
        if (n < 0)
            break;
        at += (size_t)n;
    }
}

void tsr_stack_print(const spec *s, const plan_stack *k, FILE *out)
{
    const stack_value *sink = &k->values[k->sink];
    const tsr_value *sv = &s->graph->values[s->bufs[sink->buf].value];
    int block = tsr_layout_block((tsr_layout)s->bufs[sink->buf].layout);
    int band_only = 0;
    for (int v = 0; v < k->n_values; v++)
        band_only += k->values[v].internal && !k->values[v].copy_out;
    fprintf(out,
            "stack of %d ops -> '%s' [%lld x %lld x %lld x %lld, %s]: tiles of 1 image x %lld "
            "channels x %lld rows (%lld x %lld x %lld tiles), %zu KiB per tile, %zu KiB scratch "
            "per thread, %d values without buffers\n",
            k->n_members, sv->name, (long long)sv->dims[0], (long long)sv->dims[1],
            (long long)sv->dims[2], (long long)sv->dims[3],
            tsr_layout_name((tsr_layout)s->bufs[sink->buf].layout),
            (long long)(k->wide ? sink->cbs * block : block), (long long)k->band_rows,
            (long long)k->batch, (long long)k->tile_cbs, (long long)k->n_bands,
            k->working_set / 1024, k->scratch_floats * sizeof(float) / 1024, band_only);
    for (int m = 0; m < k->n_members; m++) {
        const tsr_node *node = &s->graph->nodes[k->members[m].step.node];
        const stack_value *o = &k->values[k->members[m].out];
        fprintf(out, "  %-20s %-30s %s\n", node->op->name, *node->name ? node->name : "<unnamed>",
                o->sink       ? "(output)"
                : o->copy_out ? "(also read outside)"
                              : "");
    }
}

/* ------------------------------------------------------------ execution */

typedef struct {
    const spec *s;
    const plan_stack *k;
    void **data; /* per stack value: its full buffer (NULL for band-only values) */
    float *scratch;
    const void **whole; /* per member, per input: whole tensors */
} stack_run;

/* Value v's block b in tile band t: its band in scratch (wide: the
 * blocks' bands one after another), or its plane. */
static tsr_band band_of(const stack_run *r, float *scratch, int v, int64_t n, int64_t b, int64_t t)
{
    const plan_stack *k = r->k;
    const stack_value *x = &k->values[v];
    if (x->internal) {
        const int64_t *rows = &k->range[2 * (t * k->n_values + v)];
        int64_t plane = (rows[1] - rows[0]) * x->pitch;
        return (tsr_band){scratch + x->scratch_at + (k->wide ? b * plane : 0), rows[0], plane};
    }
    float *plane = (float *)r->data[v] + ((n * x->cbs + b) * x->h) * x->pitch;
    return (tsr_band){plane, 0, x->h * x->pitch};
}

/* Member m's call for output block bo (every block: a member computing
 * them all) of image n in band t; then the rows the tile owns of a value
 * also read outside are copied out. c: the tile's channel block. */
static tsr_status run_call(const stack_run *r, float *scratch, int m, int64_t n, int64_t bo,
                           int64_t c, int64_t t)
{
    const plan_stack *k = r->k;
    const stack_member *mb = &k->members[m];
    int nv = k->n_values, o = mb->out;
    const int64_t *rows = &k->range[2 * (t * nv + o)];
    tsr_band_call call = {.n = n, .cb = bo, .r0 = rows[0], .r1 = rows[1]};
    for (int i = 0; i < mb->step.n_in; i++) {
        int v = mb->in[i];
        int64_t b = bo;
        /* Concat: only the input holding the block (another may be
         * active in some other block for the same tile). */
        if (mb->info.routes_blocks) {
            if (!(bo >= mb->at[i] && bo < mb->at[i + 1]))
                continue;
            b = bo - mb->at[i];
        }
        if (v < 0)
            call.in[i] = (tsr_band){(float *)r->whole[m * TSR_MAX_NODE_IO + i], 0, 0};
        else
            call.in[i] = band_of(r, scratch, v, n, b, t);
    }
    call.out = band_of(r, scratch, o, n, bo, t);
    tsr_status st = mb->step.backend->run_band(mb->step.state, &call);
    if (st != TSR_OK) {
        char desc[320];
        tsr_node_describe(&r->s->graph->nodes[mb->step.node], desc, sizeof desc);
        tsr_error_prefix("%s (in a depth-first stack, image %lld, rows [%lld, %lld)): ", desc,
                         (long long)n, (long long)rows[0], (long long)rows[1]);
        return st;
    }
    const stack_value *x = &k->values[o];
    const int64_t *own = &k->owned[2 * (t * nv + o)];
    if (!x->copy_out || !(k->wide || k->owner[c * nv + o]) || is_empty(own))
        return TSR_OK;
    int64_t blocks = mb->info.all_blocks ? x->cbs : 1;
    for (int64_t b = 0; b < blocks; b++) {
        float *plane = (float *)r->data[o] + ((n * x->cbs + bo + b) * x->h) * x->pitch;
        const float *band = call.out.data + b * call.out.plane;
        memcpy(plane + own[0] * x->pitch, band + (own[0] - rows[0]) * x->pitch,
               (size_t)((own[1] - own[0]) * x->pitch) * sizeof(float));
    }
    return TSR_OK;
}

/* Runs one tile: channel block c of the sink (every block when wide);
 * on failure, the failing member's message names its node. */
static tsr_status run_tile(const stack_run *r, float *scratch, int64_t n, int64_t c, int64_t t)
{
    const plan_stack *k = r->k;
    int nv = k->n_values;
    for (int m = 0; m < k->n_members; m++) {
        const stack_member *mb = &k->members[m];
        int o = mb->out;
        if (is_empty(&k->range[2 * (t * nv + o)]))
            continue;
        if (!k->wide) {
            int bo = k->block[c * nv + o];
            if (bo >= 0)
                TSR_CHECK(run_call(r, scratch, m, n, bo, c, t));
            continue;
        }
        int64_t blocks = mb->info.all_blocks ? 1 : k->values[o].cbs;
        for (int64_t b = 0; b < blocks; b++)
            TSR_CHECK(run_call(r, scratch, m, n, b, c, t));
    }
    return TSR_OK;
}

tsr_status tsr_stack_run(const spec *s, const plan_step *st, const tsr_tensor *inputs,
                         tsr_tensor *outputs, int threads)
{
    const plan_stack *k = st->stack;
    void *data[TSR_MAX_NODE_IO * 8];
    const void **whole = tsr_calloc((size_t)k->n_members * TSR_MAX_NODE_IO, sizeof(void *));
    if (!whole || k->n_values > (int)(sizeof data / sizeof *data)) {
        free(whole);
        return whole ? tsr_error(TSR_ERR_INTERNAL, "stack of %d values", k->n_values)
                     : TSR_ERR_OUT_OF_MEMORY;
    }
    for (int v = 0; v < k->n_values; v++)
        data[v] = k->values[v].internal && !k->values[v].copy_out
                      ? NULL
                      : tsr_spec_buffer(s, k->values[v].buf, inputs, outputs);
    for (int m = 0; m < k->n_members; m++)
        for (int i = 0; i < k->members[m].step.n_in; i++) {
            int b = k->members[m].step.in_bufs[i];
            if (k->members[m].in[i] < 0 && b >= 0)
                whole[m * TSR_MAX_NODE_IO + i] = tsr_spec_buffer(s, b, inputs, outputs);
        }
    stack_run r = {.s = s,
                   .k = k,
                   .data = data,
                   .whole = whole,
                   .scratch = tsr_spec_buffer(s, k->scratch_buf, inputs, outputs)};
    int64_t tiles = k->batch * k->tile_cbs * k->n_bands;
    int nt = threads < tiles ? threads : (int)tiles;
    /* The first failure, its message copied off the thread that raised
     * it (messages are per thread); tiles not started yet are skipped. */
    atomic_int failed = TSR_OK;
    char message[1024] = "";
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *scratch = r.scratch + (size_t)omp_get_thread_num() * k->scratch_floats;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < tiles; i++) {
            if (atomic_load_explicit(&failed, memory_order_relaxed) != TSR_OK)
                continue;
            int64_t t = i % k->n_bands, c = (i / k->n_bands) % k->tile_cbs;
            tsr_status status = run_tile(&r, scratch, i / (k->n_bands * k->tile_cbs), c, t);
            int none = TSR_OK;
            if (status != TSR_OK && atomic_compare_exchange_strong(&failed, &none, (int)status))
                snprintf(message, sizeof message, "%s", tsr_last_error());
        }
    }
    free(whole);
    int status = atomic_load(&failed);
    return status == TSR_OK ? TSR_OK : tsr_error((tsr_status)status, "%s", message);
}
