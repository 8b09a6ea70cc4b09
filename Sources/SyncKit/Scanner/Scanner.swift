import Foundation
import Logging

/// Walks the folder and says what is on disk, hashing only what changed.
///
/// The quick check (as in Syncthing and rsync): when a file's size, mtime and inode equal the
/// stored record's, its blocks are reused without reading the file. Otherwise the file is read
/// once, chunked with FastCDC and hashed. A file whose size or mtime changes while it is being
/// hashed is still being written: it is skipped and picked up by the next event or scan.
///
/// The scanner is a value with no mutable state, so scans run off the node's actor (hashing a
/// big file must not stall the protocol) and several can run in parallel.
public struct Scanner: Sendable {
    public let root: String
    public let me: NodeID
    public var chunker: Chunker
    public var ignore: IgnoreRules
    public var logger: Logger

    public init(root: String, me: NodeID, chunker: Chunker = .standard, ignore: IgnoreRules = IgnoreRules(), logger: Logger) {
        self.root = root
        self.me = me
        self.chunker = chunker
        self.ignore = ignore
        self.logger = logger
    }

    /// Everything under the root: an observation for each path present, and a "gone" one for
    /// each known, not deleted, not ignored path that was not found.
    public func fullScan(known: [String: FileRecord]) -> [SyncEngine.Observation] {
        var out = [SyncEngine.Observation]()
        var seen = Set<String>()
        walk("", known: known, into: &out, seen: &seen)
        for (path, r) in known where !r.deleted && !seen.contains(path) && !ignore.isIgnored(path, isDirectory: r.kind == .directory) {
            out.append(.init(path: path, record: nil))
        }
        return out
    }

    /// Only the given paths (from the watcher): each one, its subtree when it is a directory,
    /// and the known paths below one that disappeared.
    public func scan(paths: Set<String>, known: [String: FileRecord]) -> [SyncEngine.Observation] {
        var out = [SyncEngine.Observation]()
        var seen = Set<String>()
        // Parents first, so a new directory is recorded before its content.
        for path in paths.sorted() where !seen.contains(path) {
            guard PathSafety.isSafe(path) else { continue }
            let st: FileOps.Stat?
            do { st = try FileOps.lstat(root + "/" + path) } catch {
                logger.warning("cannot stat", metadata: ["sync.path": "\(path)", "error": "\(error)"])
                continue
            }
            guard let st, let kind = st.kind else {
                // Gone (or turned into something unsyncable): it and everything known below it.
                let prefix = path + "/"
                for (p, r) in known where !r.deleted && (p == path || p.hasPrefix(prefix)) && !seen.contains(p) {
                    seen.insert(p)
                    out.append(.init(path: p, record: nil))
                }
                continue
            }
            if ignore.isIgnored(path, isDirectory: kind == .directory) { continue }
            seen.insert(path)
            if let (record, hashed) = observe(path, st, known: known[path]) { out.append(.init(path: path, record: record, hashed: hashed)) }
            if kind == .directory {
                var found = Set<String>()
                walk(path, known: known, into: &out, seen: &found)
                let prefix = path + "/"
                for (p, r) in known where !r.deleted && p.hasPrefix(prefix) && !found.contains(p) && !ignore.isIgnored(p, isDirectory: r.kind == .directory) {
                    out.append(.init(path: p, record: nil))
                }
                seen.formUnion(found)
            }
        }
        return out
    }

    /// Recursively lists `dir` (relative; "" for the root).
    func walk(_ dir: String, known: [String: FileRecord], into out: inout [SyncEngine.Observation], seen: inout Set<String>) {
        let absolute = dir.isEmpty ? root : root + "/" + dir
        guard let handle = opendir(absolute) else {
            logger.warning("cannot list directory", metadata: ["sync.path": "\(dir)", "error": "\(FileOps.errorText())"])
            return
        }
        var names = [String]()
        while let entry = readdir(handle) {
            let name = FileOps.name(of: entry)
            guard let name else {
                logger.warning("skipping a name that is not valid UTF-8", metadata: ["sync.path": "\(dir)"])
                continue
            }
            if name == "." || name == ".." { continue }
            names.append(name)
        }
        closedir(handle)
        for name in names.sorted() {
            let path = dir.isEmpty ? name : dir + "/" + name
            guard PathSafety.isSafe(path) else { continue }
            guard let st = try? FileOps.lstat(root + "/" + path), let kind = st.kind else { continue }
            if ignore.isIgnored(path, isDirectory: kind == .directory) { continue }
            seen.insert(path)
            if let (record, hashed) = observe(path, st, known: known[path]) { out.append(.init(path: path, record: record, hashed: hashed)) }
            if kind == .directory { walk(path, known: known, into: &out, seen: &seen) }
        }
    }

    /// The record for one path as it is now, hashing only when the quick check fails.
    /// Nil when the file is unstable (being written) or unreadable; `hashed` tells whether the
    /// file was read.
    func observe(_ path: String, _ st: FileOps.Stat, known: FileRecord?) -> (FileRecord, hashed: Bool)? {
        guard let kind = st.kind else { return nil }
        var r = FileRecord(path: path, kind: kind, mode: st.mode, modifiedBy: me, inode: st.inode)
        switch kind {
        case .directory:
            r.mtimeNs = 0  // directory times change with their content; not synced
        case .symlink:
            guard let target = FileOps.readLink(root + "/" + path) else { return nil }
            r.symlinkTarget = target
            r.mtimeNs = st.mtimeNs
            r.mode = 0o777
        case .file:
            r.size = st.size
            r.mtimeNs = st.mtimeNs
            if let known, !known.deleted, known.kind == .file, known.size == st.size, known.mtimeNs == st.mtimeNs, known.inode == st.inode {
                r.blocks = known.blocks
                return (r, false)
            }
            do {
                let fd = try FileOps.openForReading(root + "/" + path)
                defer { close(fd) }
                let (blocks, size) = try chunker.blocks(fileDescriptor: fd)
                let after = try FileOps.fstat(fd)
                guard after.size == st.size, after.mtimeNs == st.mtimeNs, size == st.size else {
                    logger.debug("file changed while hashing; will look again", metadata: ["sync.path": "\(path)"])
                    return nil
                }
                r.blocks = blocks
                return (r, true)
            } catch {
                logger.warning("cannot read file", metadata: ["sync.path": "\(path)", "error": "\(error)"])
                return nil
            }
        }
        return (r, false)
    }
}
