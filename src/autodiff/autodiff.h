/* Reverse-mode autodiff as a graph-to-graph transform, and the helpers a
 * gradient rule (tsr_op_def.grad) builds its nodes with.
 *
 * A rule runs once per forward node that lies between a differentiated
 * output and a wanted value. It reads the node and the incoming gradient of
 * each of its outputs, emits ordinary graph nodes (so that they are shape
 * inferred, folded and can be differentiated again) and contributes a
 * gradient to each input that wants one; contributions to one value are
 * summed. Values are referred to by name: names of existing values stay
 * valid for the whole transform. */
#ifndef TSR_AUTODIFF_H
#define TSR_AUTODIFF_H

#include "ops/op.h"

/* The opset of the default domain that every emitted node follows. */
#define TSR_GRAD_OPSET 17

/* The forward node being differentiated (re-read after each emit: the
 * node array may move). */
const tsr_node *tsr_grad_node(const tsr_grad_ctx *c);
/* Name of forward input i / output o, NULL for an omitted one. */
const char *tsr_grad_input(const tsr_grad_ctx *c, int i);
const char *tsr_grad_output(const tsr_grad_ctx *c, int o);
/* The value called `name` (NULL if none). The pointer is valid only until
 * the next emit or constant: copy what is needed across those. */
const tsr_value *tsr_grad_value(const tsr_grad_ctx *c, const char *name);
/* Incoming gradient of output o, NULL when it is zero. */
const char *tsr_grad_dy(const tsr_grad_ctx *c, int o);
/* Whether input i leads to a value whose gradient was asked for. */
bool tsr_grad_wants(const tsr_grad_ctx *c, int i);

/* The forward node's attributes in the builder's form (pointing into the
 * node), for backward ops that share its schema; returns the count. */
int tsr_grad_node_attrs(const tsr_grad_ctx *c, tsr_attr *attrs, int max);

/* Emits one node of `op` and returns the names of its outputs in outs. */
tsr_status tsr_grad_emit(tsr_grad_ctx *c, const tsr_op_def *op, int n_in, const char *const *ins,
                         int n_attrs, const tsr_attr *attrs, int n_out, const char **outs);
/* Single-output shorthands. */
tsr_status tsr_grad_unary(tsr_grad_ctx *c, const tsr_op_def *op, const char *x, const char **out);
tsr_status tsr_grad_binary(tsr_grad_ctx *c, const tsr_op_def *op, const char *a, const char *b,
                           const char **out);
/* A scalar constant of a float dtype; a 1-D int64 constant. */
tsr_status tsr_grad_scalar(tsr_grad_ctx *c, double value, tsr_dtype dtype, const char **out);
tsr_status tsr_grad_ints(tsr_grad_ctx *c, int n, const int64_t *vals, const char **out);
/* Shape(x) as an int64 value (a constant whenever x's shape is known). */
tsr_status tsr_grad_shape(tsr_grad_ctx *c, const char *x, const char **out);
/* g summed over the axes along which `like` was broadcast to g's shape,
 * so that the result has like's shape. */
tsr_status tsr_grad_sum_to(tsr_grad_ctx *c, const char *g, const char *like, const char **out);
/* Zeros of like's shape and dtype. */
tsr_status tsr_grad_zeros_like(tsr_grad_ctx *c, const char *like, const char **out);
/* 1 / (the product of x's sizes along the n axes) as a value of the float
 * dtype dt: a constant when those sizes are known (0 for an empty
 * product of zero), else computed at run time from x's shape (averages
 * over dims known only at run time). */
tsr_status tsr_grad_inverse_count(tsr_grad_ctx *c, const char *x, int n, const int *axes,
                                  tsr_dtype dt, const char **out);

/* Adds g to the gradient of forward input i (ignored unless wanted). */
tsr_status tsr_grad_contribute(tsr_grad_ctx *c, int i, const char *g);
/* The same after summing g down to input i's shape (broadcast inputs). */
tsr_status tsr_grad_contribute_sum(tsr_grad_ctx *c, int i, const char *g);

/* A clear TSR_ERR_UNSUPPORTED for a gradient that does not exist. */
tsr_status tsr_grad_unsupported(const tsr_grad_ctx *c, const char *fmt, ...) TSR_PRINTF(2, 3);

#endif
