import Foundation
import NIOCore
import SyncKit

/// A folder under test and the hands of a user on it: the conformance kit changes the folder
/// through these, as a person would, and looks at it through them.
public protocol LocalFolderFixture: Sendable {
    var folder: any LocalFolder { get }
    /// The index the folder records intents in.
    var index: any IndexPersistence { get }
    func write(_ path: String, _ content: [UInt8], mtimeNs: Int64, mode: UInt32)
    func makeDirectory(_ path: String)
    func makeSymlink(_ path: String, to target: String)
    func remove(_ path: String)
    /// The content of the file at `path` (nil: no regular file there).
    func read(_ path: String) -> [UInt8]?
    func kind(_ path: String) -> FileRecord.Kind?
    func mode(_ path: String) -> UInt32?
    func mtimeNs(_ path: String) -> Int64?
    /// True when something was created outside the folder (a write that escaped).
    func somethingEscaped() -> Bool
    /// Removes what the fixture made.
    func cleanUp()
}

/// The conformance kit for `LocalFolder`: every requirement the protocol documents, checked on
/// a real instance (the Linux folder and the in-memory one both run it, so the simulation's
/// folder behaves like the real one).
///
/// ```swift
/// @Test func conformance() async throws {
///     try await LocalFolderConformance { try PosixFixture() }.run()
/// }
/// ```
public struct LocalFolderConformance: Sendable {
    private let make: @Sendable () throws -> any LocalFolderFixture

    public init(make: @escaping @Sendable () throws -> any LocalFolderFixture) {
        self.make = make
    }

    /// Runs every check; throws `ConformanceFailure` naming the first that fails.
    public func run() async throws {
        try await scanReportsWhatIsThere()
        try await scanReusesKnownBlocksAndReportsWhatIsGone()
        try await scanSkipsWhatIsNotSynced()
        try await applyWritesFilesWithTheirMetadataAndRecordsTheIntentFirst()
        try await applyNeverOverwritesAnUnexpectedChange()
        try await applyReportsMissingBlocks()
        try await applyKeepsTheConflictLoser()
        try await applyMovesARenamedFileInsteadOfCopyingIt()
        try await applyMakesDirectoriesLinksMetadataAndDeletes()
        try await applyNeverLeavesTheFolder()
        try await readBlockReadsWhatIsThere()
    }

    /// A source that serves blocks from a table (counting what it was asked).
    final class TableSource: BlockSource, @unchecked Sendable {
        let blocks: [BlockHash: [UInt8]]
        private let asked = Locked(0)
        init(_ contents: [[UInt8]]) {
            var table = [BlockHash: [UInt8]]()
            for c in contents {
                var offset = 0
                for b in Chunker.standard.blocks(of: c) {
                    table[b.hash] = Array(c[offset..<offset + Int(b.size)])
                    offset += Int(b.size)
                }
            }
            blocks = table
        }
        var count: Int { asked.withLock { $0 } }
        func fetch(_ block: BlockRef, offset: UInt64, of target: FileRecord) async -> ByteBuffer? {
            asked.withLock { $0 += 1 }
            return blocks[block.hash].map { ByteBuffer(bytes: $0) }
        }
    }

    /// The node the folders under test belong to.
    public static let me = NodeID(bytes: [UInt8](repeating: 7, count: 32))
    static let peer = NodeID(bytes: [UInt8](repeating: 9, count: 32))

    static func record(_ path: String, _ content: [UInt8], mtime: Int64 = 1_700_000_000_000_000_000, mode: UInt32 = 0o644) -> FileRecord {
        FileRecord(path: path, kind: .file, size: UInt64(content.count), mtimeNs: mtime, mode: mode, version: .init([peer: 1]), modifiedBy: peer,
                   blocks: Chunker.standard.blocks(of: content))
    }

    /// A peer's tombstone of `record`'s path.
    static func tombstone(of record: FileRecord) -> FileRecord {
        FileRecord(path: record.path, kind: .file, deleted: true, version: record.version.bumped(by: peer, atLeast: 0), modifiedBy: peer)
    }

    static func bytes(_ n: Int, seed: UInt8) -> [UInt8] {
        var x = UInt32(seed) &* 2_654_435_761 | 1
        return (0..<n).map { _ in
            x ^= x << 13; x ^= x >> 17; x ^= x << 5
            return UInt8(truncatingIfNeeded: x)
        }
    }

    private func with(_ check: String, _ body: (any LocalFolderFixture) async throws -> Void) async throws {
        let fixture = try make()
        defer { fixture.cleanUp() }
        do { try await body(fixture) } catch let failure as ConformanceFailure { throw failure } catch {
            throw ConformanceFailure(check: check, "threw", underlying: error)
        }
    }

