import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import ProtocolBEP
import SyncKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// SyncKit's links over TCP: length-prefixed frames on SwiftNIO async channels.
///
/// - Listening binds `configuration.bindHost` (127.0.0.1 by default; `0.0.0.0` to accept from
///   the LAN) with SO_REUSEADDR, so a restarted node gets its port back while old connections sit
///   in TIME_WAIT. A port that another socket listens on throws `SyncError(.transport)`.
/// - Connecting makes one attempt, bounded by `configuration.connectTimeout`; retrying is the
///   node's job.
/// - Every connection has TCP_NODELAY (frames are small and latency matters more than packet
///   count: index updates and block requests are request/response) and SO_KEEPALIVE (the node
///   pings, but keepalive also reaps connections whose peer vanished while nobody wrote).
/// - Framing is `u32 length | type | payload`, decoded by SyncKit's `FrameDecoder`; a declared
///   length above `configuration.maximumFrameSize` ends the connection with
///   `WireError(.frameTooLarge)` before it is buffered.
/// - Over TLS, the framing is the one ALPN chose: SyncKit's for `synckit/6`, Syncthing's BEP
///   for `bep/1.0` (offer it in `TLSSettings.applicationProtocols`), where each frame is one BEP
///   Hello or message (`BEPFrames`) and the limit is BEP's 64 MiB per message.
/// - Backpressure both ways: `send` suspends while NIO's outbound buffer is above its high
///   watermark, and a consumer that stops reading `inbound` stops NIO reading the socket, which
///   closes the TCP window and so suspends the peer's `send`.
///
/// The transport holds no resources itself; listeners and channels do, until closed.
public struct TCPTransport: SyncTransport {
    /// How the transport binds and connects.
    public struct Configuration: Sendable {
        /// The address listeners bind: "127.0.0.1" (the default: tests, single host) or
        /// "0.0.0.0" / "::" to accept connections from other hosts.
        public var bindHost: String
        /// The largest frame (type byte plus payload) sent or accepted. A peer that announces a
        /// larger one loses its connection; `send` refuses one.
        public var maximumFrameSize: Int
        /// How long one connection attempt may take.
        public var connectTimeout: Duration
        /// TLS 1.3 with this node's certificate on every connection, or nil for plain TCP
        /// (benchmarks and debugging only: `--insecure-plaintext`).
        public var tls: TLSSettings?

        /// Creates a configuration; the defaults are loopback, SyncKit's frame limit, 5 s and
        /// plain TCP.
        public init(
            bindHost: String = "127.0.0.1",
            maximumFrameSize: Int = Frame.defaultMaximumSize,
            connectTimeout: Duration = .seconds(5),
            tls: TLSSettings? = nil
        ) {
            self.bindHost = bindHost
            self.maximumFrameSize = maximumFrameSize
            self.connectTimeout = connectTimeout
            self.tls = tls
        }
    }

    /// The configuration in force.
    public let configuration: Configuration
    private let eventLoopGroup: MultiThreadedEventLoopGroup
    private let logger: Logger

