import Crypto
import Foundation
import SyncKit
import Testing
@testable import ProtocolBEP

/// Syncthing's `FileInfo` into our `FileRecord` and back (`SyncthingFiles`): a real Syncthing's
/// index becomes records the engine can pull block by block, our records become entries a
/// Syncthing peer accepts, and nothing a peer sends gets past the checks our own records pass.
@Suite struct SyncthingFilesTests {
    static let peer = NodeID(bytes: (0..<32).map { UInt8(50 + $0) })

    static func file(_ name: String, _ content: [UInt8], type: Bep_FileInfoType = .file) -> Bep_FileInfo {
        var f = Bep_FileInfo()
        f.name = name
        f.type = type
        f.size = Int64(content.count)
        f.permissions = 0o640
        f.modifiedS = 1_700_000_000
        f.modifiedNs = 123_456_789
        f.sequence = 9
        f.modifiedBy = peer.shortID
        var c = Bep_Counter()
        c.id = peer.shortID
        c.value = 1_700_000_000
        f.version.counters = [c]
        if type == .file { f.blocks = SyncthingBlocks.blocks(of: content) }
        return f
    }

    /// Syncthing's recorded Index becomes records: paths, sizes, kinds, versions counted by its
    /// short ID, and a chunk list that is its block list, hash for hash.
    @Test func aRealSyncthingsIndexBecomesRecords() throws {
        let (manifest, items) = try BEPTranscriptTests.load()
        let index = try #require(items.lazy.compactMap { if case .message(.index(let i)) = $0 { i } else { nil } }.first)
        let sender = NodeID(manifest.syncthingDeviceID)!
        var records: [String: FileRecord] = [:]
        for file in index.files { records[file.name] = try #require(try SyncthingFiles.record(from: file)) }
        for expected in manifest.files {
            let r = try #require(records[expected.name])
            let content = BEPTranscriptTests.content(expected.name, size: expected.size)
            #expect(r.kind == .file && !r.deleted && r.size == UInt64(expected.size))
            #expect(r.blocks.map(\.size).reduce(0) { $0 + UInt64($1) } == r.size)
            // (An empty file's one empty block is no block in a record.)
            #expect(r.blocks == SyncthingBlocks.blocks(of: content).filter { $0.size > 0 }.map { BlockRef(hash: BlockHash(digest: $0.hash), size: UInt32($0.size)) })
            // Our own hash of the bytes of each block is the hash in the record: what the
            // puller checks every block it fetches against.
            var offset = 0
            for block in r.blocks {
                #expect(BlockHash(digest: SHA256.hash(data: content[offset..<(offset + Int(block.size))])) == block.hash)
                offset += Int(block.size)
            }
            #expect(r.modifiedBy.short == sender.short && r.version[sender] > 0, "counted by its short ID")
        }
        #expect(records["sub"]?.kind == .directory)
        // An empty file is one empty block in BEP and no block in a record (the one a SyncKit
        // peer would refuse; the codec adds it back on the way out).
        #expect(records["empty"]?.blocks.isEmpty == true && records["empty"]?.size == 0 && records["empty"]?.syncthingBlocks == [])
    }

    /// A record goes out as a `FileInfo` and comes back as the same change, for each kind, a
    /// deletion, and a time before 1970.
    @Test func recordsRoundTrip() throws {
        let me = NodeID(bytes: (0..<32).map { UInt8(7 * $0) })
        let content = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 * 31) }
        let st = SyncthingBlocks.blocks(of: content)
        let file = FileRecord(path: "docs/grüße.txt", kind: .file, size: UInt64(content.count), mtimeNs: 1_700_000_000_987_654_321,
                              mode: 0o600, version: VersionVector([me: 3, Self.peer: 1_700_000_000]), modifiedBy: me,
                              blocks: st.map { BlockRef(hash: BlockHash(digest: $0.hash), size: UInt32($0.size)) }, sequence: 4)
        let records = [
            file,
            FileRecord(path: "docs", kind: .directory, mtimeNs: -1_500_000_000, mode: 0o755, version: VersionVector([me: 1]), modifiedBy: me, sequence: 5),
            FileRecord(path: "link", kind: .symlink, mode: 0o777, version: VersionVector([me: 2]), modifiedBy: me, symlinkTarget: "docs/grüße.txt", sequence: 6),
            FileRecord(path: "gone.txt", kind: .file, deleted: true, version: VersionVector([me: 7]), modifiedBy: me, sequence: 7),
        ]
        for r in records {
            let info = SyncthingFiles.fileInfo(from: r, blocks: r.kind == .file && !r.deleted ? st : [], sequence: Int64(r.sequence))
            // Through the wire form too.
            let parsed = try Bep_FileInfo(serializedBytes: try info.serializedBytes() as [UInt8])
            let back = try #require(try SyncthingFiles.record(from: parsed))
            var expected = r
            expected.modifiedBy = NodeID(shortID: r.modifiedBy.shortID)
            #expect(back.isSameChange(as: expected), "\(r.path): \(back) against \(expected)")
            #expect(back.sequence == r.sequence)
        }
        let info = SyncthingFiles.fileInfo(from: records[1], blocks: [], sequence: 5)
        #expect(info.modifiedS == -2 && info.modifiedNs == 500_000_000, "floor division, as Go keeps it")
        #expect(SyncthingFiles.fileInfo(from: file, blocks: st, sequence: 4).blockSize == 128 << 10)
    }

    @Test func invalidEntriesAreNotPulled() throws {
        var f = Self.file("a.txt", [1, 2, 3])
        f.invalid = true
        #expect(try SyncthingFiles.record(from: f) == nil)
    }

    /// A name in NFD is taken in its NFC form: the same file as its NFC twin, not a second one.
    @Test func namesAreTakenInNFC() throws {
        let nfd = "gru\u{0308}n.txt"
        let r = try #require(try SyncthingFiles.record(from: Self.file(nfd, [1])))
        #expect(Array(r.path.utf8) == Array("gr\u{00FC}n.txt".utf8))
    }

    /// What a hostile or broken peer could send is refused: names that leave the folder or
    /// touch our state, block lists that do not describe the file, unknown types.
    @Test(arguments: ["../escape", "/etc/passwd", "a/../../b", "a/./b", ".synckit/index.db", "a//b", "", "nul\0byte", String(repeating: "n", count: 256)])
    func unsafeNamesAreRefused(name: String) {
        #expect(throws: SyncthingFiles.Refusal.self) { try SyncthingFiles.record(from: Self.file(name, [1, 2, 3])) }
    }

    @Test func blockListsMustDescribeTheFile() {
        let content = (0..<(300 << 10)).map { UInt8(truncatingIfNeeded: $0) }
        let good = Self.file("big.bin", content)
        #expect(throws: Never.self) { try SyncthingFiles.record(from: good) }
        func refused(_ change: (inout Bep_FileInfo) -> Void, _ why: Comment) {
            var f = good
            change(&f)
            #expect(throws: SyncthingFiles.Refusal.self, why) { try SyncthingFiles.record(from: f) }
        }
        refused({ $0.blocks = [] }, "no blocks")
        refused({ $0.blocks[1].offset += 1 }, "a gap")
        refused({ $0.blocks[0].offset = 5 }, "not from 0")
        refused({ $0.size += 1 }, "the sizes fall short of the file")
        refused({ $0.size -= 1 }, "the blocks go past the file")
        refused({ $0.blocks[2].size = $0.blocks[0].size + 1 }, "a last block larger than the others")
        refused({ $0.blocks[1].size -= 1; $0.blocks[2].offset -= 1; $0.size -= 1 }, "a short block in the middle")
        refused({ $0.blocks[1].hash = Data(repeating: 1, count: 20) }, "a short hash")
        refused({ $0.size = -1 }, "a negative size")
        refused({ $0.type = .UNRECOGNIZED(9) }, "an unknown type")
        refused({ f in
            f.size = Int64(32 << 20)
            var b = f.blocks[0]
            b.size = Int32(32 << 20)
            f.blocks = [b]
        }, "a block over 16 MiB")
        var empty = Self.file("empty", [])
        #expect(throws: Never.self) { try SyncthingFiles.record(from: empty) }
        empty.blocks[0].size = 1
        #expect(throws: SyncthingFiles.Refusal.self) { try SyncthingFiles.record(from: empty) }
        var link = Self.file("l", [], type: .symlink)
        #expect(throws: SyncthingFiles.Refusal.self, "a symlink without a target") { try SyncthingFiles.record(from: link) }
        link.symlinkTarget = Data([0xFF, 0xFE])
        #expect(throws: SyncthingFiles.Refusal.self, "a target that is not UTF-8") { try SyncthingFiles.record(from: link) }
    }

    @Test func timesBeyondWhatNanosecondsHoldAreClamped() {
        #expect(SyncthingFiles.mtimeNs(seconds: .max / 2, nanoseconds: 0) == .max)
        #expect(SyncthingFiles.mtimeNs(seconds: .min / 2, nanoseconds: 0) == .min)
        #expect(SyncthingFiles.mtimeNs(seconds: 2, nanoseconds: 5) == 2_000_000_005)
    }
}
