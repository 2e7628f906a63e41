/* The trainer's C API: argument and state errors, and that a failed call
 * leaves the trainer as it was. The numerics are tested against PyTorch in
 * tests/python/test_train.py. */
#include "harness.h"

#include <tessera.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* y = x W + b, x [batch, 4], 3 classes */
static tsr_graph *linear_model(void)
{
    tsr_graph *g = NULL;
    float w[12], b[3] = {0.1f, -0.2f, 0.3f};
    for (int i = 0; i < 12; i++)
        w[i] = (float)(i % 5) * 0.1f - 0.2f;
    tsr_tensor wt = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {4, 3}, .data = w};
    tsr_tensor bt = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {3}, .data = b};
    const char *batch[2] = {"batch", NULL};
    int64_t dims[2] = {-1, 4};
    const char *mm_in[2] = {"x", "W"}, *add_in[2] = {"m", "b"}, *m = "m", *y = "y";
    if (tsr_graph_create(&g) != TSR_OK ||
        tsr_graph_add_input(g, "x", TSR_FLOAT32, 2, dims, batch) ||
        tsr_graph_add_parameter(g, "W", &wt) || tsr_graph_add_parameter(g, "b", &bt) ||
        tsr_graph_add_node(g, "MatMul", "", NULL, 2, mm_in, 1, &m, 0, NULL) ||
        tsr_graph_add_node(g, "Add", "", NULL, 2, add_in, 1, &y, 0, NULL) ||
        tsr_graph_add_output(g, "y")) {
        tsr_graph_destroy(g);
        return NULL;
    }
    return g;
}

static void test_create_errors(tsr_graph *g)
{
    tsr_loss_options loss;
    tsr_optimizer_options opt;
    tsr_loss_options_init(&loss);
    tsr_optimizer_options_init(&opt);
    tsr_trainer *t = (tsr_trainer *)1;
    CHECK_FAILS(tsr_trainer_create(NULL, &loss, &opt, NULL, 0, &t), TSR_ERR_INVALID_ARGUMENT,
                "model, loss, optimizer and trainer_out are required");
    CHECK(t == (tsr_trainer *)1 || t == NULL);
    opt.lr = -1;
    CHECK_FAILS(tsr_trainer_create(g, &loss, &opt, NULL, 0, &t), TSR_ERR_INVALID_ARGUMENT,
                "lr must be >= 0");
    CHECK(t == NULL);
    tsr_optimizer_options_init(&opt);
    opt.schedule = TSR_SCHEDULE_PLATEAU;
    opt.factor = 1.5;
    CHECK_FAILS(tsr_trainer_create(g, &loss, &opt, NULL, 0, &t), TSR_ERR_INVALID_ARGUMENT,
                "factor");
    tsr_optimizer_options_init(&opt);
    loss.kind = TSR_LOSS_HUBER;
    loss.huber_delta = 0;
    CHECK_FAILS(tsr_trainer_create(g, &loss, &opt, NULL, 0, &t), TSR_ERR_INVALID_ARGUMENT,
                "huber_delta");
    tsr_loss_options_init(&loss);
    loss.output = "nope";
    CHECK_FAILS(tsr_trainer_create(g, &loss, &opt, NULL, 0, &t), TSR_ERR_NOT_FOUND,
                "no output 'nope'");
    tsr_loss_options_init(&loss);
    tsr_compile_options co;
    tsr_compile_options_init(&co);
    co.device = "no-such-device";
    CHECK_FAILS(tsr_trainer_create(g, &loss, &opt, &co, 0, &t), TSR_ERR_UNSUPPORTED,
                "no-such-device");
    CHECK(t == NULL);
}

/* Everything a trainer holds (parameters, optimizer slots, counts, schedule, generator) as
 * its checkpoint's bytes, malloc'd; NULL on failure. */
static unsigned char *snapshot(const tsr_trainer *t, const char *path, long *size_out)
{
    unsigned char *data = NULL;
    FILE *f = NULL;
    if (tsr_trainer_save_checkpoint(t, path) != TSR_OK || !(f = fopen(path, "rb")) ||
        fseek(f, 0, SEEK_END) != 0 || (*size_out = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) != 0)
        goto cleanup;
    data = malloc((size_t)*size_out);
    if (data && fread(data, 1, (size_t)*size_out, f) != (size_t)*size_out) {
        free(data);
        data = NULL;
    }
cleanup:
    if (f)
        fclose(f);
    return data;
}

