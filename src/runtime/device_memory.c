/* The caller's tensors in device memory (docs/hal.md, "Device-resident
 * caller buffers"): where each tensor of a run lives, checked against its
 * data before anything runs, so that a tensor in the wrong space is an
 * error naming it rather than a fault inside a kernel or a silent read
 * of the wrong memory; and the calls that allocate, free and fill such
 * tensors through the hooks of the plan's device. */
#include "runtime/plan_internal.h"

#include <string.h>

/* The index in p->spaces of the space called `memory` (NULL: the host),
 * or -1. */
static int space_named(const tsr_plan *p, const char *memory)
{
    if (!memory)
        return TSR_HOST_SPACE;
    for (int i = 0; i < p->n_spaces; i++)
        if (strcmp(p->spaces[i].memory->name, memory) == 0)
            return i;
    return -1;
}

/* "host and testdev": the spaces p's device uses. */
static void space_names(const tsr_plan *p, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < p->n_spaces && n < size; i++) {
        const char *sep = i == 0 ? "" : i + 1 == p->n_spaces ? " and " : ", ";
        n += (size_t)snprintf(buf + n, size - n, "%s%s", sep, p->spaces[i].memory->name);
    }
}

/* The space of tensor t, called `what` '`name`' in messages, once its data
 * is found where its memory says: in that space, and, declared host
 * memory, in none of the device's spaces. */
static tsr_status tensor_space(const tsr_plan *p, const tsr_tensor *t, const char *what,
                               const char *name, int *space_out)
{
    int space = space_named(p, t->memory);
    if (space < 0) {
        char names[128];
        space_names(p, names, sizeof names);
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "%s '%s' is in %s memory, which this plan's device does not use (it "
                         "uses %s memory)",
                         what, name, t->memory, names);
    }
    size_t bytes = tsr_tensor_bytes(t);
    if (!t->data || !bytes) {
        *space_out = space;
        return TSR_OK;
    }
    const plan_space *sp = &p->spaces[space];
    if (space != TSR_HOST_SPACE && sp->memory->holds && !sp->memory->holds(sp->ctx, t->data, bytes))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "%s '%s' is declared %s memory, but its data (%p, %zu bytes) is not an "
                         "allocation of %s memory (tsr_device_alloc makes one)",
                         what, name, sp->memory->name, t->data, bytes, sp->memory->name);
    for (int i = 0; space == TSR_HOST_SPACE && i < p->n_spaces; i++) {
        const plan_space *dev = &p->spaces[i];
        if (i != TSR_HOST_SPACE && dev->memory->holds && dev->memory->holds(dev->ctx, t->data, 1))
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "%s '%s' is declared host memory, but its data (%p) is %s memory: "
                             "set its memory to \"%s\"",
                             what, name, t->data, dev->memory->name, dev->memory->name);
    }
    *space_out = space;
    return TSR_OK;
}

tsr_status tsr_plan_residency(tsr_plan *p, int n_inputs, const tsr_tensor *inputs, int n_outputs,
                              const tsr_tensor *outputs, bool *device_out)
{
    const tsr_graph *g = p->graph;
    *device_out = false;
    /* Wrong counts are check_inputs' and check_outputs' to report. */
    if (n_inputs != g->n_inputs || (n_inputs && !inputs))
        return TSR_OK;
    bool with_outputs = outputs && n_outputs == g->n_outputs;
    for (int k = 0; k < g->n_inputs + g->n_outputs; k++) {
        bool is_input = k < g->n_inputs;
        const tsr_tensor *t = is_input ? &inputs[k] : with_outputs ? &outputs[k - n_inputs] : NULL;
        int space = TSR_HOST_SPACE;
        if (t && (t->memory || p->n_spaces > 1)) {
            int v = is_input ? g->inputs[k] : g->outputs[k - n_inputs];
            TSR_CHECK(tensor_space(p, t, is_input ? "input" : "output", g->values[v].name, &space));
        }
        p->residency[k] = (uint8_t)space;
        *device_out = *device_out || space != TSR_HOST_SPACE;
    }
    return TSR_OK;
}

