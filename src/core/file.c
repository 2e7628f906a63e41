/* Files written so that readers see the old contents or the new ones,
 * never a part: a temporary file beside the target, fsync, rename. */
#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static tsr_status write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return TSR_ERR_IO;
        }
        p += w;
        n -= (size_t)w;
    }
    return TSR_OK;
}

/* A new file in path's directory, named after it; -1 with errno set. */
static int create_temp_beside(const char *path, char *tmp, size_t size)
{
    static atomic_uint counter;
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    const char *base = slash ? slash + 1 : path;
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned k = atomic_fetch_add(&counter, 1);
        int n =
            snprintf(tmp, size, "%.*s.%.64s.tmp-%ld-%u", dir_len, path, base, (long)getpid(), k);
        if (n < 0 || (size_t)n >= size) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    return -1;
}

tsr_status tsr_write_file_atomic(const char *path, int n_parts, const void *const *parts,
                                 const size_t *sizes)
{
    char tmp[4096];
    int fd = create_temp_beside(path, tmp, sizeof tmp);
    if (fd < 0)
        return tsr_error(TSR_ERR_IO, "%s: cannot create a temporary file beside it: %s", path,
                         strerror(errno));
    const char *what = "write";
    tsr_status st = TSR_OK;
    for (int i = 0; i < n_parts && st == TSR_OK; i++)
        st = write_all(fd, parts[i], sizes[i]);
    if (st == TSR_OK && fsync(fd) != 0) {
        what = "fsync";
        st = TSR_ERR_IO;
    }
    int saved = errno;
    if (close(fd) != 0 && st == TSR_OK) {
        what = "close";
        saved = errno;
        st = TSR_ERR_IO;
    }
    if (st == TSR_OK && rename(tmp, path) != 0) {
        what = "rename";
        saved = errno;
        st = TSR_ERR_IO;
    }
    if (st != TSR_OK) {
        unlink(tmp);
        return tsr_error(TSR_ERR_IO, "%s: cannot write (%s failed: %s)", path, what,
                         strerror(saved));
    }
    return TSR_OK;
}
