/* NonMaxSuppression (opsets 10 and 11): per image b and class c, the boxes
 * of boxes [B, N, 4] in decreasing order of scores [B, C, N] (equal scores:
 * the lower index first; NaN ranks below every number), each kept unless
 * its IoU with a box already kept for that class passes iou_threshold,
 * until max_output_boxes_per_class are kept. Boxes scoring no more than
 * score_threshold (when given) never enter. The output is int64
 * [num_selected, 3] of (b, c, box index), image by image, class by class,
 * in the order kept, as ONNX Runtime writes it. center_point_box 0 reads
 * a box as two opposite corners (y1, x1, y2, x2) in either order, 1 as
 * (x_center, y_center, width, height). Boxes of no area overlap nothing.
 *
 * max_output_boxes_per_class is 0 when omitted (nothing is selected) and
 * a negative one counts as 0, as in ONNX Runtime. The count depends on the
 * values, so, as for NonZero (nonzero.c), the first dim is known only once
 * the node has run: plans give the kernel [B * C * min(N, max), 3] (the
 * `bound` hook) and the kernel writes the count into its output's dims. No
 * gradient: the output is a set of indices. */
#include "ops/movement.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const tsr_attr_def nms_attrs[] = {{"center_point_box", TSR_ATTR_INT, .i = 0}, {NULL}};

/* The node's tensors, and its optional inputs read into numbers. */
typedef struct nms_problem {
    const tsr_tensor *boxes, *scores;
    int64_t batches, classes, n_boxes, max_per_class;
    double iou_threshold, score_threshold;
    bool has_score_threshold, center_point_box;
} nms_problem;

static const char *const nms_inputs[5] = {"boxes", "scores", "max_output_boxes_per_class",
                                          "iou_threshold", "score_threshold"};

/* Optional input i (2, 3 or 4), when given, holds one value. */
static tsr_status check_single(const tsr_tensor *t, int i)
{
    if (t && (tsr_tensor_numel(t) != 1 || t->rank > 1))
        return tsr_error(TSR_ERR_SHAPE, "NonMaxSuppression: %s must hold one value, not %lld",
                         nms_inputs[i], (long long)tsr_tensor_numel(t));
    return TSR_OK;
}

static tsr_status problem_of(const tsr_node *node, const tsr_tensor *const in[5], nms_problem *p)
{
    const tsr_tensor *boxes = in[0], *scores = in[1];
    if (boxes->rank != 3 || boxes->dims[2] != 4 || scores->rank != 3)
        return tsr_error(TSR_ERR_SHAPE,
                         "NonMaxSuppression: boxes must be [B, N, 4] and scores [B, C, N] (ranks "
                         "%d and %d)",
                         boxes->rank, scores->rank);
    if (boxes->dims[0] != scores->dims[0] || boxes->dims[1] != scores->dims[2])
        return tsr_error(TSR_ERR_SHAPE,
                         "NonMaxSuppression: boxes hold %lld images of %lld boxes but scores %lld "
                         "images of %lld",
                         (long long)boxes->dims[0], (long long)boxes->dims[1],
                         (long long)scores->dims[0], (long long)scores->dims[2]);
    *p = (nms_problem){.boxes = boxes,
                       .scores = scores,
                       .batches = boxes->dims[0],
                       .classes = scores->dims[1],
                       .n_boxes = boxes->dims[1]};
    int64_t center = tsr_attr_int(node, "center_point_box");
    if (center != 0 && center != 1)
        return tsr_error(TSR_ERR_PARSE, "NonMaxSuppression: center_point_box is 0 or 1, not %lld",
                         (long long)center);
    p->center_point_box = center == 1;
    for (int i = 2; i < 5; i++)
        TSR_CHECK(check_single(in[i], i));
    int64_t max_out = in[2] ? ((const int64_t *)in[2]->data)[0] : 0;
    p->max_per_class = max_out > 0 ? max_out : 0;
    p->iou_threshold = in[3] ? tsr_get_f(in[3], 0) : 0.0;
    if (!(p->iou_threshold >= 0.0 && p->iou_threshold <= 1.0))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "NonMaxSuppression: iou_threshold is %g; it must lie in [0, 1]",
                         p->iou_threshold);
    p->has_score_threshold = in[4] != NULL;
    p->score_threshold = in[4] ? tsr_get_f(in[4], 0) : 0.0;
    return TSR_OK;
}