/* The plan's device space (the first beside the host), for `call`. */
static tsr_status device_space(const tsr_plan *p, const char *call, int *space_out)
{
    if (p->n_spaces < 2)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s: this plan's device computes in host memory: pass host tensors "
                         "(memory NULL)",
                         call);
    *space_out = 1;
    return TSR_OK;
}

tsr_status tsr_device_alloc(tsr_plan *p, tsr_tensor *t)
{
    if (!p || !t)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_device_alloc: NULL argument");
    int space;
    TSR_CHECK(device_space(p, "tsr_device_alloc", &space));
    if (t->rank < 0 || t->rank > TSR_MAX_RANK || !tsr_dtype_size(t->dtype) ||
        tsr_tensor_numel(t) < 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_device_alloc: the tensor needs a dtype, a rank from 0 to %d and "
                         "dims >= 0",
                         TSR_MAX_RANK);
    const plan_space *sp = &p->spaces[space];
    pthread_mutex_lock(&p->lock);
    void *data = sp->memory->alloc(sp->ctx, tsr_tensor_bytes(t));
    tsr_status st = data ? sp->memory->synchronize(sp->ctx) : TSR_ERR_OUT_OF_MEMORY;
    pthread_mutex_unlock(&p->lock);
    if (st != TSR_OK) {
        if (data)
            sp->memory->free(sp->ctx, data);
        return st;
    }
    t->data = data;
    t->memory = sp->memory->name;
    return TSR_OK;
}

tsr_status tsr_device_free(tsr_plan *p, tsr_tensor *t)
{
    if (!p || !t)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_device_free: NULL argument");
    if (!t->data)
        return TSR_OK;
    int space;
    TSR_CHECK(device_space(p, "tsr_device_free", &space));
    const plan_space *sp = &p->spaces[space];
    if (space_named(p, t->memory) != space ||
        (sp->memory->holds && !sp->memory->holds(sp->ctx, t->data, 1)))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_device_free: the tensor (memory %s, data %p) is not %s memory",
                         t->memory ? t->memory : "host", t->data, sp->memory->name);
    pthread_mutex_lock(&p->lock);
    sp->memory->free(sp->ctx, t->data);
    pthread_mutex_unlock(&p->lock);
    t->data = NULL;
    t->memory = NULL;
    return TSR_OK;
}

tsr_status tsr_device_copy(tsr_plan *p, tsr_tensor *dst, const tsr_tensor *src)
{
    if (!p || !dst || !src)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_device_copy: NULL argument");
    bool same = dst->dtype == src->dtype && dst->rank == src->rank && src->rank >= 0 &&
                src->rank <= TSR_MAX_RANK;
    for (int d = 0; same && d < src->rank; d++)
        same = dst->dims[d] == src->dims[d];
    if (!same)
        return tsr_error(TSR_ERR_SHAPE,
                         "tsr_device_copy: source and destination differ in dtype or shape");
    size_t bytes = tsr_tensor_bytes(src);
    if (bytes && (!src->data || !dst->data))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_device_copy: a tensor has no data");
    int from, to;
    TSR_CHECK(tensor_space(p, src, "tsr_device_copy:", "source", &from));
    TSR_CHECK(tensor_space(p, dst, "tsr_device_copy:", "destination", &to));
    if (from != TSR_HOST_SPACE && to != TSR_HOST_SPACE && from != to)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "tsr_device_copy: copies go between the host and one device, not from "
                         "%s to %s memory",
                         p->spaces[from].memory->name, p->spaces[to].memory->name);
    const plan_space *sp = &p->spaces[to != TSR_HOST_SPACE ? to : from];
    pthread_mutex_lock(&p->lock);
    tsr_status st;
    if (from == to)
        st = sp->memory->copy(sp->ctx, dst->data, src->data, bytes);
    else if (to == TSR_HOST_SPACE)
        st = sp->memory->copy_to_host(sp->ctx, dst->data, src->data, bytes);
    else
        st = sp->memory->copy_from_host(sp->ctx, dst->data, src->data, bytes);
    if (st == TSR_OK)
        st = sp->memory->synchronize(sp->ctx);
    pthread_mutex_unlock(&p->lock);
    return st;
}
