/* The ONNX importer: unpacks a ModelProto with protobuf-c and replays it
 * through the graph builder, which checks every node against its op's
 * schema, infers shapes and folds constants. Initializers become constants,
 * graph inputs keep their symbolic dims by name, and any failure destroys
 * the partial graph so that the caller never sees half of a model. */
#include "frontend/onnx_internal.h"
#include "ir/graph.h"
#include "ops/op.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct importer {
    const Onnx__ModelProto *model;
    const char *base_dir;
    tsr_graph *g;
    int64_t default_opset; /* 0 when the model does not import ai.onnx */
    /* The outer values the graph attributes of the node being added read,
     * which become the inputs of each sub-graph in this order (constants
     * are shared into the sub-graphs instead). */
    const char **captured;
    int n_captured, cap_captured;
    /* An If whose cond is constant already: the branch it takes, built for
     * both attributes, since the other may not even infer at these shapes
     * (a Squeeze of a dim that is not 1). */
    const Onnx__GraphProto *taken_branch;
    /* A Loop whose body is being built: its inputs type the body's own. */
    const Onnx__NodeProto *loop;
} importer;

static bool is_default_domain(const char *domain)
{
    return !domain || !*domain || strcmp(domain, "ai.onnx") == 0;
}

static const char *domain_label(const char *domain)
{
    return is_default_domain(domain) ? "ai.onnx" : domain;
}

static void node_label(const Onnx__NodeProto *node, size_t index, char *buf, size_t size)
{
    const char *op = node->op_type ? node->op_type : "?";
    if (node->name && *node->name)
        snprintf(buf, size, "node '%s' (%s)", node->name, op);
    else
        snprintf(buf, size, "node #%zu (%s)", index, op);
}

/* The version of `domain` the model imports; false when it does not. */
static bool domain_version(const importer *imp, const char *domain, int64_t *version_out)
{
    for (size_t i = 0; i < imp->model->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *os = imp->model->opset_import[i];
        bool same = is_default_domain(domain) ? is_default_domain(os->domain)
                                              : os->domain && strcmp(os->domain, domain) == 0;
        if (same) {
            *version_out = os->has_version ? os->version : 0;
            return true;
        }
    }
    return false;
}

static tsr_status check_opsets(importer *imp)
{
    const Onnx__ModelProto *m = imp->model;
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *os = m->opset_import[i];
        int64_t v = os->has_version ? os->version : 0;
        for (size_t j = 0; j < i; j++) {
            const Onnx__OperatorSetIdProto *prev = m->opset_import[j];
            bool same = is_default_domain(os->domain)
                            ? is_default_domain(prev->domain)
                            : prev->domain && strcmp(prev->domain, os->domain) == 0;
            if (same && (prev->has_version ? prev->version : 0) != v)
                return tsr_error(TSR_ERR_PARSE,
                                 "opset_import lists domain '%s' twice (%" PRId64 " and %" PRId64
                                 ")",
                                 domain_label(os->domain), prev->version, v);
        }
        if (!is_default_domain(os->domain))
            continue;
        if (v < 11 || v > 21)
            return tsr_error(TSR_ERR_UNSUPPORTED,
                             "the model uses ONNX opset %" PRId64
                             "; Tessera supports opsets 11 to 21 (re-export the model with "
                             "one of those)",
                             v);
        imp->default_opset = v;
    }
    if (imp->default_opset)
        TSR_CHECK(tsr_graph_set_opset(imp->g, (int)imp->default_opset));
    return TSR_OK;
}

static tsr_status add_initializers(importer *imp, const Onnx__GraphProto *graph)
{
    if (graph->n_sparse_initializer)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "the graph has %zu sparse initializers, which Tessera does not support",
                         graph->n_sparse_initializer);
    for (size_t i = 0; i < graph->n_initializer; i++) {
        const Onnx__TensorProto *tp = graph->initializer[i];
        if (!tp->name || !*tp->name)
            return tsr_error(TSR_ERR_PARSE, "initializer #%zu has no name", i);
        char what[320];
        snprintf(what, sizeof what, "initializer '%s'", tp->name);
        tsr_tensor t;
        TSR_CHECK(tsr_onnx_tensor_decode(tp, imp->base_dir, what, &t));
        /* The decoded copy replaces the raw bytes: free them now rather
         * than with the whole model, which keeps the peak memory of a
         * large model near one copy of its weights. */
        ProtobufCBinaryData *raw = &graph->initializer[i]->raw_data;
        free(raw->data);
        raw->data = NULL;
        raw->len = 0;
        int v;
        tsr_status st = tsr_graph_new_value(imp->g, tp->name, &v);
        if (st != TSR_OK) {
            tsr_shared_release(t.data);
            return st;
        }
        /* The decoded buffer becomes the constant's storage: no second copy. */
        tsr_value *val = &imp->g->values[v];
        val->data = t.data;
        val->is_param = tsr_dtype_is_float(t.dtype);
        val->dtype = t.dtype;
        val->rank = t.rank;
        memcpy(val->dims, t.dims, sizeof val->dims);
    }
    return TSR_OK;
}