    private func expect(_ condition: Bool, _ check: String, _ message: @autoclosure () -> String) throws {
        if !condition { throw ConformanceFailure(check: check, message()) }
    }

    // MARK: scanning

    public func scanReportsWhatIsThere() async throws {
        let check = "scanReportsWhatIsThere"
        try await with(check) { f in
            let big = Self.bytes(300_000, seed: 1)
            f.write("a.txt", Array("hello".utf8), mtimeNs: 1_700_000_000_000_000_000, mode: 0o640)
            f.write("dir/big.bin", big, mtimeNs: 1_700_000_001_000_000_000, mode: 0o644)
            f.makeSymlink("link", to: "a.txt")
            let result = await f.folder.scan(.full, known: [:], ignore: IgnoreRules())
            let seen = Dictionary(uniqueKeysWithValues: result.observations.map { ($0.path, $0.record) })
            try expect(seen["a.txt"]??.blocks == Chunker.standard.blocks(of: Array("hello".utf8)), check, "a.txt's blocks")
            try expect(seen["a.txt"]??.mode == 0o640 && seen["a.txt"]??.size == 5, check, "a.txt's mode and size: \(String(describing: seen["a.txt"]))")
            try expect(seen["a.txt"]??.mtimeNs == 1_700_000_000_000_000_000, check, "a.txt's mtime")
            try expect(seen["dir"]??.kind == .directory, check, "the directory")
            try expect(seen["dir/big.bin"]??.blocks == Chunker.standard.blocks(of: big), check, "big.bin's blocks")
            try expect(seen["link"]??.kind == .symlink && seen["link"]??.symlinkTarget == "a.txt", check, "the link, as a link")
            let partial = await f.folder.scan(.paths(["dir"]), known: [:], ignore: IgnoreRules())
            try expect(Set(partial.observations.map(\.path)) == ["dir", "dir/big.bin"], check, "a targeted scan covers the path and its subtree: \(partial.observations.map(\.path))")
        }
    }

    public func scanReusesKnownBlocksAndReportsWhatIsGone() async throws {
        let check = "scanReusesKnownBlocksAndReportsWhatIsGone"
        try await with(check) { f in
            f.write("f", Self.bytes(1000, seed: 2), mtimeNs: 1_700_000_000_000_000_000, mode: 0o644)
            let first = await f.folder.scan(.full, known: [:], ignore: IgnoreRules())
            guard let record = first.observations.first(where: { $0.path == "f" })?.record else {
                throw ConformanceFailure(check: check, "f was not reported")
            }
            try expect(first.observations.first { $0.path == "f" }?.hashed == true, check, "a new file is hashed")
            let gone = FileRecord(path: "gone.txt", kind: .file, modifiedBy: Self.me)
            let second = await f.folder.scan(.full, known: ["f": record, "gone.txt": gone], ignore: IgnoreRules())
            // Left out (exactly as known), or reported without being read.
            let again = second.observations.first { $0.path == "f" }
            try expect(again == nil || again?.hashed == false, check, "an unchanged file (size, mtime, inode) is not read again")
            try expect(second.observations.contains { $0.path == "gone.txt" && $0.record == nil }, check, "a known path that is gone is reported gone")
            try expect(second.known["f"] == record, check, "the result carries what it compared against")
        }
    }

    public func scanSkipsWhatIsNotSynced() async throws {
        let check = "scanSkipsWhatIsNotSynced"
        try await with(check) { f in
            f.write("keep.txt", [1], mtimeNs: 1, mode: 0o644)
            f.write("skip.tmp", [2], mtimeNs: 1, mode: 0o644)
            f.write(".f.synckit-tmp", [3], mtimeNs: 1, mode: 0o644)
            f.write("cafe\u{301}.txt", [4], mtimeNs: 1, mode: 0o644)
            let result = await f.folder.scan(.full, known: [:], ignore: IgnoreRules(text: "*.tmp"))
            let paths = Set(result.observations.map(\.path))
            try expect(paths.contains("keep.txt"), check, "keep.txt is reported")
            try expect(!paths.contains { $0.hasPrefix(".synckit") || $0.hasSuffix(".synckit-tmp") }, check, "state directory or temp files reported: \(paths)")
            try expect(!paths.contains("skip.tmp"), check, "an ignored file is reported")
            try expect(!paths.contains { $0.hasPrefix("cafe") }, check, "a name PathSafety refuses (NFD) is reported")
        }
    }

    // MARK: jobs

