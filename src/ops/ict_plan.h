/* The coupling of one ICTProduct path in coordinates of orthonormal bases
 * of the symmetric traceless tensors (src/ops/ict.c), shared by the ref
 * kernel and the cpu backend's kernel (src/backends/cpu/kernels_ict.c),
 * so both compute the same bilinear map. */
#ifndef TSR_OPS_ICT_PLAN_H
#define TSR_OPS_ICT_PLAN_H

#include "ops/op.h"

/* Highest rank any input or output may have (3^8 = 6561 components). */
#define TSR_ICT_MAX_L 8

/* An orthonormal basis of the symmetric traceless rank-l tensors: dim =
 * 2l+1 columns of `size` = 3^l values each, column m at q + m * size. */
typedef struct tsr_ict_basis {
    int l, dim;
    int64_t size;
    double *q;
} tsr_ict_basis;

/* One product path in basis coordinates: w[(r * d1 + p) * d2 + q] =
 * alpha K <Q3_r, contract_k(Q1_p, Q2_q)>, b = the bases of l1, l2, l3. */
typedef struct tsr_ict_plan {
    tsr_ict_basis b[3];
    double *w;
} tsr_ict_plan;

/* Which component class (counts a of x, b of y indices) each of the 3^l
 * components of a symmetric rank-l tensor belongs to: a * (l + 1) + b.
 * The components of one class are equal in every symmetric tensor,
 * including the basis columns. */
void tsr_ict_classes(int l, int *cls);
tsr_status tsr_ict_plan_build(int l1, int l2, int l3, double alpha, tsr_ict_plan *p);
void tsr_ict_plan_free(tsr_ict_plan *p);
/* The path (l1, l2, l3), alpha, sum_channels and coordinates of an
 * ICTProduct node, checked. */
tsr_status tsr_ict_product_attrs_read(const tsr_node *node, int ls[3], double *alpha, bool *sum,
                                      bool *coords);

#endif
