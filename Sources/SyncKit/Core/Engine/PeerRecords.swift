/// The records a peer announced, by path, stored compactly.
///
/// Each entry is a reference to an immutable box holding the record, plus the peer's own
/// sequence number for it. A `FileRecord` is 128 bytes inline, and a hash table of them sized
/// for 20,000 paths takes about 4.7 MB per peer before a single byte of it is shared; boxes
/// make an entry 24 bytes, and let every peer that holds the same change of a path point at one
/// box (`SyncEngine.box(for:from:)`).
public struct PeerRecords: Sendable {
    /// One record, shared by the peers that hold exactly this change. Its `sequence` and
    /// `inode` are not meaningful: the entry's sequence is the peer's.
    public final class Box: Sendable {
        public let record: FileRecord
        init(_ record: FileRecord) {
            var r = record
            r.sequence = 0
            r.inode = 0
            self.record = r
        }
    }

    private var table: [String: (box: Box, sequence: UInt64)] = [:]

    public init() {}

    /// The peer's record of `path`, with the peer's sequence number.
    public subscript(path: String) -> FileRecord? {
        guard let entry = table[path] else { return nil }
        var r = entry.box.record
        r.sequence = entry.sequence
        return r
    }

    /// The peer's sequence number of its record of `path`.
    public func sequence(of path: String) -> UInt64? { table[path]?.sequence }

    /// The shared box of `path` (to share it with another peer's equal record).
    public func box(of path: String) -> Box? { table[path]?.box }

    /// Stores `record` as the peer's record of its path, through `box` (which holds the same
    /// change).
    public mutating func set(_ record: FileRecord, box: Box) {
        table[record.path] = (box, record.sequence)
    }

    public var count: Int { table.count }

    /// Every path the peer has a record of.
    public var paths: [String] { Array(table.keys) }
}
