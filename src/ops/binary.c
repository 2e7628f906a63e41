/* PLACEHOLDER: replaced by the real op family. */
#include "ops/op.h"

static tsr_status todo_infer(tsr_infer_ctx *c)
{
    return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "%s is not implemented yet", c->node->op->name);
}

const tsr_op_def tsr_op_Add = {.name = "Add", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Sub = {.name = "Sub", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Mul = {.name = "Mul", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Div = {.name = "Div", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Pow = {.name = "Pow", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Max = {.name = "Max", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Min = {.name = "Min", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Sum = {.name = "Sum", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Equal = {.name = "Equal", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Less = {.name = "Less", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Greater = {.name = "Greater", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Where = {.name = "Where", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
const tsr_op_def tsr_op_Mod = {.name = "Mod", .domain = "", .max_inputs = 64, .max_outputs = 64, .infer = todo_infer};
