/* .npz archives (stored or deflated zip members, zip64 records) as
 * `tessera train --data FILE.npz` loads them: twice, once for a classifier
 * (float32 x reshaped to [N, 1, 2, 2], integer labels below 3) and once for
 * a regression model (float64 x [N, 4], float64 targets). */
#include "fuzz.h"

#include "../../tools/data.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_file(data, size, ".npz");
    if (!path)
        return 0;
    const cli_data_spec specs[2] = {
        {.x_dtype = TSR_FLOAT32,
         .x_rank = 4,
         .x_dims = {-1, 1, 2, 2},
         .y_is_class = true,
         .n_classes = 3},
        {.x_dtype = TSR_FLOAT64, .x_rank = 2, .x_dims = {-1, 4}, .y_dtype = TSR_FLOAT64},
    };
    for (int k = 0; k < 2; k++) {
        cli_dataset ds;
        size_t before = fuzz_allocated();
        int rc = cli_dataset_load(path, "train", "--data", &specs[k], &ds);
        fuzz_check_load(before, size, "cli_dataset_load (.npz)");
        if (rc == 0)
            cli_dataset_free(&ds);
    }
    return 0;
}