static tsr_status add_input(importer *imp, const Onnx__ValueInfoProto *vi, size_t index)
{
    if (!vi->name || !*vi->name)
        return tsr_error(TSR_ERR_PARSE, "graph input #%zu has no name", index);
    int existing = tsr_graph_find_value(imp->g, vi->name);
    /* Older exporters list every initializer as an input too. */
    if (existing >= 0 && !imp->g->values[existing].is_input)
        return TSR_OK;
    const char *name = vi->name;
    if (!vi->type)
        return tsr_error(TSR_ERR_PARSE, "graph input '%s' has no type", name);
    if (vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !vi->type->tensor_type)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "graph input '%s' is not a dense tensor (sequences, maps, optionals and "
                         "sparse tensors are not supported)",
                         name);
    const Onnx__TypeProto__Tensor *tt = vi->type->tensor_type;
    tsr_dtype dtype;
    if (!tt->has_elem_type || !tsr_onnx_dtype(tt->elem_type, &dtype))
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "graph input '%s' has element type %s, which Tessera does not support "
                         "(float, double, int64, int32, bool, uint8, int8 are)",
                         name, tsr_onnx_dtype_name(tt->has_elem_type ? tt->elem_type : 0));
    if (!tt->shape)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "graph input '%s' has no shape (its rank is unknown); Tessera needs "
                         "at least the rank of every input",
                         name);
    if (tt->shape->n_dim > TSR_MAX_RANK)
        return tsr_error(TSR_ERR_UNSUPPORTED, "graph input '%s' has rank %zu, more than %d", name,
                         tt->shape->n_dim, TSR_MAX_RANK);
    int rank = (int)tt->shape->n_dim;
    int64_t dims[TSR_MAX_RANK] = {0};
    const char *dim_names[TSR_MAX_RANK] = {0};
    char generated[TSR_MAX_RANK][300];
    for (int i = 0; i < rank; i++) {
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
            if (d->dim_value < 0)
                return tsr_error(TSR_ERR_PARSE, "graph input '%s' has dim %" PRId64 " at axis %d",
                                 name, d->dim_value, i);
            dims[i] = d->dim_value;
        } else if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
                   d->dim_param && *d->dim_param) {
            dim_names[i] = d->dim_param;
        } else {
            /* A size nobody named: a symbol of its own, known at plan time. */
            snprintf(generated[i], sizeof generated[i], "unk_%s_%d", name, i);
            dim_names[i] = generated[i];
        }
    }
    return tsr_graph_add_input(imp->g, name, dtype, rank, dims, dim_names);
}

/* Memory an attribute conversion allocates, freed once the builder has
 * copied the node. */
typedef struct attr_scratch {
    char *s;
    double *floats;
    tsr_tensor t;
    tsr_graph *graph;
} attr_scratch;

static tsr_status build_branch(const importer *imp, const Onnx__GraphProto *gp,
                               tsr_graph **graph_out);

static const char *attr_kind_name(Onnx__AttributeProto__AttributeType type)
{
    switch (type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: return "a graph";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS: return "a list of graphs";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR: return "a sparse tensor";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS: return "a list of sparse tensors";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO: return "a type";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS: return "a list of types";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS: return "a list of tensors";
    default: return "of an unknown kind";
    }
}

