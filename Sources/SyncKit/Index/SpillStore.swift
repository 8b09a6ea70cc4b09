import Foundation
import GRDB

/// Where the engine's large tables go when a folder outgrows memory: a scratch SQLite file in
/// the state directory (`spill.db`), made empty at every start and never relied on after a
/// crash (the durable index is `IndexStore`; this file only stands in for RAM).
///
/// Why: at a million files the node's own index, each peer's index, the block map and the queue
/// of pulls took 900 bytes to 1.5 KB per file in memory (1.6 GiB on a receiver; issue 18's goal
/// is 200 MiB). Each of those tables starts in memory and moves here once it holds more than
/// `SyncConfiguration.memoryRecordLimit` entries (`LocalIndex`, `PeerRecords`, `BlockMap`,
/// `PullQueue`); from then on every lookup is a point query on a primary key or an index, and
/// what stays in memory is SQLite's page cache (bounded by `cacheKiB`), not one object per file.
///
/// The file needs no durability: no journal, no fsync, an exclusive lock taken once (each
/// statement then costs no file-locking syscalls). One connection, serialized by GRDB's queue,
/// so the scanner's thread may read the local table while the node writes it.
///
/// A failure here (the disk full under the state directory) stops the process: the engine's
/// decisions cannot go on without their tables, and the restart rebuilds them from the index.
public final class SpillStore: @unchecked Sendable {
    private let queue: DatabaseQueue
    public let path: String
    /// Tables handed out (`newTable()`): each peer's index gets its own number.
    private let nextTable = Locked<Int64>(1)

    /// Opens (after deleting) the scratch file at `path`, with a page cache of `cacheKiB`.
    public init(path: String, cacheKiB: Int = 16 * 1024) throws {
        self.path = path
        for suffix in ["", "-journal", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        var config = Configuration()
        config.label = "synckit.spill"
        config.journalMode = .default
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode = OFF")
            try db.execute(sql: "PRAGMA synchronous = OFF")
            try db.execute(sql: "PRAGMA locking_mode = EXCLUSIVE")
            try db.execute(sql: "PRAGMA cache_size = -\(cacheKiB)")
            try db.execute(sql: "PRAGMA temp_store = FILE")
        }
        queue = try DatabaseQueue(path: path, configuration: config)
        try queue.inDatabase { db in
            try db.execute(sql: """
                CREATE TABLE local (path TEXT PRIMARY KEY NOT NULL, sequence INTEGER NOT NULL, is_file INTEGER NOT NULL,
                    live_size INTEGER NOT NULL, record BLOB NOT NULL) WITHOUT ROWID;
                CREATE INDEX local_sequence ON local(sequence);
                CREATE TABLE peer (
                    peer INTEGER NOT NULL, path TEXT NOT NULL, sequence INTEGER NOT NULL,
                    live_size INTEGER NOT NULL, record BLOB NOT NULL,
                    PRIMARY KEY (peer, path)
                ) WITHOUT ROWID;
                CREATE TABLE blocks (hash BLOB NOT NULL, path TEXT NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL,
                    PRIMARY KEY (hash, path, offset)) WITHOUT ROWID;
                CREATE INDEX blocks_path ON blocks(path);
                CREATE TABLE queue (path TEXT PRIMARY KEY NOT NULL, phase INTEGER NOT NULL, prim INTEGER NOT NULL, size INTEGER NOT NULL) WITHOUT ROWID;
                CREATE INDEX queue_order ON queue(phase, prim, path);
                """)
        }
    }

