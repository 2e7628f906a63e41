/* Sliding-window geometry shared by Conv and the windowed pools. */
#include "ops/window.h"

#include <math.h>
#include <string.h>

static int64_t floor_div(int64_t a, int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}
static int64_t ceil_div(int64_t a, int64_t b)
{
    return -floor_div(-a, b);
}

tsr_status tsr_window_read_list(const tsr_node *node, const char *name, int n, int64_t min,
                                int64_t *out)
{
    size_t count;
    const int64_t *vals = tsr_attr_ints(node, name, &count);
    if (!vals)
        return TSR_OK;
    if (count != (size_t)n)
        return tsr_error(TSR_ERR_SHAPE, "'%s' has %zu values, expected %d (one per spatial dim%s)",
                         name, count, n, strcmp(name, "pads") == 0 ? ", begins then ends" : "");
    for (int i = 0; i < n; i++)
        if (vals[i] < min || vals[i] > TSR_MAX_TENSOR_BYTES)
            return tsr_error(TSR_ERR_SHAPE, "'%s'[%d] is %lld, must be between %lld and 2^62", name,
                             i, (long long)vals[i], (long long)min);
    memcpy(out, vals, (size_t)n * sizeof *out);
    return TSR_OK;
}

tsr_status tsr_window_init(const tsr_node *node, int n, const int64_t *in, const int64_t *kernel,
                           bool ceil_mode, tsr_window *w)
{
    memset(w, 0, sizeof *w);
    if (n < 1 || n > TSR_WINDOW_MAX_DIMS)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%d spatial dims; 1 to %d are supported", n,
                         TSR_WINDOW_MAX_DIMS);
    w->n = n;
    for (int i = 0; i < n; i++) {
        w->in[i] = in[i];
        w->kernel[i] = kernel[i];
        w->stride[i] = 1;
        w->dilation[i] = 1;
    }
    TSR_CHECK(tsr_window_read_list(node, "strides", n, 1, w->stride));
    TSR_CHECK(tsr_window_read_list(node, "dilations", n, 1, w->dilation));
    int64_t pads[2 * TSR_WINDOW_MAX_DIMS] = {0};
    TSR_CHECK(tsr_window_read_list(node, "pads", 2 * n, 0, pads));

    const char *auto_pad = tsr_attr_string(node, "auto_pad");
    bool same_upper = strcmp(auto_pad, "SAME_UPPER") == 0;
    bool same_lower = strcmp(auto_pad, "SAME_LOWER") == 0;
    bool valid = strcmp(auto_pad, "VALID") == 0;
    if (!same_upper && !same_lower && !valid && strcmp(auto_pad, "NOTSET") != 0)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "auto_pad '%s' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID",
                         auto_pad);
    for (int i = 0; i < 2 * n; i++)
        if (pads[i] != 0 && strcmp(auto_pad, "NOTSET") != 0)
            return tsr_error(TSR_ERR_SHAPE, "explicit pads cannot be combined with auto_pad '%s'",
                             auto_pad);

    for (int i = 0; i < n; i++) {
        w->pad_begin[i] = pads[i];
        w->pad_end[i] = pads[n + i];
        int64_t s = w->stride[i];
        if (!tsr_dim_known(in[i]) || !tsr_dim_known(kernel[i])) {
            bool identity = tsr_dim_is_sym(in[i]) && s == 1 &&
                            ((same_upper || same_lower) ||
                             (tsr_dim_known(kernel[i]) &&
                              (kernel[i] - 1) * w->dilation[i] == pads[i] + pads[n + i]));
            w->out[i] = identity ? in[i] : TSR_DIM_UNKNOWN;
            continue;
        }
        if (kernel[i] < 1)
            return tsr_error(TSR_ERR_SHAPE, "kernel size %lld along spatial dim %d must be >= 1",
                             (long long)kernel[i], i);
        int64_t span, padded;
        if (!tsr_size_mul(kernel[i] - 1, w->dilation[i], &span) || !tsr_size_add(span, 1, &span) ||
            !tsr_size_add(in[i], w->pad_begin[i], &padded) ||
            !tsr_size_add(padded, w->pad_end[i], &padded))
            return tsr_error(TSR_ERR_SHAPE,
                             "along spatial dim %d the input %lld with pads %lld and %lld, or the "
                             "window of kernel %lld and dilation %lld, passes 2^62",
                             i, (long long)in[i], (long long)w->pad_begin[i],
                             (long long)w->pad_end[i], (long long)kernel[i],
                             (long long)w->dilation[i]);
        if (same_upper || same_lower) {
            /* ONNX: out = ceil(in / stride), the padding split evenly with
             * the odd one at the end (UPPER) or the beginning (LOWER). */
            int64_t out = ceil_div(in[i], s);
            int64_t total = (out - 1) * s + span - in[i];
            if (total < 0)
                total = 0;
            w->pad_begin[i] = same_upper ? total / 2 : total - total / 2;
            w->pad_end[i] = total - w->pad_begin[i];
            w->out[i] = out;
        } else {
            int64_t room = padded - span;
            if (room < 0)
                return tsr_error(TSR_ERR_SHAPE,
                                 "window of %lld (kernel %lld, dilation %lld) is larger than the "
                                 "padded input %lld along spatial dim %d",
                                 (long long)span, (long long)kernel[i], (long long)w->dilation[i],
                                 (long long)padded, i);
            int64_t out = (ceil_mode ? ceil_div(room, s) : room / s) + 1;
            /* PyTorch's rule: the last window must start inside the input
             * or its left padding. */
            if (ceil_mode && (out - 1) * s >= in[i] + w->pad_begin[i])
                out--;
            w->out[i] = out;
        }
        if (w->out[i] < 1)
            return tsr_error(TSR_ERR_SHAPE, "output size %lld along spatial dim %d (input %lld)",
                             (long long)w->out[i], i, (long long)in[i]);
    }
    return TSR_OK;
}

