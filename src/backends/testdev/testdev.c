/* The test device: a device with memory of its own, made from the host's
 * kernels so that it runs on any machine. Its memory is one pool mapped
 * PROT_NONE except while one of its own hooks runs (a copy, a kernel, a
 * reorder), so any access from the host side that bypasses the hooks, a
 * host kernel handed device memory or a missing transfer, faults at once.
 * Its kernels are dnnl's and the cpu backend's, run with the pool opened;
 * they refuse host pointers, so a value that reaches them without a
 * transfer is an error rather than a silent host read. The hooks hold one
 * lock while the pool is open: plans on several threads take turns. */
/* MAP_ANONYMOUS, MAP_NORESERVE and madvise are not POSIX. */
#define _DEFAULT_SOURCE
#include "backends/testdev/testdev.h"

#include "backends/cpu/cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Address space only: pages are committed when first written. */
#define POOL_BYTES ((size_t)64 << 30)
#define CONTEXT_MAGIC 0x74657374646576ULL /* "testdev" */

typedef struct {
    size_t offset, bytes;
} block;

static struct {
    pthread_once_t once;
    pthread_mutex_t lock;
    char *base; /* NULL: the pool could not be mapped */
    size_t extent; /* bytes from base ever handed out (what opening unprotects) */
    block *free_blocks; /* sorted by offset, coalesced */
    int n_free, cap_free;
    block *used;
    int n_used, cap_used;
    tsr_backend dnnl, cpu;
    const tsr_backend *list[4];
} pool = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER};

/* The context a plan creates: checked by every hook, so that a hook
 * called with another space's context (or none) is caught. */
typedef struct {
    unsigned long long magic;
} testdev_ctx;

static bool in_pool(const void *p)
{
    return pool.base && (const char *)p >= pool.base && (const char *)p < pool.base + POOL_BYTES;
}

