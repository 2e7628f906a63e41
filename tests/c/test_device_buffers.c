/* Device-resident caller buffers on the test device (docs/hal.md): inputs
 * read and outputs written in device memory give the host run's results
 * bit for bit with fewer transfers, tensors in the wrong space are
 * refused naming them, and the host still faults touching device memory. */
#define _DEFAULT_SOURCE /* setenv */
#include "harness.h"
#include "tessera.h"

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define COLS 5

/* a -> Relu -> Add c -> y (device); b -> Selu -> z (host: no cpu kernel);
 * y * z -> w (device); the input a forwarded as two outputs. */
static tsr_graph *mixed_graph(void)
{
    tsr_graph *g = NULL;
    if (tsr_graph_create(&g) != TSR_OK)
        return NULL;
    const int64_t dims[] = {-1, COLS};
    const char *names[] = {"N", NULL};
    tsr_graph_add_input(g, "a", TSR_FLOAT32, 2, dims, names);
    tsr_graph_add_input(g, "b", TSR_FLOAT32, 2, dims, names);
    static float c[COLS] = {0.5f, -1.0f, 2.0f, 0.25f, -0.125f};
    tsr_tensor ct = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {COLS}, .data = c};
    tsr_graph_add_constant(g, "c", &ct);
    tsr_graph_add_node(g, "Relu", "", "relu", 1, (const char *[]){"a"}, 1, (const char *[]){"r"}, 0,
                       NULL);
    tsr_graph_add_node(g, "Add", "", "add", 2, (const char *[]){"r", "c"}, 1, (const char *[]){"y"},
                       0, NULL);
    tsr_graph_add_node(g, "Selu", "", "host", 1, (const char *[]){"b"}, 1, (const char *[]){"z"}, 0,
                       NULL);
    tsr_graph_add_node(g, "Mul", "", "mul", 2, (const char *[]){"y", "z"}, 1, (const char *[]){"w"},
                       0, NULL);
    const char *outs[] = {"y", "w", "z", "a", "a"};
    for (int o = 0; o < 5; o++)
        tsr_graph_add_output(g, outs[o]);
    return g;
}

static tsr_plan *plan_on(const tsr_graph *g, const char *device)
{
    tsr_compile_options o;
    tsr_compile_options_init(&o);
    o.device = device;
    o.threads = 2;
    o.depth_first = 0;
    o.autotune = 0;
    tsr_plan *p = NULL;
    CHECK_OK(tsr_plan_create(g, &o, &p));
    return p;
}

typedef struct {
    float a[7 * COLS], b[7 * COLS];
    float out[5][7 * COLS];
    tsr_tensor in_t[2], out_t[5];
} host_run;

static void host_tensors(host_run *h, int64_t n)
{
    for (int i = 0; i < n * COLS; i++) {
        h->a[i] = (float)((i * 37 % 23) - 11) / 7.0f;
        h->b[i] = (float)((i * 19 % 29) - 14) / 9.0f;
    }
    h->in_t[0] = (tsr_tensor){.dtype = TSR_FLOAT32, .rank = 2, .dims = {n, COLS}, .data = h->a};
    h->in_t[1] = (tsr_tensor){.dtype = TSR_FLOAT32, .rank = 2, .dims = {n, COLS}, .data = h->b};
    for (int o = 0; o < 5; o++)
        h->out_t[o] =
            (tsr_tensor){.dtype = TSR_FLOAT32, .rank = 2, .dims = {n, COLS}, .data = h->out[o]};
}

/* A device copy of t (for an output: its shape, contents left as they are). */
static tsr_tensor on_device(tsr_plan *p, const tsr_tensor *t, bool fill)
{
    tsr_tensor d = *t;
    d.data = NULL;
    CHECK_OK(tsr_device_alloc(p, &d));
    CHECK(d.memory && strcmp(d.memory, "testdev") == 0);
    if (fill)
        CHECK_OK(tsr_device_copy(p, &d, t));
    return d;
}

static bool equals_host(tsr_plan *p, const tsr_tensor *device, const tsr_tensor *want)
{
    float back[7 * COLS];
    tsr_tensor h = *want;
    h.data = back;
    CHECK_OK(tsr_device_copy(p, &h, device));
    return memcmp(back, want->data, tsr_tensor_bytes(want)) == 0;
}

