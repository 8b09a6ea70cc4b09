import Foundation
import SyncKit

/// What users do to a simulated cluster, from the seed: files created, hot files edited on
/// several nodes at once, renames and deletes (each on a node that holds what the user saw, so
/// that it happens after what it replaces), offline edits on nodes that are down; and what goes
/// wrong meanwhile: crashes and restarts, graceful stops, network cuts and heals. Then every cut
/// heals, every node comes back, and the cluster settles; `check()` tells what went wrong.
public final class Workload: @unchecked Sendable {
    /// The knobs of one run.
    public struct Options: Sendable {
        /// Simulated time during which things happen.
        public var duration: Duration = .seconds(20)
        /// User operations, spread over `duration`.
        public var operations = 40
        /// Faults (crashes, stops, cuts), spread over `duration`.
        public var faults = 8
        /// Files edited concurrently on several nodes.
        public var hotFiles = 3
        /// The longest the cluster may take to settle afterwards.
        public var settleTimeout: Duration = .seconds(120)
        public init() {}
    }

    public let cluster: SimulatedCluster
    public let options: Options
    private var random: SimulationRandom
    /// What each path should hold in the end (nil: it was deleted or renamed away).
    private var expected: [String: [UInt8]?] = [:]
    /// Each hot file's last write: its content and mtime (the newest wins).
    private var hot: [String: (content: [UInt8], mtime: Int64)] = [:]
    /// The user's clock for mtimes: strictly increasing, so the last write is the newest.
    private var userClock: Int64 = 1_800_000_000_000_000_000
    private var names = 0
    /// Paths a user touched on each node, with when (a node may count an edit only there).
    private var touched: [Int: [String: Duration]] = [:]
    public private(set) var counts: [String: Int] = [:]
    public private(set) var settledAfter: Duration?

    public init(cluster: SimulatedCluster, options: Options = Options()) {
        self.cluster = cluster
        self.options = options
        random = SimulationRandom(seed: cluster.seed ^ 0x5EED)
    }

    /// Runs the whole scenario: start, churn, settle.
    public func run() {
        for node in cluster.nodes {
            // Every node starts with a few files of its own.
            for _ in 0..<2 { create(on: node.index) }
            node.start()
        }
        for (k, _) in (0..<options.hotFiles).enumerated() {
            let path = "hot/file\(k).txt"
            write(on: k % cluster.nodes.count, path, hot: true)
        }
        let end = options.duration
        for _ in 0..<options.operations {
            let at = Duration.milliseconds(random.int(in: 100...Int(end.milliseconds)))
            cluster.at(at) { [self] in userOperation() }
        }
        for _ in 0..<options.faults {
            let at = Duration.milliseconds(random.int(in: 100...Int(end.milliseconds)))
            cluster.at(at) { [self] in fault() }
        }
        cluster.run(until: end)
        // Settle: every cut heals, every node comes back.
        cluster.healAll()
        for node in cluster.nodes where !node.isUp { node.start() }
        let start = cluster.now
        var steady = 0
        while cluster.now - start < options.settleTimeout {
            cluster.run(until: cluster.now + .seconds(1))
            steady = converged() ? steady + 1 : 0
            if steady >= 2 {
                settledAfter = cluster.now - start
                return
            }
        }
    }

    // MARK: operations

    private func count(_ kind: String) { counts[kind, default: 0] += 1 }

    private func userOperation() {
        switch random.int(in: 0...9) {
        case 0...3: create(on: random.int(in: 0...(cluster.nodes.count - 1)))
        case 4...6:
            guard let path = random.pick(hot.keys.sorted()) else { return }
            write(on: random.int(in: 0...(cluster.nodes.count - 1)), path, hot: true)
        case 7...8: removeOrRename(rename: false)
        default: removeOrRename(rename: true)
        }
    }

    private func newPath() -> String {
        names += 1
        return random.chance(0.5) ? "f\(names).txt" : "d\(names % 5)/sub\(names % 3)/f\(names).bin"
    }

    private func create(on node: Int) {
        write(on: node, newPath(), hot: false)
    }

    private func content() -> [UInt8] {
        random.bytes(random.int(in: 0...3000))
    }

    /// A user writes `path` on `node` (up or down: an offline edit).
    private func write(on node: Int, _ path: String, hot isHot: Bool) {
        let data = content()
        userClock += 1_000_000
        let n = cluster.nodes[node]
        let created = touch(node, path, parentsOf: n)
        n.disk.write(path, data, mtimeNs: userClock)
        if isHot {
            hot[path] = (data, userClock)
            count("edit")
        } else {
            expected[path] = data
            count("create")
        }
        cluster.note("user n\(node) writes \(path)")
        // inotify reports the topmost directory the write created (or the file itself).
        n.notice([created ?? path])
    }

    /// A user deletes (or renames to a new name) a file on a node that holds it as expected.
    private func removeOrRename(rename: Bool) {
        let candidates = expected.compactMap { path, data -> (String, [UInt8])? in data.map { (path, $0) } }.sorted { $0.0 < $1.0 }
        guard let (path, data) = random.pick(candidates) else { return }
        let holders = cluster.nodes.filter { $0.disk.entry(path)?.content == data && $0.disk.entry(path)?.kind == .file }
        guard let n = random.pick(holders) else { return }
        touch(n.index, path, parentsOf: n)
        if rename {
            let to = newPath()
            let created = touch(n.index, to, parentsOf: n)
            n.disk.rename(path, to: to)
            expected[to] = data
            count("rename")
            cluster.note("user n\(n.index) renames \(path) -> \(to)")
            n.notice([path, created ?? to])
        } else {
            n.disk.remove(path)
            count("delete")
            cluster.note("user n\(n.index) deletes \(path)")
            n.notice([path])
        }
        expected[path] = .some(nil)
    }

