/// A version vector: for each node that ever changed a file, how many changes it made.
///
/// This is the classic causality tracker (Parker et al., "Detection of mutual inconsistency in
/// distributed systems", 1983; Syncthing calls it a Vector): a local edit increments this
/// node's counter; a version `a` is newer than `b` when every counter of `a` is at least the one
/// of `b` and one is larger. Two versions neither of which is newer were made concurrently and
/// are the only case that needs a conflict policy.
public struct VersionVector: Hashable, Sendable, CustomStringConvertible {
    /// The counters; a missing node counts as zero.
    public private(set) var counters: [NodeID: UInt64]

    public init(_ counters: [NodeID: UInt64] = [:]) {
        self.counters = counters.filter { $0.value > 0 }
    }

    /// How two versions relate.
    public enum Ordering: Sendable, Equatable {
        case equal, newer, older, concurrent
    }

    /// The counter of `node` (zero when it never changed the file).
    public subscript(node: NodeID) -> UInt64 { counters[node] ?? 0 }

    /// This version after one more change made by `node`: its counter becomes at least
    /// `atLeast`, and always more than before.
    ///
    /// Passing the current time in seconds as `atLeast` (as Syncthing does) keeps a node's
    /// counters growing even if it loses its index: a counter value is then never reused for
    /// different content, which peers would take as "the same version" and ignore.
    public func bumped(by node: NodeID, atLeast: UInt64 = 0) -> VersionVector {
        var copy = self
        let old = copy.counters[node] ?? 0
        copy.counters[node] = max(old + 1, atLeast)
        return copy
    }

    /// The least version that is at least both: element-wise maximum. Used when two concurrent
    /// versions are reconciled, so that the result dominates both on every node.
    public func merged(with other: VersionVector) -> VersionVector {
        var out = counters
        for (node, value) in other.counters where value > out[node] ?? 0 { out[node] = value }
        return VersionVector(out)
    }

    /// Compares `self` to `other`: `.newer` means `self` descends from `other`.
    public func compare(to other: VersionVector) -> Ordering {
        var greater = false
        var less = false
        for (node, value) in counters {
            let o = other[node]
            if value > o { greater = true } else if value < o { less = true }
        }
        for (node, value) in other.counters where counters[node] == nil && value > 0 { less = true }
        switch (greater, less) {
        case (false, false): return .equal
        case (true, false): return .newer
        case (false, true): return .older
        case (true, true): return .concurrent
        }
    }

    public var isEmpty: Bool { counters.isEmpty }

    public var description: String {
        "{" + counters.sorted { $0.key < $1.key }.map { "\($0.key.short):\($0.value)" }.joined(separator: ",") + "}"
    }
}