static int transfers(const tsr_plan *p)
{
    tsr_plan_stats st;
    CHECK_OK(tsr_plan_get_stats(p, &st));
    return st.n_transfers;
}

static void test_device_buffers_match_host_run(void)
{
    tsr_graph *g = mixed_graph();
    tsr_plan *p = plan_on(g, "testdev");
    for (int64_t n = 3; n <= 7; n += 4) {
        host_run h;
        host_tensors(&h, n);
        CHECK_OK(tsr_plan_run(p, 2, h.in_t, 5, h.out_t));
        /* a up, z up for Mul; y and w down (z and a are the host's). */
        CHECK(transfers(p) == 4);
        tsr_plan_stats host_stats;
        CHECK_OK(tsr_plan_get_stats(p, &host_stats));

        tsr_tensor ins[2], outs[5];
        for (int i = 0; i < 2; i++)
            ins[i] = on_device(p, &h.in_t[i], true);
        for (int o = 0; o < 5; o++)
            outs[o] = on_device(p, &h.out_t[o], false);
        CHECK_OK(tsr_plan_run(p, 2, ins, 5, outs));
        for (int o = 0; o < 5; o++)
            CHECK(equals_host(p, &outs[o], &h.out_t[o]));
        /* Only Selu's crossings are left: b down, z up. */
        CHECK(transfers(p) == 2);
        tsr_plan_stats st;
        CHECK_OK(tsr_plan_get_stats(p, &st));
        CHECK(st.uploaded_bytes == host_stats.uploaded_bytes);
        CHECK(st.n_cached_specs == host_stats.n_cached_specs + 1);

        /* Mixed: a on the device, b on the host; y and one copy of a to the host. */
        tsr_tensor mixed_in[2] = {ins[0], h.in_t[1]};
        host_run h2;
        host_tensors(&h2, n);
        tsr_tensor mixed_out[5] = {h2.out_t[0], outs[1], outs[2], h2.out_t[3], outs[4]};
        CHECK_OK(tsr_plan_run(p, 2, mixed_in, 5, mixed_out));
        CHECK(memcmp(h2.out[0], h.out[0], tsr_tensor_bytes(&h.out_t[0])) == 0);
        CHECK(memcmp(h2.out[3], h.out[3], tsr_tensor_bytes(&h.out_t[3])) == 0);
        for (int o = 1; o < 5; o++)
            CHECK(o == 3 || equals_host(p, &mixed_out[o], &h.out_t[o]));

        for (int i = 0; i < 2; i++)
            CHECK_OK(tsr_device_free(p, &ins[i]));
        for (int o = 0; o < 5; o++)
            CHECK_OK(tsr_device_free(p, &outs[o]));
        CHECK(!outs[0].data && !outs[0].memory);
    }
    tsr_plan_destroy(p);
    tsr_graph_destroy(g);
}

