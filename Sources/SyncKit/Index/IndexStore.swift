import Foundation
import GRDB
import NIOCore

/// The persistent index, in SQLite (WAL mode) under `.synckit/index.db`: this node's records,
/// what each peer announced, and the intents of pulls in flight.
///
/// Why each part exists:
/// - **Local records** (`files`): after a restart the scanner compares each file's size, mtime
///   and inode to the stored record and re-hashes only what changed; a record that has no file
///   any more is a deletion made while the node was down.
/// - **Peers' records** (`peer_files`, `peers`): what each peer sent, and up to which of its
///   sequence numbers, so that a restart asks each peer only for what changed since (a 20,000
///   file folder is not exchanged again), and so that the first scan after a restart knows the
///   versions the cluster holds (a file found on disk with a peer's content adopts that peer's
///   version instead of counting as a new local edit).
/// - **Intents** (`intents`): a pull records the record it is about to put on disk *before* it
///   changes the disk (renames a file into place, patches, deletes, makes a directory). If the
///   node dies after the disk changed but before the pulled record reached `files` (they are
///   group-committed), the first scan after the restart finds the intent's content on disk and
///   adopts its version. Without it that scan saw "content that differs from my record" and
///   bumped this node's counter for content it never changed: a version concurrent with every
///   later change, which once brought a deleted file back on every node.
/// - **The sequence reservation** (`meta.sequenceReserved`): every sequence number handed out
///   is at most this, and it is written before any number above the previous mark is used, so a
///   restart after a crash starts above every number peers may have seen and no number is ever
///   given to two changes. The index ID then stays the same across crashes.
///
/// Records are stored as one blob each (the wire form plus the local inode). Writes are batched
/// into one transaction per flush, so 20,000 new files cost a few commits rather than 20,000.
public final class IndexStore: IndexPersistence {
    private let pool: DatabasePool
    /// Random ID of this index database, sent in `hello`: when it changes (the database was
    /// deleted), peers know our sequence numbers started over.
    public let indexID: UInt64
    /// The sequence reservation found at open: the first number to hand out is above it.
    public let reservedSequence: UInt64

