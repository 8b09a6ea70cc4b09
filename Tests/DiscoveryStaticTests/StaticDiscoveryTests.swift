import DiscoveryStatic
import Foundation
import Logging
import SyncKit
import SyncKitTesting
import Testing

@Suite("Static discovery")
struct StaticDiscoveryTests {
    static let logger = Logger(label: "test.discovery.static")
    static let me = LocalAnnouncement(
        nodeID: NodeID(bytes: [UInt8](repeating: 9, count: 32)),
        name: "me",
        clusterTag: "test",
        port: 47_000
    )
    /// Short intervals so retries and re-resolutions happen within a test.
    static let fast = StaticDiscovery.Configuration(reresolveInterval: .milliseconds(100), retryInterval: .milliseconds(50))

    /// A resolver whose answers the test changes, counting the lookups.
    final class FakeDNS: Sendable {
        private let state = Guarded<(answers: [String: [String]], lookups: Int)>(([:], 0))
        func set(_ host: String, _ addresses: [String]) { state.withLock { $0.answers[host] = addresses } }
        var lookups: Int { state.withLock { $0.lookups } }
        var resolver: StaticDiscovery.Resolver {
            { host in
                try self.state.withLock { state in
                    state.lookups += 1
                    guard let answer = state.answers[host] else { throw SyncError(.transport, "no such host \(host)") }
                    return answer
                }
            }
        }
    }

    /// Collects a stream's events in the background.
    final class Collector: Sendable {
        private let events = Guarded<[DiscoveryEvent]>([])
        private let task: Task<Void, Never>
        init(_ stream: AsyncStream<DiscoveryEvent>) {
            let events = self.events
            task = Task { for await event in stream { events.withLock { $0.append(event) } } }
        }
        var seen: [DiscoveryEvent] { events.withLock { $0 } }
        func stop() async {
            task.cancel()
            await task.value
        }
        /// Waits (up to 30 s: generous, the suite may share two cores with heavy tests) until
        /// `condition` holds for what was seen.
        func wait(until condition: ([DiscoveryEvent]) -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(30)
            while !condition(seen) {
                guard ContinuousClock.now < deadline else {
                    Issue.record("timed out; events so far: \(seen)")
                    return
                }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
    }

    /// Terminating a stream cancels its task; this waits (up to 30 s) for the task to end.
    static func waitUntilStopped(_ discovery: StaticDiscovery) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while discovery.runningStreams > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(discovery.runningStreams == 0)
    }

    @Test("passes DiscoveryConformance")
    func conformance() async throws {
        // 30 s, not the kit's 10: this suite shares two cores with the heavy tests of the run
        // (as the waits below), and the answer comes in milliseconds when a thread is free.
        try await DiscoveryConformance(deadline: .seconds(30), makeScenario: {
            let discovery = StaticDiscovery(
                peers: [
                    PeerEndpoint(host: "127.0.0.1", port: 47_001),
                    PeerEndpoint(host: "localhost", port: 47_002),
                    // The node itself, as in a peers file shared by the whole cluster.
                    PeerEndpoint(host: "127.0.0.1", port: Self.me.port),
                ],
                configuration: Self.fast,
                logger: Self.logger
            )
            return DiscoveryScenario(
                subject: discovery,
                announcement: Self.me,
                expectedPeers: [
                    PeerEndpoint(host: "127.0.0.1", port: 47_001),
                    PeerEndpoint(host: "127.0.0.1", port: 47_002),
                ],
                selfEndpoints: [PeerEndpoint(host: "127.0.0.1", port: Self.me.port)],
                isStopped: { discovery.runningStreams == 0 }
            )
        }).run()
    }

    @Test("\"localhost\" resolves to 127.0.0.1 (IPv4 preferred)")
    func localhost() async throws {
        #expect(try await StaticDiscovery.systemResolver("localhost") == ["127.0.0.1"])
        #expect(try await StaticDiscovery.systemResolver("127.0.0.1") == ["127.0.0.1"])
        #expect(try await StaticDiscovery.systemResolver("::1") == ["::1"])
    }

