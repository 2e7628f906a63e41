/* A plan's specializations. A spec is a graph at concrete shapes turned
 * into an ordered list of steps (kernel calls, layout reorders, copies,
 * transfers between memory spaces) over buffers: constants, the caller's
 * inputs and outputs, and pieces of one arena per memory space shared by
 * liveness. */
#ifndef TSR_RUNTIME_PLAN_INTERNAL_H
#define TSR_RUNTIME_PLAN_INTERNAL_H

#include "backends/backend.h"

#include <pthread.h>
#include <stdio.h>

/* The memory spaces a plan's device uses, each with its device context
 * (created once per plan); space 0 is the host, where constants and the
 * caller's tensors live. */
#define TSR_MAX_SPACES 4
#define TSR_HOST_SPACE 0

typedef struct {
    const tsr_memory_space *memory;
    void *ctx;
} plan_space;

/* BUF_BAND: a value inside a depth-first stack, held only in per-thread
 * bands of rows; it has no memory of its own. BUF_UPLOAD: a constant's
 * copy in a device space, uploaded once per plan (plan.c). */
typedef enum { BUF_CONST, BUF_INPUT, BUF_OUTPUT, BUF_ARENA, BUF_BAND, BUF_UPLOAD } buf_kind;

typedef struct {
    buf_kind kind;
    int index; /* graph input or output index */
    int value; /* the value whose contents it holds */
    uint8_t layout;
    uint8_t space; /* plan_space index */
    void *upload;  /* BUF_UPLOAD: the device copy */
    size_t bytes;
    size_t offset;   /* within the arena */
    int first, last; /* steps between which an arena buffer is live */
    /* An arena buffer placed as a slice of another (a Concat's input
     * written into its output, schedule.c): that buffer and the slice's
     * byte offset in it. */
    bool slice;
    int parent;
    size_t slice_offset;
} plan_buffer;

/* STEP_TRANSFER: one value copied between memory spaces, layout kept. */
typedef enum { STEP_KERNEL, STEP_REORDER, STEP_COPY, STEP_STACK, STEP_TRANSFER } step_kind;

typedef struct plan_stack plan_stack;

typedef struct {
    step_kind kind;
    int node;          /* STEP_KERNEL */
    plan_stack *stack; /* STEP_STACK: its member kernel steps and tiles */
    const tsr_backend *backend;
    void *state;
    int *in_bufs; /* per node input (-1 omitted); one for reorders and copies; for a
                     stack, the buffers it reads and (out_bufs) writes */
    int *out_bufs;
    int n_in, n_out;
    double seconds; /* profiling: total time in this step */
    /* STEP_KERNEL: a Concat whose inputs their producers wrote into its
     * output's slices, so it has nothing to run. */
    bool in_place;
} plan_step;

/* Training graphs take every parameter as an input. */
#define TSR_PLAN_MAX_INPUTS 1024

/* A specialization whose graph has values sized only by the data (a
 * NonZero's output, a Reshape to a shape computed from an input) runs in
 * two parts (plan.c: split). Its own steps compute the prefix: every node
 * whose shapes follow from the input shapes, the ops that report the dims
 * they wrote (op.h: bound) included; they write the frontier, the values
 * the rest reads, into host buffers as large as each can be. The rest is
 * a tail specialization planned at the dims the prefix found, taking the
 * small tensors that shapes are computed from as constants; one tail per
 * distinct dims and constants, cached beside the other specializations.
 * A tail may split again. */
typedef struct {
    tsr_graph *full;      /* the whole graph at the spec's input shapes, TSR_DIM_UNKNOWN where the
                             data decides (output descriptions, and the source of every tail) */
    int n_frontier;       /* the prefix graph's outputs, in order */
    int *frontier_value;  /* each one's value in full */
    bool *as_constant;    /* taken by the tail as a constant */
    tsr_tensor *frontier; /* its host buffer; dims as the last run found them */
    int *output_of;       /* per output of full: its frontier index, -1 the tail's */
    bool *tail_node;      /* per node of full: the tail computes it */
    /* The tail's inputs: >= 0 an input of full, else frontier -1 - k; then
     * its constants (frontier indices) and its outputs (outputs of full). */
    int n_tail_inputs, n_tail_consts, n_tail_outputs;
    int *tail_input, *tail_const, *tail_output;
} spec_split;

