#include "fuzz.h"

#include <sanitizer/allocator_interface.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SCRATCH 4

static char scratch_paths[MAX_SCRATCH][4096];
static char scratch_suffixes[MAX_SCRATCH][64];
static int n_scratch;

static void remove_scratch(void)
{
    for (int i = 0; i < n_scratch; i++)
        unlink(scratch_paths[i]);
}

static size_t allocated;

static void count_malloc(const volatile void *p, size_t size)
{
    allocated += size;
}

static void ignore_free(const volatile void *p) {}

void fuzz_init(void)
{
    setenv("OMP_NUM_THREADS", "1", 1);
    unsetenv("TSR_VERBOSE");
    atexit(remove_scratch);
    __sanitizer_install_malloc_and_free_hooks(count_malloc, ignore_free);
}

size_t fuzz_allocated(void)
{
    return allocated;
}

void fuzz_check_load(size_t before, size_t size, const char *what)
{
    size_t used = allocated - before;
    if (used <= FUZZ_LOAD_BYTES(size))
        return;
    printf("fuzz: %s allocated %zu bytes for a %zu-byte input (bound %zu)\n", what, used, size,
           FUZZ_LOAD_BYTES(size));
    fflush(stdout);
    abort();
}

const char *fuzz_scratch_path(const char *suffix)
{
    for (int i = 0; i < n_scratch; i++)
        if (strcmp(scratch_suffixes[i], suffix) == 0)
            return scratch_paths[i];
    if (n_scratch == MAX_SCRATCH || strlen(suffix) >= sizeof scratch_suffixes[0])
        return NULL;
    const char *dir = getenv("TMPDIR");
    strcpy(scratch_suffixes[n_scratch], suffix);
    char *path = scratch_paths[n_scratch++];
    snprintf(path, sizeof scratch_paths[0], "%s/tsr-fuzz-%ld%s", dir && *dir ? dir : "/tmp",
             (long)getpid(), suffix);
    return path;
}

const char *fuzz_write_file(const uint8_t *data, size_t size, const char *suffix)
{
    const char *path = fuzz_scratch_path(suffix);
    FILE *f = path ? fopen(path, "wb") : NULL;
    if (!f)
        return NULL;
    int ok = fwrite(data, 1, size, f) == size;
    ok = fclose(f) == 0 && ok;
    return ok ? path : NULL;
}

int fuzz_mul_bounded(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > FUZZ_MAX_BYTES / a)
        return 0;
    *out = a * b;
    return *out <= FUZZ_MAX_BYTES;
}

tsr_status fuzz_tiny_trainer(tsr_trainer **trainer_out)
{
    *trainer_out = NULL;
    tsr_graph *g = NULL;
    float w[12], b[3] = {0.1f, -0.2f, 0.3f};
    for (int i = 0; i < 12; i++)
        w[i] = (float)(i % 5) * 0.1f - 0.2f;
    tsr_tensor wt = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {4, 3}, .data = w};
    tsr_tensor bt = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {3}, .data = b};
    const char *batch[2] = {"batch", NULL};
    const int64_t dims[2] = {-1, 4};
    const char *mm_in[2] = {"x", "W"}, *add_in[2] = {"m", "b"}, *m = "m", *y = "y";
    tsr_status st;
    if ((st = tsr_graph_create(&g)) != TSR_OK ||
        (st = tsr_graph_add_input(g, "x", TSR_FLOAT32, 2, dims, batch)) != TSR_OK ||
        (st = tsr_graph_add_parameter(g, "W", &wt)) != TSR_OK ||
        (st = tsr_graph_add_parameter(g, "b", &bt)) != TSR_OK ||
        (st = tsr_graph_add_node(g, "MatMul", "", NULL, 2, mm_in, 1, &m, 0, NULL)) != TSR_OK ||
        (st = tsr_graph_add_node(g, "Add", "", NULL, 2, add_in, 1, &y, 0, NULL)) != TSR_OK ||
        (st = tsr_graph_add_output(g, "y")) != TSR_OK)
        goto cleanup;
    tsr_loss_options loss;
    tsr_optimizer_options opt;
    tsr_compile_options co;
    tsr_loss_options_init(&loss);
    tsr_optimizer_options_init(&opt);
    tsr_compile_options_init(&co);
    opt.kind = TSR_OPTIMIZER_ADAM;
    opt.amsgrad = 1;
    opt.ema_decay = 0.9;
    co.device = "ref";
    co.threads = 1;
    st = tsr_trainer_create(g, &loss, &opt, &co, 7, trainer_out);
cleanup:
    tsr_graph_destroy(g);
    return st;
}

tsr_status fuzz_tiny_step(tsr_trainer *trainer)
{
    float x[8] = {1, 2, 3, 4, -1, 0.5f, 0, 2};
    int64_t labels[2] = {2, 0};
    tsr_tensor in = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {2, 4}, .data = x};
    tsr_tensor target = {.dtype = TSR_INT64, .rank = 1, .dims = {2}, .data = labels};
    return tsr_trainer_step(trainer, 1, &in, &target, NULL);
}
