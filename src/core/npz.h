/* .npz archives (numpy.savez and savez_compressed), and the .npy header
 * encoding the archive writer shares with tsr_npy_write. */
#ifndef TSR_NPZ_H
#define TSR_NPZ_H

#include "core/core.h"

/* Bytes of the longest .npy prefix and header tsr_npy_encode_header makes. */
#define TSR_NPY_HEADER_MAX 640

/* The magic, version and padded header of a .npy file holding `t` (its
 * data follows them) into header_out [TSR_NPY_HEADER_MAX]; `what` names
 * the file in messages. */
tsr_status tsr_npy_encode_header(const tsr_tensor *t, const char *what, void *header_out,
                                 size_t *size_out);

/* The arrays `names[k]` of an .npz archive (stored or deflated members) into
 * out[k], whose data the caller frees with free(). An array missing from
 * the archive is TSR_ERR_NOT_FOUND unless optional[k] (optional may be
 * NULL), and then out[k] stays zeroed (dtype undefined, data NULL). On
 * failure every out[k] is zeroed and nothing stays allocated. */
tsr_status tsr_npz_read(const char *path, int n, const char *const *names, const bool *optional,
                        tsr_tensor *out);
/* The same over the bytes of an archive in memory; `path` names it. */
tsr_status tsr_npz_read_buffer(const void *bytes, size_t size, const char *path, int n,
                               const char *const *names, const bool *optional, tsr_tensor *out);
/* Writes the tensors as `names[k]`.npy members, stored, atomically
 * (a temporary file, then a rename). Archives past 4 GiB are refused. */
tsr_status tsr_npz_write(const char *path, int n, const char *const *names,
                         const tsr_tensor *tensors);

#endif
