/* The trainer: builds a training graph from a model (training-mode
 * BatchNorm and Dropout, the loss, its gradient with respect to every
 * trainable parameter), compiles it, and runs steps.
 *
 * Parameters are inputs of the training and inference graphs, so plans
 * never fold or pre-reorder them: the trainer owns their storage, feeds it
 * to every run as it is, and the optimizer's in-place updates are what the
 * next run reads. Gradients and running-statistic updates are outputs,
 * written into trainer-owned buffers. */
#include "core/random.h"
#include "ops/op.h"
#include "train/train_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NAME_LEN 512

typedef enum { GRAPH_TRAIN, GRAPH_EVAL, GRAPH_EVAL_LOSS } graph_mode;

typedef enum { ROLE_CONSTANT, ROLE_TRAINABLE, ROLE_BUFFER } param_role;

/* Inputs through which no gradient flows: shapes, sizes, pads, bounds. */
static bool non_differentiable_use(const tsr_node *n, int input)
{
    static const char *const ops[] = {"Resize",  "Upsample", "Pad",  "Clip",  "Slice",
                                      "Reshape", "Expand",   "Tile", "Range", "ConstantOfShape"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(n->op->name, ops[i]) == 0)
            return input >= 1 || strcmp(ops[i], "Range") == 0 ||
                   strcmp(ops[i], "ConstantOfShape") == 0;
    return false;
}

static bool is_onnx(const tsr_node *n, const char *name)
{
    return !*n->op->domain && strcmp(n->op->name, name) == 0;
}

static param_role classify(const tsr_graph *m, int v)
{
    const tsr_value *val = &m->values[v];
    if (!val->data || val->is_input || val->producer >= 0 || !tsr_dtype_is_float(val->dtype))
        return ROLE_CONSTANT;
    bool differentiable = false;
    for (int n = 0; n < m->n_nodes; n++) {
        const tsr_node *node = &m->nodes[n];
        for (int i = 0; i < node->n_inputs; i++) {
            if (node->inputs[i] != v)
                continue;
            if ((is_onnx(node, "BatchNormalization") || node->op == &tsr_op_BatchNormTrain) &&
                i >= 3)
                return ROLE_BUFFER;
            if (!non_differentiable_use(node, i))
                differentiable = true;
        }
    }
    return differentiable && val->is_param ? ROLE_TRAINABLE : ROLE_CONSTANT;
}

static int find_param(const tsr_trainer *t, const char *name)
{
    for (int i = 0; i < t->n_params; i++)
        if (strcmp(t->params[i].name, name) == 0)
            return i;
    return -1;
}

static tsr_status alloc_like(const tsr_tensor *like, void **out)
{
    size_t bytes = tsr_tensor_bytes(like);
    *out = tsr_aligned_alloc(bytes ? bytes : 1);
    if (!*out)
        return TSR_ERR_OUT_OF_MEMORY;
    memset(*out, 0, bytes);
    return TSR_OK;
}

static tsr_status add_param(tsr_trainer *t, const tsr_value *v, bool trainable)
{
    train_param *p = &t->params[t->n_params];
    memset(p, 0, sizeof *p);
    p->trainable = trainable;
    p->name = tsr_strdup(v->name);
    if (!p->name)
        return TSR_ERR_OUT_OF_MEMORY;
    t->n_params++;
    p->value = tsr_value_tensor(v);
    TSR_CHECK(alloc_like(&p->value, &p->value.data));
    memcpy(p->value.data, v->data, tsr_tensor_bytes(&p->value));
    if (!trainable) {
        p->update = NULL;
        return alloc_like(&p->value, &p->update);
    }
    p->grad = p->value;
    TSR_CHECK(alloc_like(&p->value, &p->grad.data));
    for (int s = 0; s < t->n_slots; s++)
        TSR_CHECK(alloc_like(&p->value, &p->slot[s]));
    if (t->opt.ema_decay > 0.0) {
        TSR_CHECK(alloc_like(&p->value, &p->ema));
        memcpy(p->ema, p->value.data, tsr_tensor_bytes(&p->value));
    }
    return TSR_OK;
}

static tsr_status collect_params(tsr_trainer *t, const tsr_graph *m)
{
    t->params = tsr_calloc((size_t)(m->n_values ? m->n_values : 1), sizeof *t->params);
    if (!t->params)
        return TSR_ERR_OUT_OF_MEMORY;
    for (int pass = 0; pass < 2; pass++)
        for (int v = 0; v < m->n_values; v++) {
            param_role role = classify(m, v);
            if (role == (pass == 0 ? ROLE_TRAINABLE : ROLE_BUFFER))
                TSR_CHECK(add_param(t, &m->values[v], pass == 0));
        }
    for (int i = 0; i < t->n_params; i++)
        t->n_trainable += t->params[i].trainable;
    if (!t->n_trainable)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "the model has no trainable parameters (float initializers that reach "
                         "an output through differentiable inputs)");
    return TSR_OK;
}

