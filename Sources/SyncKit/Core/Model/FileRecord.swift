/// The SHA-256 of one block, kept as four words for cheap hashing and comparison.
public struct BlockHash: Hashable, Sendable, CustomStringConvertible {
    public let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    public init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        (self.w0, self.w1, self.w2, self.w3) = (w0, w1, w2, w3)
    }

    /// From 32 digest bytes, big-endian.
    public init<Bytes: Sequence>(digest: Bytes) where Bytes.Element == UInt8 {
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        var i = 0
        for b in digest {
            switch i / 8 {
            case 0: words.0 = words.0 << 8 | UInt64(b)
            case 1: words.1 = words.1 << 8 | UInt64(b)
            case 2: words.2 = words.2 << 8 | UInt64(b)
            default: words.3 = words.3 << 8 | UInt64(b)
            }
            i += 1
        }
        precondition(i == 32, "a block hash is 32 bytes")
        (w0, w1, w2, w3) = words
    }

    public var description: String {
        [w0, w1, w2, w3].map { String($0, radix: 16).leftPadded(to: 16) }.joined()
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// One content-defined chunk of a file: its hash and length. Offsets are implied by the order.
public struct BlockRef: Hashable, Sendable {
    public var hash: BlockHash
    public var size: UInt32
    public init(hash: BlockHash, size: UInt32) {
        self.hash = hash
        self.size = size
    }
}

/// What SyncKit knows about one path: the unit of the index and of index exchange.
///
/// A record describes either what is on disk (a file, directory or symlink) or a tombstone
/// (`deleted`), which is kept so that a deletion can travel to nodes that were away and can
/// win or lose against concurrent edits like any other version.
public struct FileRecord: Hashable, Sendable, CustomStringConvertible {
    /// What the path is. Symlinks are synced as links and never followed.
    public enum Kind: UInt8, Sendable {
        case file = 0
        case directory = 1
        case symlink = 2
    }

    /// Relative, `/`-separated, NFC; never empty, absolute or containing `..` (see `PathSafety`).
    public var path: String
    public var kind: Kind
    /// Bytes in the file (zero for directories and symlinks).
    public var size: UInt64
    /// Modification time in nanoseconds since 1970.
    public var mtimeNs: Int64
    /// Permission bits (`0o777` at most: setuid, setgid and sticky are never synced).
    public var mode: UInt32
    /// A tombstone: the path was deleted at this version.
    public var deleted: Bool
    public var version: VersionVector
    /// The node whose change produced this version's content (ties in `newest` use it).
    public var modifiedBy: NodeID
    /// The content, chunked by FastCDC; empty for directories, symlinks and tombstones.
    public var blocks: [BlockRef]
    /// Syncthing's fixed-size block list of the same content (`FixedBlocks`), kept for BEP
    /// peers when `blocks` is not already of that shape; empty when it is, or when the node that
    /// hashed the file does not speak BEP. Derived from the content: no comparison counts it.
    public var fixedBlocks: [BlockRef] = []
    /// The link target, for symlinks only.
    public var symlinkTarget: String
    /// The local sequence number of this record on the node that holds it: it increases with
    /// every change the node records, and drives the incremental index exchange.
    public var sequence: UInt64
    /// Local only (never sent): the inode and device seen at the last scan, for the quick check.
    public var inode: UInt64

    public init(
        path: String, kind: Kind, size: UInt64 = 0, mtimeNs: Int64 = 0, mode: UInt32 = 0o644,
        deleted: Bool = false, version: VersionVector = .init(), modifiedBy: NodeID,
        blocks: [BlockRef] = [], symlinkTarget: String = "", sequence: UInt64 = 0, inode: UInt64 = 0
    ) {
        self.path = path
        self.kind = kind
        self.size = size
        self.mtimeNs = mtimeNs
        self.mode = mode
        self.deleted = deleted
        self.version = version
        self.modifiedBy = modifiedBy
        self.blocks = blocks
        self.symlinkTarget = symlinkTarget
        self.sequence = sequence
        self.inode = inode
    }

    /// True when both records describe the same change: every field but the sequence (each
    /// node numbers its own records) and the inode (local to each disk).
    public func isSameChange(as other: FileRecord) -> Bool {
        version == other.version && size == other.size && mtimeNs == other.mtimeNs && mode == other.mode
            && deleted == other.deleted && kind == other.kind && modifiedBy == other.modifiedBy
            && symlinkTarget == other.symlinkTarget && path == other.path && blocks == other.blocks
    }

    /// True when both describe the same thing on disk: same kind, same deleted state, same
    /// bytes (block hashes), same link target and same permission bits. Timestamps and versions
    /// do not count, so identical files made independently are never a conflict.
    public func hasSameContent(as other: FileRecord) -> Bool {
        if deleted || other.deleted { return deleted == other.deleted }
        guard kind == other.kind else { return false }
        switch kind {
        case .file:
            // The hashes compared in place, not copied out into two arrays first.
            return size == other.size && mode & 0o777 == other.mode & 0o777
                && blocks.elementsEqual(other.blocks) { $0.hash == $1.hash }
        case .directory:
            return mode & 0o777 == other.mode & 0o777
        case .symlink:
            return symlinkTarget == other.symlinkTarget
        }
    }

    /// The block list to announce to a BEP peer: `fixedBlocks`, or `blocks` when they already
    /// have Syncthing's shape (an empty file: none; the adapter announces its one empty block);
    /// nil when neither is known (the file was hashed by a node that does not speak BEP).
    public var syncthingBlocks: [BlockRef]? {
        if !fixedBlocks.isEmpty { return fixedBlocks }
        return FixedBlocks.isFixedShape(blocks, size: size) ? blocks : nil
    }

    /// The byte offset of every block, in order.
    public var blockOffsets: [UInt64] {
        var offsets = [UInt64]()
        offsets.reserveCapacity(blocks.count)
        var at: UInt64 = 0
        for b in blocks {
            offsets.append(at)
            at += UInt64(b.size)
        }
        return offsets
    }

    public var description: String {
        "\(path) \(deleted ? "deleted" : "\(kind)") size=\(size) v=\(version) seq=\(sequence)"
    }
}
