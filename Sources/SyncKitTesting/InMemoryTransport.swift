import NIOCore
import SyncKit

/// A fake network that links `InMemoryTransport`s in one process, for tests that run whole
/// clusters without sockets.
///
/// Every transport made by `transport(name:)` shares one port space: `listen(port: 0)` hands out
/// a fresh fake port and `connect(to:)` finds the listener by port alone (the host is ignored).
/// Links carry `Frame`s natively (no length prefix) through bounded queues, so they apply
/// backpressure like a socket does. The network also injects faults (`partition`/`heal`) and
/// counts traffic (`bytesSent(from:)`) so tests can assert on both.
///
/// ```swift
/// let net = InMemoryNetwork()
/// let a = net.transport(name: "a"), b = net.transport(name: "b")
/// let listener = try await a.listen(port: 0)
/// let channel = try await b.connect(to: PeerEndpoint(host: "memory", port: listener.port))
/// net.partition("a", "b")   // closes the link; connects between a and b now fail
/// ```
public final class InMemoryNetwork: Sendable {
    /// The largest frame (type byte plus payload) a link carries; larger sends throw.
    public let maximumFrameSize: Int
    /// How many frames one direction of a link queues before `send` suspends.
    public let bufferedFrames: Int
    /// How many bytes (`Frame.wireSize`) one direction of a link queues before `send` suspends.
    public let bufferedBytes: Int

    private struct PairKey: Hashable {
        var first: String
        var second: String
        init(_ a: String, _ b: String) {
            (first, second) = a <= b ? (a, b) : (b, a)
        }
    }

    private struct State {
        var nextPort = 20_000
        var nextAnonymous = 0
        var nextLinkID: UInt64 = 0
        var listeners: [Int: (owner: String, listener: InMemoryListener)] = [:]
        var links: [UInt64: InMemoryLink] = [:]
        var partitions: Set<PairKey> = []
        var bytesSent: [String: Int] = [:]
    }

    private let state = Locked(State())

    /// Creates an empty network.
    /// - Parameters:
    ///   - maximumFrameSize: the frame size limit of every link (the default is SyncKit's).
    ///   - bufferedFrames: per direction, frames queued before `send` suspends.
    ///   - bufferedBytes: per direction, bytes queued before `send` suspends (a single frame
    ///     larger than this still passes when the queue is empty).
    public init(
        maximumFrameSize: Int = Frame.defaultMaximumSize,
        bufferedFrames: Int = 64,
        bufferedBytes: Int = 8 << 20
    ) {
        self.maximumFrameSize = maximumFrameSize
        self.bufferedFrames = bufferedFrames
        self.bufferedBytes = bufferedBytes
    }

    /// A transport attached to this network. `name` identifies it for `partition`, `heal` and
    /// `bytesSent`; without one it is named `node-N`. Transports that share a name share
    /// partitions and counters, like two processes on one host.
    public func transport(name: String? = nil) -> InMemoryTransport {
        let name =
            name
            ?? state.withLock { state in
                state.nextAnonymous += 1
                return "node-\(state.nextAnonymous)"
            }
        return InMemoryTransport(network: self, name: name)
    }

    /// Cuts the link between the transports named `a` and `b`: every open channel between them
    /// ends (both sides' `inbound` finish with a `.transport` error, sends throw) and new connects
    /// between them fail until `heal(_:_:)`.
    public func partition(_ a: String, _ b: String) {
        let cut = state.withLock { state -> [InMemoryLink] in
            state.partitions.insert(PairKey(a, b))
            let cut = state.links.values.filter { PairKey($0.ends.0, $0.ends.1) == PairKey(a, b) }
            for link in cut { state.links[link.id] = nil }
            return cut
        }
        for link in cut {
            link.cut(SyncError(.transport, "connection reset: \(a) and \(b) are partitioned"))
        }
    }

    /// Lets `a` and `b` connect to each other again. Links cut by `partition` stay closed.
    public func heal(_ a: String, _ b: String) {
        _ = state.withLock { $0.partitions.remove(PairKey(a, b)) }
    }

    /// Whether `partition(a, b)` is in force.
    public func isPartitioned(_ a: String, _ b: String) -> Bool {
        state.withLock { $0.partitions.contains(PairKey(a, b)) }
    }

    /// Total `Frame.wireSize` of the frames the transport named `name` has sent (accepted by
    /// `send`) on all its channels, since the network was made.
    public func bytesSent(from name: String) -> Int {
        state.withLock { $0.bytesSent[name, default: 0] }
    }

    /// Number of links open now (both ends not yet closed).
    public var openLinkCount: Int {
        state.withLock { $0.links.count }
    }

    // MARK: - Used by the transport, listener and channels

    func bind(owner: String, port requested: Int) throws -> InMemoryListener {
        try state.withLock { state in
            var port = requested
            if port == 0 {
                repeat { state.nextPort += 1 } while state.listeners[state.nextPort] != nil
                port = state.nextPort
            } else if state.listeners[port] != nil {
                throw SyncError(.transport, "port \(port) is already in use")
            }
            let listener = InMemoryListener(network: self, port: port)
            state.listeners[port] = (owner, listener)
            return listener
        }
    }

    func unbind(_ listener: InMemoryListener) {
        state.withLock { state in
            if state.listeners[listener.port]?.listener === listener { state.listeners[listener.port] = nil }
        }
    }