/* Models from before IR version 2 may leave `type` unset. */
static Onnx__AttributeProto__AttributeType attr_type(const Onnx__AttributeProto *a)
{
    if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
        return a->type;
    if (a->has_f)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    if (a->has_i)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    if (a->has_s)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    if (a->t)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    if (a->g)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
    if (a->n_floats)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
    if (a->n_ints)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

static tsr_status convert_attr(const importer *imp, const char *label,
                               const Onnx__AttributeProto *a, tsr_attr *out, attr_scratch *scratch)
{
    if (!a->name || !*a->name)
        return tsr_error(TSR_ERR_PARSE, "%s has an attribute without a name", label);
    memset(out, 0, sizeof *out);
    out->name = a->name;
    Onnx__AttributeProto__AttributeType type = attr_type(a);
    switch (type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT:
        out->type = TSR_ATTR_FLOAT;
        out->f = a->f;
        return TSR_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT:
        out->type = TSR_ATTR_INT;
        out->i = a->i;
        return TSR_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
        if (a->s.len && memchr(a->s.data, 0, a->s.len))
            return tsr_error(TSR_ERR_PARSE, "%s: string attribute '%s' contains a NUL byte", label,
                             a->name);
        scratch->s = tsr_malloc(a->s.len + 1);
        if (!scratch->s)
            return TSR_ERR_OUT_OF_MEMORY;
        if (a->s.len)
            memcpy(scratch->s, a->s.data, a->s.len);
        scratch->s[a->s.len] = '\0';
        out->type = TSR_ATTR_STRING;
        out->s = scratch->s;
        return TSR_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS: {
        /* A list of strings (LSTM's activations) becomes one string,
         * comma-separated, the form the ops that take such lists parse. */
        size_t len = 1;
        for (size_t k = 0; k < a->n_strings; k++) {
            const ProtobufCBinaryData *sk = &a->strings[k];
            if ((sk->len && (memchr(sk->data, 0, sk->len) || memchr(sk->data, ',', sk->len))))
                return tsr_error(TSR_ERR_PARSE,
                                 "%s: string %zu of attribute '%s' contains a NUL byte or a comma",
                                 label, k, a->name);
            len += sk->len + 1;
        }
        scratch->s = tsr_malloc(len);
        if (!scratch->s)
            return TSR_ERR_OUT_OF_MEMORY;
        size_t at = 0;
        for (size_t k = 0; k < a->n_strings; k++) {
            if (k)
                scratch->s[at++] = ',';
            if (a->strings[k].len)
                memcpy(scratch->s + at, a->strings[k].data, a->strings[k].len);
            at += a->strings[k].len;
        }
        scratch->s[at] = '\0';
        out->type = TSR_ATTR_STRING;
        out->s = scratch->s;
        return TSR_OK;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        out->type = TSR_ATTR_INTS;
        out->ints = a->ints;
        out->count = a->n_ints;
        return TSR_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        scratch->floats = tsr_malloc(a->n_floats * sizeof(double));
        if (!scratch->floats)
            return TSR_ERR_OUT_OF_MEMORY;
        for (size_t i = 0; i < a->n_floats; i++)
            scratch->floats[i] = a->floats[i];
        out->type = TSR_ATTR_FLOATS;
        out->floats = scratch->floats;
        out->count = a->n_floats;
        return TSR_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: {
        char what[512];
        snprintf(what, sizeof what, "%s attribute '%s'", label, a->name);
        if (!a->t)
            return tsr_error(TSR_ERR_PARSE, "%s holds no tensor", what);
        TSR_CHECK(tsr_onnx_tensor_decode(a->t, imp->base_dir, what, &scratch->t));
        out->type = TSR_ATTR_TENSOR;
        out->t = &scratch->t;
        return TSR_OK;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: {
        out->type = TSR_ATTR_GRAPH;
        tsr_status st = build_branch(imp, imp->taken_branch ? imp->taken_branch : a->g,
                                     &scratch->graph);
        if (st != TSR_OK && st != TSR_ERR_OUT_OF_MEMORY)
            tsr_error_prefix("%s: %s: ", label, a->name);
        out->graph = scratch->graph;
        return st;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED:
        return tsr_error(TSR_ERR_PARSE, "%s: attribute '%s' has no type and no value", label,
                         a->name);
    default:
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s: attribute '%s' is %s, which Tessera does not support", label, a->name,
                         attr_kind_name(type));
    }
}

/* ------------------------------------------------ training-mode exports */

/* torch.onnx.export(..., training=TRAINING) writes BatchNormalization in
 * training mode (five outputs before opset 14, training_mode=1 from 14) and
 * Dropout with a true training_mode input. They become Tessera's training
 * ops: BatchNormTrain normalizes with the batch's statistics and outputs the
 * running-average update (ONNX's momentum convention is BatchNormTrain's),
 * DropoutTrain draws its mask from the node's `seed` attribute (0 when
 * absent). Outputs whose meaning differs (BatchNormalization's saved_var,
 * Dropout's bool mask) are not defined: a node reading them fails as
 * reading an unknown value. */

static const tsr_attr *find_attr(const tsr_attr *attrs, size_t n, const char *name)
{
    for (size_t a = 0; a < n; a++)
        if (strcmp(attrs[a].name, name) == 0)
            return &attrs[a];
    return NULL;
}

static double attr_f(const tsr_attr *attrs, size_t n, const char *name, double fallback)
{
    const tsr_attr *a = find_attr(attrs, n, name);
    return a && a->type == TSR_ATTR_FLOAT ? a->f : fallback;
}

/* The scalar value of a constant input, false when it is not one. */
static bool constant_scalar(const importer *imp, const Onnx__NodeProto *node, size_t i,
                            double *value_out)
{
    if (node->n_input <= i || !node->input[i] || !*node->input[i])
        return false;
    int v = tsr_graph_find_value(imp->g, node->input[i]);
    if (v < 0 || !imp->g->values[v].data)
        return false;
    tsr_tensor t = tsr_value_tensor(&imp->g->values[v]);
    if (tsr_tensor_numel(&t) != 1)
        return false;
    *value_out = tsr_get_f(&t, 0);
    return true;
}

static bool is_training_form(const importer *imp, const Onnx__NodeProto *node,
                             const tsr_attr *attrs, size_t n_attrs)
{
    if (!is_default_domain(node->domain))
        return false;
    if (strcmp(node->op_type, "BatchNormalization") == 0) {
        const tsr_attr *mode = find_attr(attrs, n_attrs, "training_mode");
        return node->n_input == 5 &&
               (node->n_output > 1 || (mode && mode->type == TSR_ATTR_INT && mode->i != 0));
    }
    double training = 0.0, ratio = 0.5;
    if (strcmp(node->op_type, "Dropout") != 0 || !constant_scalar(imp, node, 2, &training) ||
        training == 0.0)
        return false;
    return node->n_input < 2 || !*node->input[1] || !constant_scalar(imp, node, 1, &ratio) ||
           ratio != 0.0;
}

static tsr_status derived_name(const importer *imp, const char *base, const char *suffix, char *buf,
                               size_t size)
{
    char stem[512];
    snprintf(stem, sizeof stem, "%s__%s", base, suffix);
    return tsr_graph_unique_name(imp->g, stem, buf, size);
}

static tsr_status add_training_node(importer *imp, const Onnx__NodeProto *node, const char *label,
                                    const tsr_attr *attrs, size_t n_attrs)
{
    const char *y = node->output[0];
    char bufs[4][512];
    if (strcmp(node->op_type, "BatchNormalization") == 0) {
        static const char *const suffix[4] = {"running_mean", "running_var", "saved_mean",
                                              "saved_inv_std"};
        const char *outs[5] = {y};
        for (int o = 1; o < 5; o++) {
            bool given = o < 4 && (size_t)o < node->n_output && *node->output[o];
            if (!given)
                TSR_CHECK(derived_name(imp, y, suffix[o - 1], bufs[o - 1], sizeof bufs[0]));
            outs[o] = given ? node->output[o] : bufs[o - 1];
        }
        tsr_attr a[2] = {TSR_ATTR_F("epsilon", attr_f(attrs, n_attrs, "epsilon", 1e-5)),
                         TSR_ATTR_F("momentum", attr_f(attrs, n_attrs, "momentum", 0.9))};
        return tsr_graph_add_node_op(imp->g, &tsr_op_BatchNormTrain, 1, node->name, 5,
                                     (const char *const *)node->input, 5, outs, 2, a);
    }
    double ratio = 0.5;
    if (node->n_input > 1 && *node->input[1] && !constant_scalar(imp, node, 1, &ratio))
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s: Dropout in training mode needs a constant ratio",
                         label);
    const tsr_attr *seed_attr = find_attr(attrs, n_attrs, "seed");
    int64_t seed = seed_attr && seed_attr->type == TSR_ATTR_INT ? seed_attr->i : 0;
    tsr_tensor seed_t = {.dtype = TSR_INT64, .rank = 1, .dims = {1}, .data = &seed};
    TSR_CHECK(derived_name(imp, y, "seed", bufs[0], sizeof bufs[0]));
    TSR_CHECK(derived_name(imp, y, "mask", bufs[1], sizeof bufs[1]));
    TSR_CHECK(tsr_graph_add_constant(imp->g, bufs[0], &seed_t));
    const char *ins[2] = {node->input[0], bufs[0]}, *outs[2] = {y, bufs[1]};
    tsr_attr a = TSR_ATTR_F("ratio", ratio);
    return tsr_graph_add_node_op(imp->g, &tsr_op_DropoutTrain, 1, node->name, 2, ins, 2, outs, 1,
                                 &a);
}

/* Concat, Sum, Max and Min are associative (Concat along its axis), so a
 * node with more inputs than a node holds (ssdlite's Concat of 90 heads)
 * becomes a tree of nodes of at most TSR_MAX_NODE_IO inputs each, and the
 * limit never meets a user. */
static bool is_variadic_associative(const tsr_op_def *op)
{
    static const char *const names[] = {"Concat", "Sum", "Max", "Min"};
    for (size_t k = 0; op && !*op->domain && k < sizeof names / sizeof *names; k++)
        if (strcmp(op->name, names[k]) == 0)
            return true;
    return false;
}

static tsr_status add_variadic_tree(importer *imp, const tsr_op_def *op, int version,
                                    const Onnx__NodeProto *node, int n_attrs,
                                    const tsr_attr *attrs)
{
    size_t n = node->n_input;
    typedef char name_buf[512];
    name_buf *parts = tsr_calloc(n, sizeof *parts);
    const char **level = tsr_calloc(n, sizeof *level);
    tsr_status st = parts && level ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < n && st == TSR_OK; i++)
        level[i] = node->input[i];
    size_t n_parts = 0;
    while (st == TSR_OK && n > TSR_MAX_NODE_IO) {
        size_t next = 0;
        for (size_t first = 0; first < n && st == TSR_OK; first += TSR_MAX_NODE_IO) {
            size_t count = n - first < TSR_MAX_NODE_IO ? n - first : TSR_MAX_NODE_IO;
            const char *out = parts[n_parts];
            st = derived_name(imp, node->output[0], "part", parts[n_parts++], sizeof *parts);
            if (st == TSR_OK)
                st = tsr_graph_add_node_op(imp->g, op, version, node->name, (int)count,
                                           level + first, 1, &out, n_attrs, attrs);
            level[next++] = out;
        }
        n = next;
    }
    if (st == TSR_OK)
        st = tsr_graph_add_node_op(imp->g, op, version, node->name, (int)n, level, 1,
                                   (const char *const *)node->output, n_attrs, attrs);
    free(level);
    free(parts);
    return st;
}

static tsr_status add_node(importer *imp, const Onnx__NodeProto *node, size_t index);

/* ------------------------------------------------ sub-graphs (If's branches) */

/* Whether `name` is defined in gp before its node `before`. */
static bool defined_before(const Onnx__GraphProto *gp, size_t before, const char *name)
{
    for (size_t i = 0; i < gp->n_initializer; i++)
        if (gp->initializer[i]->name && strcmp(gp->initializer[i]->name, name) == 0)
            return true;
    for (size_t i = 0; i < gp->n_input; i++)
        if (gp->input[i]->name && strcmp(gp->input[i]->name, name) == 0)
            return true;
    for (size_t n = 0; n < before; n++)
        for (size_t o = 0; o < gp->node[n]->n_output; o++)
            if (gp->node[n]->output[o] && strcmp(gp->node[n]->output[o], name) == 0)
                return true;
    return false;
}

static tsr_status capture(importer *imp, const char *name)
{
    for (int c = 0; c < imp->n_captured; c++)
        if (strcmp(imp->captured[c], name) == 0)
            return TSR_OK;
    TSR_CHECK(tsr_grow((void **)&imp->captured, &imp->cap_captured, imp->n_captured + 1,
                       sizeof *imp->captured));
    imp->captured[imp->n_captured++] = name;
    return TSR_OK;
}

/* Adds to imp->captured the names gp (and the sub-graphs of its nodes)
 * reads from outside itself, which ONNX resolves in the enclosing scopes. */
static tsr_status capture_free_names(importer *imp, const Onnx__GraphProto *gp)
{
    for (size_t n = 0; n < gp->n_node; n++) {
        const Onnx__NodeProto *node = gp->node[n];
        for (size_t i = 0; i < node->n_input; i++)
            if (node->input[i] && *node->input[i] && !defined_before(gp, n, node->input[i]))
                TSR_CHECK(capture(imp, node->input[i]));
        for (size_t a = 0; a < node->n_attribute; a++) {
            const Onnx__AttributeProto *attr = node->attribute[a];
            if (!attr->g)
                continue;
            importer inner = {0};
            tsr_status st = capture_free_names(&inner, attr->g);
            for (int c = 0; c < inner.n_captured && st == TSR_OK; c++)
                if (!defined_before(gp, n, inner.captured[c]))
                    st = capture(imp, inner.captured[c]);
            free(inner.captured);
            TSR_CHECK(st);
        }
    }
    for (size_t o = 0; o < gp->n_output; o++)
        if (gp->output[o]->name && !defined_before(gp, gp->n_node, gp->output[o]->name))
            TSR_CHECK(capture(imp, gp->output[o]->name));
    return TSR_OK;
}

/* Adds to sub an input named `name` of the dtype and shape of imp's value v. */
static tsr_status add_input_like(const importer *imp, tsr_graph *sub, const char *name, int v)
{
    const tsr_value *val = &imp->g->values[v];
    const char *names[TSR_MAX_RANK] = {0};
    for (int d = 0; d < val->rank; d++)
        if (tsr_dim_is_sym(val->dims[d]))
            names[d] = imp->g->symbols[TSR_DIM_SYM_INDEX(val->dims[d])];
    return tsr_graph_add_input(sub, name, val->dtype, val->rank, val->dims, names);
}

/* A Loop body's own inputs: iter_num, cond and one per loop-carried value,
 * typed from the node's inputs (exports often leave the declared shapes
 * out, and a loop-carried value keeps its initial one's dtype). */
static tsr_status add_loop_inputs(const importer *imp, const Onnx__GraphProto *gp, tsr_graph *sub)
{
    const Onnx__NodeProto *node = imp->loop;
    if (node->n_input < 2 || gp->n_input != node->n_input)
        return tsr_error(TSR_ERR_PARSE,
                         "the body takes %zu inputs, but the node gives iter_num, cond and %zu "
                         "loop-carried values",
                         gp->n_input, node->n_input < 2 ? (size_t)0 : node->n_input - 2);
    for (size_t k = 0; k < gp->n_input; k++) {
        const char *name = gp->input[k]->name;
        if (!name || !*name)
            return tsr_error(TSR_ERR_PARSE, "body input #%zu has no name", k);
        if (k < 2) {
            TSR_CHECK(tsr_graph_add_input(sub, name, k ? TSR_BOOL : TSR_INT64, 0, NULL, NULL));
            continue;
        }
        const char *init = node->input[k];
        int v = init && *init ? tsr_graph_find_value(imp->g, init) : -1;
        if (v < 0)
            return tsr_error(TSR_ERR_PARSE,
                             "loop-carried value %zu ('%s') is missing or not defined before "
                             "the node",
                             k - 2, init ? init : "");
        TSR_CHECK(add_input_like(imp, sub, name, v));
    }
    return TSR_OK;
}

/* A sub-graph of its own value names, whose inputs are a Loop body's own
 * and then the node's captured values with their shapes here (symbols
 * numbered as here). */
static tsr_status build_branch(const importer *imp, const Onnx__GraphProto *gp,
                               tsr_graph **graph_out)
{
    if (!gp)
        return tsr_error(TSR_ERR_PARSE, "the attribute holds no graph");
    tsr_graph *sub;
    TSR_CHECK(tsr_graph_create(&sub));
    importer nested = {.model = imp->model, .base_dir = imp->base_dir, .g = sub,
                       .default_opset = imp->default_opset};
    sub->default_opset = imp->g->default_opset;
    sub->fold_limit = imp->g->fold_limit;
    tsr_status st = TSR_OK;
    for (int s = 0; s < imp->g->n_symbols && st == TSR_OK; s++) {
        int idx;
        st = tsr_graph_symbol(sub, imp->g->symbols[s], &idx);
    }
    if (st == TSR_OK && imp->loop)
        st = add_loop_inputs(imp, gp, sub);
    for (int c = 0; c < imp->n_captured && st == TSR_OK; c++) {
        int v = tsr_graph_find_value(imp->g, imp->captured[c]);
        st = imp->g->values[v].data ? tsr_graph_share_constant(sub, &imp->g->values[v], false)
                                    : add_input_like(imp, sub, imp->captured[c], v);
    }
    if (st == TSR_OK)
        st = add_initializers(&nested, gp);
    for (size_t n = 0; n < gp->n_node && st == TSR_OK; n++)
        st = add_node(&nested, gp->node[n], n);
    for (size_t o = 0; o < gp->n_output && st == TSR_OK; o++)
        st = gp->output[o]->name ? tsr_graph_add_output(sub, gp->output[o]->name)
                                 : tsr_error(TSR_ERR_PARSE, "output #%zu has no name", o);
    free(nested.captured);
    if (st != TSR_OK) {
        tsr_graph_destroy(sub);
        return st;
    }
    *graph_out = sub;
    return TSR_OK;
}

/* The node's inputs followed by the values its sub-graphs read from
 * outside (imp->captured) that are not constants: If's form (ops/control.c). */
static tsr_status capture_inputs(importer *imp, const Onnx__NodeProto *node, const char *label,
                                 const char ***inputs_out, int *n_out)
{
    imp->n_captured = 0;
    for (size_t a = 0; a < node->n_attribute; a++)
        if (node->attribute[a]->g)
            TSR_CHECK(capture_free_names(imp, node->attribute[a]->g));
    const char **inputs = tsr_calloc(node->n_input + (size_t)imp->n_captured + 1, sizeof *inputs);
    if (!inputs)
        return TSR_ERR_OUT_OF_MEMORY;
    int n = 0;
    for (size_t i = 0; i < node->n_input; i++)
        inputs[n++] = node->input[i];
    for (int c = 0; c < imp->n_captured; c++) {
        int v = tsr_graph_find_value(imp->g, imp->captured[c]);
        if (v < 0) {
            free(inputs);
            return tsr_error(TSR_ERR_NOT_FOUND,
                             "%s: a branch reads '%s', which is not defined before the node",
                             label, imp->captured[c]);
        }
        if (!imp->g->values[v].data)
            inputs[n++] = imp->captured[c];
    }
    *inputs_out = inputs;
    *n_out = n;
    return TSR_OK;
}

/* The branch an If with a constant cond takes, or NULL. */
static const Onnx__GraphProto *constant_if_branch(const importer *imp, const Onnx__NodeProto *node)
{
    if (strcmp(node->op_type, "If") != 0 || !is_default_domain(node->domain) || node->n_input < 1)
        return NULL;
    int v = tsr_graph_find_value(imp->g, node->input[0]);
    if (v < 0 || !imp->g->values[v].data || imp->g->values[v].dtype != TSR_BOOL)
        return NULL;
    tsr_tensor cond = tsr_value_tensor(&imp->g->values[v]);
    if (tsr_tensor_numel(&cond) != 1)
        return NULL;
    const char *want = ((const uint8_t *)imp->g->values[v].data)[0] ? "then_branch" : "else_branch";
    for (size_t a = 0; a < node->n_attribute; a++)
        if (node->attribute[a]->name && strcmp(node->attribute[a]->name, want) == 0)
            return node->attribute[a]->g;
    return NULL;
}

static tsr_status add_node(importer *imp, const Onnx__NodeProto *node, size_t index)
{
    char label[400];
    node_label(node, index, label, sizeof label);
    if (!node->op_type || !*node->op_type)
        return tsr_error(TSR_ERR_PARSE, "node #%zu has no op type", index);
    const char *domain = is_default_domain(node->domain) ? "" : node->domain;
    const tsr_op_def *op = tsr_op_find(domain, node->op_type);
    if (!op)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s: op '%s' in domain '%s' is unknown", label,
                         node->op_type, domain_label(domain));
    int64_t version;
    if (!domain_version(imp, domain, &version))
        return tsr_error(TSR_ERR_PARSE,
                         "%s uses domain '%s', which the model's opset_import does not list", label,
                         domain_label(domain));
    if (version < 1 || version > INT32_MAX)
        return tsr_error(TSR_ERR_PARSE, "%s: domain '%s' has version %" PRId64, label,
                         domain_label(domain), version);

    size_t n_attrs = node->n_attribute;
    tsr_attr *attrs = tsr_calloc(n_attrs + 1, sizeof *attrs);
    attr_scratch *scratch = tsr_calloc(n_attrs + 1, sizeof *scratch);
    const char **inputs = NULL;
    int n_inputs = (int)node->n_input;
    tsr_status st = TSR_OK;
    if (!attrs || !scratch) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto cleanup;
    }
    st = capture_inputs(imp, node, label, &inputs, &n_inputs);
    imp->taken_branch = constant_if_branch(imp, node);
    imp->loop = op == &tsr_op_Loop ? node : NULL;
    for (size_t a = 0; a < n_attrs && st == TSR_OK; a++)
        st = convert_attr(imp, label, node->attribute[a], &attrs[a], &scratch[a]);
    /* The body's last inputs are the outer values it reads (ops/control.c). */
    if (imp->loop)
        attrs[n_attrs++] = TSR_ATTR_I("outer_inputs", n_inputs - (int)node->n_input);
    if (st == TSR_OK && (node->n_input > INT32_MAX || node->n_output > INT32_MAX))
        st = tsr_error(TSR_ERR_PARSE, "%s has too many inputs or outputs", label);
    if (st == TSR_OK && is_training_form(imp, node, attrs, n_attrs))
        st = add_training_node(imp, node, label, attrs, n_attrs);
    else if (st == TSR_OK && node->n_input > TSR_MAX_NODE_IO && is_variadic_associative(op) &&
             node->n_output == 1)
        st = add_variadic_tree(imp, op, (int)version, node, (int)n_attrs, attrs);
    else if (st == TSR_OK)
        st = tsr_graph_add_node_op(imp->g, op, (int)version, node->name, n_inputs, inputs,
                                   (int)node->n_output,
                                   (const char *const *)node->output, (int)n_attrs, attrs);
