/* A minimal test harness: CHECK records a failure and goes on, the main of
 * each test file returns tsr_test_summary(). */
#ifndef TSR_TEST_HARNESS_H
#define TSR_TEST_HARNESS_H

#include <stdio.h>
#include <string.h>

extern int tsr_test_failures;
extern int tsr_test_checks;

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        tsr_test_checks++;                                                                       \
        if (!(cond)) {                                                                           \
            tsr_test_failures++;                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);             \
        }                                                                                        \
    } while (0)

#define CHECK_OK(expr)                                                                           \
    do {                                                                                         \
        tsr_status check_status_ = (expr);                                                       \
        tsr_test_checks++;                                                                       \
        if (check_status_ != TSR_OK) {                                                           \
            tsr_test_failures++;                                                                 \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,                 \
                    tsr_last_error());                                                           \
        }                                                                                        \
    } while (0)

/* A call that must fail with `status` and a message holding `text`. */
#define CHECK_FAILS(expr, status, text)                                                          \
    do {                                                                                         \
        tsr_status check_fails_ = (expr);                                                        \
        CHECK(check_fails_ == (status));                                                         \
        if (!strstr(tsr_last_error(), (text))) {                                                 \
            fprintf(stderr, "%s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__,              \
                    tsr_last_error(), (text));                                                   \
            CHECK(!"error message");                                                             \
        }                                                                                        \
    } while (0)

/* Prints the tally and returns the process exit code. */
int tsr_test_summary(const char *name);

#endif