/* An input named like `v`, with v's dims (symbolic ones by name). When
 * drop_axis >= 0 that dim is left out. */
static tsr_status add_input_like(tsr_graph *g, const tsr_graph *m, const char *name,
                                 const tsr_value *v, tsr_dtype dtype, int drop_axis)
{
    int64_t dims[TSR_MAX_RANK];
    const char *names[TSR_MAX_RANK] = {0};
    int rank = 0;
    for (int d = 0; d < v->rank; d++) {
        if (d == drop_axis)
            continue;
        dims[rank] = tsr_dim_known(v->dims[d]) ? v->dims[d] : TSR_DIM_UNKNOWN;
        if (tsr_dim_is_sym(v->dims[d]))
            names[rank] = m->symbols[TSR_DIM_SYM_INDEX(v->dims[d])];
        rank++;
    }
    return tsr_graph_add_input(g, name, dtype, rank, dims, names);
}

typedef struct {
    char target[NAME_LEN], seed[NAME_LEN], loss[NAME_LEN];
    char **update_names; /* per param: the training graph's output of its new value */
} graph_names;

static tsr_status add_dropout(tsr_graph *g, const tsr_graph *m, const tsr_node *n,
                              const graph_names *names)
{
    double ratio = 0.5;
    if (n->op == &tsr_op_DropoutTrain) {
        ratio = tsr_attr_float(n, "ratio");
    } else if (n->opset < 12) {
        ratio = tsr_attr_float(n, "ratio");
    } else if (n->n_inputs > 1 && n->inputs[1] >= 0) {
        const tsr_value *r = &m->values[n->inputs[1]];
        if (!r->data || tsr_shape_numel(r->rank, r->dims) != 1)
            return tsr_error(TSR_ERR_UNSUPPORTED,
                             "Dropout node '%s': training needs a constant scalar ratio", n->name);
        tsr_tensor rt = tsr_value_tensor(r);
        ratio = tsr_get_f(&rt, 0);
    }
    if (n->n_outputs > 1 && n->outputs[1] >= 0 && m->values[n->outputs[1]].n_uses > 0)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s node '%s': its mask output is used, which training does not "
                         "support",
                         n->op->name, n->name);
    char mask[NAME_LEN];
    snprintf(mask, sizeof mask, "%s__mask", m->values[n->outputs[0]].name);
    TSR_CHECK(tsr_graph_unique_name(g, mask, mask, sizeof mask));
    const char *ins[2] = {m->values[n->inputs[0]].name, names->seed};
    const char *outs[2] = {m->values[n->outputs[0]].name, mask};
    tsr_attr attr = TSR_ATTR_F("ratio", ratio);
    return tsr_graph_add_node_op(g, &tsr_op_DropoutTrain, 1, n->name, 2, ins, 2, outs, 1, &attr);
}

/* A model imported from a training-mode export holds BatchNormTrain and
 * DropoutTrain already. The trainer makes its own outputs for them (the
 * running-statistic updates it writes back), so the model's must be unused. */
static tsr_status check_extra_outputs_unused(const tsr_graph *m, const tsr_node *n)
{
    for (int o = 1; o < n->n_outputs; o++)
        if (n->outputs[o] >= 0 && m->values[n->outputs[o]].n_uses > 0)
            return tsr_error(TSR_ERR_UNSUPPORTED,
                             "%s node '%s': its output '%s' is used, which training does not "
                             "support (only the running-statistic updates it makes itself)",
                             n->op->name, n->name, m->values[n->outputs[o]].name);
    return TSR_OK;
}

/* Inference form of a training op, for the evaluation plan: BatchNormTrain
 * becomes BatchNormalization with the running statistics, DropoutTrain an
 * Identity. */
static tsr_status add_inference_form(tsr_graph *g, const tsr_graph *m, const tsr_node *n)
{
    TSR_CHECK(check_extra_outputs_unused(m, n));
    const char *ins[5], *y = m->values[n->outputs[0]].name;
    for (int i = 0; i < n->n_inputs; i++)
        ins[i] = m->values[n->inputs[i]].name;
    if (n->op == &tsr_op_DropoutTrain)
        return tsr_graph_add_node_op(g, &tsr_op_Identity, 1, n->name, 1, ins, 1, &y, 0, NULL);
    tsr_attr attrs[2] = {TSR_ATTR_F("epsilon", tsr_attr_float(n, "epsilon")),
                         TSR_ATTR_F("momentum", tsr_attr_float(n, "momentum"))};
    return tsr_graph_add_node_op(g, &tsr_op_BatchNormalization, g->default_opset, n->name, 5, ins,
                                 1, &y, 2, attrs);
}

