import Foundation

/// Who may connect without proving the cluster key: the node IDs given (`--trust ID`), those
/// listed in a file (`--trust-file`, one ID per line, `#` starts a comment), or anyone
/// (`--open`).
///
/// The file is read again whenever it changed (its size or modification time), at the next
/// connection: removing an ID from it shuts that device out at its next connection, without a
/// restart. A file that cannot be read any more trusts nobody from it (and says so once).
public final class TrustList: Sendable {
    /// Anyone is trusted (`--open`).
    public let acceptsAnyone: Bool
    private let ids: Set<NodeID>
    private let file: String?
    private let cache = Locked<(stamp: [Int64], ids: Set<NodeID>)?>(nil)

    public init(ids: Set<NodeID> = [], file: String? = nil, acceptsAnyone: Bool = false) {
        self.ids = ids
        self.file = file
        self.acceptsAnyone = acceptsAnyone
    }

    /// True when nothing is trusted by this list (no IDs, no file, not open).
    public var isEmpty: Bool { ids.isEmpty && file == nil && !acceptsAnyone }

    /// Whether `peer` may connect without the cluster key.
    public func trusts(_ peer: NodeID) -> Bool {
        acceptsAnyone || ids.contains(peer) || fileIDs().contains(peer)
    }

    /// The IDs in the file, read again when it changed.
    private func fileIDs() -> Set<NodeID> {
        guard let file else { return [] }
        var st = stat()
        guard stat(file, &st) == 0 else { return [] }
        let stamp = [Int64(st.st_size), Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec), Int64(st.st_ino)]
        if let cached = cache.withLock({ $0 }), cached.stamp == stamp { return cached.ids }
        let ids = (try? Self.read(file)) ?? []
        cache.withLock { $0 = (stamp, ids) }
        return ids
    }

    /// The IDs listed in a trust file; throws a `.configuration` error naming a line that is not
    /// an ID.
    public static func read(_ path: String) throws -> Set<NodeID> {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SyncError(.configuration, "cannot read the trust file \(path)")
        }
        var out = Set<NodeID>()
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let id = NodeID(trimmed) else {
                throw SyncError(.configuration, "line \(n + 1) of \(path) is not a node ID: '\(trimmed)'")
            }
            out.insert(id)
        }
        return out
    }
}
