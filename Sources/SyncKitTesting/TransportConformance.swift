import NIOCore
import SyncKit

/// The conformance kit for `SyncTransport`: checks, against a real instance, every requirement
/// that `SyncTransport`, `PeerListener` and `PeerChannel` document. Every transport's tests run
/// it (like swift-configuration's `ProviderCompatTest`):
///
/// ```swift
/// @Test func conformance() async throws {
///     try await TransportConformance(
///         makeTransport: { TCPTransport() },
///         endpointFor: { PeerEndpoint(host: "127.0.0.1", port: $0) }
///     ).run()
/// }
/// ```
///
/// Each check makes its own transports, listener and links, and closes them when done, so the
/// checks can also be called one by one. A failed requirement throws `ConformanceFailure`
/// naming the check. The kit does not use a test framework, so it works from any.
public struct TransportConformance: Sendable {
    /// Tunables of the kit; the defaults suit loopback TCP and in-memory links.
    public struct Options: Sendable {
        /// The transport's maximum frame size (type byte plus payload), when it has one the kit
        /// may test: a frame of exactly that size must pass and one byte more must be refused.
        public var maximumFrameSize: Int?
        /// How long any single step (connect, accept, reading a batch) may take.
        public var timeout: Duration
        /// How many bytes the backpressure check tries to push at a peer that does not read.
        public var backpressureTotalBytes: Int
        /// How many of those bytes may be accepted by `send` while the peer does not read:
        /// everything the transport buffers (its queues, socket buffers) must fit below this.
        public var backpressureBufferLimit: Int
        /// The payload size of the large-frame check.
        public var largeFramePayloadSize: Int

        /// Creates options; see the properties for what each means.
        public init(
            maximumFrameSize: Int? = nil,
            timeout: Duration = .seconds(10),
            backpressureTotalBytes: Int = 64 << 20,
            backpressureBufferLimit: Int = 32 << 20,
            largeFramePayloadSize: Int = 1 << 20
        ) {
            self.maximumFrameSize = maximumFrameSize
            self.timeout = timeout
            self.backpressureTotalBytes = backpressureTotalBytes
            self.backpressureBufferLimit = backpressureBufferLimit
            self.largeFramePayloadSize = largeFramePayloadSize
        }
    }

    private let makeTransport: @Sendable () async throws -> any SyncTransport
    private let endpointFor: @Sendable (Int) -> PeerEndpoint
    private let options: Options

    /// Creates the kit.
    /// - Parameters:
    ///   - makeTransport: makes a transport to test; called once or twice per check (a listening
    ///     and a connecting side). Both must be able to reach each other (for in-memory
    ///     transports: the same network).
    ///   - endpointFor: the endpoint at which a listener on the given port is reached (for TCP:
    ///     `127.0.0.1:port`).
    ///   - options: tunables; the defaults suit most transports.
    public init(
        makeTransport: @escaping @Sendable () async throws -> any SyncTransport,
        endpointFor: @escaping @Sendable (Int) -> PeerEndpoint,
        options: Options = Options()
    ) {
        self.makeTransport = makeTransport
        self.endpointFor = endpointFor
        self.options = options
    }

    /// Runs every check, in order, stopping at the first failure.
    public func run() async throws {
        try await checkListenOnPortZeroReportsPort()
        try await checkPortInUseThrows()
        try await checkConnectToUnusedPortThrows()
        try await checkFramesArriveInOrderBothWays()
        try await checkBurstOfSmallFrames()
        try await checkLargeFrameArrivesIntact()
        try await checkMaximumFrameSize()
        try await checkCloseIsIdempotentAndFinishesBothSides()
        try await checkSendAfterCloseThrows()
        try await checkListenerCloseFinishesChannelsAndKeepsLinks()
        try await checkBackpressure()
    }

    // MARK: - Listening and connecting

    /// `listen(port: 0)` binds a free port and reports it (nonzero); two such listeners get
    /// different ports.
    public func checkListenOnPortZeroReportsPort() async throws {
        let check = "listenOnPortZeroReportsPort"
        let transport = try await makeTransport()
        let first = try await transport.listen(port: 0)
        let second = try await transport.listen(port: 0)
        defer { Task { await first.close(); await second.close() } }
        guard first.port > 0, second.port > 0 else {
            throw ConformanceFailure(check: check, "listen(port: 0) reported port \(first.port) and \(second.port); expected the bound ports")
        }
        guard first.port != second.port else {
            throw ConformanceFailure(check: check, "two listeners on port 0 both reported port \(first.port)")
        }
    }

