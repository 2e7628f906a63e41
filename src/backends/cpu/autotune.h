/* Plan-time autotuning: a kernel with several candidates (oneDNN's
 * implementations of its direct and Winograd convolutions) times them on
 * the node's real shapes, keeps
 * the fastest one whose output stays within the accuracy guard, and
 * remembers the choice in an on-disk cache so that the next plan with the
 * same shape skips the timing. See docs/autotune.md for the cache file. */
#ifndef TSR_BACKENDS_CPU_AUTOTUNE_H
#define TSR_BACKENDS_CPU_AUTOTUNE_H

#include "backends/backend.h"

#include <stdbool.h>
#include <stddef.h>

/* A candidate whose output differs from the default algorithm's by more
 * than this, relative to the largest |y| of the default's output, is not
 * taken: the tolerance the model tests hold Tessera to against PyTorch. */
#define TSR_AUTOTUNE_TOLERANCE 1e-4

/* Another algorithm replaces the default only when it is at least this
 * much faster, so that timing noise on a loaded machine does not flip
 * choices back and forth. */
#define TSR_AUTOTUNE_MARGIN 0.95

/* One decision among a kernel's candidates (algorithms, or a library's
 * implementations of them): the name of the one taken (at most 39
 * characters, no spaces), the best times of the default and of an
 * alternative (the one taken, else the fastest other), and that
 * alternative's error relative to the default, so that a report can say
 * why. */
typedef struct tsr_autotune_choice {
    char algorithm[40];
    double default_seconds, alternative_seconds, alternative_error;
} tsr_autotune_choice;

/* The cache file: $XDG_CACHE_HOME/tessera/autotune.txt, or
 * $HOME/.cache/tessera/autotune.txt; false when neither variable gives
 * an absolute directory. */
bool tsr_autotune_cache_path(char *path, size_t size);

/* Looks up `key` (no tabs or newlines) in the cache file. A missing,
 * unreadable or corrupt file, or a malformed line, is a miss. */
bool tsr_autotune_cache_get(const char *key, tsr_autotune_choice *choice_out);

/* Adds the decision to the cache file (creating the file and its
 * directories), and to the in-memory copy. Nothing is written to a file
 * that does not start with the cache's header line (someone else's file),
 * and a failure to write is silent: the choice is then only remembered in
 * this process. */
void tsr_autotune_cache_put(const char *key, const tsr_autotune_choice *choice);

/* Calls run(arg) once and sets *seconds to its wall time. */
tsr_status tsr_autotune_run_timed(tsr_status (*run)(void *arg), void *arg, double *seconds);

/* At most this many candidates per decision. */
#define TSR_AUTOTUNE_MAX_CANDIDATES 4

/* Lowers seconds[i] (a time already measured, or INFINITY) to the best
 * wall time of `run(args[i])` for each of n candidates. Calls alternate
 * between the candidates, one each per round, so that a change in the
 * machine's load hits them all alike: at least 3 times each (a time given
 * in seconds[i] counts as one), more while the calls add up to under
 * 50 ms (at most 20 rounds). A candidate whose best of two or
 * more calls is over twice the best is not called again, and the timing
 * stops when one is left: a clear loser (Winograd reordering a large
 * filter fed at every run) costs two calls. Fails with the first
 * failing call's status. */
tsr_status tsr_autotune_time(int n, tsr_status (*run)(void *arg), void *const *args,
                             double *seconds);

/* Whether the alternative replaces the default: within the accuracy
 * guard and faster by the margin. */
bool tsr_autotune_takes(double default_seconds, double alternative_seconds, double rel_error);

/* max |y - ref| / max |ref| over n values (0 when both are all zero;
 * infinite when y has a NaN or infinity that ref does not). */
double tsr_autotune_rel_error(const float *y, const float *ref, size_t n);

/* Fills `x` with reproducible uniform values in [-1, 1). */
void tsr_autotune_fill_random(float *x, size_t n, unsigned seed);

/* A node's operands for trial runs: constants as they are, reproducible
 * random values for the others in the layouts the kernel sees (the lanes
 * past C of a blocked layout left zero, as the plan keeps them), and a
 * buffer for output 0, the one compared. */
typedef struct {
    tsr_tensor tensors[TSR_MAX_NODE_IO + 1];
    void *owned[TSR_MAX_NODE_IO + 1];
    size_t y_bytes;
    tsr_kernel_ctx k;
} tsr_autotune_trial;

tsr_status tsr_autotune_trial_init(const tsr_prepare_ctx *ctx, tsr_autotune_trial *t);
void tsr_autotune_trial_release(tsr_autotune_trial *t);

/* The guard and the timing of n candidates on one trial: states[0] the
 * default's, NULL for one that could not be built. Each runs once
 * through run(states[i], &t->k), its output compared with the default's
 * (errors[i], tsr_autotune_rel_error), then all are timed
 * (tsr_autotune_time). seconds[i] and errors[i] are INFINITY for a NULL
 * state; *taken is the fastest candidate tsr_autotune_takes over the
 * default, else 0. Fails with the first failing run's status. */
tsr_status tsr_autotune_measure(int n, void *const *states,
                                tsr_status (*run)(void *state, const tsr_kernel_ctx *k),
                                tsr_autotune_trial *t, double *seconds, double *errors,
                                int *taken);

/* The cache record of a measured decision among n candidates named
 * names[i]: the one taken, with the default's time and that of the one
 * taken, else of the fastest other; numbers that are not finite (a
 * candidate not built) as FLT_MAX, which is all the cache holds. */
tsr_autotune_choice tsr_autotune_record(int n, const char *const *names, const double *seconds,
                                        const double *errors, int taken);

/* The verbose line of a decision on stderr: each candidate's time where
 * it was measured, the default's and the fastest other's where it came
 * from the cache. */
void tsr_autotune_report(const char *node, int n, const char *const *names,
                         const double *seconds, const tsr_autotune_choice *c, bool cached,
                         int taken);

#endif
