/// What one index write holds: this node's changed records, and what peers sent. The machine
/// decides what and when (group commit); the shell writes it in one transaction
/// (`IndexPersistence.save`).
public struct IndexChanges: Sendable {
    /// Local records (new or changed).
    public var records: [FileRecord] = []
    /// Peers whose stored records are to be dropped first (their index was reset).
    public var forgottenPeers: Set<NodeID> = []
    /// Records peers sent, and each such peer's index ID and highest sequence received.
    public var peerRecords: [NodeID: [FileRecord]] = [:]
    public var peerState: [NodeID: PeerIndexState] = [:]
    public init() {}
    public var isEmpty: Bool { records.isEmpty && forgottenPeers.isEmpty && peerRecords.isEmpty && peerState.isEmpty }
}

/// Where a peer's index stands: which of its databases, and up to which of its sequence
/// numbers this node holds its records.
public struct PeerIndexState: Sendable, Equatable {
    public var indexID: UInt64
    public var maxSequence: UInt64
    public init(indexID: UInt64, maxSequence: UInt64) {
        self.indexID = indexID
        self.maxSequence = maxSequence
    }
}

/// A peer's index as stored: its ID, where it stands, and its records.
public struct StoredPeer: Sendable {
    public var id: NodeID
    public var state: PeerIndexState
    public var records: [FileRecord]
    public init(id: NodeID, state: PeerIndexState, records: [FileRecord]) {
        self.id = id
        self.state = state
        self.records = records
    }
}

/// The index on disk, as the node uses it: SQLite in production (`IndexStore`), a dictionary
/// in tests and simulations (`InMemoryIndex` in SyncKitTesting). Every write is durable when
/// the call returns (a crash loses only what was never written).
public protocol IndexPersistence: Sendable {
    /// Identifies this index database; a new one tells peers to forget our sequence numbers.
    var indexID: UInt64 { get }
    /// Every sequence number handed out so far is at most this.
    var reservedSequence: UInt64 { get }
    func loadAll() throws -> [FileRecord]
    func loadPeers() throws -> [StoredPeer]
    /// `loadAll` in chunks (see the extension's default).
    func forEachRecord(chunk: Int, _ body: ([FileRecord]) throws -> Void) throws
    /// `loadPeers` in chunks (see the extension's default).
    func forEachPeer(chunk: Int, _ body: (NodeID, PeerIndexState, [FileRecord]) throws -> Void) throws
    func loadIntents() throws -> [FileRecord]
    func save(_ changes: IndexChanges) throws
    func reserveSequences(through: UInt64) throws
    func saveIntents(_ records: [FileRecord]) throws
    func clearIntents() throws
    func close() throws
}

extension IndexPersistence {
    /// Every stored local record, handed to `body` in chunks of at most `chunk`: a store that
    /// can stream (`IndexStore`) never decodes a million records into one array. This default
    /// loads them all first.
    public func forEachRecord(chunk: Int, _ body: ([FileRecord]) throws -> Void) throws {
        try Self.inChunks(try loadAll(), chunk, body)
    }

    /// Every peer's stored index: `body` gets the peer and where its index stands with each
    /// chunk of its records (at least once per peer, with no records if it has none).
    public func forEachPeer(chunk: Int, _ body: (NodeID, PeerIndexState, [FileRecord]) throws -> Void) throws {
        for peer in try loadPeers() { try Self.inChunks(peer.records, chunk) { try body(peer.id, peer.state, $0) } }
    }

    /// `records` in slices of at most `chunk`; once, empty, when there are none.
    private static func inChunks(_ records: [FileRecord], _ chunk: Int, _ body: ([FileRecord]) throws -> Void) throws {
        let size = max(1, chunk)
        var start = 0
        repeat {
            let end = records.count - start > size ? start + size : records.count
            try body(Array(records[start..<end]))
            start = end
        } while start < records.count
    }
}
