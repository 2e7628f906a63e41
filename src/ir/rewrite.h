/* Graph editing for the optimization passes. Each edit either completes
 * or, on failure, leaves the graph as it was; afterwards producer and
 * n_uses are up to date. Edits keep the nodes in topological order where
 * the conditions stated below hold, which the caller checks. Values that
 * an edit leaves without producer or reader stay until
 * tsr_graph_remove_dead. */
#ifndef TSR_IR_REWRITE_H
#define TSR_IR_REWRITE_H

#include "ops/op.h"

/* Whether value v is one of the graph's outputs. */
bool tsr_rewrite_is_output(const tsr_graph *g, int v);
/* The node reading value v when it is v's only use (one input of one node,
 * v not a graph output), else -1. */
int tsr_rewrite_sole_reader(const tsr_graph *g, int v);
/* Makes every node input that reads `from` read `to`. Graph outputs keep
 * their values (and so their names). `to` must be available before the
 * first reader of `from`. */
void tsr_rewrite_replace_uses(tsr_graph *g, int from, int to);
/* Takes node n out of the graph and frees it; later nodes move up by one.
 * Its outputs remain as values without a producer. */
void tsr_rewrite_remove_node(tsr_graph *g, int n);
/* Removes node n, a no-op whose output `out` holds exactly its input
 * `in`, so that out's readers read `in`. A graph output keeps its name:
 * when `out` is one, in's producer writes `out` instead, which needs `in`
 * to be computed by a node and not be a graph output itself. Returns
 * false, with the graph unchanged, when neither way works. */
bool tsr_rewrite_bypass(tsr_graph *g, int n, int in, int out);
/* Node n takes over the outputs of node `later` (n < later, same number
 * of outputs): `later` is removed and n moves to its place, so whatever
 * read `later` reads n. Valid when no node between them reads n's outputs
 * and everything n reads exists before `later`'s place. */
void tsr_rewrite_absorb(tsr_graph *g, int n, int later);
/* Adds a constant owned by the graph, named from `stem`, holding a copy
 * of t. */
tsr_status tsr_rewrite_add_constant(tsr_graph *g, const char *stem, const tsr_tensor *t,
                                    int *index_out);
/* Turns node n into an `op` node (opset as in tsr_node) with the given
 * inputs (-1 for omitted), keeping its name, outputs and attributes and
 * setting `extra` attributes on top (replacing those of the same name).
 * The new op must declare every attribute, and its inference must accept
 * the node and give every output the dtype and shape it had (unknown dims
 * may become known): otherwise an error and the node is unchanged. */
tsr_status tsr_rewrite_change_node(tsr_graph *g, int n, const tsr_op_def *op, int opset,
                                   int n_inputs, const int *inputs, int n_extra,
                                   const tsr_attr *extra);

#endif
