/// The last two block lists of each large file, as seen in one place: sent on a connection,
/// received on it, or this node's own. These are the bases a block-list delta may name
/// (`WireMessage.BlockDelta`); two, because updates cross on the wire, each end then naming the
/// list it knew before the other's arrived.
///
/// Only files of at least `BlockDelta.minimumBlocks` blocks are kept: smaller lists always
/// travel in full. Each list is kept with its digest, the name a delta uses for it.
struct RecentLists: Sendable {
    /// A list and its digest (`BlockDelta.digest(of:)`).
    struct Base: Sendable, Equatable {
        var blocks: [BlockRef]
        var digest: UInt64
    }

    private var lists: [String: [Base]] = [:]

    /// The base for `blocks`, or nil when the list is too small to be a delta's base.
    static func base(_ blocks: [BlockRef]) -> Base? {
        guard blocks.count >= WireMessage.BlockDelta.minimumBlocks else { return nil }
        return Base(blocks: blocks, digest: WireMessage.BlockDelta.digest(of: blocks))
    }

    /// The base of a record: its blocks when it is a file that exists.
    static func base(_ record: FileRecord) -> Base? {
        record.kind == .file && !record.deleted ? base(record.blocks) : nil
    }

    /// Keeps `base` as the newest list of `path` (nil: the path has no large list any more).
    mutating func remember(_ base: Base?, for path: String) {
        guard let base else {
            lists[path] = nil
            return
        }
        var kept = lists[path] ?? []
        if kept.last?.digest != base.digest { kept.append(base) }
        lists[path] = Array(kept.suffix(2))
    }

    /// The newest list of `path`.
    func latest(_ path: String) -> Base? { lists[path]?.last }

    /// The list of `path` named by `digest`, if it is one of the two kept.
    func find(_ path: String, digest: UInt64) -> Base? {
        lists[path]?.first { $0.digest == digest }
    }
}
