/// Where each block of the local files is, so pulls copy from disk before asking the network.
///
/// A rename, a copy, or an edit that keeps most of a file then costs only the changed blocks:
/// the puller looks every needed block up here first and reads it from the local file (checking
/// its hash, since the file may have changed since it was indexed).
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

    private var byHash: [BlockHash: [Location]] = [:]
    private var byPath: [String: [BlockHash]] = [:]

    /// Replaces what is known of `record.path` with the record's blocks (none if not a file).
    mutating func update(_ record: FileRecord) {
        if let old = byPath.removeValue(forKey: record.path) {
            for hash in old {
                byHash[hash]?.removeAll { $0.path == record.path }
                if byHash[hash]?.isEmpty == true { byHash[hash] = nil }
            }
        }
        guard record.kind == .file, !record.deleted, !record.blocks.isEmpty else { return }
        var hashes = [BlockHash]()
        hashes.reserveCapacity(record.blocks.count + record.fixedBlocks.count)
        // Syncthing's fixed-size blocks too: a BEP peer asks for those by hash.
        for list in [record.blocks, record.fixedBlocks] {
            var offset: UInt64 = 0
            for block in list {
                // A few locations per hash are enough to find a good copy.
                if byHash[block.hash, default: []].count < 4 {
                    byHash[block.hash, default: []].append(Location(path: record.path, offset: offset, size: block.size))
                }
                hashes.append(block.hash)
                offset += UInt64(block.size)
            }
        }
        byPath[record.path] = hashes
    }

    func locations(of hash: BlockHash) -> [Location] { byHash[hash] ?? [] }
}
