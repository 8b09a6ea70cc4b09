// See CSyncKitShims.h: thin wrappers around glibc calls hidden behind _GNU_SOURCE, and
// openat2(2), which glibc 2.36 does not wrap.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "CSyncKitShims.h"

int synckit_syncfs(int fd) { return syncfs(fd); }

int64_t synckit_birth_time_ns_at(int dirfd, const char *name) {
    struct statx st;
    if (statx(dirfd, name, AT_SYMLINK_NOFOLLOW, STATX_BTIME, &st) != 0) return 0;
    if (!(st.stx_mask & STATX_BTIME)) return 0;
    return (int64_t)st.stx_btime.tv_sec * 1000000000 + st.stx_btime.tv_nsec;
}

int synckit_start_writeback(int fd) { return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); }

int synckit_openat2_beneath(int dirfd, const char *path, int flags, unsigned int mode) {
#ifdef SYS_openat2
    struct open_how how = {0};
    how.flags = (uint64_t)(unsigned int)flags;
    // The mode is only meaningful (and only allowed) when a file may be created.
    how.mode = (flags & (O_CREAT | __O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    long fd;
    do {
        fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    } while (fd < 0 && errno == EINTR);
    return (int)fd;
#else
    errno = ENOSYS;
    return -1;
#endif
}

int synckit_renameat_noreplace(int olddirfd, const char *oldname, int newdirfd, const char *newname) {
    return renameat2(olddirfd, oldname, newdirfd, newname, RENAME_NOREPLACE);
}

int synckit_o_path(void) { return O_PATH; }