typedef struct plan_dag plan_dag;

typedef struct spec {
    int n_inputs;
    int *ranks; /* the input shapes it was built for, n_inputs of each */
    int64_t (*dims)[TSR_MAX_RANK];
    tsr_graph *graph; /* concrete shapes, constants shared with the plan's graph */
    plan_step *steps;
    int n_steps, cap_steps;
    plan_buffer *bufs;
    int n_bufs, cap_bufs;
    const plan_space *spaces; /* the plan's */
    int n_spaces;
    size_t arena_bytes[TSR_MAX_SPACES];
    void *arena[TSR_MAX_SPACES];
    double flops;
    int n_stacks;
    /* Per input: a node whose kernel can turn a NaN it reads into a finite
     * value (tsr_backend.flushes_nan) and that the input reaches, or -1;
     * NULL when no kernel of the spec can (nan_guard.c). */
    int *nan_guard;
    int profiled_runs;
    size_t bytes; /* counted against the plan's cache limit (plan.c: spec_bytes) */
    struct spec *next; /* the plan's cache, most recently used first */
    spec_split *split; /* NULL unless the graph has values sized by the data */
    /* A tail: the spec whose prefix sized it, and the frontier values it
     * holds as constants (their shapes and contents are its key, with the
     * input shapes in ranks and dims). */
    struct spec *parent;
    tsr_tensor *consts;
    int n_consts;
    /* The space of each input, then of each output, as the runs it
     * serves hold them; NULL: all in host memory. */
    uint8_t *residency;
    /* The layout of each input as the runs it serves feed it (part of its
     * key, tsr_plan_set_input_layouts), and of each output as it writes
     * it (outputs the plan keeps in their producer's layout,
     * tsr_plan_keep_output_layouts); NULL: all plain. */
    uint8_t *input_layouts;
    uint8_t *output_layouts;
    const bool *keep_layouts; /* the plan's, NULL for none (and in a spec that splits) */
    struct spec *last_tail; /* the tail of the last run (kept from eviction while current) */
    void **owned_outputs;   /* outputs whose shape the caller could not know, held for it */
    plan_dag *dag; /* the steps' dependencies when they run side by side (dag.c), else NULL */
    bool single;   /* its kernels were prepared for one thread each (side by side) */
} spec;

/* The plan (plan.c); device_memory.c reads its spaces. */
typedef struct {
    const void *host; /* the constant's data */
    int space;
    size_t bytes;
    void *device;
    int refs;
} plan_upload;

struct tsr_plan {
    tsr_graph *graph;
    tsr_compile_options options;
    const tsr_backend *const *backends;
    int threads;
    spec *specs; /* most recently used first; the head is the current one */
    spec *current;
    /* The cache's limits and what it holds (spec_bytes of each spec). */
    int max_specs;
    size_t max_bytes;
    int n_specs;
    size_t cached_bytes;
    int64_t n_builds, n_evictions;
    /* The constants of the plan's graph, sorted: specs share them. */
    const void **shared;
    int n_shared;
    bool profiling;
    bool optimize; /* run the graph passes on each specialization */
    /* The memory spaces of the device's backends (the host first), each
     * with its device context. */
    plan_space spaces[TSR_MAX_SPACES];
    int n_spaces;
    /* Constants copied into device spaces, shared by the specs that read
     * them (refs of them): a weight is uploaded once per plan. */
    plan_upload *uploads;
    int n_uploads, cap_uploads;
    /* Per input, then per output, of the run under way: its space
     * (device_memory.c: tsr_plan_residency). */
    uint8_t *residency;
    /* The layout each input is fed in (tsr_plan_set_input_layouts), NULL:
     * all plain; per output, whether it may leave in its producer's
     * layout (tsr_plan_keep_output_layouts), NULL: none. */
    uint8_t *input_layouts;
    bool *keep_layouts;
    /* Held by reshape, run, set_profiling, set_cache_limits and the
     * tsr_device_* calls: a plan shared between threads runs one call at
     * a time (its arena holds one run, eviction never frees a spec
     * another call is running, and a device context's queue is one). */
    pthread_mutex_t lock;
};

/* Builds steps and buffers for s->graph on the given device backends and
 * places the arena buffers; the arenas themselves are not allocated, nor
 * the constants uploaded. `optimize` (devices that run the graph passes,
 * not ref) lets producers write a Concat's inputs into its output. */