    /// Listening on a port that is in use throws `SyncError` with code `.transport` whose
    /// message says the port is in use.
    public func checkPortInUseThrows() async throws {
        let check = "portInUseThrows"
        let transport = try await makeTransport()
        let listener = try await transport.listen(port: 0)
        let other = try await makeTransport()
        do {
            let second = try await other.listen(port: listener.port)
            await second.close()
            await listener.close()
            throw ConformanceFailure(check: check, "a second listen on port \(listener.port) succeeded")
        } catch let error as SyncError {
            await listener.close()
            guard error.code == .transport else {
                throw ConformanceFailure(check: check, "expected code .transport, got \(error.code)", underlying: error)
            }
            guard error.message.lowercased().contains("in use") else {
                throw ConformanceFailure(check: check, "the message does not say the port is in use: \(error.message)")
            }
        } catch let failure as ConformanceFailure {
            throw failure
        } catch {
            await listener.close()
            throw ConformanceFailure(check: check, "expected a SyncError with code .transport", underlying: error)
        }
    }

    /// Connecting to a port where nothing listens (any more) throws, within the timeout.
    public func checkConnectToUnusedPortThrows() async throws {
        let check = "connectToUnusedPortThrows"
        let server = try await makeTransport()
        let client = try await makeTransport()
        let listener = try await server.listen(port: 0)
        let port = listener.port
        await listener.close()
        let endpoint = endpointFor(port)
        let outcome: Result<any PeerChannel, any Error> = try await withDeadline(options.timeout, check: check, "connect to \(endpoint)") {
            do { return .success(try await client.connect(to: endpoint)) } catch { return .failure(error) }
        }
        if case .success(let channel) = outcome {
            await channel.close()
            throw ConformanceFailure(check: check, "connect to \(endpoint), whose listener was closed, succeeded")
        }
    }

    // MARK: - Frames

    /// Frames arrive in the order sent, in both directions at once, with type and payload intact.
    public func checkFramesArriveInOrderBothWays() async throws {
        let check = "framesArriveInOrderBothWays"
        try await withLink(check: check) { client, server in
            let count = 100
            async let toServer: Void = Self.send(count: count, payloadSize: 100, tag: 1, on: client)
            async let toClient: Void = Self.send(count: count, payloadSize: 100, tag: 2, on: server)
            async let atServer = Self.receive(count, from: server, check: check, timeout: options.timeout)
            async let atClient = Self.receive(count, from: client, check: check, timeout: options.timeout)
            try await toServer
            try await toClient
            try Self.verify(try await atServer, count: count, payloadSize: 100, tag: 1, check: check, side: "server")
            try Self.verify(try await atClient, count: count, payloadSize: 100, tag: 2, check: check, side: "client")
        }
    }

    /// 200 small frames sent back to back (no waiting for the reader) all arrive, in order.
    public func checkBurstOfSmallFrames() async throws {
        let check = "burstOfSmallFrames"
        try await withLink(check: check) { client, server in
            let count = 200
            async let sent: Void = Self.send(count: count, payloadSize: 8, tag: 3, on: client)
            let frames = try await Self.receive(count, from: server, check: check, timeout: options.timeout)
            try await sent
            try Self.verify(frames, count: count, payloadSize: 8, tag: 3, check: check, side: "server")
        }
    }

    /// A large frame (1 MiB payload by default) arrives byte for byte, followed by a small one.
    public func checkLargeFrameArrivesIntact() async throws {
        let check = "largeFrameArrivesIntact"
        try await withLink(check: check) { client, server in
            let big = Self.frame(index: 0, payloadSize: options.largeFramePayloadSize, tag: 4, scrambled: true)
            let small = Self.frame(index: 1, payloadSize: 3, tag: 4)
            async let sent: Void = { try await client.send(big); try await client.send(small) }()
            let frames = try await Self.receive(2, from: server, check: check, timeout: options.timeout)
            try await sent
            guard frames[0] == big else {
                throw ConformanceFailure(check: check, "a \(big.payload.readableBytes)-byte payload arrived altered (\(frames[0].payload.readableBytes) bytes, type \(frames[0].type))")
            }
            guard frames[1] == small else {
                throw ConformanceFailure(check: check, "the frame after the large one arrived altered")
            }
        }
    }