static void test_steps_and_params(tsr_graph *g)
{
    tsr_loss_options loss;
    tsr_optimizer_options opt;
    tsr_loss_options_init(&loss);
    tsr_optimizer_options_init(&opt);
    opt.kind = TSR_OPTIMIZER_ADAM;
    tsr_trainer *t = NULL;
    CHECK_OK(tsr_trainer_create(g, &loss, &opt, NULL, 42, &t));
    if (!t)
        return;
    float x[8] = {1, 2, 3, 4, -1, 0.5f, 0, 2};
    int64_t labels[2] = {0, 2}, bad_labels[2] = {0, 3};
    tsr_tensor in = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {2, 4}, .data = x};
    tsr_tensor target = {.dtype = TSR_INT64, .rank = 1, .dims = {2}, .data = labels};
    tsr_tensor bad = {.dtype = TSR_INT64, .rank = 1, .dims = {2}, .data = bad_labels};
    double loss_value = NAN;
    CHECK_FAILS(tsr_trainer_step(t, 1, &in, &bad, &loss_value), TSR_ERR_INVALID_ARGUMENT,
                "label 3 at position 1 is out of range for 3 classes");
    CHECK(tsr_trainer_step_count(t) == 0);
    CHECK_OK(tsr_trainer_step(t, 1, &in, &target, &loss_value));
    CHECK(isfinite(loss_value) && loss_value > 0);
    CHECK(tsr_trainer_step_count(t) == 1);

    /* Failed calls after a step (the Adam slots are no longer zero) change nothing. */
    char dir[] = "/tmp/tsr_test_train_XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/state.ckpt", dir);
    long size_before = 0, size_after = 0;
    unsigned char *before = snapshot(t, path, &size_before);
    CHECK(before != NULL);
    CHECK_FAILS(tsr_trainer_step(t, 0, NULL, &target, &loss_value), TSR_ERR_INVALID_ARGUMENT,
                "1 inputs, 0 were given");
    CHECK_FAILS(tsr_trainer_step(t, 1, &in, NULL, &loss_value), TSR_ERR_INVALID_ARGUMENT, "target");
    CHECK_FAILS(tsr_trainer_step(t, 1, &in, &bad, &loss_value), TSR_ERR_INVALID_ARGUMENT,
                "out of range");
    float nan_w[12];
    for (int i = 0; i < 12; i++)
        nan_w[i] = NAN;
    tsr_tensor wrong_w = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {3, 4}, .data = nan_w};
    CHECK_FAILS(tsr_trainer_set_param(t, "W", &wrong_w), TSR_ERR_SHAPE,
                "'W' is float32 [4, 3], the tensor given is float32 [3, 4]");
    CHECK_FAILS(tsr_trainer_load_checkpoint(t, "/nonexistent-dir/x.ckpt"), TSR_ERR_IO,
                "/nonexistent-dir/x.ckpt");
    CHECK_FAILS(tsr_trainer_use_ema(t, 1), TSR_ERR_INVALID_ARGUMENT, "no moving average");
    unsigned char *after = snapshot(t, path, &size_after);
    CHECK(after != NULL && size_after == size_before);
    CHECK(before && after && memcmp(before, after, (size_t)size_before) == 0);
    free(before);
    free(after);
    remove(path);
    rmdir(dir);

    CHECK(tsr_trainer_num_params(t) == 2);
    tsr_trainer_param p;
    CHECK_OK(tsr_trainer_param_info(t, 0, &p));
    CHECK(p.trainable && strcmp(p.name, "W") == 0 && p.value.rank == 2);
    CHECK_FAILS(tsr_trainer_param_info(t, 2, &p), TSR_ERR_INVALID_ARGUMENT, "2");
    float wrong[3] = {1.5f, -2.5f, 0.25f}, got[3];
    tsr_tensor wrong_t = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {3}, .data = wrong};
    tsr_tensor got_t = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {3}, .data = got};
    CHECK_FAILS(tsr_trainer_get_param(t, "W", &wrong_t), TSR_ERR_SHAPE, "[4, 3]");
    CHECK_FAILS(tsr_trainer_set_param(t, "missing", &wrong_t), TSR_ERR_NOT_FOUND,
                "no parameter 'missing'");
    CHECK_OK(tsr_trainer_set_param(t, "b", &wrong_t));
    CHECK_OK(tsr_trainer_get_param(t, "b", &got_t));
    CHECK(memcmp(got, wrong, sizeof got) == 0);

    CHECK_FAILS(tsr_trainer_epoch_end(NULL, 0), TSR_ERR_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(tsr_trainer_save_checkpoint(t, "/nonexistent-dir/x.ckpt"), TSR_ERR_IO,
                "/nonexistent-dir/x.ckpt");
    CHECK_FAILS(tsr_trainer_save_onnx(t, "/nonexistent.onnx", "/tmp/out.onnx"), TSR_ERR_IO,
                "/nonexistent.onnx");
    tsr_trainer_stats stats;
    CHECK_OK(tsr_trainer_get_stats(t, &stats));
    CHECK(stats.n_trainable == 2 && stats.n_trainable_elements == 15);
    CHECK(stats.optimizer_bytes == 2 * 15 * sizeof(float));
    tsr_trainer_destroy(t);
    tsr_trainer_destroy(NULL);
}

int main(void)
{
    tsr_graph *g = linear_model();
    CHECK(g != NULL);
    if (g) {
        test_create_errors(g);
        test_steps_and_params(g);
    }
    tsr_graph_destroy(g);
    return tsr_test_summary("test_train");
}
