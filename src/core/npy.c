/* PLACEHOLDER: replaced by the .npy reader and writer. */
#include "core/core.h"
tsr_status tsr_npy_read(const char *path, tsr_tensor *tensor_out)
{
    (void)path; (void)tensor_out;
    return tsr_error(TSR_ERR_UNSUPPORTED, ".npy reading is not implemented yet");
}
tsr_status tsr_npy_write(const char *path, const tsr_tensor *tensor)
{
    (void)path; (void)tensor;
    return tsr_error(TSR_ERR_UNSUPPORTED, ".npy writing is not implemented yet");
}
