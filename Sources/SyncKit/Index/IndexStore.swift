import Foundation
import GRDB
import NIOCore

/// The persistent index: every local record, in SQLite (WAL mode) under `.synckit/index.db`.
///
/// Why it exists: after a restart the scanner compares each file's size, mtime and inode to the
/// stored record and re-hashes only what changed, and a record that has no file any more is a
/// deletion made while the node was down. Records are stored as one blob each (the wire form
/// plus the local inode) keyed by path, with the sequence number in its own indexed column.
/// Writes are batched into one transaction per engine step, so 20,000 new files cost a few
/// commits rather than 20,000.
public final class IndexStore: Sendable {
    private let pool: DatabasePool
    /// Random ID of this index database, sent in `hello`: when it changes (the database was
    /// deleted), peers know our sequence numbers started over.
    public let indexID: UInt64

    public init(path: String) throws {
        do {
            var config = Configuration()
            config.label = "synckit.index"
            // WAL with synchronous=NORMAL: a commit costs no fsync (the WAL is synced at
            // checkpoints). A power cut can lose the last commits but never corrupts the
            // database, and lost records are rebuilt by the next scan: the files are the truth.
            config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
            pool = try DatabasePool(path: path, configuration: config)
            try pool.write { db in
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS files (
                        path TEXT PRIMARY KEY NOT NULL,
                        sequence INTEGER NOT NULL,
                        record BLOB NOT NULL
                    );
                    CREATE INDEX IF NOT EXISTS files_sequence ON files(sequence);
                    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
                    """)
            }
            // After an unclean stop (crash, kill -9, power cut) the last records and sequence
            // numbers sent to peers may be missing here, and the numbers would be handed out
            // again for other changes. A new index ID tells peers to forget our old sequence
            // numbers and ask for everything again: a little traffic instead of lost updates.
            indexID = try pool.write { db -> UInt64 in
                let clean = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'cleanShutdown'") ?? 1
                try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('cleanShutdown', 0)")
                if clean == 1, let v = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'indexID'") {
                    return UInt64(bitPattern: v)
                }
                let id = UInt64.random(in: 1...UInt64(Int64.max))
                try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('indexID', ?)", arguments: [Int64(bitPattern: id)])
                return id
            }
        } catch let error as SyncError {
            throw error
        } catch {
            throw SyncError(.index, "cannot open the index at \(path)", underlying: error)
        }
    }

    /// Every stored record.
    public func loadAll() throws -> [FileRecord] {
        do {
            return try pool.read { db in
                var out = [FileRecord]()
                let rows = try Row.fetchCursor(db, sql: "SELECT record FROM files")
                while let row = try rows.next() {
                    let data: Data = row[0]
                    out.append(try Self.decode(data))
                }
                return out
            }
        } catch {
            throw SyncError(.index, "cannot read the index", underlying: error)
        }
    }

    /// Stores (replaces) records in one transaction.
    public func save(_ records: [FileRecord]) throws {
        guard !records.isEmpty else { return }
        do {
            try pool.write { db in
                let statement = try db.cachedStatement(sql: "INSERT OR REPLACE INTO files(path, sequence, record) VALUES (?, ?, ?)")
                for r in records {
                    try statement.execute(arguments: [r.path, Int64(bitPattern: r.sequence), Self.encode(r)])
                }
            }
        } catch {
            throw SyncError(.index, "cannot write the index", underlying: error)
        }
    }

    static func encode(_ r: FileRecord) -> Data {
        var b = ByteBufferAllocator().buffer(capacity: 128 + r.blocks.count * 36)
        WireCodec.writeRecord(r, to: &b)
        b.writeInteger(r.inode)
        return Data(b.readableBytesView)
    }

    static func decode(_ data: Data) throws -> FileRecord {
        var reader = WireCodec.Reader(ByteBuffer(bytes: data))
        var r = try WireCodec.readRecord(&reader)
        r.inode = try reader.integer(UInt64.self)
        return r
    }

    /// Records a clean stop (everything sent to peers is stored) and closes the database.
    public func close() throws {
        try pool.write { db in try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('cleanShutdown', 1)") }
        try pool.close()
    }
}
