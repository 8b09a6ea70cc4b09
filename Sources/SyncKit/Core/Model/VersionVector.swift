/// A version vector: for each node that ever changed a file, how many changes it made.
///
/// This is the classic causality tracker (Parker et al., "Detection of mutual inconsistency in
/// distributed systems", 1983; Syncthing calls it a Vector): a local edit increments this
/// node's counter; a version `a` is newer than `b` when every counter of `a` is at least the one
/// of `b` and one is larger. Two versions neither of which is newer were made concurrently and
/// are the only case that needs a conflict policy.
///
/// Counters are keyed by a node's short ID, the first 8 bytes of its ID, as Syncthing keys them
/// (its `protocol.ShortID`): Syncthing peers name devices in vectors by nothing more, so a vector
/// keyed by full IDs could not say whether Syncthing's counter for `F5YDKH7` is the same node's
/// as ours, and every version that crossed between the two protocols would look concurrent.
/// Every `NodeID` given to a vector is reduced to `NodeID(shortID:)` on the way in, so callers
/// pass full IDs as before. Two nodes whose IDs share their first 64 bits would share a
/// counter; Syncthing makes the same assumption (a 2^-64 chance per pair of certificates).
public struct VersionVector: Hashable, Sendable, CustomStringConvertible {
    /// One node's counter.
    public struct Entry: Hashable, Sendable {
        /// The node, as its short form (`NodeID(shortID:)`: the last 24 bytes zero).
        public var node: NodeID
        public var value: UInt64
    }

    /// The non-zero counters, sorted by node. A sorted array rather than a dictionary: most
    /// vectors hold one or two nodes, and every record of every peer carries one, so the
    /// dictionary's hash table (about 160 bytes for one entry) was a real share of memory.
    /// Sorted, two vectors compare in one merge pass, and equal vectors are equal arrays.
    public private(set) var entries: [Entry]

    /// A vector of these counters (keys reduced to short IDs; two keys that reduce to the same
    /// short ID keep the larger counter).
    public init(_ counters: [NodeID: UInt64] = [:]) {
        var list: [Entry] = []
        list.reserveCapacity(counters.count)
        for (node, value) in counters where value > 0 { list.append(Entry(node: node.versionKey, value: value)) }
        list.sort { ($0.node, $0.value) < ($1.node, $1.value) }
        // Equal keys are now adjacent, the largest value last: keep that one.
        var i = 0
        while i + 1 < list.count {
            if list[i].node == list[i + 1].node { list.remove(at: i) } else { i += 1 }
        }
        entries = list
    }

    /// A vector keyed by Syncthing's short IDs, as a BEP message carries it.
    public init(shortCounters: [(id: UInt64, value: UInt64)]) {
        self.init(Dictionary(shortCounters.map { (NodeID(shortID: $0.id), $0.value) }, uniquingKeysWith: max))
    }

    /// How two versions relate.
    public enum Ordering: Sendable, Equatable {
        case equal, newer, older, concurrent
    }

    /// The counter of `node` (zero when it never changed the file).
    public subscript(node: NodeID) -> UInt64 {
        let key = node.versionKey
        return entries.first { $0.node == key }?.value ?? 0
    }

    /// This version after one more change made by `node`: its counter becomes at least
    /// `atLeast`, and always more than before.
    ///
    /// Passing the current time in seconds as `atLeast` (as Syncthing does) keeps a node's
    /// counters growing even if it loses its index: a counter value is then never reused for
    /// different content, which peers would take as "the same version" and ignore.
    public func bumped(by node: NodeID, atLeast: UInt64 = 0) -> VersionVector {
        let node = node.versionKey
        var copy = self
        if let i = copy.entries.firstIndex(where: { $0.node == node }) {
            copy.entries[i].value = max(copy.entries[i].value + 1, atLeast)
        } else {
            let at = copy.entries.firstIndex { $0.node > node } ?? copy.entries.count
            copy.entries.insert(Entry(node: node, value: max(1, atLeast)), at: at)
        }
        return copy
    }

    /// The least version that is at least both: element-wise maximum. Used when two concurrent
    /// versions are reconciled, so that the result dominates both on every node.
    public func merged(with other: VersionVector) -> VersionVector {
        var out = VersionVector()
        out.entries.reserveCapacity(entries.count + other.entries.count)
        var i = 0, j = 0
        while i < entries.count || j < other.entries.count {
            if j == other.entries.count || (i < entries.count && entries[i].node < other.entries[j].node) {
                out.entries.append(entries[i]); i += 1
            } else if i == entries.count || other.entries[j].node < entries[i].node {
                out.entries.append(other.entries[j]); j += 1
            } else {
                out.entries.append(Entry(node: entries[i].node, value: max(entries[i].value, other.entries[j].value)))
                i += 1; j += 1
            }
        }
        return out
    }

    /// Compares `self` to `other`: `.newer` means `self` descends from `other`.
    public func compare(to other: VersionVector) -> Ordering {
        var greater = false
        var less = false
        var i = 0, j = 0
        // One pass over both sorted lists; a node missing on one side counts as zero there.
        while i < entries.count || j < other.entries.count {
            if j == other.entries.count || (i < entries.count && entries[i].node < other.entries[j].node) {
                greater = true; i += 1
            } else if i == entries.count || other.entries[j].node < entries[i].node {
                less = true; j += 1
            } else {
                if entries[i].value > other.entries[j].value { greater = true } else if entries[i].value < other.entries[j].value { less = true }
                i += 1; j += 1
            }
        }
        switch (greater, less) {
        case (false, false): return .equal
        case (true, false): return .newer
        case (false, true): return .older
        case (true, true): return .concurrent
        }
    }

    public var isEmpty: Bool { entries.isEmpty }

    public var description: String {
        "{" + entries.map { "\($0.node.short):\($0.value)" }.joined(separator: ",") + "}"
    }
}