cleanup:
    for (size_t a = 0; scratch && a < n_attrs; a++) {
        free(scratch[a].s);
        free(scratch[a].floats);
        tsr_shared_release(scratch[a].t.data);
        tsr_graph_destroy(scratch[a].graph);
    }
    imp->taken_branch = NULL;
    imp->loop = NULL;
    free(inputs);
    free(scratch);
    free(attrs);
    return st;
}

/* Every op the model uses that the op table lacks, named at once (with
 * its node count and first node) before any node is built, so that a user
 * learns everything that stops the model from one error. */
static tsr_status check_known_ops(const importer *imp)
{
    const Onnx__GraphProto *graph = imp->model->graph;
    char msg[900] = "";
    size_t len = 0;
    int n_unknown = 0;
    for (size_t n = 0; n < graph->n_node; n++) {
        const Onnx__NodeProto *node = graph->node[n];
        if (!node->op_type || !*node->op_type)
            continue;
        const char *domain = is_default_domain(node->domain) ? "" : node->domain;
        if (tsr_op_find(domain, node->op_type))
            continue;
        bool seen = false;
        for (size_t m = 0; m < n && !seen; m++) {
            const Onnx__NodeProto *prev = graph->node[m];
            seen = prev->op_type && strcmp(prev->op_type, node->op_type) == 0 &&
                   strcmp(domain_label(prev->domain), domain_label(domain)) == 0;
        }
        if (seen)
            continue;
        size_t count = 0;
        for (size_t m = n; m < graph->n_node; m++) {
            const Onnx__NodeProto *other = graph->node[m];
            count += other->op_type && strcmp(other->op_type, node->op_type) == 0 &&
                     strcmp(domain_label(other->domain), domain_label(domain)) == 0;
        }
        char label[400];
        node_label(node, n, label, sizeof label);
        if (len < sizeof msg)
            len += (size_t)snprintf(msg + len, sizeof msg - len,
                                    "%s'%s' in domain '%s' (%zu node%s, first %s)",
                                    n_unknown ? "; " : "", node->op_type, domain_label(domain),
                                    count, count == 1 ? "" : "s", label);
        n_unknown++;
    }
    if (!n_unknown)
        return TSR_OK;
    return tsr_error(TSR_ERR_UNSUPPORTED, "%d unknown op%s: %s", n_unknown,
                     n_unknown == 1 ? "" : "s", msg);
}

