/// One change the node must make on disk to reach the version the cluster agreed on.
public struct PullJob: Sendable, Equatable {
    public enum Operation: Sendable, Equatable {
        /// Assemble the file from local and remote blocks into a temp file, then rename it in.
        case writeFile
        case makeDirectory
        case makeSymlink
        /// Remove the file, link or (empty) directory.
        case delete
        /// Same content, other modification time or mode: change only those.
        case updateMetadata
    }

    public var operation: Operation
    public var path: String
    /// The record to reach; its `version` is already the reconciled one.
    public var target: FileRecord
    /// The local record the job expects on disk (nil: nothing there). If the disk no longer
    /// matches it when the job is about to replace the file, the job fails with
    /// `.localChanged` and the path is rescanned: a local edit is never overwritten blind.
    public var expectedLocal: FileRecord?
    /// Before replacing, keep the local content under this name (a conflict loser's copy).
    public var conflictCopyPath: String?

    public init(operation: Operation, path: String, target: FileRecord, expectedLocal: FileRecord?, conflictCopyPath: String?) {
        self.operation = operation
        self.path = path
        self.target = target
        self.expectedLocal = expectedLocal
        self.conflictCopyPath = conflictCopyPath
    }
}

/// How a job ended, as the node reports it back to the engine.
public enum PullOutcome: Sendable, Equatable {
    /// The job reached its target; the record carries what the disk now holds (inode, mtime).
    case applied(FileRecord)
    /// The local file changed under the job; rescan it and decide again.
    case localChanged
    /// A block could not be had from any source; retry when peers change.
    case unavailable
    /// Another failure (disk full, permissions ...); retry later.
    case failed(String)
}

/// The order in which needed files are pulled. Directories always come first (shallow first)
/// and deletions last (deepest first, and only once nothing else is pending, so that a renamed
/// file's blocks are still on disk to copy from when its new name is pulled).
public enum PullOrder: String, Sendable, CaseIterable {
    /// Many small files land quickly; the default.
    case smallestFirst = "smallest-first"
    case largestFirst = "largest-first"
    case oldestFirst = "oldest-first"
    case newestFirst = "newest-first"
    case alphabetic
}
