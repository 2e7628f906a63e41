/* Element-wise kernels of the cpu backend: unary activations, Add, Sub,
 * Mul and Div (same shapes, or a per-channel, per-image-and-channel
 * (squeeze-and-excitation's [N, C, 1, 1] scale) or scalar operand), and
 * inference BatchNormalization. They treat a tensor as rows of contiguous
 * floats (a blocked tensor's rows are its channel blocks, padded lanes
 * included), cut into cache-sized pieces that threads share. Where an op
 * maps the zeros of padded lanes to something else (Sigmoid, 0/0), the
 * lanes are zeroed again in each piece while it is still in cache.
 * float64 (the ICTP models' precision) runs the binary ops and the unary
 * ones without parameters, in plain layouts, by the ref kernels' formulas
 * (Sigmoid, Silu, SiluGrad and Exp with a vectorized exp within a few ulp
 * of libm's). Silu's backward, SiluGrad (dY, X), runs as a binary op of
 * two same-shape operands. */
#include "backends/cpu/kernels_internal.h"
#include "backends/cpu/matvec.h"
#include "ops/reduce.h"
#include "ops/rnn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float a, b;
} tsr_cpu_ew_params;

enum {
    TSR_CPU_RELU,
    TSR_CPU_LEAKY_RELU,
    TSR_CPU_CLIP,
    TSR_CPU_HARD_SIGMOID,
    TSR_CPU_HARD_SWISH,
    TSR_CPU_SIGMOID,
    TSR_CPU_TANH,
    TSR_CPU_ERF,
    TSR_CPU_EXP,
    TSR_CPU_ABS,
    TSR_CPU_NEG,
    TSR_CPU_SILU,
    TSR_CPU_N_UNARY
};

/* RSUB and RDIV: the full-shape operand is the second one. SILU_GRAD
 * (dY, X) has same-shape tiles only. */
enum {
    TSR_CPU_ADD,
    TSR_CPU_SUB,
    TSR_CPU_MUL,
    TSR_CPU_DIV,
    TSR_CPU_RSUB,
    TSR_CPU_RDIV,
    TSR_CPU_SILU_GRAD,
    TSR_CPU_N_BINARY
};

typedef void (*unary_tile)(const float *x, float *y, int64_t n, const tsr_cpu_ew_params *p);
typedef void (*binary_vv_tile)(const float *a, const float *b, float *y, int64_t n);
typedef void (*binary_vp_tile)(const float *a, const float *pattern, int period, float *y,
                               int64_t n);
typedef void (*affine_tile)(const float *x, const float *s, const float *t, int period, float *y,
                            int64_t n);
typedef void (*lstm_cell_tile)(const float *gates, const float *c_prev, float *h, float *c,
                               int64_t hidden);
typedef void (*softmax_tile)(const float *x, float *y, int64_t n, bool log_out);
typedef void (*layernorm_tile)(const float *x, const float *scale, const float *bias, float *y,
                               int64_t n, float eps);
typedef void (*unary64_tile)(const double *x, double *y, int64_t n);
typedef void (*binary64_vv_tile)(const double *a, const double *b, double *y, int64_t n);
typedef void (*binary64_vs_tile)(const double *a, double b, double *y, int64_t n);

typedef struct {
    unary_tile unary[TSR_CPU_N_UNARY];
    binary_vv_tile vv[TSR_CPU_N_BINARY];
    binary_vp_tile vp[TSR_CPU_N_BINARY];
    unary64_tile unary64[TSR_CPU_N_UNARY]; /* NULL: float64 runs on ref */
    binary64_vv_tile vv64[TSR_CPU_N_BINARY];
    binary64_vs_tile vs64[TSR_CPU_N_BINARY];
    affine_tile affine;
    lstm_cell_tile lstm_cell;
    softmax_tile softmax_row;
    layernorm_tile layernorm_row;
} tsr_cpu_eltwise_tiles;

#define TSR_SIMD_LEVEL 0
#include "backends/cpu/tiles_eltwise.h"
#undef TSR_SIMD_LEVEL
#if TSR_CPU_X86
#define TSR_SIMD_LEVEL 1
#include "backends/cpu/tiles_eltwise.h"
#undef TSR_SIMD_LEVEL
#define TSR_SIMD_LEVEL 2
#include "backends/cpu/tiles_eltwise.h"
#undef TSR_SIMD_LEVEL
#elif TSR_CPU_ARM64
#define TSR_SIMD_LEVEL 3
#include "backends/cpu/tiles_eltwise.h"
#undef TSR_SIMD_LEVEL
#define TSR_SIMD_LEVEL 4
#include "backends/cpu/tiles_eltwise.h"
#undef TSR_SIMD_LEVEL
#endif

static const tsr_cpu_eltwise_tiles *const tiles[] = {
    [TSR_ISA_PORTABLE] = &eltwise_tiles_portable,
#if TSR_CPU_X86
    [TSR_ISA_AVX2] = &eltwise_tiles_avx2,
    [TSR_ISA_AVX512] = &eltwise_tiles_avx512,
#elif TSR_CPU_ARM64
    [TSR_ISA_NEON] = &eltwise_tiles_neon,
    [TSR_ISA_SVE] = &eltwise_tiles_sve,
#endif
};

/* Floats of a per-channel pattern: a 16-lane block, or one vector of the
 * widest SVE (2048 bits). */
#define PATTERN_FLOATS 64

/* ------------------------------------------------------------- spans */

/* Floats per piece: 32 KiB, a multiple of every block size. */
#define PIECE 8192

