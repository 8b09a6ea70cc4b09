import NIOCore

/// Where a running job gets the blocks it cannot copy from this disk: from the peers, through
/// the node (`SyncNode` asks `NodeMachine`, which chooses the peer). What it returns has been
/// checked against the block's size and SHA-256.
public protocol BlockSource: Sendable {
    /// The block at `offset` of `target` (the record being pulled), or nil when no peer could
    /// give it.
    func fetch(_ block: BlockRef, offset: UInt64, of target: FileRecord) async -> ByteBuffer?
}

/// What the watcher reports.
public enum FolderChange: Sendable, Equatable {
    /// These relative paths (files or directories) were created, changed, moved or deleted.
    case changed(Set<String>)
    /// Events were lost: rescan everything.
    case overflow
}

/// The synced folder as a node sees it: scan it, watch it, apply a job to it, read a block from
/// it, make it durable. The Linux implementation (`PosixFolder`) reaches the disk only through
/// a directory handle (`FolderRoot`) with openat2, inotify, group commit and patch journals;
/// `InMemoryFolder` (SyncKitTesting) keeps a folder in memory for tests and whole-cluster
/// simulations, and `LocalFolderConformance` checks that both behave alike.
///
/// ## Implementation requirements
/// - `scan` reports what is on disk as `SyncEngine.Observation`s: one per path present (with its
///   content hashed by `Chunker`, reusing `known`'s blocks when size, mtime and inode are
///   unchanged), and a "gone" observation for each path of `known` that is no longer there
///   (and not ignored). A path found exactly as `known` has it (content, mtime, mode, inode)
///   may be left out: the engine would change nothing for it, and at a million files a
///   restart's scan then hands over almost nothing. It never reports the state directory, temp files, or names that
///   `PathSafety` refuses, and it never follows a symlink.
/// - `apply` brings one path to the job's target, or reports why not. It never overwrites a
///   local change it did not expect: when the disk no longer matches `job.expectedLocal` it
///   returns `.localChanged`. It records the target as an intent (`IndexPersistence.saveIntents`)
///   before it changes the disk, and a file it writes is durable before its name points at it.
///   Every block it writes was checked against its hash. It never writes outside the folder or
///   into its state directory, whatever the job's path.
/// - `readBlock` reads a block of a file this node holds (nil when it is gone or shorter).
public protocol LocalFolder: Sendable {
    /// Finishes what a crash interrupted (patch journals), before the first scan.
    func recover()
    /// Of the intents a crash left (`IndexPersistence.loadIntents`), the paths whose change
    /// certainly reached the disk: a file or link whose temp file was renamed into place (it is
    /// gone). Called after `recover`.
    func landed(_ intents: [FileRecord]) -> Set<String>
    func scan(_ request: ScanRequest, known: LocalIndex, ignore: IgnoreRules) async -> ScanResult
    /// `scan`, handing observations of a full scan to `slices` as they are found (each becomes
    /// a `ScanResult` with `isSlice`); the result returned holds the rest. A folder that cannot
    /// stream (the default) returns everything at the end.
    func scan(_ request: ScanRequest, known: LocalIndex, ignore: IgnoreRules,
              slices: (@Sendable ([SyncEngine.Observation]) -> Void)?) async -> ScanResult
    /// Starts watching; the stream ends after `stopWatching`.
    func watch(ignore: IgnoreRules) throws -> AsyncStream<FolderChange>
    func stopWatching()
    func apply(_ job: PullJob, locals: [BlockHash: [BlockMap.Location]], blocks: any BlockSource) async -> (PullOutcome, PullStats)
    func readBlock(_ location: BlockMap.Location) -> ByteBuffer?
    /// Deletes the temp file of an abandoned pull of `path`.
    func removeTemp(for path: String)
    /// Deletes every temp file left in the folder by a crash.
    func cleanStaleTemps()
    /// The text of `.syncignore` at the root ("" when there is none).
    func readIgnoreFile() -> String
}

extension LocalFolder {
    /// `scan` against a dictionary of known records (tests).
    public func scan(_ request: ScanRequest, known: [String: FileRecord], ignore: IgnoreRules) async -> ScanResult {
        await scan(request, known: LocalIndex(known), ignore: ignore)
    }

    public func scan(_ request: ScanRequest, known: LocalIndex, ignore: IgnoreRules,
                     slices: (@Sendable ([SyncEngine.Observation]) -> Void)?) async -> ScanResult {
        await scan(request, known: known, ignore: ignore)
    }
}
