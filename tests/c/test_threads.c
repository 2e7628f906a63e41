/* Threads: plans used from several threads at once.
 *
 * Every thread creates, reshapes and runs its own plans of the same graphs
 * and of different graphs, on ref and cpu, switching batch sizes as it
 * goes, and trains its own trainers; then all threads share one plan per
 * graph and device. Every result must equal
 * the single-threaded run of the same plan configuration, and each
 * thread's tsr_last_error must be its own. The worker threads record what
 * they find and main checks it (the harness's counters are not atomic). */
#include "harness.h"
#include "tessera.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_THREADS 4
#define N_BATCHES 4
#define N_ITERS 6
#define N_SHARED_ITERS 16
#define N_DEVICES 2
#define MAX_IO 4

static const int64_t batches[N_BATCHES] = {1, 3, 2, 5};
static const char *const devices[N_DEVICES] = {"ref", "cpu"};

static float lcg_uniform(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)((*state >> 8) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static void fill(float *p, int64_t n, uint32_t seed)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = lcg_uniform(&seed);
}

static void add_float_constant(tsr_graph *g, const char *name, int rank, const int64_t *dims,
                               uint32_t seed, int parameter)
{
    tsr_tensor t = {.dtype = TSR_FLOAT32, .rank = rank};
    memcpy(t.dims, dims, sizeof(int64_t) * (size_t)rank);
    int64_t n = tsr_tensor_numel(&t);
    float *data = malloc(sizeof(float) * (size_t)n);
    fill(data, n, seed);
    t.data = data;
    CHECK_OK(parameter ? tsr_graph_add_parameter(g, name, &t)
                       : tsr_graph_add_constant(g, name, &t));
    free(data);
}

static void node(tsr_graph *g, const char *op, const char *name, int n_in, const char *const *in,
                 const char *out, int n_attrs, const tsr_attr *attrs)
{
    CHECK_OK(
        tsr_graph_add_node(g, op, "", name, n_in, in, 1, (const char *[]){out}, n_attrs, attrs));
}

/* x [N, 4, 9, 9] -> Conv 3x3 (8 channels) -> Relu -> MaxPool 2x2 ->
 * GlobalAveragePool -> Flatten -> MatMul [8, 5] -> Add -> y [N, 5]. */
static tsr_graph *small_cnn(void)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 4, (const int64_t[]){-1, 4, 9, 9},
                                 (const char *[]){"N", NULL, NULL, NULL}));
    add_float_constant(g, "w", 4, (const int64_t[]){8, 4, 3, 3}, 11, 1);
    add_float_constant(g, "b", 1, (const int64_t[]){8}, 12, 1);
    add_float_constant(g, "fc", 2, (const int64_t[]){8, 5}, 13, 1);
    add_float_constant(g, "fb", 1, (const int64_t[]){5}, 14, 1);
    const int64_t pads[] = {1, 1, 1, 1}, kernel[] = {3, 3}, pool[] = {2, 2};
    node(g, "Conv", "conv", 3, (const char *[]){"x", "w", "b"}, "c", 2,
         (tsr_attr[]){TSR_ATTR_INTS("pads", pads, 4), TSR_ATTR_INTS("kernel_shape", kernel, 2)});
    node(g, "Relu", "relu", 1, (const char *[]){"c"}, "r", 0, NULL);
    node(g, "MaxPool", "pool", 1, (const char *[]){"r"}, "p", 2,
         (tsr_attr[]){TSR_ATTR_INTS("kernel_shape", pool, 2), TSR_ATTR_INTS("strides", pool, 2)});
    node(g, "GlobalAveragePool", "gap", 1, (const char *[]){"p"}, "a", 0, NULL);
    node(g, "Flatten", "flat", 1, (const char *[]){"a"}, "f", 0, NULL);
    node(g, "MatMul", "fc_mm", 2, (const char *[]){"f", "fc"}, "m", 0, NULL);
    node(g, "Add", "fc_add", 2, (const char *[]){"m", "fb"}, "y", 0, NULL);
    CHECK_OK(tsr_graph_add_output(g, "y"));
    return g;
}