    func job(_ op: PullJob.Operation, _ target: FileRecord, expected: FileRecord? = nil, copy: String? = nil) -> PullJob {
        PullJob(operation: op, path: target.path, target: target, expectedLocal: expected, conflictCopyPath: copy)
    }

    public func applyWritesFilesWithTheirMetadataAndRecordsTheIntentFirst() async throws {
        let check = "applyWritesFilesWithTheirMetadataAndRecordsTheIntentFirst"
        try await with(check) { f in
            let content = Self.bytes(200_000, seed: 3)
            let target = Self.record("sub/dir/new.bin", content, mode: 0o600)
            let source = TableSource([content])
            let (outcome, stats) = await f.folder.apply(job(.writeFile, target), locals: [:], blocks: source)
            guard case .applied(let applied) = outcome else { throw ConformanceFailure(check: check, "the write was not applied: \(outcome)") }
            try expect(f.read("sub/dir/new.bin") == content, check, "the content")
            try expect(f.mode("sub/dir/new.bin") == 0o600, check, "the mode")
            try expect(f.mtimeNs("sub/dir/new.bin") == target.mtimeNs, check, "the mtime")
            try expect(applied.inode != 0 && applied.version == target.version, check, "the applied record carries the target's version and the inode")
            try expect(stats.bytesFromNetwork == content.count, check, "the bytes from the source are counted")
            try expect(try f.index.loadIntents().contains { $0.path == target.path && $0.version == target.version }, check, "the intent was recorded")
            // Blocks that are on this disk are copied, not fetched.
            let again = Self.record("copy.bin", content)
            let locals = Dictionary(uniqueKeysWithValues: zip(target.blocks, target.blockOffsets).map { ($0.hash, [BlockMap.Location(path: "sub/dir/new.bin", offset: $1, size: $0.size)]) })
            let before = source.count
            let (copied, _) = await f.folder.apply(job(.writeFile, again), locals: locals, blocks: source)
            try expect(copied != .unavailable && f.read("copy.bin") == content, check, "a copy from local blocks: \(copied)")
            try expect(source.count == before, check, "local blocks were fetched from the source")
        }
    }

    public func applyNeverOverwritesAnUnexpectedChange() async throws {
        let check = "applyNeverOverwritesAnUnexpectedChange"
        try await with(check) { f in
            f.write("f.txt", Array("mine".utf8), mtimeNs: 5, mode: 0o644)
            let theirs = Self.record("f.txt", Array("theirs".utf8))
            // The job expects nothing there, but the user wrote the file.
            let (outcome, _) = await f.folder.apply(job(.writeFile, theirs), locals: [:], blocks: TableSource([Array("theirs".utf8)]))
            try expect(outcome == .localChanged, check, "a write over an unexpected file: \(outcome)")
            try expect(f.read("f.txt") == Array("mine".utf8), check, "the user's file was overwritten")
            let (deleted, _) = await f.folder.apply(job(.delete, FileRecord(path: "f.txt", kind: .file, deleted: true, modifiedBy: Self.peer)),
                                                    locals: [:], blocks: TableSource([]))
            try expect(deleted == .localChanged && f.read("f.txt") != nil, check, "a delete of an unexpected file: \(deleted)")
        }
    }

    public func applyReportsMissingBlocks() async throws {
        let check = "applyReportsMissingBlocks"
        try await with(check) { f in
            let target = Self.record("missing.bin", Self.bytes(5000, seed: 4))
            let (outcome, _) = await f.folder.apply(job(.writeFile, target), locals: [:], blocks: TableSource([]))
            try expect(outcome == .unavailable, check, "a block nobody has: \(outcome)")
            try expect(f.kind("missing.bin") == nil, check, "a file without all its blocks appeared")
        }
    }

    public func applyKeepsTheConflictLoser() async throws {
        let check = "applyKeepsTheConflictLoser"
        try await with(check) { f in
            f.write("doc.txt", Array("loser".utf8), mtimeNs: 5, mode: 0o644)
            let scan = await f.folder.scan(.full, known: [:], ignore: IgnoreRules())
            guard let local = scan.observations.first(where: { $0.path == "doc.txt" })?.record else { throw ConformanceFailure(check: check, "no doc.txt") }
            let winner = Self.record("doc.txt", Array("winner".utf8))
            let copy = "doc.sync-conflict-19700101-000000-ABCDEFG.txt"
            let (outcome, _) = await f.folder.apply(job(.writeFile, winner, expected: local, copy: copy), locals: [:], blocks: TableSource([Array("winner".utf8)]))
            guard case .applied = outcome else { throw ConformanceFailure(check: check, "not applied: \(outcome)") }
            try expect(f.read("doc.txt") == Array("winner".utf8), check, "the winner is in place")
            try expect(f.read(copy) == Array("loser".utf8), check, "the loser is kept under the conflict name")
        }
    }

