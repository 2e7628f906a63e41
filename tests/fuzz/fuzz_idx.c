/* IDX files (MNIST's format, plain or gzipped) through the CLI's reader,
 * then as the images of a `tessera train` data set: a labels file with one
 * label per image is written beside the input and the pair is loaded the
 * way --data loads it (scaling, reshaping to the model's [N, 1, 3, 3]
 * input, label checks). */
#include "fuzz.h"

#include "../../tools/data.h"

#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *images = fuzz_write_file(data, size, "-images-idx3-ubyte");
    if (!images)
        return 0;
    tsr_tensor t;
    size_t before = fuzz_allocated();
    int rc = cli_idx_read(images, &t);
    fuzz_check_load(before, size, "cli_idx_read");
    if (rc != 0)
        return 0;
    int64_t n = tsr_tensor_numel(&t);
    if (t.rank < 1 || n < 0 || !t.data)
        abort();
    const volatile uint8_t *p = t.data;
    uint8_t sum = 0;
    for (size_t i = 0, bytes = tsr_tensor_bytes(&t); i < bytes; i++)
        sum ^= p[i];
    (void)sum;
    int64_t n_images = t.dims[0];
    free(t.data);
    if (n_images < 1 || n_images > 4096)
        return 0;
    uint8_t labels[8 + 4096] = {0,
                                0,
                                0x08,
                                1,
                                (uint8_t)(n_images >> 24),
                                (uint8_t)(n_images >> 16),
                                (uint8_t)(n_images >> 8),
                                (uint8_t)n_images};
    for (int64_t i = 0; i < n_images; i++)
        labels[8 + i] = (uint8_t)(data[(size_t)i % size] % 12);
    if (!fuzz_write_file(labels, 8 + (size_t)n_images, "-labels-idx1-ubyte"))
        return 0;
    cli_data_spec want = {.x_dtype = TSR_FLOAT32,
                          .x_rank = 4,
                          .x_dims = {-1, 1, 3, 3},
                          .y_is_class = true,
                          .n_classes = 10};
    cli_dataset ds;
    before = fuzz_allocated();
    rc = cli_dataset_load(images, "train", "--data", &want, &ds);
    fuzz_check_load(before, size + 8 + (size_t)n_images, "cli_dataset_load (IDX)");
    if (rc == 0)
        cli_dataset_free(&ds);
    return 0;
}