/* x [N, 16] -> MatMul [16, 32] -> Add -> Tanh -> MatMul [32, 3] -> Softmax. */
static tsr_graph *small_mlp(void)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 2, (const int64_t[]){-1, 16},
                                 (const char *[]){"N", NULL}));
    add_float_constant(g, "w1", 2, (const int64_t[]){16, 32}, 21, 0);
    add_float_constant(g, "b1", 1, (const int64_t[]){32}, 22, 0);
    add_float_constant(g, "w2", 2, (const int64_t[]){32, 3}, 23, 0);
    node(g, "MatMul", "mm1", 2, (const char *[]){"x", "w1"}, "h", 0, NULL);
    node(g, "Add", "add1", 2, (const char *[]){"h", "b1"}, "hb", 0, NULL);
    node(g, "Tanh", "tanh", 1, (const char *[]){"hb"}, "t", 0, NULL);
    node(g, "MatMul", "mm2", 2, (const char *[]){"t", "w2"}, "z", 0, NULL);
    node(g, "Softmax", "softmax", 1, (const char *[]){"z"}, "y", 1,
         (tsr_attr[]){TSR_ATTR_I("axis", -1)});
    CHECK_OK(tsr_graph_add_output(g, "y"));
    return g;
}

/* One graph and everything the threads compare against: its inputs at
 * each batch size, the output shapes, and the single-threaded outputs on
 * each device. */
typedef struct {
    const char *name;
    tsr_graph *graph;
    int n_in, n_out;
    tsr_tensor inputs[N_BATCHES][MAX_IO];
    tsr_tensor expected[N_DEVICES][N_BATCHES][MAX_IO];
} test_case;

static void compile_options(tsr_compile_options *o, int device)
{
    tsr_compile_options_init(o);
    o->device = devices[device];
    o->threads = 2;
}

static void free_tensors(tsr_tensor *t, int n)
{
    for (int i = 0; i < n; i++)
        free(t[i].data);
}

/* Output buffers shaped like the expected outputs. */
static int alloc_like(const tsr_tensor *like, int n, tsr_tensor *out)
{
    for (int i = 0; i < n; i++) {
        out[i] = like[i];
        out[i].data = calloc(1, tsr_tensor_bytes(&like[i]) + 1);
        if (!out[i].data)
            return 0;
    }
    return 1;
}

/* Whether n floats agree with the single-threaded ones: bit for bit on
 * ref, whose kernels split no sums between threads; on cpu within 1e-6 of
 * their largest magnitude, in case a oneDNN kernel adds in another order
 * (a race would be off by far more). */
static int same_floats(const float *got, const float *want, int64_t n, int device)
{
    if (device == 0)
        return memcmp(got, want, sizeof(float) * (size_t)n) == 0;
    double scale = 1.0, err = 0.0;
    for (int64_t k = 0; k < n; k++) {
        scale = fmax(scale, fabs((double)want[k]));
        err = fmax(err, fabs((double)got[k] - want[k]));
    }
    return err <= 1e-6 * scale; /* false for NaN */
}

static int same_outputs(const tsr_tensor *got, const tsr_tensor *want, int n, int device)
{
    for (int i = 0; i < n; i++)
        if (!same_floats(got[i].data, want[i].data, tsr_tensor_numel(&want[i]), device))
            return 0;
    return 1;
}