static tsr_status add_batchnorm_train(tsr_trainer *t, tsr_graph *g, const tsr_graph *m,
                                      const tsr_node *n, graph_names *names)
{
    if (n->op == &tsr_op_BatchNormTrain)
        TSR_CHECK(check_extra_outputs_unused(m, n));
    else if (n->n_outputs > 1)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "BatchNormalization node '%s' already has training outputs", n->name);
    const char *ins[5];
    for (int i = 0; i < 5; i++)
        ins[i] = m->values[n->inputs[i]].name;
    int stat[2] = {find_param(t, ins[3]), find_param(t, ins[4])};
    for (int k = 0; k < 2; k++)
        if (stat[k] < 0 || names->update_names[stat[k]])
            return tsr_error(TSR_ERR_UNSUPPORTED,
                             "BatchNormalization node '%s': its running statistic '%s' must be "
                             "an initializer of its own to train",
                             n->name, ins[3 + k]);
    const char *y = m->values[n->outputs[0]].name;
    static const char *const suffix[4] = {"running_mean", "running_var", "saved_mean",
                                          "saved_inv_std"};
    char bufs[4][NAME_LEN];
    const char *outs[5] = {y};
    for (int o = 0; o < 4; o++) {
        char stem[NAME_LEN];
        snprintf(stem, sizeof stem, "%s__%s", y, suffix[o]);
        TSR_CHECK(tsr_graph_unique_name(g, stem, bufs[o], NAME_LEN));
        outs[o + 1] = bufs[o];
    }
    tsr_attr attrs[2] = {TSR_ATTR_F("epsilon", tsr_attr_float(n, "epsilon")),
                         TSR_ATTR_F("momentum", tsr_attr_float(n, "momentum"))};
    TSR_CHECK(
        tsr_graph_add_node_op(g, &tsr_op_BatchNormTrain, 1, n->name, 5, ins, 5, outs, 2, attrs));
    for (int k = 0; k < 2; k++) {
        names->update_names[stat[k]] = tsr_strdup(bufs[k]);
        if (!names->update_names[stat[k]])
            return TSR_ERR_OUT_OF_MEMORY;
    }
    return TSR_OK;
}

static tsr_status add_nodes(tsr_trainer *t, tsr_graph *g, const tsr_graph *m, graph_mode mode,
                            graph_names *names)
{
    for (int ni = 0; ni < m->n_nodes; ni++) {
        const tsr_node *n = &m->nodes[ni];
        bool train_op = n->op == &tsr_op_BatchNormTrain || n->op == &tsr_op_DropoutTrain;
        if (mode == GRAPH_TRAIN &&
            (is_onnx(n, "BatchNormalization") || n->op == &tsr_op_BatchNormTrain)) {
            TSR_CHECK(add_batchnorm_train(t, g, m, n, names));
            continue;
        }
        if (mode == GRAPH_TRAIN && (is_onnx(n, "Dropout") || n->op == &tsr_op_DropoutTrain)) {
            TSR_CHECK(add_dropout(g, m, n, names));
            continue;
        }
        if (train_op) {
            TSR_CHECK(add_inference_form(g, m, n));
            continue;
        }
        const char *ins[TSR_MAX_NODE_IO], *outs[TSR_MAX_NODE_IO];
        for (int i = 0; i < n->n_inputs; i++)
            ins[i] = n->inputs[i] >= 0 ? m->values[n->inputs[i]].name : "";
        for (int o = 0; o < n->n_outputs; o++)
            outs[o] = m->values[n->outputs[o]].name;
        tsr_attr attrs[64];
        int n_attrs = tsr_node_attr_views(n, attrs, 64);
        TSR_CHECK(tsr_graph_add_node_op(g, n->op, n->opset, n->name, n->n_inputs, ins, n->n_outputs,
                                        outs, n_attrs, attrs));
    }
    return TSR_OK;
}

static tsr_status add_loss(const tsr_trainer *t, tsr_graph *g, const graph_names *names)
{
    const char *ins[2] = {t->loss_output, names->target};
    const char *red = t->loss.reduction == TSR_REDUCTION_SUM ? "sum" : "mean";
    const char *out = names->loss;
    if (t->loss.kind == TSR_LOSS_SOFTMAX_CROSS_ENTROPY) {
        tsr_attr attrs[2] = {TSR_ATTR_S("reduction", red),
                             TSR_ATTR_F("label_smoothing", t->loss.label_smoothing)};
        return tsr_graph_add_node_op(g, &tsr_op_SoftmaxCrossEntropy, 1, "loss", 2, ins, 1, &out, 2,
                                     attrs);
    }
    const char *kind = t->loss.kind == TSR_LOSS_MSE  ? "mse"
                       : t->loss.kind == TSR_LOSS_L1 ? "l1"
                                                     : "huber";
    tsr_attr attrs[3] = {TSR_ATTR_S("kind", kind), TSR_ATTR_F("delta", t->loss.huber_delta),
                         TSR_ATTR_S("reduction", red)};
    return tsr_graph_add_node_op(g, &tsr_op_RegressionLoss, 1, "loss", 2, ins, 1, &out, 3, attrs);
}

