/* Optimizers, updating the trainer's parameter storage in place with
 * PyTorch's update rules (torch.optim SGD, Adam, AdamW, clip_grad_norm_),
 * computed in the parameters' own precision like PyTorch does. */
#include "train/train_internal.h"

#include <fnmatch.h>
#include <math.h>
#include <string.h>

void tsr_optimizer_options_init(tsr_optimizer_options *o)
{
    memset(o, 0, sizeof *o);
    o->kind = TSR_OPTIMIZER_SGD;
    o->lr = 0.01;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->gamma = 0.1;
    o->patience = 10;
    o->factor = 0.1;
    o->threshold = 1e-4;
}

void tsr_loss_options_init(tsr_loss_options *o)
{
    memset(o, 0, sizeof *o);
    o->kind = TSR_LOSS_SOFTMAX_CROSS_ENTROPY;
    o->reduction = TSR_REDUCTION_MEAN;
    o->huber_delta = 1.0;
}

#define BAD(fmt, ...) tsr_error(TSR_ERR_INVALID_ARGUMENT, "optimizer: " fmt, __VA_ARGS__)

tsr_status tsr_optimizer_validate(const tsr_optimizer_options *o)
{
    if (o->kind < TSR_OPTIMIZER_SGD || o->kind > TSR_OPTIMIZER_ADAMW)
        return BAD("unknown kind %d", (int)o->kind);
    if (!(o->lr >= 0.0) || !isfinite(o->lr))
        return BAD("lr must be >= 0, got %g", o->lr);
    if (!(o->weight_decay >= 0.0))
        return BAD("weight_decay must be >= 0, got %g", o->weight_decay);
    if (o->kind == TSR_OPTIMIZER_SGD) {
        if (!(o->momentum >= 0.0))
            return BAD("momentum must be >= 0, got %g", o->momentum);
        if (!(o->dampening >= 0.0 && o->dampening <= 1.0))
            return BAD("dampening must be in [0, 1], got %g", o->dampening);
        if (o->nesterov && (o->momentum <= 0.0 || o->dampening != 0.0))
            return BAD("Nesterov momentum needs momentum > 0 and dampening 0 (got momentum %g, "
                       "dampening %g)",
                       o->momentum, o->dampening);
    } else {
        if (!(o->beta1 >= 0.0 && o->beta1 < 1.0) || !(o->beta2 >= 0.0 && o->beta2 < 1.0))
            return BAD("betas must be in [0, 1), got (%g, %g)", o->beta1, o->beta2);
        if (!(o->eps >= 0.0))
            return BAD("eps must be >= 0, got %g", o->eps);
    }
    if (o->n_groups < 0 || o->n_groups > TSR_MAX_PARAM_GROUPS)
        return BAD("n_groups must be in 0..%d, got %d", TSR_MAX_PARAM_GROUPS, o->n_groups);
    for (int g = 0; g < o->n_groups; g++) {
        if (!(o->groups[g].weight_decay >= 0.0))
            return BAD("group %d: weight_decay must be >= 0, got %g", g, o->groups[g].weight_decay);
        if (!(o->groups[g].lr_scale >= 0.0))
            return BAD("group %d: lr_scale must be >= 0, got %g", g, o->groups[g].lr_scale);
    }
    switch (o->schedule) {
    case TSR_SCHEDULE_NONE: break;
    case TSR_SCHEDULE_STEP:
        if (o->step_size < 1)
            return BAD("the step schedule needs step_size >= 1, got %d", o->step_size);
        if (!(o->gamma > 0.0))
            return BAD("gamma must be > 0, got %g", o->gamma);
        break;
    case TSR_SCHEDULE_COSINE:
        if (o->t_max < 1)
            return BAD("the cosine schedule needs t_max >= 1, got %d", o->t_max);
        if (!(o->min_lr >= 0.0))
            return BAD("min_lr must be >= 0, got %g", o->min_lr);
        break;
    case TSR_SCHEDULE_PLATEAU:
        if (!(o->factor > 0.0 && o->factor < 1.0))
            return BAD("the plateau factor must be in (0, 1), got %g", o->factor);
        if (o->patience < 0)
            return BAD("patience must be >= 0, got %d", o->patience);
        if (!(o->threshold >= 0.0))
            return BAD("threshold must be >= 0, got %g", o->threshold);
        break;
    default: return BAD("unknown schedule %d", (int)o->schedule);
    }
    if (!(o->clip_norm >= 0.0))
        return BAD("clip_norm must be >= 0, got %g", o->clip_norm);
    if (!(o->ema_decay >= 0.0 && o->ema_decay < 1.0))
        return BAD("ema_decay must be in [0, 1), got %g", o->ema_decay);
    return TSR_OK;
}