/* A tensor as rows of contiguous floats. */
typedef struct {
    int64_t rows, row_len;
    int block;    /* lanes per pixel: 1 for plain */
    int64_t cbs;  /* channel blocks per image; rows are (n, cb) when blocked */
    int pad_from; /* first padded lane of the last block; == block when none */
    bool rezero;  /* whether the op turns padded zeros into something else */
} span_job;

typedef void (*piece_fn)(const void *ctx, int64_t row, int64_t offset, int64_t len);

static void zero_padding(float *y, int64_t len, int block, int pad_from)
{
    for (int64_t p = 0; p < len; p += block)
        for (int l = pad_from; l < block; l++)
            y[p + l] = 0.0f;
}

/* Calls fn on every piece; `out` is the output, for re-zeroing (NULL for
 * float64, which is plain). */
static void run_pieces(const span_job *j, int threads, piece_fn fn, const void *ctx, float *out)
{
    if (j->rows == 0 || j->row_len == 0)
        return;
    int64_t per_row = (j->row_len + PIECE - 1) / PIECE;
    int64_t items = j->rows * per_row;
    bool rezero = j->rezero && j->block > 1 && j->pad_from < j->block;
    int nt = tsr_cpu_threads_for(threads, j->rows * j->row_len);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t item = 0; item < items; item++) {
        int64_t row = item / per_row, offset = (item % per_row) * PIECE;
        int64_t len = j->row_len - offset < PIECE ? j->row_len - offset : PIECE;
        fn(ctx, row, offset, len);
        if (rezero && row % j->cbs == j->cbs - 1)
            zero_padding(out + row * j->row_len + offset, len, j->block, j->pad_from);
    }
}

/* Rows of a rank >= 2 tensor in `layout`: per (n, channel block) when
 * blocked, per (n, c) when per_channel, else one row of everything. */
static span_job span_of(const tsr_tensor *t, tsr_layout layout, bool per_channel)
{
    span_job j = {.rows = 1, .row_len = tsr_tensor_numel(t), .block = 1, .cbs = 1, .pad_from = 1};
    if (layout != TSR_LAYOUT_PLAIN) {
        int b = tsr_layout_block(layout);
        int64_t c = t->dims[1];
        j.block = b;
        j.cbs = (c + b - 1) / b;
        j.rows = t->dims[0] * j.cbs;
        j.row_len = t->dims[2] * t->dims[3] * b;
        j.pad_from = c % b == 0 ? b : (int)(c % b);
    } else if (per_channel) {
        j.rows = t->dims[0] * t->dims[1];
        j.row_len = j.rows ? tsr_tensor_numel(t) / j.rows : 0;
    }
    return j;
}

/* Rows [r0, r1) of a band, as a pointer to row r0. */
static float *band_rows(const tsr_band *b, int64_t r0, int64_t pitch)
{
    return b->data + (r0 - b->row0) * pitch;
}

/* Re-zeroes the padded lanes of a band of the last channel block. */
static void band_rezero(const tsr_cpu_planes *p, int64_t cb, float *y, int64_t len)
{
    if (p->block > 1 && p->pad_from < p->block && cb == p->cbs - 1)
        zero_padding(y, len, p->block, p->pad_from);
}

/* The pattern of per-channel values for channel block cb (plain: channel
 * cb, splat over `width` lanes); returns its period. */
static int channel_pattern(const tsr_cpu_planes *p, int64_t cb, const float *values, bool scalar,
                           float pad_value, int width, float *pattern)
{
    if (p->block > 1) {
        int64_t c0 = cb * p->block;
        for (int l = 0; l < p->block; l++)
            pattern[l] = c0 + l >= p->channels ? pad_value : scalar ? values[0] : values[c0 + l];
        return p->block;
    }
    for (int l = 0; l < width; l++)
        pattern[l] = scalar ? values[0] : values[cb];
    return width;
}

/* ------------------------------------------------------------- unary */

typedef struct {
    int kind;
    tsr_cpu_ew_params prm;
    tsr_cpu_planes planes; /* for bands */
} unary_data;

typedef struct {
    unary_tile tile;
    tsr_cpu_ew_params prm;
    const float *x;
    float *y;
    int64_t row_len;
} unary_ctx;

static void unary_piece(const void *ctx, int64_t row, int64_t offset, int64_t len)
{
    const unary_ctx *c = ctx;
    int64_t at = row * c->row_len + offset;
    c->tile(c->x + at, c->y + at, len, &c->prm);
}

typedef struct {
    unary64_tile tile;
    const double *x;
    double *y;
} unary64_ctx;

static void unary64_piece(const void *ctx, int64_t row, int64_t offset, int64_t len)
{
    const unary64_ctx *c = ctx;
    (void)row; /* one row */
    c->tile(c->x + offset, c->y + offset, len);
}

static const struct {
    const tsr_op_def *op;
    int kind;
} unary_kinds[] = {
    {&tsr_op_Relu, TSR_CPU_RELU},
    {&tsr_op_LeakyRelu, TSR_CPU_LEAKY_RELU},
    {&tsr_op_Clip, TSR_CPU_CLIP},
    {&tsr_op_HardSigmoid, TSR_CPU_HARD_SIGMOID},
    {&tsr_op_HardSwish, TSR_CPU_HARD_SWISH},
    {&tsr_op_Sigmoid, TSR_CPU_SIGMOID},
    {&tsr_op_Tanh, TSR_CPU_TANH},
    {&tsr_op_Erf, TSR_CPU_ERF},
    {&tsr_op_Exp, TSR_CPU_EXP},
    {&tsr_op_Abs, TSR_CPU_ABS},
    {&tsr_op_Neg, TSR_CPU_NEG},
    {&tsr_op_Silu, TSR_CPU_SILU},
};

