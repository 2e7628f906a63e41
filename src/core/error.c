#include "core/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define TSR_ERROR_SIZE 2048

static _Thread_local char last_error[TSR_ERROR_SIZE];

const char *tsr_last_error(void) { return last_error; }

tsr_status tsr_error(tsr_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

void tsr_error_prefix(const char *fmt, ...)
{
    char prefix[512];
    char old[TSR_ERROR_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    size_t n = strlen(prefix);
    if (n >= sizeof last_error)
        n = sizeof last_error - 1;
    memcpy(last_error, prefix, n);
    size_t rest = strlen(old);
    if (rest > sizeof last_error - 1 - n)
        rest = sizeof last_error - 1 - n;
    memcpy(last_error + n, old, rest);
    last_error[n + rest] = '\0';
}

const char *tsr_status_name(tsr_status status)
{
    switch (status) {
    case TSR_OK: return "ok";
    case TSR_ERR_INVALID_ARGUMENT: return "invalid argument";
    case TSR_ERR_PARSE: return "parse error";
    case TSR_ERR_UNSUPPORTED: return "unsupported";
    case TSR_ERR_SHAPE: return "shape error";
    case TSR_ERR_DTYPE: return "dtype error";
    case TSR_ERR_NOT_FOUND: return "not found";
    case TSR_ERR_IO: return "I/O error";
    case TSR_ERR_OUT_OF_MEMORY: return "out of memory";
    case TSR_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}
