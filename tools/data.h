/* Training data for `tessera train`: .npz archives (arrays x and y) and
 * IDX files (MNIST's format, plain or gzipped), read whole into memory and
 * checked before any training starts. */
#ifndef TSR_CLI_DATA_H
#define TSR_CLI_DATA_H

#include "tessera.h"

#include <stdbool.h>
#include <stdint.h>

/* Raw readers. Every function prints its own error and returns CLI_FAIL,
 * or CLI_OK. Tensors' data is malloc'ed. */

/* One IDX file, gzipped or not (zlib reads both). The element type is the
 * file's: ubyte -> uint8, sbyte -> int8, short and int -> int32, float ->
 * float32, double -> float64. */
int cli_idx_read(const char *path, tsr_tensor *out);

/* The arrays `names[k]` of an .npz archive (stored or deflated members, as
 * numpy.savez and numpy.savez_compressed write them); every name must be
 * there. The library's reader (src/core/npz.h) over cli_read_file, so a
 * gzipped archive reads too. */
int cli_npz_read(const char *path, int n, const char *const *names, tsr_tensor *out);

/* Reads the whole file at `path` into memory, inflating it when it is
 * gzipped (other files come as they are); detects truncated gzip
 * streams. */
int cli_read_file(const char *path, unsigned char **data_out, size_t *size_out);

/* A data set: x [N, ...] as the model's input wants it (float32 or
 * float64), y [N] int64 class labels (or float targets [N, ...] for
 * regression losses). `source` says where it came from, for messages. */
typedef struct cli_dataset {
    tsr_tensor x;
    tsr_tensor y;
    char source[1024];
} cli_dataset;

/* What the model wants from a data set. */
typedef struct cli_data_spec {
    tsr_dtype x_dtype;            /* the model input's dtype */
    int x_rank;                   /* the model input's rank, batch dim included */
    int64_t x_dims[TSR_MAX_RANK]; /* -1 where not fixed (dim 0, the batch) */
    bool y_is_class;              /* integer labels in [0, n_classes) */
    int64_t n_classes;            /* 0 when the model does not say */
    tsr_dtype y_dtype;            /* float targets' dtype when !y_is_class */
} cli_data_spec;

/* Reads a data set. `spec` is
 *   FILE.npz                   arrays x and y
 *   DIR/NAME-images-idx3-ubyte[.gz]   images; labels from NAME-labels-idx1-ubyte[.gz]
 *   DIR/NAME                   the same pair by its prefix ("…/train", "…/t10k")
 *   DIR                        DIR/<default_prefix>-images-… and -labels-…
 * Image bytes (uint8) are scaled to [0, 1]; x is reshaped to the model's
 * input shape when each sample has the same number of elements (e.g.
 * [N, 28, 28] -> [N, 1, 28, 28]). Checks: the counts of x and y agree,
 * x is finite, labels are integers in [0, n_classes). `what` names the
 * option in messages ("--data", "--val"). */
int cli_dataset_load(const char *spec, const char *default_prefix, const char *what,
                     const cli_data_spec *want, cli_dataset *out);
void cli_dataset_free(cli_dataset *d);

#endif