    /// A write with `renameFrom` (a rename on a peer) moves the local file: its inode stays,
    /// no block is read or fetched, the old name is gone, the target's mtime is set. A source
    /// that changed since the node saw it is not moved (the file is written from blocks and the
    /// changed source stays); a target name that is taken is never replaced.
    public func applyMovesARenamedFileInsteadOfCopyingIt() async throws {
        let check = "applyMovesARenamedFileInsteadOfCopyingIt"
        try await with(check) { f in
            let content = Self.bytes(70_000, seed: 6)
            f.write("old/x.bin", content, mtimeNs: 5, mode: 0o644)
            func scanned(_ path: String) async throws -> FileRecord {
                let scan = await f.folder.scan(.paths([path]), known: [:], ignore: IgnoreRules())
                guard let r = scan.observations.first(where: { $0.path == path })?.record else { throw ConformanceFailure(check: check, "no \(path)") }
                return r
            }
            let source = try await scanned("old/x.bin")
            let target = Self.record("new/dir/x.bin", content)
            var move = job(.writeFile, target)
            move.renameFrom = PullJob.Move(from: source, deletion: Self.tombstone(of: source))
            // No source of blocks at all: only a move can place the file.
            let (outcome, stats) = await f.folder.apply(move, locals: [:], blocks: TableSource([]))
            guard case .moved(let applied) = outcome else { throw ConformanceFailure(check: check, "not moved: \(outcome)") }
            try expect(applied.inode == source.inode && applied.inode != 0, check, "the inode changed: \(applied.inode) for \(source.inode)")
            try expect(f.read("new/dir/x.bin") == content && f.kind("old/x.bin") == nil, check, "the file is not under its new name only")
            try expect(f.mtimeNs("new/dir/x.bin") == target.mtimeNs && applied.mtimeNs == target.mtimeNs, check, "the target's mtime")
            try expect(stats.bytesFromNetwork == 0 && stats.bytesReused == 0, check, "bytes were copied: \(stats)")
            let intents = try f.index.loadIntents()
            try expect(intents.contains { $0.path == target.path } && intents.contains { $0.path == "old/x.bin" && $0.deleted }, check, "the intents (new name, old name's tombstone) were recorded")

            // The source changed since the node saw it: not moved, written from blocks instead.
            let other = Self.bytes(3_000, seed: 7)
            f.write("y.bin", other, mtimeNs: 5, mode: 0o644)
            let stale = try await scanned("y.bin")
            f.write("y.bin", other, mtimeNs: 6, mode: 0o644)
            var notMoved = job(.writeFile, Self.record("z.bin", other))
            notMoved.renameFrom = PullJob.Move(from: stale, deletion: Self.tombstone(of: stale))
            let (written, _) = await f.folder.apply(notMoved, locals: [:], blocks: TableSource([other]))
            guard case .applied = written else { throw ConformanceFailure(check: check, "a changed source: \(written)") }
            try expect(f.read("y.bin") == other && f.mtimeNs("y.bin") == 6 && f.read("z.bin") == other, check, "the changed source was moved")

            // The target's name is taken: nothing is replaced, nothing moved.
            f.write("taken.bin", [1], mtimeNs: 5, mode: 0o644)
            let fresh = try await scanned("y.bin")
            var blocked = job(.writeFile, Self.record("taken.bin", other))
            blocked.renameFrom = PullJob.Move(from: fresh, deletion: Self.tombstone(of: fresh))
            let (refused, _) = await f.folder.apply(blocked, locals: [:], blocks: TableSource([other]))
            try expect(refused == .localChanged, check, "a move onto a taken name: \(refused)")
            try expect(f.read("taken.bin") == [1] && f.read("y.bin") == other, check, "a move replaced a file or lost its source")
        }
    }

