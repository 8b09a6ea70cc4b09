import NIOCore
import SyncKit
import SyncKitTesting
import Testing

/// Tests of SyncKitTesting itself: the in-memory transport and discovery pass the conformance
/// kits, and the network's fault injection and byte counting work.
@Suite("In-memory transport and discovery")
struct InMemoryTransportTests {
    static func announcement(_ seed: UInt8, port: Int) -> LocalAnnouncement {
        LocalAnnouncement(
            nodeID: NodeID(bytes: [UInt8](repeating: seed, count: 32)),
            name: "node\(seed)",
            clusterTag: "test",
            port: port
        )
    }

    static func frame(_ text: String, type: UInt8 = 1) -> Frame {
        Frame(type: type, payload: ByteBuffer(string: text))
    }

    /// Links `client` to a fresh listener of `server`; returns both ends and the listener.
    static func link(
        _ client: InMemoryTransport,
        _ server: InMemoryTransport
    ) async throws -> (client: any PeerChannel, server: any PeerChannel, listener: any PeerListener) {
        let listener = try await server.listen(port: 0)
        async let accepted: (any PeerChannel)? = {
            for await channel in listener.channels { return channel }
            return nil
        }()
        let clientEnd = try await client.connect(to: PeerEndpoint(host: "anything", port: listener.port))
        let serverEnd = try #require(await accepted)
        return (clientEnd, serverEnd, listener)
    }

    @Test("passes TransportConformance")
    func transportConformance() async throws {
        let net = InMemoryNetwork()
        try await TransportConformance(
            makeTransport: { net.transport() },
            endpointFor: { PeerEndpoint(host: "memory", port: $0) },
            options: .init(maximumFrameSize: net.maximumFrameSize)
        ).run()
        #expect(net.openLinkCount == 0)
    }

    @Test("the transport kit catches a transport without backpressure")
    func kitDetectsMissingBackpressure() async throws {
        // Unbounded queues: send never suspends, which the kit must report.
        let net = InMemoryNetwork(bufferedFrames: .max, bufferedBytes: .max)
        let kit = TransportConformance(
            makeTransport: { net.transport() },
            endpointFor: { PeerEndpoint(host: "memory", port: $0) }
        )
        let failure = await #expect(throws: ConformanceFailure.self) { try await kit.checkBackpressure() }
        #expect(failure?.check == "backpressure")
    }

    @Test("passes DiscoveryConformance")
    func discoveryConformance() async throws {
        try await DiscoveryConformance(makeScenario: {
            let bus = InMemoryDiscoveryBus()
            let me = Self.announcement(1, port: 7001)
            let others = [Self.announcement(2, port: 7002), Self.announcement(3, port: 7003)]
            return DiscoveryScenario(
                subject: bus.discovery(),
                announcement: me,
                expectedPeers: others.map(InMemoryDiscoveryBus.endpoint(for:)),
                selfEndpoints: [InMemoryDiscoveryBus.endpoint(for: me)],
                companions: others.map { .init(discovery: bus.discovery(), announcement: $0) },
                // Stopped once only the two companions remain registered.
                isStopped: { bus.registeredCount == others.count }
            )
        }).run()
    }

