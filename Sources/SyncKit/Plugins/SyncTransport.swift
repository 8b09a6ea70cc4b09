/// One framed, bidirectional link to a peer.
///
/// ## Implementation requirements
/// - `inbound` yields frames in the order the peer sent them and finishes (normally or with an
///   error) when the link ends for any reason. It can be iterated once.
/// - `send(_:)` delivers frames in order. It suspends while the link's outbound buffer is full
///   (backpressure), so a slow peer slows its sender down instead of growing memory, and throws
///   once the link is closed.
/// - `close()` is idempotent; afterwards `send` throws and `inbound` finishes.
/// - Frames larger than the transport's maximum frame size are refused on both sides: `send`
///   throws, and a peer that announces one loses its connection.
public protocol PeerChannel: Sendable {
    /// For logs: the remote address.
    var remoteDescription: String { get }
    /// What the transport's security handshake proved about this link (TLS: the peer's
    /// certificate and a value unique to the connection), or nil when it proves nothing (plain
    /// TCP, in-memory links).
    var security: PeerChannelSecurity? { get }
    var inbound: AsyncThrowingStream<Frame, any Error> { get }
    func send(_ frame: Frame) async throws
    /// Sends several frames in order, as one write where the transport can (one system call
    /// and one wake-up of its I/O thread for a whole batch of small block requests or
    /// responses). The default sends them one by one.
    func send(contentsOf frames: [Frame]) async throws
    func close() async
}

/// What a link's security handshake proved.
public struct PeerChannelSecurity: Sendable, Equatable {
    /// The peer's node ID: the SHA-256 of the certificate it presented and proved it holds the
    /// key of. Never taken from a message.
    public var peer: NodeID
    /// A value unique to this connection that both ends derive from the handshake (the TLS
    /// exporter, RFC 8446 section 7.5): a proof bound to it cannot be used in another connection.
    public var binding: [UInt8]
    /// The application protocol chosen (ALPN), if any.
    public var applicationProtocol: String?

    public init(peer: NodeID, binding: [UInt8], applicationProtocol: String? = nil) {
        self.peer = peer
        self.binding = binding
        self.applicationProtocol = applicationProtocol
    }
}

extension PeerChannel {
    /// Plain links prove nothing.
    public var security: PeerChannelSecurity? { nil }

    public func send(contentsOf frames: [Frame]) async throws {
        for frame in frames { try await send(frame) }
    }
}

/// Accepts inbound links.
public protocol PeerListener: Sendable {
    /// The port actually bound (useful after asking for port 0).
    var port: Int { get }
    /// Each accepted link, once. Finishes when the listener is closed.
    var channels: AsyncStream<any PeerChannel> { get }
    /// Stops accepting; links already handed out stay open.
    func close() async
}

/// Makes links between nodes: TCP today, TLS or QUIC tomorrow.
///
/// ## Implementation requirements
/// - `listen(port:)` binds (0 picks a free port) and returns at once; a port in use throws a
///   `SyncError` with code `.transport` whose message says so.
/// - `connect(to:)` makes one attempt with a bounded timeout and throws on failure. Retrying
///   with backoff is the node's job, so every transport retries the same way.
/// - Handshakes above framing (identity, cluster key) are SyncKit's, not the transport's.
/// - The `TransportConformance` kit in SyncKitTesting checks all of this.
public protocol SyncTransport: Sendable {
    func listen(port: Int) async throws -> any PeerListener
    func connect(to endpoint: PeerEndpoint) async throws -> any PeerChannel
}