    public func applyMakesDirectoriesLinksMetadataAndDeletes() async throws {
        let check = "applyMakesDirectoriesLinksMetadataAndDeletes"
        try await with(check) { f in
            let dir = FileRecord(path: "d/e", kind: .directory, mode: 0o750, version: .init([Self.peer: 1]), modifiedBy: Self.peer)
            guard case .applied = await f.folder.apply(job(.makeDirectory, dir), locals: [:], blocks: TableSource([])).0 else {
                throw ConformanceFailure(check: check, "the directory was not made")
            }
            try expect(f.kind("d/e") == .directory && f.mode("d/e") == 0o750, check, "the directory and its mode")
            let link = FileRecord(path: "d/l", kind: .symlink, mtimeNs: 1, version: .init([Self.peer: 1]), modifiedBy: Self.peer, symlinkTarget: "../x")
            guard case .applied = await f.folder.apply(job(.makeSymlink, link), locals: [:], blocks: TableSource([])).0 else {
                throw ConformanceFailure(check: check, "the link was not made")
            }
            try expect(f.kind("d/l") == .symlink, check, "the link")
            f.write("m.txt", [1, 2], mtimeNs: 10, mode: 0o644)
            let scan = await f.folder.scan(.paths(["m.txt"]), known: [:], ignore: IgnoreRules())
            guard let local = scan.observations.first?.record else { throw ConformanceFailure(check: check, "no m.txt") }
            var touched = local
            touched.mode = 0o600
            touched.mtimeNs = 20
            guard case .applied = await f.folder.apply(job(.updateMetadata, touched, expected: local), locals: [:], blocks: TableSource([])).0 else {
                throw ConformanceFailure(check: check, "the metadata was not changed")
            }
            try expect(f.mode("m.txt") == 0o600 && f.mtimeNs("m.txt") == 20 && f.read("m.txt") == [1, 2], check, "mode and mtime changed, content kept")
            var tomb = touched
            tomb.deleted = true
            let (deleted, _) = await f.folder.apply(job(.delete, tomb, expected: { var r = touched; r.inode = 0; return r }()), locals: [:], blocks: TableSource([]))
            guard case .applied = deleted else { throw ConformanceFailure(check: check, "the delete: \(deleted)") }
            try expect(f.kind("m.txt") == nil, check, "the file was deleted")
        }
    }

    public func applyNeverLeavesTheFolder() async throws {
        let check = "applyNeverLeavesTheFolder"
        try await with(check) { f in
            f.makeSymlink("out", to: "../outside")
            let content = Array("pwned".utf8)
            for path in ["out/pwned.txt", ".synckit/pwned.txt", "../pwned.txt"] {
                let target = Self.record(path, content)
                let (outcome, _) = await f.folder.apply(job(.writeFile, target), locals: [:], blocks: TableSource([content]))
                if case .applied = outcome { throw ConformanceFailure(check: check, "\(path) was written") }
            }
            try expect(!f.somethingEscaped(), check, "something was created outside the folder")
        }
    }

    public func readBlockReadsWhatIsThere() async throws {
        let check = "readBlockReadsWhatIsThere"
        try await with(check) { f in
            let content = Self.bytes(100_000, seed: 5)
            f.write("r.bin", content, mtimeNs: 1, mode: 0o644)
            let data = f.folder.readBlock(BlockMap.Location(path: "r.bin", offset: 10, size: 1000))
            try expect(data.map { Array($0.readableBytesView) } == Array(content[10..<1010]), check, "the bytes at the offset")
            try expect(f.folder.readBlock(BlockMap.Location(path: "r.bin", offset: 99_500, size: 1000)) == nil, check, "a block past the end")
            try expect(f.folder.readBlock(BlockMap.Location(path: "none", offset: 0, size: 1)) == nil, check, "a missing file")
        }
    }
}

/// The fixture of an `InMemoryFolder`.
public struct InMemoryFolderFixture: LocalFolderFixture {
    public let disk = InMemoryDisk()
    public let index: any IndexPersistence = InMemoryIndex()
    public let folder: any LocalFolder

    public init() {
        folder = InMemoryFolder(disk: disk, index: index, me: LocalFolderConformance.me)
    }

    public func write(_ path: String, _ content: [UInt8], mtimeNs: Int64, mode: UInt32) { disk.write(path, content, mtimeNs: mtimeNs, mode: mode) }
    public func makeDirectory(_ path: String) { disk.makeDirectory(path) }
    public func makeSymlink(_ path: String, to target: String) { disk.makeSymlink(path, to: target, mtimeNs: 1) }
    public func remove(_ path: String) { disk.remove(path) }
    public func read(_ path: String) -> [UInt8]? { disk.entry(path).flatMap { $0.kind == .file ? $0.content : nil } }
    public func kind(_ path: String) -> FileRecord.Kind? { disk.entry(path)?.kind }
    public func mode(_ path: String) -> UInt32? { disk.entry(path)?.mode }
    public func mtimeNs(_ path: String) -> Int64? { disk.entry(path)?.mtimeNs }
    public func somethingEscaped() -> Bool { disk.entries.keys.contains { $0.hasPrefix("..") || $0.hasPrefix("/") || $0.hasPrefix(".synckit") || $0.hasPrefix("out/") } }
    public func cleanUp() {}
}