    /// With `Options.maximumFrameSize` set: a frame of exactly that size arrives, and `send`
    /// throws for one a byte larger (the link stays usable). Skipped when the option is nil.
    public func checkMaximumFrameSize() async throws {
        guard let maximum = options.maximumFrameSize else { return }
        let check = "maximumFrameSize"
        try await withLink(check: check) { client, server in
            let tooLarge = Self.frame(index: 0, payloadSize: maximum, tag: 5)
            do {
                try await client.send(tooLarge)
                throw ConformanceFailure(check: check, "send of a frame of \(maximum + 1) bytes (limit \(maximum)) did not throw")
            } catch let failure as ConformanceFailure {
                throw failure
            } catch {
                // Refused, as required.
            }
            let atLimit = Self.frame(index: 1, payloadSize: maximum - 1, tag: 5)
            async let sent: Void = client.send(atLimit)
            let frames = try await Self.receive(1, from: server, check: check, timeout: options.timeout)
            try await sent
            guard frames[0] == atLimit else {
                throw ConformanceFailure(check: check, "a frame of exactly the maximum size (\(maximum) bytes) arrived altered")
            }
        }
    }

    // MARK: - Closing

    /// `close()` may be called twice (and concurrently); afterwards both sides' `inbound` finish,
    /// and once the peer's `inbound` has finished, its `send` throws too.
    public func checkCloseIsIdempotentAndFinishesBothSides() async throws {
        let check = "closeIsIdempotentAndFinishesBothSides"
        try await withLink(check: check) { client, server in
            // Something in flight before the close must not prevent the ends from finishing.
            try await client.send(Self.frame(index: 0, payloadSize: 16, tag: 6))
            try await withDeadline(options.timeout, check: check, "close() twice, concurrently") {
                async let first: Void = client.close()
                async let second: Void = client.close()
                _ = await (first, second)
                await client.close()
            }
            try await Self.drainToEnd(client, check: check, side: "the closing side's", timeout: options.timeout)
            try await Self.drainToEnd(server, check: check, side: "the peer's", timeout: options.timeout)
            do {
                // The peer's inbound has finished; the link is gone for it too.
                try await withDeadline(options.timeout, check: check, "send on a link whose inbound finished") {
                    try await server.send(Self.frame(index: 1, payloadSize: 16, tag: 6))
                }
                throw ConformanceFailure(check: check, "send succeeded on a channel whose inbound had finished because the peer closed")
            } catch let failure as ConformanceFailure {
                throw failure
            } catch {
                // Expected.
            }
        }
    }

    /// `send` throws after `close()`.
    public func checkSendAfterCloseThrows() async throws {
        let check = "sendAfterCloseThrows"
        try await withLink(check: check) { client, _ in
            await client.close()
            do {
                try await withDeadline(options.timeout, check: check, "send after close") {
                    try await client.send(Self.frame(index: 0, payloadSize: 4, tag: 7))
                }
                throw ConformanceFailure(check: check, "send after close() did not throw")
            } catch let failure as ConformanceFailure {
                throw failure
            } catch {
                // Expected.
            }
        }
    }