static tsr_status build_graph(tsr_trainer *t, const tsr_graph *m, graph_mode mode,
                              graph_names *names, tsr_graph **out)
{
    tsr_graph *g = NULL;
    TSR_CHECK(tsr_graph_create(&g));
    tsr_status st = TSR_OK;
    g->default_opset = m->default_opset;
    for (int i = 0; i < m->n_inputs && st == TSR_OK; i++) {
        const tsr_value *v = &m->values[m->inputs[i]];
        st = add_input_like(g, m, v->name, v, v->dtype, -1);
    }
    for (int i = 0; i < t->n_params && st == TSR_OK; i++) {
        const tsr_tensor *p = &t->params[i].value;
        st = tsr_graph_add_input(g, t->params[i].name, p->dtype, p->rank, p->dims, NULL);
    }
    const tsr_value *y = &m->values[tsr_graph_find_value(m, t->loss_output)];
    if (st == TSR_OK && mode != GRAPH_EVAL) {
        bool ce = t->loss.kind == TSR_LOSS_SOFTMAX_CROSS_ENTROPY;
        st = add_input_like(g, m, names->target, y, ce ? TSR_INT64 : y->dtype, ce ? 1 : -1);
    }
    if (st == TSR_OK && mode == GRAPH_TRAIN && t->has_dropout) {
        int64_t one = 1;
        st = tsr_graph_add_input(g, names->seed, TSR_INT64, 1, &one, NULL);
    }
    for (int v = 0; v < m->n_values && st == TSR_OK; v++) {
        const tsr_value *val = &m->values[v];
        if (val->data && !val->is_input && val->producer < 0 && val->n_uses > 0 &&
            find_param(t, val->name) < 0) {
            tsr_tensor c = tsr_value_tensor(val);
            st = tsr_graph_add_constant(g, val->name, &c);
        }
    }
    if (st == TSR_OK)
        st = add_nodes(t, g, m, mode, names);
    if (st == TSR_OK && mode != GRAPH_EVAL)
        st = add_loss(t, g, names);
    if (st == TSR_OK && mode == GRAPH_TRAIN) {
        st = tsr_graph_add_output(g, names->loss);
        for (int i = 0; i < t->n_params && st == TSR_OK; i++)
            if (!t->params[i].trainable)
                st = tsr_graph_add_output(g, names->update_names[i]);
    } else if (st == TSR_OK) {
        st = tsr_graph_add_output(g, t->loss_output);
        if (st == TSR_OK && mode == GRAPH_EVAL_LOSS)
            st = tsr_graph_add_output(g, names->loss);
    }
    if (st != TSR_OK) {
        tsr_graph_destroy(g);
        return st;
    }
    *out = g;
    return TSR_OK;
}

/* PyTorch's exporter keeps one copy of initializers with equal contents and
 * gives the others as Identity nodes of it (a freshly initialized network's
 * BatchNorm scales, shifts and statistics all become one tensor each). The
 * model had separate parameters: each Identity of a parameter becomes a
 * parameter of its own again, starting from the same value. */
static void untie_parameters(tsr_graph *g)
{
    int kept = 0;
    for (int n = 0; n < g->n_nodes; n++) {
        tsr_node *node = &g->nodes[n];
        int in = node->n_inputs == 1 ? node->inputs[0] : -1;
        if (is_onnx(node, "Identity") && in >= 0 && g->values[in].is_param && g->values[in].data &&
            tsr_dtype_is_float(g->values[in].dtype)) {
            tsr_value *out = &g->values[node->outputs[0]];
            bool is_output = false;
            for (int o = 0; o < g->n_outputs; o++)
                is_output |= g->outputs[o] == node->outputs[0];
            if (!is_output) {
                tsr_shared_retain(g->values[in].data);
                out->data = g->values[in].data;
                out->is_param = true;
                tsr_node_free(node);
                continue;
            }
        }
        g->nodes[kept++] = *node;
    }
    g->n_nodes = kept;
    tsr_graph_recount(g);
    tsr_graph_remove_dead(g);
}

