import Foundation

/// Two versions of one path that were made concurrently (neither version vector descends from
/// the other) and whose contents differ. `local` is the version the node currently prefers,
/// `remote` the one that just arrived.
public struct Conflict: Sendable {
    public var path: String
    public var local: FileRecord
    public var remote: FileRecord
    public init(path: String, local: FileRecord, remote: FileRecord) {
        self.path = path
        self.local = local
        self.remote = remote
    }
}

/// What to do with a conflict.
public struct Resolution: Sendable, Equatable {
    public enum Side: Sendable, Equatable { case local, remote }
    /// Whose content stays under the original name.
    public var winner: Side
    /// Keep the losing content under a conflict name (`ConflictNaming`) instead of dropping it.
    public var keepLoserCopy: Bool
    public init(winner: Side, keepLoserCopy: Bool) {
        self.winner = winner
        self.keepLoserCopy = keepLoserCopy
    }
}

/// Decides between concurrent versions. SyncKit calls it only for true conflicts: versions that
/// are concurrent and differ in content. Identical content and edit-versus-delete (the edit
/// wins) are settled by the engine before a policy is asked.
///
/// ## Implementation requirements
/// - Deterministic and symmetric: every node must reach the same outcome whatever order the
///   versions arrive in, so `resolve(a, b)` must pick the same *record* as `resolve(b, a)`, and
///   agree on `keepLoserCopy`. It may look at the records only (no clock, no randomness, no
///   node-local state). The `ConflictPolicyConformance` kit checks this on generated records.
/// - Cheap and synchronous: it runs inside the engine.
public protocol ConflictPolicy: Sendable {
    /// The name used on the command line (`--policy`).
    var name: String { get }
    func resolve(_ conflict: Conflict) -> Resolution
}

/// The total order behind `newest`: later mtime wins; ties go to the higher NodeID of the node
/// that made the change; then, to stay total, larger size and higher first block hash.
public enum NewestOrder {
    /// True when `a` wins over `b`.
    public static func aWins(_ a: FileRecord, over b: FileRecord) -> Bool {
        if a.mtimeNs != b.mtimeNs { return a.mtimeNs > b.mtimeNs }
        if a.modifiedBy != b.modifiedBy { return a.modifiedBy > b.modifiedBy }
        if a.size != b.size { return a.size > b.size }
        let ha = a.blocks.first?.hash.description ?? a.symlinkTarget
        let hb = b.blocks.first?.hash.description ?? b.symlinkTarget
        if ha != hb { return ha > hb }
        return a.version.description > b.version.description
    }
}

/// `newest`: the version with the later modification time wins (ties: higher NodeID). By default
/// the loser is kept under a conflict name, so nothing is lost; `keepLoserCopies: false` drops it.
public struct NewestWinsPolicy: ConflictPolicy {
    public var keepLoserCopies: Bool
    public init(keepLoserCopies: Bool = true) { self.keepLoserCopies = keepLoserCopies }
    public var name: String { "newest" }
    public func resolve(_ c: Conflict) -> Resolution {
        Resolution(winner: NewestOrder.aWins(c.local, over: c.remote) ? .local : .remote, keepLoserCopy: keepLoserCopies)
    }
}

/// `keep-both`: both versions always stay. The one that would win under `newest` keeps the name,
/// the other is renamed to the conflict name on every node; the user merges them.
public struct KeepBothPolicy: ConflictPolicy {
    public init() {}
    public var name: String { "keep-both" }
    public func resolve(_ c: Conflict) -> Resolution {
        Resolution(winner: NewestOrder.aWins(c.local, over: c.remote) ? .local : .remote, keepLoserCopy: true)
    }
}