/* plan_layouts.c: whether s was built for the layouts the plan's inputs
 * are fed in; s->input_layouts from the plan's, checked against the
 * inputs (rank-4 float32 tensors in host memory only). */
bool tsr_plan_layouts_match(const tsr_plan *p, const spec *s);
tsr_status tsr_spec_input_layouts(const tsr_plan *p, spec *s, int n_inputs,
                                  const tsr_tensor *inputs, const uint8_t *residency);
tsr_status tsr_schedule(spec *s, const tsr_backend *const *backends, int threads,
                        tsr_precision precision, bool depth_first, bool autotune, bool optimize,
                        bool verbose);
void tsr_schedule_release(spec *s);
/* Places s's arena buffers (tsr_schedule does): buffers a and b may
 * share memory unless conflict(s, a, b, arg); NULL: unless their
 * lifetimes in the steps' order overlap. */
typedef bool (*tsr_buffers_conflict)(const spec *s, int a, int b, void *arg);
tsr_status tsr_place_arenas(spec *s, tsr_buffers_conflict conflict, void *arg);

/* nan_guard.c: s->nan_guard, for each input a node whose kernel can turn
 * NaN into a finite value among those it reaches (after tsr_schedule); and
 * the check of a run's inputs, which refuses NaN in those, naming the
 * input, the element and the node. */
tsr_status tsr_spec_nan_guard(spec *s);
tsr_status tsr_spec_check_nan_inputs(const spec *s, const tsr_tensor *inputs, int threads);

/* dag.c: the dependencies of s's steps through the memory they read and
 * write, and a run of them by a team of threads, each step on one thread
 * (run(arg, step)); the first failure is returned, later steps skipped. */
typedef tsr_status (*tsr_dag_step_fn)(void *arg, int step);
/* Places s's arena so that buffers share memory only where every access
 * of one is ordered before every access of the other by the steps'
 * dependencies through their buffers: placed so, memory adds no
 * dependency between steps. */
tsr_status tsr_dag_place(spec *s);
tsr_status tsr_dag_build(const spec *s, plan_dag **out);
void tsr_dag_destroy(plan_dag *d);
tsr_status tsr_dag_run(plan_dag *d, int threads, tsr_dag_step_fn run, void *arg);


/* The inference context of node `node` of g: its input and output values. */
tsr_infer_ctx tsr_node_infer_ctx(const tsr_graph *g, const tsr_node *node);
/* Its estimated floating-point operations (0 where the op has no estimate). */
double tsr_node_flops(const tsr_graph *g, const tsr_node *node);

/* Where the run's tensors live (device_memory.c): p->residency gets each
 * input's space, then each output's (outputs NULL: the host), checked
 * against their data; *device_out says whether any is not the host. */
tsr_status tsr_plan_residency(tsr_plan *p, int n_inputs, const tsr_tensor *inputs, int n_outputs,
                              const tsr_tensor *outputs, bool *device_out);

/* The space of graph output o of spec s. */
int tsr_spec_output_space(const spec *s, int o);

/* The index in s->spaces of backend b's memory space. */
int tsr_spec_space(const spec *s, const tsr_backend *b);

/* The memory behind buffer `buf` during a run. */
void *tsr_spec_buffer(const spec *s, int buf, const tsr_tensor *inputs, tsr_tensor *outputs);

/* Depth-first stacks (stack.c): replaces runs of kernel steps that the
 * backends can compute band by band with STEP_STACK steps, before the
 * arena is placed. */
tsr_status tsr_stacks_form(spec *s, int threads, bool verbose);
tsr_status tsr_stack_run(const spec *s, const plan_step *st, const tsr_tensor *inputs,
                         tsr_tensor *outputs, int threads);
void tsr_stack_destroy(plan_stack *k);
int tsr_stack_size(const plan_stack *k); /* its member ops */
/* Member m's kernel step (0 <= m < tsr_stack_size). */
const plan_step *tsr_stack_member(const plan_stack *k, int m);
/* "Relu+MaxPool+Add": the member ops, cut to fit `size`. */
void tsr_stack_ops(const spec *s, const plan_stack *k, char *buf, size_t size);
/* One line per member and one for the tiling. */
void tsr_stack_print(const spec *s, const plan_stack *k, FILE *out);

#endif
