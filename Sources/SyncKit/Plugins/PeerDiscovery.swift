/// Where a peer can be reached. `nodeID` is set when discovery learned it (mDNS TXT records);
/// a static peer list knows only addresses, and the handshake tells who answered.
public struct PeerEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var nodeID: NodeID?

    public init(host: String, port: Int, nodeID: NodeID? = nil) {
        self.host = host
        self.port = port
        self.nodeID = nodeID
    }

    /// Parses `host:port` or `[v6addr]:port`; nil when malformed or the port is out of range.
    public init?(parsing text: String) {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }
        }
        guard !host.isEmpty, let port = Int(portText), (1...65535).contains(port) else { return nil }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// What a node tells discovery about itself.
public struct LocalAnnouncement: Sendable, Hashable {
    public var nodeID: NodeID
    public var name: String
    /// A tag that tells clusters apart on a shared LAN (never the cluster key itself).
    public var clusterTag: String
    public var port: Int

    public init(nodeID: NodeID, name: String, clusterTag: String, port: Int) {
        self.nodeID = nodeID
        self.name = name
        self.clusterTag = clusterTag
        self.port = port
    }
}

/// A change in who is out there.
public enum DiscoveryEvent: Sendable, Hashable {
    /// A peer can be reached at this endpoint (again). Repeats are allowed and harmless.
    case found(PeerEndpoint)
    /// The peer at this endpoint left (goodbye, expiry, or no longer in the list).
    case lost(PeerEndpoint)
}

/// Finds the other nodes of the cluster and announces this one.
///
/// ## Implementation requirements
/// - `events(announcing:)` starts announcing `me` (if the mechanism announces at all) and returns
///   a stream of what it finds. It must not block; the work runs in tasks the stream owns.
/// - When the consumer stops iterating (the stream is terminated or its task cancelled), the
///   implementation stops announcing, says goodbye where the mechanism has one, and frees
///   everything it holds. The `DiscoveryConformance` kit checks this.
/// - Never report this node itself (`me.nodeID`) as found when the mechanism can tell.
/// - `found` may repeat for the same endpoint; the node de-duplicates. An implementation that
///   learns of many addresses must bound how many it reports (a flood must not make the node dial
///   without limit).
public protocol PeerDiscovery: Sendable {
    func events(announcing me: LocalAnnouncement) -> AsyncStream<DiscoveryEvent>
}