static tsr_status build_graph(importer *imp)
{
    const Onnx__GraphProto *graph = imp->model->graph;
    TSR_CHECK(check_opsets(imp));
    TSR_CHECK(check_known_ops(imp));
    TSR_CHECK(add_initializers(imp, graph));
    for (size_t i = 0; i < graph->n_input; i++)
        TSR_CHECK(add_input(imp, graph->input[i], i));
    for (size_t n = 0; n < graph->n_node; n++)
        TSR_CHECK(add_node(imp, graph->node[n], n));
    if (!graph->n_output)
        return tsr_error(TSR_ERR_PARSE, "the graph has no outputs");
    for (size_t o = 0; o < graph->n_output; o++) {
        const char *name = graph->output[o]->name;
        if (!name || !*name)
            return tsr_error(TSR_ERR_PARSE, "graph output #%zu has no name", o);
        TSR_CHECK(tsr_graph_add_output(imp->g, name));
    }
    tsr_graph_remove_dead(imp->g);
    return tsr_graph_verify(imp->g);
}

static tsr_status unpack(const void *data, size_t size, Onnx__ModelProto **model_out)
{
    *model_out = onnx__model_proto__unpack(NULL, size, data);
    if (!*model_out)
        return tsr_error(TSR_ERR_PARSE,
                         "not an ONNX model (protobuf could not parse its %zu bytes: the file is "
                         "truncated, corrupt or of another format)",
                         size);
    return TSR_OK;
}