    /// NIO's outbound buffer bounds per connection: `send` suspends above `high` until the
    /// socket has drained the buffer below `low`. Large enough to keep a LAN link busy, small
    /// enough that many idle peers cost little.
    static let writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 64 << 10, high: 256 << 10)

    /// The largest BEP message body accepted or sent: a 16 MiB block (Syncthing's largest) with
    /// room to spare, well under Syncthing's own 500 MB.
    static let maximumBEPMessageLength = 64 << 20

    /// How many decoded frames NIO keeps ahead of the consumer of `inbound` before it stops
    /// reading the socket.
    static let inboundBackPressure = NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark(
        lowWatermark: 2,
        highWatermark: 8
    )

    /// Creates a transport.
    /// - Parameters:
    ///   - configuration: bind host, frame limit, connect timeout.
    ///   - eventLoopGroup: the NIO threads to run on; one group is shared by every listener and
    ///     connection (the process-wide singleton by default).
    ///   - logger: where connection-level events go (at debug level).
    public init(
        configuration: Configuration = Configuration(),
        eventLoopGroup: MultiThreadedEventLoopGroup = .singleton,
        logger: Logger = Logger(label: "synckit.transport.tcp")
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// Binds `configuration.bindHost:port` (0 picks a free port) and starts accepting.
    /// Throws `SyncError(.transport, "port N is already in use")` when the port is taken.
    public func listen(port: Int) async throws -> any PeerListener {
        let maximumFrameSize = configuration.maximumFrameSize
        let tls = configuration.tls
        let server: NIOAsyncChannel<EventLoopFuture<ReadyConnection>, Never>
        do {
            server = try await ServerBootstrap(group: eventLoopGroup)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.backlog, value: 128)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.socketOption(.so_keepalive), value: 1)
                .childChannelOption(.writeBufferWaterMark, value: Self.writeBufferWaterMark)
                .bind(host: configuration.bindHost, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try Self.prepare(channel, tls: tls, server: true, maximumFrameSize: maximumFrameSize)
                    }
                }
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            throw SyncError(.transport, "port \(port) is already in use", underlying: error)
        } catch {
            throw SyncError(.transport, "cannot listen on \(configuration.bindHost):\(port)", underlying: error)
        }
        let boundPort = server.channel.localAddress?.port ?? port
        var logger = logger
        logger[metadataKey: "transport.port"] = "\(boundPort)"
        logger.debug("listening", metadata: ["transport.host": "\(configuration.bindHost)"])
        return TCPListener(server: server, port: boundPort, maximumFrameSize: maximumFrameSize, logger: logger)
    }

    /// Opens a connection to `endpoint` in one attempt of at most `configuration.connectTimeout`.
    /// Throws `SyncError(.transport)` saying why when it fails (refused, unreachable, timed out,
    /// name not resolved).
    public func connect(to endpoint: PeerEndpoint) async throws -> any PeerChannel {
        let maximumFrameSize = configuration.maximumFrameSize
        let tls = configuration.tls
        let connection: ReadyConnection
        do {
            connection = try await ClientBootstrap(group: eventLoopGroup)
                .connectTimeout(TimeAmount(configuration.connectTimeout))
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelOption(.socketOption(.so_keepalive), value: 1)
                .channelOption(.writeBufferWaterMark, value: Self.writeBufferWaterMark)
                .connect(host: endpoint.host, port: endpoint.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try Self.prepare(channel, tls: tls, server: false, maximumFrameSize: maximumFrameSize)
                    }
                }
                .get()
        } catch ChannelError.connectTimeout(let limit) {
            throw SyncError(.transport, "connecting to \(endpoint) timed out after \(limit)")
        } catch {
            throw SyncError(.transport, "cannot connect to \(endpoint)", underlying: error)
        }
        logger.debug("connected", metadata: ["peer.endpoint": "\(endpoint)"])
        return await TCPPeerChannel.start(connection, maximumFrameSize: maximumFrameSize, logger: logger)
    }

    /// A connection once its pipeline is ready (after the TLS handshake, with TLS): the async
    /// channel of frames, and what the handshake proved.
    ///
    /// A class with a deinit because a ready connection can be dropped unused: the listener
    /// closes while a handshake is finishing, and the accepted future completes after the accept
    /// loop stopped. An `NIOAsyncChannel` must end inside `executeThenClose` (its writer traps in
    /// debug builds when it is deinited unfinished, and the socket would stay open), so one that
    /// nobody took is closed that way here.
    final class ReadyConnection: Sendable {
        let security: PeerChannelSecurity?
        private let state: Locked<NIOAsyncChannel<Frame, Frame>?>

        init(channel: NIOAsyncChannel<Frame, Frame>, security: PeerChannelSecurity? = nil) {
            self.security = security
            state = Locked(channel)
        }

        /// The channel, once: whoever takes it runs `executeThenClose`.
        func take() -> NIOAsyncChannel<Frame, Frame>? {
            state.withLock { channel in
                defer { channel = nil }
                return channel
            }
        }

        deinit {
            guard let unused = take() else { return }
            Task { try? await unused.executeThenClose { _, _ in } }
        }
    }

    /// Sets up a new connection: with TLS, the handshake first (bounded by its timeout), then the
    /// framing; the future completes once frames can flow. Runs on the channel's event loop.
    static func prepare(_ channel: any Channel, tls: TLSSettings?, server: Bool, maximumFrameSize: Int) throws -> EventLoopFuture<ReadyConnection> {
        guard let tls else {
            return channel.eventLoop.makeSucceededFuture(ReadyConnection(channel: try configureConnection(channel, maximumFrameSize: maximumFrameSize)))
        }
        let keyLog = KeyLog()
        let context = try NIOSSLContext(configuration: tls.configuration(server: server, keyLog: keyLog))
        let handler: NIOSSLHandler = server
            ? NIOSSLServerHandler(context: context, customVerificationCallback: acceptSelfSigned)
            : try NIOSSLClientHandler(context: context, serverHostname: nil, customVerificationCallback: acceptSelfSigned)
        let negotiation = NIOTypedApplicationProtocolNegotiationHandler<ReadyConnection> { result, channel in
            channel.eventLoop.makeCompletedFuture {
                let ssl = try channel.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
                guard let certificate = ssl.peerCertificate, let binding = keyLog.exporter(label: TLSSettings.exporterLabel) else {
                    throw SyncError(.transport, "the TLS handshake ended without the peer's certificate")
                }
                let negotiated: String? = if case .negotiated(let name) = result { name } else { nil }
                let security = PeerChannelSecurity(
                    peer: NodeID(certificateDER: try certificate.toDERBytes()), binding: binding, applicationProtocol: negotiated)
                let framed = try configureConnection(channel, maximumFrameSize: maximumFrameSize, applicationProtocol: negotiated)
                return ReadyConnection(channel: framed, security: security)
            }
        }
        let errors = FirstError()
        let pipeline = channel.pipeline.syncOperations
        try pipeline.addHandler(handler)
        try pipeline.addHandler(negotiation)
        try pipeline.addHandler(errors)
        // NIOSSL has no handshake timeout of its own.
        let timeout = channel.eventLoop.scheduleTask(in: TimeAmount(tls.handshakeTimeout)) { channel.close(promise: nil) }
        return negotiation.protocolNegotiationResult
            .flatMapErrorThrowing { error in throw errors.error ?? error }
            .always { _ in timeout.cancel() }
    }

    /// Adds the framing handlers to a new connection's pipeline and wraps it in an
    /// `NIOAsyncChannel` of frames. Runs on the channel's event loop.
    ///
    /// The framing is the one ALPN chose: Syncthing's BEP for `bep/1.0` (`BEPFrames`), SyncKit's
    /// own otherwise (plain TCP has no ALPN and is always SyncKit's).
    ///
    /// Order matters: inbound bytes go through the decoding handler into the async channel;
    /// frames written to the async channel go back through the encoding handler to the socket.
    static func configureConnection(
        _ channel: any Channel,
        maximumFrameSize: Int,
        applicationProtocol: String? = nil
    ) throws -> NIOAsyncChannel<Frame, Frame> {
        let pipeline = channel.pipeline.syncOperations
        if applicationProtocol == BEPFrames.applicationProtocol {
            try pipeline.addHandler(BEPFrameEncodingHandler())
            try pipeline.addHandler(BEPFrameDecodingHandler(maximumMessageLength: maximumBEPMessageLength))
        } else {
            try pipeline.addHandler(FrameEncodingHandler())
            try pipeline.addHandler(FrameDecodingHandler(maximumFrameSize: maximumFrameSize))
        }
        return try NIOAsyncChannel(
            wrappingChannelSynchronously: channel,
            configuration: .init(
                backPressureStrategy: inboundBackPressure,
                isOutboundHalfClosureEnabled: false,
                inboundType: Frame.self,
                outboundType: Frame.self
            )
        )
    }
}

