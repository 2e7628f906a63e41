/* PLACEHOLDER: replaced by the real op family. */
#include "ops/op.h"

static tsr_status todo_infer(tsr_infer_ctx *c)
{
    return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "%s is not implemented yet", c->node->op->name);
}

const tsr_op_def tsr_op_Shape = {.name = "Shape", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Reshape = {.name = "Reshape", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Flatten = {.name = "Flatten", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Squeeze = {.name = "Squeeze", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Unsqueeze = {.name = "Unsqueeze", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Expand = {.name = "Expand", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Identity = {.name = "Identity", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Dropout = {.name = "Dropout", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
