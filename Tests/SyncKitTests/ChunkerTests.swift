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
