import CLZ4

/// LZ4 block compression (Debian's liblz4) with the uncompressed length in front, as 4 bytes
/// big-endian: the form of Syncthing's compressed BEP messages, and of SyncKit's compressed
/// index updates (`WireMessage.Kind.indexUpdateLZ4`). One implementation for both, written
/// for hostile input on the way in.
public enum LZ4Block {
    public enum Failure: Error, Equatable {
        /// The announced length is over the caller's limit (checked before any allocation).
        case tooLarge(UInt32)
        /// Not a valid LZ4 block, or one that does not decode to exactly the announced length.
        case malformed
    }

    /// `input` compressed and prefixed by its length; nil for an empty input (nothing to gain)
    /// or when LZ4 fails (it does not for inputs under 2 GB): the caller then sends the input
    /// as it is.
    public static func compress(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        guard let source = input.baseAddress, !input.isEmpty, input.count <= Int(LZ4_MAX_INPUT_SIZE) else { return nil }
        let bound = Int(LZ4_compressBound(Int32(input.count)))
        var out = [UInt8](repeating: 0, count: 4 + bound)
        let written = out.withUnsafeMutableBytes { dst in
            LZ4_compress_default(
                source.assumingMemoryBound(to: CChar.self),
                (dst.baseAddress! + 4).assumingMemoryBound(to: CChar.self),
                Int32(input.count), Int32(bound))
        }
        guard written > 0 else { return nil }
        out.removeLast(bound - Int(written))
        let n = UInt32(input.count)
        out[0] = UInt8(n >> 24)
        out[1] = UInt8(truncatingIfNeeded: n >> 16)
        out[2] = UInt8(truncatingIfNeeded: n >> 8)
        out[3] = UInt8(truncatingIfNeeded: n)
        return out
    }

    /// Undoes `compress`. The announced length is checked against `limit` before anything is
    /// allocated, so a 20-byte message cannot make us reserve 4 GB; LZ4's safe decoder never
    /// writes past the buffer, and output shorter than announced is refused too (no correct
    /// sender produces it).
    public static func decompress(_ input: UnsafeRawBufferPointer, limit: Int) throws(Failure) -> [UInt8] {
        guard input.count >= 4, let base = input.baseAddress else { throw .malformed }
        let announced = UInt32(input[0]) << 24 | UInt32(input[1]) << 16 | UInt32(input[2]) << 8 | UInt32(input[3])
        // Compared as an unsigned 32-bit value before it becomes an Int, so no platform reads a
        // huge length as a negative one.
        guard UInt64(announced) <= UInt64(max(0, limit)) else { throw .tooLarge(announced) }
        // Nor more than the block can hold: a byte of LZ4 expands to at most 255 (a match
        // length continues in steps of 255 per byte), so 9 bytes announcing 16 MiB are refused
        // before the 16 MiB are allocated.
        guard UInt64(announced) <= UInt64(input.count - 4) * 255 + 64 else { throw .malformed }
        let size = Int(announced)
        if size == 0 { return [] }
        var out = [UInt8](repeating: 0, count: size)
        let n = out.withUnsafeMutableBytes { dst in
            LZ4_decompress_safe(
                (base + 4).assumingMemoryBound(to: CChar.self),
                dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                Int32(input.count - 4), Int32(size))
        }
        guard n == Int32(size) else { throw .malformed }
        return out
    }
}
