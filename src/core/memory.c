#include "core/core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void *tsr_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        tsr_error(TSR_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes", size);
    return p;
}

void *tsr_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        tsr_error(TSR_ERR_OUT_OF_MEMORY, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *tsr_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        tsr_error(TSR_ERR_OUT_OF_MEMORY, "out of memory growing a buffer to %zu bytes", size);
    return p;
}

char *tsr_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = tsr_malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void *tsr_aligned_alloc(size_t size)
{
    if (size > SIZE_MAX - 2 * TSR_ALIGNMENT) {
        tsr_error(TSR_ERR_OUT_OF_MEMORY, "out of memory: %zu bytes asked for", size);
        return NULL;
    }
    size_t rounded = (size + TSR_ALIGNMENT - 1) / TSR_ALIGNMENT * TSR_ALIGNMENT;
    void *p = aligned_alloc(TSR_ALIGNMENT, rounded ? rounded : TSR_ALIGNMENT);
    if (!p)
        tsr_error(TSR_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes", size);
    return p;
}

void tsr_aligned_free(void *ptr) { free(ptr); }

/* The count sits in front of the data, one alignment unit ahead, so the
 * data stays aligned. */
void *tsr_shared_alloc(size_t size)
{
    char *base =
        tsr_aligned_alloc(size > SIZE_MAX - TSR_ALIGNMENT ? SIZE_MAX : size + TSR_ALIGNMENT);
    if (!base)
        return NULL;
    __atomic_store_n((long *)base, 1L, __ATOMIC_RELAXED);
    return base + TSR_ALIGNMENT;
}

void tsr_shared_retain(void *ptr)
{
    __atomic_add_fetch((long *)((char *)ptr - TSR_ALIGNMENT), 1L, __ATOMIC_RELAXED);
}

void tsr_shared_release(void *ptr)
{
    if (!ptr)
        return;
    char *base = (char *)ptr - TSR_ALIGNMENT;
    if (__atomic_sub_fetch((long *)base, 1L, __ATOMIC_ACQ_REL) == 0)
        free(base);
}

tsr_status tsr_grow(void **array, int *cap, int need, size_t elem_size)
{
    if (need <= *cap)
        return TSR_OK;
    if (need > INT32_MAX / 2)
        return tsr_error(TSR_ERR_OUT_OF_MEMORY, "out of memory: a list of %d entries", need);
    int new_cap = *cap ? *cap : 8;
    while (new_cap < need)
        new_cap *= 2;
    void *p = tsr_realloc(*array, (size_t)new_cap * elem_size);
    if (!p)
        return TSR_ERR_OUT_OF_MEMORY;
    *array = p;
    *cap = new_cap;
    return TSR_OK;
}