    /// The scratch file goes with the last reference to it (a stopped node leaves no copy of
    /// its index behind; a crashed one's is deleted at the next start).
    deinit {
        for suffix in ["", "-journal", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }

    /// A new table number (for one peer's index).
    func newTable() -> Int64 {
        nextTable.withLock { n in
            defer { n += 1 }
            return n
        }
    }

    /// Runs `body` on the connection; a failure is fatal (see the type's note).
    private func run<T>(_ what: String, _ body: (Database) throws -> T) -> T {
        do {
            return try queue.inDatabase(body)
        } catch {
            fatalError("the spill file \(path) failed (\(what)): \(error)")
        }
    }

    private static func text(_ row: Row, _ i: Int) -> String { row[i] }

    // MARK: this node's records

    /// True when the table holds a record of `path` (nothing decoded).
    func localContains(_ path: String) -> Bool {
        run("look up a record") { db in
            try Int.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM local WHERE path = ?"), arguments: [path]) != nil
        }
    }

    func localGet(_ path: String) -> FileRecord? {
        run("read a record") { db in
            let s = try db.cachedStatement(sql: "SELECT record FROM local WHERE path = ?")
            guard let data = try Data.fetchOne(s, arguments: [path]) else { return nil }
            return try IndexStore.decode(data)
        }
    }

    /// Stores `record`; true when its path was not in the table before.
    @discardableResult
    func localPut(_ r: FileRecord) -> Bool {
        run("write a record") { db in
            let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO local(path, sequence, is_file, live_size, record) VALUES (?, ?, ?, ?, ?)")
            let blob = IndexStore.encode(r)
            let isFile = !r.deleted && r.kind == .file ? 1 : 0
            let live = r.deleted ? -1 : Int64(clamping: r.size)
            try insert.execute(arguments: [r.path, Int64(bitPattern: r.sequence), isFile, live, blob])
            if db.changesCount > 0 { return true }
            let update = try db.cachedStatement(sql: "UPDATE local SET sequence = ?, is_file = ?, live_size = ?, record = ? WHERE path = ?")
            try update.execute(arguments: [Int64(bitPattern: r.sequence), isFile, live, blob, r.path])
            return false
        }
    }

    /// Live files, live bytes, and live records whose path contains `marker`, summed in SQLite
    /// (status at a million files: one pass in C, no record decoded).
    func localTotals(marker: String) -> (files: Int, bytes: UInt64, marked: Int) {
        run("sum the index") { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT total(is_file), total(max(live_size, 0)), total(live_size >= 0 AND instr(path, ?) > 0) FROM local
                """, arguments: [marker]) else { return (0, 0, 0) }
            let files: Double = row[0]
            let bytes: Double = row[1]
            let marked: Double = row[2]
            return (Int(files), UInt64(bytes), Int(marked))
        }
    }

    /// The records whose path contains `text` (conflict copies: a pass in SQLite, few decoded).
    func localContaining(_ text: String) -> [FileRecord] {
        run("search the index") { db in
            try IndexStore.records(db, sql: "SELECT record FROM local WHERE instr(path, ?) > 0", arguments: [text])
        }
    }

    /// Removes the record of `path`; true when there was one.
    @discardableResult
    func localRemove(_ path: String) -> Bool {
        run("delete a record") { db in
            try db.cachedStatement(sql: "DELETE FROM local WHERE path = ?").execute(arguments: [path])
            return db.changesCount > 0
        }
    }

    /// Up to `limit` records in path order after `after` (nil: from the start).
    func localPage(after: String?, limit: Int) -> [FileRecord] {
        run("read records") { db in
            // "" sorts before every path (paths are never empty).
            try IndexStore.records(db, sql: "SELECT record FROM local WHERE path > ? ORDER BY path LIMIT ?", arguments: [after ?? "", limit])
        }
    }

    /// The records whose path starts with `prefix` (a directory's subtree, `prefix` ending in `/`).
    func localUnder(_ prefix: String) -> [FileRecord] {
        run("read a subtree") { db in
            // Paths sort by their UTF-8 bytes (SQLite's BINARY collation): the subtree is the
            // range from the prefix to the prefix with its last byte raised by one ('/' + 1 = '0'),
            // cut as bytes.
            let upper = String(decoding: prefix.utf8.dropLast() + [UInt8(ascii: "0")], as: UTF8.self)
            return try IndexStore.records(db, sql: "SELECT record FROM local WHERE path >= ? AND path < ? ORDER BY path", arguments: [prefix, upper])
        }
    }

    /// The (path, sequence) of every record numbered above `since`, in sequence order.
    func localKeys(sequenceAbove since: UInt64) -> [(path: String, sequence: UInt64)] {
        run("read sequence numbers") { db in
            let rows = try Row.fetchCursor(db.cachedStatement(sql: "SELECT path, sequence FROM local WHERE sequence > ? ORDER BY sequence"), arguments: [Int64(bitPattern: since)])
            var out = [(path: String, sequence: UInt64)]()
            while let row = try rows.next() {
                let seq: Int64 = row[1]
                out.append((Self.text(row, 0), UInt64(bitPattern: seq)))
            }
            return out
        }
    }

    /// Up to `limit` records numbered in (after, through], in sequence order.
    func localRange(after: UInt64, through: UInt64, limit: Int) -> [FileRecord] {
        run("read records by sequence") { db in
            try IndexStore.records(db, sql: "SELECT record FROM local WHERE sequence > ? AND sequence <= ? ORDER BY sequence LIMIT ?",
                                   arguments: [Int64(bitPattern: after), Int64(bitPattern: through), limit])
        }
    }

    /// The highest sequence number a record holds (0: none).
    func localMaxSequence() -> UInt64 {
        run("read the highest sequence") { db in
            UInt64(bitPattern: try Int64.fetchOne(db, sql: "SELECT max(sequence) FROM local") ?? 0)
        }
    }

    // MARK: peers' records

    /// The record of `path` in table `peer`, with the peer's sequence number.
    func peerGet(_ peer: Int64, _ path: String) -> FileRecord? {
        run("read a peer's record") { db in
            let s = try db.cachedStatement(sql: "SELECT record, sequence FROM peer WHERE peer = ? AND path = ?")
            guard let row = try Row.fetchOne(s, arguments: [peer, path]) else { return nil }
            var r = try IndexStore.decode(row[0])
            let seq: Int64 = row[1]
            r.sequence = UInt64(bitPattern: seq)
            return r
        }
    }

    func peerSequence(_ peer: Int64, _ path: String) -> UInt64? {
        run("read a peer's sequence") { db in
            let s = try db.cachedStatement(sql: "SELECT sequence FROM peer WHERE peer = ? AND path = ?")
            return try Int64.fetchOne(s, arguments: [peer, path]).map { UInt64(bitPattern: $0) }
        }
    }

    /// Stores the peer's record (its `sequence` is the peer's); true when the path is new.
    @discardableResult
    func peerPut(_ peer: Int64, _ r: FileRecord) -> Bool {
        run("write a peer's record") { db in
            var stored = r
            stored.inode = 0
            let blob = IndexStore.encode(stored)
            let live = r.deleted ? -1 : Int64(clamping: r.size)
            let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO peer(peer, path, sequence, live_size, record) VALUES (?, ?, ?, ?, ?)")
            try insert.execute(arguments: [peer, r.path, Int64(bitPattern: r.sequence), live, blob])
            if db.changesCount > 0 { return true }
            let update = try db.cachedStatement(sql: "UPDATE peer SET sequence = ?, live_size = ?, record = ? WHERE peer = ? AND path = ?")
            try update.execute(arguments: [Int64(bitPattern: r.sequence), live, blob, peer, r.path])
            return false
        }
    }

    /// Up to `limit` of the peer's paths in order after `after` (nil: from the start).
    func peerPaths(_ peer: Int64, after: String?, limit: Int) -> [String] {
        run("read a peer's paths") { db in
            let rows = try Row.fetchCursor(
                db.cachedStatement(sql: "SELECT path FROM peer WHERE peer = ? AND path > ? ORDER BY path LIMIT ?"),
                arguments: [peer, after ?? "", limit])
            var out = [String]()
            while let row = try rows.next() { out.append(Self.text(row, 0)) }
            // "" sorts first, but is itself a valid key only in theory: paths are never empty.
            return out
        }
    }

    func peerDrop(_ peer: Int64) {
        run("drop a peer's records") { db in try db.execute(sql: "DELETE FROM peer WHERE peer = ?", arguments: [peer]) }
    }

    // MARK: block map

    private static func blob(_ h: BlockHash) -> Data {
        var d = Data(count: 32)
        d.withUnsafeMutableBytes { raw in
            for (i, w) in [h.w0, h.w1, h.w2, h.w3].enumerated() { raw.storeBytes(of: w.bigEndian, toByteOffset: i * 8, as: UInt64.self) }
        }
        return d
    }

    /// Replaces the blocks known at `path` with `blocks` (hash, offset, size).
    func blocksReplace(_ path: String, _ blocks: [(BlockHash, UInt64, UInt32)]) {
        run("write the block map") { db in
            try db.cachedStatement(sql: "DELETE FROM blocks WHERE path = ?").execute(arguments: [path])
            let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO blocks(hash, path, offset, size) VALUES (?, ?, ?, ?)")
            for (hash, offset, size) in blocks {
                try insert.execute(arguments: [Self.blob(hash), path, Int64(bitPattern: offset), Int64(size)])
            }
        }
    }

    /// Up to `limit` places of the block `hash`.
    func blockLocations(_ hash: BlockHash, limit: Int) -> [BlockMap.Location] {
        run("read the block map") { db in
            let rows = try Row.fetchCursor(db.cachedStatement(sql: "SELECT path, offset, size FROM blocks WHERE hash = ? LIMIT ?"), arguments: [Self.blob(hash), limit])
            var out = [BlockMap.Location]()
            while let row = try rows.next() {
                let offset: Int64 = row[1]
                let size: Int64 = row[2]
                out.append(.init(path: Self.text(row, 0), offset: UInt64(bitPattern: offset), size: UInt32(clamping: size)))
            }
            return out
        }
    }

    // MARK: queue of pulls

    func queueKey(_ path: String) -> (phase: Int, primary: Int64)? {
        run("read the queue") { db in
            let s = try db.cachedStatement(sql: "SELECT phase, prim FROM queue WHERE path = ?")
            guard let row = try Row.fetchOne(s, arguments: [path]) else { return nil }
            let phase: Int64 = row[0]
            let prim: Int64 = row[1]
            return (Int(phase), prim)
        }
    }

    /// Queues `path` at (phase, primary), with the bytes its pull brings; true when it was not
    /// queued before.
    @discardableResult
    func queuePut(_ path: String, phase: Int, primary: Int64, size: UInt64) -> Bool {
        run("write the queue") { db in
            let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO queue(path, phase, prim, size) VALUES (?, ?, ?, ?)")
            try insert.execute(arguments: [path, Int64(phase), primary, Int64(clamping: size)])
            if db.changesCount > 0 { return true }
            try db.cachedStatement(sql: "UPDATE queue SET phase = ?, prim = ?, size = ? WHERE path = ?")
                .execute(arguments: [Int64(phase), primary, Int64(clamping: size), path])
            return false
        }
    }

    @discardableResult
    func queueRemove(_ path: String) -> Bool {
        run("write the queue") { db in
            try db.cachedStatement(sql: "DELETE FROM queue WHERE path = ?").execute(arguments: [path])
            return db.changesCount > 0
        }
    }

    /// The first queued path in pull order.
    func queueFirst() -> (path: String, phase: Int, primary: Int64, size: UInt64)? {
        run("read the queue") { db in
            guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT path, phase, prim, size FROM queue ORDER BY phase, prim, path LIMIT 1")) else { return nil }
            let phase: Int64 = row[1]
            let prim: Int64 = row[2]
            let size: Int64 = row[3]
            return (Self.text(row, 0), Int(phase), prim, UInt64(max(0, size)))
        }
    }

    /// Up to `limit` queued paths in path order after `after`.
    func queuePaths(after: String?, limit: Int) -> [String] {
        run("read the queue") { db in
            let rows = try Row.fetchCursor(db.cachedStatement(sql: "SELECT path FROM queue WHERE path > ? ORDER BY path LIMIT ?"), arguments: [after ?? "", limit])
            var out = [String]()
            while let row = try rows.next() { out.append(Self.text(row, 0)) }
            return out
        }
    }

    /// The queued paths and the bytes their pulls bring (for status: one pass in SQLite).
    func queueTotals() -> (files: Int, bytes: UInt64) {
        run("sum the queue") { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT count(*), total(size) FROM queue") else { return (0, 0) }
            let files: Int64 = row[0]
            let bytes: Double = row[1]
            return (Int(files), UInt64(max(0, bytes)))
        }
    }

    /// How many queued paths `peer` (a table number) holds live content for, and its bytes.
    func queueOffered(by peer: Int64) -> (files: Int, bytes: UInt64) {
        run("sum the queue") { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT count(*), total(p.live_size) FROM queue q JOIN peer p ON p.peer = ? AND p.path = q.path WHERE p.live_size >= 0
                """, arguments: [peer]) else { return (0, 0) }
            let files: Int64 = row[0]
            let bytes: Double = row[1]
            return (Int(files), UInt64(max(0, bytes)))
        }
    }
}
