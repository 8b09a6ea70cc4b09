import Crypto
import Foundation

/// Content-defined chunking with FastCDC and SHA-256 per chunk.
///
/// Why content-defined: with fixed-size blocks (Syncthing's scheme) inserting one byte near the
/// start of a file shifts every later block, so every later block hash changes and the rest of
/// the file is sent again. FastCDC places cut points where a rolling hash of the last bytes
/// matches a mask, so boundaries move with the content and an insert changes only the one or
/// two chunks around it.
///
/// Algorithm: FastCDC as in Xia et al., "The Design of Fast Content-Defined Chunking for Data
/// Deduplication Based Storage Systems" (IEEE TPDS 2020), section 3:
/// - Gear rolling hash: `fp = (fp << 1) + gear[byte]`; after 64 bytes a bit of `fp` no longer
///   depends on older input, so the window is 64 bytes and costs one shift and one add per byte.
/// - Cut-point skipping: no cut is looked for in the first `minSize` bytes of a chunk.
/// - Normalized chunking: before `avgSize` a harder mask (more one bits) is used, after it an
///   easier one, which pulls chunk sizes toward the average (normalization level 2).
/// The mask bits are the high bits of `fp`, the ones that depend on the whole 64-byte window.
///
/// The gear table comes from a fixed SplitMix64 seed, so every node cuts the same content at
/// the same places: the chunk boundaries are part of the wire protocol.
public struct Chunker: Sendable {
    public let minSize: Int
    public let avgSize: Int
    public let maxSize: Int
    let maskS: UInt64
    let maskL: UInt64

    /// 16 KiB / 64 KiB / 256 KiB: a 1 MiB edit costs about 1.1 MiB of transfer, a 512 MiB file
    /// has about 8,000 blocks (a 300 KB record).
    public static let standard = Chunker(minSize: 16 << 10, avgSize: 64 << 10, maxSize: 256 << 10)

    public init(minSize: Int, avgSize: Int, maxSize: Int) {
        precondition(minSize > 0 && minSize <= avgSize && avgSize <= maxSize, "chunk sizes must be ordered")
        precondition(avgSize.nonzeroBitCount == 1, "the average chunk size must be a power of two")
        self.minSize = minSize
        self.avgSize = avgSize
        self.maxSize = maxSize
        let bits = avgSize.trailingZeroBitCount
        // Normalization level 2: two bits more before the average, two fewer after it.
        maskS = Self.highMask(bits: bits + 2)
        maskL = Self.highMask(bits: max(bits - 2, 1))
    }

    static func highMask(bits: Int) -> UInt64 { bits >= 64 ? ~0 : ~(UInt64.max >> UInt64(bits)) }

