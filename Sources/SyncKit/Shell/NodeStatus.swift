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
