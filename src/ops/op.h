/* How an op is defined. Each op family file (conv.c, pool.c, ...) defines
 * one tsr_op_def per op, and op_table.h lists them all once. An op brings:
 * its schema (arity, attributes with ONNX's defaults), shape and dtype
 * inference, its reference kernel, its FLOP estimate, its locality class
 * for the depth-first scheduler and a slot for its gradient rule. */
#ifndef TSR_OPS_OP_H
#define TSR_OPS_OP_H

#include "ir/graph.h"

typedef enum tsr_locality {
    TSR_LOCALITY_COMPUTE,     /* conv, matmul: anchors, run by vendor libraries */
    TSR_LOCALITY_ELEMENTWISE, /* output element i reads input element i (with broadcast) */
    TSR_LOCALITY_WINDOW,      /* bounded spatial window: pooling, DPP */
    TSR_LOCALITY_REDUCTION,   /* reads a whole axis or image: softmax, global pooling */
    TSR_LOCALITY_MOVEMENT     /* reshapes, transposes, concatenation, gathers */
} tsr_locality;

typedef struct tsr_attr_def {
    const char *name;
    tsr_attr_type type;
    bool required;
    int64_t i;       /* default of an INT attribute */
    double f;        /* default of a FLOAT attribute */
    const char *s;   /* default of a STRING attribute */
} tsr_attr_def;

/* Inference sees, per input, dtype, rank, dims (maybe symbolic) and the
 * constant contents where known; it sets dtype, rank and dims of each
 * output. Inputs that were omitted are NULL. */
typedef struct tsr_infer_ctx {
    const tsr_graph *graph;
    const tsr_node *node;
    int n_inputs;
    const tsr_value *inputs[TSR_MAX_NODE_IO];
    int n_outputs;
    tsr_value *outputs[TSR_MAX_NODE_IO];
} tsr_infer_ctx;

/* How a tensor's elements are laid out in memory. dims always hold the
 * logical (ONNX) shape. Blocked layouts exist for rank-4 float tensors
 * [N, C, H, W]: stored as [N, ceil(C/b), H, W, b] (nChw16c, nChw8c), the
 * lanes past C in the last block zero-filled; every kernel that writes a
 * blocked tensor keeps them zero. */
typedef enum tsr_layout {
    TSR_LAYOUT_PLAIN = 0,
    TSR_LAYOUT_BLOCKED8,
    TSR_LAYOUT_BLOCKED16
} tsr_layout;
#define TSR_N_LAYOUTS 3

static inline int tsr_layout_block(tsr_layout l)
{
    return l == TSR_LAYOUT_BLOCKED16 ? 16 : l == TSR_LAYOUT_BLOCKED8 ? 8 : 1;
}
/* Bytes a tensor of this shape takes in this layout. */
size_t tsr_layout_bytes(const tsr_tensor *t, tsr_layout layout);
const char *tsr_layout_name(tsr_layout layout);

/* A kernel sees concrete tensors; omitted inputs are NULL. The reference
 * backend only ever sees plain layouts. */
typedef struct tsr_kernel_ctx {
    const tsr_node *node;
    int n_inputs;
    const tsr_tensor *inputs[TSR_MAX_NODE_IO];
    int n_outputs;
    tsr_tensor *outputs[TSR_MAX_NODE_IO];
    int threads;
    uint8_t input_layouts[TSR_MAX_NODE_IO]; /* tsr_layout of each input */
    uint8_t output_layouts[TSR_MAX_NODE_IO];
    void *device; /* the device context of the running backend's memory space (NULL: host) */
} tsr_kernel_ctx;

/* Gradient rules build graph nodes; autodiff defines the context. */
typedef struct tsr_grad_ctx tsr_grad_ctx;
typedef tsr_status (*tsr_grad_fn)(tsr_grad_ctx *ctx);

enum {
    /* The output depends only on the input's shape (Shape, Size): foldable
     * as soon as the shape is known. */
    TSR_OP_SHAPE_ONLY = 1 << 0,
    /* Never folded into a constant (random ops, huge outputs). */
    TSR_OP_NO_FOLD = 1 << 1
};

