/* The trainer's state, shared by its three files: trainer.c (graphs, plans,
 * steps, parameters), optimizer.c (updates, clipping, schedules, EMA) and
 * checkpoint.c (checkpoints and trained ONNX files). */
#ifndef TSR_TRAIN_INTERNAL_H
#define TSR_TRAIN_INTERNAL_H

#include "core/core.h"

typedef struct train_param {
    char *name;
    bool trainable;
    tsr_tensor value; /* trainer-owned storage, fed to both plans */
    tsr_tensor grad;  /* trainable: the training plan writes the gradient here */
    void *slot[3];    /* optimizer state: SGD momentum; Adam m, v, max v */
    void *ema;        /* exponential moving average (trainable, ema_decay > 0) */
    void *update;     /* buffer: the running statistic the training plan computes */
    double weight_decay, lr_scale;
} train_param;

struct tsr_trainer {
    tsr_loss_options loss;
    tsr_optimizer_options opt;
    char *patterns[TSR_MAX_PARAM_GROUPS]; /* copies of the group patterns */
    char *loss_output;
    tsr_dtype dtype; /* of the loss's model output */
    int threads;
    int n_model_inputs;
    bool has_dropout;
    int n_params, n_trainable;
    train_param *params; /* trainable first */
    tsr_plan *train_plan, *eval_plan, *eval_loss_plan;
    tsr_tensor *train_in, *train_out, *eval_in, *eval_out;
    int n_train_in, n_train_out, n_eval_in;
    int n_slots;          /* per trainable parameter, from the optimizer kind */
    int64_t dropout_seed; /* the value fed to the training plan this step */
    uint64_t seed, rng_counter;
    int64_t steps, epochs, schedule_t;
    double lr, plateau_best;
    int64_t plateau_bad;
    bool use_ema;
    size_t eval_arena_bytes;
};

/* optimizer.c */
tsr_status tsr_optimizer_validate(const tsr_optimizer_options *o);
int tsr_optimizer_slots(const tsr_optimizer_options *o);
/* Assigns each parameter its group's weight decay and lr scale. */
void tsr_optimizer_assign_groups(tsr_trainer *t);
/* Clipping, the update of every trainable parameter, EMA. */
void tsr_optimizer_apply(tsr_trainer *t);
/* The schedule's lr at the trainer's schedule_t. */
double tsr_schedule_lr(const tsr_trainer *t);

#endif
