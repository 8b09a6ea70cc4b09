import CSyncKitShims
import Foundation
import Logging
import NIOCore

/// Performs `PullJob`s on disk: the only code that writes into the synced folder.
///
/// A file is assembled in a temp file next to its target (`.<name>.synckit-tmp`, same directory
/// so the final rename is atomic on the same file system): blocks already in the temp file from
/// an interrupted pull are kept (resume), blocks found locally are copied from disk, the rest
/// are fetched from peers, many at once. Every block is checked against its SHA-256 before it is
/// written. Then: fsync, permissions, modification time, a last check that the local file is
/// still what the job expected (a user's edit in the meantime aborts the job: it is rescanned
/// and decided again instead of being overwritten), the conflict copy if one is to be kept, and
/// the rename. A crash at any point leaves the old file or the new one, never a mix; a temp
/// file left behind is resumed or cleaned at the next start.
struct Puller: Sendable {
    /// The folder, reached only through its directory handle: every create, rename, chmod and
    /// unlink below is resolved by the kernel beneath it (see `FolderRoot`).
    let root: FolderRoot
    let logger: Logger
    /// Blocks fetched at once within one file.
    let window: Int
    /// Makes written files and renames durable, in batches when many files land at once.
    let committer: GroupCommitter
    /// Where patch journals are kept (the state directory).
    let journalDirectory: String
    /// Records a job's target in the index before the job changes the disk (see
    /// `IndexStore`'s intents): batched like the file flushes, one transaction per batch.
    let intents: GroupCommit<FileRecord>
    /// Paths whose in-place patch failed half way and whose journal could not be replayed yet
    /// (a disk error): no scan may record them and no pull may start on them until a replay
    /// succeeds (see `finishPatch`).
    let unfinishedPatches = Locked<Set<String>>([])
    /// Where the content a pull replaces or deletes is kept (nil: versioning is off).
    var versions: VersionStore?

    typealias Stats = PullStats

    /// This process's umask, read once from /proc (calling umask(2) to read it would change it
    /// for other threads for an instant); 0o777 (always chmod) when it cannot be read.
    static let umask: mode_t = {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Umask:") }),
              let value = mode_t(line.dropFirst(6).trimmingCharacters(in: .whitespaces), radix: 8) else { return 0o777 }
        return value
    }()

    /// The temp file's name for a file called `name`, in the same directory.
    static func tempName(forName name: String) -> String {
        // Names near the 255-byte limit are shortened; a stable hash (the same in every run, so
        // a restart finds the temp file to resume) keeps them unique.
        let short = name.utf8.count > 200 ? String(decoding: name.utf8.prefix(100), as: UTF8.self) + "-" + String(Chunker.hash(Array(name.utf8)).description.prefix(16)) : name
        return "." + short + PathSafety.tempSuffix
    }

    /// The temp file's relative path for `path` (for tests and messages; the puller itself
    /// only ever names it within the parent directory's handle).
    static func tempName(for path: String) -> String {
        let (parent, name) = (RelativePath.parent(of: path), String(decoding: Array(path.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).last ?? [], as: UTF8.self))
        return (parent.map { $0 + "/" } ?? "") + tempName(forName: name)
    }

    /// Deletes the temp file of an abandoned pull of `path`, if there is one.
    func removeTemp(for path: String) {
        guard let entry = try? root.entry(path) else { return }
        _ = entry.remove(name: Self.tempName(forName: entry.name))
    }

    /// Makes the job's target known to the next start before the disk changes: if the node
    /// dies after the change and before the pulled record is stored, the first scan finds this
    /// content and adopts this version instead of taking it for a local edit. `also` is a second
    /// record the same change settles (a move's old path, now empty), submitted at once so both
    /// share one flush.
    func recordIntent(_ job: PullJob, also other: FileRecord? = nil) async throws {
        let failed: Int32
        if let other {
            async let target = intents.submit(job.target)
            async let second = intents.submit(other)
            let (a, b) = await (target, second)
            failed = a != 0 ? a : b
        } else {
            failed = await intents.submit(job.target)
        }
        guard failed == 0 else { throw SyncError(.index, "cannot record the intent of the pull of \(job.path)") }
    }