    /// Records that a user touched `path` (and any parent directory it creates) on `node`;
    /// returns the topmost directory it creates, if any.
    @discardableResult
    private func touch(_ node: Int, _ path: String, parentsOf n: SimulatedCluster.Node) -> String? {
        touched[node, default: [:]][path] = touched[node]?[path] ?? cluster.now
        var parent = ""
        var topmost: String?
        for component in path.split(separator: "/").dropLast() {
            parent = parent.isEmpty ? String(component) : parent + "/" + component
            if n.disk.entry(parent) == nil {
                touched[node, default: [:]][parent] = touched[node]?[parent] ?? cluster.now
                topmost = topmost ?? parent
            }
        }
        return topmost
    }

    private func fault() {
        let i = random.int(in: 0...(cluster.nodes.count - 1))
        let node = cluster.nodes[i]
        switch random.int(in: 0...5) {
        case 0...2:
            guard node.isUp else { return }
            count("crash")
            node.crash()
            cluster.at(cluster.now + .milliseconds(random.int(in: 500...4000))) { node.start() }
        case 3:
            guard node.isUp else { return }
            count("stop")
            node.stop()
            cluster.at(cluster.now + .milliseconds(random.int(in: 500...4000))) { node.start() }
        default:
            let j = random.int(in: 0...(cluster.nodes.count - 1))
            guard i != j else { return }
            count("cut")
            cluster.cut(i, j)
            cluster.at(cluster.now + .milliseconds(random.int(in: 300...5000))) { [cluster] in cluster.heal(i, j) }
        }
    }

    // MARK: checks

    /// Every node up, in sync, and every disk the same.
    private func converged() -> Bool {
        guard cluster.nodes.allSatisfy({ $0.running?.machine.inSync == true }) else { return false }
        let first = cluster.nodes[0].disk.entries.mapValues(Self.comparable)
        return cluster.nodes.dropFirst().allSatisfy { $0.disk.entries.mapValues(Self.comparable) == first }
    }

    struct Comparable: Equatable {
        var kind: FileRecord.Kind
        var content: [UInt8]
        var mode: UInt32
        var target: String
    }

    static func comparable(_ e: InMemoryDisk.Entry) -> Comparable {
        Comparable(kind: e.kind, content: e.content, mode: e.mode, target: e.symlinkTarget)
    }

    /// What went wrong, one line per broken invariant (empty: the run is good).
    public func check() -> [String] {
        var problems = [String]()
        if settledAfter == nil {
            let states = cluster.nodes.map { n in "n\(n.index): up=\(n.isUp) inSync=\(n.running?.machine.inSync ?? false) running=\(n.running?.machine.engine.running.keys.sorted() ?? []) failed=\(n.running?.machine.engine.failed ?? [:])" }
            problems.append("did not settle within \(options.settleTimeout): " + states.joined(separator: "; "))
            let disks = cluster.nodes.map { $0.disk.entries.mapValues(Self.comparable) }
            for path in Set(disks.flatMap(\.keys)).sorted() where Set(disks.map { $0[path].map { "\($0.kind) \($0.content.count) \($0.content.hashValue)" } ?? "-" }).count > 1 {
                problems.append("  differs: \(path): " + disks.map { $0[path].map { "\($0.kind)/\($0.content.count)" } ?? "-" }.joined(separator: " "))
            }
        }
        let disk = cluster.nodes[0].disk.entries
        for (path, want) in expected.sorted(by: { $0.key < $1.key }) {
            if let want {
                if disk[path]?.content != want || disk[path]?.kind != .file { problems.append("lost: \(path) should hold its \(want.count) bytes, has \(disk[path].map { "\($0.kind)/\($0.content.count)" } ?? "nothing")") }
            } else if let there = disk[path] {
                problems.append("resurrected: \(path) was deleted or renamed away, but is back (\(there.kind), \(there.content.count) bytes)")
            }
        }
        for (path, last) in hot.sorted(by: { $0.key < $1.key }) where disk[path]?.content != last.content {
            problems.append("lost edit: \(path) should hold its last write (\(last.content.count) bytes), has \(disk[path]?.content.count ?? -1)")
        }
        for (path, e) in disk.sorted(by: { $0.key < $1.key }) where e.kind == .file {
            if expected[path] == nil && hot[path] == nil && !path.contains(".sync-conflict-") {
                problems.append("unexpected: \(path) was never written by a user")
            }
        }
        // No version nobody made: a node counts an edit of a path only where a user touched it
        // on that node (conflict copies are made by the node itself).
        // A directory may also be counted by a node that had to make it as the parent of
        // something it pulled before any record of the directory itself arrived (its maker's
        // watcher missed it): that is allowed when a user made something below it somewhere.
        let touchedAnywhere = Set(touched.values.flatMap(\.keys))
        func impliedDirectory(_ path: String) -> Bool {
            touchedAnywhere.contains { $0.hasPrefix(path + "/") }
        }
        for node in cluster.nodes {
            var reported = Set<String>()
            for event in node.events {
                guard case .localChange(let path, let deleted) = event, !path.contains(".sync-conflict-"), touched[node.index]?[path] == nil,
                      deleted || !impliedDirectory(path) || cluster.nodes[node.index].disk.entry(path)?.kind != .directory,
                      reported.insert(path).inserted else { continue }
                problems.append("version nobody made: n\(node.index) counted an edit of \(path), which no user touched there")
            }
        }
        problems += cluster.anomalies
        return problems
    }

    /// One line with what the run did.
    public var summary: String {
        let ops = counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return "seed \(cluster.seed): \(ops); settled after \(settledAfter.map { "\($0.milliseconds) ms" } ?? "never")"
    }
}
