/* Shared between the ONNX importer's files: decoding TensorProto messages
 * (initializers and tensor attributes) into Tessera tensors. */
#ifndef TSR_FRONTEND_ONNX_INTERNAL_H
#define TSR_FRONTEND_ONNX_INTERNAL_H

#include "core/core.h"

#include "onnx.pb-c.h"

/* Maps an ONNX element type code to a Tessera dtype; false for the types
 * Tessera does not hold (float16, string, complex, ...). */
bool tsr_onnx_dtype(int32_t onnx_type, tsr_dtype *dtype_out);
/* ONNX's name of an element type code, for messages ("float16"). */
const char *tsr_onnx_dtype_name(int32_t onnx_type);

/* Decodes `tp` into *out, whose data is a fresh tsr_aligned_alloc buffer the
 * caller frees. `what` names the tensor in messages ("initializer 'w'").
 * External data files are looked up under base_dir (NULL forbids them). */
tsr_status tsr_onnx_tensor_decode(const Onnx__TensorProto *tp, const char *base_dir,
                                  const char *what, tsr_tensor *out);

#endif
