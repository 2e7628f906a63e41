/* `tessera train`: trains an ONNX model on a data set with the training
 * API (include/tessera/train.h), validating after each epoch, logging the
 * curves, checkpointing, and writing the trained model as ONNX. All data
 * is read and checked before the first step, so bad data fails fast and
 * leaves no file behind. */
#include "cli.h"
#include "data.h"
#include "tessera/train.h"
#include "train_report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char train_usage[] =
    "Usage: tessera train MODEL.onnx --data TRAIN --out TRAINED.onnx [options]\n"
    "\n"
    "Trains MODEL on TRAIN and writes the model with its trained weights to\n"
    "TRAINED.onnx. TRAIN (and VAL) is one of\n"
    "  FILE.npz                        arrays x (samples) and y (labels or targets)\n"
    "  DIR/NAME-images-idx3-ubyte[.gz] IDX images, with NAME-labels-idx1-ubyte[.gz]\n"
    "  DIR/NAME                        the same pair by its prefix\n"
    "  DIR                             DIR/train-* for --data, DIR/t10k-* for --val\n"
    "                                  (MNIST's and Fashion-MNIST's file names)\n"
    "Bytes (uint8 x, IDX images) are scaled to [0, 1]; samples are reshaped to\n"
    "the model's input shape when their sizes agree ([N, 28, 28] -> [N, 1, 28, 28]).\n"
    "\n"
    "Options:\n"
    "  --data TRAIN            the training set (required)\n"
    "  --val VAL               a validation set, evaluated after every epoch\n"
    "  --out FILE.onnx         where the trained model goes (required; written\n"
    "                          atomically at the end)\n"
    "  --epochs N              epochs to train in all (default 1)\n"
    "  --batch B               samples per step (default 32; the last batch of an\n"
    "                          epoch may be smaller)\n"
    "  --optimizer KIND        sgd, adam or adamw (default sgd)\n"
    "  --lr X                  learning rate (default 0.01 for sgd, 0.001 for adam(w))\n"
    "  --momentum M            SGD momentum (default 0)\n"
    "  --nesterov              Nesterov momentum (SGD)\n"
    "  --weight-decay WD       weight decay (default 0; decoupled for adamw)\n"
    "  --schedule KIND         none, cosine (to 0 over --epochs) or step (x0.1 every\n"
    "                          --step-size epochs) (default none)\n"
    "  --step-size N           epochs between steps of the step schedule (default 10)\n"
    "  --clip-norm X           clip the global gradient norm to X\n"
    "  --loss KIND             ce (softmax cross-entropy on class labels), mse, l1 or\n"
    "                          huber (default ce)\n"
    "  --label-smoothing E     cross-entropy label smoothing (default 0)\n"
    "  --output NAME           the model output the loss reads (default: the first)\n"
    "  --checkpoint DIR        save a checkpoint there after every epoch (atomically)\n"
    "  --resume                continue from the checkpoint in --checkpoint DIR: the\n"
    "                          run goes on exactly as if it had not stopped\n"
    "  --log FILE.csv          the per-epoch log (default: beside --out, .csv)\n"
    "  --plot FILE.png         the curves, drawn by gnuplot when it is installed\n"
    "                          (default: beside --out, .png)\n"
    "  --no-plot               draw no plot\n"
    "  --no-train-acc          skip the training accuracy (it costs one inference\n"
    "                          pass per batch)\n"
    "  --eval-batch N          samples per validation batch (default 256)\n"
    "  --seed S                seed of the shuffling and of Dropout (default 0)\n"
    "  --device DEV            device to train on (default: the library's default)\n"
    "  --threads N             threads, 0 for all cores (default 0)\n"
    "  -h, --help              show this help\n"
    "\n"
    "Progress goes to stderr: a bar (loss, accuracy, samples/s, ETA) when stderr is\n"
    "a terminal, else one line per epoch. The log has one row per epoch: epoch,\n"
    "step, train loss and accuracy, validation loss and accuracy, lr, seconds (of\n"
    "training, validation excluded) and validation seconds. Training accuracy is\n"
    "measured in inference mode on each batch just before its step. Ctrl-C or\n"
    "SIGTERM stops after the epoch in progress and writes the model trained so far\n"
    "(a second one stops at once); --resume continues from the checkpoint.\n";