/* The unary op's TSR_CPU_* kind, or -1. */
static int unary_kind(const tsr_op_def *op)
{
    for (size_t i = 0; i < sizeof unary_kinds / sizeof *unary_kinds; i++)
        if (unary_kinds[i].op == op)
            return unary_kinds[i].kind;
    return -1;
}

/* The op's parameters; Clip's bounds are its optional inputs. */
static tsr_cpu_ew_params unary_params(const unary_data *d, const float *lo, const float *hi)
{
    tsr_cpu_ew_params prm = d->prm;
    if (d->kind == TSR_CPU_CLIP) {
        prm.a = lo ? *lo : -INFINITY;
        prm.b = hi ? *hi : INFINITY;
    }
    return prm;
}

/* Whether the op turns the zeros of padded lanes into something else. */
static bool unary_rezeroes(unary_tile tile, const tsr_cpu_ew_params *prm)
{
    float zero = 0.0f, f0;
    tile(&zero, &f0, 1, prm);
    return f0 != 0.0f;
}

static tsr_status unary_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const unary_data *d = s->data;
    if (k->inputs[0]->dtype == TSR_FLOAT64) {
        unary64_ctx c = {.tile = tiles[s->isa]->unary64[d->kind],
                         .x = k->inputs[0]->data,
                         .y = k->outputs[0]->data};
        span_job j = span_of(k->inputs[0], TSR_LAYOUT_PLAIN, false);
        run_pieces(&j, k->threads, unary64_piece, &c, NULL);
        return TSR_OK;
    }
    const tsr_tensor *lo = k->n_inputs > 1 ? k->inputs[1] : NULL;
    const tsr_tensor *hi = k->n_inputs > 2 ? k->inputs[2] : NULL;
    unary_ctx c = {.tile = tiles[s->isa]->unary[d->kind],
                   .prm = unary_params(d, lo ? lo->data : NULL, hi ? hi->data : NULL),
                   .x = k->inputs[0]->data,
                   .y = k->outputs[0]->data};
    span_job j = span_of(k->inputs[0], (tsr_layout)k->input_layouts[0], false);
    j.rezero = unary_rezeroes(c.tile, &c.prm);
    c.row_len = j.row_len;
    run_pieces(&j, k->threads, unary_piece, &c, c.y);
    return TSR_OK;
}

static void unary_band(const tsr_cpu_state *s, const tsr_band_call *c)
{
    const unary_data *d = s->data;
    const tsr_cpu_planes *p = &d->planes;
    unary_tile tile = tiles[s->isa]->unary[d->kind];
    tsr_cpu_ew_params prm = unary_params(d, c->in[1].data, c->in[2].data);
    int64_t len = (c->r1 - c->r0) * p->pitch;
    float *y = band_rows(&c->out, c->r0, p->pitch);
    tile(band_rows(&c->in[0], c->r0, p->pitch), y, len, &prm);
    if (unary_rezeroes(tile, &prm))
        band_rezero(p, c->cb, y, len);
}

static bool f32_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    for (int i = 0; i < node->n_inputs; i++)
        if (!tsr_cpu_require_f32(g, node, i, why, size))
            return false;
    return true;
}

/* float32, or float64 for the kinds with a float64 tile (one input). */
static bool unary_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    int kind = unary_kind(node->op);
    if (tsr_cpu_input(g, node, 0)->dtype == TSR_FLOAT64 && node->n_inputs == 1 && kind >= 0 &&
        tiles[TSR_ISA_PORTABLE]->unary64[kind])
        return true;
    return f32_supports(g, node, why, size);
}

static tsr_status unary_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    const tsr_node *node = ctx->node;
    unary_data *d = tsr_calloc(1, sizeof *d);
    if (!d)
        return TSR_ERR_OUT_OF_MEMORY;
    s->data = d;
    s->run = unary_run;
    const tsr_op_def *op = node->op;
    d->kind = unary_kind(op);
    if (d->kind < 0)
        return tsr_error(TSR_ERR_INTERNAL, "cpu backend: %s is not a unary op it knows", op->name);
    if (op == &tsr_op_LeakyRelu) {
        d->prm.a = (float)tsr_attr_float(node, "alpha");
    } else if (op == &tsr_op_HardSigmoid) {
        d->prm.a = (float)tsr_attr_float(node, "alpha");
        d->prm.b = (float)tsr_attr_float(node, "beta");
    }
    const tsr_value *x = tsr_cpu_input(ctx->graph, node, 0);
    if (x->dtype == TSR_FLOAT32 && tsr_cpu_planes_of(x, ctx->input_layouts[0], &d->planes)) {
        s->band = unary_band;
        s->band_info = tsr_cpu_pointwise_band(1u);
    }
    return TSR_OK;
}

/* ------------------------------------------------------------ binary */

/* How a binary node's operands line up with its output. */
typedef struct {
    int main;        /* the input with the output's shape */
    bool same_shape; /* both inputs have it */
    bool scalar;     /* else the other input is per-channel (per image too if: */
    bool per_image;  /* it is [N, C, 1, ...] with out's N and C), or one row: */
    int64_t row;     /* > 0: the other input is a row of this many repeated (a bias) */
} binary_form;

static bool same_dims(const tsr_value *a, const tsr_value *b)
{
    if (a->rank != b->rank)
        return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return true;
}