void tsr_window_to_3d(const tsr_window *w, tsr_window *w3)
{
    int lead = TSR_WINDOW_MAX_DIMS - w->n;
    w3->n = TSR_WINDOW_MAX_DIMS;
    for (int i = 0; i < TSR_WINDOW_MAX_DIMS; i++) {
        bool pad = i < lead;
        int j = i - lead;
        w3->in[i] = pad ? 1 : w->in[j];
        w3->kernel[i] = pad ? 1 : w->kernel[j];
        w3->stride[i] = pad ? 1 : w->stride[j];
        w3->dilation[i] = pad ? 1 : w->dilation[j];
        w3->pad_begin[i] = pad ? 0 : w->pad_begin[j];
        w3->pad_end[i] = pad ? 0 : w->pad_end[j];
        w3->out[i] = pad ? 1 : w->out[j];
    }
}

void tsr_window_valid_range(const tsr_window *w, int d, int64_t k, int64_t *lo, int64_t *hi)
{
    int64_t s = w->stride[d], offset = k * w->dilation[d] - w->pad_begin[d];
    int64_t a = ceil_div(-offset, s), b = floor_div(w->in[d] - 1 - offset, s) + 1;
    if (a < 0)
        a = 0;
    if (b > w->out[d])
        b = w->out[d];
    *lo = a;
    *hi = b > a ? b : a;
}

/* Taps [*lo, *hi) of a window starting at `start` (stride `step`) that land
 * inside [0, size). */
void tsr_window_taps_inside(int64_t start, int64_t step, int64_t taps, int64_t size, int64_t *lo,
                            int64_t *hi)
{
    int64_t a = start >= 0 ? 0 : (-start + step - 1) / step;
    int64_t b = start > size - 1 ? 0 : (size - 1 - start) / step + 1;
    if (b > taps)
        b = taps;
    *lo = a;
    *hi = b > a ? b : a;
}

int64_t tsr_window_avg_taps(const tsr_window *w, const int64_t *o, bool include_pad, int64_t *start,
                            int64_t *lo, int64_t *hi)
{
    int64_t padded = 1, inside = 1;
    for (int i = 0; i < 3; i++) {
        int64_t plo, phi;
        start[i] = o[i] * w->stride[i] - w->pad_begin[i];
        tsr_window_taps_inside(start[i], w->dilation[i], w->kernel[i], w->in[i], &lo[i], &hi[i]);
        tsr_window_taps_inside(start[i] + w->pad_begin[i], w->dilation[i], w->kernel[i],
                               w->pad_begin[i] + w->in[i] + w->pad_end[i], &plo, &phi);
        padded *= phi - plo;
        inside *= hi[i] - lo[i];
    }
    return include_pad ? padded : inside;
}

#define MAX_WINDOW(T, SUF)                                                                         \
    T tsr_window_max_##SUF(const tsr_window *w, const T *x, int64_t od, int64_t oh, int64_t ow,    \
                           int64_t *arg)                                                           \
    {                                                                                              \
        int64_t start[3] = {od * w->stride[0] - w->pad_begin[0],                                   \
                            oh * w->stride[1] - w->pad_begin[1],                                   \
                            ow * w->stride[2] - w->pad_begin[2]};                                  \
        int64_t lo[3], hi[3];                                                                      \
        for (int i = 0; i < 3; i++)                                                                \
            tsr_window_taps_inside(start[i], w->dilation[i], w->kernel[i], w->in[i], &lo[i],      \
                                   &hi[i]);                                                        \
        T best = (T)-INFINITY;                                                                     \
        int64_t best_at = -1;                                                                      \
        for (int64_t kd = lo[0]; kd < hi[0]; kd++) {                                               \
            int64_t id = start[0] + kd * w->dilation[0];                                           \
            for (int64_t kh = lo[1]; kh < hi[1]; kh++) {                                           \
                int64_t row = (id * w->in[1] + start[1] + kh * w->dilation[1]) * w->in[2];         \
                for (int64_t kw = lo[2]; kw < hi[2]; kw++) {                                       \
                    int64_t at = row + start[2] + kw * w->dilation[2];                             \
                    T v = x[at];                                                                   \
                    /* NaN wins, as in PyTorch. */                                                 \
                    if (v > best || (v != v && best == best) || best_at < 0) {                     \
                        best = v;                                                                  \
                        best_at = at;                                                              \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        *arg = best_at;                                                                            \
        return best;                                                                               \
    }

MAX_WINDOW(float, f32)
MAX_WINDOW(double, f64)