/* Builds the graph of an unpacked model, then frees the model. */
static tsr_status import_model(Onnx__ModelProto *model, const char *base_dir,
                               tsr_graph **graph_out)
{
    if (!model->graph) {
        onnx__model_proto__free_unpacked(model, NULL);
        return tsr_error(TSR_ERR_PARSE, "not an ONNX model (it parses, but holds no graph)");
    }
    importer imp = {.model = model, .base_dir = base_dir};
    tsr_status st = tsr_graph_create(&imp.g);
    if (st == TSR_OK)
        st = build_graph(&imp);
    free(imp.captured);
    onnx__model_proto__free_unpacked(model, NULL);
    if (st != TSR_OK) {
        tsr_graph_destroy(imp.g);
        return st;
    }
    *graph_out = imp.g;
    return TSR_OK;
}

/* Reads a whole file; regular files are sized up front, anything else
 * (pipes) grows the buffer as it goes. */
static tsr_status read_file(const char *path, unsigned char **data_out, size_t *size_out)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return tsr_error(TSR_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return tsr_error(TSR_ERR_IO, "cannot stat '%s': %s", path, strerror(err));
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        return tsr_error(TSR_ERR_IO, "cannot read '%s': %s", path, strerror(EISDIR));
    }
    size_t cap = S_ISREG(sb.st_mode) ? (size_t)sb.st_size + 1 : 1 << 16, size = 0;
    unsigned char *buf = tsr_malloc(cap);
    tsr_status st = buf ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    while (st == TSR_OK) {
        if (size == cap) {
            unsigned char *bigger = tsr_realloc(buf, cap * 2);
            if (!bigger) {
                st = TSR_ERR_OUT_OF_MEMORY;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t got = read(fd, buf + size, cap - size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            st = tsr_error(TSR_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
        else if (got == 0)
            break;
        else
            size += (size_t)got;
    }
    close(fd);
    if (st != TSR_OK) {
        free(buf);
        return st;
    }
    *data_out = buf;
    *size_out = size;
    return TSR_OK;
}

tsr_status tsr_graph_load_onnx_buffer(const void *data, size_t size, const char *base_dir,
                                      tsr_graph **graph_out)
{
    if (!graph_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_load_onnx_buffer: graph_out is NULL");
    *graph_out = NULL;
    if (!data && size)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_load_onnx_buffer: data is NULL");
    if (!size)
        return tsr_error(TSR_ERR_PARSE, "not an ONNX model (the data is empty)");
    Onnx__ModelProto *model;
    TSR_CHECK(unpack(data, size, &model));
    return import_model(model, base_dir, graph_out);
}

tsr_status tsr_graph_load_onnx_file(const char *path, tsr_graph **graph_out)
{
    if (!graph_out || !path)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_load_onnx_file: NULL argument");
    *graph_out = NULL;
    unsigned char *data = NULL;
    size_t size = 0;
    TSR_CHECK(read_file(path, &data, &size));
    if (!size) {
        free(data);
        return tsr_error(TSR_ERR_PARSE, "'%s' is empty, not an ONNX model", path);
    }
    /* External data files live beside the model. */
    const char *slash = strrchr(path, '/');
    size_t dir_len = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *base_dir = tsr_malloc(dir_len + 1);
    if (!base_dir) {
        free(data);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    memcpy(base_dir, slash ? path : ".", dir_len);
    base_dir[dir_len] = '\0';
    /* The file's bytes are not needed once unpacked: free them before the
     * weights are decoded, so a big model is not held three times. */
    Onnx__ModelProto *model;
    tsr_status st = unpack(data, size, &model);
    free(data);
    if (st == TSR_OK)
        st = import_model(model, base_dir, graph_out);
    if (st != TSR_OK && st != TSR_ERR_OUT_OF_MEMORY)
        tsr_error_prefix("'%s': ", path);
    free(base_dir);
    return st;
}
