/// Where each block of the local files is, so pulls copy from disk before asking the network.
///
/// A rename, a copy, or an edit that keeps most of a file then costs only the changed blocks:
/// the puller looks every needed block up here first and reads it from the local file (checking
/// its hash, since the file may have changed since it was indexed).
///
/// Memory: the map has an entry per local block and per local file, so at a million small files
/// it is a million of each. Most hashes have one location and most files one block, so both
/// tables keep a single element inline (`OneOrMany`) instead of a heap array each: about 160
/// bytes less per one-block file (two array allocations of 64 to 80 bytes with their headers).
public struct BlockMap: Sendable {
    /// Where one block is: a file of this node, an offset, a size.
    public struct Location: Sendable, Equatable {
        public var path: String
        public var offset: UInt64
        public var size: UInt32
        public init(path: String, offset: UInt64, size: UInt32) {
            self.path = path
            self.offset = offset
            self.size = size
        }
    }

    private var byHash: [BlockHash: OneOrMany<Location>] = [:]
    private var byPath: [String: OneOrMany<BlockHash>] = [:]
    /// Past `limit` files, the map lives in the node's `SpillStore` (see `LocalIndex`).
    private var spilled: SpillStore?
    private var store: SpillStore?
    private var limit = Int.max

    /// Lets the map move to `store` once it knows more than `limit` files (now, if it does).
    mutating func spill(to store: SpillStore, above limit: Int) {
        self.store = store
        self.limit = limit
        if byPath.count > limit { moveToStore() }
    }

    private mutating func moveToStore() {
        guard let store, spilled == nil else { return }
        var byFile = [String: [(BlockHash, UInt64, UInt32)]]()
        for (hash, places) in byHash {
            places.forEach { byFile[$0.path, default: []].append((hash, $0.offset, $0.size)) }
        }
        for (path, blocks) in byFile { store.blocksReplace(path, blocks) }
        byHash = [:]
        byPath = [:]
        spilled = store
    }

    /// True once the map lives in the store.
    var isSpilled: Bool { spilled != nil }

    /// Replaces what is known of `record.path` with the record's blocks (none if not a file).
    mutating func update(_ record: FileRecord) {
        if let spilled {
            var blocks = [(BlockHash, UInt64, UInt32)]()
            if record.kind == .file, !record.deleted {
                for list in [record.blocks, record.fixedBlocks] {
                    var offset: UInt64 = 0
                    for block in list {
                        blocks.append((block.hash, offset, block.size))
                        offset += UInt64(block.size)
                    }
                }
            }
            spilled.blocksReplace(record.path, blocks)
            return
        }
        if let old = byPath.removeValue(forKey: record.path) {
            old.forEach { hash in
                guard var places = byHash[hash] else { return }
                places.removeAll { $0.path == record.path }
                byHash[hash] = places.isEmpty ? nil : places
            }
        }
        guard record.kind == .file, !record.deleted, !record.blocks.isEmpty else { return }
        var hashes: OneOrMany<BlockHash>?
        // Syncthing's fixed-size blocks too: a BEP peer asks for those by hash.
        for list in [record.blocks, record.fixedBlocks] {
            var offset: UInt64 = 0
            for block in list {
                let here = Location(path: record.path, offset: offset, size: block.size)
                if var places = byHash[block.hash] {
                    // A few locations per hash are enough to find a good copy.
                    if places.count < 4 {
                        places.append(here)
                        byHash[block.hash] = places
                    }
                } else {
                    byHash[block.hash] = .one(here)
                }
                if hashes == nil { hashes = .one(block.hash) } else { hashes!.append(block.hash) }
                offset += UInt64(block.size)
            }
        }
        byPath[record.path] = hashes
        if byPath.count > limit { moveToStore() }
    }

    func locations(of hash: BlockHash) -> [Location] {
        if let spilled { return spilled.blockLocations(hash, limit: 4) }
        return byHash[hash]?.array ?? []
    }
}

/// One element inline, or an array of several: the shape of most entries of `BlockMap`, kept
/// without a heap allocation when there is only one.
enum OneOrMany<Element: Sendable>: Sendable {
    case one(Element)
    case many([Element])

    var count: Int {
        switch self {
        case .one: 1
        case .many(let list): list.count
        }
    }

    var isEmpty: Bool { count == 0 }

    var array: [Element] {
        switch self {
        case .one(let e): [e]
        case .many(let list): list
        }
    }

    func forEach(_ body: (Element) -> Void) {
        switch self {
        case .one(let e): body(e)
        case .many(let list): list.forEach(body)
        }
    }

    mutating func append(_ element: Element) {
        switch self {
        case .one(let e): self = .many([e, element])
        case .many(var list):
            self = .many([])  // drops the enum's reference, so the append does not copy
            list.append(element)
            self = .many(list)
        }
    }

    mutating func removeAll(where shouldRemove: (Element) -> Bool) {
        switch self {
        case .one(let e): if shouldRemove(e) { self = .many([]) }
        case .many(var list):
            self = .many([])
            list.removeAll(where: shouldRemove)
            self = list.count == 1 ? .one(list[0]) : .many(list)
        }
    }
}