static int train_main(int argc, char **argv);

const cli_command cli_train_command = {
    .name = "train",
    .summary = "train a model on an .npz or IDX data set",
    .usage = train_usage,
    .main = train_main,
};

typedef struct {
    const char *model, *data, *val, *out, *log, *plot, *checkpoint;
    const char *device, *optimizer, *schedule, *loss, *output;
    long long epochs, batch, eval_batch, threads, step_size;
    uint64_t seed;
    double lr, momentum, weight_decay, clip_norm, label_smoothing;
    bool lr_given, nesterov, resume, no_plot, no_train_acc;
} train_options;

static bool one_of(const char *v, const char *const *choices)
{
    for (; *choices; choices++)
        if (strcmp(v, *choices) == 0)
            return true;
    return false;
}

static int check_choice(cli_args *a, const char *option, const char *v, const char *const *choices,
                        const char *list)
{
    if (v && !one_of(v, choices))
        a->status = cli_usage_error(a->cmd, "%s must be %s, got '%s'", option, list, v);
    return a->status;
}

static int parse_options(int argc, char **argv, train_options *o, bool *help)
{
    static const char *const optimizers[] = {"sgd", "adam", "adamw", NULL};
    static const char *const schedules[] = {"none", "cosine", "step", NULL};
    static const char *const losses[] = {"ce", "mse", "l1", "huber", NULL};
    cli_args a;
    cli_args_init(&a, &cli_train_command, argc, argv);
    o->epochs = 1;
    o->batch = 32;
    o->eval_batch = 256;
    o->step_size = 10;
    o->optimizer = "sgd";
    o->schedule = "none";
    o->loss = "ce";
    while (cli_args_peek(&a)) {
        const char *v;
        if (cli_arg_option(&a, "--data", &v)) {
            o->data = v;
        } else if (cli_arg_option(&a, "--val", &v)) {
            o->val = v;
        } else if (cli_arg_option(&a, "--out", &v)) {
            o->out = v;
        } else if (cli_arg_option(&a, "--log", &v)) {
            o->log = v;
        } else if (cli_arg_option(&a, "--plot", &v)) {
            o->plot = v;
        } else if (cli_arg_option(&a, "--checkpoint", &v)) {
            o->checkpoint = v;
        } else if (cli_arg_option(&a, "--device", &v)) {
            o->device = v;
        } else if (cli_arg_option(&a, "--output", &v)) {
            o->output = v;
        } else if (cli_arg_option(&a, "--optimizer", &v)) {
            if (v && check_choice(&a, "--optimizer", v, optimizers, "sgd, adam or adamw") == 0)
                o->optimizer = v;
        } else if (cli_arg_option(&a, "--schedule", &v)) {
            if (v && check_choice(&a, "--schedule", v, schedules, "none, cosine or step") == 0)
                o->schedule = v;
        } else if (cli_arg_option(&a, "--loss", &v)) {
            if (v && check_choice(&a, "--loss", v, losses, "ce, mse, l1 or huber") == 0)
                o->loss = v;
        } else if (cli_arg_option(&a, "--epochs", &v)) {
            if (v)
                cli_parse_int(&a, "--epochs", v, 1, 1000000, &o->epochs);
        } else if (cli_arg_option(&a, "--batch", &v)) {
            if (v)
                cli_parse_int(&a, "--batch", v, 1, 1 << 24, &o->batch);
        } else if (cli_arg_option(&a, "--eval-batch", &v)) {
            if (v)
                cli_parse_int(&a, "--eval-batch", v, 1, 1 << 24, &o->eval_batch);
        } else if (cli_arg_option(&a, "--step-size", &v)) {
            if (v)
                cli_parse_int(&a, "--step-size", v, 1, 1000000, &o->step_size);
        } else if (cli_arg_option(&a, "--threads", &v)) {
            if (v)
                cli_parse_int(&a, "--threads", v, 0, 4096, &o->threads);
        } else if (cli_arg_option(&a, "--seed", &v)) {
            if (v)
                cli_parse_u64(&a, "--seed", v, &o->seed);
        } else if (cli_arg_option(&a, "--lr", &v)) {
            o->lr_given = v && cli_parse_double(&a, "--lr", v, 0, 1e6, &o->lr);
        } else if (cli_arg_option(&a, "--momentum", &v)) {
            if (v)
                cli_parse_double(&a, "--momentum", v, 0, 1, &o->momentum);
        } else if (cli_arg_option(&a, "--weight-decay", &v)) {
            if (v)
                cli_parse_double(&a, "--weight-decay", v, 0, 1e6, &o->weight_decay);
        } else if (cli_arg_option(&a, "--clip-norm", &v)) {
            if (v)
                cli_parse_double(&a, "--clip-norm", v, 0, 1e30, &o->clip_norm);
        } else if (cli_arg_option(&a, "--label-smoothing", &v)) {
            if (v)
                cli_parse_double(&a, "--label-smoothing", v, 0, 0.999999, &o->label_smoothing);
        } else if (cli_arg_flag(&a, "--nesterov")) {
            o->nesterov = true;
        } else if (cli_arg_flag(&a, "--resume")) {
            o->resume = true;
        } else if (cli_arg_flag(&a, "--no-plot")) {
            o->no_plot = true;
        } else if (cli_arg_flag(&a, "--no-train-acc")) {
            o->no_train_acc = true;
        } else {
            const char *pos = cli_arg_rest(&a, help);
            if (!pos)
                continue;
            if (o->model)
                return cli_usage_error(&cli_train_command, "unexpected argument '%s'", pos);
            o->model = pos;
        }
    }
    if (a.status || *help)
        return a.status;
    if (!o->model)
        return cli_usage_error(&cli_train_command, "missing MODEL.onnx");
    if (!o->data)
        return cli_usage_error(&cli_train_command, "missing --data");
    if (!o->out)
        return cli_usage_error(&cli_train_command, "missing --out");
    if (o->resume && !o->checkpoint)
        return cli_usage_error(&cli_train_command, "--resume needs --checkpoint DIR");
    if (o->nesterov && (strcmp(o->optimizer, "sgd") != 0 || o->momentum <= 0))
        return cli_usage_error(&cli_train_command, "--nesterov needs --optimizer sgd and "
                                                   "--momentum > 0");
    if (strncmp(o->model, "builtin:", 8) == 0)
        return cli_usage_error(&cli_train_command,
                               "MODEL must be an ONNX file: the trained weights are written "
                               "into a copy of it");
    return CLI_OK;
}

