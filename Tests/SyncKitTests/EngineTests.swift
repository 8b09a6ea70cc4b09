import Testing
@testable import SyncKit
import SyncKitTesting

/// A deterministic cluster of engines with simulated disks: jobs succeed at once, conflict
/// copies appear as local files, and index exchange is explicit. No I/O.
struct SimCluster {
    struct Node {
        var engine: SyncEngine
        var disk: [String: FileRecord] = [:]
        var sentTo: [NodeID: UInt64] = [:]
    }
    var nodes: [Node]
    var ids: [NodeID]

    init(count: Int, policy: any ConflictPolicy) {
        ids = (1...count).map { TestIDs.node(UInt8($0)) }
        nodes = ids.map { id in
            var engine = SyncEngine(me: id, policy: policy)
            engine.versionClock = { 0 }  // small counters, easy to read in assertions
            return Node(engine: engine)
        }
        for i in nodes.indices {
            for j in ids.indices where j != i { nodes[i].engine.peerConnected(ids[j], indexID: 1) }
        }
    }

    /// A local write (or, with nil content, a deletion) on node `i`.
    mutating func write(_ i: Int, _ path: String, _ content: [UInt8]?, mtime: Int64 = 1_000) {
        if let content {
            var r = fileRecord(path, content, by: ids[i], mtime: mtime)
            r.version = VersionVector()
            nodes[i].disk[path] = r
        } else {
            nodes[i].disk[path] = nil
        }
        _ = nodes[i].engine.localScan([.init(path: path, record: nodes[i].disk[path])])
        runJobs(i)
    }

    /// Sends node `from`'s new records to node `to` and lets `to` act on them.
    mutating func send(from: Int, to: Int) {
        let since = nodes[from].sentTo[ids[to]] ?? 0
        let records = nodes[from].engine.keys(after: .init(indexID: 1, since: since), ourIndexID: 1).map { nodes[from].engine.local[$0.path]! }
        nodes[from].sentTo[ids[to]] = nodes[from].engine.sequence
        _ = nodes[to].engine.peerIndex(ids[from], records: records, caughtUp: true)
        runJobs(to)
    }

    mutating func runJobs(_ i: Int) {
        while true {
            let jobs = nodes[i].engine.startableJobs()
            if jobs.isEmpty { return }
            for job in jobs {
                if let copy = job.conflictCopyPath, var loser = nodes[i].disk[job.path] {
                    loser.path = copy
                    nodes[i].disk[copy] = loser
                }
                if job.operation == .delete { nodes[i].disk[job.path] = nil } else { nodes[i].disk[job.path] = job.target }
                _ = nodes[i].engine.jobFinished(job, outcome: .applied(job.target))
                if let copy = job.conflictCopyPath {
                    _ = nodes[i].engine.localScan([.init(path: copy, record: nodes[i].disk[copy])])
                }
            }
        }
    }

    /// Full-mesh exchange until nothing changes.
    mutating func settle(order: [Int]? = nil) {
        for _ in 0..<10 {
            let before = nodes.map(\.engine.sequence)
            for from in order ?? Array(nodes.indices) {
                for to in nodes.indices where to != from { send(from: from, to: to) }
            }
            if nodes.map(\.engine.sequence) == before { return }
        }
    }

    /// What each node holds: path -> first block hash (or "dir").
    var contents: [[String: String]] {
        nodes.map { n in n.disk.mapValues { $0.blocks.map(\.hash.description).joined() } }
    }
}

@Suite struct EngineTests {
    let a = [UInt8]("from A".utf8), b = [UInt8]("from B, longer".utf8)

