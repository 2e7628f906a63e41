/* PLACEHOLDER: replaced by the real op family. */
#include "ops/op.h"

static tsr_status todo_infer(tsr_infer_ctx *c)
{
    return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "%s is not implemented yet", c->node->op->name);
}

const tsr_op_def tsr_op_Constant = {.name = "Constant", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_ConstantOfShape = {.name = "ConstantOfShape", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Cast = {.name = "Cast", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Range = {.name = "Range", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