static void case_init(test_case *c, const char *name, tsr_graph *graph)
{
    memset(c, 0, sizeof *c);
    c->name = name;
    c->graph = graph;
    c->n_in = tsr_graph_num_inputs(graph);
    c->n_out = tsr_graph_num_outputs(graph);
    CHECK(c->n_in <= MAX_IO && c->n_out <= MAX_IO);
    for (int b = 0; b < N_BATCHES; b++)
        for (int i = 0; i < c->n_in; i++) {
            tsr_value_info info;
            CHECK_OK(tsr_graph_input_info(graph, i, &info));
            tsr_tensor *t = &c->inputs[b][i];
            *t = (tsr_tensor){.dtype = info.dtype, .rank = info.rank};
            memcpy(t->dims, info.dims, sizeof t->dims);
            t->dims[0] = batches[b];
            t->data = malloc(tsr_tensor_bytes(t));
            fill(t->data, tsr_tensor_numel(t), (uint32_t)(100 * b + i + 1));
        }
    /* The single-threaded reference: one plan per device, run here. */
    for (int d = 0; d < N_DEVICES; d++) {
        tsr_compile_options o;
        compile_options(&o, d);
        tsr_plan *p = NULL;
        CHECK_OK(tsr_plan_create(graph, &o, &p));
        for (int b = 0; b < N_BATCHES && p; b++) {
            CHECK_OK(tsr_plan_reshape(p, c->n_in, c->inputs[b]));
            for (int o_ = 0; o_ < c->n_out; o_++) {
                CHECK_OK(tsr_plan_output_desc(p, o_, &c->expected[d][b][o_]));
                CHECK(c->expected[d][b][o_].dtype == TSR_FLOAT32); /* compared as floats */
            }
            CHECK(alloc_like(c->expected[d][b], c->n_out, c->expected[d][b]));
            CHECK_OK(tsr_plan_run(p, c->n_in, c->inputs[b], c->n_out, c->expected[d][b]));
        }
        tsr_plan_destroy(p);
    }
    /* The two devices agree (each kernel's accuracy is tested elsewhere;
     * this keeps the reference of the comparisons below meaningful). */
    for (int b = 0; b < N_BATCHES; b++)
        for (int o_ = 0; o_ < c->n_out; o_++) {
            const float *r = c->expected[0][b][o_].data, *u = c->expected[1][b][o_].data;
            int64_t n = tsr_tensor_numel(&c->expected[0][b][o_]);
            double err = 0.0, scale = 1.0;
            for (int64_t k = 0; k < n; k++) {
                err = fmax(err, fabs((double)r[k] - u[k]));
                scale = fmax(scale, fabs((double)r[k]));
            }
            if (err > 1e-4 * scale)
                fprintf(stderr, "%s batch %lld output %d: cpu differs from ref by %g\n", c->name,
                        (long long)batches[b], o_, err);
            CHECK(err <= 1e-4 * scale);
        }
}

static void case_free(test_case *c)
{
    for (int b = 0; b < N_BATCHES; b++) {
        free_tensors(c->inputs[b], c->n_in);
        for (int d = 0; d < N_DEVICES; d++)
            free_tensors(c->expected[d][b], c->n_out);
    }
    tsr_graph_destroy(c->graph);
}

#define N_CASES 3
static test_case cases[N_CASES];
static pthread_barrier_t barrier;
static tsr_plan *shared[N_CASES][N_DEVICES];

typedef struct {
    int index;
    int runs, failures;
    char first_failure[512];
    int own_error; /* tsr_last_error still named this thread's value after the others failed */
} worker;

static void fail(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(worker *w, const char *fmt, ...)
{
    if (w->failures++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->first_failure, sizeof w->first_failure, fmt, ap);
        va_end(ap);
    }
}

/* Runs `p` on case c's batch b and compares with the single-threaded
 * outputs of device d. */
static void run_and_compare(worker *w, tsr_plan *p, const test_case *c, int d, int b)
{
    tsr_tensor out[MAX_IO];
    if (!alloc_like(c->expected[d][b], c->n_out, out)) {
        fail(w, "%s on %s, batch %lld: out of memory", c->name, devices[d], (long long)batches[b]);
        return;
    }
    w->runs++;
    if (tsr_plan_run(p, c->n_in, c->inputs[b], c->n_out, out) != TSR_OK)
        fail(w, "%s on %s, batch %lld: run failed: %s", c->name, devices[d], (long long)batches[b],
             tsr_last_error());
    else if (!same_outputs(out, c->expected[d][b], c->n_out, d))
        fail(w, "%s on %s, batch %lld: outputs differ from the single-threaded run", c->name,
             devices[d], (long long)batches[b]);
    free_tensors(out, c->n_out);
}

