/* The graph IR: values (edges) and nodes (ops), kept in topological order.
 * The graph owns every name, attribute and constant it holds. */
#ifndef TSR_IR_GRAPH_H
#define TSR_IR_GRAPH_H

#include "core/core.h"

typedef struct tsr_op_def tsr_op_def;

typedef struct tsr_value {
    char *name;
    tsr_dtype dtype; /* TSR_DTYPE_UNDEFINED until inferred */
    int rank;        /* -1 until inferred */
    int64_t dims[TSR_MAX_RANK];
    void *data;    /* constant contents (tsr_shared_alloc storage, one reference), or NULL */
    int producer;  /* index of the node writing it, -1 for inputs/constants */
    int n_uses;    /* how many node inputs and graph outputs read it */
    bool is_input; /* a graph input */
    /* A trainable constant (float initializers, tsr_graph_add_parameter):
     * never folded into other constants, so gradients can reach it and
     * its contents can change. Plans treat it as an ordinary constant. */
    bool is_param;
} tsr_value;

typedef struct tsr_node_attr {
    char *name;
    tsr_attr_type type;
    int64_t i;
    double f;
    char *s;
    size_t count;
    int64_t *ints;
    double *floats;
    tsr_tensor t; /* TSR_ATTR_TENSOR: t.data owned by the node */
    tsr_graph *graph; /* TSR_ATTR_GRAPH: owned by the node */
} tsr_node_attr;

#define TSR_MAX_NODE_IO 64

typedef struct tsr_node {
    char *name;
    const tsr_op_def *op;
    int opset; /* version of the op's domain the node was written against */
    int n_inputs;
    int *inputs; /* value indices, -1 for an omitted optional input */
    int n_outputs;
    int *outputs;
    int n_attrs;
    tsr_node_attr *attrs;
} tsr_node;

struct tsr_graph {
    tsr_value *values;
    int n_values, cap_values;
    tsr_node *nodes;
    int n_nodes, cap_nodes;
    int *inputs; /* value indices of graph inputs, in order */
    int n_inputs, cap_inputs;
    int *outputs;
    int n_outputs, cap_outputs;
    char **symbols; /* names of symbolic dims, TSR_DIM_SYM(k) -> symbols[k] */
    int n_symbols, cap_symbols;
    int *name_index; /* open-addressing hash of value names, -1 empty */
    int name_index_cap;
    int default_opset; /* for nodes built without an importer */
    /* Bytes (and FLOPs) beyond its constant inputs' bytes past which a
     * node is run by plans instead of folded; -1: no limit. */
    int64_t fold_limit;
    /* Ops defined by other ops (op.h's expand) expand wherever their
     * shapes allow, even those a backend could run whole (LSTM on oneDNN):
     * graphs to differentiate, whose gradients come from the expansion. */
    bool expand_all;
};

/* Index of the value named `name`, or -1. */
int tsr_graph_find_value(const tsr_graph *g, const char *name);
/* Adds a value with a new name; fails on a duplicate. */
tsr_status tsr_graph_new_value(tsr_graph *g, const char *name, int *index_out);
/* A name not used by any value yet, made from `stem`. */
tsr_status tsr_graph_unique_name(const tsr_graph *g, const char *stem, char *buf, size_t size);
/* Index of the symbol `name`, adding it if new. */
tsr_status tsr_graph_symbol(tsr_graph *g, const char *name, int *index_out);
/* Adds a node whose op is resolved already; `opset` as in tsr_node. */
tsr_status tsr_graph_add_node_op(tsr_graph *g, const tsr_op_def *op, int opset,
                                 const char *node_name, int n_inputs, const char *const *inputs,
                                 int n_outputs, const char *const *outputs, int n_attrs,
                                 const tsr_attr *attrs);
/* Adds src's constants, nodes and outputs to dst, which already has the
 * inputs (possibly with other shapes): nodes are re-inferred and folded. */
/* dst shares src's constants (no copies) and fold limit. With
 * freeze_params, parameters become plain constants (plans: everything
 * foldable within the limit is folded). */
tsr_status tsr_graph_replay(const tsr_graph *src, tsr_graph *dst, bool freeze_params);
/* Adds to dst a constant sharing src's value `val` (same name, no copy;
 * with freeze_params a parameter becomes a plain constant). */
tsr_status tsr_graph_share_constant(tsr_graph *dst, const tsr_value *val, bool freeze_params);
/* The same under another name (an If's branch inlined). */
tsr_status tsr_graph_share_constant_as(tsr_graph *dst, const char *name, const tsr_value *val,
                                       bool freeze_params);
/* Adds a copy of src's node `n` to dst, whose values it reads by name. */
tsr_status tsr_graph_replay_node(const tsr_graph *src, int n, tsr_graph *dst);
/* The same with src's value v named names[v] in dst (an If's branch inlined). */
tsr_status tsr_graph_replay_node_as(const tsr_graph *src, int n, tsr_graph *dst,
                                    const char *const *names);
/* Deep copy. */
tsr_status tsr_graph_clone(const tsr_graph *g, tsr_graph **out);
/* Deep copy with expand_all set: what autodiff differentiates. */
tsr_status tsr_graph_clone_expanded(const tsr_graph *g, tsr_graph **out);
/* Makes value `v` a constant holding a copy of `t` (shape and dtype too). */
tsr_status tsr_value_set_constant(tsr_value *v, const tsr_tensor *t);
/* A tsr_tensor view of a value with known shape (data may be NULL). */
tsr_tensor tsr_value_tensor(const tsr_value *v);
/* Removes nodes not needed for any graph output, and constants nobody
 * reads; recounts uses. Returns whether anything changed. */
bool tsr_graph_remove_dead(tsr_graph *g);
/* Recomputes producer and n_uses of every value. */
void tsr_graph_recount(tsr_graph *g);
/* Frees what a node owns (name, inputs, outputs, attributes), not the
 * node itself: for passes that take nodes out of a graph. */
void tsr_node_free(tsr_node *n);
/* A node's stored attributes in the builder's form (pointing into the
 * node), at most `max` of them; returns how many. */
int tsr_node_attr_views(const tsr_node *n, tsr_attr *attrs, int max);
/* "node 'name' (OpType)" for error messages. */
void tsr_node_describe(const tsr_node *n, char *buf, size_t size);

#endif
