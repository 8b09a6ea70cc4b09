import Foundation
import SyncKit

/// Syncthing's `FileInfo` and our `FileRecord`, one into the other, without a second engine.
///
/// A record made from a Syncthing peer's entry has Syncthing's fixed-size blocks as its chunk
/// list: our chunks are SHA-256 hashes and sizes too, so the engine plans, dedupes against local
/// blocks and verifies each pulled block by its hash the same way; only the peer to ask changes.
/// Going out, a record's content travels with the Syncthing block list computed from the same
/// bytes (`SyncthingBlocks.Hasher`), since a Syncthing peer checks every block against it.
///
/// Everything in a `FileInfo` came from a peer, so `record(from:)` checks it all before the
/// engine sees it: the name (the same rules as our own records: relative, no `..`, no NUL, no
/// state directory, within the length limits), the type, and that the block list describes the
/// file exactly (contiguous from offset 0, one block size throughout but the last block, the
/// sizes adding up to the file's, 32-byte hashes, at most Syncthing's 16 MiB per block).
public enum SyncthingFiles {
    /// Why a peer's entry was refused. Syncthing drops the connection for an entry it cannot
    /// take (a bad name, a file without blocks); so does the session here.
    public struct Refusal: Error, Equatable, CustomStringConvertible {
        public var name: String
        public var reason: String
        public var description: String { "Syncthing index entry \(name.debugDescription): \(reason)" }
    }

    /// What we make of one entry of a peer's Index or IndexUpdate: a record, or nil for an entry
    /// the peer marked invalid (it has the name but not usable content: ignored or unreadable
    /// there), which says nothing about the file and is not pulled.
    public static func record(from file: Bep_FileInfo) throws(Refusal) -> FileRecord? {
        func refuse(_ reason: String) -> Refusal { Refusal(name: file.name, reason: reason) }
        if file.invalid { return nil }
        // Names are NFC on the wire; one that is not is taken in its NFC form, as Syncthing
        // takes it, so that the two forms are one file.
        let path = file.name.precomposedStringWithCanonicalMapping
        if let problem = PathSafety.problem(with: path) { throw refuse(problem) }
        let kind: FileRecord.Kind
        switch file.type {
        case .file: kind = .file
        case .directory: kind = .directory
        case .symlink, .symlinkFile, .symlinkDirectory: kind = .symlink
        case .UNRECOGNIZED(let t): throw refuse("unknown type \(t)")
        }
        var record = FileRecord(
            path: path, kind: kind, mtimeNs: mtimeNs(seconds: file.modifiedS, nanoseconds: file.modifiedNs),
            mode: file.noPermissions ? (kind == .directory ? 0o755 : 0o644) : file.permissions & 0o777,
            deleted: file.deleted,
            version: VersionVector(shortCounters: file.version.counters.map { (id: $0.id, value: $0.value) }),
            modifiedBy: NodeID(shortID: file.modifiedBy),
            sequence: UInt64(clamping: file.sequence))
        guard !file.deleted else { return record }
        switch kind {
        case .file:
            guard file.size >= 0 else { throw refuse("negative size") }
            record.size = UInt64(file.size)
            record.blocks = try blocks(of: file, refuse)
        case .symlink:
            guard let target = String(validating: file.symlinkTarget, as: UTF8.self), !target.isEmpty, !target.contains("\0") else {
                throw refuse("a symlink without a valid target")
            }
            record.symlinkTarget = target
        case .directory:
            break
        }
        return record
    }

    /// The block list of a file entry, checked to describe the file exactly.
    private static func blocks(of file: Bep_FileInfo, _ refuse: (String) -> Refusal) throws(Refusal) -> [BlockRef] {
        // As Syncthing: a file has at least one block; an empty file has one of size 0.
        guard let first = file.blocks.first else { throw refuse("a file without blocks") }
        let blockSize = Int64(first.size)
        guard blockSize >= 0, blockSize <= Int64(SyncthingBlocks.maxBlockSize) else { throw refuse("a block of \(first.size) bytes") }
        if file.size == 0 {
            guard file.blocks.count == 1, first.size == 0, first.offset == 0, first.hash.count == 32 else {
                throw refuse("an empty file must be one empty block")
            }
            // A record of an empty file has no blocks (the codec announces the empty block).
            return []
        }
        var refs: [BlockRef] = []
        refs.reserveCapacity(file.blocks.count)
        var offset: Int64 = 0
        for (i, block) in file.blocks.enumerated() {
            let last = i == file.blocks.count - 1
            guard block.offset == offset else { throw refuse("block \(i) at offset \(block.offset), expected \(offset)") }
            guard block.hash.count == 32 else { throw refuse("block \(i) has a \(block.hash.count)-byte hash") }
            guard block.size > 0, last ? Int64(block.size) <= blockSize : Int64(block.size) == blockSize else {
                throw refuse("block \(i) of \(block.size) bytes in a list of \(blockSize)-byte blocks")
            }
            offset += Int64(block.size)
            guard offset <= file.size else { throw refuse("blocks beyond the file's \(file.size) bytes") }
            refs.append(BlockRef(hash: BlockHash(digest: block.hash), size: UInt32(block.size)))
        }
        guard offset == file.size else { throw refuse("blocks cover \(offset) of \(file.size) bytes") }
        return refs
    }

    /// Seconds and nanoseconds as one count of nanoseconds, clamped (a peer's year 3000 is
    /// kept as late as we can say, not wrapped into the past).
    static func mtimeNs(seconds: Int64, nanoseconds: Int32) -> Int64 {
        let (s, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (total, overflow2) = s.addingReportingOverflow(Int64(nanoseconds))
        return overflow2 ? (s < 0 ? .min : .max) : total
    }

    /// Our record as a `FileInfo` for a Syncthing peer. `blocks` is the file's Syncthing block
    /// list (from `SyncthingBlocks`, over the same bytes as `record.blocks`); it is ignored for
    /// anything but a file that exists. `sequence` is the record's place in our index.
    public static func fileInfo(from record: FileRecord, blocks: [Bep_BlockInfo], sequence: Int64) -> Bep_FileInfo {
        var file = Bep_FileInfo()
        file.name = record.path
        switch record.kind {
        case .file: file.type = .file
        case .directory: file.type = .directory
        case .symlink: file.type = .symlink
        }
        // Floor division, so a time before 1970 keeps 0 <= nanoseconds < 1e9, as Go's does.
        var seconds = record.mtimeNs / 1_000_000_000
        var nanos = record.mtimeNs % 1_000_000_000
        if nanos < 0 { seconds -= 1; nanos += 1_000_000_000 }
        file.modifiedS = seconds
        file.modifiedNs = Int32(nanos)
        file.permissions = record.mode & 0o777
        file.deleted = record.deleted
        file.sequence = sequence
        file.modifiedBy = record.modifiedBy.shortID
        var vector = Bep_Vector()
        vector.counters = record.version.entries.map { entry in
            var c = Bep_Counter()
            c.id = entry.node.shortID
            c.value = entry.value
            return c
        }
        file.version = vector
        guard !record.deleted else { return file }
        switch record.kind {
        case .file:
            file.size = Int64(record.size)
            file.blocks = blocks
            // The list's block size (its RawBlockSize); for one short block, the size
            // Syncthing's own scanner would use for the file, not that block's.
            file.blockSize = blocks.count > 1 ? blocks[0].size : Int32(FixedBlocks.blockSize(forFileSize: record.size))
        case .symlink:
            file.symlinkTarget = Data(record.symlinkTarget.utf8)
        case .directory:
            break
        }
        return file
    }
}
