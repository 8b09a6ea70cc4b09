import Crypto
import Foundation
import SyncKit

/// How Syncthing cuts a file into blocks: one fixed size per file, a power of two from 128 KiB
/// to 16 MiB, the smallest that keeps the file under 2,000 blocks (lib/protocol BlockSize).
/// A BEP peer asks for blocks by offset and size and checks each by its SHA-256, so we announce
/// such a list beside our own content-defined chunks. (Syncthing's scanner also keeps a file's
/// previous block size while the new one is within a factor of two of it; a list made with the
/// size rule alone is still valid for every peer, which checks blocks against our hashes.)
public enum SyncthingBlocks {
    public static let minBlockSize = FixedBlocks.minBlockSize
    public static let maxBlockSize = FixedBlocks.maxBlockSize

    /// The block size Syncthing uses for a file of this many bytes (`FixedBlocks`, which the
    /// scanner uses).
    public static func blockSize(forFileSize size: Int64) -> Int {
        FixedBlocks.blockSize(forFileSize: UInt64(max(0, size)))
    }

    /// The block list of a whole file held in memory (tests and small files); large files go
    /// through `Hasher` as they are read.
    public static func blocks<Bytes: Collection>(of data: Bytes) -> [Bep_BlockInfo] where Bytes.Element == UInt8 {
        var hasher = Hasher(fileSize: Int64(data.count))
        let array = Array(data)
        array.withUnsafeBytes { hasher.update($0) }
        return hasher.finish()
    }

    /// Computes Syncthing's block list from a file's bytes fed in order, in pieces of any size,
    /// so the scanner can feed it the same reads that compute our own chunks.
    ///
    /// Each block gets its SHA-256 and, as Syncthing 1.x announces it, its weak hash: the
    /// Adler-32 of the block, which 1.x peers use to find blocks that moved within a file
    /// (2.x ignores it; a zero would only switch that search off).
    public struct Hasher {
        public let blockSize: Int
        private var current = SHA256()
        private var adler = Adler32()
        private var filled = 0
        private var offset: Int64 = 0
        private var blocks: [Bep_BlockInfo] = []

        /// `fileSize` picks the block size; it must be the size of what will be fed.
        public init(fileSize: Int64) {
            blockSize = SyncthingBlocks.blockSize(forFileSize: fileSize)
        }

        public mutating func update(_ bytes: UnsafeRawBufferPointer) {
            var rest = bytes[...]
            while !rest.isEmpty {
                let take = min(blockSize - filled, rest.count)
                let piece = UnsafeRawBufferPointer(rebasing: rest.prefix(take))
                current.update(bufferPointer: piece)
                adler.update(piece)
                filled += take
                rest = rest.dropFirst(take)
                if filled == blockSize { closeBlock() }
            }
        }

        private mutating func closeBlock() {
            var block = Bep_BlockInfo()
            block.offset = offset
            block.size = Int32(filled)
            block.hash = Data(current.finalize())
            // Syncthing leaves the weak hash of the empty file's one block unset.
            block.weakHash = filled > 0 ? adler.value : 0
            blocks.append(block)
            offset += Int64(filled)
            filled = 0
            current = SHA256()
            adler = Adler32()
        }

        /// The list: full blocks, then the shorter last one. An empty file is one block of size
        /// 0 with the hash of nothing, as Syncthing announces it (a file with no blocks at all
        /// makes Syncthing drop the connection).
        public mutating func finish() -> [Bep_BlockInfo] {
            if filled > 0 || blocks.isEmpty { closeBlock() }
            return blocks
        }
    }
}

/// Adler-32 (RFC 1950), fed in pieces: the weak block hash of Syncthing 1.x.
struct Adler32 {
    private var a: UInt32 = 1
    private var b: UInt32 = 0

    var value: UInt32 { b << 16 | a }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        // 5,552 bytes is the most that can be summed before b could overflow 32 bits, so the
        // modulo is taken once per run instead of once per byte.
        var rest = bytes[...]
        while !rest.isEmpty {
            let run = rest.prefix(5552)
            for byte in run { a &+= UInt32(byte); b &+= a }
            a %= 65521
            b %= 65521
            rest = rest.dropFirst(run.count)
        }
    }
}

extension NodeID {
    /// Syncthing's short device ID: the first 8 bytes of the ID as a big-endian number. Version
    /// vectors and `modified_by` name devices by it. (Its text form, the first seven base32
    /// characters, is `short`.)
    public var shortID: UInt64 { w0 }
}

/// The name of the copy a conflict leaves behind, exactly as Syncthing makes it
/// (lib/model conflictName): `name.sync-conflict-YYYYMMDD-HHMMSS-SHORTID.ext`, the time being
/// when the conflict was resolved (local time, as Syncthing writes it) and SHORTID the device
/// that made the version that won. Both sides of a mixed cluster must make the same name, or
/// the copy would be made twice.
public func syncthingConflictName(_ path: String, winnerShortID: String, at date: Date, timeZone: TimeZone = .current) -> String {
    // Go's filepath.Ext, on bytes (as Go does; Swift's characters would glue a "." or "/" to a
    // combining mark after it): from the last "." of the last component, the dot included.
    let utf8 = Array(path.utf8)
    var dot: Int?
    for i in utf8.indices.reversed() {
        if utf8[i] == UInt8(ascii: "/") { break }
        if utf8[i] == UInt8(ascii: ".") { dot = i; break }
    }
    let ext = dot.map { String(decoding: utf8[$0...], as: UTF8.self) } ?? ""
    let stem = dot.map { String(decoding: utf8[..<$0], as: UTF8.self) } ?? path
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = timeZone
    let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
    func two(_ n: Int?) -> String { let v = n ?? 0; return v < 10 ? "0\(v)" : "\(v)" }
    let stamp = "\(c.year ?? 0)\(two(c.month))\(two(c.day))-\(two(c.hour))\(two(c.minute))\(two(c.second))"
    return "\(stem).sync-conflict-\(stamp)-\(winnerShortID)\(ext)"
}
