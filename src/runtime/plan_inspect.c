/* What a plan tells about itself: per-step profiles, its depth-first
 * stacks, the backend each node runs on and its statistics (the
 * introspection half of plan.c, over the same internals). */
#include "runtime/plan_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

tsr_status tsr_plan_set_profiling(tsr_plan *p, int enabled)
{
    if (!p)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_set_profiling: plan is NULL");
    pthread_mutex_lock(&p->lock);
    p->profiling = enabled != 0;
    for (spec *s = p->specs; s; s = s->next) {
        s->profiled_runs = 0;
        for (int i = 0; i < s->n_steps; i++)
            s->steps[i].seconds = 0.0;
    }
    pthread_mutex_unlock(&p->lock);
    return TSR_OK;
}

/* ms per run of spec s's step st, over the runs s profiled. */
static double step_ms(const spec *s, const plan_step *st)
{
    return s->profiled_runs ? st->seconds * 1e3 / s->profiled_runs : 0.0;
}

/* "[42336,64]": value v's shape as tsr_shape_format writes it, without
 * its spaces, so that the table's columns stay one word each. */
static void format_dims(const tsr_value *v, char *buf, size_t size)
{
    tsr_shape_format(buf, size, v->rank, v->dims);
    char *w = buf;
    for (const char *r = buf; *r; r++)
        if (*r != ' ')
            *w++ = *r;
    *w = '\0';
}

static void print_profile_row(const spec *s, const plan_step *st, int index, double total_ms,
                              FILE *out)
{
    double ms = step_ms(s, st);
    const tsr_value *result = &s->graph->values[s->bufs[st->out_bufs[0]].value];
    const char *op = "Copy", *name = result->name;
    char label[64], members[256], backend[64] = "-", dims[32];
    format_dims(result, dims, sizeof dims);
    if (st->backend) {
        const char *kernel =
            st->backend->kernel_name && st->state ? st->backend->kernel_name(st->state) : NULL;
        snprintf(backend, sizeof backend, "%s%s%s", st->backend->name,
                 kernel && *kernel ? "/" : "", kernel && *kernel ? kernel : "");
    }
    if (st->kind == STEP_STACK) {
        op = "Stack";
        tsr_stack_ops(s, st->stack, members, sizeof members);
        name = members;
    } else if (st->kind == STEP_KERNEL) {
        op = s->graph->nodes[st->node].op->name;
        name = s->graph->nodes[st->node].name;
    } else if (st->kind == STEP_REORDER) {
        snprintf(label, sizeof label, "Reorder->%s",
                 tsr_layout_name((tsr_layout)s->bufs[st->out_bufs[0]].layout));
        op = label;
    } else if (st->kind == STEP_TRANSFER) {
        snprintf(label, sizeof label, "Transfer->%s",
                 s->spaces[s->bufs[st->out_bufs[0]].space].memory->name);
        op = label;
    }
    fprintf(out, "%-5d %10.3f %6.1f  %-18s %-20s %-16s %s\n", index, ms,
            total_ms > 0 ? 100.0 * ms / total_ms : 0.0, backend, op, dims,
            name && *name ? name : "<unnamed>");
}

tsr_status tsr_plan_print_profile(const tsr_plan *p, FILE *out)
{
    if (!p || !out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_print_profile: NULL argument");
    if (!p->current || !p->current->profiled_runs)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "no profiled runs: enable profiling, then run");
    /* A split specialization: its prefix, then the tails of its last run,
     * each over the runs it profiled. */
    double total_ms = 0.0;
    for (const spec *s = p->current; s; s = s->last_tail)
        for (int i = 0; i < s->n_steps; i++)
            total_ms += step_ms(s, &s->steps[i]);
    fprintf(out, "%-5s %10s %6s  %-18s %-20s %-16s %s\n", "step", "ms/run", "%", "backend", "op",
            "output", "node");
    int index = 0;
    for (const spec *s = p->current; s; s = s->last_tail)
        for (int i = 0; i < s->n_steps; i++)
            print_profile_row(s, &s->steps[i], index++, total_ms, out);
    fprintf(out, "total %10.3f ms/run over %d runs\n", total_ms, p->current->profiled_runs);
    if (p->current->dag)
        fprintf(out, "(the steps ran side by side, one thread each: their times add up to more "
                     "than a run's)\n");
    return TSR_OK;
}

tsr_status tsr_plan_print_stacks(const tsr_plan *p, FILE *out)
{
    if (!p || !out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_print_stacks: NULL argument");
    const spec *s = p->current;
    if (!s)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "call tsr_plan_reshape before asking for stacks");
    int n_stacks = 0;
    for (const spec *c = s; c; c = c->last_tail)
        n_stacks += c->n_stacks;
    if (!n_stacks)
        fprintf(out, "no depth-first stacks%s\n",
                p->options.depth_first == 0 ? " (depth-first execution is off)" : "");
    for (const spec *c = s; c; c = c->last_tail)
        for (int i = 0; i < c->n_steps; i++)
            if (c->steps[i].kind == STEP_STACK)
                tsr_stack_print(c, c->steps[i].stack, out);
    return TSR_OK;
}

