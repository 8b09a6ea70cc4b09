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
    /// For `writeFile` only: a local file with the target's content whose deletion is agreed.
    /// The folder may move that file to `path` instead of writing a copy, and then reports
    /// `.moved`: a renamed file or directory on a peer costs a rename here, not a copy of its
    /// data. A folder that cannot move it (or finds it changed) writes the file as usual and
    /// reports `.applied`; the old path's deletion then runs as its own job.
    public var renameFrom: Move?

    /// The file a `writeFile` job may move into place, and what its old path becomes.
    public struct Move: Sendable, Equatable {
        /// The file's record, as this node last saw it on disk (the folder moves it only if it
        /// is still that file).
        public var from: FileRecord
        /// The agreed tombstone of its path. The folder records it as an intent before the
        /// move, as a delete job records its own: if the node dies after the move and before
        /// the tombstone is stored, the first scan finds the path empty and adopts this version
        /// instead of counting a deletion this node never made.
        public var deletion: FileRecord
        public init(from: FileRecord, deletion: FileRecord) {
            self.from = from
            self.deletion = deletion
        }
    }

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
    /// A `writeFile` job reached its target by moving its `renameFrom` file: the record as for
    /// `.applied`, and the old path now holds nothing.
    case moved(FileRecord)
    /// The local file changed under the job; rescan it and decide again.
    case localChanged
    /// A block could not be had from any source; retry when peers change.
    case unavailable
    /// Another failure (disk full, permissions ...); retry later.
    case failed(String)

    /// What the disk now holds at the job's path, when the job reached its target (applied or
    /// moved); nil when it did not.
    public var reached: FileRecord? {
        switch self {
        case .applied(let r), .moved(let r): r
        default: nil
        }
    }
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
