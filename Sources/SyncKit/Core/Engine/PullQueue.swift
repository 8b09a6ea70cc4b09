import HeapModule

/// The paths waiting for a pull, in pull order: each path once, at its sort key.
///
/// In memory: a heap ordered by (key, path), and by path where each one sits; a path moved or
/// dropped leaves its old heap entry behind, recognised as stale by its generation and skipped.
/// Spilled (more than the limit given to `spill(to:above:)`, as `LocalIndex`): a table of the
/// node's `SpillStore` with an index in pull order, the first path one indexed query away. A
/// folder of a million files has a million paths waiting when an empty node joins.
struct PullQueue: Sendable {
    private var pending: [String: (key: SyncEngine.SortKey, size: UInt64, generation: UInt64)] = [:]
    private var heap = Heap<Entry>()
    private var generation: UInt64 = 0
    private var spilled: SpillStore?
    private var spilledCount = 0
    private var store: SpillStore?
    private var limit = Int.max
    /// Paths taken out by `deferFirst` (their previous job still runs), put back by `restoreDeferred`.
    private var deferred: [(path: String, key: SyncEngine.SortKey, size: UInt64)] = []

    struct Entry: Comparable, Sendable {
        var key: SyncEngine.SortKey
        var path: String
        var generation: UInt64
        static func < (a: Entry, b: Entry) -> Bool { (a.key, a.path) < (b.key, b.path) }
        static func == (a: Entry, b: Entry) -> Bool { a.key == b.key && a.path == b.path && a.generation == b.generation }
    }

    mutating func spill(to store: SpillStore, above limit: Int) {
        self.store = store
        self.limit = limit
        if pending.count > limit { moveToStore() }
    }

    private mutating func moveToStore() {
        guard let store, spilled == nil else { return }
        for (path, entry) in pending { store.queuePut(path, phase: entry.key.phase, primary: entry.key.primary, size: entry.size) }
        spilledCount = pending.count
        pending = [:]
        heap = Heap()
        spilled = store
    }

    var isSpilled: Bool { spilled != nil }
    var count: Int { spilled == nil ? pending.count : spilledCount }
    var isEmpty: Bool { count == 0 }

    /// Where `path` waits, if it does.
    func key(of path: String) -> SyncEngine.SortKey? {
        if let spilled { return spilled.queueKey(path).map { SyncEngine.SortKey(phase: $0.phase, primary: $0.primary) } }
        return pending[path]?.key
    }

    /// Queues `path` at `key` (moving it if it waits elsewhere); `size`: the bytes its pull brings.
    mutating func insert(_ path: String, key: SyncEngine.SortKey, size: UInt64) {
        if let spilled {
            if spilled.queuePut(path, phase: key.phase, primary: key.primary, size: size) { spilledCount += 1 }
            return
        }
        generation += 1
        pending[path] = (key, size, generation)
        heap.insert(Entry(key: key, path: path, generation: generation))
        if pending.count > limit { moveToStore() }
    }

    mutating func remove(_ path: String) {
        if let spilled {
            if spilled.queueRemove(path) { spilledCount -= 1 }
            return
        }
        pending[path] = nil
    }

    /// The first waiting path in pull order.
    mutating func first() -> (path: String, key: SyncEngine.SortKey)? {
        firstEntry().map { ($0.path, $0.key) }
    }

    private mutating func firstEntry() -> (path: String, key: SyncEngine.SortKey, size: UInt64)? {
        if let spilled { return spilled.queueFirst().map { ($0.path, SyncEngine.SortKey(phase: $0.phase, primary: $0.primary), $0.size) } }
        while let top = heap.min {
            if let p = pending[top.path], p.generation == top.generation { return (top.path, top.key, p.size) }
            _ = heap.removeMin()  // stale: moved or dropped since
        }
        return nil
    }

    /// Takes the first path out until `restoreDeferred` (its previous job still runs).
    mutating func deferFirst() {
        guard let entry = firstEntry() else { return }
        deferred.append(entry)
        if spilled == nil { _ = heap.removeMin() }
        remove(entry.path)
    }

    mutating func restoreDeferred() {
        let list = deferred
        deferred = []
        for d in list { insert(d.path, key: d.key, size: d.size) }
    }

    /// Every waiting path (memory), or nil when spilled (use `totals`).
    var paths: [String]? { spilled == nil ? Array(pending.keys) : nil }

    /// Calls `body` with every waiting path, a page at a time when spilled.
    func forEachPath(_ body: (String) -> Void) {
        guard let spilled else {
            for path in pending.keys { body(path) }
            return
        }
        var last: String?
        while true {
            let page = spilled.queuePaths(after: last, limit: 4096)
            guard let end = page.last else { return }
            page.forEach(body)
            last = end
        }
    }

    /// Spilled only: the waiting paths and the bytes they bring, summed in the store.
    var spilledTotals: (files: Int, bytes: UInt64)? { spilled?.queueTotals() }
}
