import Foundation
import Logging

/// The old versions a node keeps of files that syncs replaced or deleted (issue 16), in the
/// state directory, and the way to get one back.
///
/// Layout: `<state>/versions/<path>/@<time>~<by>~<reason>`: one directory per synced path
/// (its components as in the folder, so any name the folder can hold fits), and in it one
/// regular file per kept version, named by the UTC time it was replaced (milliseconds), the
/// short ID of the node whose change replaced it, and why (`replaced`, `deleted`,
/// `restored-over`, `edited`). A directory entry in the tree is a path component and a regular
/// file a version, so no file name of the folder can be mistaken for a version.
///
/// Keeping a version costs no copy where the file system allows it: the file's inode gets a
/// second name here (a hard link) just before the sync renames the new content over it or
/// unlinks it, so the bytes stay where they were. Where hard links do not work (the state
/// directory on another file system, or a file system without them, such as FAT), a delete
/// moves the file here (a rename), and a replace copies it (the original must stay in place
/// until the new content is renamed over it: a crash in between must not look like a delete).
///
/// What is covered: every file content a sync (a pull) replaces, deletes or turns into a
/// directory or link, and the content a restore replaces. Local edits are covered when the
/// editor replaced the file (write a new file, rename it over; most editors save so) or the
/// user deleted it, and only while the node holds a second name of it (the shadow, below); an
/// edit written in place into the same inode leaves nothing to keep.
///
/// Shadows: with versioning on, the node keeps a second name of every synced regular file in
/// `<state>/shadow/<path>` (a hard link: no bytes). When a scan finds that the file at a path is
/// another inode than its shadow (an editor saved by writing a new file and renaming it over)
/// or that the file is gone (deleted, or moved out of the folder), the shadow still holds the
/// content the index knew, and becomes a version (`edited` or `deleted`, by this node). Pulls
/// move the shadow along with what they write, so only local changes are caught this way.
/// Where hard links between the folder and the state directory fail (another file system, or
/// FAT), there are no shadows and local changes are not covered.
public final class VersionStore: Sendable {
    /// One kept version.
    public struct Version: Sendable, Codable, Equatable {
        /// The synced path it was the content of.
        public var path: String
        /// When it was replaced or deleted (seconds since 1970, millisecond precision).
        public var time: Double
        /// The short ID of the node whose change replaced it (this node's for local changes).
        public var by: String
        /// `replaced`, `deleted`, `restored-over`, `edited`.
        public var reason: String
        public var size: UInt64
        /// The version's file (absolute).
        public var file: String
        /// The file's own modification time when it was replaced (ns since 1970).
        public var mtimeNs: Int64
    }

    public enum Reason: String, Sendable {
        case replaced, deleted, restoredOver = "restored-over", edited
    }

    /// `<state>/versions`.
    public let directory: String
    /// `<state>/shadow`: second names of the folder's files (see the type's comment).
    public let shadowDirectory: String
    /// Cleared at the first hard link that fails: the file systems do not allow shadows.
    private let shadowsWork = Locked(true)
    public let policy: VersioningPolicy
    let logger: Logger
    /// Every kept version by path; loaded from the tree on first use.
    private let catalog = Locked<[String: [Version]]?>(nil)

    public init(stateDirectory: String, policy: VersioningPolicy, logger: Logger) {
        directory = stateDirectory + "/versions"
        shadowDirectory = stateDirectory + "/shadow"
        self.policy = policy
        self.logger = logger
    }

    // MARK: names

