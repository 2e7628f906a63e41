/* Shared pieces of the libFuzzer targets in tests/fuzz. Each target is one
 * file, fuzz_<target>.c, that defines LLVMFuzzerTestOneInput (and, when it
 * needs set-up, LLVMFuzzerInitialize calling fuzz_init); CMake builds one
 * binary per such file and tests/fuzz/run.sh runs each with its seeds
 * (<build>/fuzz/seeds/<target>) and regressions (tests/fuzz/regressions/
 * <target>). Adding a target is one more file, plus its seeds in
 * make_seeds.py. See docs/fuzzing.md. */
#ifndef TSR_FUZZ_H
#define TSR_FUZZ_H

#include <tessera.h>

#include <stddef.h>
#include <stdint.h>

/* The most bytes a target lets one input's plan or data use; inputs that
 * ask for more are skipped (after the size checks under test ran), so each
 * run stays fast and within the fuzzer's memory limit. */
#define FUZZ_MAX_BYTES ((size_t)4 << 20)

/* What parsing `size` bytes may allocate in all (the bytes summed over
 * every allocation, not the peak): a reader or importer allocates what the
 * input holds, not what it declares, so more than this from a small input
 * is a finding. 2048x covers deflate's expansion (under 1100x) and
 * the copies a reader makes; 64 MB covers load-time folding (16 MB by
 * default) and fixed costs. */
#define FUZZ_LOAD_BYTES(size) (((size_t)64 << 20) + (size_t)2048 * (size))

/* Common set-up: one thread, no per-node report, the allocation counter.
 * Call first in LLVMFuzzerInitialize. */
void fuzz_init(void);

/* Bytes allocated by this process so far (every malloc counted, frees not
 * subtracted). */
size_t fuzz_allocated(void);
/* Aborts with a message (on stdout: run.sh closes the library's stderr)
 * naming `what` when more than FUZZ_LOAD_BYTES(size)
 * were allocated since `before` (a value of fuzz_allocated). */
void fuzz_check_load(size_t before, size_t size, const char *what);

/* This process's scratch file whose name ends with `suffix` (the same
 * path for the same suffix; at most 4 of them); removed at exit. */
const char *fuzz_scratch_path(const char *suffix);
/* Writes the input to this process's scratch file whose name ends with
 * `suffix` (readers that take a path, and those that look at the name),
 * and returns that path; NULL when it cannot be written. The file is
 * removed when the process exits. */
const char *fuzz_write_file(const uint8_t *data, size_t size, const char *suffix);

/* a * b into *out, false on overflow past FUZZ_MAX_BYTES. */
int fuzz_mul_bounded(size_t a, size_t b, size_t *out);

/* The checkpoint target's trainer, also the one the seed generator saves:
 * y = x W + b (x [batch, 4], 3 classes), softmax cross-entropy, Adam with
 * AMSGrad and an EMA (every kind of per-parameter state a checkpoint
 * holds), on ref with one thread. */
tsr_status fuzz_tiny_trainer(tsr_trainer **trainer_out);
/* One training step on a fixed batch of 2. */
tsr_status fuzz_tiny_step(tsr_trainer *trainer);

#endif
