/* A plan's specializations. A spec is a graph at concrete shapes turned
 * into an ordered list of steps (kernel calls, layout reorders, copies)
 * over buffers: constants, the caller's inputs and outputs, and pieces of
 * one arena shared by liveness. */
#ifndef TSR_RUNTIME_PLAN_INTERNAL_H
#define TSR_RUNTIME_PLAN_INTERNAL_H

#include "backends/backend.h"

typedef enum { BUF_CONST, BUF_INPUT, BUF_OUTPUT, BUF_ARENA } buf_kind;

typedef struct {
    buf_kind kind;
    int index; /* graph input or output index */
    int value; /* the value whose contents it holds */
    uint8_t layout;
    size_t bytes;
    size_t offset;   /* within the arena */
    int first, last; /* steps between which an arena buffer is live */
} plan_buffer;

typedef enum { STEP_KERNEL, STEP_REORDER, STEP_COPY } step_kind;

typedef struct {
    step_kind kind;
    int node; /* STEP_KERNEL */
    const tsr_backend *backend;
    void *state;
    int *in_bufs; /* per node input (-1 omitted); one for reorders and copies */
    int *out_bufs;
    int n_in, n_out;
    double seconds; /* profiling: total time in this step */
} plan_step;

typedef struct spec {
    int n_inputs;
    int ranks[64];
    int64_t dims[64][TSR_MAX_RANK];
    tsr_graph *graph; /* concrete shapes, constants shared with the plan's graph */
    plan_step *steps;
    int n_steps, cap_steps;
    plan_buffer *bufs;
    int n_bufs, cap_bufs;
    size_t arena_bytes;
    void *arena;
    const tsr_backend *arena_owner;
    double flops;
    int profiled_runs;
    struct spec *next;
} spec;

/* Builds steps and buffers for s->graph on the given device backends and
 * places the arena buffers; the arena itself is not allocated. */
tsr_status tsr_schedule(spec *s, const tsr_backend *const *backends, int threads,
                        tsr_precision precision, bool verbose);
void tsr_schedule_release(spec *s);

#endif
