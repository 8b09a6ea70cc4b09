// C functions that Swift's Glibc module does not expose (they are behind _GNU_SOURCE, or glibc
// has no wrapper for them).
#ifndef CSYNCKIT_SHIMS_H
#define CSYNCKIT_SHIMS_H

#include <stdint.h>

/// syncfs(2): writes back and commits everything dirty on the file system that holds `fd`
/// (data, metadata and the journal), in one call. SyncKit's group commit uses it to make a batch
/// of freshly written files durable at once instead of paying one fsync per file.
int synckit_syncfs(int fd);

/// The birth time of the entry `name` in the directory `dirfd` (not following a final symlink)
/// in nanoseconds, from statx(2); 0 when the file system does not record one. A patch journal
/// records it so that a restart never replays a patch onto a different file that happens to
/// reuse the inode.
int64_t synckit_birth_time_ns_at(int dirfd, const char *name);

/// sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE): starts writing the file's dirty pages to
/// disk without waiting. A large pull calls it as it goes, so that the fsync at the end finds
/// most of the data already written instead of starting the whole write then.
int synckit_start_writeback(int fd);

/// openat2(2) of `path` relative to `dirfd` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS: the kernel refuses any resolution that would leave `dirfd` (`..`,
/// an absolute path) or go through a symlink, in any component, atomically with the open.
/// Returns the descriptor, or -1 with errno (ENOSYS on kernels before 5.6, EXDEV when the
/// path would leave `dirfd`, ELOOP when it meets a symlink).
int synckit_openat2_beneath(int dirfd, const char *path, int flags, unsigned int mode);

/// renameat2(2) with RENAME_NOREPLACE: fails with EEXIST instead of replacing `newname`.
int synckit_renameat_noreplace(int olddirfd, const char *oldname, int newdirfd, const char *newname);

/// O_PATH (a descriptor that names a file without opening it for reading or writing).
int synckit_o_path(void);

#endif