/// `prefer-node`: changes made by one node (a "primary") win; between others, `newest`.
public struct PreferNodePolicy: ConflictPolicy {
    public var preferred: NodeID
    public init(preferred: NodeID) { self.preferred = preferred }
    public var name: String { "prefer-node" }
    public func resolve(_ c: Conflict) -> Resolution {
        let l = c.local.modifiedBy == preferred, r = c.remote.modifiedBy == preferred
        if l != r { return Resolution(winner: l ? .local : .remote, keepLoserCopy: true) }
        return NewestWinsPolicy().resolve(c)
    }
}

/// Names the copy that keeps a losing version: `name.sync-conflict-YYYYMMDD-HHMMSS-NODE.ext`,
/// Syncthing's form.
///
/// NODE is the short ID of the node that made the winning version, as Syncthing names it
/// (`moveForConflict(name, file.ModifiedBy)`), so a copy reads the same whichever kind of node
/// made it. The time is the loser's modification time (UTC), not the current clock as in
/// Syncthing: every SyncKit node that keeps the same loser then derives the same name, so the
/// copies they make are one file and merge instead of multiplying.
public enum ConflictNaming {
    public static let marker = ".sync-conflict-"

    /// The name a file or directory called `name` takes on a case-insensitive file system where
    /// another entry's name differs from it only in case (`README.txt` beside `Readme.txt`):
    /// `README.sync-conflict-case.txt`. Derived from the name alone, so every such node
    /// relocates it to the same place and every file of a clashing directory lands in one.
    public static func caseClashName(_ name: String) -> String {
        let (stem, ext) = stemAndExtension(name)
        return stem + marker + "case" + ext
    }

    /// `report.txt` -> (`report`, `.txt`); a leading dot is part of the stem (`.bashrc`).
    public static func stemAndExtension(_ name: String) -> (stem: String, ext: String) {
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return (name, "") }
        return (String(name[..<dot]), String(name[dot...]))
    }

    public static func copyPath(for path: String, loser: FileRecord, winner: FileRecord) -> String {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let (stem, ext) = stemAndExtension(name)
        let date = Date(timeIntervalSince1970: Double(loser.mtimeNs / 1_000_000_000))
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        func two(_ v: Int?) -> String { String(format: "%02d", v ?? 0) }
        let stamp = String(format: "%04d", c.year ?? 1970) + two(c.month) + two(c.day) + "-" + two(c.hour) + two(c.minute) + two(c.second)
        return "\(dir)\(stem)\(marker)\(stamp)-\(winner.modifiedBy.short)\(ext)"
    }

    /// True for names made by `copyPath`.
    public static func isConflictCopy(_ path: String) -> Bool { path.contains(marker) }

    /// A conflict copy's path taken apart: the original it stands beside, the stamp (the
    /// loser's modification time, `YYYYMMDD-HHMMSS`) and the short ID of the winner's node.
    /// Nil for a path whose last component is not of `copyPath`'s form (a case-clash name
    /// included: it has no original of its own to go back to).
    public struct Parsed: Sendable, Equatable {
        public var original: String
        public var stamp: String
        public var winner: String
    }

    public static func parse(_ path: String) -> Parsed? {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard let m = name.range(of: marker), m.lowerBound != name.startIndex else { return nil }
        let stem = name[..<m.lowerBound]
        let rest = name[m.upperBound...]
        // The stamp and the short ID hold no dot: the extension starts at the first one.
        let tagEnd = rest.firstIndex(of: ".") ?? rest.endIndex
        let tag = rest[..<tagEnd]
        let parts = tag.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 8, parts[1].count == 6,
              parts[0].allSatisfy(\.isASCIIDigit), parts[1].allSatisfy(\.isASCIIDigit), !parts[2].isEmpty else { return nil }
        return Parsed(original: dir + stem + rest[tagEnd...], stamp: "\(parts[0])-\(parts[1])", winner: String(parts[2]))
    }
}

extension Character {
    /// 0 to 9 only (Character.isNumber takes every script's digits).
    var isASCIIDigit: Bool { isASCII && isNumber }
}
