/* Tessera training: a model graph, a loss and an optimizer become one
 * training plan that runs forward, backward and the parameter update.
 *
 * How it works. tsr_trainer_create rewrites the model for training
 * (BatchNormalization uses batch statistics and produces its running-average
 * update, Dropout draws masks from a seeded generator), appends the loss,
 * differentiates the loss with respect to every trainable parameter
 * (tsr_graph_gradient) and compiles the result on the chosen device. The
 * parameters become inputs of that training graph: the trainer owns their
 * storage and feeds it to every run without copies, the gradients come out
 * into trainer-owned buffers, and the optimizer then updates the storage in
 * place. So an update is seen by the next step without re-planning, and the
 * plan keeps only the activations the backward pass reads. A second plan,
 * built from the model in inference mode (running statistics, no dropout),
 * serves tsr_trainer_evaluate; it reads the same parameter storage.
 *
 * Parameters are the model's float initializers (tsr_graph_add_parameter;
 * the ONNX importer makes every float initializer one). Those that receive
 * a gradient are trainable; BatchNormalization's running mean and variance
 * are buffers: updated by training steps, never by the optimizer.
 *
 * Every call returns a tsr_status; on failure tsr_last_error() says why,
 * and the trainer is left as it was before the call (a failed step updates
 * nothing). A trainer is not thread-safe: one call at a time. */
#ifndef TESSERA_TRAIN_H
#define TESSERA_TRAIN_H

#include "tessera.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------------------- loss */

typedef enum tsr_loss_kind {
    /* Softmax over the last axis of logits [N, C] (or [N, C, d1...] with the
     * class axis 1, like PyTorch's CrossEntropyLoss), negative log
     * likelihood of int64 class indices [N] ([N, d1...]). With label
     * smoothing e the target distribution is (1-e) one-hot + e/C. */
    TSR_LOSS_SOFTMAX_CROSS_ENTROPY = 0,
    TSR_LOSS_MSE,  /* (y - t)^2 against a float target of y's shape */
    TSR_LOSS_L1,   /* |y - t| */
    TSR_LOSS_HUBER /* 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta); d = y - t */
} tsr_loss_kind;

typedef enum tsr_reduction {
    TSR_REDUCTION_MEAN = 0, /* over every element (cross-entropy: every sample) */
    TSR_REDUCTION_SUM
} tsr_reduction;

typedef struct tsr_loss_options {
    tsr_loss_kind kind;      /* default softmax cross-entropy */
    tsr_reduction reduction; /* default mean */
    const char *output;      /* the model output the loss reads; NULL: the first */
    double label_smoothing;  /* cross-entropy only, in [0, 1); default 0 */
    double huber_delta;      /* Huber only, > 0; default 1 */
} tsr_loss_options;

TSR_API void tsr_loss_options_init(tsr_loss_options *options);

/* ------------------------------------------------------------ optimizer */

typedef enum tsr_optimizer_kind {
    TSR_OPTIMIZER_SGD = 0, /* PyTorch's SGD: momentum, dampening, Nesterov, L2 weight decay */
    TSR_OPTIMIZER_ADAM,    /* Adam, weight decay added to the gradient (L2) */
    TSR_OPTIMIZER_ADAMW    /* Adam with decoupled weight decay: p -= lr * wd * p */
} tsr_optimizer_kind;

typedef enum tsr_schedule_kind {
    TSR_SCHEDULE_NONE = 0,
    TSR_SCHEDULE_STEP,   /* lr = base * gamma^floor(t / step_size) */
    TSR_SCHEDULE_COSINE, /* lr = min_lr + (base - min_lr) (1 + cos(pi t / t_max)) / 2,
                            t capped at t_max */
    TSR_SCHEDULE_PLATEAU /* lr *= factor after `patience` epochs without improvement of
                            the metric given to tsr_trainer_epoch_end (lower is better;
                            improvement: metric < best * (1 - threshold)), not below
                            min_lr */
} tsr_schedule_kind;

/* Hyper-parameters for the parameters matching a name pattern. A parameter
 * belongs to the first group whose pattern matches its name (a glob: '*'
 * any run of characters, '?' one character; NULL matches every name) and
 * whose max_rank, when > 0, is at least the parameter's rank; so
 * {NULL, max_rank 1, weight_decay 0} exempts biases and BatchNormalization
 * scales and shifts from decay. Parameters in no group use the options'
 * own values. */