    /// Closing a listener finishes its `channels` stream, makes connects to its port fail, and
    /// leaves links it already handed out working.
    public func checkListenerCloseFinishesChannelsAndKeepsLinks() async throws {
        let check = "listenerCloseFinishesChannelsAndKeepsLinks"
        let server = try await makeTransport()
        let client = try await makeTransport()
        let listener = try await server.listen(port: 0)
        let endpoint = endpointFor(listener.port)
        let accepted = Locked<(any PeerChannel)?>(nil)
        let acceptLoop = Task {
            for await channel in listener.channels {
                accepted.withLock { $0 = channel }
            }
        }
        let clientEnd = try await withDeadline(options.timeout, check: check, "connect to \(endpoint)") {
            try await client.connect(to: endpoint)
        }
        let serverEnd = try await withDeadline(options.timeout, check: check, "the accepted channel") {
            while true {
                if let channel = accepted.withLock({ $0 }) { return channel }
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        await listener.close()
        try await withDeadline(options.timeout, check: check, "listener.channels to finish after close()") {
            await acceptLoop.value
        }
        defer { Task { await clientEnd.close(); await serverEnd.close() } }
        do {
            let stray = try await withDeadline(options.timeout, check: check, "connect to a closed listener") {
                try await client.connect(to: endpoint)
            }
            await stray.close()
            throw ConformanceFailure(check: check, "connect succeeded after the listener was closed")
        } catch let failure as ConformanceFailure {
            throw failure
        } catch {
            // Expected.
        }
        let frame = Self.frame(index: 0, payloadSize: 32, tag: 8)
        async let sent: Void = clientEnd.send(frame)
        let frames = try await Self.receive(1, from: serverEnd, check: check, timeout: options.timeout)
        try await sent
        guard frames == [frame] else {
            throw ConformanceFailure(check: check, "a link accepted before the listener closed did not carry a frame intact")
        }
    }

    // MARK: - Backpressure

    /// A sender whose peer does not read is held back: of `backpressureTotalBytes` (64 MiB) sent
    /// in 64 KiB frames, `send` completes for at most `backpressureBufferLimit` (32 MiB) while
    /// the peer is not reading. Then the peer reads, and every frame arrives in order.
    public func checkBackpressure() async throws {
        let check = "backpressure"
        try await withLink(check: check) { client, server in
            let payloadSize = 64 << 10
            let count = max(1, options.backpressureTotalBytes / payloadSize)
            let completed = Counter()
            let sender = Task {
                for index in 0..<count {
                    try await client.send(Self.frame(index: index, payloadSize: payloadSize, tag: 9))
                    completed.increment()
                }
            }
            // Watch the sender until it has made no progress for a while (it is held back) or
            // the observation window ends.
            let clock = ContinuousClock()
            let window = clock.now.advanced(by: .seconds(3))
            var last = -1
            var quietRounds = 0
            while clock.now < window, quietRounds < 4, completed.current < count {
                try await Task.sleep(for: .milliseconds(100))
                let now = completed.current
                quietRounds = now == last ? quietRounds + 1 : 0
                last = now
            }
            let acceptedBytes = completed.current * payloadSize
            if completed.current >= count || acceptedBytes > options.backpressureBufferLimit {
                sender.cancel()
                await client.close()
                throw ConformanceFailure(
                    check: check,
                    "send completed for \(acceptedBytes) of \(count * payloadSize) bytes while the peer was not reading "
                        + "(at most \(options.backpressureBufferLimit) allowed): send does not apply backpressure"
                )
            }
            let frames = try await Self.receive(count, from: server, check: check, timeout: options.timeout)
            try await withDeadline(options.timeout, check: check, "the sender to finish once the peer reads") {
                try await sender.value
            }
            try Self.verify(frames, count: count, payloadSize: payloadSize, tag: 9, check: check, side: "server")
        }
    }

    // MARK: - Helpers

    /// Makes a listening and a connecting transport, links them, runs `body` with both ends of
    /// the link (failing the check if it takes longer than three timeouts: a send that never
    /// returns must fail the check, not hang it), and closes everything afterwards.
    private func withLink(
        check: String,
        _ body: @escaping @Sendable (_ client: any PeerChannel, _ server: any PeerChannel) async throws -> Void
    ) async throws {
        let serverTransport = try await makeTransport()
        let clientTransport = try await makeTransport()
        let listener = try await serverTransport.listen(port: 0)
        let endpoint = endpointFor(listener.port)
        let link: (any PeerChannel, any PeerChannel)
        do {
            link = try await withDeadline(options.timeout, check: check, "connect to \(endpoint) and accept") {
                async let accepted: (any PeerChannel)? = {
                    for await channel in listener.channels { return channel }
                    return nil
                }()
                let client = try await clientTransport.connect(to: endpoint)
                guard let server = await accepted else {
                    await client.close()
                    throw ConformanceFailure(check: check, "the listener's channels finished without the connection")
                }
                return (client, server)
            }
        } catch {
            await listener.close()
            throw error
        }
        let (client, server) = link
        guard !client.remoteDescription.isEmpty, !server.remoteDescription.isEmpty else {
            await client.close()
            await server.close()
            await listener.close()
            throw ConformanceFailure(check: check, "remoteDescription is empty")
        }
        do {
            try await withDeadline(options.timeout * 3, check: check, "the check's exchange to complete") {
                try await body(client, server)
            }
        } catch {
            await client.close()
            await server.close()
            await listener.close()
            throw error
        }
        await client.close()
        await server.close()
        await listener.close()
    }

    /// A frame of type `tag` whose payload starts with `index` (u32), so reordering shows. With
    /// `scrambled`, the rest is a pseudo-random pattern that also depends on the index (so
    /// corruption inside the payload shows); otherwise it is one repeated byte (cheap, for the
    /// checks that move tens of megabytes).
    static func frame(index: Int, payloadSize: Int, tag: UInt8, scrambled: Bool = false) -> Frame {
        var payload = ByteBufferAllocator().buffer(capacity: payloadSize)
        if payloadSize >= 4 {
            payload.writeInteger(UInt32(truncatingIfNeeded: index))
        }
        let start = payload.readableBytes
        guard payloadSize > start else { return Frame(type: tag, payload: payload) }
        payload.writeRepeatingByte(UInt8(truncatingIfNeeded: index &* 31 &+ Int(tag)), count: payloadSize - start)
        if scrambled {
            payload.withUnsafeMutableReadableBytes { bytes in
                var x = UInt32(truncatingIfNeeded: index &* 2_654_435_761 &+ 1)
                for i in start..<payloadSize {
                    // xorshift32: bytes that differ per position and per frame.
                    x ^= x << 13
                    x ^= x >> 17
                    x ^= x << 5
                    bytes[i] = UInt8(truncatingIfNeeded: x)
                }
            }
        }
        return Frame(type: tag, payload: payload)
    }

    private static func send(count: Int, payloadSize: Int, tag: UInt8, on channel: any PeerChannel) async throws {
        for index in 0..<count {
            try await channel.send(frame(index: index, payloadSize: payloadSize, tag: tag))
        }
    }

    /// Reads exactly `count` frames (iterating `inbound`, which is done once per channel).
    private static func receive(
        _ count: Int,
        from channel: any PeerChannel,
        check: String,
        timeout: Duration
    ) async throws -> [Frame] {
        try await withDeadline(timeout, check: check, "\(count) frames from \(channel.remoteDescription)") {
            var frames: [Frame] = []
            frames.reserveCapacity(count)
            do {
                for try await frame in channel.inbound {
                    frames.append(frame)
                    if frames.count == count { return frames }
                }
            } catch {
                throw ConformanceFailure(check: check, "inbound failed after \(frames.count) of \(count) frames", underlying: error)
            }
            throw ConformanceFailure(check: check, "inbound finished after \(frames.count) of \(count) frames")
        }
    }

    /// Iterates `inbound` until it finishes (normally or with an error) within the timeout.
    private static func drainToEnd(_ channel: any PeerChannel, check: String, side: String, timeout: Duration) async throws {
        try await withDeadline(timeout, check: check, "\(side) inbound to finish after close()") {
            do {
                for try await _ in channel.inbound {}
            } catch {
                // Finishing with an error is allowed.
            }
        }
    }

    private static func verify(_ frames: [Frame], count: Int, payloadSize: Int, tag: UInt8, check: String, side: String) throws {
        guard frames.count == count else {
            throw ConformanceFailure(check: check, "\(side) received \(frames.count) frames, expected \(count)")
        }
        for (index, received) in frames.enumerated() where received != frame(index: index, payloadSize: payloadSize, tag: tag) {
            let got = received.payload.getInteger(at: received.payload.readerIndex, as: UInt32.self).map(String.init) ?? "?"
            throw ConformanceFailure(
                check: check,
                "\(side): frame \(index) is wrong (type \(received.type), \(received.payload.readableBytes) bytes, index \(got)): frames were reordered or altered"
            )
        }
    }
}