/// Accepts connections on one bound port and hands each out as a `PeerChannel`.
///
/// The accept loop runs in its own task inside the server channel's `executeThenClose`. Accepted
/// connections get tasks of their own (not children of the loop), because the protocol wants
/// them to outlive the listener.
final class TCPListener: PeerListener {
    let port: Int
    let channels: AsyncStream<any PeerChannel>
    private let serverChannel: any Channel
    private let acceptLoop: Task<Void, Never>

    init(
        server: NIOAsyncChannel<EventLoopFuture<TCPTransport.ReadyConnection>, Never>,
        port: Int,
        maximumFrameSize: Int,
        logger: Logger
    ) {
        self.port = port
        serverChannel = server.channel
        // Unbounded: accepted connections are few and the node consumes them at once; dropping
        // one would leak its socket.
        let (channels, continuation) = AsyncStream.makeStream(of: (any PeerChannel).self)
        self.channels = channels
        acceptLoop = Task {
            do {
                try await server.executeThenClose { inbound in
                    for try await ready in inbound {
                        // Each handshake runs on its own: a slow or hostile one must not hold up
                        // the connections behind it.
                        Task {
                            let connection: TCPTransport.ReadyConnection
                            do { connection = try await ready.get() } catch {
                                logger.info("a connection failed its TLS handshake", metadata: ["error": "\(error)"])
                                return
                            }
                            let peer = await TCPPeerChannel.start(connection, maximumFrameSize: maximumFrameSize, logger: logger)
                            logger.debug("accepted", metadata: ["peer.address": "\(peer.remoteDescription)"])
                            if case .terminated = continuation.yield(peer) {
                                // Nobody takes connections any more: do not leave this one open.
                                await peer.close()
                            }
                        }
                    }
                }
            } catch {
                logger.debug("listener stopped", metadata: ["error": "\(error)"])
            }
            continuation.finish()
        }
    }