typedef struct tsr_param_group {
    const char *pattern;
    int max_rank;
    double weight_decay;
    double lr_scale; /* this group's lr = lr * lr_scale (1 for the same lr) */
} tsr_param_group;

#define TSR_MAX_PARAM_GROUPS 8

typedef struct tsr_optimizer_options {
    tsr_optimizer_kind kind; /* default SGD */
    double lr;               /* default 0.01 */
    double weight_decay;     /* default 0 */
    /* SGD */
    double momentum;  /* default 0 */
    double dampening; /* default 0 */
    int nesterov;     /* needs momentum > 0 and dampening 0 */
    /* Adam and AdamW */
    double beta1, beta2; /* default 0.9, 0.999 */
    double eps;          /* default 1e-8 */
    int amsgrad;         /* keep the maximum of the second moment */
    int n_groups;
    tsr_param_group groups[TSR_MAX_PARAM_GROUPS];
    /* Learning-rate schedule. STEP and COSINE advance once per
     * tsr_trainer_epoch_end, or once per step when schedule_per_step is set;
     * PLATEAU only at epoch ends. */
    tsr_schedule_kind schedule;
    int schedule_per_step;
    int step_size;    /* STEP, >= 1 */
    double gamma;     /* STEP, default 0.1 */
    int t_max;        /* COSINE, >= 1 */
    double min_lr;    /* COSINE and PLATEAU, default 0 */
    int patience;     /* PLATEAU, default 10 */
    double factor;    /* PLATEAU, in (0, 1), default 0.1 */
    double threshold; /* PLATEAU, default 1e-4 */
    /* Gradient clipping: when > 0, all gradients together are scaled so
     * that their global L2 norm is at most clip_norm (as PyTorch's
     * clip_grad_norm_), before weight decay and the update. */
    double clip_norm;
    /* When > 0, an exponential moving average of the trainable parameters
     * is kept after every step: ema = decay * ema + (1 - decay) * p. */
    double ema_decay;
} tsr_optimizer_options;

TSR_API void tsr_optimizer_options_init(tsr_optimizer_options *options);

/* -------------------------------------------------------------- trainer */

typedef struct tsr_trainer tsr_trainer;

/* Builds the training and inference plans. The model graph is copied (it
 * may be destroyed afterwards); its float parameters' current values are
 * the starting point. `compile` may be NULL (defaults; depth_first is
 * ignored for the training plan's backward part where it does not apply).
 * `seed` starts the generator that Dropout masks are drawn from.
 * Errors: the loss output does not exist or has the wrong shape or dtype
 * for the loss, an op on the way from a parameter to the loss has no
 * gradient rule, invalid hyper-parameters (named, with their value). */
TSR_API tsr_status tsr_trainer_create(const tsr_graph *model, const tsr_loss_options *loss,
                                      const tsr_optimizer_options *optimizer,
                                      const tsr_compile_options *compile, uint64_t seed,
                                      tsr_trainer **trainer_out);
TSR_API void tsr_trainer_destroy(tsr_trainer *trainer);

/* One training step on a batch: forward in training mode, loss, backward,
 * clipping, optimizer update, EMA, and the per-step schedule if any.
 * `inputs` are the model's inputs in graph order. `target`: int64 class
 * indices for cross-entropy (the logits' shape without the class axis),
 * else a float tensor of the output's dtype and shape. The batch size may
 * change from step to step (plans are cached per shape). loss_out may be
 * NULL; it gets the loss before the update. */
TSR_API tsr_status tsr_trainer_step(tsr_trainer *trainer, int n_inputs, const tsr_tensor *inputs,
                                    const tsr_tensor *target, double *loss_out);

/* The shape and dtype of the loss's model output for these inputs (their
 * data is not read), for sizing tsr_trainer_evaluate's `output`. */
TSR_API tsr_status tsr_trainer_output_desc(tsr_trainer *trainer, int n_inputs,
                                           const tsr_tensor *inputs, tsr_tensor *desc_out);

/* Inference mode (running statistics, no dropout), no update. `target` and
 * loss_out may both be NULL (no loss); `output` may be NULL, else it
 * receives the loss's model output (e.g. the logits), a caller buffer of
 * the dtype and shape tsr_trainer_output_desc gives. */
TSR_API tsr_status tsr_trainer_evaluate(tsr_trainer *trainer, int n_inputs,
                                        const tsr_tensor *inputs, const tsr_tensor *target,
                                        double *loss_out, tsr_tensor *output);