static size_t page_round(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

static tsr_status check_ctx(const void *ctx)
{
    if (!ctx || ((const testdev_ctx *)ctx)->magic != CONTEXT_MAGIC)
        return tsr_error(TSR_ERR_INTERNAL, "testdev: a hook was called without the device's context");
    return TSR_OK;
}

/* Takes the lock and makes the pool readable and writable. */
static tsr_status pool_open(void)
{
    pthread_mutex_lock(&pool.lock);
    if (pool.extent && mprotect(pool.base, page_round(pool.extent), PROT_READ | PROT_WRITE) != 0) {
        pthread_mutex_unlock(&pool.lock);
        return tsr_error(TSR_ERR_INTERNAL, "testdev: mprotect failed opening the pool");
    }
    return TSR_OK;
}

static void pool_close(void)
{
    if (pool.extent)
        mprotect(pool.base, page_round(pool.extent), PROT_NONE);
    pthread_mutex_unlock(&pool.lock);
}

static void pool_init(void)
{
    void *p = mmap(NULL, POOL_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    pool.base = p == MAP_FAILED ? NULL : p;
    if (pool.base && tsr_grow((void **)&pool.free_blocks, &pool.cap_free, 1,
                              sizeof *pool.free_blocks) == TSR_OK)
        pool.free_blocks[pool.n_free++] = (block){0, POOL_BYTES};
}

static tsr_status testdev_context_create(void **ctx_out)
{
    pthread_once(&pool.once, pool_init);
    if (!pool.base || !pool.n_free)
        return tsr_error(TSR_ERR_OUT_OF_MEMORY, "testdev: no address space for the device's pool");
    testdev_ctx *c = tsr_malloc(sizeof *c);
    if (!c)
        return TSR_ERR_OUT_OF_MEMORY;
    c->magic = CONTEXT_MAGIC;
    *ctx_out = c;
    return TSR_OK;
}

static void testdev_context_destroy(void *ctx) { free(ctx); }

/* First fit; the bookkeeping lives on the host, never in the pool. */
static void *testdev_alloc(void *ctx, size_t bytes)
{
    if (check_ctx(ctx) != TSR_OK || pool_open() != TSR_OK)
        return NULL;
    size_t want = (bytes + TSR_ALIGNMENT - 1) / TSR_ALIGNMENT * TSR_ALIGNMENT;
    want = want ? want : TSR_ALIGNMENT;
    void *out = NULL;
    for (int f = 0; f < pool.n_free && bytes <= POOL_BYTES; f++) {
        block *b = &pool.free_blocks[f];
        if (b->bytes < want)
            continue;
        if (tsr_grow((void **)&pool.used, &pool.cap_used, pool.n_used + 1, sizeof *pool.used) !=
            TSR_OK)
            break;
        pool.used[pool.n_used++] = (block){b->offset, want};
        out = pool.base + b->offset;
        b->offset += want;
        b->bytes -= want;
        if (b->offset > pool.extent)
            pool.extent = b->offset;
        if (!b->bytes) {
            memmove(b, b + 1, sizeof *b * (size_t)(pool.n_free - f - 1));
            pool.n_free--;
        }
        break;
    }
    pool_close(); /* protects the new pages too: the extent covers them */
    if (!out)
        tsr_error(TSR_ERR_OUT_OF_MEMORY, "testdev: out of device memory allocating %zu bytes", bytes);
    return out;
}

static void testdev_free(void *ctx, void *ptr)
{
    if (!ptr || check_ctx(ctx) != TSR_OK || pool_open() != TSR_OK)
        return;
    size_t offset = (size_t)((char *)ptr - pool.base);
    for (int u = 0; u < pool.n_used; u++) {
        if (pool.used[u].offset != offset)
            continue;
        block b = pool.used[u];
        pool.used[u] = pool.used[--pool.n_used];
        /* Return the pages to the system, then the block to the free list. */
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t lo = page_round(b.offset), hi = (b.offset + b.bytes) / page * page;
        if (hi > lo)
            madvise(pool.base + lo, hi - lo, MADV_DONTNEED);
        int f = 0;
        while (f < pool.n_free && pool.free_blocks[f].offset < b.offset)
            f++;
        if (tsr_grow((void **)&pool.free_blocks, &pool.cap_free, pool.n_free + 1,
                     sizeof *pool.free_blocks) != TSR_OK)
            break; /* the block is lost to the pool, which stays consistent */
        memmove(&pool.free_blocks[f + 1], &pool.free_blocks[f],
                sizeof(block) * (size_t)(pool.n_free - f));
        pool.free_blocks[f] = b;
        pool.n_free++;
        if (f + 1 < pool.n_free && b.offset + b.bytes == pool.free_blocks[f + 1].offset) {
            pool.free_blocks[f].bytes += pool.free_blocks[f + 1].bytes;
            memmove(&pool.free_blocks[f + 1], &pool.free_blocks[f + 2],
                    sizeof(block) * (size_t)(pool.n_free - f - 2));
            pool.n_free--;
        }
        if (f > 0 && pool.free_blocks[f - 1].offset + pool.free_blocks[f - 1].bytes ==
                         pool.free_blocks[f].offset) {
            pool.free_blocks[f - 1].bytes += pool.free_blocks[f].bytes;
            memmove(&pool.free_blocks[f], &pool.free_blocks[f + 1],
                    sizeof(block) * (size_t)(pool.n_free - f - 1));
            pool.n_free--;
        }
        break;
    }
    pool_close();
}

/* Device pointers where device memory belongs, host pointers elsewhere. */
static tsr_status check_sides(const char *hook, const void *device, const void *other,
                              bool other_on_device, size_t bytes)
{
    if (!bytes)
        return TSR_OK;
    if (!in_pool(device) || !in_pool((const char *)device + bytes - 1))
        return tsr_error(TSR_ERR_INTERNAL, "testdev: %s given %p, which is not device memory",
                         hook, device);
    if (in_pool(other) != other_on_device)
        return tsr_error(TSR_ERR_INTERNAL, "testdev: %s given %p, which is %s memory", hook, other,
                         other_on_device ? "host" : "device");
    return TSR_OK;
}

static tsr_status pool_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    TSR_CHECK(check_ctx(ctx));
    if (!bytes || dst == src)
        return TSR_OK;
    TSR_CHECK(pool_open());
    memcpy(dst, src, bytes);
    pool_close();
    return TSR_OK;
}

static tsr_status testdev_copy_to_host(void *ctx, void *host_dst, const void *src, size_t bytes)
{
    TSR_CHECK(check_sides("copy_to_host", src, host_dst, false, bytes));
    return pool_copy(ctx, host_dst, src, bytes);
}

static tsr_status testdev_copy_from_host(void *ctx, void *dst, const void *host_src, size_t bytes)
{
    TSR_CHECK(check_sides("copy_from_host", dst, host_src, false, bytes));
    return pool_copy(ctx, dst, host_src, bytes);
}

static tsr_status testdev_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    TSR_CHECK(check_sides("copy", dst, src, true, bytes));
    return pool_copy(ctx, dst, src, bytes);
}

static tsr_status testdev_synchronize(void *ctx) { return check_ctx(ctx); }

/* Within one allocation, so that a caller's buffer too small for its
 * tensor is refused rather than run over its neighbour. */