/* Whether `v` broadcast to `out` varies along dim 1 only. */
static bool is_per_channel(const tsr_value *v, const tsr_value *out)
{
    if (out->rank < 2 || v->rank > out->rank)
        return false;
    for (int i = 0; i < out->rank; i++) {
        int vi = i - (out->rank - v->rank);
        int64_t d = vi >= 0 ? v->dims[vi] : 1;
        if (d != (i == 1 ? out->dims[1] : 1))
            return false;
    }
    return true;
}

/* Whether `v` broadcast to `out` varies along dims 0 and 1 only, both
 * out's: [N, C, 1, ...], one value per image and channel. */
static bool is_per_image_channel(const tsr_value *v, const tsr_value *out)
{
    if (out->rank < 3 || v->rank != out->rank)
        return false;
    for (int i = 0; i < out->rank; i++)
        if (v->dims[i] != (i < 2 ? out->dims[i] : 1))
            return false;
    return true;
}

/* The length of the row that `v` broadcast to `out` repeats, when v's dims
 * (leading 1s aside) are out's last ones, as a bias over [..., N] is; else 0. */
static int64_t repeated_row(const tsr_value *v, const tsr_value *out)
{
    if (v->rank > out->rank)
        return 0;
    int first = 0;
    while (first < v->rank && v->dims[first] == 1)
        first++;
    int64_t len = 1;
    for (int i = first; i < v->rank; i++) {
        if (v->dims[i] != out->dims[i + out->rank - v->rank] || v->dims[i] < 1)
            return 0;
        len *= v->dims[i];
    }
    return len > 1 ? len : 0;
}

static bool binary_form_of(const tsr_graph *g, const tsr_node *node, binary_form *f, char *why,
                           size_t size)
{
    const tsr_value *in[2] = {tsr_cpu_input(g, node, 0), tsr_cpu_input(g, node, 1)};
    const tsr_value *out = tsr_cpu_output(g, node, 0);
    bool full[2] = {same_dims(in[0], out), same_dims(in[1], out)};
    char shape[2][128], oshape[128];
    tsr_shape_format(shape[0], sizeof shape[0], in[0]->rank, in[0]->dims);
    tsr_shape_format(shape[1], sizeof shape[1], in[1]->rank, in[1]->dims);
    tsr_shape_format(oshape, sizeof oshape, out->rank, out->dims);
    if (!full[0] && !full[1]) {
        snprintf(why, size, "%s: both operands broadcast (%s and %s to %s)", node->op->name,
                 shape[0], shape[1], oshape);
        return false;
    }
    *f = (binary_form){.main = full[0] ? 0 : 1, .same_shape = full[0] && full[1]};
    if (f->same_shape)
        return true;
    const tsr_value *other = in[1 - f->main];
    if (tsr_shape_numel(other->rank, other->dims) == 1) {
        f->scalar = true;
        return true;
    }
    if (is_per_channel(other, out))
        return true;
    if (is_per_image_channel(other, out)) {
        f->per_image = true;
        return true;
    }
    f->row = repeated_row(other, out);
    if (f->row > 0)
        return true;
    snprintf(why, size, "%s: broadcast of %s to %s is neither per-channel nor one row",
             node->op->name, shape[1 - f->main], oshape);
    return false;
}

static bool is_f64(const tsr_graph *g, const tsr_node *node, int i)
{
    return tsr_cpu_input(g, node, i)->dtype == TSR_FLOAT64;
}

static bool binary_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    binary_form f;
    bool f64 = is_f64(g, node, 0) && is_f64(g, node, 1);
    if (!(f64 || (tsr_cpu_require_f32(g, node, 0, why, size) &&
                  tsr_cpu_require_f32(g, node, 1, why, size))) ||
        !binary_form_of(g, node, &f, why, size))
        return false;
    if (node->op == &tsr_op_SiluGrad && !f.same_shape) {
        snprintf(why, size, "SiluGrad: dY and X differ in shape");
        return false;
    }
    return true;
}

static void binary_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                           uint8_t *wanted, uint8_t *produced)
{
    binary_form f;
    char why[8];
    tsr_layout l = TSR_LAYOUT_PLAIN;
    if (!is_f64(g, node, 0) && binary_form_of(g, node, &f, why, sizeof why) && !f.row) {
        const tsr_value *main = tsr_cpu_input(g, node, f.main);
        l = tsr_cpu_keep_layout(main, available[f.main]);
        /* A residual Add of a blocked and a plain tensor: block the plain one. */
        if (f.same_shape && l == TSR_LAYOUT_PLAIN)
            l = tsr_cpu_keep_layout(main, available[1 - f.main]);
        wanted[f.main] = (uint8_t)l;
        wanted[1 - f.main] = f.same_shape ? (uint8_t)l : TSR_LAYOUT_PLAIN;
    }
    produced[0] = (uint8_t)l;
}

typedef struct {
    int kind; /* TSR_CPU_ADD.. with the operands in (main, other) order */
    binary_form form;
    tsr_cpu_planes planes; /* of the output, for bands */
} binary_data;

typedef struct {
    binary_vv_tile vv;
    binary_vp_tile vp;
    const float *a, *b;
    float *y;
    int64_t row_len;
    /* vp: the other operand's value per channel (C of them, or N x C per
     * image), or one scalar */
    const float *values;
    bool scalar, per_image;
    tsr_cpu_planes planes; /* block > 1: rows are channel blocks */
    int width;             /* vector width of the tile: the splat period */
    float pad_value;       /* what padded lanes of the pattern hold */
} binary_ctx;

