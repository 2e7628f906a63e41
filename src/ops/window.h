/* Geometry of a sliding window over 1 to 3 spatial dims, shared by Conv and
 * the windowed pools: strides, dilations, pads and auto_pad read from a
 * node, and the output size ONNX (and PyTorch, for ceil_mode) gives. */
#ifndef TSR_OPS_WINDOW_H
#define TSR_OPS_WINDOW_H

#include "ops/op.h"

#define TSR_WINDOW_MAX_DIMS 3

typedef struct tsr_window {
    int n; /* spatial dims */
    int64_t in[TSR_WINDOW_MAX_DIMS];
    int64_t kernel[TSR_WINDOW_MAX_DIMS];
    int64_t stride[TSR_WINDOW_MAX_DIMS];
    int64_t dilation[TSR_WINDOW_MAX_DIMS];
    int64_t pad_begin[TSR_WINDOW_MAX_DIMS];
    int64_t pad_end[TSR_WINDOW_MAX_DIMS];
    int64_t out[TSR_WINDOW_MAX_DIMS];
} tsr_window;

/* Reads an optional list attribute of `n` values, each at least `min`,
 * into out; absent lists leave out as it is. */
tsr_status tsr_window_read_list(const tsr_node *node, const char *name, int n, int64_t min,
                                int64_t *out);

/* Fills *w for a node with `n` spatial dims of sizes `in` and window
 * `kernel` (either may hold unknown or symbolic dims; the matching output
 * dims are then TSR_DIM_UNKNOWN, or the input's symbol where the window
 * maps each position to itself). Reads the node's strides, dilations (when
 * present), pads and auto_pad, validates them and fails with a message
 * naming the numbers when an output would be empty. */
tsr_status tsr_window_init(const tsr_node *node, int n, const int64_t *in, const int64_t *kernel,
                           bool ceil_mode, tsr_window *w);

/* The same window with leading dims of size 1 added up to 3 spatial dims,
 * so that kernels need only one 3-D loop nest. Needs known sizes. */
void tsr_window_to_3d(const tsr_window *w, tsr_window *w3);

/* Range [*lo, *hi) of output positions along dim d whose window tap `k`
 * lands inside the input. */
void tsr_window_valid_range(const tsr_window *w, int d, int64_t k, int64_t *lo, int64_t *hi);

/* Taps [*lo, *hi) of a window starting at `start` (stride `step`) that
 * land inside [0, size). */
void tsr_window_taps_inside(int64_t start, int64_t step, int64_t taps, int64_t size, int64_t *lo,
                            int64_t *hi);
/* Max over the window of output (od, oh, ow) of one plane (3-D geometry;
 * fewer dims are size 1); *arg gets its position in the plane, -1 for a
 * window holding only padding. NaN wins, as in PyTorch. */
float tsr_window_max_f32(const tsr_window *w, const float *x, int64_t od, int64_t oh, int64_t ow,
                         int64_t *arg);
double tsr_window_max_f64(const tsr_window *w, const double *x, int64_t od, int64_t oh, int64_t ow,
                          int64_t *arg);

/* The taps an average reads at output (o[0], o[1], o[2]) of a 3-D window:
 * per dim its first position start[i] and the taps [lo[i], hi[i]) inside
 * the input. Returns the divisor: the taps inside, or with
 * count_include_pad those inside the padded input (a ceil_mode window
 * running past the end padding is clipped there, as in PyTorch). */
int64_t tsr_window_avg_taps(const tsr_window *w, const int64_t *o, bool include_pad, int64_t *start,
                            int64_t *lo, int64_t *hi);

/* The attribute schemas of MaxPool and AveragePool, which their backward
 * ops (grad_pool.c) take unchanged. */
extern const tsr_attr_def tsr_maxpool_attrs[];
extern const tsr_attr_def tsr_avgpool_attrs[];

#endif
