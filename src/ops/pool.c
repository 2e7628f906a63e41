/* PLACEHOLDER: replaced by the real op family. */
#include "ops/op.h"

static tsr_status todo_infer(tsr_infer_ctx *c)
{
    return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "%s is not implemented yet", c->node->op->name);
}

const tsr_op_def tsr_op_MaxPool = {.name = "MaxPool", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_AveragePool = {.name = "AveragePool", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_GlobalAveragePool = {.name = "GlobalAveragePool", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_GlobalMaxPool = {.name = "GlobalMaxPool", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