static tsr_status check_loss_options(const tsr_loss_options *l, const tsr_graph *m,
                                     const char **output)
{
    if (l->kind < TSR_LOSS_SOFTMAX_CROSS_ENTROPY || l->kind > TSR_LOSS_HUBER)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "loss: unknown kind %d", (int)l->kind);
    if (l->reduction != TSR_REDUCTION_MEAN && l->reduction != TSR_REDUCTION_SUM)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "loss: unknown reduction %d", (int)l->reduction);
    if (!(l->label_smoothing >= 0.0 && l->label_smoothing < 1.0))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "loss: label_smoothing must be in [0, 1), got %g", l->label_smoothing);
    if (l->kind == TSR_LOSS_HUBER && !(l->huber_delta > 0.0))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "loss: huber_delta must be > 0, got %g",
                         l->huber_delta);
    if (m->n_outputs < 1)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "the model has no outputs");
    *output = l->output ? l->output : m->values[m->outputs[0]].name;
    int v = tsr_graph_find_value(m, *output);
    bool is_output = false;
    for (int o = 0; o < m->n_outputs; o++)
        is_output |= m->outputs[o] == v;
    if (v < 0 || !is_output)
        return tsr_error(TSR_ERR_NOT_FOUND, "loss: the model has no output '%s'", *output);
    const tsr_value *y = &m->values[v];
    if (!tsr_dtype_is_float(y->dtype))
        return tsr_error(TSR_ERR_DTYPE, "loss: output '%s' is %s, not float", *output,
                         tsr_dtype_name(y->dtype));
    if (y->rank < 0)
        return tsr_error(TSR_ERR_SHAPE, "loss: output '%s' has an unknown rank", *output);
    if (l->kind == TSR_LOSS_SOFTMAX_CROSS_ENTROPY && y->rank < 2)
        return tsr_error(TSR_ERR_SHAPE,
                         "loss: cross-entropy needs logits of rank >= 2 (N, C, ...), '%s' has "
                         "rank %d",
                         *output, y->rank);
    return TSR_OK;
}

static tsr_status unique_name(const tsr_graph *m, const char *stem, char *buf)
{
    return tsr_graph_unique_name(m, stem, buf, NAME_LEN);
}

static tsr_status alloc_io(tsr_tensor **arr, int n)
{
    *arr = tsr_calloc((size_t)(n ? n : 1), sizeof **arr);
    return *arr ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
}

/* The training graph, differentiated, and its plan. */
static tsr_status build_plans(tsr_trainer *t, const tsr_graph *m, const tsr_compile_options *co)
{
    graph_names names = {0};
    tsr_graph *train = NULL, *grad = NULL, *eval = NULL, *eval_loss = NULL;
    const char **wrt = NULL;
    tsr_status st;
    names.update_names = tsr_calloc((size_t)t->n_params, sizeof *names.update_names);
    wrt = tsr_calloc((size_t)t->n_trainable, sizeof *wrt);
    if (!names.update_names || !wrt) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto done;
    }
    if ((st = unique_name(m, "target", names.target)) != TSR_OK ||
        (st = unique_name(m, "dropout_seed", names.seed)) != TSR_OK ||
        (st = unique_name(m, "loss", names.loss)) != TSR_OK)
        goto done;
    if ((st = build_graph(t, m, GRAPH_TRAIN, &names, &train)) != TSR_OK)
        goto done;
    for (int i = 0; i < t->n_trainable; i++)
        wrt[i] = t->params[i].name;
    const char *loss = names.loss;
    if ((st = tsr_graph_gradient(train, 1, &loss, t->n_trainable, wrt, &grad)) != TSR_OK ||
        (st = tsr_plan_create(grad, co, &t->train_plan)) != TSR_OK)
        goto done;
    t->n_train_in = grad->n_inputs;
    t->n_train_out = grad->n_outputs;
    if ((st = build_graph(t, m, GRAPH_EVAL, &names, &eval)) != TSR_OK ||
        (st = build_graph(t, m, GRAPH_EVAL_LOSS, &names, &eval_loss)) != TSR_OK ||
        (st = tsr_plan_create(eval, co, &t->eval_plan)) != TSR_OK ||
        (st = tsr_plan_create(eval_loss, co, &t->eval_loss_plan)) != TSR_OK)
        goto done;
    t->n_eval_in = eval_loss->n_inputs;
    if ((st = alloc_io(&t->train_in, t->n_train_in)) != TSR_OK ||
        (st = alloc_io(&t->train_out, t->n_train_out)) != TSR_OK ||
        (st = alloc_io(&t->eval_in, t->n_eval_in)) != TSR_OK ||
        (st = alloc_io(&t->eval_out, 2)) != TSR_OK)
        goto done;
done:
    if (names.update_names)
        for (int i = 0; i < t->n_params; i++)
            free(names.update_names[i]);
    free(names.update_names);
    free(wrt);
    tsr_graph_destroy(train);
    tsr_graph_destroy(grad);
    tsr_graph_destroy(eval);
    tsr_graph_destroy(eval_loss);
    return st;
}

void tsr_trainer_destroy(tsr_trainer *t)
{
    if (!t)
        return;
    tsr_plan_destroy(t->train_plan);
    tsr_plan_destroy(t->eval_plan);
    tsr_plan_destroy(t->eval_loss_plan);
    for (int i = 0; i < t->n_params; i++) {
        train_param *p = &t->params[i];
        free(p->name);
        tsr_aligned_free(p->value.data);
        tsr_aligned_free(p->grad.data);
        for (int s = 0; s < 3; s++)
            tsr_aligned_free(p->slot[s]);
        tsr_aligned_free(p->ema);
        tsr_aligned_free(p->update);
    }
    free(t->params);
    for (int g = 0; g < TSR_MAX_PARAM_GROUPS; g++)
        free(t->patterns[g]);
    free(t->loss_output);
    free(t->train_in);
    free(t->train_out);
    free(t->eval_in);
    free(t->eval_out);
    free(t);
}

