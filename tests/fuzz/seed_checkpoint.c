/* Writes the checkpoint target's seeds: the tiny trainer's checkpoint
 * before any step and after two, saved by the library itself.
 * Usage: seed_checkpoint OUT_DIR */
#include "fuzz.h"

#include <stdio.h>

static int save(tsr_trainer *t, const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return tsr_trainer_save_checkpoint(t, path) != TSR_OK;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seed_checkpoint OUT_DIR\n");
        return 2;
    }
    fuzz_init();
    tsr_trainer *t = NULL;
    int rc = 1;
    if (fuzz_tiny_trainer(&t) != TSR_OK || save(t, argv[1], "fresh.ckpt") ||
        fuzz_tiny_step(t) != TSR_OK || fuzz_tiny_step(t) != TSR_OK ||
        tsr_trainer_epoch_end(t, 0.5) != TSR_OK || save(t, argv[1], "trained.ckpt"))
        goto cleanup;
    rc = 0;
cleanup:
    if (rc)
        fprintf(stderr, "seed_checkpoint: %s\n", tsr_last_error());
    tsr_trainer_destroy(t);
    return rc;
}
