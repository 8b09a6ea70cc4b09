/// A snapshot of a node's state, for `syncctl status` (Codable for `--json`).
public struct NodeStatus: Sendable, Codable {
    public struct Peer: Sendable, Codable {
        public var nodeID: String
        public var name: String
        public var address: String
        public var bytesSent: Int
        public var bytesReceived: Int
        public var caughtUp: Bool
    }
    public var nodeID: String
    public var name: String
    public var folder: String
    public var port: Int
    public var peers: [Peer]
    public var files: Int
    public var bytes: UInt64
    public var pulling: [String]
    public var failed: [String: String]
    public var inSync: Bool
    public var filesPulled: Int
    /// Of the files pulled, those placed by moving a local file (a rename or a moved directory
    /// on a peer): no data copied.
    public var filesMoved: Int = 0
    /// Files read and hashed by scans since the node started (a restart with nothing changed
    /// hashes none: the quick check holds for every file).
    public var filesHashed: Int = 0
    public var bytesFromNetwork: Int
    public var bytesReused: Int
    public var conflicts: Int
    public var conflictCopies: [String]
    /// Conflict copies in the folder now (files named `*.sync-conflict-*`).
    public var conflictCopiesPresent: Int = 0
    /// The versioning kind (`none` when off), the versions kept and their bytes.
    public var versioning: String = "none"
    public var versionsKept: Int = 0
    public var versionsBytes: UInt64 = 0
    /// The index outgrew `--memory-records` and lives in the state directory's spill file.
    public var indexSpilled: Bool = false
    public var recentErrors: [String]

    init(nodeID: String, name: String, folder: String, port: Int, peers: [Peer], files: Int, bytes: UInt64, pulling: [String],
         failed: [String: String], inSync: Bool, statistics: NodeMachine.Statistics) {
        self.nodeID = nodeID
        self.name = name
        self.folder = folder
        self.port = port
        self.peers = peers
        self.files = files
        self.bytes = bytes
        self.pulling = pulling
        self.failed = failed
        self.inSync = inSync
        filesPulled = statistics.filesPulled
        filesMoved = statistics.filesMoved
        filesHashed = statistics.filesHashed
        bytesFromNetwork = statistics.bytesFromNetwork
        bytesReused = statistics.bytesReused
        conflicts = statistics.conflicts
        conflictCopies = statistics.lastConflictCopies
        recentErrors = statistics.recentErrors
    }
}

extension NodeStatus {
    /// The status of a node from its machine; `bytesSent` gives each connection's count.
    init(id: NodeID, name: String, folder: String, port: Int, machine: NodeMachine, bytesSent: (ConnectionID) -> Int) {
        let engine = machine.engine
        // One pass over the index, counting in place: `filter { }.count` built an array of
        // every matching record first (128 MB at a million files, at every status call).
        // Spilled, the sums are one pass in SQLite (`LocalIndex.totals`).
        let (files, bytes, copies) = engine.local.totals(marker: ConflictNaming.marker)
        self.init(
            nodeID: id.description, name: name, folder: folder, port: port,
            peers: machine.connectedPeers.map {
                .init(nodeID: $0.id.description, name: $0.name, address: $0.address, bytesSent: bytesSent($0.connection),
                      bytesReceived: $0.bytesReceived, caughtUp: $0.caughtUp)
            },
            files: files, bytes: bytes,
            pulling: engine.running.keys.sorted(), failed: engine.failed, inSync: machine.inSync,
            statistics: machine.statistics)
        conflictCopiesPresent = copies
        indexSpilled = engine.isSpilled
    }
}

/// What a running node shows about itself (tests, `syncctl status`).
extension SyncNode {
    /// The port peers can reach this node on, once it runs.
    public var listeningPort: Int? { listener?.port }

    /// This node's index (what it has on disk, plus tombstones).
    public var localRecords: [String: FileRecord] { machine.engine.local.dictionary }

    /// True once this node's index has outgrown `SyncConfiguration.memoryRecordLimit` and lives
    /// in the state directory's spill file (`SpillStore`).
    public var indexSpilled: Bool { machine.engine.isSpilled }

    /// True when nothing is pending and every connected peer has sent its index.
    public var isInSync: Bool { machine.inSync }

    /// The machine's counters (files pulled, conflicts, bytes received...).
    public var statistics: NodeMachine.Statistics { machine.statistics }

    /// A snapshot for `syncctl status`.
    public func status() -> NodeStatus {
        var status = NodeStatus(id: id, name: name, folder: configuration.folder, port: listener?.port ?? 0, machine: machine) { self.connections[$0]?.bytesSent ?? 0 }
        if let versions {
            let summary = versions.summary()
            status.versioning = versions.policy.kind.rawValue
            status.versionsKept = summary.count
            status.versionsBytes = summary.bytes
        }
        return status
    }

    /// The old versions this node keeps (nil: versioning is off, or the folder is not on disk).
    public nonisolated var versions: VersionStore? { (folder as? PosixFolder)?.versions }

    /// The versions kept in this node's state directory, whether or not versioning is on now
    /// (versions kept while it was on can still be listed and restored).
    public nonisolated var versionsOnDisk: VersionStore {
        versions ?? VersionStore(stateDirectory: configuration.resolvedStateDirectory, policy: .keepAll, logger: logger)
    }

    /// Puts back the version of `path` replaced at or before `at` (the newest without `at`), as
    /// a local edit that the node scans at once and syncs to every peer.
    public func restoreVersion(path: String, at: Double?) throws -> VersionStore.Version {
        guard let posix = folder as? PosixFolder else { throw SyncError(.configuration, "this folder keeps no versions") }
        let store = versionsOnDisk
        guard let version = store.find(path: path, at: at) else {
            throw SyncError(.io, at == nil ? "no version of \(path) is kept" : "no version of \(path) is kept from before that time")
        }
        try store.restore(version, into: posix.root, me: id.short)
        handle(.folderChanged([path]))
        return version
    }
}