/* ----------------------------------------------------------- the model */

/* What the data must look like for the model and the loss. */
/* *acc_out: accuracies make sense, i.e. cross-entropy on [N, C] logits. */
static int describe_model(const tsr_graph *g, const train_options *o, cli_data_spec *spec,
                          bool *acc_out)
{
    memset(spec, 0, sizeof *spec);
    if (tsr_graph_num_inputs(g) != 1)
        return cli_fail("%s: the model has %d inputs; 'tessera train' feeds models with one "
                        "input (x)",
                        o->model, tsr_graph_num_inputs(g));
    tsr_value_info in, out;
    int out_index = 0;
    if (tsr_graph_input_info(g, 0, &in) != TSR_OK)
        return cli_fail_status(o->model);
    if (o->output) {
        out_index = -1;
        for (int k = 0; k < tsr_graph_num_outputs(g); k++)
            if (tsr_graph_output_info(g, k, &out) == TSR_OK && strcmp(out.name, o->output) == 0)
                out_index = k;
        if (out_index < 0)
            return cli_fail("--output %s: the model has no output of that name", o->output);
    }
    if (tsr_graph_output_info(g, out_index, &out) != TSR_OK)
        return cli_fail_status(o->model);
    if (in.dtype != TSR_FLOAT32 && in.dtype != TSR_FLOAT64)
        return cli_fail("%s: the model's input '%s' is %s; 'tessera train' feeds float32 or "
                        "float64 inputs",
                        o->model, in.name, tsr_dtype_name(in.dtype));
    if (in.rank < 1)
        return cli_fail("%s: the model's input '%s' needs a known rank with a batch dim", o->model,
                        in.name);
    spec->x_dtype = in.dtype;
    spec->x_rank = in.rank;
    for (int d = 0; d < in.rank; d++)
        spec->x_dims[d] = d == 0 ? -1 : in.dims[d];
    spec->y_is_class = strcmp(o->loss, "ce") == 0;
    spec->y_dtype = out.dtype;
    /* Cross-entropy reads the classes from axis 1 of the logits. */
    *acc_out = spec->y_is_class && out.rank == 2;
    if (spec->y_is_class && out.rank == 2 && out.dims[1] > 0)
        spec->n_classes = out.dims[1];
    return CLI_OK;
}