/* Ends an epoch: advances epoch-based schedules; `metric` (e.g. the
 * validation loss; NaN when there is none) drives PLATEAU, which needs it. */
TSR_API tsr_status tsr_trainer_epoch_end(tsr_trainer *trainer, double metric);

/* Current learning rate (before group scales), steps and epochs done. */
TSR_API double tsr_trainer_lr(const tsr_trainer *trainer);
TSR_API int64_t tsr_trainer_step_count(const tsr_trainer *trainer);
TSR_API int64_t tsr_trainer_epoch_count(const tsr_trainer *trainer);

/* -------------------------------------------------------- parameters */

typedef struct tsr_trainer_param {
    const char *name; /* the model's initializer name */
    int trainable;    /* 0 for buffers (BatchNormalization running stats) */
    tsr_tensor value; /* a view of the trainer's storage: valid until the
                         trainer is destroyed; written by every step */
} tsr_trainer_param;

/* Parameters and buffers, trainable ones first, each group in model order. */
TSR_API int tsr_trainer_num_params(const tsr_trainer *trainer);
TSR_API tsr_status tsr_trainer_param_info(const tsr_trainer *trainer, int index,
                                          tsr_trainer_param *param_out);
/* Copies a parameter (or buffer) out of / into the trainer; `value`'s dtype
 * and shape must match. Setting does not touch optimizer state. */
TSR_API tsr_status tsr_trainer_get_param(const tsr_trainer *trainer, const char *name,
                                         tsr_tensor *value);
TSR_API tsr_status tsr_trainer_set_param(tsr_trainer *trainer, const char *name,
                                         const tsr_tensor *value);

/* While on, tsr_trainer_evaluate, tsr_trainer_get_param and
 * tsr_trainer_save_onnx use the exponential moving average of the
 * trainable parameters (needs ema_decay > 0) instead of the live ones;
 * steps keep training the live ones. */
TSR_API tsr_status tsr_trainer_use_ema(tsr_trainer *trainer, int enabled);

/* ------------------------------------------------------ saving, resuming */

/* Writes `source_onnx` (the file the model was loaded from) again with
 * every parameter's and buffer's initializer replaced by its trained value:
 * to a temporary file beside out_path, then renamed over it. */
TSR_API tsr_status tsr_trainer_save_onnx(const tsr_trainer *trainer, const char *source_onnx,
                                         const char *out_path);

/* A checkpoint holds everything a resumed run needs to continue exactly as
 * if never interrupted: parameters, buffers, optimizer kind, hyper-parameters
 * and slots (momentum, moments), EMA, learning rate and schedule state, step
 * and epoch counts, the Dropout generator. Written atomically (temporary
 * file, then rename). Loading into a trainer created from the same model
 * and options validates the format version, every name, shape and dtype and
 * the optimizer kind, and fails with a clear error (changing nothing) on a
 * mismatch or a corrupt or truncated file. The format is described in
 * src/train/checkpoint.c. */
TSR_API tsr_status tsr_trainer_save_checkpoint(const tsr_trainer *trainer, const char *path);
TSR_API tsr_status tsr_trainer_load_checkpoint(tsr_trainer *trainer, const char *path);

/* ------------------------------------------------------------- stats */

typedef struct tsr_trainer_stats {
    size_t arena_bytes;      /* training plan intermediates (activations kept for
                                backward, gradients in flight) at the last batch shape */
    size_t eval_arena_bytes; /* inference plan, 0 until evaluate ran */
    size_t param_bytes;      /* parameters and buffers */
    size_t grad_bytes;       /* gradient buffers */
    size_t optimizer_bytes;  /* optimizer slots and EMA */
    size_t constant_bytes;   /* other constants of the training plan */
    double flops;            /* estimated per training step */
    int n_kernel_calls;      /* per training step */
    int n_trainable;         /* trainable parameters (tensors) */
    int64_t n_trainable_elements;
} tsr_trainer_stats;

TSR_API tsr_status tsr_trainer_get_stats(const tsr_trainer *trainer, tsr_trainer_stats *stats_out);
/* The plan of the training step (forward and backward), owned by the trainer, to inspect
 * with tsr_plan_get_stats (kernel calls per backend), tsr_plan_node_backend and
 * tsr_plan_print_stacks; NULL for a NULL trainer. */
TSR_API const tsr_plan *tsr_trainer_step_plan(const tsr_trainer *trainer);

#ifdef __cplusplus
}
#endif
#endif