struct tsr_op_def {
    const char *name;
    const char *domain; /* "" for ONNX's default domain */
    int min_inputs, max_inputs;
    int min_outputs, max_outputs;
    const tsr_attr_def *attrs; /* ends with a {NULL} entry; NULL for none */
    tsr_locality locality;
    unsigned flags;
    tsr_status (*infer)(tsr_infer_ctx *ctx);
    tsr_status (*ref)(const tsr_kernel_ctx *ctx);
    /* Floating-point operations of one run at concrete shapes; NULL: none worth counting. */
    double (*flops)(const tsr_infer_ctx *ctx);
    tsr_grad_fn grad;
    /* Ops defined by other ops (LSTM, GRU, RNN): once the node's shapes
     * let expandable() say yes, the graph builder calls expand() instead of
     * adding the node; it adds nodes of other ops that write the node's
     * outputs under the names given. Until then (a symbolic sequence
     * length) the node stays, and the plan's replay at concrete shapes
     * expands it. NULL for ordinary ops. */
    bool (*expandable)(const tsr_infer_ctx *ctx);
    tsr_status (*expand)(tsr_graph *g, const tsr_node *node, const char *const *outputs);
    /* Ops whose output shape depends on their inputs' values (NonZero),
     * which inference leaves TSR_DIM_UNKNOWN: sets each output to the
     * largest shape the kernel can write at these input shapes. The kernel
     * then gets outputs of that shape and sets their dims to what it wrote,
     * packed C-ordered at the start (runtime/plan.c plans the rest of the
     * graph from them). NULL for ordinary ops. */
    tsr_status (*bound)(tsr_infer_ctx *ctx);
};

/* The registry: every op of op_table.h. */
const tsr_op_def *tsr_op_find(const char *domain, const char *name);
int tsr_op_count(void);
const tsr_op_def *tsr_op_at(int index);

#define TSR_OP(id) extern const tsr_op_def tsr_op_##id;
#include "ops/op_table.h"
#undef TSR_OP

/* Attribute access: the node's value, else the schema's default. Asking for
 * a name the schema does not declare is a bug in the op (asserted). */
int64_t tsr_attr_int(const tsr_node *n, const char *name);
double tsr_attr_float(const tsr_node *n, const char *name);
const char *tsr_attr_string(const tsr_node *n, const char *name);
/* Lists have no schema default: NULL and *count = 0 when absent. */
const int64_t *tsr_attr_ints(const tsr_node *n, const char *name, size_t *count);
const double *tsr_attr_floats(const tsr_node *n, const char *name, size_t *count);
const tsr_tensor *tsr_attr_tensor(const tsr_node *n, const char *name);
bool tsr_attr_has(const tsr_node *n, const char *name);

/* Helpers for op authors. */
tsr_status tsr_infer_error(const tsr_infer_ctx *c, tsr_status status, const char *fmt, ...)
    TSR_PRINTF(3, 4);
/* Fails unless input i has one of the dtypes in `mask` (bit dtype). */
#define TSR_DTYPE_BIT(t) (1u << (t))
#define TSR_FLOAT_TYPES (TSR_DTYPE_BIT(TSR_FLOAT32) | TSR_DTYPE_BIT(TSR_FLOAT64))
tsr_status tsr_infer_require_dtype(const tsr_infer_ctx *c, int input, unsigned mask);
/* Output i gets the given dtype and shape. */
void tsr_infer_set(tsr_infer_ctx *c, int output, tsr_dtype dtype, int rank, const int64_t *dims);
/* Reads a constant integer input (int64 or int32) into `vals`; false when
 * the input is absent or not constant. Fails on too many elements. */
bool tsr_infer_const_ints(const tsr_infer_ctx *c, int input, int64_t *vals, int max, int *count);
/* Same for a kernel's input tensor. */
tsr_status tsr_kernel_ints(const tsr_tensor *t, int64_t *vals, int max, int *count);
/* Element i of a float tensor as double, and the reverse. */
static inline double tsr_get_f(const tsr_tensor *t, int64_t i)
{
    return t->dtype == TSR_FLOAT64 ? ((const double *)t->data)[i] : ((const float *)t->data)[i];
}
static inline void tsr_set_f(tsr_tensor *t, int64_t i, double v)
{
    if (t->dtype == TSR_FLOAT64)
        ((double *)t->data)[i] = v;
    else
        ((float *)t->data)[i] = (float)v;
}

#endif