    /// True when the disk at the entry is still what `expected` describes (nil: nothing there).
    func localMatches(_ expected: FileRecord?, at entry: FolderEntry) throws -> Bool {
        let st = try entry.stat()
        guard let expected, !expected.deleted else { return st == nil }
        guard let st, st.kind == expected.kind else { return false }
        switch expected.kind {
        case .file:
            return st.size == expected.size && st.mtimeNs == expected.mtimeNs && (expected.inode == 0 || st.inode == expected.inode)
        case .directory:
            return true
        case .symlink:
            return entry.readLink() == expected.symlinkTarget
        }
    }

    /// Runs a job. `locals` lists where blocks of the target already are on this node.
    func perform(_ job: PullJob, locals: [BlockHash: [BlockMap.Location]], source: any BlockSource) async -> (PullOutcome, Stats) {
        var stats = Stats()
        do {
            // Checked again here (the node checked it on receipt): nothing reaches the disk
            // without passing `PathSafety`, and the root handle keeps it beneath the folder.
            let path = try RelativePath(job.path)
            switch job.operation {
            case .writeFile:
                return (try await writeFile(job, locals: locals, source: source, stats: &stats), stats)
            case .makeDirectory:
                guard let entry = try root.entry(path, create: true) else { throw SyncError(.io, "no parent for \(job.path)") }
                try await recordIntent(job)
                if let st = try entry.stat(), st.kind != .directory {
                    // A file or link becomes a directory: replace it only if it is still the
                    // version this node knew (else it is a local edit: decide again).
                    guard try localMatches(job.expectedLocal, at: entry) else { return (.localChanged, stats) }
                    try keepVersion(entry, job, reason: .replaced, removing: true)
                    guard entry.remove() || errno == ENOENT else { throw SyncError(.io, "cannot replace \(job.path) by a directory: \(FileOps.errorText())") }
                }
                if let st = try entry.stat() {
                    guard st.kind == .directory else { return (.localChanged, stats) }
                } else if !entry.makeDirectory(mode: job.target.mode) && errno != EEXIST {
                    throw SyncError(.io, "cannot create directory \(job.path): \(FileOps.errorText())")
                }
                if root.keepsPermissions { try entry.setMode(job.target.mode) }
                return (.applied(try appliedRecord(job, entry)), stats)
            case .makeSymlink:
                guard let entry = try root.entry(path, create: true) else { throw SyncError(.io, "no parent for \(job.path)") }
                let temp = Self.tempName(forName: entry.name)
                _ = entry.remove(name: temp)
                guard entry.makeSymlink(target: job.target.symlinkTarget, name: temp) else {
                    throw SyncError(.io, "cannot create symlink \(job.path): \(FileOps.errorText())")
                }
                try await recordIntent(job)
                guard try localMatches(job.expectedLocal, at: entry) else {
                    _ = entry.remove(name: temp)
                    return (.localChanged, stats)
                }
                try await renameIntoPlace(temp, entry, job)
                return (.applied(try appliedRecord(job, entry)), stats)
            case .updateMetadata:
                guard let entry = try root.entry(path), try localMatches(job.expectedLocal, at: entry) else { return (.localChanged, stats) }
                try await recordIntent(job)
                if job.target.kind != .symlink && root.keepsPermissions { try entry.setMode(job.target.mode) }
                if job.target.kind != .directory { try entry.setModificationTime(job.target.mtimeNs) }
                return (.applied(try appliedRecord(job, entry)), stats)
            case .delete:
                guard let entry = try root.entry(path) else {
                    // No parent directory: nothing there to delete.
                    return (job.expectedLocal == nil || job.expectedLocal!.deleted ? .applied(job.target) : .localChanged, stats)
                }
                guard try localMatches(job.expectedLocal, at: entry) else { return (.localChanged, stats) }
                try await recordIntent(job)
                let isDirectory = try entry.stat()?.kind == .directory
                if !isDirectory {
                    try keepVersion(entry, job, reason: .deleted, removing: true)
                    versions?.pulledDelete(path: job.path)
                }
                if !entry.remove(directory: isDirectory) {
                    if errno == ENOENT { return (.applied(job.target), stats) }
                    // A directory that still holds entries that are not synced (ignored here, or
                    // unreadable): keep it, and say why; the job is retried later, not spun.
                    if errno == ENOTEMPTY || errno == EEXIST {
                        return (.failed("the directory still holds files that are not synced (ignored or unreadable); keeping it"), stats)
                    }
                    throw SyncError(.io, "cannot delete \(job.path): \(FileOps.errorText())")
                }
                var r = job.target
                r.inode = 0
                return (.applied(r), stats)
            }
        } catch let error as SyncError {
            logger.warning("job failed", metadata: ["sync.path": "\(job.path)", "error": "\(error)"])
            return (.failed(error.message), stats)
        } catch {
            return (.failed("\(error)"), stats)
        }
    }

