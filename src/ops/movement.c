/* PLACEHOLDER: replaced by the real op family. */
#include "ops/op.h"

static tsr_status todo_infer(tsr_infer_ctx *c)
{
    return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "%s is not implemented yet", c->node->op->name);
}

const tsr_op_def tsr_op_Transpose = {.name = "Transpose", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Concat = {.name = "Concat", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Split = {.name = "Split", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Slice = {.name = "Slice", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Gather = {.name = "Gather", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Pad = {.name = "Pad", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Tile = {.name = "Tile", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_ScatterND = {.name = "ScatterND", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
