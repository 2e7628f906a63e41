/* BesselBasis (src/ops/radial.c): its attributes as the kernels read them,
 * shared by the ref kernel and the cpu backend's. */
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

#endif
