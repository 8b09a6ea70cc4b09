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
    /// Once the peer's index outgrew `limit`: its table in the node's `SpillStore` (see
    /// `LocalIndex`), where boxes are not shared (each row is its own bytes on disk).
    private var spilled: (store: SpillStore, table: Int64)?
    private var spilledCount = 0
    private var store: SpillStore?
    private var limit = Int.max

    public init() {}

    /// Lets the records move to `store` once there are more than `limit` (now, if there are).
    mutating func spill(to store: SpillStore, above limit: Int) {
        self.store = store
        self.limit = limit
        if table.count > limit { moveToStore() }
    }

    private mutating func moveToStore() {
        guard let store, spilled == nil else { return }
        let id = store.newTable()
        for (path, entry) in table {
            var r = entry.box.record
            r.path = path
            r.sequence = entry.sequence
            store.peerPut(id, r)
        }
        spilledCount = table.count
        table = [:]
        spilled = (store, id)
    }

    /// True once the records live in the store (boxes are then not used).
    public var isSpilled: Bool { spilled != nil }

    /// The store's table number of this peer's records, once spilled.
    var spillTable: Int64? { spilled?.table }

    /// The peer's record of `path`, with the peer's sequence number.
    public subscript(path: String) -> FileRecord? {
        if let spilled { return spilled.store.peerGet(spilled.table, path) }
        guard let entry = table[path] else { return nil }
        var r = entry.box.record
        r.sequence = entry.sequence
        return r
    }

    /// The peer's sequence number of its record of `path`.
    public func sequence(of path: String) -> UInt64? {
        if let spilled { return spilled.store.peerSequence(spilled.table, path) }
        return table[path]?.sequence
    }

    /// The shared box of `path` (to share it with another peer's equal record); nil once spilled.
    public func box(of path: String) -> Box? { spilled == nil ? table[path]?.box : nil }

    /// Stores `record` as the peer's record of its path, through `box` (which holds the same
    /// change; unused once spilled).
    public mutating func set(_ record: FileRecord, box: Box?) {
        if let spilled {
            if spilled.store.peerPut(spilled.table, record) { spilledCount += 1 }
            return
        }
        table[record.path] = (box ?? Box(record), record.sequence)
        if table.count > limit { moveToStore() }
    }

    /// Forgets every record (the peer's index was reset).
    mutating func removeAll() {
        if let spilled { spilled.store.peerDrop(spilled.table) }
        spilled = nil
        spilledCount = 0
        table = [:]
    }

    public var count: Int { spilled == nil ? table.count : spilledCount }

    /// Every path the peer has a record of.
    public var paths: [String] {
        guard spilled != nil else { return Array(table.keys) }
        var out = [String]()
        forEachPath { out.append($0) }
        return out
    }

    /// Calls `body` with every path the peer has a record of, a page at a time when spilled.
    func forEachPath(_ body: (String) -> Void) {
        guard let spilled else {
            for path in table.keys { body(path) }
            return
        }
        var last: String?
        while true {
            let page = spilled.store.peerPaths(spilled.table, after: last, limit: 4096)
            guard let end = page.last else { return }
            page.forEach(body)
            last = end
        }
    }
}