/* Calls f(step, arg) for every kernel step of s, stack members included;
 * returns the first for which it returns true, else NULL. */
static const plan_step *find_kernel_step(const spec *s,
                                         bool (*f)(const spec *s, const plan_step *st, void *arg),
                                         void *arg)
{
    for (int i = 0; i < s->n_steps; i++) {
        const plan_step *st = &s->steps[i];
        if (st->kind == STEP_KERNEL && f(s, st, arg))
            return st;
        for (int m = 0; st->kind == STEP_STACK && m < tsr_stack_size(st->stack); m++)
            if (f(s, tsr_stack_member(st->stack, m), arg))
                return tsr_stack_member(st->stack, m);
    }
    return NULL;
}

static bool count_backend(const spec *s, const plan_step *st, void *arg)
{
    (void)s;
    tsr_plan_stats *out = arg;
    for (int b = 0; b < out->n_backends; b++)
        if (strcmp(out->backend_names[b], st->backend->name) == 0)
            out->backend_steps[b]++;
    return false;
}

static bool named(const spec *s, const plan_step *st, void *arg)
{
    const char *name = s->graph->nodes[st->node].name;
    return name && strcmp(name, arg) == 0;
}

tsr_status tsr_plan_node_backend(const tsr_plan *p, const char *node_name, const char **backend_out)
{
    if (!p || !node_name || !backend_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_node_backend: NULL argument");
    *backend_out = NULL;
    if (!p->current)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "call tsr_plan_reshape before asking which backend runs a node");
    const plan_step *st = NULL;
    for (const spec *s = p->current; s && !st; s = s->last_tail)
        st = find_kernel_step(s, named, (void *)node_name);
    if (!st) {
        bool in_graph = false;
        for (int n = 0; n < p->graph->n_nodes && !in_graph; n++)
            in_graph = p->graph->nodes[n].name && strcmp(p->graph->nodes[n].name, node_name) == 0;
        return tsr_error(TSR_ERR_NOT_FOUND,
                         in_graph ? "node '%s' does not run in this plan: the optimization passes "
                                    "removed it or fused it into another node"
                                  : "the graph has no node named '%s'",
                         node_name);
    }
    *backend_out = st->backend->name;
    return TSR_OK;
}

tsr_status tsr_plan_get_stats(const tsr_plan *p, tsr_plan_stats *out)
{
    if (!p || !out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_get_stats: NULL argument");
    if (!p->current)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "call tsr_plan_reshape before asking for stats");
    memset(out, 0, sizeof *out);
    for (const tsr_backend *const *b = p->backends; *b && out->n_backends < 8; b++)
        out->backend_names[out->n_backends++] = (*b)->name;
    /* A split specialization: its prefix and the tails of its last run. */
    for (const spec *s = p->current; s; s = s->last_tail) {
        for (int i = 0; i < s->n_spaces; i++)
            out->arena_bytes += s->arena_bytes[i];
        out->flops += s->flops;
        out->side_by_side = out->side_by_side || s->dag;
        int n_stack_ops = 0;
        for (int i = 0; i < s->n_steps; i++) {
            out->n_steps += s->steps[i].kind == STEP_KERNEL;
            out->n_reorders += s->steps[i].kind == STEP_REORDER;
            out->n_transfers += s->steps[i].kind == STEP_TRANSFER;
            out->n_stacks += s->steps[i].kind == STEP_STACK;
            if (s->steps[i].kind == STEP_STACK)
                n_stack_ops += tsr_stack_size(s->steps[i].stack);
        }
        out->n_stack_ops += n_stack_ops;
        out->n_steps += n_stack_ops;
        find_kernel_step(s, count_backend, out);
        for (int b = 0; b < s->n_bufs; b++)
            if (s->bufs[b].kind == BUF_CONST || s->bufs[b].kind == BUF_UPLOAD) {
                tsr_tensor t = tsr_value_tensor(&s->graph->values[s->bufs[b].value]);
                if (s->bufs[b].kind == BUF_CONST)
                    out->constant_bytes += tsr_tensor_bytes(&t);
                else
                    out->uploaded_bytes += tsr_tensor_bytes(&t);
            }
    }
    out->n_cached_specs = p->n_specs;
    out->cached_bytes = p->cached_bytes;
    out->n_builds = p->n_builds;
    out->n_evictions = p->n_evictions;
    return TSR_OK;
}