static void binary_piece(const void *ctx, int64_t row, int64_t offset, int64_t len)
{
    const binary_ctx *c = ctx;
    int64_t at = row * c->row_len + offset;
    if (c->vv) {
        c->vv(c->a + at, c->b + at, c->y + at, len);
        return;
    }
    float pattern[PATTERN_FLOATS];
    int64_t per = c->planes.block > 1 ? c->planes.cbs : c->planes.channels;
    int64_t cb = row % per;
    const float *values = c->values + (c->per_image ? row / per * c->planes.channels : 0);
    int period =
        channel_pattern(&c->planes, cb, values, c->scalar, c->pad_value, c->width, pattern);
    c->vp(c->a + at, pattern, period, c->y + at, len);
}

/* The op on padded lanes: 0 OP pad. NaN (0/0) compares unequal to 0 too. */
static float binary_scalar(int kind, float a, float b)
{
    switch (kind) {
    case TSR_CPU_ADD: return a + b;
    case TSR_CPU_SUB: return a - b;
    case TSR_CPU_MUL: return a * b;
    case TSR_CPU_DIV: return a / b;
    case TSR_CPU_RSUB: return b - a;
    case TSR_CPU_SILU_GRAD: return a * 0.5f; /* dY Silu'(0) */
    default: return b / a;
    }
}

typedef struct {
    binary64_vv_tile vv;
    binary64_vs_tile vs;
    const double *a, *b;
    double *y;
    int64_t row_len, channels; /* vs: rows are (n, c) unless scalar */
    bool scalar, per_image;
} binary64_ctx;

static void binary64_piece(const void *ctx, int64_t row, int64_t offset, int64_t len)
{
    const binary64_ctx *c = ctx;
    int64_t at = row * c->row_len + offset;
    if (c->vv)
        c->vv(c->a + at, c->b + at, c->y + at, len);
    else
        c->vs(c->a + at, c->b[c->scalar ? 0 : c->per_image ? row : row % c->channels], c->y + at,
              len);
}

static tsr_status binary64_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const binary_data *d = s->data;
    const binary_form *f = &d->form;
    const tsr_tensor *x = k->inputs[f->main];
    const tsr_cpu_eltwise_tiles *t = tiles[s->isa];
    span_job j = span_of(x, TSR_LAYOUT_PLAIN, !f->same_shape && !f->scalar);
    binary64_ctx c = {.vv = f->same_shape ? t->vv64[d->kind] : NULL,
                      .vs = f->same_shape ? NULL : t->vs64[d->kind],
                      .a = x->data,
                      .b = k->inputs[1 - f->main]->data,
                      .y = k->outputs[0]->data,
                      .row_len = j.row_len,
                      .channels = x->rank >= 2 ? x->dims[1] : 1,
                      .scalar = f->scalar,
                      .per_image = f->per_image};
    run_pieces(&j, k->threads, binary64_piece, &c, NULL);
    return TSR_OK;
}

/* The other operand one row, repeated over plain memory: the same-shape
 * tile, row by row. */
static tsr_status binary_rows_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const binary_data *d = s->data;
    const tsr_tensor *x = k->inputs[d->form.main], *other = k->inputs[1 - d->form.main];
    int64_t n = d->form.row, rows = tsr_tensor_numel(x) / n;
    int nt = tsr_cpu_threads_for(k->threads, rows * n);
    const tsr_cpu_eltwise_tiles *t = tiles[s->isa];
    if (x->dtype == TSR_FLOAT64) {
        binary64_vv_tile vv = t->vv64[d->kind];
        const double *a = x->data, *b = other->data;
        double *y = k->outputs[0]->data;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t r = 0; r < rows; r++)
            vv(a + r * n, b, y + r * n, n);
        return TSR_OK;
    }
    binary_vv_tile vv = t->vv[d->kind];
    const float *a = x->data, *b = other->data;
    float *y = k->outputs[0]->data;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < rows; r++)
        vv(a + r * n, b, y + r * n, n);
    return TSR_OK;
}

static tsr_status binary_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const binary_data *d = s->data;
    const binary_form *f = &d->form;
    const tsr_tensor *x = k->inputs[f->main], *other = k->inputs[1 - f->main];
    if (f->row)
        return binary_rows_run(s, k);
    if (x->dtype == TSR_FLOAT64)
        return binary64_run(s, k);
    tsr_layout layout = (tsr_layout)k->input_layouts[f->main];
    binary_ctx c = {.a = x->data,
                    .b = other->data,
                    .y = k->outputs[0]->data,
                    .values = other->data,
                    .scalar = f->scalar,
                    .per_image = f->per_image,
                    .width = tsr_cpu_isa_lanes(s->isa)};
    span_job j = span_of(x, layout, !f->same_shape && !f->scalar);
    const tsr_cpu_eltwise_tiles *t = tiles[s->isa];
    if (f->same_shape) {
        c.vv = t->vv[d->kind];
    } else {
        c.vp = t->vp[d->kind];
        c.planes = (tsr_cpu_planes){
            .block = j.block, .cbs = j.cbs, .channels = x->rank >= 2 ? x->dims[1] : 1};
        /* Padded lanes get a value that keeps them zero where one exists. */
        c.pad_value = d->kind == TSR_CPU_DIV ? 1.0f : 0.0f;
    }
    float pad = f->same_shape ? 0.0f : c.pad_value;
    j.rezero = binary_scalar(d->kind, 0.0f, pad) != 0.0f;
    c.row_len = j.row_len;
    run_pieces(&j, k->threads, binary_piece, &c, c.y);
    return TSR_OK;
}