    /// `20261203T073512.123Z` for a time in seconds since 1970.
    static func stamp(_ time: Double) -> String {
        // In whole milliseconds first: no floating-point remainder can turn .508 into .507.
        let total = Int64((time * 1000).rounded())
        var seconds = time_t(total / 1000)
        let millis = Int(total % 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec)).\(ms)Z"
    }

    /// The time in a stamp, nil when it is not one.
    static func parseStamp(_ s: Substring) -> Double? {
        let b = Array(s.utf8)
        guard b.count == 20, b[8] == UInt8(ascii: "T"), b[15] == UInt8(ascii: "."), b[19] == UInt8(ascii: "Z"),
              b.indices.allSatisfy({ [8, 15, 19].contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[$0]) }) else { return nil }
        func num(_ r: Range<Int>) -> Int32? { Int32(String(decoding: b[r], as: UTF8.self)) }
        guard let y = num(0..<4), let mo = num(4..<6), let d = num(6..<8), let h = num(9..<11), let mi = num(11..<13),
              let sec = num(13..<15), let ms = num(16..<19) else { return nil }
        var parts = tm()
        parts.tm_year = y - 1900
        parts.tm_mon = mo - 1
        parts.tm_mday = d
        parts.tm_hour = h
        parts.tm_min = mi
        parts.tm_sec = sec
        return Double(timegm(&parts)) + Double(ms) / 1000
    }

    /// The file name of a version.
    static func fileName(time: Double, by: String, reason: Reason) -> String {
        "@\(stamp(time))~\(by)~\(reason.rawValue)"
    }

    /// Parses a version's file name: time, by, reason.
    static func parseFileName(_ name: String) -> (time: Double, by: String, reason: String)? {
        guard name.hasPrefix("@") else { return nil }
        let parts = name.dropFirst().split(separator: "~", omittingEmptySubsequences: false)
        guard parts.count >= 3, let time = parseStamp(parts[0]) else { return nil }
        return (time, String(parts[1]), String(parts[2]))
    }

    // MARK: catalog

    /// Walks the tree: every version kept, by path.
    func load() -> [String: [Version]] {
        var out = [String: [Version]]()
        func walk(_ dir: String, _ relative: String) {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
            for name in names {
                let full = dir + "/" + name
                guard let st = try? FileOps.lstat(full) else { continue }
                if st.kind == .directory {
                    walk(full, relative.isEmpty ? name : relative + "/" + name)
                } else if st.kind == .file, !relative.isEmpty, let parsed = Self.parseFileName(name) {
                    out[relative, default: []].append(Version(path: relative, time: parsed.time, by: parsed.by, reason: parsed.reason,
                                                              size: st.size, file: full, mtimeNs: st.mtimeNs))
                }
            }
        }
        walk(directory, "")
        return out
    }

    private func withCatalog<T>(_ body: (inout [String: [Version]]) -> T) -> T {
        catalog.withLock { state in
            if state == nil { state = load() }
            return body(&state!)
        }
    }

    /// Kept versions, newest first: all, or those of `prefix` (a file, or a directory and
    /// everything below it).
    public func list(_ prefix: String? = nil) -> [Version] {
        let all = withCatalog { $0 }
        var out = [Version]()
        for (path, versions) in all where prefix == nil || path == prefix! || path.hasPrefix(prefix! + "/") {
            out += versions
        }
        return out.sorted { ($0.time, $0.path) > ($1.time, $1.path) }
    }

    /// How many versions are kept, and their bytes.
    public func summary() -> (count: Int, bytes: UInt64) {
        withCatalog { all in
            all.values.reduce((0, UInt64(0))) { acc, vs in (acc.0 + vs.count, acc.1 + vs.reduce(0) { $0 + $1.size }) }
        }
    }

    // MARK: keeping

    /// Keeps the regular file at `entry` (synced path `path`) as a version replaced by `by`
    /// for `reason`, before the caller replaces or removes it. With `removing`, the caller is
    /// about to unlink it: the file may be moved here instead (then it is already gone from
    /// the folder). Throws when nothing could be kept: the caller must then not go on (nothing
    /// is lost by a failed sync; a lost version is). Returns the version kept.
    @discardableResult
    public func keep(_ entry: FolderEntry, path: String, by: String, reason: Reason, removing: Bool, now: Double = Date().timeIntervalSince1970) throws -> Version {
        guard let st = try entry.stat(), st.kind == .file else {
            throw SyncError(.io, "cannot keep a version of \(path): it is not a regular file")
        }
        let (time, file) = try newVersionFile(path: path, by: by, reason: reason, now: now)
        var kept = entry.name.withCString { linkat(entry.directory, $0, AT_FDCWD, file, 0) } == 0
        if !kept && removing {
            // No second name possible: move it, since it is to go anyway.
            kept = entry.name.withCString { renameat(entry.directory, $0, AT_FDCWD, file) } == 0
        }
        if !kept {
            try copy(entry, to: file, path: path)
        }
        let version = Version(path: path, time: time, by: by, reason: reason.rawValue, size: st.size, file: file, mtimeNs: st.mtimeNs)
        record(version, now: now)
        return version
    }

    /// Makes the versions directory of `path` and picks the new version's time and file: a
    /// second version within the same millisecond waits a millisecond, and none is older than
    /// the path's newest (a clock stepped back must not make the rules prune the version just
    /// kept).
    private func newVersionFile(path: String, by: String, reason: Reason, now: Double) throws -> (time: Double, file: String) {
        let dir = directory + "/" + path
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw SyncError(.io, "cannot make the versions directory for \(path)", underlying: error)
        }
        // The catalog is read before the new name exists (else the walk would find it too).
        let newest = withCatalog { $0[path]?.map(\.time).max() }
        var time = max((now * 1000).rounded() / 1000, (newest ?? 0) + 0.001)
        var file = dir + "/" + Self.fileName(time: time, by: by, reason: reason)
        while (try? FileOps.lstat(file)) != nil {
            time += 0.001
            file = dir + "/" + Self.fileName(time: time, by: by, reason: reason)
        }
        return (time, file)
    }

    /// Adds a version just kept to the catalog, then applies the rules to its path.
    private func record(_ version: Version, now: Double) {
        withCatalog { all in
            if !(all[version.path]?.contains { $0.file == version.file } ?? false) { all[version.path, default: []].append(version) }
        }
        prune(path: version.path, now: now)
    }

    /// Copies the file at `entry` to `file` with its modification time and permission bits.
    private func copy(_ entry: FolderEntry, to file: String, path: String) throws {
        let source = try entry.openForReading()
        defer { close(source) }
        let st = try FileOps.fstat(source)
        let out = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode_t(st.mode & 0o777) | 0o600)
        guard out >= 0 else { throw SyncError(.io, "cannot keep a version of \(path): \(FileOps.errorText())") }
        defer { close(out) }
        do {
            try Self.copyAll(from: source, to: out)
        } catch {
            unlink(file)
            throw SyncError(.io, "cannot keep a version of \(path)", underlying: error)
        }
        var times = FileOps.modificationTimes(st.mtimeNs)
        _ = futimens(out, &times)
    }

    /// Copies everything readable from `source` to `out` (only where no hard link is possible,
    /// and for restores).
    static func copyAll(from source: Int32, to out: Int32) throws {
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if n == 0 { return }
            guard n > 0 else { throw SyncError(.io, "read failed: \(FileOps.errorText())") }
            var done = 0
            while done < n {
                let w = buffer.withUnsafeBytes { write(out, $0.baseAddress! + done, n - done) }
                guard w > 0 else { throw SyncError(.io, "write failed: \(FileOps.errorText())") }
                done += w
            }
        }
    }

    // MARK: shadows (local edits)

    private func shadow(_ path: String) -> String { shadowDirectory + "/" + path }

    /// Makes `shadow(path)` a second name of `name` in the directory open at `dir` (replacing an
    /// older shadow atomically: linked under a temp name, renamed over).
    private func link(_ dir: Int32, _ name: String, shadow target: String) {
        guard shadowsWork.withLock({ $0 }) else { return }
        // (A name no synced path can have: synced names never end in the temp suffix.)
        let temp = target + PathSafety.tempSuffix
        unlink(temp)
        var linked = name.withCString { linkat(dir, $0, AT_FDCWD, temp, 0) } == 0
        if !linked && errno == ENOENT {
            // The shadow's directory is made only when the link finds it missing (a scan makes
            // one shadow per file: a directory call for each was most of the first scan's cost).
            try? FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            linked = name.withCString { linkat(dir, $0, AT_FDCWD, temp, 0) } == 0
        }
        guard linked else {
            if errno == EXDEV || errno == EPERM || errno == ENOTSUP || errno == EMLINK {
                shadowsWork.withLock { $0 = false }
                logger.notice("no hard links between the folder and the state directory: versions of local edits are not kept (those of synced changes are)", metadata: ["error": "\(FileOps.errorText())"])
            }
            return
        }
        rename(temp, target)
    }

    /// Called by the scanner for every regular file it finds (`name` in the directory open at
    /// `dir`, with its stat) and the record the index knew: a shadow of another inode that is
    /// still the content the index knew becomes an `edited` version; then the shadow follows
    /// the file.
    func observedLocal(_ dir: Int32, _ name: String, path: String, _ st: FileOps.Stat, known: FileRecord?, me: String) {
        let target = shadow(path)
        if let old = try? FileOps.lstat(target) {
            if old.inode == st.inode { return }
            if let known, !known.deleted, known.kind == .file, old.size == known.size, old.mtimeNs == known.mtimeNs {
                adopt(target, path: path, by: me, reason: .edited, st: old)
            } else {
                unlink(target)
            }
        }
        link(dir, name, shadow: target)
    }

    /// Called by the scanner for a known file that is gone: its shadow, if it is still the
    /// content the index knew, becomes a `deleted` version.
    func observedGone(path: String, known: FileRecord, me: String) {
        let target = shadow(path)
        guard let old = try? FileOps.lstat(target) else { return }
        if known.kind == .file, !known.deleted, old.size == known.size, old.mtimeNs == known.mtimeNs {
            adopt(target, path: path, by: me, reason: .deleted, st: old)
        } else {
            unlink(target)
        }
    }

    /// Called by the puller after it placed a file at `entry`: the shadow follows it (the
    /// content it replaced was kept already, as a `replaced` version).
    func pulled(_ entry: FolderEntry, path: String) {
        link(entry.directory, entry.name, shadow: shadow(path))
    }

    /// Called by the puller after it deleted `path`.
    func pulledDelete(path: String) {
        unlink(shadow(path))
    }

    /// Moves the file at `file` (a shadow) into the versions as a version of `path`.
    private func adopt(_ file: String, path: String, by: String, reason: Reason, st: FileOps.Stat) {
        let now = Date().timeIntervalSince1970
        guard let (time, target) = try? newVersionFile(path: path, by: by, reason: reason, now: now) else { return }
        guard rename(file, target) == 0 else {
            unlink(file)
            return
        }
        record(Version(path: path, time: time, by: by, reason: reason.rawValue, size: st.size, file: target, mtimeNs: st.mtimeNs), now: now)
    }

    // MARK: cleanup

    /// Applies the per-file rules to `path`, then the byte budget.
    private func prune(path: String, now: Double) {
        let doomed: [Version] = withCatalog { all in
            guard let versions = all[path] else { return [] }
            let remove = policy.toRemove(times: versions.map(\.time), now: now)
            all[path] = versions.indices.filter { !remove.contains($0) }.map { versions[$0] }
            return remove.map { versions[$0] }
        }
        delete(doomed)
        enforceBudget()
    }

    /// Removes the oldest versions until all fit in `maxBytes`; returns what went.
    @discardableResult
    private func enforceBudget() -> [Version] {
        guard policy.maxBytes != nil else { return [] }
        let doomed: [Version] = withCatalog { all in
            let flat = all.values.flatMap { $0 }
            let over = Set(policy.overBudget(flat.map { ($0.time, $0.size) }).map { flat[$0].file })
            guard !over.isEmpty else { return [] }
            for (path, versions) in all {
                let kept = versions.filter { !over.contains($0.file) }
                all[path] = kept.isEmpty ? nil : kept
            }
            return flat.filter { over.contains($0.file) }
        }
        delete(doomed)
        return doomed
    }

    /// The whole cleanup at `now`: per-file rules (ages, counts, staggering) for every path,
    /// then the byte budget. Returns how many versions went and their bytes.
    @discardableResult
    public func cleanup(now: Double = Date().timeIntervalSince1970) -> (removed: Int, bytes: UInt64) {
        // Read the tree again: versions removed by hand must not count against the budget.
        catalog.withLock { $0 = nil }
        let doomed: [Version] = withCatalog { all in
            var out = [Version]()
            for (path, versions) in all {
                let remove = policy.toRemove(times: versions.map(\.time), now: now)
                guard !remove.isEmpty else { continue }
                out += remove.map { versions[$0] }
                let kept = versions.indices.filter { !remove.contains($0) }.map { versions[$0] }
                all[path] = kept.isEmpty ? nil : kept
            }
            return out
        }
        delete(doomed)
        let evicted = enforceBudget()
        let gone = doomed + evicted
        return (gone.count, gone.reduce(0) { $0 + $1.size })
    }

    /// Unlinks versions' files, and the directories they leave empty.
    private func delete(_ versions: [Version]) {
        for v in versions {
            unlink(v.file)
            var dir = (v.file as NSString).deletingLastPathComponent
            while dir.count > directory.count, rmdir(dir) == 0 {
                dir = (dir as NSString).deletingLastPathComponent
            }
        }
        if !versions.isEmpty {
            logger.debug("removed old versions", metadata: ["count": "\(versions.count)"])
        }
    }

    // MARK: restore

    /// The version of `path` to restore: the newest replaced at or before `at` (the newest of
    /// all without `at`).
    public func find(path: String, at: Double? = nil) -> Version? {
        list(path).filter { $0.path == path && (at == nil || $0.time <= at! + 0.0005) }.first
    }

    /// Puts `version` back at its path in the folder, as a new local edit (its modification
    /// time is now, so the scan sees a change and every node gets it): written beside the
    /// target, made durable, renamed over it. The content it replaces is kept as a version
    /// first (`restored-over`, by `me`). The version itself stays kept.
    public func restore(_ version: Version, into root: FolderRoot, me: String, now: Double = Date().timeIntervalSince1970) throws {
        let path = try RelativePath(version.path)
        guard let entry = try root.entry(path, create: true) else { throw SyncError(.io, "no parent for \(version.path)") }
        let source = open(version.file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard source >= 0 else { throw SyncError(.io, "cannot open the version \(version.file): \(FileOps.errorText())") }
        defer { close(source) }
        let temp = Puller.tempName(forName: entry.name + ".restore")
        _ = entry.remove(name: temp)
        let st = try FileOps.fstat(source)
        let out = entry.open(O_WRONLY | O_CREAT | O_EXCL, mode: mode_t(st.mode & 0o777) | 0o600, name: temp)
        guard out >= 0 else { throw SyncError(.io, "cannot create \(entry.sibling(temp)): \(FileOps.errorText())") }
        do {
            defer { close(out) }
            try Self.copyAll(from: source, to: out)
            _ = fchmod(out, mode_t(st.mode & 0o777))
            guard fsync(out) == 0 else { throw SyncError(.io, "fsync of \(entry.sibling(temp)) failed: \(FileOps.errorText())") }
        } catch {
            _ = entry.remove(name: temp)
            throw error
        }
        if let current = try entry.stat() {
            switch current.kind {
            case .file:
                try keep(entry, path: version.path, by: me, reason: .restoredOver, removing: false, now: now)
            case .directory:
                _ = entry.remove(name: temp)
                throw SyncError(.io, "\(version.path) is a directory now; move it away to restore the file")
            default:
                break
            }
        }
        guard entry.rename(temp, to: entry.name) else {
            let message = FileOps.errorText()
            _ = entry.remove(name: temp)
            throw SyncError(.io, "cannot put \(version.path) back: \(message)")
        }
        _ = fsync(entry.directory)
        // What it replaced is kept already: the shadow follows the restored file.
        link(entry.directory, entry.name, shadow: shadow(version.path))
    }
}

extension VersionStore.Version {
    /// A version's time as people read it: `2026-12-03 07:35:12.123` (UTC).
    public static func stampText(_ time: Double) -> String {
        let b = Array(VersionStore.stamp(time).utf8)
        func s(_ r: Range<Int>) -> String { String(decoding: b[r], as: UTF8.self) }
        return "\(s(0..<4))-\(s(4..<6))-\(s(6..<8)) \(s(9..<11)):\(s(11..<13)):\(s(13..<19))"
    }

    /// The time in `stampText`'s form or in a version file's stamp (`20261203T073512.123Z`).
    public static func parseStampText(_ text: String) -> Double? {
        if let t = VersionStore.parseStamp(Substring(text)) { return t }
        let b = Array(text.utf8)
        guard b.count == 23, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"), b[10] == UInt8(ascii: " ") || b[10] == UInt8(ascii: "T"),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":"), b[19] == UInt8(ascii: ".") else { return nil }
        func s(_ r: Range<Int>) -> String { String(decoding: b[r], as: UTF8.self) }
        return VersionStore.parseStamp(Substring("\(s(0..<4))\(s(5..<7))\(s(8..<10))T\(s(11..<13))\(s(14..<16))\(s(17..<23))Z"))
    }
}