    func close() async {
        try? await serverChannel.close()
        await acceptLoop.value
    }
}

/// One TCP connection as a `PeerChannel`.
///
/// A reader task runs the connection inside `NIOAsyncChannel.executeThenClose` (which closes the
/// socket whatever happens) and moves decoded frames into a small bounded queue that `inbound`
/// pulls from. `send` writes through the async channel's outbound writer, which suspends while
/// NIO's outbound buffer is above its high watermark.
final class TCPPeerChannel: PeerChannel {
    let remoteDescription: String
    let inbound: AsyncThrowingStream<Frame, any Error>
    private let channel: any Channel
    private let writer: NIOAsyncChannelOutboundWriter<Frame>
    private let queue: BoundedQueue<Frame>
    private let maximumFrameSize: Int
    /// True once either side closed: `send` then throws rather than writing into a dead socket.
    private let closed: Locked<Bool>
    /// What the TLS handshake proved (nil over plain TCP).
    let security: PeerChannelSecurity?
    /// True when ALPN chose Syncthing's BEP: frames are BEP messages (`BEPFrames`).
    private let isBEP: Bool

    private init(
        remoteDescription: String,
        channel: any Channel,
        writer: NIOAsyncChannelOutboundWriter<Frame>,
        queue: BoundedQueue<Frame>,
        closed: Locked<Bool>,
        maximumFrameSize: Int,
        security: PeerChannelSecurity?
    ) {
        self.security = security
        isBEP = security?.applicationProtocol == BEPFrames.applicationProtocol
        self.remoteDescription = remoteDescription
        self.channel = channel
        self.writer = writer
        self.queue = queue
        self.closed = closed
        self.maximumFrameSize = maximumFrameSize
        // Pull-based, so the queue (and behind it NIO and TCP) bounds what is buffered.
        inbound = AsyncThrowingStream(unfolding: { try await queue.pop() })
    }