static void binary_band(const tsr_cpu_state *s, const tsr_band_call *c)
{
    const binary_data *d = s->data;
    const binary_form *f = &d->form;
    const tsr_cpu_planes *p = &d->planes;
    const tsr_cpu_eltwise_tiles *t = tiles[s->isa];
    int64_t len = (c->r1 - c->r0) * p->pitch;
    const float *a = band_rows(&c->in[f->main], c->r0, p->pitch);
    float *y = band_rows(&c->out, c->r0, p->pitch);
    float pad = 0.0f;
    if (f->same_shape) {
        t->vv[d->kind](a, band_rows(&c->in[1 - f->main], c->r0, p->pitch), y, len);
    } else {
        float pattern[PATTERN_FLOATS];
        pad = d->kind == TSR_CPU_DIV ? 1.0f : 0.0f;
        const float *values = c->in[1 - f->main].data;
        if (f->per_image)
            values += c->n * p->channels;
        int period = channel_pattern(p, c->cb, values, f->scalar, pad, tsr_cpu_isa_lanes(s->isa),
                                     pattern);
        t->vp[d->kind](a, pattern, period, y, len);
    }
    if (binary_scalar(d->kind, 0.0f, pad) != 0.0f)
        band_rezero(p, c->cb, y, len);
}

static tsr_status binary_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    const tsr_node *node = ctx->node;
    binary_data *d = tsr_calloc(1, sizeof *d);
    if (!d)
        return TSR_ERR_OUT_OF_MEMORY;
    s->data = d;
    s->run = binary_run;
    char why[256];
    if (!binary_form_of(ctx->graph, node, &d->form, why, sizeof why))
        return tsr_error(TSR_ERR_INTERNAL, "cpu backend: %s", why);
    const tsr_op_def *op = node->op;
    bool swapped = d->form.main == 1;
    if (op == &tsr_op_Add)
        d->kind = TSR_CPU_ADD;
    else if (op == &tsr_op_Mul)
        d->kind = TSR_CPU_MUL;
    else if (op == &tsr_op_Sub)
        d->kind = swapped ? TSR_CPU_RSUB : TSR_CPU_SUB;
    else if (op == &tsr_op_SiluGrad)
        d->kind = TSR_CPU_SILU_GRAD;
    else
        d->kind = swapped ? TSR_CPU_RDIV : TSR_CPU_DIV;
    /* A pattern of one block's lanes needs vectors no wider than the block. */
    int block = tsr_layout_block((tsr_layout)ctx->input_layouts[d->form.main]);
    if (!d->form.same_shape && block > 1)
        s->isa = tsr_cpu_isa_for_block(s->isa, block);
    const tsr_value *y = tsr_cpu_output(ctx->graph, node, 0);
    if (y->dtype == TSR_FLOAT32 && !d->form.row &&
        tsr_cpu_planes_of(y, ctx->input_layouts[d->form.main], &d->planes)) {
        s->band = binary_band;
        s->band_info = tsr_cpu_pointwise_band(d->form.same_shape ? 3u : 1u << d->form.main);
    }
    return TSR_OK;
}

/* ---------------------------------------------------- BatchNormalization */

typedef struct {
    float *scale, *shift; /* per channel; NULL until computed (non-constant statistics) */
    int64_t channels;
    double epsilon;
    tsr_cpu_planes planes; /* for bands */
} bn_data;

static bool bn_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    for (int i = 0; i < 5; i++)
        if (!tsr_cpu_require_f32(g, node, i, why, size))
            return false;
    if (node->n_outputs > 1) {
        snprintf(why, size, "BatchNormalization with %d outputs: the ref backend runs it",
                 node->n_outputs);
        return false;
    }
    return true;
}

/* scale = gamma / sqrt(var + eps), shift = beta - mean * scale, in double. */
static void bn_coefficients(const float *const p[4], int64_t channels, double eps, float *scale,
                            float *shift)
{
    for (int64_t c = 0; c < channels; c++) {
        double s = (double)p[0][c] / sqrt((double)p[3][c] + eps);
        scale[c] = (float)s;
        shift[c] = (float)((double)p[1][c] - (double)p[2][c] * s);
    }
}

typedef struct {
    affine_tile tile;
    const float *x;
    float *y;
    int64_t row_len;
    const float *scale, *shift;
    tsr_cpu_planes planes;
    int width;
} bn_ctx;

static void bn_piece(const void *ctx, int64_t row, int64_t offset, int64_t len)
{
    const bn_ctx *c = ctx;
    float s[PATTERN_FLOATS], t[PATTERN_FLOATS];
    int64_t cb = c->planes.block > 1 ? row % c->planes.cbs : row % c->planes.channels;
    int period = channel_pattern(&c->planes, cb, c->scale, false, 0.0f, c->width, s);
    channel_pattern(&c->planes, cb, c->shift, false, 0.0f, c->width, t);
    int64_t at = row * c->row_len + offset;
    c->tile(c->x + at, s, t, period, c->y + at, len);
}

