/// What a node reports on its event stream (`SyncNode.events`). Tests assert on these, and
/// `syncctl` turns them into log lines and status.
public enum SyncEvent: Sendable, Equatable {
    /// The node is up and accepting peers on `port`.
    case started(node: NodeID, port: Int)
    case peerConnected(NodeID, name: String)
    case peerDisconnected(NodeID, reason: String)
    /// A local edit (or deletion) was recorded.
    case localChange(path: String, deleted: Bool)
    /// A job brought `path` to the agreed version.
    case pulled(path: String, operation: PullJob.Operation)
    /// A conflict was settled here and the local loser kept at `copyPath`.
    case conflict(path: String, copyPath: String)
    /// A record from a peer was refused (unsafe path) and ignored.
    case refused(path: String, peer: NodeID, reason: String)
    /// A job failed and will be retried.
    case pullFailed(path: String, reason: String)
    /// A peer was refused at the handshake.
    case peerRejected(address: String, reason: String)
    /// Nothing left to pull, and every connected peer sent its index: the folder is in sync.
    case inSync
}
