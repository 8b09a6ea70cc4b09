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
    var inbound: AsyncThrowingStream<Frame, any Error> { get }
    func send(_ frame: Frame) async throws
    /// Sends several frames in order, as one write where the transport can (one system call
    /// and one wake-up of its I/O thread for a whole batch of small block requests or
    /// responses). The default sends them one by one.
    func send(contentsOf frames: [Frame]) async throws
    func close() async
}

extension PeerChannel {
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