    @Test func anEditPropagates() {
        var sim = SimCluster(count: 3, policy: NewestWinsPolicy())
        sim.write(0, "x", a)
        sim.settle()
        #expect(sim.contents.allSatisfy { $0 == ["x": sim.contents[0]["x"]!] })
        sim.write(1, "x", b)
        sim.settle()
        for n in sim.nodes { #expect(n.disk["x"]?.size == UInt64(b.count)) }
    }

    @Test func newestKeepsTheLaterEditAndTheLoserAsACopyOnEveryNode() {
        var sim = SimCluster(count: 3, policy: NewestWinsPolicy())
        sim.write(0, "doc.txt", a, mtime: 1_000)
        sim.write(1, "doc.txt", b, mtime: 2_000)
        sim.settle()
        let c = sim.contents
        #expect(c.allSatisfy { $0 == c[0] })
        #expect(sim.nodes[2].disk["doc.txt"]?.size == UInt64(b.count))
        let copies = sim.nodes[2].disk.keys.filter { ConflictNaming.isConflictCopy($0) }
        #expect(copies.count == 1)
        #expect(copies.first.map { sim.nodes[2].disk[$0]?.size } == UInt64(a.count))
        // Named after the winner's node, as Syncthing names it.
        #expect(copies.first?.contains(TestIDs.b.short) == true)
    }

    @Test func newestWithoutCopiesDropsTheLoser() {
        var sim = SimCluster(count: 2, policy: NewestWinsPolicy(keepLoserCopies: false))
        sim.write(0, "doc.txt", a, mtime: 3_000)
        sim.write(1, "doc.txt", b, mtime: 2_000)
        sim.settle()
        #expect(sim.contents[0] == sim.contents[1])
        #expect(sim.nodes[1].disk.count == 1)
        #expect(sim.nodes[1].disk["doc.txt"]?.size == UInt64(a.count))
    }

    @Test func keepBothKeepsBothUnderTheNewestNaming() {
        var sim = SimCluster(count: 2, policy: KeepBothPolicy())
        sim.write(0, "doc.txt", a, mtime: 5_000)
        sim.write(1, "doc.txt", b, mtime: 2_000)
        sim.settle()
        #expect(sim.contents[0] == sim.contents[1])
        #expect(sim.nodes[0].disk.count == 2)
        #expect(sim.nodes[0].disk["doc.txt"]?.size == UInt64(a.count))
    }

    @Test func identicalContentIsNeverAConflict() {
        var sim = SimCluster(count: 2, policy: NewestWinsPolicy())
        sim.write(0, "same", a, mtime: 1_000)
        sim.write(1, "same", a, mtime: 1_000)
        sim.settle()
        #expect(sim.nodes.allSatisfy { $0.disk.count == 1 })
        let v0 = sim.nodes[0].engine.local["same"]!.version, v1 = sim.nodes[1].engine.local["same"]!.version
        #expect(v0 == v1)
        #expect(v0 == VersionVector([TestIDs.a: 1, TestIDs.b: 1]))
    }

    @Test func anEditWinsOverAConcurrentDelete() {
        var sim = SimCluster(count: 3, policy: NewestWinsPolicy())
        sim.write(0, "f", a)
        sim.settle()
        sim.write(0, "f", nil)  // A deletes
        sim.write(1, "f", b)  // B edits, concurrently
        sim.settle()
        for n in sim.nodes { #expect(n.disk["f"]?.size == UInt64(b.count)) }
    }

    @Test func aDeletePropagatesAndStaysDeleted() {
        var sim = SimCluster(count: 3, policy: NewestWinsPolicy())
        sim.write(0, "f", a)
        sim.settle()
        sim.write(2, "f", nil)
        sim.settle()
        for n in sim.nodes {
            #expect(n.disk["f"] == nil)
            #expect(n.engine.local["f"]?.deleted == true)
        }
    }

    /// Whatever order indexes travel in, every node ends with the same files.
    @Test(arguments: 0..<20) func convergesInAnyOrder(seed: Int) {
        var rng = SplitMix(seed: UInt64(seed))
        var sim = SimCluster(count: 4, policy: NewestWinsPolicy())
        for step in 0..<12 {
            let node = Int(rng.next() % 4)
            let path = ["p", "q", "r"][Int(rng.next() % 3)]
            let content = rng.next() % 5 == 0 ? nil : [UInt8]("v\(rng.next() % 3)".utf8)
            sim.write(node, path, content, mtime: Int64(rng.next() % 4))
            if step % 3 == 0 { sim.send(from: Int(rng.next() % 4), to: Int(rng.next() % 4) == node ? (node + 1) % 4 : Int(rng.next() % 4)) }
        }
        let order = (0..<4).shuffled(using: &rng)
        sim.settle(order: order)
        let c = sim.contents
        #expect(c.allSatisfy { $0 == c[0] }, "seed \(seed): \(c)")
        // And the agreed versions are the same everywhere.
        for path in sim.nodes[0].engine.local.keys {
            let versions = Set(sim.nodes.map { $0.engine.local[path]?.version.description ?? "-" })
            #expect(versions.count == 1, "seed \(seed) path \(path): \(versions)")
        }
    }

    @Test func localCountersNeverGoBelowTheVersionClock() {
        var engine = SyncEngine(me: TestIDs.a, policy: NewestWinsPolicy())
        engine.versionClock = { 1_800_000_000 }
        var r = fileRecord("f", [1], by: TestIDs.a)
        r.version = VersionVector()
        _ = engine.localScan([.init(path: "f", record: r)])
        #expect(engine.local["f"]?.version[TestIDs.a] == 1_800_000_000)
        r.blocks = Chunker.standard.blocks(of: [2])
        _ = engine.localScan([.init(path: "f", record: r)])
        #expect(engine.local["f"]?.version[TestIDs.a] == 1_800_000_001, "always more than before")
    }

    /// A peer whose index was reset (new index ID) no longer vouches for its old records: a
    /// file only it had is no longer wanted, and no job for it starts.
    @Test func aPeersResetIndexIsDecidedAgain() {
        var engine = SyncEngine(me: TestIDs.a, policy: NewestWinsPolicy(), maxConcurrentJobs: 16)
        engine.peerConnected(TestIDs.b, indexID: 1)
        _ = engine.peerIndex(TestIDs.b, records: [fileRecord("only-b", [1, 2, 3], by: TestIDs.b)], caughtUp: true)
        engine.peerDisconnected(TestIDs.b)
        _ = engine.peerConnected(TestIDs.b, indexID: 2)
        #expect(engine.startableJobs().isEmpty)
        #expect(engine.isIdle)
    }

    /// A node that pulled everything from a peer does not send it all back when that peer asks
    /// for its index (after a restart, the peer asks from where it last heard): only records the
    /// peer does not hold at the same version, plus the highest one, so the peer's `since` moves
    /// up. A peer whose index was reset gets everything.
    @Test func anIndexAnswerLeavesOutWhatThePeerAlreadyHolds() {
        var c = SimCluster(count: 2, policy: NewestWinsPolicy())
        for i in 0..<50 { c.write(0, "f\(i)", [UInt8(i)]) }
        c.send(from: 0, to: 1)
        c.write(1, "mine", [9])
        let b = c.nodes[1].engine
        let all = b.keys(after: .init(indexID: 1, since: 0), ourIndexID: 1)
        #expect(all.count == 51)
        let answer = b.keys(after: .init(indexID: 1, since: 0), ourIndexID: 1, for: c.ids[0])
        #expect(answer.map(\.path) == ["mine"], "only what node 0 lacks (here also the highest)")
        // Nothing new on B: still the highest, so node 0's `since` reaches B's last sequence.
        var quiet = SimCluster(count: 2, policy: NewestWinsPolicy())
        for i in 0..<50 { quiet.write(0, "f\(i)", [UInt8(i)]) }
        quiet.send(from: 0, to: 1)
        let keys = quiet.nodes[1].engine.keys(after: .init(indexID: 1, since: 0), ourIndexID: 1, for: quiet.ids[0])
        #expect(keys.count == 1 && keys[0].sequence == quiet.nodes[1].engine.sequence)
        // The peer's index was reset: everything goes.
        var reset = quiet.nodes[1].engine
        reset.peerConnected(quiet.ids[0], indexID: 7)
        #expect(reset.keys(after: .init(indexID: 1, since: 0), ourIndexID: 1, for: quiet.ids[0]).count == 50)
    }

    /// When a queued path's turn comes and only the agreed record is left to store (the disk
    /// already holds the content), `nextJobs(into:)` stores it instead of dropping it.
    @Test func aRecordDecidedAtAPathsTurnIsStored() {
        var engine = SyncEngine(me: TestIDs.a, policy: NewestWinsPolicy(), maxConcurrentJobs: 16)
        engine.peerConnected(TestIDs.b, indexID: 1)
        let theirs = fileRecord("f", [1, 2, 3], by: TestIDs.b, mtime: 5)
        _ = engine.peerIndex(TestIDs.b, records: [theirs], caughtUp: true)
        // Meanwhile the same content appeared here (same mtime): the queued job is moot.
        var mine = fileRecord("f", [1, 2, 3], by: TestIDs.a, version: .init(), mtime: 5)
        mine.inode = 7
        engine.restore(records: [mine])
        var out = SyncEngine.Output()
        #expect(engine.nextJobs(into: &out).isEmpty)
        #expect(out.persist.map(\.path) == ["f"])
        #expect(engine.local["f"]?.version == theirs.version)
    }

    @Test func pullOrderIsSmallestFirstWithDirectoriesFirstAndDeletesLast() {
        var engine = SyncEngine(me: TestIDs.a, policy: NewestWinsPolicy(), maxConcurrentJobs: 100)
        engine.versionClock = { 0 }
        engine.peerConnected(TestIDs.b, indexID: 1)
        _ = engine.localScan([.init(path: "old", record: { var r = fileRecord("old", [1], by: TestIDs.a); r.version = .init(); return r }())])
        var gone = engine.local["old"]!
        gone.deleted = true
        gone.blocks = []
        gone.size = 0
        gone.version = gone.version.bumped(by: TestIDs.b)
        let records = [
            fileRecord("big", [UInt8](repeating: 1, count: 5000), by: TestIDs.b),
            fileRecord("small", [1, 2], by: TestIDs.b),
            FileRecord(path: "dir", kind: .directory, mode: 0o755, version: .init([TestIDs.b: 1]), modifiedBy: TestIDs.b),
            gone,
        ]
        _ = engine.peerIndex(TestIDs.b, records: records, caughtUp: true)
        let jobs = engine.startableJobs()
        #expect(jobs.map(\.path) == ["dir", "small", "big"], "the delete waits for the others")
        for j in jobs { _ = engine.jobFinished(j, outcome: .applied(j.target)) }
        #expect(engine.startableJobs().map(\.path) == ["old"])
    }
}

@Suite struct ConflictPolicyTests {
    @Test(arguments: [NewestWinsPolicy() as any ConflictPolicy, NewestWinsPolicy(keepLoserCopies: false), KeepBothPolicy(), PreferNodePolicy(preferred: TestIDs.c)])
    func passesTheConformanceKit(_ policy: any ConflictPolicy) throws {
        try ConflictPolicyConformance(policy: policy).run()
    }

    @Test func newestPrefersTheLaterMtimeThenTheHigherNode() {
        let early = fileRecord("f", [1], by: TestIDs.d, mtime: 1)
        let late = fileRecord("f", [2], by: TestIDs.a, mtime: 2)
        #expect(NewestWinsPolicy().resolve(Conflict(path: "f", local: early, remote: late)).winner == .remote)
        let tieA = fileRecord("f", [1], by: TestIDs.a, mtime: 5), tieB = fileRecord("f", [2], by: TestIDs.b, mtime: 5)
        #expect(NewestWinsPolicy().resolve(Conflict(path: "f", local: tieA, remote: tieB)).winner == .remote)
    }
}

/// The rule behind the resurrection under churn: a node never bumps its counter for content it
/// did not change. Content found on disk that equals a version the node knows (a pull's intent,
/// a peer's record) adopts that version.
@Suite struct KnownVersionTests {
    /// B held {A:1}; a pull of A's {A:2} reached B's disk but not B's index (killed in between).
    static func afterAnUnrecordedPull() -> (engine: SyncEngine, old: FileRecord, pulled: FileRecord) {
        var engine = SyncEngine(me: TestIDs.b, policy: NewestWinsPolicy())
        let old = fileRecord("p", [1], by: TestIDs.a, version: .init([TestIDs.a: 1]), mtime: 10, sequence: 5)
        let pulled = fileRecord("p", [2], by: TestIDs.a, version: .init([TestIDs.a: 2]), mtime: 20, sequence: 9)
        engine.restore(records: [old])
        return (engine, old, pulled)
    }

    static func seen(_ r: FileRecord) -> FileRecord {
        var s = r
        s.version = VersionVector()
        s.modifiedBy = TestIDs.b
        s.sequence = 0
        return s
    }

    @Test func theContentOfAPeersRecordAdoptsItsVersion() {
        var (engine, _, pulled) = Self.afterAnUnrecordedPull()
        engine.restorePeer(TestIDs.a, indexID: 1, maxSequence: 9, records: [pulled])
        let out = engine.localScan([.init(path: "p", record: Self.seen(pulled))])
        #expect(engine.local["p"]?.version == pulled.version, "adopted, not bumped")
        #expect(engine.local["p"]?.modifiedBy == TestIDs.a)
        #expect(!out.events.contains(.localChange(path: "p", deleted: false)))
    }

    @Test func theContentOfAnIntentAdoptsItsVersion() {
        var (engine, _, pulled) = Self.afterAnUnrecordedPull()
        engine.restoreIntents([pulled])
        _ = engine.localScan([.init(path: "p", record: Self.seen(pulled))])
        #expect(engine.local["p"]?.version == pulled.version)
        engine.dropIntents()
        #expect(engine.intents.isEmpty)
    }

    /// Then the file is deleted on A: the delete descends from what B holds, and wins there.
    @Test func theAdoptedVersionLosesToALaterDelete() {
        var (engine, _, pulled) = Self.afterAnUnrecordedPull()
        engine.restoreIntents([pulled])
        _ = engine.localScan([.init(path: "p", record: Self.seen(pulled))])
        engine.peerConnected(TestIDs.a, indexID: 1)
        let tomb = FileRecord(path: "p", kind: .file, deleted: true, version: .init([TestIDs.a: 3]), modifiedBy: TestIDs.a, sequence: 10)
        _ = engine.peerIndex(TestIDs.a, records: [tomb], caughtUp: true)
        #expect(engine.target(for: "p")?.record.deleted == true, "the delete wins; no resurrection")
        let jobs = engine.startableJobs()
        #expect(jobs.map(\.operation) == [.delete])
    }

    /// Without the rule (what happened): the same scan counts an edit by B, concurrent with the
    /// delete, and the edit wins.
    @Test func aBumpWouldHaveResurrectedIt() {
        var (engine, _, pulled) = Self.afterAnUnrecordedPull()
        _ = engine.localScan([.init(path: "p", record: Self.seen(pulled))])  // nothing known: an edit
        #expect(engine.local["p"]?.modifiedBy == TestIDs.b)
        engine.peerConnected(TestIDs.a, indexID: 1)
        let tomb = FileRecord(path: "p", kind: .file, deleted: true, version: .init([TestIDs.a: 3]), modifiedBy: TestIDs.a, sequence: 10)
        _ = engine.peerIndex(TestIDs.a, records: [tomb], caughtUp: true)
        #expect(engine.target(for: "p")?.record.deleted == false, "edit beats delete")
    }

    /// Content equal to an *older* version is a revert by the user: a real edit.
    @Test func revertingToAnOlderVersionIsAnEdit() {
        var engine = SyncEngine(me: TestIDs.b, policy: NewestWinsPolicy())
        let v1 = fileRecord("p", [1], by: TestIDs.a, version: .init([TestIDs.a: 1]), mtime: 10)
        let v2 = fileRecord("p", [2], by: TestIDs.a, version: .init([TestIDs.a: 2]), mtime: 20)
        engine.restore(records: [v2])
        engine.restorePeer(TestIDs.c, indexID: 1, maxSequence: 1, records: [v1])  // C is behind
        _ = engine.localScan([.init(path: "p", record: Self.seen(v1))])
        #expect(engine.local["p"]?.modifiedBy == TestIDs.b)
        #expect(engine.local["p"]?.version.compare(to: v2.version) == .newer)
    }

    /// A different modification time is a change too (a pull sets the time exactly).
    @Test func sameBytesWithAnotherTimeIsAnEdit() {
        var (engine, _, pulled) = Self.afterAnUnrecordedPull()
        engine.restoreIntents([pulled])
        var touched = Self.seen(pulled)
        touched.mtimeNs += 1
        _ = engine.localScan([.init(path: "p", record: touched)])
        #expect(engine.local["p"]?.modifiedBy == TestIDs.b)
    }

    /// Concurrent with the local record: the two versions merge, so the result still
    /// supersedes what this node held (adopting the peer's alone would lose that).
    @Test func aConcurrentKnownVersionIsMerged() {
        var engine = SyncEngine(me: TestIDs.b, policy: NewestWinsPolicy())
        let mine = fileRecord("p", [1], by: TestIDs.b, version: .init([TestIDs.b: 5]), mtime: 10)
        let theirs = fileRecord("p", [2], by: TestIDs.a, version: .init([TestIDs.a: 7]), mtime: 20)
        engine.restore(records: [mine])
        engine.restorePeer(TestIDs.a, indexID: 1, maxSequence: 1, records: [theirs])
        _ = engine.localScan([.init(path: "p", record: Self.seen(theirs))])
        #expect(engine.local["p"]?.version == VersionVector([TestIDs.a: 7, TestIDs.b: 5]))
    }

    /// A file gone from disk whose deletion a peer announced adopts that tombstone.
    @Test func anAbsenceAPeerAnnouncedAdoptsItsTombstone() {
        var (engine, old, _) = Self.afterAnUnrecordedPull()
        let tomb = FileRecord(path: "p", kind: .file, deleted: true, version: .init([TestIDs.a: 3]), modifiedBy: TestIDs.a, sequence: 10)
        engine.restorePeer(TestIDs.a, indexID: 1, maxSequence: 10, records: [tomb])
        _ = engine.localScan([.init(path: "p", record: nil)])
        #expect(engine.local["p"]?.deleted == true)
        #expect(engine.local["p"]?.version == tomb.version.merged(with: old.version))
        #expect(engine.local["p"]?.modifiedBy == TestIDs.a)
    }
}

extension SyncEngine {
    /// The jobs to start now, dropping what else a turn decided (tests that only look at jobs).
    mutating func startableJobs() -> [PullJob] {
        var out = Output()
        return nextJobs(into: &out)
    }
}
