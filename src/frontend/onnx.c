/* PLACEHOLDER: replaced by the ONNX importer. */
#include "core/core.h"
tsr_status tsr_graph_load_onnx_file(const char *path, tsr_graph **graph_out)
{
    (void)path; *graph_out = NULL;
    return tsr_error(TSR_ERR_UNSUPPORTED, "ONNX import is not implemented yet");
}
tsr_status tsr_graph_load_onnx_buffer(const void *data, size_t size, const char *base_dir, tsr_graph **graph_out)
{
    (void)data; (void)size; (void)base_dir; *graph_out = NULL;
    return tsr_error(TSR_ERR_UNSUPPORTED, "ONNX import is not implemented yet");
}
