/* What the ref kernels of ICTEdgeMessage and ICTEdgeMessageGrad
 * (src/ops/ict_edge.c) share with the cpu backend's
 * (src/backends/cpu/kernels_ict_edge.c). */
#ifndef TSR_OPS_ICT_EDGE_H
#define TSR_OPS_ICT_EDGE_H

#include "ops/ict_plan.h"

/* The path, alpha and (ICTEdgeMessage only, else false) transpose of a
 * node, checked. */
tsr_status tsr_ict_edge_attrs_read(const tsr_node *node, int ls[3], double *alpha, bool *transpose);
/* A kernel's shapes and indices against the path (grad: an
 * ICTEdgeMessageGrad node; transpose: of an ICTEdgeMessage). */
tsr_status tsr_ict_edge_check_run(const tsr_kernel_ctx *k, const int ls[3], bool transpose,
                                  bool grad);
/* The weight row of each edge (the optional last input), or NULL: row e. */
const int64_t *tsr_ict_edge_rows(const tsr_kernel_ctx *k, bool grad);

#endif