static int make_trainer(const tsr_graph *g, const train_options *o, tsr_trainer **trainer)
{
    tsr_loss_options loss;
    tsr_loss_options_init(&loss);
    loss.kind = strcmp(o->loss, "mse") == 0     ? TSR_LOSS_MSE
                : strcmp(o->loss, "l1") == 0    ? TSR_LOSS_L1
                : strcmp(o->loss, "huber") == 0 ? TSR_LOSS_HUBER
                                                : TSR_LOSS_SOFTMAX_CROSS_ENTROPY;
    loss.output = o->output;
    loss.label_smoothing = o->label_smoothing;
    tsr_optimizer_options opt;
    tsr_optimizer_options_init(&opt);
    bool adam = strcmp(o->optimizer, "sgd") != 0;
    opt.kind = strcmp(o->optimizer, "adamw") == 0 ? TSR_OPTIMIZER_ADAMW
               : adam                             ? TSR_OPTIMIZER_ADAM
                                                  : TSR_OPTIMIZER_SGD;
    opt.lr = o->lr_given ? o->lr : adam ? 1e-3 : 1e-2;
    opt.momentum = o->momentum;
    opt.nesterov = o->nesterov;
    opt.weight_decay = o->weight_decay;
    opt.clip_norm = o->clip_norm;
    if (strcmp(o->schedule, "cosine") == 0) {
        opt.schedule = TSR_SCHEDULE_COSINE;
        opt.t_max = (int)o->epochs;
    } else if (strcmp(o->schedule, "step") == 0) {
        opt.schedule = TSR_SCHEDULE_STEP;
        opt.step_size = (int)o->step_size;
    }
    tsr_compile_options compile;
    tsr_compile_options_init(&compile);
    compile.device = o->device;
    compile.threads = (int)o->threads;
    if (tsr_trainer_create(g, &loss, &opt, &compile, o->seed, trainer) != TSR_OK)
        return cli_fail_status(o->model);
    return CLI_OK;
}

/* ------------------------------------------------------------- batches */

typedef struct {
    tsr_tensor x, y;           /* batch buffers, sized for the largest batch */
    size_t x_sample, y_sample; /* bytes per sample */
    tsr_tensor logits;         /* evaluate's output */
    size_t logits_cap;         /* bytes allocated for it */
} batch_buffers;

static int batch_alloc(batch_buffers *b, const cli_dataset *d, int64_t max_batch)
{
    memset(b, 0, sizeof *b);
    b->x = d->x;
    b->y = d->y;
    b->x_sample = tsr_tensor_bytes(&d->x) / (size_t)d->x.dims[0];
    b->y_sample = tsr_tensor_bytes(&d->y) / (size_t)d->y.dims[0];
    int64_t n = max_batch < d->x.dims[0] ? max_batch : d->x.dims[0];
    b->x.data = malloc(b->x_sample * (size_t)n + 1);
    b->y.data = malloc(b->y_sample * (size_t)n + 1);
    if (!b->x.data || !b->y.data)
        return cli_fail("out of memory for a batch of %lld samples", (long long)n);
    return CLI_OK;
}

