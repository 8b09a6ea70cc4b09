import Crypto
import Dispatch

/// Syncthing's way of cutting a file: one fixed block size per file, a power of two from
/// 128 KiB to 16 MiB, the smallest that keeps the file under 2,000 blocks (its lib/protocol
/// `BlockSize`), each block with its SHA-256.
///
/// SyncKit's own chunks are content-defined (`Chunker`), which a Syncthing peer cannot use: it
/// asks for blocks by offset and size and checks each against the list it was given. So a node
/// that speaks BEP keeps this list beside its chunks (`FileRecord.fixedBlocks`), computed by
/// the scanner in the same read of the file (`Chunker.blocks(fileDescriptor:fixed:)`), and
/// carried to the other SyncKit nodes with the record, so a file pulled over our own protocol
/// can be announced to Syncthing peers without being read again.
public enum FixedBlocks {
    public static let minBlockSize = 128 << 10
    public static let maxBlockSize = 16 << 20
    static let desiredBlocksPerFile: Int64 = 2000

    /// The block size Syncthing uses for a file of `size` bytes.
    public static func blockSize(forFileSize size: UInt64) -> Int {
        var blockSize = minBlockSize
        while blockSize < maxBlockSize && Int64(clamping: size) >= desiredBlocksPerFile * Int64(blockSize) {
            blockSize <<= 1
        }
        return blockSize
    }

    /// True when `blocks` is a fixed-size list of a file of `size` bytes as Syncthing accepts
    /// one (every block but the last of one size, a power of two from 128 KiB to 16 MiB, the
    /// last at most that; one block of at most 128 KiB; adding up to the size): then the list
    /// serves both purposes, as for every file pulled from a Syncthing peer. Any such size is
    /// taken, not only the one `blockSize(forFileSize:)` picks: Syncthing's scanner keeps a
    /// file's block size while the file grows or shrinks within a factor of two.
    public static func isFixedShape(_ blocks: [BlockRef], size: UInt64) -> Bool {
        guard !blocks.isEmpty else { return size == 0 }
        let blockSize = blocks.count == 1 ? UInt32(minBlockSize) : blocks[0].size
        guard blockSize.nonzeroBitCount == 1, blockSize >= minBlockSize, blockSize <= maxBlockSize else { return false }
        var total: UInt64 = 0
        for (i, b) in blocks.enumerated() {
            if i < blocks.count - 1 ? b.size != blockSize : (b.size == 0 || b.size > blockSize) { return false }
            total += UInt64(b.size)
        }
        return total == size
    }

    /// The list of bytes held in memory (tests, small files).
    public static func blocks<Bytes: Collection>(of data: Bytes) -> [BlockRef] where Bytes.Element == UInt8 {
        var hasher = Hasher(fileSize: UInt64(data.count))
        Array(data).withUnsafeBytes { hasher.update($0) }
        return hasher.finish()
    }

    /// Computes the list from a file's bytes fed in order, in pieces of any size. Blocks that
    /// lie whole inside one piece are hashed on all cores (as the chunker hashes its chunks);
    /// a block split across pieces is hashed as it comes.
    public struct Hasher {
        public let blockSize: Int
        private var partial = SHA256()
        private var filled = 0
        private var blocks: [BlockRef] = []

        /// `fileSize` picks the block size; it must be the size of what will be fed.
        public init(fileSize: UInt64) {
            blockSize = FixedBlocks.blockSize(forFileSize: fileSize)
        }

        public mutating func update(_ bytes: UnsafeRawBufferPointer) {
            var rest = bytes[...]
            // First the end of a block begun in an earlier piece.
            if filled > 0 {
                let take = min(blockSize - filled, rest.count)
                partial.update(bufferPointer: UnsafeRawBufferPointer(rebasing: rest.prefix(take)))
                filled += take
                rest = rest.dropFirst(take)
                if filled == blockSize { closePartial() }
            }
            // Then every whole block of the piece, in parallel.
            let whole = rest.count / blockSize
            if whole > 0 {
                let start = rest.startIndex
                var hashes = [BlockHash](repeating: BlockHash(w0: 0, w1: 0, w2: 0, w3: 0), count: whole)
                let size = blockSize
                if whole == 1 {
                    hashes[0] = Chunker.hash(UnsafeRawBufferPointer(rebasing: rest.prefix(size)))
                } else {
                    hashes.withUnsafeMutableBufferPointer { out in
                        let shared = HashingSlots(input: UnsafeRawBufferPointer(rebasing: rest), output: out)
                        DispatchQueue.concurrentPerform(iterations: whole) { i in
                            shared.output[i] = Chunker.hash(UnsafeRawBufferPointer(rebasing: shared.input[(shared.input.startIndex + i * size)..<(shared.input.startIndex + (i + 1) * size)]))
                        }
                    }
                }
                for h in hashes { blocks.append(BlockRef(hash: h, size: UInt32(size))) }
                rest = rest[(start + whole * size)...]
            }
            // The start of the next block.
            if !rest.isEmpty {
                partial.update(bufferPointer: UnsafeRawBufferPointer(rebasing: rest))
                filled += rest.count
            }
        }

        private mutating func closePartial() {
            blocks.append(BlockRef(hash: BlockHash(digest: partial.finalize()), size: UInt32(filled)))
            partial = SHA256()
            filled = 0
        }

        /// The list: the whole blocks, then the shorter last one. An empty file has no blocks
        /// here (BEP announces it as one block of size 0; the protocol adapter adds it).
        public mutating func finish() -> [BlockRef] {
            if filled > 0 { closePartial() }
            return blocks
        }
    }
}
