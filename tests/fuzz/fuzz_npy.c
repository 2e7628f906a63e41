/* tsr_npy_read_buffer on arbitrary bytes: a .npy file in memory, as .npz
 * members and callers' buffers reach it. A tensor that comes back must own
 * exactly the bytes its dtype and shape say (every one is read), and the
 * reader may allocate only what the input can hold (fuzz_check_load). */
#include "fuzz.h"

#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsr_tensor t;
    size_t before = fuzz_allocated();
    tsr_status st = tsr_npy_read_buffer(data, size, "fuzz.npy", &t);
    fuzz_check_load(before, size, "tsr_npy_read_buffer");
    if (st != TSR_OK)
        return 0;
    if (t.rank < 0 || t.rank > TSR_MAX_RANK || tsr_tensor_numel(&t) < 0 || !t.data)
        abort();
    const volatile uint8_t *p = t.data;
    uint8_t sum = 0;
    for (size_t i = 0, n = tsr_tensor_bytes(&t); i < n; i++)
        sum ^= p[i];
    (void)sum;
    free(t.data);
    return 0;
}