/* Trainers: the cnn trained for a few SGD steps (momentum) on batch 3
 * against a fixed target; its final "w" and "fc" are copied out. */
#define N_STEPS 3
#define W_SIZE (8 * 4 * 3 * 3)
#define FC_SIZE (8 * 5)
static float trained_w[N_DEVICES][W_SIZE], trained_fc[N_DEVICES][FC_SIZE];

static tsr_status train(int device, float *w_out, float *fc_out)
{
    const test_case *c = &cases[0];
    float target_data[3 * 5];
    fill(target_data, 3 * 5, 77);
    tsr_tensor target = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {3, 5}, .data = target_data};
    tsr_loss_options loss;
    tsr_loss_options_init(&loss);
    loss.kind = TSR_LOSS_MSE;
    tsr_optimizer_options opt;
    tsr_optimizer_options_init(&opt);
    opt.lr = 0.1;
    opt.momentum = 0.9;
    tsr_compile_options co;
    compile_options(&co, device);
    tsr_trainer *t = NULL;
    tsr_status st = tsr_trainer_create(c->graph, &loss, &opt, &co, 1, &t);
    for (int i = 0; i < N_STEPS && st == TSR_OK; i++)
        st = tsr_trainer_step(t, c->n_in, c->inputs[1], &target, NULL);
    tsr_tensor w = {.dtype = TSR_FLOAT32, .rank = 4, .dims = {8, 4, 3, 3}, .data = w_out};
    tsr_tensor fc = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {8, 5}, .data = fc_out};
    if (st == TSR_OK)
        st = tsr_trainer_get_param(t, "w", &w);
    if (st == TSR_OK)
        st = tsr_trainer_get_param(t, "fc", &fc);
    tsr_trainer_destroy(t);
    return st;
}

static void *work(void *arg)
{
    worker *w = arg;
    /* Own plans: each thread creates its own plan per case and device and
     * walks the batch sizes in its own order, so specializations are
     * created in several threads at once. */
    for (int c = 0; c < N_CASES; c++)
        for (int d = 0; d < N_DEVICES; d++) {
            tsr_compile_options o;
            compile_options(&o, d);
            tsr_plan *p = NULL;
            if (tsr_plan_create(cases[c].graph, &o, &p) != TSR_OK) {
                fail(w, "%s on %s: plan creation failed: %s", cases[c].name, devices[d],
                     tsr_last_error());
                continue;
            }
            for (int it = 0; it < N_ITERS; it++)
                run_and_compare(w, p, &cases[c], d, (w->index + it) % N_BATCHES);
            tsr_plan_destroy(p);
        }

    /* Own trainers, one per device. */
    for (int d = 0; d < N_DEVICES; d++) {
        float tw[W_SIZE], tfc[FC_SIZE];
        w->runs++;
        if (train(d, tw, tfc) != TSR_OK)
            fail(w, "training on %s failed: %s", devices[d], tsr_last_error());
        else if (!same_floats(tw, trained_w[d], W_SIZE, d) ||
                 !same_floats(tfc, trained_fc[d], FC_SIZE, d))
            fail(w, "training on %s: parameters differ from the single-threaded run", devices[d]);
    }

    /* Errors are per thread: each fails naming its own value, then waits
     * until every thread has failed too before reading its message. */
    char name[32];
    snprintf(name, sizeof name, "no_such_value_%d", w->index);
    tsr_graph *g = NULL;
    if (tsr_graph_create(&g) == TSR_OK && tsr_graph_add_output(g, name) == TSR_OK)
        fail(w, "adding the output '%s', which does not exist, succeeded", name);
    pthread_barrier_wait(&barrier);
    w->own_error = strstr(tsr_last_error(), name) != NULL;
    tsr_graph_destroy(g);

    /* Shared plans: every thread runs the same plans at once, at batch
     * sizes that differ between threads, so reshapes and runs overlap. */
    pthread_barrier_wait(&barrier);
    for (int it = 0; it < N_SHARED_ITERS; it++)
        for (int c = 0; c < N_CASES; c++)
            for (int d = 0; d < N_DEVICES; d++)
                run_and_compare(w, shared[c][d], &cases[c], d, (w->index + it) % N_BATCHES);
    return NULL;
}