int tsr_optimizer_slots(const tsr_optimizer_options *o)
{
    if (o->kind == TSR_OPTIMIZER_SGD)
        return o->momentum > 0.0 ? 1 : 0;
    return o->amsgrad ? 3 : 2;
}

void tsr_optimizer_assign_groups(tsr_trainer *t)
{
    for (int i = 0; i < t->n_params; i++) {
        train_param *p = &t->params[i];
        p->weight_decay = t->opt.weight_decay;
        p->lr_scale = 1.0;
        for (int g = 0; g < t->opt.n_groups; g++) {
            const tsr_param_group *grp = &t->opt.groups[g];
            if (t->patterns[g] && fnmatch(t->patterns[g], p->name, 0) != 0)
                continue;
            if (grp->max_rank > 0 && p->value.rank > grp->max_rank)
                continue;
            p->weight_decay = grp->weight_decay;
            p->lr_scale = grp->lr_scale;
            break;
        }
    }
}

double tsr_schedule_lr(const tsr_trainer *t)
{
    const tsr_optimizer_options *o = &t->opt;
    double k = (double)t->schedule_t;
    switch (o->schedule) {
    case TSR_SCHEDULE_STEP: return o->lr * pow(o->gamma, floor(k / o->step_size));
    case TSR_SCHEDULE_COSINE:
        k = k < o->t_max ? k : o->t_max;
        return o->min_lr +
               (o->lr - o->min_lr) * (1.0 + cos(3.14159265358979323846 * k / o->t_max)) / 2.0;
    default: return t->lr;
    }
}

/* clang-format off */
#define OPTIM_DEFINE(T, SQRT)                                                                      \
    static double sum_squares_##T(const T *g, int64_t n, int threads)                              \
    {                                                                                              \
        double s = 0.0;                                                                            \
        _Pragma("omp parallel for num_threads(threads) reduction(+ : s) if (n > 32768)")           \
        for (int64_t i = 0; i < n; i++)                                                            \
            s += (double)g[i] * g[i];                                                              \
        return s;                                                                                  \
    }                                                                                              \
    static void scale_##T(T *g, int64_t n, T c, int threads)                                       \
    {                                                                                              \
        _Pragma("omp parallel for num_threads(threads) if (n > 32768)")                            \
        for (int64_t i = 0; i < n; i++)                                                            \
            g[i] *= c;                                                                             \
    }                                                                                              \
    static void sgd_##T(const tsr_optimizer_options *o, T *p, const T *g, T *buf, int64_t n,      \
                        T lr, T wd, bool first, int threads)                                       \
    {                                                                                              \
        T mom = (T)o->momentum, damp = (T)(1.0 - o->dampening);                                    \
        _Pragma("omp parallel for num_threads(threads) if (n > 32768)")                            \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T d = g[i];                                                                            \
            if (wd != 0)                                                                           \
                d += wd * p[i];                                                                    \
            if (buf) {                                                                             \
                buf[i] = first ? d : mom * buf[i] + damp * d;                                      \
                d = o->nesterov ? d + mom * buf[i] : buf[i];                                       \
            }                                                                                      \
            p[i] -= lr * d;                                                                        \
        }                                                                                          \
    }                                                                                              \
    static void adam_##T(const tsr_optimizer_options *o, T *p, const T *g, T *m, T *v, T *vmax,    \
                         int64_t n, T lr, T wd, double step, int threads)                          \
    {                                                                                              \
        T b1 = (T)o->beta1, b2 = (T)o->beta2, eps = (T)o->eps;                                     \
        T c1 = (T)(1.0 - o->beta1), c2 = (T)(1.0 - o->beta2);                                      \
        T bc2_sqrt = (T)sqrt(1.0 - pow(o->beta2, step));                                           \
        T step_size = (T)(lr / (1.0 - pow(o->beta1, step)));                                       \
        bool decoupled = o->kind == TSR_OPTIMIZER_ADAMW;                                           \
        T shrink = (T)(1.0 - (double)lr * wd);                                                     \
        _Pragma("omp parallel for num_threads(threads) if (n > 32768)")                            \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T d = g[i];                                                                            \
            if (decoupled)                                                                         \
                p[i] *= shrink;                                                                    \
            else if (wd != 0)                                                                      \
                d += wd * p[i];                                                                    \
            m[i] = m[i] * b1 + d * c1;                                                             \
            v[i] = v[i] * b2 + d * d * c2;                                                         \
            T vv = v[i];                                                                           \
            if (vmax) {                                                                            \
                vmax[i] = vmax[i] > vv ? vmax[i] : vv;                                             \
                vv = vmax[i];                                                                      \
            }                                                                                      \
            T denom = SQRT(vv) / bc2_sqrt + eps;                                                   \
            p[i] -= step_size * (m[i] / denom);                                                    \
        }                                                                                          \
    }                                                                                              \
    static void ema_##T(T *e, const T *p, int64_t n, double decay_d, int threads)                  \
    {                                                                                              \
        T decay = (T)decay_d, rest = (T)(1.0 - decay_d);                                           \
        _Pragma("omp parallel for num_threads(threads) if (n > 32768)")                            \
        for (int64_t i = 0; i < n; i++)                                                            \
            e[i] = decay * e[i] + rest * p[i];                                                      \
    }
