/* The test device: the cpu device's kernels on memory the host must not
 * touch (see testdev.c and docs/hal.md). */
#ifndef TSR_BACKENDS_TESTDEV_H
#define TSR_BACKENDS_TESTDEV_H

#include "backends/backend.h"

/* Its backends, best first, NULL-terminated: dnnl's and the cpu kernels
 * in the test device's memory, then the reference backend on the host. */
const tsr_backend *const *tsr_testdev_backends(void);

#endif