/* A box as its extent along y and x, lower edge first. */
typedef struct nms_box {
    double y1, x1, y2, x2;
} nms_box;

static nms_box box_at(const nms_problem *p, int64_t b, int64_t i)
{
    int64_t at = (b * p->n_boxes + i) * 4;
    double v[4];
    for (int k = 0; k < 4; k++)
        v[k] = tsr_get_f(p->boxes, at + k);
    if (p->center_point_box)
        return (nms_box){v[1] - v[3] / 2, v[0] - v[2] / 2, v[1] + v[3] / 2, v[0] + v[2] / 2};
    return (nms_box){fmin(v[0], v[2]), fmin(v[1], v[3]), fmax(v[0], v[2]), fmax(v[1], v[3])};
}

static bool overlaps_past(const nms_box *a, const nms_box *b, double threshold)
{
    double ih = fmin(a->y2, b->y2) - fmax(a->y1, b->y1);
    double iw = fmin(a->x2, b->x2) - fmax(a->x1, b->x1);
    if (ih <= 0.0 || iw <= 0.0)
        return false;
    double area_a = (a->y2 - a->y1) * (a->x2 - a->x1), area_b = (b->y2 - b->y1) * (b->x2 - b->x1);
    double inter = ih * iw, uni = area_a + area_b - inter;
    if (area_a <= 0.0 || area_b <= 0.0 || uni <= 0.0)
        return false;
    return inter / uni > threshold;
}

typedef struct nms_candidate {
    double score;
    int64_t index;
} nms_candidate;

static int by_score(const void *pa, const void *pb)
{
    const nms_candidate *a = pa, *b = pb;
    bool na = isnan(a->score), nb = isnan(b->score);
    if (na != nb)
        return na ? 1 : -1;
    if (!na && a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* Runs the selection; writes the triples to out (when not NULL, room for
 * `capacity` of them) and their number to *count. */
static tsr_status select_boxes(const nms_problem *p, int64_t *out, int64_t capacity, int64_t *count)
{
    *count = 0;
    int64_t n = p->n_boxes;
    if (n == 0 || p->max_per_class == 0 || p->classes == 0)
        return TSR_OK;
    nms_candidate *cand = tsr_malloc((size_t)n * sizeof(*cand));
    nms_box *kept = tsr_malloc((size_t)n * sizeof(*kept));
    if (!cand || !kept) {
        free(cand);
        free(kept);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    for (int64_t b = 0; b < p->batches; b++)
        for (int64_t c = 0; c < p->classes; c++) {
            int64_t n_cand = 0, n_kept = 0;
            for (int64_t i = 0; i < n; i++) {
                double s = tsr_get_f(p->scores, (b * p->classes + c) * n + i);
                if (!p->has_score_threshold || s > p->score_threshold)
                    cand[n_cand++] = (nms_candidate){s, i};
            }
            qsort(cand, (size_t)n_cand, sizeof(*cand), by_score);
            for (int64_t j = 0; j < n_cand && n_kept < p->max_per_class; j++) {
                nms_box box = box_at(p, b, cand[j].index);
                bool suppressed = false;
                for (int64_t k = 0; k < n_kept && !suppressed; k++)
                    suppressed = overlaps_past(&box, &kept[k], p->iou_threshold);
                if (suppressed)
                    continue;
                kept[n_kept++] = box;
                if (out && *count == capacity) {
                    free(cand);
                    free(kept);
                    return tsr_error(TSR_ERR_SHAPE,
                                     "NonMaxSuppression: the output holds only %lld selections",
                                     (long long)capacity);
                }
                if (out) {
                    out[3 * *count] = b;
                    out[3 * *count + 1] = c;
                    out[3 * *count + 2] = cand[j].index;
                }
                ++*count;
            }
        }
    free(cand);
    free(kept);
    return TSR_OK;
}

static tsr_status nms_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_FLOAT_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 2, TSR_DTYPE_BIT(TSR_INT64)));
    TSR_CHECK(tsr_infer_require_dtype(c, 3, TSR_FLOAT_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 4, TSR_FLOAT_TYPES));
    const tsr_value *boxes = c->inputs[0], *scores = c->inputs[1];
    if (boxes->rank >= 0 && (boxes->rank != 3 || tsr_dims_differ(boxes->dims[2], 4)))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "boxes must be [B, N, 4], not of rank %d%s",
                               boxes->rank,
                               boxes->rank == 3 ? " with a last dim other than 4" : "");
    if (scores->rank >= 0 && scores->rank != 3)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "scores must be [B, C, N], not of rank %d",
                               scores->rank);
    if (boxes->rank == 3 && scores->rank == 3 &&
        (tsr_dims_differ(boxes->dims[0], scores->dims[0]) ||
         tsr_dims_differ(boxes->dims[1], scores->dims[2])))
        return tsr_infer_error(
            c, TSR_ERR_SHAPE, "boxes hold %lld images of %lld boxes but scores %lld images of %lld",
            (long long)boxes->dims[0], (long long)boxes->dims[1], (long long)scores->dims[0],
            (long long)scores->dims[2]);
    for (int i = 2; i < c->n_inputs; i++) {
        const tsr_value *v = c->inputs[i];
        int64_t numel = v ? tsr_shape_numel(v->rank, v->dims) : 1;
        if (v && (v->rank > 1 || (numel >= 0 && numel != 1)))
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%s must hold one value", nms_inputs[i]);
    }
    int64_t dims[2] = {TSR_DIM_UNKNOWN, 3};
    const tsr_value *max_out = c->n_inputs > 2 ? c->inputs[2] : NULL;
    if (!max_out || (max_out->data && ((const int64_t *)max_out->data)[0] <= 0))
        dims[0] = 0;
    bool all_constant = true;
    for (int i = 0; i < c->n_inputs; i++)
        all_constant = all_constant && (!c->inputs[i] || c->inputs[i]->data);
    if (dims[0] != 0 && all_constant) {
        tsr_tensor t[5];
        const tsr_tensor *in[5] = {NULL};
        for (int i = 0; i < c->n_inputs; i++)
            if (c->inputs[i]) {
                t[i] = tsr_value_tensor(c->inputs[i]);
                in[i] = &t[i];
            }
        nms_problem p;
        TSR_CHECK(problem_of(c->node, in, &p));
        TSR_CHECK(select_boxes(&p, NULL, 0, &dims[0]));
    }
    tsr_infer_set(c, 0, TSR_INT64, 2, dims);
    return TSR_OK;
}

