// C functions that Swift's Glibc module does not expose (they are behind _GNU_SOURCE).
#ifndef CSYNCKIT_SHIMS_H
#define CSYNCKIT_SHIMS_H

#include <stdint.h>

/// syncfs(2): writes back and commits everything dirty on the file system that holds `fd`
/// (data, metadata and the journal), in one call. SyncKit's group commit uses it to make a batch
/// of freshly written files durable at once instead of paying one fsync per file.
int synckit_syncfs(int fd);

/// The birth time of the file at `path` (not following a final symlink) in nanoseconds, from
/// statx(2); 0 when the file system does not record one. A patch journal records it so that
/// a restart never replays a patch onto a different file that happens to reuse the inode.
int64_t synckit_birth_time_ns(const char *path);

/// sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE): starts writing the file's dirty pages to
/// disk without waiting. A large pull calls it as it goes, so that the fsync at the end finds
/// most of the data already written instead of starting the whole write then.
int synckit_start_writeback(int fd);

#endif
