// C functions that Swift's Glibc module does not expose (they are behind _GNU_SOURCE).
#ifndef CSYNCKIT_SHIMS_H
#define CSYNCKIT_SHIMS_H

/// syncfs(2): writes back and commits everything dirty on the file system that holds `fd`
/// (data, metadata and the journal), in one call. SyncKit's group commit uses it to make a batch
/// of freshly written files durable at once instead of paying one fsync per file.
int synckit_syncfs(int fd);

#endif
