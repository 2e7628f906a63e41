/* Devices: which backends a device name stands for, in order of
 * preference. The reference backend ends every list. */
#include "backends/backend.h"
#include "backends/cpu/cpu.h"

#include <stdio.h>
#include <string.h>

static const tsr_backend *const ref_device[] = {&tsr_backend_ref, NULL};
static const tsr_backend *const cpu_device[] = {&tsr_backend_dnnl, &tsr_backend_cpu,
                                                &tsr_backend_ref, NULL};

const tsr_backend *const *tsr_device_backends(const char *device)
{
    if (strcmp(device, "ref") == 0)
        return ref_device;
    if (strcmp(device, "cpu") == 0)
        return cpu_device;
    return NULL;
}

const char *tsr_device_names(void) { return "cpu, ref"; }

const char *tsr_default_device(void) { return "cpu"; }

bool tsr_device_optimizes(const char *device) { return strcmp(device, "ref") != 0; }

bool tsr_device_supports_precision(const char *device, tsr_precision precision, char *why,
                                   size_t why_size)
{
    if (precision == TSR_PRECISION_FP32)
        return true;
    if (strcmp(device, "cpu") == 0 && tsr_cpu_has_bf16())
        return true;
    snprintf(why, why_size,
             strcmp(device, "cpu") == 0 ? "this CPU has no bf16 arithmetic (AVX512_BF16 or AMX)"
                                        : "device '%s' computes in fp32 only",
             device);
    return false;
}
