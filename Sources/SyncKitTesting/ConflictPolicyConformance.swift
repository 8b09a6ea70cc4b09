import SyncKit

/// The conformance kit every `ConflictPolicy` must pass: the documented requirements, checked on
/// generated pairs of concurrent records.
///
/// - Symmetry: `resolve(a, b)` and `resolve(b, a)` must pick the same record and agree on
///   keeping the loser; otherwise two nodes would settle the same conflict differently and the
///   cluster would never converge.
/// - Determinism: the same question gets the same answer.
public struct ConflictPolicyConformance: Sendable {
    public let policy: any ConflictPolicy
    public init(policy: any ConflictPolicy) { self.policy = policy }

    /// Throws `ConflictPolicyViolation` describing the first violation found.
    public func run(samples: Int = 500) throws {
        let nodes = (1...4).map { NodeID(bytes: [UInt8($0)] + [UInt8](repeating: 0, count: 31)) }
        var rng = SplitMix(seed: 0xC0FFEE)
        for i in 0..<samples {
            func record(_ by: NodeID) -> FileRecord {
                let size = UInt32(rng.next() % 3 + 1)
                let block = BlockRef(hash: BlockHash(w0: rng.next() % 3, w1: 0, w2: 0, w3: 0), size: size)
                return FileRecord(
                    path: "f", kind: .file, size: UInt64(size), mtimeNs: Int64(rng.next() % 3), mode: 0o644,
                    version: VersionVector([by: rng.next() % 3 + 1]), modifiedBy: by, blocks: [block])
            }
            let a = record(nodes[Int(rng.next() % 4)])
            let b = record(nodes[Int(rng.next() % 4)])
            if a.hasSameContent(as: b) { continue }
            let ab = policy.resolve(Conflict(path: "f", local: a, remote: b))
            let ba = policy.resolve(Conflict(path: "f", local: b, remote: a))
            let winnerAB = ab.winner == .local ? a : b
            let winnerBA = ba.winner == .local ? b : a
            guard winnerAB == winnerBA else {
                throw ConflictPolicyViolation(description: "\(policy.name) is not symmetric at sample \(i): resolve(a,b) keeps \(winnerAB), resolve(b,a) keeps \(winnerBA)")
            }
            guard ab.keepLoserCopy == ba.keepLoserCopy else {
                throw ConflictPolicyViolation(description: "\(policy.name) disagrees with itself on keeping the loser at sample \(i)")
            }
            guard policy.resolve(Conflict(path: "f", local: a, remote: b)) == ab else {
                throw ConflictPolicyViolation(description: "\(policy.name) is not deterministic at sample \(i)")
            }
        }
    }
}

/// A requirement of `ConflictPolicy` that an implementation broke.
public struct ConflictPolicyViolation: Error, CustomStringConvertible {
    public var description: String
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator for reproducible test data.
public struct SplitMix: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