/* clang-format on */

OPTIM_DEFINE(float, sqrtf)
OPTIM_DEFINE(double, sqrt)

static void clip_gradients(tsr_trainer *t)
{
    double total = 0.0;
    for (int i = 0; i < t->n_trainable; i++) {
        const tsr_tensor *g = &t->params[i].grad;
        int64_t n = tsr_tensor_numel(g);
        total += g->dtype == TSR_FLOAT32 ? sum_squares_float(g->data, n, t->threads)
                                         : sum_squares_double(g->data, n, t->threads);
    }
    double coef = t->opt.clip_norm / (sqrt(total) + 1e-6);
    if (coef >= 1.0)
        return;
    for (int i = 0; i < t->n_trainable; i++) {
        tsr_tensor *g = &t->params[i].grad;
        int64_t n = tsr_tensor_numel(g);
        if (g->dtype == TSR_FLOAT32)
            scale_float(g->data, n, (float)coef, t->threads);
        else
            scale_double(g->data, n, coef, t->threads);
    }
}

void tsr_optimizer_apply(tsr_trainer *t)
{
    const tsr_optimizer_options *o = &t->opt;
    if (o->clip_norm > 0.0)
        clip_gradients(t);
    double step = (double)(t->steps + 1);
    for (int i = 0; i < t->n_trainable; i++) {
        train_param *p = &t->params[i];
        int64_t n = tsr_tensor_numel(&p->value);
        double lr = t->lr * p->lr_scale, wd = p->weight_decay;
        bool f32 = p->value.dtype == TSR_FLOAT32;
        if (o->kind == TSR_OPTIMIZER_SGD) {
            if (f32)
                sgd_float(o, p->value.data, p->grad.data, p->slot[0], n, (float)lr, (float)wd,
                          t->steps == 0, t->threads);
            else
                sgd_double(o, p->value.data, p->grad.data, p->slot[0], n, lr, wd, t->steps == 0,
                           t->threads);
        } else if (f32) {
            adam_float(o, p->value.data, p->grad.data, p->slot[0], p->slot[1], p->slot[2], n,
                       (float)lr, (float)wd, step, t->threads);
        } else {
            adam_double(o, p->value.data, p->grad.data, p->slot[0], p->slot[1], p->slot[2], n, lr,
                        wd, step, t->threads);
        }
        if (p->ema) {
            if (f32)
                ema_float(p->ema, p->value.data, n, o->ema_decay, t->threads);
            else
                ema_double(p->ema, p->value.data, n, o->ema_decay, t->threads);
        }
    }
}
