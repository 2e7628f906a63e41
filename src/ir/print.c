/* Human-readable views of a graph: the printer and the summary. */
#include "ir/graph.h"

#include "ops/op.h"

#include <string.h>

static void format_value_type(const tsr_graph *g, const tsr_value *v, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "%s[", tsr_dtype_name(v->dtype));
    for (int d = 0; d < v->rank && used < size; d++) {
        const char *sep = d ? "," : "";
        if (tsr_dim_known(v->dims[d]))
            used += (size_t)snprintf(buf + used, size - used, "%s%lld", sep, (long long)v->dims[d]);
        else if (tsr_dim_is_sym(v->dims[d]))
            used += (size_t)snprintf(buf + used, size - used, "%s%s", sep,
                                     g->symbols[TSR_DIM_SYM_INDEX(v->dims[d])]);
        else
            used += (size_t)snprintf(buf + used, size - used, "%s?", sep);
    }
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static void print_attr(FILE *out, const tsr_node_attr *a)
{
    fprintf(out, "%s=", a->name);
    switch (a->type) {
    case TSR_ATTR_INT: fprintf(out, "%lld", (long long)a->i); break;
    case TSR_ATTR_FLOAT: fprintf(out, "%g", a->f); break;
    case TSR_ATTR_STRING: fprintf(out, "\"%s\"", a->s); break;
    case TSR_ATTR_INTS:
        fputc('[', out);
        for (size_t i = 0; i < a->count; i++)
            fprintf(out, "%s%lld", i ? "," : "", (long long)a->ints[i]);
        fputc(']', out);
        break;
    case TSR_ATTR_FLOATS:
        fputc('[', out);
        for (size_t i = 0; i < a->count; i++)
            fprintf(out, "%s%g", i ? "," : "", a->floats[i]);
        fputc(']', out);
        break;
    case TSR_ATTR_TENSOR: fprintf(out, "tensor<%s>", tsr_dtype_name(a->t.dtype)); break;
    case TSR_ATTR_GRAPH:
        fprintf(out, "graph<%d nodes, %d outputs>", a->graph->n_nodes, a->graph->n_outputs);
        break;
    }
}

tsr_status tsr_graph_print(const tsr_graph *g, FILE *out)
{
    if (!g || !out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_print: NULL argument");
    char type[256];
    for (int i = 0; i < g->n_inputs; i++) {
        const tsr_value *v = &g->values[g->inputs[i]];
        format_value_type(g, v, type, sizeof type);
        fprintf(out, "input  %%%s: %s\n", v->name, type);
    }
    int n_const = 0;
    for (int v = 0; v < g->n_values; v++)
        n_const += g->values[v].data != NULL;
    fprintf(out, "constants: %d\n", n_const);
    for (int n = 0; n < g->n_nodes; n++) {
        const tsr_node *node = &g->nodes[n];
        for (int o = 0; o < node->n_outputs; o++)
            fprintf(out, "%s%%%s", o ? ", " : "", g->values[node->outputs[o]].name);
        fprintf(out, " = %s%s%s(", node->op->domain, *node->op->domain ? "." : "", node->op->name);
        for (int i = 0; i < node->n_inputs; i++) {
            int v = node->inputs[i];
            fprintf(out, "%s%s%s", i ? ", " : "", v >= 0 ? "%" : "", v >= 0 ? g->values[v].name : "_");
        }
        fputc(')', out);
        if (node->n_attrs) {
            fputs(" {", out);
            for (int a = 0; a < node->n_attrs; a++) {
                if (a)
                    fputs(", ", out);
                print_attr(out, &node->attrs[a]);
            }
            fputc('}', out);
        }
        fputs(" :", out);
        for (int o = 0; o < node->n_outputs; o++) {
            format_value_type(g, &g->values[node->outputs[o]], type, sizeof type);
            fprintf(out, " %s", type);
        }
        if (node->name && *node->name)
            fprintf(out, "  # %s", node->name);
        fputc('\n', out);
    }
    for (int o = 0; o < g->n_outputs; o++) {
        const tsr_value *v = &g->values[g->outputs[o]];
        format_value_type(g, v, type, sizeof type);
        fprintf(out, "output %%%s: %s\n", v->name, type);
    }
    return TSR_OK;
}

tsr_status tsr_graph_get_stats(const tsr_graph *g, tsr_graph_stats *out)
{
    if (!g || !out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_get_stats: NULL argument");
    memset(out, 0, sizeof *out);
    out->n_nodes = g->n_nodes;
    for (int v = 0; v < g->n_values; v++) {
        const tsr_value *val = &g->values[v];
        if (val->data && tsr_dtype_is_float(val->dtype))
            out->n_parameters += tsr_shape_numel(val->rank, val->dims);
    }
    for (int n = 0; n < g->n_nodes; n++) {
        const char *name = g->nodes[n].op->name;
        int k = 0;
        while (k < out->n_op_types && strcmp(out->op_types[k], name) != 0)
            k++;
        if (k == out->n_op_types) {
            if (k == 128)
                continue;
            out->op_types[out->n_op_types++] = name;
        }
        out->op_counts[k]++;
        /* Keep most frequent first by bubbling the counted entry up. */
        while (k > 0 && out->op_counts[k] > out->op_counts[k - 1]) {
            const char *tn = out->op_types[k];
            int tc = out->op_counts[k];
            out->op_types[k] = out->op_types[k - 1];
            out->op_counts[k] = out->op_counts[k - 1];
            out->op_types[k - 1] = tn;
            out->op_counts[k - 1] = tc;
            k--;
        }
    }
    return TSR_OK;
}