    /// The record of what the job left on disk: the target, with this disk's inode and times.
    /// When a user deleted or moved the file right after it landed, the job still applied (the
    /// user saw this version and removed it): the target is recorded with inode 0, and the
    /// watcher's report of the removal is then scanned as a change made after this version.
    /// (Failing the job instead made it pull the file again, undoing the user's delete.)
    func appliedRecord(_ job: PullJob, _ entry: FolderEntry) throws -> FileRecord {
        var r = job.target
        // Written under the case-conflict name: the path itself holds nothing of it.
        guard entry.relocatedPath == nil, let st = try entry.stat() else {
            if let relocated = entry.relocatedPath {
                logger.warning("a name clashes in case with another on this case-insensitive file system; kept under another name", metadata: ["sync.path": "\(job.path)", "kept.as": "\(relocated)"])
            }
            r.inode = 0
            return r
        }
        r.inode = st.inode
        if r.kind == .file { r.mtimeNs = st.mtimeNs }
        return r
    }

    /// Keeps the regular file at `entry` as a version (when versioning is on) before the job
    /// replaces or deletes it; the job's target names the node whose change this is. Nothing to
    /// do for a directory, a link or nothing at all.
    func keepVersion(_ entry: FolderEntry, _ job: PullJob, reason: VersionStore.Reason, removing: Bool) throws {
        guard let versions, try entry.stat()?.kind == .file else { return }
        try versions.keep(entry, path: job.path, by: job.target.modifiedBy.short, reason: reason, removing: removing)
    }

    /// Keeps the conflict loser if asked, then renames the temp file `temp` (a name in the
    /// entry's directory) over the target and makes the rename durable (the directory's flush
    /// is shared with other renames landing at once).
    func renameIntoPlace(_ temp: String, _ entry: FolderEntry, _ job: PullJob) async throws {
        let copied = try job.conflictCopyPath != nil && entry.stat() != nil
        if let copy = job.conflictCopyPath, copied {
            // The copy's name is the target's with a marker: same directory.
            let copyPath = try RelativePath(copy)
            guard copyPath.split.parent == RelativePath.parent(of: job.path) else {
                throw SyncError(.unsafePath, "the conflict copy \(copy) is not beside \(job.path)")
            }
            // A hard link, not a rename: the target's name never disappears, so a crash before
            // the rename below leaves the old file where it was (and the copy beside it), never
            // a missing file that the next scan would take for a local delete.
            // (A file system without hard links gets the rename.)
            guard entry.link(entry.name, to: copyPath.split.name) || errno == EEXIST || entry.rename(entry.name, to: copyPath.split.name) else {
                throw SyncError(.io, "cannot keep the conflict copy \(copy): \(FileOps.errorText())")
            }
        }
        // (Only when a directory is what the caller found there: it just checked the disk.)
        if job.target.kind != .directory, job.expectedLocal?.kind == .directory, try entry.stat()?.kind == .directory {
            // A directory becomes a file or link (the caller checked it is the one we knew):
            // only an empty one is replaced; one with unsynced content is kept.
            guard entry.remove(directory: true) else {
                throw SyncError(.io, "cannot replace the directory \(job.path): \(FileOps.errorText())")
            }
        }
        // The content about to be replaced is kept as a version (a conflict copy already keeps
        // a conflict's loser).
        if !copied { try keepVersion(entry, job, reason: .replaced, removing: false) }
        guard entry.rename(temp, to: entry.name) else {
            throw SyncError(.io, "cannot move \(job.path) into place: \(FileOps.errorText())")
        }
        if job.target.kind == .file, entry.relocatedPath == nil { versions?.pulled(entry, path: job.path) }
        // An error here is not the writer's to handle: the file is in place and its data is
        // durable; at worst a crash now brings back the old name, which the next scan sees.
        _ = await committer.makeDurable(.directory(entry.directory))
    }

