/* The op registry, attribute access and the helpers op files share. */
#include "ops/op.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const tsr_op_def *const all_ops[] = {
#define TSR_OP(id) &tsr_op_##id,
#include "ops/op_table.h"
#undef TSR_OP
};

int tsr_op_count(void) { return (int)(sizeof all_ops / sizeof all_ops[0]); }

const tsr_op_def *tsr_op_at(int index)
{
    return index >= 0 && index < tsr_op_count() ? all_ops[index] : NULL;
}

int tsr_op_table_size(void) { return tsr_op_count(); }

tsr_status tsr_op_table_entry(int index, tsr_op_info *info_out)
{
    if (!info_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_op_table_entry: info_out is NULL");
    const tsr_op_def *op = tsr_op_at(index);
    if (!op)
        return tsr_error(TSR_ERR_NOT_FOUND, "op table index %d out of range (%d ops)", index,
                         tsr_op_count());
    *info_out = (tsr_op_info){.name = op->name, .domain = op->domain,
                              .min_inputs = op->min_inputs, .max_inputs = op->max_inputs,
                              .min_outputs = op->min_outputs, .max_outputs = op->max_outputs,
                              .has_gradient = op->grad != NULL};
    return TSR_OK;
}

const tsr_op_def *tsr_op_find(const char *domain, const char *name)
{
    for (int i = 0; i < tsr_op_count(); i++)
        if (strcmp(all_ops[i]->name, name) == 0 && strcmp(all_ops[i]->domain, domain) == 0)
            return all_ops[i];
    return NULL;
}

static const tsr_node_attr *find_attr(const tsr_node *n, const char *name)
{
    for (int a = 0; a < n->n_attrs; a++)
        if (strcmp(n->attrs[a].name, name) == 0)
            return &n->attrs[a];
    return NULL;
}

static const tsr_attr_def *find_def(const tsr_node *n, const char *name)
{
    for (const tsr_attr_def *d = n->op->attrs; d && d->name; d++)
        if (strcmp(d->name, name) == 0)
            return d;
    assert(!"attribute not declared in the op's schema");
    return NULL;
}

bool tsr_attr_has(const tsr_node *n, const char *name) { return find_attr(n, name) != NULL; }

int64_t tsr_attr_int(const tsr_node *n, const char *name)
{
    const tsr_node_attr *a = find_attr(n, name);
    if (a)
        return a->i;
    const tsr_attr_def *d = find_def(n, name);
    return d ? d->i : 0;
}

double tsr_attr_float(const tsr_node *n, const char *name)
{
    const tsr_node_attr *a = find_attr(n, name);
    if (a)
        return a->f;
    const tsr_attr_def *d = find_def(n, name);
    return d ? d->f : 0.0;
}

const char *tsr_attr_string(const tsr_node *n, const char *name)
{
    const tsr_node_attr *a = find_attr(n, name);
    if (a)
        return a->s;
    const tsr_attr_def *d = find_def(n, name);
    return d && d->s ? d->s : "";
}

const int64_t *tsr_attr_ints(const tsr_node *n, const char *name, size_t *count)
{
    const tsr_node_attr *a = find_attr(n, name);
    *count = a ? a->count : 0;
    return a ? a->ints : NULL;
}

const double *tsr_attr_floats(const tsr_node *n, const char *name, size_t *count)
{
    const tsr_node_attr *a = find_attr(n, name);
    *count = a ? a->count : 0;
    return a ? a->floats : NULL;
}

const tsr_tensor *tsr_attr_tensor(const tsr_node *n, const char *name)
{
    const tsr_node_attr *a = find_attr(n, name);
    return a ? &a->t : NULL;
}

size_t tsr_layout_bytes(const tsr_tensor *t, tsr_layout layout)
{
    int b = tsr_layout_block(layout);
    if (b == 1 || t->rank != 4)
        return tsr_tensor_bytes(t);
    int64_t c = (t->dims[1] + b - 1) / b * b, dims[4] = {t->dims[0], c, t->dims[2], t->dims[3]};
    int64_t n = tsr_shape_numel(4, dims), bytes;
    if (n < 0 || !tsr_size_mul(n, (int64_t)tsr_dtype_size(t->dtype), &bytes))
        return SIZE_MAX;
    return (size_t)bytes;
}

const char *tsr_layout_name(tsr_layout layout)
{
    switch (layout) {
    case TSR_LAYOUT_PLAIN: return "plain";
    case TSR_LAYOUT_BLOCKED8: return "nChw8c";
    case TSR_LAYOUT_BLOCKED16: return "nChw16c";
    }
    return "unknown";
}

tsr_status tsr_infer_error(const tsr_infer_ctx *c, tsr_status status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)c; /* the builder adds the node's name and op in front */
    return tsr_error(status, "%s", msg);
}

tsr_status tsr_infer_require_dtype(const tsr_infer_ctx *c, int input, unsigned mask)
{
    const tsr_value *v = c->inputs[input];
    if (!v)
        return TSR_OK;
    if (v->dtype < 32 && (mask & TSR_DTYPE_BIT(v->dtype)))
        return TSR_OK;
    return tsr_infer_error(c, TSR_ERR_DTYPE, "input %d ('%s') has dtype %s, which %s does not take",
                           input, v->name, tsr_dtype_name(v->dtype), c->node->op->name);
}

void tsr_infer_set(tsr_infer_ctx *c, int output, tsr_dtype dtype, int rank, const int64_t *dims)
{
    tsr_value *v = c->outputs[output];
    v->dtype = dtype;
    v->rank = rank;
    for (int i = 0; i < rank; i++)
        v->dims[i] = dims[i];
}

tsr_status tsr_kernel_ints(const tsr_tensor *t, int64_t *vals, int max, int *count)
{
    int64_t n = tsr_tensor_numel(t);
    if (n > max)
        return tsr_error(TSR_ERR_UNSUPPORTED, "integer tensor of %lld elements, at most %d allowed",
                         (long long)n, max);
    if (t->dtype != TSR_INT64 && t->dtype != TSR_INT32)
        return tsr_error(TSR_ERR_DTYPE, "expected an int64 or int32 tensor, got %s",
                         tsr_dtype_name(t->dtype));
    for (int64_t i = 0; i < n; i++)
        vals[i] = t->dtype == TSR_INT64 ? ((const int64_t *)t->data)[i]
                                        : ((const int32_t *)t->data)[i];
    *count = (int)n;
    return TSR_OK;
}

bool tsr_infer_const_ints(const tsr_infer_ctx *c, int input, int64_t *vals, int max, int *count)
{
    if (input >= c->n_inputs || !c->inputs[input] || !c->inputs[input]->data)
        return false;
    tsr_tensor t = tsr_value_tensor(c->inputs[input]);
    return tsr_kernel_ints(&t, vals, max, count) == TSR_OK;
}