static void batch_free(batch_buffers *b)
{
    free(b->x.data);
    free(b->y.data);
    free(b->logits.data);
    memset(b, 0, sizeof *b);
}

/* Copies samples order[0..n) of d into the batch buffers. */
static void batch_gather(batch_buffers *b, const cli_dataset *d, const int64_t *order, int64_t n)
{
    b->x.dims[0] = n;
    b->y.dims[0] = n;
    for (int64_t i = 0; i < n; i++) {
        int64_t s = order ? order[i] : i;
        memcpy((char *)b->x.data + (size_t)i * b->x_sample,
               (const char *)d->x.data + (size_t)s * b->x_sample, b->x_sample);
        memcpy((char *)b->y.data + (size_t)i * b->y_sample,
               (const char *)d->y.data + (size_t)s * b->y_sample, b->y_sample);
    }
}

/* Samples whose largest logit is at their label, for [N, C] logits. */
static int64_t count_correct(const tsr_tensor *logits, const tsr_tensor *labels)
{
    int64_t n = logits->dims[0], c = logits->dims[1], correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t best = 0;
        for (int64_t k = 1; k < c; k++) {
            double v = logits->dtype == TSR_FLOAT32 ? ((const float *)logits->data)[i * c + k]
                                                    : ((const double *)logits->data)[i * c + k];
            double top = logits->dtype == TSR_FLOAT32
                             ? ((const float *)logits->data)[i * c + best]
                             : ((const double *)logits->data)[i * c + best];
            if (v > top)
                best = k;
        }
        correct += best == ((const int64_t *)labels->data)[i];
    }
    return correct;
}

/* Evaluates the batch in b in inference mode: its summed loss and, when
 * acc is wanted, its number of correct predictions. */
static int batch_evaluate(tsr_trainer *t, batch_buffers *b, bool acc, double *loss_sum,
                          int64_t *correct)
{
    tsr_tensor desc;
    if (acc) {
        if (tsr_trainer_output_desc(t, 1, &b->x, &desc) != TSR_OK)
            return cli_fail_status(NULL);
        if (desc.rank != 2 || desc.dims[0] != b->x.dims[0]) {
            char dims[256];
            cli_format_dims(desc.rank, desc.dims, dims, sizeof dims);
            return cli_fail("the model's output has shape %s for a batch of %lld; accuracy "
                            "needs [batch, classes]",
                            dims, (long long)b->x.dims[0]);
        }
        if (tsr_tensor_bytes(&desc) > b->logits_cap) {
            free(b->logits.data);
            b->logits_cap = tsr_tensor_bytes(&desc);
            b->logits.data = malloc(b->logits_cap);
            if (!b->logits.data)
                return cli_fail("out of memory for the model's output");
        }
        void *data = b->logits.data;
        b->logits = desc;
        b->logits.data = data;
    }
    double loss;
    if (tsr_trainer_evaluate(t, 1, &b->x, &b->y, &loss, acc ? &b->logits : NULL) != TSR_OK)
        return cli_fail_status(NULL);
    /* Mean losses average over samples: weight by the batch size. */
    *loss_sum += loss * (double)b->x.dims[0];
    if (acc)
        *correct += count_correct(&b->logits, &b->y);
    return CLI_OK;
}