    func connect(from client: String, port: Int) throws -> any PeerChannel {
        let (link, listener) = try state.withLock { state -> (InMemoryLink, InMemoryListener) in
            guard let entry = state.listeners[port] else {
                throw SyncError(.transport, "connection refused: nothing listens on in-memory port \(port)")
            }
            let (owner, listener) = (entry.owner, entry.listener)
            if state.partitions.contains(PairKey(client, owner)) {
                throw SyncError(.transport, "cannot connect to in-memory port \(port): \(client) and \(owner) are partitioned")
            }
            state.nextLinkID += 1
            let link = InMemoryLink(id: state.nextLinkID, network: self, ends: (client, owner), port: port)
            state.links[link.id] = link
            return (link, listener)
        }
        guard listener.deliver(link.channel(side: 1)) else {
            link.cut(SyncError(.transport, "connection refused: in-memory port \(port) closed"))
            forget(link)
            throw SyncError(.transport, "connection refused: in-memory port \(port) is closed")
        }
        return link.channel(side: 0)
    }

    func forget(_ link: InMemoryLink) {
        _ = state.withLock { $0.links.removeValue(forKey: link.id) }
    }

    func count(bytes: Int, from name: String) {
        state.withLock { $0.bytesSent[name, default: 0] += bytes }
    }
}

/// A `SyncTransport` over an `InMemoryNetwork`: links between nodes of one process, with the
/// same ordering, backpressure and close semantics as a real transport, and no sockets.
/// Make it with `InMemoryNetwork.transport(name:)`.
public struct InMemoryTransport: SyncTransport {
    /// The network this transport is attached to.
    public let network: InMemoryNetwork
    /// The name the network knows this transport by (for partitions and byte counts).
    public let name: String

    init(network: InMemoryNetwork, name: String) {
        self.network = network
        self.name = name
    }

    /// Listens on a fake port of the network; 0 picks a free one. A port in use throws
    /// `SyncError(.transport)`.
    public func listen(port: Int) async throws -> any PeerListener {
        try network.bind(owner: name, port: port)
    }

    /// Connects to whatever listens on `endpoint.port` (the host is ignored). Throws
    /// `SyncError(.transport)` when nothing listens there or the two nodes are partitioned.
    public func connect(to endpoint: PeerEndpoint) async throws -> any PeerChannel {
        try network.connect(from: name, port: endpoint.port)
    }
}

/// The listening side of an in-memory port.
final class InMemoryListener: PeerListener {
    let port: Int
    let channels: AsyncStream<any PeerChannel>
    private let continuation: AsyncStream<any PeerChannel>.Continuation
    private let network: InMemoryNetwork

    init(network: InMemoryNetwork, port: Int) {
        self.network = network
        self.port = port
        (channels, continuation) = AsyncStream.makeStream(of: (any PeerChannel).self)
    }

    /// Hands an accepted channel to the listener's consumer; false when the listener is closed.
    func deliver(_ channel: any PeerChannel) -> Bool {
        if case .terminated = continuation.yield(channel) { return false }
        return true
    }

    func close() async {
        network.unbind(self)
        continuation.finish()
    }
}

/// One connection: two bounded queues, one per direction, and the names of the two ends.
final class InMemoryLink: Sendable {
    let id: UInt64
    let ends: (String, String)
    let port: Int
    /// `queues[0]` carries frames from end 0 (the connecting side) to end 1; `queues[1]` back.
    let queues: [BoundedQueue<Frame>]
    let network: InMemoryNetwork
    private let closedEnds = Locked<Set<Int>>([])

    init(id: UInt64, network: InMemoryNetwork, ends: (String, String), port: Int) {
        self.id = id
        self.network = network
        self.ends = ends
        self.port = port
        queues = (0..<2).map { _ in
            BoundedQueue<Frame>(maxCount: network.bufferedFrames, maxCost: network.bufferedBytes)
        }
    }

    func channel(side: Int) -> InMemoryChannel {
        InMemoryChannel(link: self, side: side)
    }

    /// Ends both directions at once, as a reset does.
    func cut(_ error: SyncError) {
        for queue in queues { queue.terminate(endError: error, sendError: error) }
    }

    /// Records that `side` closed; the network forgets the link once both have.
    func closed(side: Int) {
        let both = closedEnds.withLock { closed -> Bool in
            closed.insert(side)
            return closed.count == 2
        }
        if both { network.forget(self) }
    }
}

/// One end of an in-memory link.
final class InMemoryChannel: PeerChannel {
    let remoteDescription: String
    let inbound: AsyncThrowingStream<Frame, any Error>
    private let link: InMemoryLink
    private let side: Int

    init(link: InMemoryLink, side: Int) {
        self.link = link
        self.side = side
        let incoming = link.queues[1 - side]
        // Pull-based: each `next()` takes one frame from the queue, which is what lets a reader
        // that stops reading hold its peer's `send` back.
        inbound = AsyncThrowingStream(unfolding: { try await incoming.pop() })
        let remoteName = side == 0 ? link.ends.1 : link.ends.0
        remoteDescription = "memory:\(remoteName)"
    }

    private var ownName: String { side == 0 ? link.ends.0 : link.ends.1 }

    func send(_ frame: Frame) async throws {
        let size = 1 + frame.payload.readableBytes
        guard size <= link.network.maximumFrameSize else {
            throw WireError(.frameTooLarge, "a frame of \(size) bytes is over the limit of \(link.network.maximumFrameSize)")
        }
        try await link.queues[side].push(frame, cost: frame.wireSize)
        link.network.count(bytes: frame.wireSize, from: ownName)
    }

    func close() async {
        // What was already sent still reaches the peer, then its inbound ends. Our own inbound
        // ends now, and the peer's sends to us throw from here on.
        link.queues[side].finish(sendError: SyncError(.transport, "send on a closed channel to \(remoteDescription)"))
        link.queues[1 - side].terminate(sendError: SyncError(.transport, "the peer \(ownName) closed the channel"))
        link.closed(side: side)
    }
}