    /// Places the job's file by moving `source` (a file of this node with the same content,
    /// whose deletion is agreed: a rename on a peer) to the job's path: one `renameat2`, no data
    /// read or written, the inode kept. Nil when it cannot (the source is no longer the file the
    /// node knew, is half patched, or the kernel refuses the rename, e.g. another file system
    /// mounted inside the folder): the caller then writes the file as usual, and the source's
    /// deletion runs as its own job. The target's name must be free: `RENAME_NOREPLACE` makes
    /// that part of the rename, so a file created there meanwhile is never replaced (the job
    /// then reports `.localChanged` and the path is decided again).
    func moveIntoPlace(_ job: PullJob, _ move: PullJob.Move, to entry: FolderEntry) async throws -> PullOutcome? {
        let source = move.from
        guard entry.relocatedPath == nil, unfinishedPatches.withLock({ !$0.contains(source.path) }),
              let from = try root.entry(source.path), from.relocatedPath == nil,
              try localMatches(source, at: from) else { return nil }
        guard try localMatches(job.expectedLocal, at: entry) else { return .localChanged }
        // As for any pull: a crash after the rename and before the records are stored finds the
        // target's content at the new path and nothing at the old one, and adopts both versions
        // (the old path's tombstone too: else its absence counts as a deletion of this node's).
        try await recordIntent(job, also: move.deletion)
        let moved = from.name.withCString { f in
            entry.name.withCString { synckit_renameat_noreplace(from.directory, f, entry.directory, $0) }
        } == 0
        guard moved else {
            if errno == EEXIST { return .localChanged }
            logger.debug("cannot move a local file into place; copying it", metadata: [
                "sync.path": "\(job.path)", "sync.from": "\(source.path)", "error": "\(FileOps.errorText())"])
            return nil
        }
        // The old path's shadow (versioning) goes, the new one follows the file: nothing was
        // deleted or replaced, so there is no version to keep.
        versions?.pulledDelete(path: source.path)
        // The rename kept the old file's times and bits; the target's are the agreed ones.
        // (Equal content includes the permission bits; the modification time may differ.)
        if source.mtimeNs != job.target.mtimeNs { try entry.setModificationTime(job.target.mtimeNs) }
        versions?.pulled(entry, path: job.path)
        // Both names durable: the new entry and the old one's removal (flushes shared with
        // other jobs landing at once).
        async let newName = committer.makeDurable(.directory(entry.directory))
        async let oldName = committer.makeDurable(.directory(from.directory))
        _ = await (newName, oldName)
        return .moved(try appliedRecord(job, entry))
    }