    @Test("discovery reports later joiners and leavers, never itself")
    func discoveryJoinAndLeave() async throws {
        let bus = InMemoryDiscoveryBus()
        let a = Self.announcement(1, port: 1), b = Self.announcement(2, port: 2)
        var events = bus.discovery().events(announcing: a).makeAsyncIterator()
        let joiner = Task {
            for await _ in bus.discovery().events(announcing: b) {}
        }
        #expect(await events.next() == .found(InMemoryDiscoveryBus.endpoint(for: b)))
        joiner.cancel()
        #expect(await events.next() == .lost(InMemoryDiscoveryBus.endpoint(for: b)))
        // A second registration with the same node ID is "itself": not reported.
        let twin = Task {
            for await _ in bus.discovery().events(announcing: a) {}
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(bus.registeredCount == 2)
        twin.cancel()
        _ = await twin.value
        #expect(bus.registeredCount == 1)
    }

    @Test("partition closes links and refuses connects until healed")
    func partitionAndHeal() async throws {
        let net = InMemoryNetwork()
        let a = net.transport(name: "a"), b = net.transport(name: "b"), c = net.transport(name: "c")
        let ab = try await Self.link(a, b)
        let cb = try await Self.link(c, b)

        net.partition("a", "b")
        #expect(net.isPartitioned("b", "a"))
        // Both ends of the a-b link end with a transport error; sends throw.
        await #expect(throws: SyncError.self) {
            for try await _ in ab.client.inbound {}
        }
        await #expect(throws: SyncError.self) {
            for try await _ in ab.server.inbound {}
        }
        await #expect(throws: SyncError.self) { try await ab.server.send(Self.frame("x")) }
        // New connects between a and b fail, in either direction.
        let error = await #expect(throws: SyncError.self) {
            _ = try await a.connect(to: PeerEndpoint(host: "b", port: ab.listener.port))
        }
        #expect(error?.code == .transport)
        // Other links are untouched.
        try await cb.client.send(Self.frame("still here"))
        var it = cb.server.inbound.makeAsyncIterator()
        #expect(try await it.next() == Self.frame("still here"))

        net.heal("b", "a")
        #expect(!net.isPartitioned("a", "b"))
        let again = try await a.connect(to: PeerEndpoint(host: "b", port: ab.listener.port))
        try await again.send(Self.frame("hello again"))
        await again.close()
        await ab.listener.close()
        await cb.client.close()
        await cb.server.close()
        await cb.listener.close()
    }

    @Test("bytesSent counts the wire size of every frame a transport sent")
    func byteCounting() async throws {
        let net = InMemoryNetwork()
        let a = net.transport(name: "a"), b = net.transport(name: "b")
        let link = try await Self.link(a, b)
        let frames = [Self.frame("hello"), Self.frame(""), Self.frame(String(repeating: "x", count: 1000))]
        for frame in frames { try await link.client.send(frame) }
        try await link.server.send(Self.frame("reply"))
        #expect(net.bytesSent(from: "a") == frames.map(\.wireSize).reduce(0, +))
        #expect(net.bytesSent(from: "a") == 5 + 5 + 5 + 0 + 5 + 1000)
        #expect(net.bytesSent(from: "b") == 10)
        #expect(net.bytesSent(from: "nobody") == 0)
        await link.client.close()
        await link.server.close()
        await link.listener.close()
    }

    @Test("a peer that closes still delivers what it sent before")
    func closeDeliversQueuedFrames() async throws {
        let net = InMemoryNetwork()
        let link = try await Self.link(net.transport(), net.transport())
        for i in 0..<10 { try await link.client.send(Self.frame("\(i)")) }
        await link.client.close()
        var received: [Frame] = []
        for try await frame in link.server.inbound { received.append(frame) }
        #expect(received == (0..<10).map { Self.frame("\($0)") })
        await link.listener.close()
    }

    @Test("a cancelled send waiting on a full queue throws and does not deliver")
    func cancelledSend() async throws {
        let net = InMemoryNetwork(bufferedFrames: 2)
        let link = try await Self.link(net.transport(), net.transport())
        try await link.client.send(Self.frame("0"))
        try await link.client.send(Self.frame("1"))
        let blocked = Task { try await link.client.send(Self.frame("2")) }
        try await Task.sleep(for: .milliseconds(50))
        blocked.cancel()
        await #expect(throws: CancellationError.self) { try await blocked.value }
        async let received: [Frame] = {
            var frames: [Frame] = []
            for try await frame in link.server.inbound { frames.append(frame) }
            return frames
        }()
        try await link.client.send(Self.frame("3"))
        await link.client.close()
        #expect(try await received == ["0", "1", "3"].map { Self.frame($0) })
        await link.listener.close()
    }
}