static void test_wrong_space_is_refused(void)
{
    tsr_graph *g = mixed_graph();
    tsr_plan *p = plan_on(g, "testdev");
    host_run h;
    host_tensors(&h, 7);
    tsr_tensor ins[2] = {h.in_t[0], h.in_t[1]};

    ins[0].memory = "cuda";
    CHECK_FAILS(tsr_plan_run(p, 2, ins, 5, h.out_t), TSR_ERR_INVALID_ARGUMENT,
                "input 'a' is in cuda memory, which this plan's device does not use (it uses "
                "host and testdev memory)");
    ins[0].memory = "testdev";
    CHECK_FAILS(tsr_plan_run(p, 2, ins, 5, h.out_t), TSR_ERR_INVALID_ARGUMENT,
                "input 'a' is declared testdev memory, but its data");

    ins[0] = on_device(p, &h.in_t[0], true);
    tsr_tensor lying = ins[0];
    lying.memory = NULL;
    tsr_tensor lied[2] = {lying, h.in_t[1]};
    CHECK_FAILS(tsr_plan_run(p, 2, lied, 5, h.out_t), TSR_ERR_INVALID_ARGUMENT,
                "input 'a' is declared host memory, but its data");
    CHECK(strstr(tsr_last_error(), "is testdev memory") != NULL);

    /* An output buffer too small for its tensor. */
    tsr_tensor small = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {2}};
    CHECK_OK(tsr_device_alloc(p, &small));
    tsr_tensor outs[5];
    memcpy(outs, h.out_t, sizeof outs);
    outs[1].data = small.data;
    outs[1].memory = small.memory;
    CHECK_FAILS(tsr_plan_run(p, 2, ins, 5, outs), TSR_ERR_INVALID_ARGUMENT,
                "output 'w' is declared testdev memory, but its data");

    /* The host device has no device memory to take. */
    tsr_plan *cpu = plan_on(g, "cpu");
    CHECK_FAILS(tsr_plan_run(cpu, 2, ins, 5, h.out_t), TSR_ERR_INVALID_ARGUMENT,
                "input 'a' is in testdev memory, which this plan's device does not use (it uses "
                "host memory)");
    tsr_tensor t = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {4}};
    CHECK_FAILS(tsr_device_alloc(cpu, &t), TSR_ERR_UNSUPPORTED, "computes in host memory");
    tsr_plan_destroy(cpu);

    tsr_tensor wrong = small;
    wrong.dims[0] = 3;
    CHECK_FAILS(tsr_device_copy(p, &wrong, &h.in_t[0]), TSR_ERR_SHAPE, "differ in dtype or shape");
    tsr_tensor host_one = h.in_t[0];
    host_one.memory = "testdev";
    CHECK_FAILS(tsr_device_free(p, &host_one), TSR_ERR_INVALID_ARGUMENT, "is not testdev memory");
    CHECK_OK(tsr_device_free(p, &small));
    CHECK_OK(tsr_device_free(p, &ins[0]));
    tsr_plan_destroy(p);
    tsr_graph_destroy(g);
}

/* A NonZero's output is sized by the data: its prefix writes host buffers
 * that the rest is planned from, so such graphs take host tensors only. */
static void test_data_dependent_shapes_take_host_tensors(void)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[] = {6};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 1, dims, NULL));
    CHECK_OK(tsr_graph_add_node(g, "NonZero", "", "nz", 1, (const char *[]){"x"}, 1,
                                (const char *[]){"i"}, 0, NULL));
    CHECK_OK(tsr_graph_add_output(g, "i"));
    tsr_plan *p = plan_on(g, "testdev");
    float x[6] = {0, 1, 0, 2, 3, 0};
    tsr_tensor host = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {6}, .data = x};
    tsr_tensor out = {.dtype = TSR_INT64, .rank = -1};
    CHECK_OK(tsr_plan_run(p, 1, &host, 1, &out));
    CHECK(out.rank == 2 && out.dims[1] == 3 && !out.memory);
    tsr_tensor dev = on_device(p, &host, true);
    out = (tsr_tensor){.dtype = TSR_INT64, .rank = -1};
    CHECK_FAILS(tsr_plan_run(p, 1, &dev, 1, &out), TSR_ERR_UNSUPPORTED,
                "the data decides some of this graph's shapes, so its inputs and outputs must be "
                "in host memory");
    CHECK_OK(tsr_device_free(p, &dev));
    tsr_plan_destroy(p);
    tsr_graph_destroy(g);
}

/* A missed transfer cannot pass silently: the host reading device memory
 * outside the device's hooks faults. */
static void test_host_touching_device_memory_faults(void)
{
    tsr_graph *g = mixed_graph();
    tsr_plan *p = plan_on(g, "testdev");
    tsr_tensor t = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {16}};
    CHECK_OK(tsr_device_alloc(p, &t));
    CHECK(t.data != NULL);
    fflush(NULL);
    pid_t child = t.data ? fork() : -1;
    if (child == 0) {
        signal(SIGSEGV, SIG_DFL); /* a sanitizer's handler would turn the fault into an exit */
        volatile float *x = t.data;
        _exit(x[3] == 12345.0f ? 2 : 3);
    }
    int status = 0;
    CHECK(child > 0 && waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
    CHECK_OK(tsr_device_free(p, &t));
    tsr_plan_destroy(p);
    tsr_graph_destroy(g);
}

int main(void)
{
    setenv("TSR_TESTDEV", "1", 1);
    test_device_buffers_match_host_run();
    test_wrong_space_is_refused();
    test_data_dependent_shapes_take_host_tensors();
    test_host_touching_device_memory_faults();
    return tsr_test_summary("test_device_buffers");
}