static tsr_status bn_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const bn_data *d = s->data;
    const tsr_tensor *x = k->inputs[0];
    float *scratch = NULL;
    const float *scale = d->scale, *shift = d->shift;
    if (!scale) {
        scratch = tsr_malloc(2 * (size_t)(d->channels + 1) * sizeof(float));
        if (!scratch)
            return TSR_ERR_OUT_OF_MEMORY;
        const float *p[4];
        for (int i = 0; i < 4; i++)
            p[i] = k->inputs[i + 1]->data;
        bn_coefficients(p, d->channels, d->epsilon, scratch, scratch + d->channels);
        scale = scratch;
        shift = scratch + d->channels;
    }
    span_job j = span_of(x, (tsr_layout)k->input_layouts[0], true);
    bn_ctx c = {.tile = tiles[s->isa]->affine,
                .x = x->data,
                .y = k->outputs[0]->data,
                .row_len = j.row_len,
                .scale = scale,
                .shift = shift,
                .planes = {.block = j.block, .cbs = j.cbs, .channels = d->channels},
                .width = tsr_cpu_isa_lanes(s->isa)};
    run_pieces(&j, k->threads, bn_piece, &c, c.y);
    free(scratch);
    return TSR_OK;
}

static void bn_band(const tsr_cpu_state *s, const tsr_band_call *c)
{
    const bn_data *d = s->data;
    const tsr_cpu_planes *p = &d->planes;
    float sp[PATTERN_FLOATS], tp[PATTERN_FLOATS];
    int width = tsr_cpu_isa_lanes(s->isa);
    int period = channel_pattern(p, c->cb, d->scale, false, 0.0f, width, sp);
    channel_pattern(p, c->cb, d->shift, false, 0.0f, width, tp);
    tiles[s->isa]->affine(band_rows(&c->in[0], c->r0, p->pitch), sp, tp, period,
                          band_rows(&c->out, c->r0, p->pitch), (c->r1 - c->r0) * p->pitch);
}

static tsr_status bn_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    const tsr_graph *g = ctx->graph;
    const tsr_node *node = ctx->node;
    const tsr_value *x = tsr_cpu_input(g, node, 0);
    int64_t channels = x->dims[1];
    bool constant = true;
    for (int i = 1; i < 5; i++)
        constant = constant && tsr_cpu_input(g, node, i)->data;
    /* The struct and, for constant statistics, both coefficient arrays in one block. */
    size_t extra = constant ? 2 * (size_t)channels * sizeof(float) : 0;
    bn_data *d = tsr_calloc(1, sizeof *d + extra);
    if (!d)
        return TSR_ERR_OUT_OF_MEMORY;
    s->data = d;
    s->run = bn_run;
    d->channels = channels;
    d->epsilon = tsr_attr_float(node, "epsilon");
    int block = tsr_layout_block((tsr_layout)ctx->input_layouts[0]);
    if (block > 1)
        s->isa = tsr_cpu_isa_for_block(s->isa, block);
    if (constant) {
        d->scale = (float *)(d + 1);
        d->shift = d->scale + channels;
        const float *p[4];
        for (int i = 0; i < 4; i++)
            p[i] = tsr_cpu_input(g, node, i + 1)->data;
        bn_coefficients(p, channels, d->epsilon, d->scale, d->shift);
        /* Bands only with constant statistics: non-constant ones are computed per run. */
        if (tsr_cpu_planes_of(x, ctx->input_layouts[0], &d->planes)) {
            s->band = bn_band;
            s->band_info = tsr_cpu_pointwise_band(1u);
        }
    }
    return TSR_OK;
}

/* ------------------------------------------------------------ LSTMCell */

typedef struct {
    lstm_cell_tile tile;
    const float *gates, *c_prev;
    float *h, *c;
    int64_t hidden;
} lstm_cell_ctx;

static void lstm_cell_rows(const lstm_cell_ctx *x, int64_t b)
{
    int64_t H = x->hidden;
    x->tile(x->gates + b * 4 * H, x->c_prev ? x->c_prev + b * H : NULL, x->h + b * H, x->c + b * H,
            H);
}

static tsr_status lstm_cell_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    int64_t B = 0, H = 0;
    TSR_CHECK(tsr_lstm_cell_check_run(k, &B, &H));
    const tsr_tensor *cp = tsr_lstm_cell_c_prev(k);
    lstm_cell_ctx x = {.tile = tiles[s->isa]->lstm_cell,
                       .gates = k->inputs[0]->data,
                       .c_prev = cp ? cp->data : NULL,
                       .h = k->outputs[0]->data,
                       .c = k->outputs[1]->data,
                       .hidden = H};
    /* The gates' 4H floats and their transcendentals: ~16 flops each. */
    int nt = tsr_cpu_threads_for(k->threads, B * 4 * H * 16);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t b = 0; b < B; b++)
        lstm_cell_rows(&x, b);
    return TSR_OK;
}

void tsr_cpu_lstm_cell_rows(tsr_isa isa, const float *gates, float *c, float *h, int64_t rows,
                            int64_t hidden)
{
    lstm_cell_tile tile = tiles[isa]->lstm_cell;
    for (int64_t b = 0; b < rows; b++)
        tile(gates + b * 4 * hidden, c + b * hidden, h + b * hidden, c + b * hidden, hidden);
}

static tsr_status lstm_cell_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    (void)ctx;
    s->run = lstm_cell_run;
    return TSR_OK;
}

/* ---------------------------------------------------- Softmax, LogSoftmax */

/* Contiguous rows only (the axis is the last one, or the opset is below
 * 13); a strided softmax axis stays on ref. */
static bool softmax_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (!tsr_cpu_require_f32(g, node, 0, why, size))
        return false;
    const tsr_value *x = tsr_cpu_input(g, node, 0);
    int64_t outer, n, inner;
    if (x->rank < 1 || tsr_softmax_geometry(node, x->rank, x->dims, &outer, &n, &inner) != TSR_OK) {
        snprintf(why, size, "the axis is out of range");
        return false;
    }
    if (inner != 1) {
        snprintf(why, size, "the softmax axis is not the last one: the ref backend runs it");
        return false;
    }
    return true;
}