    /// The 256 gear values, from SplitMix64 (Steele et al., 2014) with a fixed seed.
    static let gear: [UInt64] = {
        var state: UInt64 = 0x5359_4E43_4B49_5431  // "SYNCKIT1"
        return (0..<256).map { _ in
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }()

    /// The length of the next chunk at the start of `data` (all of it when it is the end of the
    /// input and shorter than `maxSize`).
    public func cutPoint(_ data: UnsafeRawBufferPointer) -> Int {
        let n = min(data.count, maxSize)
        if n <= minSize { return n }
        let normal = min(avgSize, n)
        return Self.gear.withUnsafeBufferPointer { gear in
            var fp: UInt64 = 0
            var i = minSize
            while i < normal {
                fp = (fp &<< 1) &+ gear[Int(data[i])]
                if fp & maskS == 0 { return i + 1 }
                i += 1
            }
            while i < n {
                fp = (fp &<< 1) &+ gear[Int(data[i])]
                if fp & maskL == 0 { return i + 1 }
                i += 1
            }
            return n
        }
    }

    /// Chunks and hashes bytes held in memory.
    public func blocks(of data: [UInt8]) -> [BlockRef] {
        data.withUnsafeBytes { raw in
            var out = [BlockRef]()
            var at = 0
            while at < raw.count {
                let rest = UnsafeRawBufferPointer(rebasing: raw[at...])
                let len = cutPoint(rest)
                out.append(BlockRef(hash: Self.hash(UnsafeRawBufferPointer(rebasing: rest[..<len])), size: UInt32(len)))
                at += len
            }
            return out
        }
    }

    /// Chunks and hashes the open file `fd` from its start, reading it sequentially in large
    /// reads; memory use is bounded by the read buffer whatever the file size.
    public func blocks(fileDescriptor fd: Int32) throws -> (blocks: [BlockRef], size: UInt64) {
        let (blocks, _, size) = try blocks(fileDescriptor: fd, fixedForSize: nil)
        return (blocks, size)
    }

    /// The same, and with `fixedForSize` (the file's size as it was seen before reading) also
    /// Syncthing's fixed-size block list (`FixedBlocks`), from the same reads: each byte is read
    /// once and hashed twice.
    public func blocks(fileDescriptor fd: Int32, fixedForSize: UInt64?) throws -> (blocks: [BlockRef], fixed: [BlockRef], size: UInt64) {
        var fixed = fixedForSize.map { FixedBlocks.Hasher(fileSize: $0) }
        let capacity = max(4 << 20, maxSize * 2)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        var start = 0, end = 0, eof = false, total: UInt64 = 0
        var out = [BlockRef]()
        while true {
            if !eof && end - start < maxSize {
                // Slide what is left to the front and refill behind it.
                if start > 0 {
                    if end > start { memmove(buffer.baseAddress!, buffer.baseAddress! + start, end - start) }
                    end -= start
                    start = 0
                }
                while end < capacity {
                    let r = read(fd, buffer.baseAddress! + end, capacity - end)
                    if r < 0 {
                        if errno == EINTR { continue }
                        throw SyncError(.io, "read failed: \(String(cString: strerror(errno)))")
                    }
                    if r == 0 { eof = true; break }
                    end += r
                }
            }
            if start == end { break }
            // Cut every chunk the buffer holds (the same cuts as one at a time: a chunk is cut
            // only with `maxSize` bytes ahead, or at the end of the file), then hash them on all
            // cores: SHA-256 is most of a scan's time, and the chunks are independent.
            var cuts = [(offset: Int, length: Int)]()
            var at = start
            while at < end && (eof || end - at >= maxSize) {
                let len = cutPoint(UnsafeRawBufferPointer(rebasing: buffer[at..<end]))
                cuts.append((at, len))
                at += len
            }
            var hashes = [BlockHash](repeating: BlockHash(w0: 0, w1: 0, w2: 0, w3: 0), count: cuts.count)
            let chunks = cuts
            if chunks.count == 1 {
                // A small file: one chunk, hashed here (no hand-off to other threads).
                hashes[0] = Self.hash(UnsafeRawBufferPointer(rebasing: buffer[chunks[0].offset..<(chunks[0].offset + chunks[0].length)]))
            } else { hashes.withUnsafeMutableBufferPointer { out in
                // Each iteration reads its own range of the buffer and writes its own slot.
                let shared = HashingSlots(input: UnsafeRawBufferPointer(buffer), output: out)
                DispatchQueue.concurrentPerform(iterations: chunks.count) { i in
                    let cut = chunks[i]
                    shared.output[i] = Self.hash(UnsafeRawBufferPointer(rebasing: shared.input[cut.offset..<(cut.offset + cut.length)]))
                }
            } }
            for (cut, hash) in zip(cuts, hashes) {
                out.append(BlockRef(hash: hash, size: UInt32(cut.length)))
                total += UInt64(cut.length)
            }
            if fixed != nil { fixed!.update(UnsafeRawBufferPointer(rebasing: buffer[start..<at])) }
            start = at
        }
        return (out, fixed?.finish() ?? [], total)
    }

    /// SHA-256 of a byte range, as a `BlockHash`.
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> BlockHash {
        BlockHash(digest: SHA256.hash(data: bytes))
    }

    /// SHA-256 of bytes in memory, as a `BlockHash`.
    public static func hash(_ bytes: [UInt8]) -> BlockHash {
        bytes.withUnsafeBytes { hash($0) }
    }
}

/// The buffers a parallel hashing pass shares: disjoint input ranges, one output slot per
/// iteration, both alive for the whole `concurrentPerform` call.
struct HashingSlots: @unchecked Sendable {
    let input: UnsafeRawBufferPointer
    let output: UnsafeMutableBufferPointer<BlockHash>
}
