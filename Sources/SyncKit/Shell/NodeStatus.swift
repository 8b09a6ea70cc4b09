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
    public var bytesFromNetwork: Int
    public var bytesReused: Int
    public var conflicts: Int
    public var conflictCopies: [String]
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
        self.init(
            nodeID: id.description, name: name, folder: folder, port: port,
            peers: machine.connectedPeers.map {
                .init(nodeID: $0.id.description, name: $0.name, address: $0.address, bytesSent: bytesSent($0.connection),
                      bytesReceived: $0.bytesReceived, caughtUp: $0.caughtUp)
            },
            files: engine.local.values.filter { !$0.deleted && $0.kind == .file }.count,
            bytes: engine.local.values.filter { !$0.deleted }.reduce(0) { $0 + $1.size },
            pulling: engine.running.keys.sorted(), failed: engine.failed, inSync: machine.inSync,
            statistics: machine.statistics)
    }
}

/// What a running node shows about itself (tests, `syncctl status`).
extension SyncNode {
    /// The port peers can reach this node on, once it runs.
    public var listeningPort: Int? { listener?.port }

    /// This node's index (what it has on disk, plus tombstones).
    public var localRecords: [String: FileRecord] { machine.engine.local }

    /// True when nothing is pending and every connected peer has sent its index.
    public var isInSync: Bool { machine.inSync }

    /// The machine's counters (files pulled, conflicts, bytes received...).
    public var statistics: NodeMachine.Statistics { machine.statistics }

    /// A snapshot for `syncctl status`.
    public func status() -> NodeStatus {
        NodeStatus(id: id, name: name, folder: configuration.folder, port: listener?.port ?? 0, machine: machine) { self.connections[$0]?.bytesSent ?? 0 }
    }
}