static int evaluate_set(tsr_trainer *t, const cli_dataset *d, int64_t batch, bool acc, double *loss,
                        double *accuracy)
{
    batch_buffers b;
    int rc = batch_alloc(&b, d, batch);
    double loss_sum = 0;
    int64_t correct = 0, n = d->x.dims[0];
    for (int64_t start = 0; start < n && rc == CLI_OK; start += batch) {
        int64_t m = n - start < batch ? n - start : batch;
        b.x.dims[0] = b.y.dims[0] = m;
        memcpy(b.x.data, (const char *)d->x.data + (size_t)start * b.x_sample,
               (size_t)m * b.x_sample);
        memcpy(b.y.data, (const char *)d->y.data + (size_t)start * b.y_sample,
               (size_t)m * b.y_sample);
        rc = batch_evaluate(t, &b, acc, &loss_sum, &correct);
    }
    batch_free(&b);
    *loss = loss_sum / (double)n;
    *accuracy = acc ? (double)correct / (double)n : NAN;
    return rc;
}

/* Each epoch's order comes from the seed and the epoch number alone, so a
 * resumed run shuffles exactly as the interrupted one would have. */
static void shuffle(int64_t *order, int64_t n, uint64_t seed, int64_t epoch)
{
    cli_rng r;
    cli_rng_seed(&r, seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(epoch + 1)));
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(cli_rng_next(&r) % (uint64_t)(i + 1));
        int64_t tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

/* ----------------------------------------------------------- checkpoint */

/* Besides the trainer's checkpoint, the settings an exact continuation
 * depends on: resuming with others would silently train something else. */
typedef struct {
    uint64_t seed;
    long long batch;
    long long samples;
} run_state;

static int state_path(const char *dir, const char *name, char *buf, size_t size)
{
    if ((size_t)snprintf(buf, size, "%s/%s", dir, name) >= size)
        return cli_fail("--checkpoint %s: path too long", dir);
    return CLI_OK;
}

static int write_run_state(const char *dir, const run_state *s)
{
    char path[4096], tmp[4200];
    CLI_CHECK(state_path(dir, "run.txt", path, sizeof path));
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return cli_fail("%s: cannot write: %s", tmp, strerror(errno));
    fprintf(f, "tessera-train 1\nseed %llu\nbatch %lld\nsamples %lld\n",
            (unsigned long long)s->seed, s->batch, s->samples);
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok && rename(tmp, path) == 0;
    if (!ok) {
        unlink(tmp);
        return cli_fail("%s: cannot write: %s", path, strerror(errno));
    }
    return CLI_OK;
}

static int check_run_state(const char *dir, const run_state *now)
{
    char path[4096];
    CLI_CHECK(state_path(dir, "run.txt", path, sizeof path));
    FILE *f = fopen(path, "r");
    if (!f)
        return cli_fail("--resume: %s: cannot open: %s", path, strerror(errno));
    unsigned long long seed;
    run_state was;
    int got = fscanf(f, "tessera-train 1 seed %llu batch %lld samples %lld", &seed, &was.batch,
                     &was.samples);
    fclose(f);
    if (got != 3)
        return cli_fail("--resume: %s is not a run description of 'tessera train'", path);
    const char *what = seed != now->seed             ? "--seed"
                       : was.batch != now->batch     ? "--batch"
                       : was.samples != now->samples ? "the number of training samples"
                                                     : NULL;
    if (!what)
        return CLI_OK;
    return cli_fail("--resume: the checkpoint in %s was made with seed %llu, batch %lld and %lld "
                    "training samples; this run has %llu, %lld and %lld (%s differs). An exact "
                    "continuation needs the same ones.",
                    dir, seed, was.batch, was.samples, (unsigned long long)now->seed, now->batch,
                    now->samples, what);
}

/* ----------------------------------------------------------------- run */

typedef struct {
    const train_options *o;
    tsr_trainer *trainer;
    const cli_dataset *train, *val;
    bool acc; /* the loss is cross-entropy: accuracies make sense */
    const char *log_path, *plot_path;
    char ckpt_path[4096];
    train_log log;
} train_run;