int main(void)
{
    tsr_graph *cnn = small_cnn();
    tsr_graph *grad = NULL;
    CHECK_OK(
        tsr_graph_gradient(cnn, 1, (const char *[]){"y"}, 2, (const char *[]){"x", "w"}, &grad));
    case_init(&cases[0], "cnn", cnn);
    case_init(&cases[1], "mlp", small_mlp());
    case_init(&cases[2], "cnn gradient", grad);

    /* Training changes the parameters (so the comparisons below compare
     * trained values), on both devices alike. */
    float initial_w[W_SIZE];
    fill(initial_w, W_SIZE, 11);
    for (int d = 0; d < N_DEVICES; d++) {
        CHECK_OK(train(d, trained_w[d], trained_fc[d]));
        CHECK(memcmp(initial_w, trained_w[d], sizeof initial_w) != 0);
    }
    double train_err = 0.0;
    for (int i = 0; i < W_SIZE; i++)
        train_err = fmax(train_err, fabs((double)trained_w[0][i] - trained_w[1][i]));
    CHECK(train_err < 1e-4);

    /* The shared plans are created and first specialized here, on the main
     * thread, and then run on the others. */
    for (int c = 0; c < N_CASES; c++)
        for (int d = 0; d < N_DEVICES; d++) {
            tsr_compile_options o;
            compile_options(&o, d);
            CHECK_OK(tsr_plan_create(cases[c].graph, &o, &shared[c][d]));
            CHECK_OK(tsr_plan_reshape(shared[c][d], cases[c].n_in, cases[c].inputs[0]));
        }
    /* On cpu, oneDNN runs the convolution and both of its gradients (whose
     * scratchpad must follow the running thread). */
    tsr_plan_stats stats;
    CHECK_OK(tsr_plan_get_stats(shared[2][1], &stats));
    CHECK(stats.n_backends >= 1 && strcmp(stats.backend_names[0], "dnnl") == 0);
    fprintf(stderr, "cnn gradient on cpu: %d of %d kernel calls on %s\n", stats.backend_steps[0],
            stats.n_steps, stats.backend_names[0]);
    CHECK(stats.backend_steps[0] >= 3);
    if (tsr_test_failures)
        return tsr_test_summary("test_threads");

    pthread_barrier_init(&barrier, NULL, N_THREADS);
    pthread_t threads[N_THREADS];
    worker workers[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        workers[t] = (worker){.index = t};
        CHECK(pthread_create(&threads[t], NULL, work, &workers[t]) == 0);
    }
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(threads[t], NULL);
        const worker *w = &workers[t];
        if (w->failures)
            fprintf(stderr, "thread %d: %d of %d runs failed; first: %s\n", t, w->failures, w->runs,
                    w->first_failure);
        CHECK(w->failures == 0);
        CHECK(w->runs == N_CASES * N_DEVICES * (N_ITERS + N_SHARED_ITERS) + N_DEVICES);
        CHECK(w->own_error);
    }
    pthread_barrier_destroy(&barrier);

    /* The shared plans still work on this thread. */
    for (int c = 0; c < N_CASES; c++)
        for (int d = 0; d < N_DEVICES; d++) {
            worker w = {0};
            run_and_compare(&w, shared[c][d], &cases[c], d, 3);
            if (w.failures)
                fprintf(stderr, "main thread: %s\n", w.first_failure);
            CHECK(w.failures == 0);
            tsr_plan_destroy(shared[c][d]);
        }
    for (int c = 0; c < N_CASES; c++)
        case_free(&cases[c]);
    return tsr_test_summary("test_threads");
}