/* Every box of every class kept, up to max_output_boxes_per_class where it is a constant. */
static tsr_status nms_bound(tsr_infer_ctx *c)
{
    const tsr_value *boxes = c->inputs[0], *scores = c->inputs[1];
    if (boxes->rank != 3 || scores->rank != 3 || !tsr_dim_known(boxes->dims[0]) ||
        !tsr_dim_known(boxes->dims[1]) || !tsr_dim_known(scores->dims[1]))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "the shapes of boxes and scores are not known");
    int64_t per_class = boxes->dims[1];
    const tsr_value *max_out = c->n_inputs > 2 ? c->inputs[2] : NULL;
    if (max_out && max_out->data) {
        int64_t m = ((const int64_t *)max_out->data)[0];
        per_class = m < per_class ? (m > 0 ? m : 0) : per_class;
    }
    int64_t dims[2] = {0, 3};
    if (!tsr_size_mul(boxes->dims[0], scores->dims[1], &dims[0]) ||
        !tsr_size_mul(dims[0], per_class, &dims[0]))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "more selections than a tensor can hold");
    tsr_infer_set(c, 0, TSR_INT64, 2, dims);
    return TSR_OK;
}

static tsr_status nms_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *in[5] = {NULL};
    for (int i = 0; i < k->n_inputs && i < 5; i++)
        in[i] = k->inputs[i];
    nms_problem p;
    TSR_CHECK(problem_of(k->node, in, &p));
    tsr_tensor *y = k->outputs[0];
    if (y->rank != 2 || y->dims[1] != 3)
        return tsr_error(TSR_ERR_SHAPE, "NonMaxSuppression: the output must be [num_selected, 3]");
    int64_t count;
    TSR_CHECK(select_boxes(&p, y->data, y->dims[0], &count));
    y->dims[0] = count;
    return TSR_OK;
}

const tsr_op_def tsr_op_NonMaxSuppression = {
    .name = "NonMaxSuppression",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = nms_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = nms_infer,
    .ref = nms_ref,
    .bound = nms_bound,
};