static tsr_status trainer_create(const tsr_graph *model, const tsr_loss_options *loss,
                                 const tsr_optimizer_options *optimizer,
                                 const tsr_compile_options *compile, uint64_t seed,
                                 const char *output, tsr_trainer **trainer_out);

tsr_status tsr_trainer_create(const tsr_graph *model, const tsr_loss_options *loss,
                              const tsr_optimizer_options *optimizer,
                              const tsr_compile_options *compile, uint64_t seed,
                              tsr_trainer **trainer_out)
{
    if (!model || !loss || !optimizer || !trainer_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_trainer_create: model, loss, optimizer and trainer_out are required");
    *trainer_out = NULL;
    const char *output = NULL;
    TSR_CHECK(check_loss_options(loss, model, &output));
    tsr_graph *untied = NULL;
    TSR_CHECK(tsr_graph_clone(model, &untied));
    untie_parameters(untied);
    tsr_status st = trainer_create(untied, loss, optimizer, compile, seed, output, trainer_out);
    tsr_graph_destroy(untied);
    return st;
}

static tsr_status trainer_create(const tsr_graph *model, const tsr_loss_options *loss,
                                 const tsr_optimizer_options *optimizer,
                                 const tsr_compile_options *compile, uint64_t seed,
                                 const char *output, tsr_trainer **trainer_out)
{
    TSR_CHECK(tsr_optimizer_validate(optimizer));
    tsr_trainer *t = tsr_calloc(1, sizeof *t);
    if (!t)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = TSR_OK;
    t->loss = *loss;
    t->opt = *optimizer;
    t->loss.output = NULL;
    t->loss_output = tsr_strdup(output);
    if (!t->loss_output)
        st = TSR_ERR_OUT_OF_MEMORY;
    for (int g = 0; g < t->opt.n_groups && st == TSR_OK; g++) {
        if (t->opt.groups[g].pattern && !(t->patterns[g] = tsr_strdup(t->opt.groups[g].pattern)))
            st = TSR_ERR_OUT_OF_MEMORY;
        t->opt.groups[g].pattern = NULL;
    }
    if (st != TSR_OK)
        goto fail;
    t->dtype = model->values[tsr_graph_find_value(model, output)].dtype;
    t->threads = tsr_thread_count(compile ? compile->threads : 0);
    t->n_model_inputs = model->n_inputs;
    t->n_slots = tsr_optimizer_slots(&t->opt);
    t->seed = seed;
    t->lr = t->opt.lr;
    t->plateau_best = INFINITY;
    for (int n = 0; n < model->n_nodes; n++)
        t->has_dropout |=
            is_onnx(&model->nodes[n], "Dropout") || model->nodes[n].op == &tsr_op_DropoutTrain;
    if ((st = collect_params(t, model)) != TSR_OK)
        goto fail;
    tsr_optimizer_assign_groups(t);
    if ((st = build_plans(t, model, compile)) != TSR_OK)
        goto fail;
    *trainer_out = t;
    return TSR_OK;
fail:
    tsr_trainer_destroy(t);
    return st;
}

static tsr_status check_batch(const tsr_trainer *t, int n_inputs, const tsr_tensor *inputs)
{
    if (!t)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "trainer is NULL");
    if (n_inputs != t->n_model_inputs || (n_inputs && !inputs))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "the model has %d inputs, %d were given",
                         t->n_model_inputs, n_inputs);
    return TSR_OK;
}

tsr_status tsr_trainer_step(tsr_trainer *t, int n_inputs, const tsr_tensor *inputs,
                            const tsr_tensor *target, double *loss_out)
{
    TSR_CHECK(check_batch(t, n_inputs, inputs));
    if (!target)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_trainer_step: target is NULL");
    int k = 0;
    for (int i = 0; i < n_inputs; i++)
        t->train_in[k++] = inputs[i];
    for (int i = 0; i < t->n_params; i++)
        t->train_in[k++] = t->params[i].value;
    t->train_in[k++] = *target;
    t->dropout_seed = (int64_t)(tsr_random_hash(t->seed ^ tsr_random_hash(t->rng_counter)) >> 1);
    if (t->has_dropout)
        t->train_in[k++] =
            (tsr_tensor){.dtype = TSR_INT64, .rank = 1, .dims = {1}, .data = &t->dropout_seed};
    double one_d = 1.0, loss_d = 0.0;
    float one_f = 1.0f, loss_f = 0.0f;
    bool f32 = t->dtype == TSR_FLOAT32;
    t->train_in[k++] =
        (tsr_tensor){.dtype = t->dtype, .rank = 0, .data = f32 ? (void *)&one_f : &one_d};
    if (k != t->n_train_in)
        return tsr_error(TSR_ERR_INTERNAL, "training plan has %d inputs, the trainer fed %d",
                         t->n_train_in, k);
    int o = 0;
    t->train_out[o++] =
        (tsr_tensor){.dtype = t->dtype, .rank = 0, .data = f32 ? (void *)&loss_f : &loss_d};
    for (int i = 0; i < t->n_params; i++)
        if (!t->params[i].trainable) {
            t->train_out[o] = t->params[i].value;
            t->train_out[o++].data = t->params[i].update;
        }
    for (int i = 0; i < t->n_trainable; i++)
        t->train_out[o++] = t->params[i].grad;
    TSR_CHECK(
        tsr_plan_run(t->train_plan, t->n_train_in, t->train_in, t->n_train_out, t->train_out));
    t->rng_counter++;
    for (int i = 0; i < t->n_params; i++)
        if (!t->params[i].trainable)
            memcpy(t->params[i].value.data, t->params[i].update,
                   tsr_tensor_bytes(&t->params[i].value));
    tsr_optimizer_apply(t);
    t->steps++;
    if (t->opt.schedule_per_step &&
        (t->opt.schedule == TSR_SCHEDULE_STEP || t->opt.schedule == TSR_SCHEDULE_COSINE)) {
        t->schedule_t++;
        t->lr = tsr_schedule_lr(t);
    }
    if (loss_out)
        *loss_out = f32 ? loss_f : loss_d;
    return TSR_OK;
}

