#include "harness.h"

int tsr_test_failures;
int tsr_test_checks;

int tsr_test_summary(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, tsr_test_checks, tsr_test_failures);
    return tsr_test_failures ? 1 : 0;
}
