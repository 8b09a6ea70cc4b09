import Foundation
import Testing
@testable import SyncKit

/// Deterministic pseudo-random bytes (SplitMix64), so tests are reproducible.
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        let words = raw.bindMemory(to: UInt64.self)
        for i in words.indices {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            words[i] = z ^ (z >> 31)
        }
    }
    return out
}

@Suite struct ChunkerTests {
    let chunker = Chunker.standard

    @Test func chunkSizesStayWithinBoundsAndCoverTheInput() {
        let data = randomBytes(8 << 20, seed: 1)
        let blocks = chunker.blocks(of: data)
        #expect(blocks.reduce(0) { $0 + Int($1.size) } == data.count)
        for b in blocks.dropLast() {
            #expect(Int(b.size) >= chunker.minSize && Int(b.size) <= chunker.maxSize)
        }
        // Normalized chunking keeps the average near 64 KiB.
        let average = data.count / blocks.count
        #expect(average > 32 << 10 && average < 128 << 10, "average chunk \(average)")
    }

    @Test func chunkingIsDeterministic() {
        let data = randomBytes(2 << 20, seed: 7)
        #expect(chunker.blocks(of: data) == chunker.blocks(of: data))
    }

    @Test func insertingHundredBytesInTheMiddleOf64MiBChangesAtMostThreeChunks() {
        let original = randomBytes(64 << 20, seed: 42)
        var edited = original
        edited.insert(contentsOf: randomBytes(100, seed: 99), at: 32 << 20)
        let before = chunker.blocks(of: original)
        let after = chunker.blocks(of: edited)
        let known = Set(before.map(\.hash))
        let changed = after.filter { !known.contains($0.hash) }
        #expect(changed.count <= 3, "\(changed.count) chunks changed")
        #expect(changed.count >= 1)
    }

    /// Also across several refills of the file reader's 4 MiB buffer (chunks are cut a buffer
    /// at a time and hashed in parallel).
    @Test(arguments: [3 << 20 + 12345, 40 << 20 + 777])
    func fileChunkingMatchesInMemoryChunking(size: Int) throws {
        let data = randomBytes(size, seed: 5)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("chunk-\(UInt32.random(in: 0...UInt32.max))").path
        FileManager.default.createFile(atPath: path, contents: Data(data))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        let (blocks, size) = try chunker.blocks(fileDescriptor: fd)
        #expect(size == UInt64(data.count))
        #expect(blocks == chunker.blocks(of: data))
    }

    @Test func emptyInputHasNoChunks() {
        #expect(chunker.blocks(of: []).isEmpty)
    }
}

/// Syncthing's fixed-size block lists (`FixedBlocks`), computed beside our chunks.
@Suite struct FixedBlocksTests {
    @Test func theBlockSizeFollowsSyncthingsRule() {
        #expect(FixedBlocks.blockSize(forFileSize: 0) == 128 << 10)
        #expect(FixedBlocks.blockSize(forFileSize: 250 << 20 - 1) == 128 << 10)
        #expect(FixedBlocks.blockSize(forFileSize: 2000 * (128 << 10)) == 256 << 10)
        #expect(FixedBlocks.blockSize(forFileSize: 1 << 40) == 16 << 20)
    }

    /// Fed in pieces of any size (as the scanner's reads come), the list is the same as from
    /// the whole: full blocks, then the shorter last one, each hashed with SHA-256.
    @Test(arguments: [1, 1000, 131_072, 131_073, 300_000, 4 << 20])
    func piecesGiveTheSameListAsTheWhole(_ piece: Int) {
        let data = randomBytes(700_001, seed: 9)
        let whole = FixedBlocks.blocks(of: data)
        #expect(whole.map(\.size) == [131_072, 131_072, 131_072, 131_072, 131_072, 44_641])
        #expect(whole[0].hash == Chunker.hash(Array(data[0..<131_072])))
        var hasher = FixedBlocks.Hasher(fileSize: UInt64(data.count))
        var at = 0
        data.withUnsafeBytes { raw in
            while at < data.count {
                let end = min(at + piece, data.count)
                hasher.update(UnsafeRawBufferPointer(rebasing: raw[at..<end]))
                at = end
            }
        }
        #expect(hasher.finish() == whole)
        #expect(FixedBlocks.isFixedShape(whole, size: UInt64(data.count)))
        #expect(!FixedBlocks.isFixedShape(Chunker.standard.blocks(of: data), size: UInt64(data.count)))
        // A Syncthing file that grew kept its 128 KiB blocks past 250 MiB: still its list.
        let grown = [BlockRef](repeating: whole[0], count: 2100) + [BlockRef(hash: whole[0].hash, size: 5)]
        #expect(FixedBlocks.isFixedShape(grown, size: 2100 * 131_072 + 5))
        #expect(!FixedBlocks.isFixedShape([BlockRef(hash: whole[0].hash, size: 200_000)], size: 200_000), "one block over 128 KiB")
        #expect(!FixedBlocks.isFixedShape([BlockRef(hash: whole[0].hash, size: 100_000), BlockRef(hash: whole[0].hash, size: 5)], size: 100_005))
    }

    /// The scanner's one read gives both lists.
    @Test func oneReadOfAFileGivesBothLists() throws {
        let dir = makeTempDirectory()
        let data = randomBytes(5 << 20 + 17, seed: 10)
        let path = dir + "/f.bin"
        FileManager.default.createFile(atPath: path, contents: Data(data))
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        let (blocks, fixed, size) = try Chunker.standard.blocks(fileDescriptor: fd, fixedForSize: UInt64(data.count))
        #expect(size == UInt64(data.count) && blocks == Chunker.standard.blocks(of: data) && fixed == FixedBlocks.blocks(of: data))
    }
}
