/* BesselBasis and RadialSpline (src/ops/radial.c): their attributes and
 * the spline's weights as the kernels read them, shared by the ref kernels
 * and the cpu backend's. */
#ifndef TSR_OPS_RADIAL_H
#define TSR_OPS_RADIAL_H

#include "ops/op.h"

typedef struct tsr_bessel_params {
    double rc;       /* r_cutoff */
    int64_t n_basis; /* 1..1024 */
    int p, order;    /* the cutoff polynomial's p, the derivative's order */
} tsr_bessel_params;

/* Reads and checks the node's attributes. */
tsr_status tsr_bessel_read(const tsr_node *node, tsr_bessel_params *b);

/* The error for a distance r[i] that is not positive (or is NaN). */
tsr_status tsr_bessel_bad_distance(int64_t i, double r);

/* RadialSpline and RadialSplineDot: r_max and the order of the derivative. */
typedef struct tsr_spline_params {
    double r_max;
    int order;
} tsr_spline_params;

tsr_status tsr_spline_read(const tsr_node *node, tsr_spline_params *p);

/* The kernel's n intervals and m blocks of kb functions, its tensors
 * checked. */
tsr_status tsr_spline_shapes(const tsr_kernel_ctx *k, int64_t *n, int *m, int64_t *kb);

/* The error for a distance r[i] that is negative (or NaN). */
tsr_status tsr_spline_bad_distance(int64_t i, double r);

/* The spline at r on n intervals of [0, r_max): the interval i and the
 * weights of its coefficients c_0..c_3 (f = Σ_j c_j t^j, t = r/h - i, h =
 * r_max/n), differentiated `order` times in r. False from r_max on, where
 * the function and its derivatives are zero. r >= 0. */
static inline bool tsr_spline_weights(double r, double r_max, int64_t n, int order, int64_t *i,
                                      double w[4])
{
    double x = r / r_max * (double)n;
    if (!(x < (double)n))
        return false;
    *i = (int64_t)x;
    double t = x - (double)*i, s = (double)n / r_max;
    if (order == 0) {
        w[0] = 1.0;
        w[1] = t;
        w[2] = t * t;
        w[3] = t * t * t;
    } else if (order == 1) {
        w[0] = 0.0;
        w[1] = s;
        w[2] = 2.0 * t * s;
        w[3] = 3.0 * t * t * s;
    } else if (order == 2) {
        w[0] = w[1] = 0.0;
        w[2] = 2.0 * s * s;
        w[3] = 6.0 * t * s * s;
    } else {
        /* Cubic pieces: the third derivative is constant, higher ones 0. */
        w[0] = w[1] = w[2] = 0.0;
        w[3] = order == 3 ? 6.0 * s * s * s : 0.0;
    }
    return true;
}

#endif
