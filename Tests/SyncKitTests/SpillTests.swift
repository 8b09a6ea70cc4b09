import Foundation
import Testing
@testable import SyncKit
import SyncKitTesting

/// The engine's tables past their memory limit (`SpillStore`, issue 18): each spilled table
/// must answer exactly as its in-memory form, and engines, machines and nodes whose tables are
/// spilled must sync as the others do. The limits here are tiny so a few files cross them.
@Suite struct SpillTests {
    static func store() throws -> SpillStore {
        try SpillStore(path: makeTempDirectory("spill") + "/spill.db", cacheKiB: 256)
    }

    static func records(_ n: Int, by node: NodeID = TestIDs.a) -> [FileRecord] {
        (0..<n).map { i in
            var r = fileRecord(i % 3 == 0 ? "dir/f\(i)" : "f\(i)", [UInt8]("content \(i)".utf8), by: node, sequence: UInt64(i + 1))
            r.inode = UInt64(100 + i)
            return r
        }
    }

    @Test func aSpilledLocalIndexAnswersAsTheDictionaryDoes() throws {
        var memory = LocalIndex()
        var spilled = LocalIndex()
        spilled.spill(to: try Self.store(), above: 3)
        for r in Self.records(10) {
            memory[r.path] = r
            spilled[r.path] = r
        }
        #expect(spilled.isSpilled && !memory.isSpilled)
        #expect(spilled.count == 10 && memory.count == 10)
        for r in Self.records(10) { #expect(spilled[r.path] == r, "the record, inode included, reads back") }
        #expect(spilled["nothing"] == nil)
        // An update in place, and an optional-chained edit as the engine makes them.
        spilled["f1"]?.inode = 7
        memory["f1"]?.inode = 7
        #expect(spilled["f1"]?.inode == 7 && spilled.count == 10)
        #expect(spilled.keys.sorted() == memory.keys.sorted())
        #expect(Set(spilled.values) == Set(memory.values))
        #expect(spilled.keys(sequenceAbove: 6).map(\.path) == memory.keys(sequenceAbove: 6).map(\.path))
        #expect(spilled.keys(sequenceAbove: 6).map(\.sequence) == [7, 8, 9, 10])
        #expect(Set(spilled.records(under: "dir/")) == Set(memory.records(under: "dir/")))
        #expect(spilled.records(under: "dir/").count == 4)
        #expect(spilled.totals(marker: "f1") == memory.totals(marker: "f1"))
        #expect(spilled.dictionary == memory.dictionary)
        // A subtree's range does not take in a sibling whose name only starts the same.
        spilled["dirt"] = fileRecord("dirt", [1], by: TestIDs.a)
        spilled["dir0"] = fileRecord("dir0", [1], by: TestIDs.a)
        #expect(spilled.records(under: "dir/").count == 4)
        // Iteration is paged: more records than a page, each once.
        var many = LocalIndex()
        many.spill(to: try Self.store(), above: 0)
        for i in 0..<5000 { many["p\(i)"] = fileRecord("p\(i)", [UInt8(i % 256)], by: TestIDs.a, sequence: UInt64(i + 1)) }
        var seen = Set<String>()
        for (path, r) in many {
            #expect(path == r.path)
            seen.insert(path)
        }
        #expect(seen.count == 5000)
    }

    @Test func aSpilledPeerIndexAnswersAsTheBoxesDo() throws {
        var memory = PeerRecords()
        var spilled = PeerRecords()
        spilled.spill(to: try Self.store(), above: 2)
        for r in Self.records(8, by: TestIDs.b) {
            memory.set(r, box: nil)
            spilled.set(r, box: nil)
        }
        #expect(spilled.isSpilled && spilled.count == 8 && spilled.box(of: "f1") == nil)
        for r in Self.records(8, by: TestIDs.b) {
            var expected = r
            expected.inode = 0  // local only: never part of a peer's record
            #expect(spilled[r.path] == expected)
            #expect(spilled[r.path] == memory[r.path])
            #expect(spilled.sequence(of: r.path) == r.sequence)
        }
        #expect(spilled.paths.sorted() == memory.paths.sorted())
        spilled.removeAll()
        #expect(spilled.count == 0 && spilled["f1"] == nil)
    }

    @Test func aSpilledBlockMapFindsWhatTheMemoryOneFinds() throws {
        var memory = BlockMap()
        var spilled = BlockMap()
        spilled.spill(to: try Self.store(), above: 1)
        let big = fileRecord("big", [UInt8]((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }), by: TestIDs.a)
        let small = fileRecord("small", [1, 2, 3], by: TestIDs.a)
        let copy = fileRecord("copy", [1, 2, 3], by: TestIDs.a)
        for r in [big, small, copy] {
            memory.update(r)
            spilled.update(r)
        }
        #expect(spilled.isSpilled && big.blocks.count > 1)
        for block in big.blocks + small.blocks {
            let a = memory.locations(of: block.hash).map { "\($0.path)@\($0.offset)+\($0.size)" }.sorted()
            let b = spilled.locations(of: block.hash).map { "\($0.path)@\($0.offset)+\($0.size)" }.sorted()
            #expect(a == b)
        }
        // The file deleted: its blocks are nowhere any more.
        var gone = small
        gone.deleted = true
        gone.blocks = []
        spilled.update(gone)
        #expect(spilled.locations(of: small.blocks[0].hash).map(\.path) == ["copy"])
    }

    @Test func aSpilledQueueGivesPathsInTheSameOrder() throws {
        var memory = PullQueue()
        var spilled = PullQueue()
        spilled.spill(to: try Self.store(), above: 2)
        let entries: [(String, Int, Int64)] = [("d/x", 1, 50), ("a", 1, 10), ("dir", 0, 1), ("gone", 2, -1), ("b", 1, 10), ("c", 1, 5)]
        for (path, phase, primary) in entries {
            memory.insert(path, key: .init(phase: phase, primary: primary), size: UInt64(max(0, primary)))
            spilled.insert(path, key: .init(phase: phase, primary: primary), size: UInt64(max(0, primary)))
        }
        // A path moved, one dropped, one deferred and put back.
        memory.insert("c", key: .init(phase: 1, primary: 99), size: 99)
        spilled.insert("c", key: .init(phase: 1, primary: 99), size: 99)
        memory.remove("b")
        spilled.remove("b")
        #expect(spilled.isSpilled && spilled.count == 5 && memory.count == 5)
        #expect(spilled.key(of: "c") == .init(phase: 1, primary: 99))
        #expect(spilled.spilledTotals?.files == 5 && spilled.spilledTotals?.bytes == 50 + 10 + 1 + 99)
        spilled.deferFirst()
        memory.deferFirst()
        #expect(spilled.first()?.path == "a" && memory.first()?.path == "a")
        spilled.restoreDeferred()
        memory.restoreDeferred()
        var a = [String](), b = [String]()
        while let top = memory.first() { a.append(top.path); memory.remove(top.path) }
        while let top = spilled.first() { b.append(top.path); spilled.remove(top.path) }
        #expect(a == ["dir", "a", "d/x", "c", "gone"])
        #expect(b == a)
        #expect(spilled.isEmpty)
    }

    /// A spilled index answers an index request from the store by sequence range, in batches,
    /// with the same records as the key list of the in-memory engine: no echo of what the peer
    /// holds at the same version, and always the last one.
    @Test func aSpilledIndexAnswersARequestAsTheKeyListDoes() throws {
        func engine(spilled: Bool) throws -> SyncEngine {
            var e = SyncEngine(me: TestIDs.a, policy: NewestWinsPolicy())
            e.versionClock = { 0 }
            if spilled { e.spill(to: try Self.store(), above: 1) }
            e.peerConnected(TestIDs.b, indexID: 1)
            for r in Self.records(12) {
                var seen = r
                seen.version = .init()
                _ = e.localScan([.init(path: r.path, record: seen)])
            }
            // The peer holds three of them at our version (pulled from us), and the last one.
            let held = ["f1", "f2", "dir/f3", "f11"].map { e.local[$0]! }
            _ = e.peerIndex(TestIDs.b, records: held, caughtUp: true)
            return e
        }
        let plain = try engine(spilled: false)
        let spilled = try engine(spilled: true)
        #expect(spilled.isSpilled && !plain.isSpilled)
        let request = WireMessage.IndexRequest(indexID: 0, since: 0)
        let expected = plain.keys(after: request, ourIndexID: 7, for: TestIDs.b).map(\.path)
        #expect(expected.count == 9 && expected.last == "f11", "three echoes left out, the last kept")
        guard case .range(var after, let through, let peer) = spilled.backlog(after: request, ourIndexID: 7, for: TestIDs.b) else {
            Issue.record("a spilled index answers with a range")
            return
        }
        var sent = [String]()
        var batches = 0
        while after < through {
            let (records, readThrough) = spilled.backlogBatch(after: after, through: through, for: peer, limit: 4)
            sent += records.map(\.path)
            #expect(readThrough > after)
            after = readThrough
            batches += 1
        }
        #expect(sent == expected)
        #expect(batches == 3)
        // Nothing above what the peer has: no backlog at all.
        if case .range = spilled.backlog(after: .init(indexID: 7, since: spilled.sequence), ourIndexID: 7) { Issue.record("nothing to send") }
    }

    /// Engines whose every table spilled past one entry converge as the in-memory ones do.
    @Test(arguments: 0..<10) func spilledEnginesConvergeInAnyOrder(seed: Int) throws {
        var rng = SplitMix(seed: UInt64(seed))
        var plain = SimCluster(count: 3, policy: NewestWinsPolicy())
        var spilled = SimCluster(count: 3, policy: NewestWinsPolicy())
        for i in spilled.nodes.indices { spilled.nodes[i].engine.spill(to: try Self.store(), above: 1) }
        var steps = [(Int, String, [UInt8]?, Int64)]()
        for _ in 0..<15 {
            let content = rng.next() % 5 == 0 ? nil : [UInt8]("v\(rng.next() % 3)".utf8)
            steps.append((Int(rng.next() % 3), ["p", "q", "r", "s/t"][Int(rng.next() % 4)], content, Int64(rng.next() % 4)))
        }
        for (node, path, content, mtime) in steps {
            plain.write(node, path, content, mtime: mtime)
            spilled.write(node, path, content, mtime: mtime)
        }
        plain.settle()
        spilled.settle()
        #expect(spilled.nodes.allSatisfy { $0.engine.isSpilled })
        #expect(spilled.contents == plain.contents, "seed \(seed)")
        for i in spilled.nodes.indices {
            #expect(spilled.nodes[i].engine.local.dictionary == plain.nodes[i].engine.local.dictionary, "seed \(seed) node \(i)")
            #expect(spilled.nodes[i].engine.isIdle)
        }
    }

    /// Whole simulated clusters (crashes, partitions, restarts) with every table spilled past
    /// two entries: each seed must converge with every invariant holding, as in memory (12
    /// seeds here; CI runs 300 more in release with `synckit-sim --spill 2`).
    @Test func simulatedClustersConvergeWithTheirTablesSpilled() async {
        let seeds = Array(UInt64(0)..<UInt64(ProcessInfo.processInfo.environment["SYNCKIT_SIM_SPILL_SEEDS"].flatMap(Int.init) ?? 12))
        let report = await withCheckedContinuation { (done: CheckedContinuation<Simulation.Report, Never>) in
            Thread.detachNewThread { done.resume(returning: Simulation.run(seeds: seeds, spillLimit: 2)) }
        }
        print(report.text)
        for (seed, problems) in report.failures.prefix(5) {
            Issue.record(Comment(rawValue: "seed \(seed) failed with spilled tables; replay: SWIFT_DETERMINISTIC_HASHING=1 synckit-sim --spill 2 --seed \(seed)\n"
                + problems.prefix(20).joined(separator: "\n")))
        }
        #expect(report.seeds == seeds.count)
    }
}