static bool testdev_holds(void *ctx, const void *ptr, size_t bytes)
{
    if (check_ctx(ctx) != TSR_OK || !in_pool(ptr))
        return false;
    size_t offset = (size_t)((const char *)ptr - pool.base);
    bool held = false;
    pthread_mutex_lock(&pool.lock);
    for (int u = 0; u < pool.n_used && !held; u++)
        held = offset >= pool.used[u].offset &&
               offset < pool.used[u].offset + pool.used[u].bytes &&
               bytes <= pool.used[u].offset + pool.used[u].bytes - offset;
    pthread_mutex_unlock(&pool.lock);
    return held;
}

static const tsr_memory_space testdev_memory = {
    .name = "testdev",
    .context_create = testdev_context_create,
    .context_destroy = testdev_context_destroy,
    .alloc = testdev_alloc,
    .free = testdev_free,
    .copy_to_host = testdev_copy_to_host,
    .copy_from_host = testdev_copy_from_host,
    .copy = testdev_copy,
    .synchronize = testdev_synchronize,
    .holds = testdev_holds,
};

static tsr_status check_tensor(const char *what, int index, const tsr_tensor *t)
{
    size_t bytes = t ? tsr_tensor_bytes(t) : 0;
    if (bytes && !in_pool(t->data))
        return tsr_error(TSR_ERR_INTERNAL,
                         "testdev: %s %d is host memory (%p): a transfer to the device is missing",
                         what, index, t->data);
    return TSR_OK;
}

/* A host backend's kernel on device memory, with the pool opened. */
static tsr_status wrapped_run(const tsr_backend *inner, void *state, const tsr_kernel_ctx *k)
{
    for (int i = 0; i < k->n_inputs; i++)
        TSR_CHECK(check_tensor("input", i, k->inputs[i]));
    for (int o = 0; o < k->n_outputs; o++)
        TSR_CHECK(check_tensor("output", o, k->outputs[o]));
    TSR_CHECK(check_ctx(k->device));
    TSR_CHECK(pool_open());
    tsr_kernel_ctx host = *k;
    host.device = NULL;
    tsr_status st = inner->run(state, &host);
    pool_close();
    return st;
}

static tsr_status wrapped_reorder(const tsr_backend *inner, const tsr_tensor *src, tsr_layout from,
                                  tsr_tensor *dst, tsr_layout to, int threads)
{
    TSR_CHECK(check_tensor("reorder source", 0, src));
    TSR_CHECK(check_tensor("reorder destination", 0, dst));
    TSR_CHECK(pool_open()); /* reorders get no context: the lock is all they need */
    tsr_status st = inner->reorder(src, from, dst, to, threads);
    pool_close();
    return st;
}

static tsr_status dnnl_run(void *state, const tsr_kernel_ctx *k)
{
    return wrapped_run(&tsr_backend_dnnl, state, k);
}

static tsr_status cpu_run(void *state, const tsr_kernel_ctx *k)
{
    return wrapped_run(&tsr_backend_cpu, state, k);
}

static tsr_status dnnl_reorder(const tsr_tensor *src, tsr_layout from, tsr_tensor *dst,
                               tsr_layout to, int threads)
{
    return wrapped_reorder(&tsr_backend_dnnl, src, from, dst, to, threads);
}

static tsr_status cpu_reorder(const tsr_tensor *src, tsr_layout from, tsr_tensor *dst,
                              tsr_layout to, int threads)
{
    return wrapped_reorder(&tsr_backend_cpu, src, from, dst, to, threads);
}

/* A host backend's table with its run and reorder hooks wrapped, in the
 * device's memory; without depth-first stacks (they run on the host's
 * per-thread bands). */
static tsr_backend wrap(const tsr_backend *inner, const char *name,
                        tsr_status (*run)(void *, const tsr_kernel_ctx *),
                        tsr_status (*reorder)(const tsr_tensor *, tsr_layout, tsr_tensor *,
                                              tsr_layout, int))
{
    tsr_backend b = *inner;
    b.name = name;
    b.run = run;
    b.reorder = inner->reorder ? reorder : NULL;
    b.band_info = NULL;
    b.run_band = NULL;
    b.memory = &testdev_memory;
    return b;
}

static void backends_init(void)
{
    pool.dnnl = wrap(&tsr_backend_dnnl, "testdev-dnnl", dnnl_run, dnnl_reorder);
    pool.cpu = wrap(&tsr_backend_cpu, "testdev-cpu", cpu_run, cpu_reorder);
    pool.list[0] = &pool.dnnl;
    pool.list[1] = &pool.cpu;
    pool.list[2] = &tsr_backend_ref;
    pool.list[3] = NULL;
}

const tsr_backend *const *tsr_testdev_backends(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, backends_init);
    return pool.list;
}
