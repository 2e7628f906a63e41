/* Depth-first stacks (BrainSlug): runs of memory-bound kernel steps whose
 * backends compute them band by band are run together, tile by tile,
 * maybe opened by a compute-bound one (a convolution reading its whole
 * input, whose output then never leaves the cache). A
 * tile is (image, channel block, band of rows) of the stack's last output
 * (its sink); walking the members backwards gives the rows every earlier
 * value needs for it (windows add halos, recomputed by neighbouring tiles
 * rather than shared). Values read only inside the stack live in
 * per-thread scratch bands sized to fit half the L2 cache; values read
 * outside get full buffers: the sink is written in place, the others are
 * copied out of their bands, each row by exactly one tile. */
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
/* The same for an opener (a compute-bound member reading its inputs
 * whole, a convolution): its halo rows cost as much as its own, so a few
 * percent recomputed eat what keeping its output in cache saves. */
#define MAX_OPENER_RECOMPUTE 1.0625

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
    int64_t *range;        /* [band][value]{lo, hi}: rows computed */
    int64_t *owned;        /* [band][value]{lo, hi}: rows copied out */
    int *block;            /* [sink block][value]: the value's block computed for it, -1 none */
    bool *owner;           /* [sink block][value]: that tile copies the value's rows out */
    size_t scratch_floats; /* per thread */
    int scratch_buf;
    size_t working_set; /* bytes one tile touches */
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
        /* 64-byte aligned bands */
        k->values[v].floats = ((size_t)(most * k->values[v].pitch) + 15) / 16 * 16;
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
    for (int64_t c = 0; c < k->sink_cbs; c++) {
        size_t bytes = 0;
        for (int v = 0; v < nv; v++)
            if (!k->values[v].internal && k->block[c * nv + v] >= 0)
                bytes += k->values[v].floats * sizeof(float);
        if (bytes > outside)
            outside = bytes;
    }
    k->working_set = k->scratch_floats * sizeof(float) + outside;
}

/* Rows computed per row of output, over the members: what recomputing
 * the halos costs at this band height. */
static double recompute_ratio(const plan_stack *k)
{
    double computed = 0.0, needed = 0.0;
    for (int m = 0; m < k->n_members; m++) {
        int o = k->members[m].out;
        needed += (double)k->values[o].h;
        for (int64_t t = 0; t < k->n_bands; t++) {
            const int64_t *r = &k->range[2 * (t * k->n_values + o)];
            computed += is_empty(r) ? 0.0 : (double)(r[1] - r[0]);
        }
    }
    return needed > 0 ? computed / needed : 1.0;
}

/* The tallest band whose tile fits the L2 cache (bands of values not live
 * at once share it, so a tile touches a few bands at a time: halos cost
 * more than spilling to half the cache would save), whose scratch is
 * smaller than what it replaces, and that leaves tiles for every thread
 * (two each, where there are that many rows);
 * TSR_DF_BAND_ROWS forces a height (tests use it for tiny tiles). Returns
 * whether the height was forced. */
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
    int64_t planes = k->batch * k->sink_cbs;
    int64_t want = 2 * (int64_t)threads < planes * h ? 2 * (int64_t)threads : planes * h;
    for (int64_t rows = h; rows > 1; rows--) {
        if (planes * ((h + rows - 1) / rows) < want)
            continue;
        plan_rows(k, rows);
        size_bands(k);
        if (k->working_set <= budget && k->scratch_floats * sizeof(float) <= cap)
            return false;
    }
    plan_rows(k, 1);
    size_bands(k);
    return false;
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

/* Whether the stack's openers (members streaming no input: convolutions
 * computing bands from their whole input) pay: each one's output must
 * live in bands only, so that the arena loses its buffer and the stack's
 * next ops read it from cache, and (unless the band height was forced)
 * its halo rows must cost little. */
