import Testing
import NIOCore
@testable import SyncKit
import SyncKitTesting

/// Hostile tests of moves at the engine level (written as attacks on decision 46; the first
/// found that a rename undone while the peer's move ran lost the file on every node).
@Suite struct MoveAttackTests {
    let content = MoveTests.content
    let oldMtime: Int64 = 1_700_000_000_000_000_000

    /// `MoveTests.renamedOnPeer`, the rename keeping the mtime.
    func renamedOnPeer() -> (SyncEngine, FileRecord, FileRecord) {
        let f = MoveTests.renamedOnPeer(renamedMtime: oldMtime)
        return (f.engine, f.tombstone, f.renamed)
    }

    /// A renames old/x -> new/x and, a moment later, back (an undo: `mv new/x old/x`). B's move
    /// job of new/x (source old/x) is in flight when the second index update arrives.
    /// The file must survive: B's index must not claim old/x is on disk once the move took it
    /// away (else B deletes new/x as agreed, its scan finds old/x gone and records a deletion of
    /// its own that beats A's re-creation everywhere).
    @Test func renameAndRenameBackWhileTheMoveRuns() throws {
        var (b, tomb, renamed) = renamedOnPeer()
        var out = SyncEngine.Output()
        var job = try #require(b.nextJobs(into: &out).first)
        b.attachMoveSource(to: &job, candidates: ["old/x"])
        #expect(job.renameFrom?.from.path == "old/x")
        // A's second scan: old/x again (same inode, same content and mtime), new/x gone.
        var back = fileRecord("old/x", content, by: TestIDs.a, version: tomb.version.bumped(by: TestIDs.a, atLeast: 0), mtime: oldMtime)
        back.sequence = 3
        var newTomb = renamed
        newTomb.deleted = true
        newTomb.blocks = []
        newTomb.size = 0
        newTomb.version = renamed.version.bumped(by: TestIDs.a, atLeast: 0)
        newTomb.sequence = 4
        _ = b.peerIndex(TestIDs.a, records: [back, newTomb], caughtUp: true)
        // The folder moved old/x to new/x (inode 42).
        var landed = job.target
        landed.inode = 42
        _ = b.jobFinished(job, outcome: .moved(landed))
        // Disk of B now: new/x only. What does the index say?
        let oldRecord = try #require(b.local["old/x"])
        // The disk has no old/x: the index must not say it has (or it must have a job to bring it back).
        let willRestore = b.nextJobs(into: &out).contains { $0.path == "old/x" && $0.operation == .writeFile }
        #expect(oldRecord.deleted || willRestore, "B's index claims old/x is on disk, but the move took it away: \(oldRecord)")

        // Follow through: B's delete of new/x runs (agreed), B rescans old/x and finds it gone.
        var out2 = SyncEngine.Output()
        for j in b.nextJobs(into: &out2) {
            var done = j.target
            done.inode = 0
            _ = b.jobFinished(j, outcome: .applied(done))
        }
        _ = b.localScan([.init(path: "old/x", record: nil)])
        let final = try #require(b.local["old/x"])
        let aVersion = back.version
        let cmp = final.version.compare(to: aVersion)
        #expect(!(final.deleted && cmp == .newer), "B counts a deletion of old/x of its own that supersedes A's re-creation: the file is lost on every node (\(final.version) vs A's \(aVersion))")
    }

    /// The same window, A re-created old/x as a copy with a new mtime (cp new/x old/x): B must
    /// pull it as a file, not schedule a metadata change of a file the move took away.
    @Test func recreateAtOldPathWithSameContentWhileTheMoveRuns() throws {
        var (b, tomb, _) = renamedOnPeer()
        var out = SyncEngine.Output()
        var job = try #require(b.nextJobs(into: &out).first)
        b.attachMoveSource(to: &job, candidates: ["old/x"])
        var again = fileRecord("old/x", content, by: TestIDs.a, version: tomb.version.bumped(by: TestIDs.a, atLeast: 0), mtime: oldMtime + 5_000_000_000)
        again.sequence = 3
        _ = b.peerIndex(TestIDs.a, records: [again], caughtUp: true)
        var landed = job.target
        landed.inode = 42
        _ = b.jobFinished(job, outcome: .moved(landed))
        let rec = try #require(b.local["old/x"])
        let jobs = b.nextJobs(into: &out)
        // A job that expects old/x on disk (updateMetadata with expectedLocal live) cannot succeed.
        let j = jobs.first { $0.path == "old/x" }
        #expect(rec.deleted || j?.operation == .writeFile, "old/x: index \(rec.deleted ? "deleted" : "live"), job \(String(describing: j?.operation)) expecting \(String(describing: j?.expectedLocal?.deleted))")
    }
    /// A 9-byte frame announcing 16 MiB is refused before the 16 MiB are allocated: LZ4
    /// cannot inflate n bytes to more than about 255 * n.
    @Test func aTinyCompressedFrameIsRefusedBeforeItsAnnouncedSizeIsAllocated() {
        let n = Frame.defaultMaximumSize
        let payload: [UInt8] = [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF), 0x00]
        #expect(throws: LZ4Block.Failure.malformed) { try payload.withUnsafeBytes { try LZ4Block.decompress($0, limit: n) } }
        #expect { try WireCodec.decode(Frame(type: WireMessage.Kind.indexUpdateLZ4.rawValue, payload: ByteBuffer(bytes: payload))) } throws: {
            ($0 as? WireError)?.code == .malformed
        }
    }
}
