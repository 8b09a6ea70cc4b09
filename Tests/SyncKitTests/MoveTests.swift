import Testing
@testable import SyncKit
import SyncKitTesting

/// A rename or a moved directory on a peer is applied here as renames: the engine lets the job
/// of the new name move the local file whose deletion is agreed (`attachMoveSource`), and the
/// scanner's order sends each new name together with its old name's deletion
/// (`pairingRenames`).
@Suite struct MoveTests {
    static let content: [UInt8] = Array(repeating: 42, count: 5_000)
    var content: [UInt8] { Self.content }

    /// Node B holds `old/x` (seen on disk, inode 42, `fileRecord`'s default mtime); peer A
    /// renamed it to `new/x`: A's index holds the tombstone of the old name and the new name with
    /// the same content, modified at `renamedMtime`. B's engine, and A's two records.
    static func renamedOnPeer(renamedMtime: Int64 = 1_700_000_009_000_000_000) -> (engine: SyncEngine, tombstone: FileRecord, renamed: FileRecord) {
        var b = SyncEngine(me: TestIDs.b, policy: NewestWinsPolicy())
        b.versionClock = { 0 }
        b.peerConnected(TestIDs.a, indexID: 1)
        var seen = fileRecord("old/x", content, by: TestIDs.b)
        seen.version = VersionVector()
        seen.inode = 42
        _ = b.localScan([.init(path: "old/x", record: seen)])
        let mine = b.local["old/x"]!
        var tomb = mine
        tomb.deleted = true
        tomb.blocks = []
        tomb.size = 0
        tomb.inode = 0
        tomb.version = mine.version.bumped(by: TestIDs.a, atLeast: 0)
        tomb.modifiedBy = TestIDs.a
        tomb.sequence = 2
        let renamed = fileRecord("new/x", content, by: TestIDs.a, version: VersionVector([TestIDs.a: 5]), mtime: renamedMtime, sequence: 1)
        _ = b.peerIndex(TestIDs.a, records: [renamed, tomb], caughtUp: true)
        return (b, tomb, renamed)
    }

    func renamedOnPeer() -> SyncEngine { Self.renamedOnPeer().engine }

    @Test func thePeersRenameMovesTheLocalFileAndRecordsTheAgreedDeletion() throws {
        var b = renamedOnPeer()
        var out = SyncEngine.Output()
        var jobs = b.nextJobs(into: &out)
        // The deletion waits for the write (deletions run last).
        #expect(jobs.map(\.path) == ["new/x"])
        var job = try #require(jobs.first)
        b.attachMoveSource(to: &job, candidates: ["new/x", "old/x"])
        #expect(job.renameFrom?.from.path == "old/x" && job.renameFrom?.from.inode == 42)
        #expect(job.renameFrom?.deletion.deleted == true && job.renameFrom?.deletion.version == b.peers[TestIDs.a]!.records["old/x"]!.version)
        // The old name's deletion is the move's now: no delete job of its own.
        #expect(b.running["old/x"] != nil)
        jobs = b.nextJobs(into: &out)
        #expect(jobs.isEmpty)
        var landed = job.target
        landed.inode = 42
        let finished = b.jobFinished(job, outcome: .moved(landed))
        let old = try #require(b.local["old/x"])
        #expect(old.deleted && old.version == b.peers[TestIDs.a]!.records["old/x"]!.version, "the peer's tombstone, adopted: \(old)")
        #expect(b.local["new/x"]?.version == VersionVector([TestIDs.a: 5]) && b.local["new/x"]?.inode == 42)
        #expect(Set(finished.persist.map(\.path)) == ["new/x", "old/x"])
        #expect(finished.events.contains(.pulled(path: "old/x", operation: .delete)))
        #expect(b.isIdle)
        #expect(b.nextJobs(into: &out).isEmpty)
    }

    @Test func aMoveThatDidNotHappenLeavesTheDeletionToItsOwnJob() throws {
        for outcome in [PullOutcome.applied(FileRecord(path: "new/x", kind: .file, modifiedBy: TestIDs.a)), .localChanged, .failed("disk")] {
            var b = renamedOnPeer()
            var out = SyncEngine.Output()
            var job = try #require(b.nextJobs(into: &out).first)
            b.attachMoveSource(to: &job, candidates: ["old/x"])
            #expect(job.renameFrom != nil)
            var result = outcome
            if case .applied = outcome { result = .applied(job.target) }
            _ = b.jobFinished(job, outcome: result)
            #expect(b.running["old/x"] == nil)
            #expect(b.local["old/x"]?.deleted == false, "\(outcome): the old file is still recorded as there")
            if case .applied = outcome {
                #expect(b.nextJobs(into: &out).map(\.operation) == [.delete], "\(outcome): its delete job runs")
            }
        }
    }

    @Test func onlyAFileWhoseDeletionIsAgreedAndWhoseContentIsTheTargetsIsMoved() throws {
        // A copy on the peer (the old name stays): nothing to move.
        var b = SyncEngine(me: TestIDs.b, policy: NewestWinsPolicy())
        b.versionClock = { 0 }
        b.peerConnected(TestIDs.a, indexID: 1)
        var seen = fileRecord("a", content, by: TestIDs.b)
        seen.inode = 7
        _ = b.localScan([.init(path: "a", record: seen)])
        _ = b.peerIndex(TestIDs.a, records: [fileRecord("copy", content, by: TestIDs.a)], caughtUp: true)
        var out = SyncEngine.Output()
        var job = try #require(b.nextJobs(into: &out).first)
        b.attachMoveSource(to: &job, candidates: ["a"])
        #expect(job.renameFrom == nil)

        // The same first block but other content: not a move either.
        var c = renamedOnPeer()
        var other = try #require(c.nextJobs(into: &out).first)
        other.target.size += 1
        c.attachMoveSource(to: &other, candidates: ["old/x"])
        #expect(other.renameFrom == nil)

        // A target name that holds a file (a conflict or an update): never replaced by a move.
        var d = renamedOnPeer()
        var update = try #require(d.nextJobs(into: &out).first)
        update.expectedLocal = seen
        d.attachMoveSource(to: &update, candidates: ["old/x"])
        #expect(update.renameFrom == nil)
    }

    @Test func eachNewNameIsRecordedRightBeforeItsOldNamesDeletion() {
        func file(_ path: String, inode: UInt64) -> FileRecord {
            var r = fileRecord(path, content, by: TestIDs.a)
            r.inode = inode
            return r
        }
        let previous = ["old/a": file("old/a", inode: 1), "old/b": file("old/b", inode: 2), "gone": file("gone", inode: 7)]
        let observations: [SyncEngine.Observation] = [
            .init(path: "gone", record: nil),
            .init(path: "new/a", record: file("new/a", inode: 1)),
            .init(path: "new/b", record: file("new/b", inode: 2)),
            .init(path: "old/a", record: nil),
            .init(path: "old/b", record: nil),
            .init(path: "other", record: file("other", inode: 9)),
        ]
        let ordered = SyncEngine.pairingRenames(observations) { previous[$0] }
        #expect(ordered.map(\.path) == ["new/a", "old/a", "new/b", "old/b", "other", "gone"])
        // Nothing renamed: the order is kept as it was.
        let plain = SyncEngine.pairingRenames(observations) { _ in nil }
        #expect(plain.map(\.path) == observations.map(\.path))
    }
}