static bool openers_pay(const plan_stack *k, bool forced)
{
    for (int m = 0; m < k->n_members; m++) {
        const stack_member *mb = &k->members[m];
        if (mb->info.streamed)
            continue;
        const stack_value *o = &k->values[mb->out];
        if (!o->internal || o->copy_out)
            return false;
        double computed = 0.0;
        for (int64_t t = 0; t < k->n_bands; t++) {
            const int64_t *r = &k->range[2 * (t * k->n_values + mb->out)];
            computed += is_empty(r) ? 0.0 : (double)(r[1] - r[0]);
        }
        if (!forced && computed > MAX_OPENER_RECOMPUTE * (double)o->h)
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

static int value_of_buf(plan_stack *k, int buf)
{
    for (int v = 0; v < k->n_values; v++)
        if (k->values[v].buf == buf)
            return v;
    return -1;
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
    if (!k->members || !k->values || !inside)
        goto reject;
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
            if (!mb->info.routes_blocks && x->cbs != o->cbs)
                goto reject;
        }
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
    k->sink_cbs = k->values[k->sink].cbs;
    int64_t hs = k->values[k->sink].h;
    k->range = tsr_calloc((size_t)(hs + 1) * (size_t)k->n_values * 2, sizeof(int64_t));
    k->owned = tsr_calloc((size_t)(hs + 1) * (size_t)k->n_values * 2, sizeof(int64_t));
    k->block = tsr_calloc((size_t)k->sink_cbs * (size_t)k->n_values + 1, sizeof(int));
    k->owner = tsr_calloc((size_t)k->sink_cbs * (size_t)k->n_values + 1, sizeof(bool));
    if (!k->range || !k->owned || !k->block || !k->owner || hs == 0 || k->batch == 0 ||
        !plan_blocks(k))
        goto reject;
    /* Halos recomputed by every band must not cost more than the stack saves. */
    bool forced = choose_band_rows(k, f->threads);
    if ((!forced && recompute_ratio(k) > MAX_RECOMPUTE) || !openers_pay(k, forced))
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
        i++;
    }
    free(f.reads);
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
            "stack of %d ops -> '%s' [%lld x %lld x %lld x %lld, %s]: tiles of 1 image x %d "
            "channels x %lld rows (%lld x %lld x %lld tiles), %zu KiB per tile, %zu KiB scratch "
            "per thread, %d values without buffers\n",
            k->n_members, sv->name, (long long)sv->dims[0], (long long)sv->dims[1],
            (long long)sv->dims[2], (long long)sv->dims[3],
            tsr_layout_name((tsr_layout)s->bufs[sink->buf].layout), block, (long long)k->band_rows,
            (long long)k->batch, (long long)k->sink_cbs, (long long)k->n_bands,
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

/* Value v's block b in tile band t: its band in scratch, or its plane. */
static tsr_band band_of(const stack_run *r, float *scratch, int v, int64_t n, int b, int64_t t)
{
    const plan_stack *k = r->k;
    const stack_value *x = &k->values[v];
    if (x->internal)
        return (tsr_band){scratch + x->scratch_at, k->range[2 * (t * k->n_values + v)]};
    float *plane = (float *)r->data[v] + ((n * x->cbs + b) * x->h) * x->pitch;
    return (tsr_band){plane, 0};
}

/* Runs one tile; on failure, the failing member's message names its node. */
static tsr_status run_tile(const stack_run *r, float *scratch, int64_t n, int64_t c, int64_t t)
{
    const plan_stack *k = r->k;
    int nv = k->n_values;
    const int *blk = &k->block[c * nv];
    for (int m = 0; m < k->n_members; m++) {
        const stack_member *mb = &k->members[m];
        int o = mb->out;
        const int64_t *rows = &k->range[2 * (t * nv + o)];
        if (blk[o] < 0 || is_empty(rows))
            continue;
        tsr_band_call call = {.n = n, .cb = blk[o], .r0 = rows[0], .r1 = rows[1]};
        for (int i = 0; i < mb->step.n_in; i++) {
            int v = mb->in[i];
            /* Concat: only the input holding the block (another may be
             * active in some other block for the same tile). */
            if (mb->info.routes_blocks && !(blk[o] >= mb->at[i] && blk[o] < mb->at[i + 1]))
                continue;
            if (v < 0)
                call.in[i] = (tsr_band){(float *)r->whole[m * TSR_MAX_NODE_IO + i], 0};
            else if (blk[v] >= 0)
                call.in[i] = band_of(r, scratch, v, n, blk[v], t);
        }
        call.out = band_of(r, scratch, o, n, blk[o], t);
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
        if (x->copy_out && k->owner[c * nv + o] && !is_empty(own)) {
            float *plane = (float *)r->data[o] + ((n * x->cbs + blk[o]) * x->h) * x->pitch;
            memcpy(plane + own[0] * x->pitch, call.out.data + (own[0] - rows[0]) * x->pitch,
                   (size_t)((own[1] - own[0]) * x->pitch) * sizeof(float));
        }
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
    int64_t tiles = k->batch * k->sink_cbs * k->n_bands;
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
            int64_t t = i % k->n_bands, c = (i / k->n_bands) % k->sink_cbs;
            tsr_status status = run_tile(&r, scratch, i / (k->n_bands * k->sink_cbs), c, t);
            int none = TSR_OK;
            if (status != TSR_OK && atomic_compare_exchange_strong(&failed, &none, (int)status))
                snprintf(message, sizeof message, "%s", tsr_last_error());
        }
    }
    free(whole);
    int status = atomic_load(&failed);
    return status == TSR_OK ? TSR_OK : tsr_error((tsr_status)status, "%s", message);
}