    /// Starts the reader task of `connection` and returns the channel once the task has handed
    /// over the outbound writer (which exists only inside `executeThenClose`).
    static func start(
        _ ready: TCPTransport.ReadyConnection,
        maximumFrameSize: Int,
        logger: Logger
    ) async -> TCPPeerChannel {
        // Taken once, right here (a ReadyConnection is started at most once).
        let connection = ready.take()!
        let remote = describe(connection.channel.remoteAddress)
        // A few frames: NIO keeps more behind it (`inboundBackPressure`), and the socket more.
        let queue = BoundedQueue<Frame>(maxCount: 4, maxCost: 1 << 20)
        let closed = Locked(false)
        let writer = await withCheckedContinuation { (handOver: CheckedContinuation<NIOAsyncChannelOutboundWriter<Frame>, Never>) in
            Task {
                let closedByPeer = SyncError(.transport, "the connection to \(remote) is closed")
                do {
                    try await connection.executeThenClose { frames, outbound in
                        handOver.resume(returning: outbound)
                        for try await frame in frames {
                            try await queue.push(frame, cost: frame.wireSize)
                        }
                    }
                    // The peer closed (EOF). Mark closed before `inbound` ends, so a consumer that
                    // sees the end and then sends gets an error, not a write into the void.
                    closed.withLock { $0 = true }
                    queue.finish(sendError: closedByPeer)
                } catch {
                    closed.withLock { $0 = true }
                    logger.debug("connection ended", metadata: ["peer.address": "\(remote)", "error": "\(error)"])
                    queue.finish(endError: inboundError(error, remote: remote), sendError: closedByPeer)
                }
            }
        }
        return TCPPeerChannel(
            remoteDescription: remote,
            channel: connection.channel,
            writer: writer,
            queue: queue,
            closed: closed,
            // A BEP link's frames are BEP messages, with BEP's limit.
            maximumFrameSize: ready.security?.applicationProtocol == BEPFrames.applicationProtocol
                ? TCPTransport.maximumBEPMessageLength : maximumFrameSize,
            security: ready.security
        )
    }

    func send(_ frame: Frame) async throws {
        try await send(contentsOf: [frame])
    }

    func send(contentsOf frames: [Frame]) async throws {
        for frame in frames where 1 + frame.payload.readableBytes > maximumFrameSize {
            throw WireError(.frameTooLarge, "a frame of \(1 + frame.payload.readableBytes) bytes is over the limit of \(maximumFrameSize)")
        }
        // A BEP link writes BEP messages only; what its encoder would refuse is refused here,
        // where the caller hears of it.
        if isBEP { for frame in frames { try BEPFrames.check(frame) } }
        guard !closed.withLock({ $0 }) else {
            throw SyncError(.transport, "the connection to \(remoteDescription) is closed")
        }
        do {
            // One yield: NIO writes them all and flushes once.
            try await writer.write(contentsOf: frames)
        } catch {
            throw SyncError(.transport, "sending to \(remoteDescription) failed", underlying: error)
        }
    }

    func close() async {
        closed.withLock { $0 = true }
        // Our inbound ends now; the reader task, if it is waiting to queue a frame, stops.
        queue.terminate(sendError: SyncError(.transport, "the connection to \(remoteDescription) is closed"))
        try? await channel.close()
        try? await channel.closeFuture.get()
    }

    /// What `inbound` finishes with when the connection failed: the `WireError` from framing as
    /// is (the peer sent something wrong), anything else as a `.transport` error.
    private static func inboundError(_ error: any Error, remote: String) -> any Error {
        if error is WireError || error is SyncError { return error }
        if let io = error as? IOError, io.errnoCode == ECONNRESET {
            return SyncError(.transport, "the connection to \(remote) was reset", underlying: error)
        }
        return SyncError(.transport, "the connection to \(remote) failed", underlying: error)
    }

    /// `host:port` (IPv6 in brackets) for logs.
    private static func describe(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress, let port = address.port else {
            return address.map { "\($0)" } ?? "unknown peer"
        }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