    private func writeFile(_ job: PullJob, locals: [BlockHash: [BlockMap.Location]], source: any BlockSource, stats: inout Stats) async throws -> PullOutcome {
        guard current(job) else { return .failed("an earlier patch of this file is not finished yet (disk error); retrying its journal") }
        guard let entry = try root.entry(job.path, create: true) else { throw SyncError(.io, "no parent for \(job.path)") }
        if let move = job.renameFrom, let outcome = try await moveIntoPlace(job, move, to: entry) { return outcome }
        // (Not with versioning: a patch changes the inode a version would share.)
        if versions == nil, let changed = Self.patchPlan(job) {
            return try await patchInPlace(job, entry, changed: changed, locals: locals, source: source, stats: &stats)
        }
        let temp = Self.tempName(forName: entry.name)
        // Usually there is no temp file yet: created exclusively, with the target's permission
        // bits (so no chmod when the umask keeps them), and known empty (no stat, no resize:
        // the blocks cover it). Otherwise an interrupted pull left it: resume it.
        let mode = mode_t(job.target.mode & 0o777)
        // Always writable by us while assembled (a read-only target's temp must stay resumable).
        let createMode = mode | 0o600
        var fd = entry.open(O_RDWR | O_CREAT | O_EXCL, mode: createMode, name: temp)
        let fresh = fd >= 0
        if !fresh && errno == EEXIST {
            fd = entry.open(O_RDWR | O_NONBLOCK, name: temp)
            if fd >= 0, (try? FileOps.fstat(fd))?.kind != .file {
                close(fd)
                throw SyncError(.io, "the temp file of \(job.path) is not a regular file")
            }
        }
        guard fd >= 0 else { throw SyncError(.io, "cannot create \(entry.sibling(temp)): \(FileOps.errorText())") }
        var fdOpen = true
        defer { if fdOpen { close(fd) } }

        let blocks = job.target.blocks
        let offsets = job.target.blockOffsets
        // Resume: blocks an interrupted pull already wrote are kept when their hash matches.
        let existing = fresh ? 0 : try FileOps.fstat(fd).size
        var todo = [Int]()
        if existing > 0 {
            // Sized by this file's largest block, whatever the record claims.
            let largest = Int(blocks.map(\.size).max() ?? 0)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(largest, 1), alignment: 16)
            defer { buffer.deallocate() }
            for i in blocks.indices {
                let end = offsets[i] + UInt64(blocks[i].size)
                if end <= existing {
                    let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[..<Int(blocks[i].size)])
                    if try FileOps.pread(fd, into: slice, offset: offsets[i]) == slice.count,
                       Chunker.hash(UnsafeRawBufferPointer(slice)) == blocks[i].hash {
                        stats.bytesReused += slice.count
                        continue
                    }
                }
                todo.append(i)
            }
        } else {
            todo = Array(blocks.indices)
        }
        if !fresh {
            guard ftruncate(fd, off_t(job.target.size)) == 0 else { throw SyncError(.io, "cannot size the temp file of \(job.path): \(FileOps.errorText())") }
        }

        let pieces = todo.map { Piece(block: blocks[$0], fileOffset: offsets[$0], destination: offsets[$0]) }
        let complete = try await fill(pieces, into: fd, target: job.target, locals: locals, source: source, stats: &stats)
        if !complete || Task.isCancelled { return .unavailable }

        // Permission bits only: a peer never plants setuid, setgid or sticky bits here.
        if root.keepsPermissions && (!fresh || createMode != mode || mode & Self.umask != 0) {
            guard fchmod(fd, mode) == 0 else { throw SyncError(.io, "cannot chmod the temp file of \(job.path)") }
        }
        var times = FileOps.modificationTimes(job.target.mtimeNs)
        guard futimens(fd, &times) == 0 else { throw SyncError(.io, "cannot set the time of the temp file of \(job.path)") }
        // Data and metadata on disk before the rename (shared with other files landing now),
        // and the intent in the index, both before the disk changes under the target's name.
        async let intentRecorded: Void = recordIntent(job)
        let synced = await committer.makeDurable(.file(fd))
        try await intentRecorded
        guard synced == 0 else { throw SyncError(.io, "fsync of the temp file of \(job.path) failed: \(String(cString: strerror(synced)))") }
        close(fd)
        fdOpen = false

        guard try localMatches(job.expectedLocal, at: entry) else {
            // The decision is taken again after a rescan; this assembled copy may not be wanted.
            _ = entry.remove(name: temp)
            return .localChanged
        }
        try await renameIntoPlace(temp, entry, job)
        return .applied(try appliedRecord(job, entry))
    }

    /// Files at least this large are patched in place when few of their blocks change.
    static let patchMinimumSize: UInt64 = 4 << 20

    /// The indices of the target's blocks that differ from what the local file holds at the
    /// same offset, when patching in place is the better way: a large regular file replacing
    /// the one this node knew, no conflict copy to keep, and at most a quarter of its bytes
    /// changing (an insert near the start shifts everything after it; then the temp-file way,
    /// which copies shifted blocks from the old file, is the right one). Nil otherwise.
    static func patchPlan(_ job: PullJob) -> [Int]? {
        // (The file must be writable by its owner: a read-only file is replaced, as before.)
        guard job.conflictCopyPath == nil, let current = job.expectedLocal, !current.deleted, current.kind == .file,
              current.mode & 0o200 != 0, job.target.kind == .file, !job.target.deleted, job.target.size >= patchMinimumSize else { return nil }
        var have = [UInt64: BlockRef](minimumCapacity: current.blocks.count)
        for (offset, block) in zip(current.blockOffsets, current.blocks) { have[offset] = block }
        var changed = [Int]()
        var changedBytes: UInt64 = 0
        for (i, (offset, block)) in zip(job.target.blockOffsets, job.target.blocks).enumerated() where have[offset] != block {
            changed.append(i)
            changedBytes += UInt64(block.size)
        }
        return changedBytes * 4 <= job.target.size ? changed : nil
    }

    /// Patches the local file in place under a redo journal (see `PatchJournal`): the changed
    /// blocks go to the journal first (from local copies or peers, each verified), the journal is
    /// made durable, then the blocks are written into the file, which is made durable, and the
    /// journal is deleted. Unchanged bytes are neither read nor written.
    private func patchInPlace(_ job: PullJob, _ entry: FolderEntry, changed: [Int], locals: [BlockHash: [BlockMap.Location]], source: any BlockSource, stats: inout Stats) async throws -> PullOutcome {
        // (`writeFile` already checked that no earlier patch of the path is unfinished.)
        guard try localMatches(job.expectedLocal, at: entry), let st = try entry.stat() else { return .localChanged }
        let blocks = job.target.blocks
        let offsets = job.target.blockOffsets
        let journal = PatchJournal(
            path: job.path, inode: st.inode, birthNs: entry.birthTimeNs(), oldSize: st.size, newSize: job.target.size, mode: job.target.mode,
            mtimeNs: job.target.mtimeNs,
            entries: changed.map { PatchJournal.Entry(offset: offsets[$0], size: blocks[$0].size, hash: blocks[$0].hash) })
        let location = PatchJournal.location(for: job.path, in: journalDirectory)
        let jfd = open(location, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard jfd >= 0 else { throw SyncError(.io, "cannot create the patch journal for \(job.path): \(FileOps.errorText())") }
        var keepJournal = false
        defer {
            close(jfd)
            if !keepJournal { unlink(location) }
        }
        try journal.header().withUnsafeBytes { try FileOps.pwrite(jfd, $0, offset: 0) }
        let pieces = zip(changed, journal.dataOffsets()).map { Piece(block: blocks[$0], fileOffset: offsets[$0], destination: $1) }
        guard try await fill(pieces, into: jfd, target: job.target, locals: locals, source: source, stats: &stats),
              !Task.isCancelled else { return .unavailable }
        // The journal, and its name in the state directory, on disk before the file is touched.
        let synced = await committer.makeDurable(.file(jfd))
        guard synced == 0 else { throw SyncError(.io, "fsync of the patch journal failed: \(String(cString: strerror(synced)))") }
        let journalDir = open(journalDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard journalDir >= 0 else { throw SyncError(.io, "cannot open the state directory: \(FileOps.errorText())") }
        let named = await committer.makeDurable(.directory(journalDir))
        close(journalDir)
        guard named == 0 else { throw SyncError(.io, "fsync of the state directory failed: \(String(cString: strerror(named)))") }
        // A local edit while the blocks were fetched wins: decide again.
        guard try localMatches(job.expectedLocal, at: entry) else { return .localChanged }
        try await recordIntent(job)

        let raw = entry.open(O_WRONLY | O_NONBLOCK)
        guard raw >= 0 else { throw SyncError(.io, "cannot open \(job.path) to patch it: \(FileOps.errorText())") }
        let out = try FolderEntry.regularFile(raw, job.path)
        defer { close(out) }
        // From here until the file is durable, a crash leaves the journal for the restart.
        keepJournal = true
        var failure: String?
        do {
            try journal.apply(from: jfd, to: out)
            let done = await committer.makeDurable(.file(out))
            if done != 0 { failure = "fsync of \(job.path) failed: \(String(cString: strerror(done)))" }
        } catch {
            failure = "\(error)"
        }
        if let failure {
            // The file may be half patched: never leave it so while running. Replay the journal
            // now; if even that fails, keep the path away from scans and pulls until it works.
            if PatchJournal.replay(location, root: root, logger: logger) {
                keepJournal = false
                return .failed("\(failure); the patch was finished from its journal, deciding again")
            }
            unfinishedPatches.withLock { _ = $0.insert(job.path) }
            return .failed("\(failure); the patch journal is kept and replayed before the file is used again")
        }
        keepJournal = false
        stats.bytesReused += Int(job.target.size) - pieces.reduce(0) { $0 + Int($1.block.size) }
        return .applied(try appliedRecord(job, entry))
    }

    /// False while an earlier patch of the job's path is unfinished and its journal still
    /// cannot be replayed; true once it is (or when there was none).
    func current(_ job: PullJob) -> Bool {
        guard unfinishedPatches.withLock({ $0.contains(job.path) }) else { return true }
        guard PatchJournal.replay(PatchJournal.location(for: job.path, in: journalDirectory), root: root, logger: logger) else { return false }
        unfinishedPatches.withLock { _ = $0.remove(job.path) }
        return true
    }

    /// A block to place: where it sits in the target file, and where to write it in `fd`.
    struct Piece: Sendable {
        var block: BlockRef
        var fileOffset: UInt64
        var destination: UInt64
    }

    /// Writes `pieces` into `fd`, `window` at a time: each from a local copy when one still
    /// holds it (read, verified), else from a peer (verified). False when some block could not
    /// be had from anyone.
    private func fill(_ pieces: [Piece], into fd: Int32, target: FileRecord, locals: [BlockHash: [BlockMap.Location]], source: any BlockSource, stats: inout Stats) async throws -> Bool {
        let root = self.root
        var unavailable = false
        try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
            var next = 0
            func launch() {
                guard next < pieces.count else { return }
                let piece = pieces[next]
                next += 1
                let block = piece.block
                let candidates = locals[block.hash] ?? []
                group.addTask {
                    // Local copy first: read, verify, write.
                    for location in candidates {
                        if let data = Self.readLocal(root: root, location), data.withUnsafeReadableBytes({ Chunker.hash($0) }) == block.hash {
                            try data.withUnsafeReadableBytes { try FileOps.pwrite(fd, $0, offset: piece.destination) }
                            return (data.readableBytes, false)
                        }
                    }
                    guard let buffer = await source.fetch(block, offset: piece.fileOffset, of: target),
                          buffer.readableBytes == Int(block.size) else { throw PullerMiss() }
                    try buffer.withUnsafeReadableBytes { try FileOps.pwrite(fd, $0, offset: piece.destination) }
                    return (buffer.readableBytes, true)
                }
            }
            for _ in 0..<window { launch() }
            var unflushed = 0
            while let result = await group.nextResult() {
                switch result {
                case .success(let (bytes, remote)):
                    if remote { stats.bytesFromNetwork += bytes } else { stats.bytesReused += bytes }
                    // Every 32 MiB, start writing to disk what arrived: the final fsync then
                    // waits for the last stretch only, and the disk works while the network does.
                    unflushed += bytes
                    if unflushed >= 32 << 20 {
                        unflushed = 0
                        _ = synckit_start_writeback(fd)
                    }
                    launch()
                case .failure(let error):
                    if error is PullerMiss {
                        unavailable = true
                        group.cancelAll()
                    } else {
                        throw error
                    }
                }
            }
        }
        return !unavailable
    }

    /// Reads a block from a local file (nil if it is gone or shorter than expected), straight
    /// into a buffer that can also go on the wire as is (serving a peer uses it too).
    static func readLocal(root: FolderRoot, _ location: BlockMap.Location) -> ByteBuffer? {
        guard let fd = try? root.openForReading(location.path) else { return nil }
        defer { close(fd) }
        var buffer = ByteBufferAllocator().buffer(capacity: Int(location.size))
        let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(location.size)) { raw in
            (try? FileOps.pread(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[..<Int(location.size)]), offset: location.offset)) ?? 0
        }
        return n == Int(location.size) ? buffer : nil
    }
}

/// A block no source could provide.
struct PullerMiss: Error {}
