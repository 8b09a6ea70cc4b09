import Foundation
import Logging
import Testing
@testable import SyncKit

@Suite struct PatchJournalTests {
    let size = 8 << 20

    /// 8 MiB of old content, and the same with 200 KiB overwritten in the middle.
    func versions() -> (old: [UInt8], new: [UInt8]) {
        let old = randomBytes(size, seed: 7)
        var new = old
        let patch = randomBytes(200_000, seed: 8)
        new.replaceSubrange(4_000_000..<4_200_000, with: patch)
        return (old, new)
    }

    func job(from old: [UInt8], to new: [UInt8]) -> PullJob {
        let current = fileRecord("big.bin", old, by: TestIDs.a)
        let target = fileRecord("big.bin", new, by: TestIDs.b, version: .init([TestIDs.a: 1, TestIDs.b: 1]), mtime: 1_700_000_123_000_000_000)
        return PullJob(operation: .writeFile, path: "big.bin", target: target, expectedLocal: current, conflictCopyPath: nil)
    }

    @Test func anOverwriteIsPatchedAndAnInsertNearTheStartIsNot() {
        let (old, new) = versions()
        let changed = Puller.patchPlan(job(from: old, to: new))
        let plan = try! #require(changed)
        let target = job(from: old, to: new).target
        let bytes = plan.reduce(0) { $0 + Int(target.blocks[$1].size) }
        #expect(bytes >= 200_000 && bytes <= 200_000 + 2 * Chunker.standard.maxSize)
        // 10 bytes inserted at the start shift every later block: the temp-file way is taken.
        #expect(Puller.patchPlan(job(from: old, to: randomBytes(10, seed: 9) + old)) == nil)
        // Small files and conflict copies never take the patch way.
        var small = job(from: Array(old.prefix(100_000)), to: Array(new.prefix(100_000)))
        #expect(Puller.patchPlan(small) == nil)
        small = job(from: old, to: new)
        small.conflictCopyPath = "big.sync-conflict.bin"
        #expect(Puller.patchPlan(small) == nil)
    }

    /// Writes the journal for `old -> new` of `dir/big.bin` into `state` (as the puller would,
    /// up to the point where the file gets touched) and returns it.
    func writeJournal(dir: String, state: String, old: [UInt8], new: [UInt8]) throws -> PatchJournal {
        let j = job(from: old, to: new)
        let plan = try #require(Puller.patchPlan(j))
        let st = try #require(try FileOps.lstat(dir + "/big.bin"))
        let offsets = j.target.blockOffsets
        let journal = PatchJournal(path: "big.bin", inode: st.inode, birthNs: try #require(try FolderRoot(path: dir).entry("big.bin")).birthTimeNs(), oldSize: st.size, newSize: j.target.size, mode: 0o644, mtimeNs: j.target.mtimeNs,
                                   entries: plan.map { .init(offset: offsets[$0], size: j.target.blocks[$0].size, hash: j.target.blocks[$0].hash) })
        var bytes = journal.header()
        for e in journal.entries { bytes += new[Int(e.offset)..<Int(e.offset) + Int(e.size)] }
        FileManager.default.createFile(atPath: PatchJournal.location(for: "big.bin", in: state), contents: Data(bytes))
        return journal
    }

    /// A folder holding `old` as big.bin and a state directory holding the journal to `new`,
    /// as a crash would leave them just before the file was touched.
    func crashedPatch(old: [UInt8], new: [UInt8]) throws -> (dir: String, state: String, journal: PatchJournal) {
        let dir = makeTempDirectory(), state = makeTempDirectory()
        FileManager.default.createFile(atPath: dir + "/big.bin", contents: Data(old))
        return (dir, state, try writeJournal(dir: dir, state: state, old: old, new: new))
    }

    @Test func aRestartFinishesAPatchACrashInterrupted() throws {
        let (old, new) = versions()
        let (dir, state, journal) = try crashedPatch(old: old, new: new)
        // The crash: only the first entry made it into the file.
        let fd = open(dir + "/big.bin", O_WRONLY)
        let first = journal.entries[0]
        try Array(new[Int(first.offset)..<Int(first.offset) + Int(first.size)]).withUnsafeBytes { try FileOps.pwrite(fd, $0, offset: first.offset) }
        close(fd)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/big.bin")) != Data(new))

        PatchJournal.replayAll(directory: state, root: try FolderRoot(path: dir), logger: Logger(label: "test"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/big.bin")) == Data(new))
        #expect(try FileOps.lstat(dir + "/big.bin")?.mtimeNs == journal.mtimeNs)
        #expect(try FileManager.default.contentsOfDirectory(atPath: state).isEmpty)
    }

    @Test func aTornJournalIsDroppedAndTheFileLeftAlone() throws {
        let (old, new) = versions()
        let (dir, state, _) = try crashedPatch(old: old, new: new)
        let location = PatchJournal.location(for: "big.bin", in: state)
        let length = try #require(try FileOps.lstat(location)).size
        #expect(truncate(location, off_t(length - 10)) == 0)  // the crash hit while it was written

        PatchJournal.replayAll(directory: state, root: try FolderRoot(path: dir), logger: Logger(label: "test"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/big.bin")) == Data(old))
        #expect(try FileManager.default.contentsOfDirectory(atPath: state).isEmpty)
    }

    @Test func aJournalIsNotReplayedOntoAReplacedFile() throws {
        let (old, new) = versions()
        let (dir, state, _) = try crashedPatch(old: old, new: new)
        // The user replaced the file before the restart (ext4 may well hand out the same inode
        // number again; the birth time tells them apart).
        let replacement = randomBytes(size, seed: 11)
        #expect(unlink(dir + "/big.bin") == 0)
        usleep(20_000)
        FileManager.default.createFile(atPath: dir + "/big.bin", contents: Data(replacement))

        PatchJournal.replayAll(directory: state, root: try FolderRoot(path: dir), logger: Logger(label: "test"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/big.bin")) == Data(replacement))
        #expect(try FileManager.default.contentsOfDirectory(atPath: state).isEmpty)
    }

    /// A file that grows: a crash may leave any size between the two (a write past the old
    /// end before the resize); the replay still finishes it.
    @Test func aGrowingPatchInterruptedAtAnySizeIsFinished() throws {
        let old = randomBytes(size, seed: 51)
        let new = old + randomBytes(1 << 20, seed: 52)
        let (dir, state, _) = try crashedPatch(old: old, new: new)
        #expect(truncate(dir + "/big.bin", off_t(old.count + 300_000)) == 0)

        PatchJournal.replayAll(directory: state, root: try FolderRoot(path: dir), logger: Logger(label: "test"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/big.bin")) == Data(new))
        #expect(try FileManager.default.contentsOfDirectory(atPath: state).isEmpty)
    }
}
