import Crypto
import Foundation
import Logging
import SyncKit
import SyncKitTesting
import TransportTCP

/// Which transport a test cluster runs on.
enum TestTransport: Sendable, CustomStringConvertible {
    /// Real TCP on 127.0.0.1, port 0: what users run.
    case tcp
    /// The in-memory transport: no sockets, for deterministic tests.
    case memory
    var description: String { self == .tcp ? "tcp" : "memory" }
}

/// Reports peers on an `InMemoryDiscoveryBus` under another host (127.0.0.1 for TCP).
struct HostMappedDiscovery: PeerDiscovery {
    let inner: InMemoryDiscovery
    let host: String
    func events(announcing me: LocalAnnouncement) -> AsyncStream<DiscoveryEvent> {
        let source = inner.events(announcing: me)
        let host = self.host
        let (stream, continuation) = AsyncStream.makeStream(of: DiscoveryEvent.self)
        let task = Task {
            for await event in source {
                switch event {
                case .found(var e): e.host = host; continuation.yield(.found(e))
                case .lost(var e): e.host = host; continuation.yield(.lost(e))
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}

/// N real `SyncNode`s in one process, each with its own temp folder, for scenario tests.
///
/// It starts and stops nodes, cuts and heals links (`FaultInjector`), counts the bytes each node
/// sends and receives, and waits with a deadline until all folders hold the same content (by
/// SHA-256 of every file, plus directories and link targets). Logs are captured per cluster and
/// printed only when a wait fails.
final class TestCluster: @unchecked Sendable {
    let root: String
    let transportKind: TestTransport
    let policy: any ConflictPolicy
    let injector = FaultInjector()
    let network = InMemoryNetwork()
    let bus = InMemoryDiscoveryBus()
    let logs = LogCapture()
    let clusterKey = ClusterKey(secret: "integration-test-key")
    private let lock = NSLock()
    private var running: [Int: (node: SyncNode, task: Task<Void, any Error>)] = [:]
    let count: Int
    var configure: @Sendable (inout SyncConfiguration) -> Void = { _ in }

    init(nodes: Int, transport: TestTransport, policy: any ConflictPolicy) {
        count = nodes
        transportKind = transport
        self.policy = policy
        root = FileManager.default.temporaryDirectory.appendingPathComponent("synckit-cluster-\(UUID().uuidString.prefix(8))").path
        for i in 0..<nodes { try! FileManager.default.createDirectory(atPath: folder(i), withIntermediateDirectories: true) }
    }

    func name(_ i: Int) -> String { "node\(i)" }
    func folder(_ i: Int) -> String { root + "/" + name(i) }

    /// The running node `i`.
    func node(_ i: Int) -> SyncNode {
        lock.withLock { running[i]!.node }
    }

    /// Starts node `i` (again) on its folder.
    @discardableResult
    func start(_ i: Int) async throws -> SyncNode {
        var config = SyncConfiguration(folder: folder(i))
        config.name = name(i)
        config.clusterName = "itest"
        config.clusterKey = clusterKey
        config.retryInterval = .milliseconds(500)
        config.maxRedialDelay = .seconds(1)
        configure(&config)
        // TLS with the node's own certificate, as syncctl runs it.
        let inner: any SyncTransport = transportKind == .tcp
            ? TCPTransport(configuration: .init(bindHost: "127.0.0.1", tls: TLSSettings(identity: try NodeIdentity.loadOrCreate(in: config.resolvedStateDirectory))))
            : network.transport(name: name(i))
        let transport = FaultyTransport(inner: inner, name: name(i), injector: injector)
        let discovery: any PeerDiscovery = HostMappedDiscovery(inner: bus.discovery(), host: transportKind == .tcp ? "127.0.0.1" : "memory")
        let node = try SyncNode(configuration: config, discovery: discovery, transport: transport, policy: policy, logger: logs.logger(label: name(i)))
        let events = await node.events()
        let task = Task { try await node.run() }
        lock.withLock { running[i] = (node, task) }
        // Wait until it listens, so tests can count on it.
        for await event in events {
            if case .started = event { break }
        }
        return node
    }

    func startAll() async throws {
        for i in 0..<count { try await start(i) }
    }

    /// Stops node `i` the way SIGTERM would (cancellation), and waits for it to finish.
    func stop(_ i: Int) async {
        guard let entry = lock.withLock({ running.removeValue(forKey: i) }) else { return }
        entry.task.cancel()
        _ = await entry.task.result
    }

    func stopAll() async {
        for i in lock.withLock({ Array(running.keys) }) { await stop(i) }
    }

    var runningIndices: [Int] { lock.withLock { running.keys.sorted() } }

    func cut(_ a: Int, _ b: Int) async { await injector.cut(name(a), name(b)) }
    func heal(_ a: Int, _ b: Int) { injector.heal(name(a), name(b)) }
    func bytesSent(_ i: Int) -> Int { injector.bytesSent(by: name(i)) }
    func bytesReceived(_ i: Int) -> Int { injector.bytesReceived(by: name(i)) }
    var totalBytesSent: Int { (0..<count).reduce(0) { $0 + bytesSent($1) } }

    // MARK: files

    func write(_ i: Int, _ path: String, _ bytes: [UInt8]) {
        let full = folder(i) + "/" + path
        try? FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: full, contents: Data(bytes))
    }

    func write(_ i: Int, _ path: String, _ text: String) { write(i, path, Array(text.utf8)) }

    func read(_ i: Int, _ path: String) -> [UInt8]? {
        FileManager.default.contents(atPath: folder(i) + "/" + path).map { Array($0) }
    }

    func remove(_ i: Int, _ path: String) { try? FileManager.default.removeItem(atPath: folder(i) + "/" + path) }

    func move(_ i: Int, _ from: String, _ to: String) {
        rename(folder(i) + "/" + from, folder(i) + "/" + to)
    }

    /// Path -> content digest of a folder (state dir and temp files excluded).
    func snapshot(_ i: Int) -> [String: String] {
        Self.snapshot(of: folder(i))
    }

    static func snapshot(of dir: String) -> [String: String] {
        var out = [String: String]()
        guard let e = FileManager.default.enumerator(atPath: dir) else { return out }
        while let rel = e.nextObject() as? String {
            if rel == ".synckit" { e.skipDescendants(); continue }
            let full = dir + "/" + rel
            guard let st = try? FileOps.lstat(full) else { continue }
            switch st.kind {
            case .directory: out[rel] = "dir"
            case .symlink: out[rel] = "link:" + ((try? FileManager.default.destinationOfSymbolicLink(atPath: full)) ?? "?")
            case .file:
                let data = FileManager.default.contents(atPath: full) ?? Data()
                out[rel] = hex(SHA256.hash(data: data)) + " \(String(st.mode & 0o777, radix: 8))"
            case nil: continue
            }
        }
        return out
    }

    /// Temp files anywhere in node `i`'s folder.
    func tempFiles(_ i: Int) -> [String] {
        (FileManager.default.enumerator(atPath: folder(i))?.allObjects as? [String] ?? []).filter { $0.hasSuffix(PathSafety.tempSuffix) }
    }

    struct NotConverged: Error, CustomStringConvertible {
        var description: String
    }

    /// Waits until the folders of `nodes` (default: the running ones) hold the same content and
    /// every node reports it is in sync. Returns the time it took; throws with the nodes' logs
    /// and the differences after `timeout`.
    @discardableResult
    func waitUntilConverged(_ nodes: [Int]? = nil, timeout: Duration = .seconds(30), where extra: (([String: String]) -> Bool)? = nil) async throws -> Duration {
        let nodes = nodes ?? runningIndices
        let start = ContinuousClock.now
        var last = [[String: String]]()
        while ContinuousClock.now - start < timeout {
            // Cheap check first: hashing every folder is only worth it once all nodes say so.
            var allSay = true
            for i in nodes where runningIndices.contains(i) {
                if await !node(i).isInSync { allSay = false }
            }
            if !allSay {
                try await Task.sleep(for: .milliseconds(10))
                continue
            }
            last = nodes.map { snapshot($0) }
            if last.allSatisfy({ $0 == last[0] }) && (extra?(last[0]) ?? true) {
                var allInSync = true
                for i in nodes where runningIndices.contains(i) {
                    if await !node(i).isInSync { allInSync = false }
                }
                if allInSync { return ContinuousClock.now - start }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        last = nodes.map { snapshot($0) }
        var report = "folders of nodes \(nodes) did not converge within \(timeout)\n"
        let allPaths = Set(last.flatMap(\.keys)).sorted()
        for p in allPaths {
            // The hash's start and the mode (a mode-only difference shows too).
            let values = last.map { $0[p].map { $0.count > 16 ? $0.prefix(12) + "…" + $0.suffix(4) : Substring($0) } ?? "-" }
            if Set(values).count > 1 { report += "  \(p): \(values)\n" }
        }
        for i in nodes where runningIndices.contains(i) {
            let s = await node(i).status()
            report += "  \(name(i)): inSync=\(s.inSync) peers=\(s.peers.count) pulling=\(s.pulling.prefix(5)) failed=\(Array(s.failed.keys.prefix(5)))\n"
        }
        print(report)
        print("---- logs ----\n" + logs.text)
        throw NotConverged(description: report)
    }

    func cleanUp() async {
        await stopAll()
        try? FileManager.default.removeItem(atPath: root)
    }
}

/// Runs `body` with a fresh cluster of `nodes` started nodes, and always tears it down.
func withTestCluster(
    nodes: Int, transport: TestTransport = .tcp, policy: any ConflictPolicy = NewestWinsPolicy(),
    seed: (TestCluster) -> Void = { _ in }, start: Bool = true,
    _ body: (TestCluster) async throws -> Void
) async throws {
    let cluster = TestCluster(nodes: nodes, transport: transport, policy: policy)
    seed(cluster)
    do {
        if start { try await cluster.startAll() }
        try await body(cluster)
    } catch {
        await cluster.cleanUp()
        throw error
    }
    await cluster.cleanUp()
}

/// Lower-case hex of a digest.
func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}
