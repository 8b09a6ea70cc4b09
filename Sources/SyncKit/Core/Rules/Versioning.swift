import Foundation

/// How a node keeps the old content of files that a sync replaces or deletes (issue 16), and
/// which kept versions a cleanup removes. Pure: the store (`VersionStore`) asks it with the
/// versions it holds and the time it is, so tests run it at any simulated time.
///
/// The kinds follow Syncthing's, with the same defaults where it has one:
/// - `trashcan`: the newest old version of each file, kept `maxAge` (0: forever);
/// - `simple`: the `keep` newest old versions of each file (and none older than `maxAge` when set);
/// - `staggered`: fewer versions the older they are: one per 30 s for the first hour, one per
///   hour for the first day, one per day for the first 30 days, one per week until `maxAge`
///   (365 days by default), none after. Unlike Syncthing, the newest version of a file is always
///   kept (it is the one a person who just made a mistake wants back).
/// On top of any kind, `maxBytes` caps the bytes of all kept versions: the oldest go first.
public struct VersioningPolicy: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable, Codable {
        case none, trashcan, simple, staggered
    }

    public var kind: Kind
    /// `simple`: versions kept per file.
    public var keep: Int = 5
    /// Versions older than this are removed (zero: no age limit). Seconds.
    public var maxAge: Int64
    /// How often the age-based cleanup runs while the daemon runs. Seconds.
    public var cleanupInterval: Int64 = 3600
    /// Bytes all kept versions may take together (nil: no limit).
    public var maxBytes: UInt64?

    public init(kind: Kind, keep: Int = 5, maxAge: Int64? = nil, cleanupInterval: Int64 = 3600, maxBytes: UInt64? = nil) {
        self.kind = kind
        self.keep = keep
        self.maxAge = maxAge ?? (kind == .staggered ? 365 * 86_400 : 0)
        self.cleanupInterval = cleanupInterval
        self.maxBytes = maxBytes
    }

    public static let off = VersioningPolicy(kind: .none)
    /// Removes nothing: for tools that open the versions of a node whose policy they do not
    /// know (`syncctl versions` without a daemon); the daemon applies its own at its cleanup.
    public static let keepAll = VersioningPolicy(kind: .simple, keep: .max, maxAge: 0)

    public var isOn: Bool { kind != .none }

    /// One staggered interval: versions younger than `until` (seconds of age) are kept one per
    /// `step` seconds.
    struct Interval { let step: Int64, until: Int64 }

    /// Syncthing's staggered intervals; the last one lasts until `maxAge`.
    var intervals: [Interval] {
        [Interval(step: 30, until: 3600), Interval(step: 3600, until: 86_400), Interval(step: 86_400, until: 30 * 86_400),
         Interval(step: 7 * 86_400, until: maxAge > 0 ? maxAge : .max)]
    }

    /// Of one file's versions (their times, in seconds since 1970, any order), the indices to
    /// remove at `now` by this policy's per-file rules (the byte budget is `overBudget`'s).
    public func toRemove(times: [Double], now: Double) -> Set<Int> {
        guard kind != .none, !times.isEmpty else { return [] }
        let newestFirst = times.indices.sorted { times[$0] > times[$1] }
        var remove = Set<Int>()
        // The age limit, for every kind; the newest is spared only by staggered, whose last
        // interval ends at maxAge anyway (so it is removed too when older than that).
        if maxAge > 0 {
            for i in newestFirst where now - times[i] > Double(maxAge) { remove.insert(i) }
        }
        switch kind {
        case .none:
            return []
        case .trashcan:
            for i in newestFirst.dropFirst() { remove.insert(i) }
        case .simple:
            for i in newestFirst.dropFirst(max(keep, 1)) { remove.insert(i) }
        case .staggered:
            // Oldest first: a version is kept when it is at least its interval's step younger
            // than the last version kept; the newest is always kept (when within maxAge).
            var lastKept: Double?
            for i in newestFirst.reversed() where !remove.contains(i) {
                let age = now - times[i]
                guard let previous = lastKept else {
                    lastKept = times[i]
                    continue
                }
                let step = intervals.first { Double($0.until) > age }?.step ?? intervals.last!.step
                if i == newestFirst.first || times[i] - previous >= Double(step) {
                    lastKept = times[i]
                } else {
                    remove.insert(i)
                }
            }
        }
        return remove
    }

    /// Of all versions kept (time and size each), the indices to remove so that the rest fit in
    /// `maxBytes`: first any version larger than the whole budget (alone: one huge file must not
    /// push out every other version), then the oldest first. Empty without a budget.
    public func overBudget(_ versions: [(time: Double, size: UInt64)]) -> [Int] {
        guard let maxBytes else { return [] }
        var out = versions.indices.filter { versions[$0].size > maxBytes }
        var total = versions.indices.filter { versions[$0].size <= maxBytes }.reduce(UInt64(0)) { $0 + versions[$1].size }
        for i in versions.indices.sorted(by: { versions[$0].time < versions[$1].time }) where total > maxBytes && versions[i].size <= maxBytes {
            out.append(i)
            total -= versions[i].size
        }
        return out
    }
}