    @Test("an unresolvable name is retried, reported nowhere, and does not crash")
    func unresolvable() async throws {
        await #expect(throws: SyncError.self) { _ = try await StaticDiscovery.systemResolver("nonexistent.invalid") }
        let lookups = Guarded(0)
        let discovery = StaticDiscovery(
            peers: [PeerEndpoint(host: "nonexistent.invalid", port: 47_010), PeerEndpoint(host: "127.0.0.1", port: 47_011)],
            configuration: Self.fast,
            logger: Self.logger,
            resolver: { host in
                if host == "nonexistent.invalid" { lookups.withLock { $0 += 1 } }
                return try await StaticDiscovery.systemResolver(host)
            }
        )
        let collector = Collector(discovery.events(announcing: Self.me))
        // The resolvable peer is reported regardless of the other.
        try await collector.wait { $0.contains(.found(PeerEndpoint(host: "127.0.0.1", port: 47_011))) }
        // Up to 60 s: each failed lookup of a name may wait for the machine's resolver (a CI
        // machine without network took longer than 5 s for three).
        let deadline = ContinuousClock.now + .seconds(60)
        while lookups.withLock({ $0 }) < 3, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(lookups.withLock { $0 } >= 3)
        #expect(!collector.seen.contains { event in
            if case .found(let endpoint) = event { return endpoint.port == 47_010 }
            return false
        })
        await collector.stop()
        try await Self.waitUntilStopped(discovery)
    }

    @Test("addresses that disappear from a name's resolution are reported lost")
    func lostAddresses() async throws {
        let dns = FakeDNS()
        dns.set("peer", ["127.0.0.2", "127.0.0.3"])
        let discovery = StaticDiscovery(
            peers: [PeerEndpoint(host: "peer", port: 47_020)],
            configuration: Self.fast,
            logger: Self.logger,
            resolver: dns.resolver
        )
        let collector = Collector(discovery.events(announcing: Self.me))
        let a = PeerEndpoint(host: "127.0.0.2", port: 47_020)
        let b = PeerEndpoint(host: "127.0.0.3", port: 47_020)
        let c = PeerEndpoint(host: "127.0.0.4", port: 47_020)
        try await collector.wait { $0.contains(.found(a)) && $0.contains(.found(b)) }
        dns.set("peer", ["127.0.0.3", "127.0.0.4"])
        try await collector.wait { $0.contains(.lost(a)) && $0.contains(.found(c)) }
        #expect(!collector.seen.contains(.lost(b)))
        // A failing lookup does not report anything lost: the last answer stands.
        dns.set("peer", [])
        let before = dns.lookups
        try await collector.wait { _ in dns.lookups >= before + 3 }
        #expect(!collector.seen.contains(.lost(b)) && !collector.seen.contains(.lost(c)))
        // Repeated founds: the periodic re-announcement.
        #expect(collector.seen.filter { $0 == .found(b) }.count >= 2)
        await collector.stop()
        try await Self.waitUntilStopped(discovery)
    }

    @Test("a name with many addresses is reported up to the configured bound")
    func boundedReports() async throws {
        let dns = FakeDNS()
        dns.set("many", (1...200).map { "127.0.1.\($0)" })
        let discovery = StaticDiscovery(
            peers: [PeerEndpoint(host: "many", port: 47_030)],
            configuration: .init(reresolveInterval: .seconds(60), maximumAddressesPerName: 5),
            logger: Self.logger,
            resolver: dns.resolver
        )
        let collector = Collector(discovery.events(announcing: Self.me))
        try await collector.wait { $0.count >= 5 }
        try await Task.sleep(for: .milliseconds(100))
        #expect(collector.seen.count == 5)
        await collector.stop()
    }

    @Test("peers files: comments, blank lines, IPv6 and duplicates")
    func parseGood() throws {
        let text = """
            # the cluster
            node1:7000
              node2.lan:7001   # trailing comment

            10.0.0.5:7002
            [fd00::5]:7003
            node1:7000
            """
        #expect(
            try StaticDiscovery.parsePeers(text) == [
                PeerEndpoint(host: "node1", port: 7000),
                PeerEndpoint(host: "node2.lan", port: 7001),
                PeerEndpoint(host: "10.0.0.5", port: 7002),
                PeerEndpoint(host: "fd00::5", port: 7003),
            ]
        )
        #expect(try StaticDiscovery.parsePeers("") == [])
        #expect(try StaticDiscovery.parsePeers("# only a comment\r\n\r\n") == [])
    }

    @Test(
        "peers files: a bad line throws SyncError(.configuration) naming it",
        arguments: [
            ("node1", 1),
            ("ok:1\nnode2:", 2),
            ("ok:1\n\n# c\nnode3:0", 4),
            ("node4:65536", 1),
            ("node5:abc", 1),
            ("fd00::1:7000", 1),
            (":7000", 1),
            ("[fd00::1:7000", 1),
        ]
    )
    func parseBad(text: String, line: Int) throws {
        let error = #expect(throws: SyncError.self) { try StaticDiscovery.parsePeers(text, source: "peers.txt") }
        #expect(error?.code == .configuration)
        #expect(error?.message.hasPrefix("peers.txt, line \(line): ") == true, "\(String(describing: error))")
    }

    @Test("reading a peers file, and a missing one")
    func readFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("peers-\(UUID().uuidString).txt").path
        try "a:1\n# b\nc:2\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try StaticDiscovery.readPeersFile(atPath: path) == [PeerEndpoint(host: "a", port: 1), PeerEndpoint(host: "c", port: 2)])
        let discovery = try StaticDiscovery(peersFile: path, logger: Self.logger)
        #expect(discovery.peers.count == 2)
        let error = #expect(throws: SyncError.self) { try StaticDiscovery.readPeersFile(atPath: path + ".missing") }
        #expect(error?.code == .configuration)
        #expect(error?.message.contains(path + ".missing") == true)
    }
}

/// A lock-protected value for the tests' background collectors.
final class Guarded<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