    public init(path: String) throws {
        do {
            var config = Configuration()
            config.label = "synckit.index"
            // WAL with synchronous=NORMAL: a commit costs no fsync (the WAL is synced at
            // checkpoints, and by the group commit's syncfs when the state directory shares the
            // folder's file system). A power cut can lose the last commits but never corrupts
            // the database; what is lost is rebuilt by the next scan and the next index exchange.
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
                    CREATE TABLE IF NOT EXISTS intents (path TEXT PRIMARY KEY NOT NULL, record BLOB NOT NULL);
                    CREATE TABLE IF NOT EXISTS peers (
                        peer BLOB PRIMARY KEY NOT NULL,
                        index_id INTEGER NOT NULL,
                        max_sequence INTEGER NOT NULL
                    );
                    CREATE TABLE IF NOT EXISTS peer_files (
                        peer BLOB NOT NULL,
                        path TEXT NOT NULL,
                        record BLOB NOT NULL,
                        PRIMARY KEY (peer, path)
                    ) WITHOUT ROWID;
                    """)
            }
            (indexID, reservedSequence) = try pool.write { db -> (UInt64, UInt64) in
                let reserved = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'sequenceReserved'") ?? 0
                if let v = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'indexID'") {
                    return (UInt64(bitPattern: v), UInt64(bitPattern: reserved))
                }
                let id = UInt64.random(in: 1...UInt64(Int64.max))
                try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('indexID', ?)", arguments: [Int64(bitPattern: id)])
                return (id, UInt64(bitPattern: reserved))
            }
        } catch let error as SyncError {
            throw error
        } catch {
            throw SyncError(.index, "cannot open the index at \(path)", underlying: error)
        }
    }

    /// Every stored local record.
    public func loadAll() throws -> [FileRecord] {
        try read("cannot read the index") { db in
            try Self.records(db, sql: "SELECT record FROM files", arguments: [])
        }
    }

    /// Every local record, decoded from a cursor and handed over a chunk at a time.
    public func forEachRecord(chunk: Int, _ body: ([FileRecord]) throws -> Void) throws {
        try read("cannot read the index") { db in
            try Self.chunks(db, sql: "SELECT record FROM files", arguments: [], chunk: chunk) { try body($0) }
        }
    }

    /// Every peer's records, from a cursor, a chunk at a time (see `IndexPersistence`).
    public func forEachPeer(chunk: Int, _ body: (NodeID, PeerIndexState, [FileRecord]) throws -> Void) throws {
        try read("cannot read peers' indexes") { db in
            for row in try Row.fetchAll(db, sql: "SELECT peer, index_id, max_sequence FROM peers") {
                let key: Data = row[0]
                let indexID: Int64 = row[1]
                let maxSequence: Int64 = row[2]
                guard key.count == 32 else { continue }
                let id = NodeID(bytes: Array(key))
                let state = PeerIndexState(indexID: UInt64(bitPattern: indexID), maxSequence: UInt64(bitPattern: maxSequence))
                var handed = false
                try Self.chunks(db, sql: "SELECT record FROM peer_files WHERE peer = ?", arguments: [key], chunk: chunk) {
                    handed = true
                    try body(id, state, $0)
                }
                if !handed { try body(id, state, []) }
            }
        }
    }

    /// Stores (replaces) local records.
    public func save(_ records: [FileRecord]) throws {
        var changes = IndexChanges()
        changes.records = records
        try save(changes)
    }

    /// Writes a batch of changes in one transaction.
    public func save(_ changes: IndexChanges) throws {
        guard !changes.isEmpty else { return }
        try write("cannot write the index") { db in
            let file = try db.cachedStatement(sql: "INSERT OR REPLACE INTO files(path, sequence, record) VALUES (?, ?, ?)")
            let intent = try db.cachedStatement(sql: "SELECT record FROM intents WHERE path = ?")
            let dropIntent = try db.cachedStatement(sql: "DELETE FROM intents WHERE path = ?")
            for r in changes.records {
                try file.execute(arguments: [r.path, Int64(bitPattern: r.sequence), Self.encode(r)])
                // The pull's intent has served once its record (or a later one) is stored, in
                // the same transaction: left in place, every pulled file's intent stayed until
                // the next start, which loaded a million of them at once (900 MiB).
                if let data = try Data.fetchOne(intent, arguments: [r.path]),
                   Self.supersedes(r, intent: try Self.decode(data)) {
                    try dropIntent.execute(arguments: [r.path])
                }
            }
            for peer in changes.forgottenPeers {
                try db.execute(sql: "DELETE FROM peer_files WHERE peer = ?", arguments: [Data(peer.bytes)])
                try db.execute(sql: "DELETE FROM peers WHERE peer = ?", arguments: [Data(peer.bytes)])
            }
            let peerFile = try db.cachedStatement(sql: "INSERT OR REPLACE INTO peer_files(peer, path, record) VALUES (?, ?, ?)")
            for (peer, records) in changes.peerRecords {
                let key = Data(peer.bytes)
                for r in records { try peerFile.execute(arguments: [key, r.path, Self.encode(r)]) }
            }
            for (peer, state) in changes.peerState {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO peers(peer, index_id, max_sequence) VALUES (?, ?, ?)",
                    arguments: [Data(peer.bytes), Int64(bitPattern: state.indexID), Int64(bitPattern: state.maxSequence)])
            }
        }
    }

    /// Records that sequence numbers up to `through` may be handed out (see the type's note).
    public func reserveSequences(through: UInt64) throws {
        try write("cannot write the sequence reservation") { db in
            try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('sequenceReserved', ?)", arguments: [Int64(bitPattern: through)])
        }
    }

    // MARK: intents

    /// True when storing `record` makes `intent` (of the same path) needless: the record holds
    /// the intent's version or one that descends from it.
    public static func supersedes(_ record: FileRecord, intent: FileRecord) -> Bool {
        let order = record.version.compare(to: intent.version)
        return order == .equal || order == .newer
    }

    /// Records the targets of pulls about to change the disk (one transaction for the batch).
    public func saveIntents(_ records: [FileRecord]) throws {
        try write("cannot write pull intents") { db in
            let statement = try db.cachedStatement(sql: "INSERT OR REPLACE INTO intents(path, record) VALUES (?, ?)")
            for r in records { try statement.execute(arguments: [r.path, Self.encode(r)]) }
        }
    }

    /// The intents left by the last run (pulls that may have changed the disk unrecorded).
    public func loadIntents() throws -> [FileRecord] {
        try read("cannot read pull intents") { db in try Self.records(db, sql: "SELECT record FROM intents", arguments: []) }
    }

    /// Forgets every intent (after the first scan has looked at them).
    public func clearIntents() throws {
        try write("cannot clear pull intents") { db in try db.execute(sql: "DELETE FROM intents") }
    }

    // MARK: peers

    /// Every peer's stored index (`forEachPeer`, gathered).
    public func loadPeers() throws -> [StoredPeer] {
        var out = [StoredPeer]()
        try forEachPeer(chunk: 10_000) { id, state, records in
            if out.last?.id == id { out[out.count - 1].records += records } else { out.append(StoredPeer(id: id, state: state, records: records)) }
        }
        return out
    }

    // MARK: encoding

    static func encode(_ r: FileRecord) -> Data {
        var b = ByteBufferAllocator().buffer(capacity: 128 + r.blocks.count * 36)
        WireCodec.writeRecord(r, to: &b)
        b.writeInteger(r.inode)
        // After the inode, so a record written before fixed-size lists existed still reads.
        if !r.fixedBlocks.isEmpty { WireCodec.writeFixedBlocks(r, to: &b) }
        return Data(b.readableBytesView)
    }

    static func decode(_ data: Data) throws -> FileRecord {
        var reader = WireCodec.Reader(ByteBuffer(bytes: data))
        var r = try WireCodec.readRecord(&reader)
        r.inode = try reader.integer(UInt64.self)
        if reader.remaining > 0 { try WireCodec.readFixedBlocks(&reader, into: &r) }
        return r
    }

    /// The records of `sql`'s rows (one record blob each), decoded (also `SpillStore`'s reads).
    static func records(_ db: Database, sql: String, arguments: StatementArguments) throws -> [FileRecord] {
        var out = [FileRecord]()
        let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
        while let row = try rows.next() {
            let data: Data = row[0]
            out.append(try decode(data))
        }
        return out
    }

    /// Decodes the rows of `sql` (one record blob each) and hands them over `chunk` at a time.
    private static func chunks(_ db: Database, sql: String, arguments: StatementArguments, chunk: Int, _ body: ([FileRecord]) throws -> Void) throws {
        var batch = [FileRecord]()
        batch.reserveCapacity(min(max(1, chunk), 10_000))
        let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
        while let row = try rows.next() {
            let data: Data = row[0]
            batch.append(try decode(data))
            if batch.count >= chunk {
                try body(batch)
                batch.removeAll(keepingCapacity: true)
            }
        }
        if !batch.isEmpty { try body(batch) }
    }

    private func read<T>(_ what: String, _ body: (Database) throws -> T) throws -> T {
        do { return try pool.read(body) } catch { throw SyncError(.index, what, underlying: error) }
    }

    private func write<T>(_ what: String, _ body: (Database) throws -> T) throws -> T {
        do { return try pool.write(body) } catch { throw SyncError(.index, what, underlying: error) }
    }

    /// Closes the database.
    public func close() throws {
        try pool.close()
    }
}