static int train_epoch(train_run *r, int64_t epoch, int64_t *order, batch_buffers *b)
{
    const train_options *o = r->o;
    int64_t n = r->train->x.dims[0];
    train_row row = {.epoch = epoch + 1, .val_loss = NAN, .val_acc = NAN};
    row.lr = tsr_trainer_lr(r->trainer);
    shuffle(order, n, o->seed, epoch);
    train_progress bar;
    train_progress_start(&bar, epoch + 1, o->epochs, n);
    double loss_sum = 0, eval_sum = 0;
    int64_t correct = 0;
    bool acc = r->acc && !o->no_train_acc;
    for (int64_t start = 0; start < n; start += o->batch) {
        int64_t m = n - start < o->batch ? n - start : o->batch;
        batch_gather(b, r->train, order + start, m);
        if (acc)
            CLI_CHECK(batch_evaluate(r->trainer, b, true, &eval_sum, &correct));
        double loss;
        if (tsr_trainer_step(r->trainer, 1, &b->x, &b->y, &loss) != TSR_OK)
            return cli_fail_status(NULL);
        if (!isfinite(loss))
            return cli_fail("epoch %lld, step %lld: the loss is %g; training diverged (try a "
                            "smaller --lr)",
                            (long long)epoch + 1, (long long)tsr_trainer_step_count(r->trainer),
                            loss);
        loss_sum += loss * (double)m;
        int64_t done = start + m;
        train_progress_update(&bar, done, loss_sum / (double)done,
                              acc ? (double)correct / (double)done : NAN, done == n);
    }
    row.seconds = cli_now_seconds() - bar.start;
    row.train_loss = loss_sum / (double)n;
    row.train_acc = acc ? (double)correct / (double)n : NAN;
    if (r->val) {
        double t0 = cli_now_seconds();
        CLI_CHECK(
            evaluate_set(r->trainer, r->val, o->eval_batch, r->acc, &row.val_loss, &row.val_acc));
        row.val_seconds = cli_now_seconds() - t0;
    } else {
        row.val_seconds = NAN;
    }
    if (tsr_trainer_epoch_end(r->trainer, row.val_loss) != TSR_OK)
        return cli_fail_status(NULL);
    row.step = tsr_trainer_step_count(r->trainer);
    train_progress_finish(&bar, &row, r->val != NULL);
    if (o->checkpoint && tsr_trainer_save_checkpoint(r->trainer, r->ckpt_path) != TSR_OK)
        return cli_fail_status(r->ckpt_path);
    CLI_CHECK(train_log_append(&r->log, &row));
    CLI_CHECK(train_log_write(&r->log, r->log_path));
    if (r->plot_path)
        train_plot(r->log_path, r->plot_path, r->log.n, r->val != NULL, r->acc);
    return CLI_OK;
}

static int train_all(train_run *r)
{
    const train_options *o = r->o;
    int64_t start_epoch = 0;
    run_state state = {o->seed, o->batch, (long long)r->train->x.dims[0]};
    if (o->checkpoint) {
        CLI_CHECK(state_path(o->checkpoint, "trainer.ckpt", r->ckpt_path, sizeof r->ckpt_path));
        if (o->resume) {
            if (access(r->ckpt_path, F_OK) != 0)
                return cli_fail("--resume: no checkpoint in %s (%s is missing); run without "
                                "--resume to start",
                                o->checkpoint, r->ckpt_path);
            CLI_CHECK(check_run_state(o->checkpoint, &state));
            if (tsr_trainer_load_checkpoint(r->trainer, r->ckpt_path) != TSR_OK)
                return cli_fail_status(r->ckpt_path);
            start_epoch = tsr_trainer_epoch_count(r->trainer);
            fprintf(stderr, "resuming after epoch %lld (step %lld) from %s\n",
                    (long long)start_epoch, (long long)tsr_trainer_step_count(r->trainer),
                    r->ckpt_path);
        } else {
            CLI_CHECK(cli_make_dir(o->checkpoint));
            CLI_CHECK(write_run_state(o->checkpoint, &state));
        }
    }
    /* A resumed run keeps the log of the epochs the checkpoint holds. */
    if (o->resume)
        CLI_CHECK(train_log_read(&r->log, r->log_path, start_epoch));
    if (start_epoch >= o->epochs)
        fprintf(stderr,
                "the checkpoint has %lld epochs already (--epochs %lld): nothing to "
                "train\n",
                (long long)start_epoch, o->epochs);
    int64_t *order = malloc(sizeof *order * (size_t)r->train->x.dims[0]);
    batch_buffers b;
    int rc = order ? batch_alloc(&b, r->train, o->batch) : cli_fail("out of memory");
    cli_stop_catch("\ntessera train: stopping after this epoch (again to stop now)\n");
    for (int64_t e = start_epoch; e < o->epochs && rc == CLI_OK && !cli_stop_requested(); e++)
        rc = train_epoch(r, e, order, &b);
    cli_stop_release();
    if (order)
        batch_free(&b);
    free(order);
    return rc;
}

