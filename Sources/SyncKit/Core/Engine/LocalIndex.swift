/// This node's index by path: a dictionary in memory, or a table of the node's `SpillStore`
/// once it holds more records than the limit it was given (`spill(to:above:)`).
///
/// In memory it is a value like the dictionary it replaces (a copy is a snapshot). Spilled, it
/// is a view of the one table: copies see each other's writes. Only the node's own engine
/// writes it; a scan reads it from another thread (the store serializes the two) and tells a
/// record changed since the scan began by its sequence number (`Scanner`).
public struct LocalIndex: Sendable, Sequence {
    private var memory: [String: FileRecord] = [:]
    /// The store the records live in once spilled.
    private var spilled: SpillStore?
    private var spilledCount = 0
    /// Where to spill, and above how many records.
    private var store: SpillStore?
    private var limit = Int.max
    /// For the copy handed to a scan: the engine's highest sequence number when the scan
    /// began. A record numbered above it changed during the scan (`NodeMachine.scanned`).
    public internal(set) var scanHorizon: UInt64?

    public init() {}

    /// An index of these records (a scan's `known` set, tests).
    public init(_ records: [String: FileRecord]) { memory = records }

    /// Lets the index move to `store` once it holds more than `limit` records (now, if it does).
    mutating func spill(to store: SpillStore, above limit: Int) {
        self.store = store
        self.limit = limit
        if memory.count > limit { moveToStore() }
    }

    private mutating func moveToStore() {
        guard let store, spilled == nil else { return }
        for r in memory.values { store.localPut(r) }
        spilledCount = memory.count
        memory = [:]
        spilled = store
    }

    /// True once the records live in the store.
    public var isSpilled: Bool { spilled != nil }

    public subscript(path: String) -> FileRecord? {
        get { spilled.map { $0.localGet(path) } ?? memory[path] }
        set {
            if let spilled {
                if var r = newValue {
                    r.path = path
                    if spilled.localPut(r) { spilledCount += 1 }
                } else if spilled.localRemove(path) {
                    spilledCount -= 1
                }
            } else {
                memory[path] = newValue
                if memory.count > limit { moveToStore() }
            }
        }
    }

    /// True when the index holds a record of `path` (spilled: without decoding it).
    public func contains(_ path: String) -> Bool {
        spilled.map { $0.localContains(path) } ?? (memory[path] != nil)
    }

    public var count: Int { spilled == nil ? memory.count : spilledCount }
    public var isEmpty: Bool { count == 0 }

    /// Every path (spilled: read from the store, in path order).
    public var keys: [String] { spilled == nil ? Array(memory.keys) : map(\.key) }
    /// Every record (spilled: read from the store, in path order).
    public var values: [FileRecord] { spilled == nil ? Array(memory.values) : map(\.value) }

    /// The index as a dictionary (tests, `SyncNode.localRecords`): in memory, the table itself;
    /// spilled, every record read into one.
    public var dictionary: [String: FileRecord] {
        guard spilled != nil else { return memory }
        var out = [String: FileRecord]()
        for (path, r) in self { out[path] = r }
        return out
    }

    /// Live files, their bytes, and live records whose path contains `marker` (for status).
    public func totals(marker: String) -> (files: Int, bytes: UInt64, marked: Int) {
        if let spilled { return spilled.localTotals(marker: marker) }
        var files = 0, bytes: UInt64 = 0, marked = 0
        for r in memory.values where !r.deleted {
            if r.kind == .file { files += 1 }
            bytes += r.size
            if r.path.contains(marker) { marked += 1 }
        }
        return (files, bytes, marked)
    }

    /// The records whose path contains `text`.
    public func records(containing text: String) -> [FileRecord] {
        if let spilled { return spilled.localContaining(text) }
        return memory.values.filter { $0.path.contains(text) }
    }

    /// The records under the directory `prefix` (ending in `/`).
    public func records(under prefix: String) -> [FileRecord] {
        if let spilled { return spilled.localUnder(prefix) }
        return memory.values.filter { $0.path.hasPrefix(prefix) }
    }

    /// The (path, sequence) of every record numbered above `since`, in sequence order.
    func keys(sequenceAbove since: UInt64) -> [(path: String, sequence: UInt64)] {
        if let spilled { return spilled.localKeys(sequenceAbove: since) }
        var out = [(path: String, sequence: UInt64)]()
        for r in memory.values where r.sequence > since { out.append((r.path, r.sequence)) }
        out.sort { $0.sequence < $1.sequence }
        return out
    }

    /// Spilled only: up to `limit` records numbered in (after, through], in sequence order.
    func records(sequenceAfter after: UInt64, through: UInt64, limit: Int) -> [FileRecord] {
        spilled?.localRange(after: after, through: through, limit: limit) ?? []
    }

    /// Spilled only: the highest sequence number a record holds.
    var maxSequence: UInt64 { spilled?.localMaxSequence() ?? 0 }

    /// Iterates (path, record); spilled, a page of 4,096 records at a time in path order, so a
    /// walk over a million records never holds them all.
    public struct Iterator: IteratorProtocol {
        var inMemory: Dictionary<String, FileRecord>.Iterator?
        var store: SpillStore?
        var page: [FileRecord] = []
        var at = 0
        var last: String?
        var done = false

        public mutating func next() -> (key: String, value: FileRecord)? {
            if inMemory != nil { return inMemory!.next() }
            guard let store, !done else { return nil }
            if at == page.count {
                page = store.localPage(after: last, limit: 4096)
                at = 0
                if page.isEmpty {
                    done = true
                    return nil
                }
                last = page.last!.path
            }
            defer { at += 1 }
            return (page[at].path, page[at])
        }
    }

    public func makeIterator() -> Iterator {
        spilled == nil ? Iterator(inMemory: memory.makeIterator()) : Iterator(store: spilled)
    }
}

extension LocalIndex: ExpressibleByDictionaryLiteral {
    /// An index of these records (tests: `known: [:]`).
    public init(dictionaryLiteral elements: (String, FileRecord)...) {
        self.init(Dictionary(elements, uniquingKeysWith: { $1 }))
    }
}
