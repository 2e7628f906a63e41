/* Checkpoints through the trainer API: a tiny trainer (fuzz_tiny_trainer)
 * loads the input as a checkpoint file. The last 8 bytes of every input
 * are replaced by the FNV-1a hash of the bytes before them, as the writer
 * computes it, so mutations reach the parser instead of stopping at the
 * checksum. After a load that succeeds the trainer must still train, and
 * the checkpoint it then saves must load again. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

static tsr_trainer *trainer;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    if (fuzz_tiny_trainer(&trainer) != TSR_OK)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 16 || size > FUZZ_MAX_BYTES)
        return 0;
    uint8_t *copy = malloc(size);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i + 8 < size; i++)
        h = (h ^ copy[i]) * 1099511628211ull;
    memcpy(copy + size - 8, &h, 8);
    const char *path = fuzz_write_file(copy, size, ".ckpt");
    free(copy);
    if (!path)
        return 0;
    size_t before = fuzz_allocated();
    tsr_status st = tsr_trainer_load_checkpoint(trainer, path);
    fuzz_check_load(before, size, "tsr_trainer_load_checkpoint");
    if (st != TSR_OK)
        return 0;
    (void)fuzz_tiny_step(trainer);
    const char *saved = fuzz_scratch_path(".saved.ckpt");
    if (!saved || tsr_trainer_save_checkpoint(trainer, saved) != TSR_OK ||
        tsr_trainer_load_checkpoint(trainer, saved) != TSR_OK)
        abort();
    /* A fresh trainer, so that one input's state does not reach the next. */
    tsr_trainer_destroy(trainer);
    if (fuzz_tiny_trainer(&trainer) != TSR_OK)
        abort();
    return 0;
}