static void fill_eval_inputs(tsr_trainer *t, int n_inputs, const tsr_tensor *inputs)
{
    int k = 0;
    for (int i = 0; i < n_inputs; i++)
        t->eval_in[k++] = inputs[i];
    for (int i = 0; i < t->n_params; i++) {
        t->eval_in[k] = t->params[i].value;
        if (t->use_ema && t->params[i].ema)
            t->eval_in[k].data = t->params[i].ema;
        k++;
    }
}

tsr_status tsr_trainer_output_desc(tsr_trainer *t, int n_inputs, const tsr_tensor *inputs,
                                   tsr_tensor *desc_out)
{
    TSR_CHECK(check_batch(t, n_inputs, inputs));
    if (!desc_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_trainer_output_desc: desc_out is NULL");
    fill_eval_inputs(t, n_inputs, inputs);
    TSR_CHECK(tsr_plan_reshape(t->eval_plan, n_inputs + t->n_params, t->eval_in));
    return tsr_plan_output_desc(t->eval_plan, 0, desc_out);
}

tsr_status tsr_trainer_evaluate(tsr_trainer *t, int n_inputs, const tsr_tensor *inputs,
                                const tsr_tensor *target, double *loss_out, tsr_tensor *output)
{
    TSR_CHECK(check_batch(t, n_inputs, inputs));
    if (!target && loss_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_trainer_evaluate: a loss needs a target");
    fill_eval_inputs(t, n_inputs, inputs);
    int n_in = n_inputs + t->n_params;
    tsr_plan *plan = target ? t->eval_loss_plan : t->eval_plan;
    if (target)
        t->eval_in[n_in++] = *target;
    TSR_CHECK(tsr_plan_reshape(plan, n_in, t->eval_in));
    tsr_tensor desc;
    TSR_CHECK(tsr_plan_output_desc(plan, 0, &desc));
    void *scratch = NULL;
    if (!output) {
        scratch = tsr_aligned_alloc(tsr_tensor_bytes(&desc) + 1);
        if (!scratch)
            return TSR_ERR_OUT_OF_MEMORY;
        desc.data = scratch;
    }
    double loss_d = 0.0;
    float loss_f = 0.0f;
    bool f32 = t->dtype == TSR_FLOAT32;
    t->eval_out[0] = output ? *output : desc;
    t->eval_out[1] =
        (tsr_tensor){.dtype = t->dtype, .rank = 0, .data = f32 ? (void *)&loss_f : &loss_d};
    tsr_status st = tsr_plan_run(plan, n_in, t->eval_in, target ? 2 : 1, t->eval_out);
    tsr_aligned_free(scratch);
    TSR_CHECK(st);
    tsr_plan_stats stats;
    if (tsr_plan_get_stats(plan, &stats) == TSR_OK && stats.arena_bytes > t->eval_arena_bytes)
        t->eval_arena_bytes = stats.arena_bytes;
    if (loss_out)
        *loss_out = f32 ? loss_f : loss_d;
    return TSR_OK;
}

tsr_status tsr_trainer_epoch_end(tsr_trainer *t, double metric)
{
    if (!t)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "trainer is NULL");
    const tsr_optimizer_options *o = &t->opt;
    if (o->schedule == TSR_SCHEDULE_PLATEAU) {
        if (isnan(metric))
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "the plateau schedule needs a metric at each epoch end, got NaN");
        if (metric < t->plateau_best * (1.0 - o->threshold)) {
            t->plateau_best = metric;
            t->plateau_bad = 0;
        } else if (++t->plateau_bad > o->patience) {
            double lr = t->lr * o->factor;
            t->lr = lr > o->min_lr ? lr : o->min_lr;
            t->plateau_bad = 0;
        }
    } else if (!o->schedule_per_step && o->schedule != TSR_SCHEDULE_NONE) {
        t->schedule_t++;
        t->lr = tsr_schedule_lr(t);
    }
    t->epochs++;
    return TSR_OK;
}