static tsr_status softmax_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int64_t outer, n, inner;
    TSR_CHECK(tsr_softmax_geometry(k->node, x->rank, x->dims, &outer, &n, &inner));
    if (inner != 1)
        return tsr_error(TSR_ERR_INTERNAL, "cpu %s: the axis is not the last one",
                         k->node->op->name);
    softmax_tile tile = tiles[s->isa]->softmax_row;
    bool log_out = k->node->op == &tsr_op_LogSoftmax;
    const float *xs = x->data;
    float *ys = k->outputs[0]->data;
    int nt = tsr_cpu_threads_for(k->threads, outer * n * 16);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < outer; r++)
        tile(xs + r * n, ys + r * n, n, log_out);
    return TSR_OK;
}

static tsr_status softmax_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    (void)ctx;
    s->run = softmax_run;
    return TSR_OK;
}

/* -------------------------------------------------- LayerNormalization */

/* float32, the Y output only, and a scale and bias with one value per
 * normalized element (what nn.LayerNorm exports and fuse_layernorm folds);
 * broadcast ones, the Mean and InvStdDev outputs and float64 stay on ref. */
static bool layernorm_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (!tsr_cpu_require_f32(g, node, 0, why, size))
        return false;
    const tsr_value *x = tsr_cpu_input(g, node, 0);
    int axis;
    if (x->rank < 1 || !tsr_axis_normalize(tsr_attr_int(node, "axis"), x->rank, &axis)) {
        snprintf(why, size, "the axis is out of range");
        return false;
    }
    if (node->n_outputs > 1) {
        snprintf(why, size, "the Mean and InvStdDev outputs are computed by ref");
        return false;
    }
    int64_t n = tsr_shape_numel(x->rank - axis, x->dims + axis);
    for (int i = 1; i < 3; i++) {
        const tsr_value *p = tsr_cpu_input(g, node, i);
        if (p && (p->dtype != TSR_FLOAT32 || tsr_shape_numel(p->rank, p->dims) != n)) {
            snprintf(why, size, "%s is broadcast over the normalized axes: ref runs it",
                     i == 1 ? "the scale" : "the bias");
            return false;
        }
    }
    return true;
}

typedef struct {
    int axis;
    float zeros[]; /* the bias when the node has none */
} layernorm_data;

static tsr_status layernorm_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const layernorm_data *d = s->data;
    const tsr_tensor *x = k->inputs[0];
    int64_t rows = tsr_shape_numel(d->axis, x->dims);
    int64_t n = tsr_shape_numel(x->rank - d->axis, x->dims + d->axis);
    const float *xs = x->data, *scale = k->inputs[1]->data;
    const float *bias = k->n_inputs > 2 && k->inputs[2] ? k->inputs[2]->data : d->zeros;
    float *ys = k->outputs[0]->data;
    float eps = (float)tsr_attr_float(k->node, "epsilon");
    layernorm_tile tile = tiles[s->isa]->layernorm_row;
    int nt = tsr_cpu_threads_for(k->threads, rows * n * 4);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < rows; r++)
        tile(xs + r * n, scale, bias, ys + r * n, n, eps);
    return TSR_OK;
}

static tsr_status layernorm_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    const tsr_value *x = tsr_cpu_input(ctx->graph, ctx->node, 0);
    int axis;
    if (!tsr_axis_normalize(tsr_attr_int(ctx->node, "axis"), x->rank, &axis))
        return tsr_error(TSR_ERR_INTERNAL, "cpu LayerNormalization: axis out of range");
    int64_t n = tsr_cpu_input(ctx->graph, ctx->node, 2)
                    ? 0
                    : tsr_shape_numel(x->rank - axis, x->dims + axis);
    layernorm_data *d = tsr_calloc(1, sizeof *d + sizeof(float) * (size_t)n);
    if (!d)
        return TSR_ERR_OUT_OF_MEMORY;
    d->axis = axis;
    s->data = d;
    s->run = layernorm_run;
    return TSR_OK;
}

const tsr_cpu_op tsr_cpu_eltwise_ops[] = {
    {&tsr_op_Relu, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_LeakyRelu, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_Clip, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_HardSigmoid, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_HardSwish, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_Sigmoid, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_Tanh, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_Erf, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_Exp, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_Abs, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_Neg, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_Add, binary_supports, binary_layouts, binary_prepare, true},
    {&tsr_op_Sub, binary_supports, binary_layouts, binary_prepare, true},
    {&tsr_op_Mul, binary_supports, binary_layouts, binary_prepare, true},
    {&tsr_op_Div, binary_supports, binary_layouts, binary_prepare, true},
    {&tsr_op_Silu, unary_supports, NULL, unary_prepare, true},
    {&tsr_op_SiluGrad, binary_supports, binary_layouts, binary_prepare, true},
    {&tsr_op_BatchNormalization, bn_supports, NULL, bn_prepare, true},
    {&tsr_op_LSTMCell, f32_supports, NULL, lstm_cell_prepare, true},
    {&tsr_op_Softmax, softmax_supports, tsr_cpu_plain_layouts, softmax_prepare, true},
    {&tsr_op_LogSoftmax, softmax_supports, tsr_cpu_plain_layouts, softmax_prepare, true},
    {&tsr_op_LayerNormalization, layernorm_supports, tsr_cpu_plain_layouts, layernorm_prepare,
     true},
    {NULL},
};
