/* Devices: the table of device names, the backends each stands for in
 * order of preference, the precisions each computes in and whether its
 * plans run the optimization passes. The reference backend ends every
 * list. Adding a device is one line here. */
#include "backends/backend.h"
#include "backends/cpu/cpu.h"
#ifdef TSR_HAVE_CUDA
#include "backends/cuda/cuda.h"
#endif
#include "backends/testdev/testdev.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION(p) (1u << (p))

typedef struct {
    const char *name;
    const tsr_backend *const *(*backends)(void); /* best first, NULL-terminated */
    unsigned precisions;                /* PRECISION(p) for each precision it computes in */
    /* Whether this machine has what a listed precision needs; NULL: it
     * always has. On false, writes the reason into `why`. */
    bool (*has_precision)(tsr_precision precision, char *why, size_t why_size);
    bool optimizes; /* the reference device runs graphs as they are: it is the oracle */
    /* Set: the device exists only while this environment variable is set
     * (and not to "0"). */
    const char *enabled_by;
} device;

static const tsr_backend *const *ref_backends(void)
{
    static const tsr_backend *const list[] = {&tsr_backend_ref, NULL};
    return list;
}

static const tsr_backend *const *cpu_backends(void)
{
    static const tsr_backend *const list[] = {&tsr_backend_dnnl, &tsr_backend_cpu,
                                              &tsr_backend_ref, NULL};
    return list;
}

static bool cpu_has_precision(tsr_precision precision, char *why, size_t why_size)
{
    if (precision != TSR_PRECISION_BF16 || tsr_cpu_has_bf16())
        return true;
    snprintf(why, why_size, "this CPU has no bf16 arithmetic (AVX512_BF16 or AMX)");
    return false;
}

static const device devices[] = {
    {"cpu", cpu_backends, PRECISION(TSR_PRECISION_FP32) | PRECISION(TSR_PRECISION_BF16),
     cpu_has_precision, true, NULL},
    {"ref", ref_backends, PRECISION(TSR_PRECISION_FP32), NULL, false, NULL},
#ifdef TSR_HAVE_CUDA
    {"cuda", tsr_cuda_backends, PRECISION(TSR_PRECISION_FP32), NULL, true, NULL},
#endif
    /* The cpu device's kernels on memory the host must not touch, for
     * testing devices with memory of their own (docs/hal.md). */
    {"testdev", tsr_testdev_backends, PRECISION(TSR_PRECISION_FP32), NULL, true, "TSR_TESTDEV"},
};

#define N_DEVICES ((int)(sizeof devices / sizeof devices[0]))

static bool enabled(const device *d)
{
    const char *env = d->enabled_by ? getenv(d->enabled_by) : NULL;
    return !d->enabled_by || (env && *env && strcmp(env, "0") != 0);
}

static const device *find_device(const char *name)
{
    for (int d = 0; d < N_DEVICES; d++)
        if (strcmp(devices[d].name, name) == 0 && enabled(&devices[d]))
            return &devices[d];
    return NULL;
}

const tsr_backend *const *tsr_device_backends(const char *name)
{
    const device *d = find_device(name);
    return d ? d->backends() : NULL;
}

const char *tsr_device_names(void)
{
    static _Thread_local char names[256];
    size_t used = 0;
    names[0] = '\0';
    for (int d = 0; d < N_DEVICES && used < sizeof names; d++)
        if (enabled(&devices[d]))
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "",
                                     devices[d].name);
    return names;
}

const char *tsr_default_device(void) { return devices[0].name; }

bool tsr_device_optimizes(const char *name)
{
    const device *d = find_device(name);
    return d && d->optimizes;
}

bool tsr_device_supports_precision(const char *name, tsr_precision precision, char *why,
                                   size_t why_size)
{
    const device *d = find_device(name);
    if (!d) {
        snprintf(why, why_size, "unknown device '%s'", name);
        return false;
    }
    if ((unsigned)precision >= 32 || !(d->precisions & PRECISION(precision))) {
        snprintf(why, why_size, "device '%s' computes in fp32 only", name);
        return false;
    }
    return !d->has_precision || d->has_precision(precision, why, why_size);
}