static int train_main(int argc, char **argv)
{
    train_options o = {0};
    bool help = false;
    tsr_graph *g = NULL;
    cli_dataset train = {0}, val = {0};
    char *log_path = NULL, *plot_path = NULL;
    train_run r = {0};
    int rc = parse_options(argc, argv, &o, &help);
    if (rc != CLI_OK || help)
        return rc;
    log_path = o.log ? strdup(o.log) : cli_path_beside(o.out, ".csv");
    plot_path = o.no_plot ? NULL : o.plot ? strdup(o.plot) : cli_path_beside(o.out, ".png");
    if (!log_path || (!o.no_plot && !plot_path)) {
        rc = cli_fail("out of memory");
        goto done;
    }
    if ((rc = cli_check_writable("--out", o.out)) != CLI_OK ||
        (rc = cli_check_writable("--log", log_path)) != CLI_OK ||
        (plot_path && (rc = cli_check_writable("--plot", plot_path)) != CLI_OK))
        goto done;
    if ((rc = cli_load_model(o.model, &g)) != CLI_OK)
        goto done;
    cli_data_spec spec;
    if ((rc = describe_model(g, &o, &spec, &r.acc)) != CLI_OK)
        goto done;
    if ((rc = cli_dataset_load(o.data, "train", "--data", &spec, &train)) != CLI_OK ||
        (o.val && (rc = cli_dataset_load(o.val, "t10k", "--val", &spec, &val)) != CLI_OK))
        goto done;
    if ((rc = make_trainer(g, &o, &r.trainer)) != CLI_OK)
        goto done;
    r.o = &o;
    r.train = &train;
    r.val = o.val ? &val : NULL;
    r.log_path = log_path;
    r.plot_path = plot_path;
    fprintf(stderr, "training %s on %lld samples from %s%s%s, %lld epoch%s, batch %lld, %s\n",
            o.model, (long long)train.x.dims[0], train.source, o.val ? ", validating on " : "",
            o.val ? val.source : "", o.epochs, o.epochs == 1 ? "" : "s", o.batch, o.optimizer);
    if ((rc = train_all(&r)) != CLI_OK)
        goto done;
    if (tsr_trainer_save_onnx(r.trainer, o.model, o.out) != TSR_OK) {
        rc = cli_fail_status(o.out);
        goto done;
    }
    printf("trained model -> %s\nlog -> %s\n", o.out, log_path);
    if (plot_path && access(plot_path, F_OK) == 0)
        printf("plot -> %s\n", plot_path);
    if (cli_stop_requested()) {
        fprintf(stderr, "tessera train: stopped by %s after epoch %lld of %lld%s\n",
                cli_stop_requested(), (long long)tsr_trainer_epoch_count(r.trainer), o.epochs,
                o.checkpoint ? "; --resume continues from the checkpoint" : "");
        rc = CLI_FAIL;
    }
done:
    train_log_free(&r.log);
    tsr_trainer_destroy(r.trainer);
    tsr_graph_destroy(g);
    cli_dataset_free(&train);
    cli_dataset_free(&val);
    free(log_path);
    free(plot_path);
    return rc;
}
