/* Values handed between plans in their producer's layout (tsr_plan_keep_output_layouts,
 * tsr_plan_output_layout and tsr_plan_set_input_layouts in include/tessera.h): the API, the
 * check of the layouts a specialization is fed, and the specialization cache's layout key.
 * The scheduler (schedule.c) places those inputs and the kept outputs. */
#include "runtime/plan_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Whether s was built for the layouts the plan's inputs are fed in. */
bool tsr_plan_layouts_match(const tsr_plan *p, const spec *s)
{
    if (!s->input_layouts || !p->input_layouts)
        return !s->input_layouts && !p->input_layouts;
    return memcmp(s->input_layouts, p->input_layouts, (size_t)p->graph->n_inputs) == 0;
}

/* s->input_layouts from the plan's, for inputs that can be in them: rank-4
 * float32 tensors in host memory. */
tsr_status tsr_spec_input_layouts(const tsr_plan *p, spec *s, int n_inputs,
                                  const tsr_tensor *inputs, const uint8_t *residency)
{
    if (!p->input_layouts)
        return TSR_OK;
    for (int i = 0; i < n_inputs; i++) {
        if (!p->input_layouts[i])
            continue;
        const tsr_value *v = &p->graph->values[p->graph->inputs[i]];
        if (inputs[i].dtype != TSR_FLOAT32 || inputs[i].rank != 4)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "input '%s' is fed in layout %s, which holds rank-4 float32 tensors "
                             "only; it is %s of rank %d",
                             v->name, tsr_layout_name((tsr_layout)p->input_layouts[i]),
                             tsr_dtype_name(inputs[i].dtype), inputs[i].rank);
        if (residency && residency[i] != TSR_HOST_SPACE)
            return tsr_error(TSR_ERR_UNSUPPORTED,
                             "input '%s' is fed in layout %s, which host memory holds only",
                             v->name, tsr_layout_name((tsr_layout)p->input_layouts[i]));
    }
    if (!(s->input_layouts = tsr_malloc((size_t)n_inputs + 1)))
        return TSR_ERR_OUT_OF_MEMORY;
    memcpy(s->input_layouts, p->input_layouts, (size_t)n_inputs);
    return TSR_OK;
}

tsr_status tsr_plan_keep_output_layouts(tsr_plan *p, int n_outputs, const int *keep)
{
    if (!p || (n_outputs && !keep))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_keep_output_layouts: NULL argument");
    if (n_outputs != p->graph->n_outputs)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_plan_keep_output_layouts: %d flags for a model with %d outputs",
                         n_outputs, p->graph->n_outputs);
    pthread_mutex_lock(&p->lock);
    tsr_status st = TSR_OK;
    if (p->n_builds > 0)
        st = tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_keep_output_layouts: call it before "
                                                 "the plan's first reshape or run");
    bool *flags = NULL;
    if (st == TSR_OK && !(flags = tsr_calloc((size_t)n_outputs + 1, sizeof *flags)))
        st = TSR_ERR_OUT_OF_MEMORY;
    if (st == TSR_OK) {
        for (int o = 0; o < n_outputs; o++)
            flags[o] = keep[o] != 0;
        free(p->keep_layouts);
        p->keep_layouts = flags;
    }
    pthread_mutex_unlock(&p->lock);
    return st;
}

tsr_status tsr_plan_output_layout(const tsr_plan *p, int index, int *layout_out,
                                  size_t *bytes_out)
{
    tsr_tensor desc;
    if (!layout_out || !bytes_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_output_layout: NULL argument");
    TSR_CHECK(tsr_plan_output_desc(p, index, &desc));
    const spec *s = p->current;
    *layout_out = s->output_layouts ? s->output_layouts[index] : TSR_LAYOUT_PLAIN;
    *bytes_out = tsr_shape_numel(desc.rank, desc.dims) < 0
                     ? 0
                     : tsr_layout_bytes(&desc, (tsr_layout)*layout_out);
    return TSR_OK;
}

tsr_status tsr_plan_set_input_layouts(tsr_plan *p, int n_inputs, const int *layouts)
{
    if (!p)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_set_input_layouts: plan is NULL");
    if (layouts && n_inputs != p->graph->n_inputs)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_plan_set_input_layouts: %d layouts for a model with %d inputs",
                         n_inputs, p->graph->n_inputs);
    bool any = false;
    for (int i = 0; layouts && i < n_inputs; i++) {
        if (layouts[i] < 0 || layouts[i] >= TSR_N_LAYOUTS)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "tsr_plan_set_input_layouts: input %d: no layout has code %d", i,
                             layouts[i]);
        any = any || layouts[i] != TSR_LAYOUT_PLAIN;
    }
    uint8_t *codes = NULL;
    if (any && !(codes = tsr_malloc((size_t)n_inputs + 1)))
        return TSR_ERR_OUT_OF_MEMORY;
    for (int i = 0; any && i < n_inputs; i++)
        codes[i] = (uint8_t)layouts[i];
    pthread_mutex_lock(&p->lock);
    free(p->input_layouts);
    p->input_layouts = codes;
    pthread_mutex_unlock(&p->lock);
    return TSR_OK;
}