double tsr_trainer_lr(const tsr_trainer *t)
{
    return t ? t->lr : 0.0;
}
int64_t tsr_trainer_step_count(const tsr_trainer *t)
{
    return t ? t->steps : 0;
}
int64_t tsr_trainer_epoch_count(const tsr_trainer *t)
{
    return t ? t->epochs : 0;
}
int tsr_trainer_num_params(const tsr_trainer *t)
{
    return t ? t->n_params : 0;
}

tsr_status tsr_trainer_param_info(const tsr_trainer *t, int index, tsr_trainer_param *out)
{
    if (!t || !out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_trainer_param_info: NULL argument");
    if (index < 0 || index >= t->n_params)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "parameter index %d out of range (%d)", index,
                         t->n_params);
    const train_param *p = &t->params[index];
    out->name = p->name;
    out->trainable = p->trainable;
    out->value = p->value;
    return TSR_OK;
}

static tsr_status lookup(const tsr_trainer *t, const char *name, const tsr_tensor *v, int *index)
{
    if (!t || !name || !v)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "trainer, name and tensor are required");
    *index = find_param(t, name);
    if (*index < 0)
        return tsr_error(TSR_ERR_NOT_FOUND, "the trainer has no parameter '%s'", name);
    char what[256];
    snprintf(what, sizeof what, "parameter '%.200s'", name);
    TSR_CHECK(tsr_tensor_require_host(v, what));
    const tsr_tensor *p = &t->params[*index].value;
    bool same = v->dtype == p->dtype && v->rank == p->rank;
    for (int d = 0; same && d < p->rank; d++)
        same = v->dims[d] == p->dims[d];
    if (!same) {
        char want[160], got[160] = "of an invalid rank";
        tsr_shape_format(want, sizeof want, p->rank, p->dims);
        if (v->rank >= 0 && v->rank <= TSR_MAX_RANK)
            tsr_shape_format(got, sizeof got, v->rank, v->dims);
        return tsr_error(v->dtype != p->dtype ? TSR_ERR_DTYPE : TSR_ERR_SHAPE,
                         "parameter '%s' is %s %s, the tensor given is %s %s", name,
                         tsr_dtype_name(p->dtype), want, tsr_dtype_name(v->dtype), got);
    }
    if (!v->data && tsr_tensor_numel(p) > 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "parameter '%s': tensor has no data", name);
    return TSR_OK;
}

tsr_status tsr_trainer_get_param(const tsr_trainer *t, const char *name, tsr_tensor *value)
{
    int i;
    TSR_CHECK(lookup(t, name, value, &i));
    const train_param *p = &t->params[i];
    memcpy(value->data, t->use_ema && p->ema ? p->ema : p->value.data, tsr_tensor_bytes(&p->value));
    return TSR_OK;
}

tsr_status tsr_trainer_set_param(tsr_trainer *t, const char *name, const tsr_tensor *value)
{
    int i;
    TSR_CHECK(lookup(t, name, value, &i));
    memcpy(t->params[i].value.data, value->data, tsr_tensor_bytes(value));
    return TSR_OK;
}

tsr_status tsr_trainer_use_ema(tsr_trainer *t, int enabled)
{
    if (!t)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "trainer is NULL");
    if (enabled && !(t->opt.ema_decay > 0.0))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "no moving average is kept: create the trainer with ema_decay > 0");
    t->use_ema = enabled != 0;
    return TSR_OK;
}

tsr_status tsr_trainer_get_stats(const tsr_trainer *t, tsr_trainer_stats *out)
{
    if (!t || !out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_trainer_get_stats: NULL argument");
    memset(out, 0, sizeof *out);
    tsr_plan_stats ps;
    if (tsr_plan_get_stats(t->train_plan, &ps) == TSR_OK) {
        out->arena_bytes = ps.arena_bytes;
        out->constant_bytes = ps.constant_bytes;
        out->flops = ps.flops;
        out->n_kernel_calls = ps.n_steps;
    }
    out->eval_arena_bytes = t->eval_arena_bytes;
    for (int i = 0; i < t->n_params; i++) {
        const train_param *p = &t->params[i];
        size_t bytes = tsr_tensor_bytes(&p->value);
        out->param_bytes += bytes;
        if (!p->trainable)
            continue;
        out->n_trainable++;
        out->n_trainable_elements += tsr_tensor_numel(&p->value);
        out->grad_bytes += bytes;
        out->optimizer_bytes += bytes * (size_t)(t->n_slots + (p->ema ? 1 : 0));
    }
    return TSR_OK;
}

const tsr_plan *tsr_trainer_step_plan(const tsr_trainer *t)
{
    return t ? t->train_plan : NULL;
}
