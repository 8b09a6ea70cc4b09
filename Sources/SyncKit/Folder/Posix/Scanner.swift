import Foundation
import Logging

/// Walks the folder and says what is on disk, hashing only what changed.
///
/// The quick check (as in Syncthing and rsync): when a file's size, mtime and inode equal the
/// stored record's, its blocks are reused without reading the file. Otherwise the file is read
/// once, chunked with FastCDC and hashed. A file whose size or mtime changes while it is being
/// hashed is still being written: it is skipped and picked up by the next event or scan.
///
/// Every directory is read through a descriptor opened beneath the folder (`FolderRoot`), and
/// every entry is looked at relative to its directory's descriptor without following links: a
/// symlink inside the folder is recorded as a link and never walked into or read through, so
/// the scan cannot leave the folder whatever is planted in it. Names that are not valid UTF-8
/// or otherwise refused by `PathSafety` are not synced (logged once each).
///
/// Names are recorded in NFC, whatever form the disk holds (macOS and some tools write NFD):
/// `e` + U+0301 on disk is the path `é` in the index and on the wire, and the disk's form is
/// kept (every later operation finds it by `FolderRoot`'s lookup). When one directory holds a
/// name in both forms, the NFC one is synced and the other is reported, never deleted.
///
/// The scanner is a value with no mutable state of its own, so scans run off the node's actor
/// (hashing a big file must not stall the protocol) and several can run in parallel.
public struct Scanner: Sendable {
    public let root: FolderRoot
    public let me: NodeID
    public var chunker: Chunker
    public var ignore: IgnoreRules
    public var logger: Logger
    /// Also compute each file's Syncthing block list (`FixedBlocks`), in the same read: on for
    /// a node that speaks BEP.
    public var fixedBlocks = false
    /// With versioning on: the scan keeps each file's shadow, so local edits and deletes leave
    /// versions (`VersionStore`).
    var versions: VersionStore?
    /// Names already reported as not syncable (logged once, not at every rescan).
    let reported = Locked<Set<String>>([])

    public init(root: FolderRoot, me: NodeID, chunker: Chunker = .standard, ignore: IgnoreRules = IgnoreRules(), logger: Logger) {
        self.root = root
        self.me = me
        self.chunker = chunker
        self.ignore = ignore
        self.logger = logger
    }

    /// Everything under the root: an observation for each path present that differs from its
    /// known record (`SyncEngine.changesNothing`), and a "gone" one for each known, not deleted, not ignored
    /// path that was not found.
    ///
    /// With `slice`, observations of present paths are handed over in slices of `sliceSize` as
    /// the walk finds them, and only the rest (with the "gone" ones) is returned: a first scan of
    /// a million files then never holds a million observations at once, and the node records
    /// and stores each slice while the walk goes on.
    public func fullScan(known: LocalIndex, sliceSize: Int = 4096, slice: (([SyncEngine.Observation]) -> Void)? = nil) -> [SyncEngine.Observation] {
        var out = [SyncEngine.Observation]()
        var seen = SeenPaths()
        let sink = slice.map { Sink(size: max(1, sliceSize), handOver: $0) }
        if let dir = try? root.openDirectory(nil) {
            walk(dir, "", known: known, into: &out, seen: &seen, sink: sink)
            close(dir)
        }
        for (path, r) in known where !r.deleted && !seen.contains(path) && !ignore.isIgnored(path, isDirectory: r.kind == .directory) {
            out.append(.init(path: path, record: nil))
            versions?.observedGone(path: path, known: r, me: me.short)
        }
        return out
    }

    /// Only the given paths (from the watcher): each one, its subtree when it is a directory,
    /// and the known paths below one that disappeared.
    public func fullScan(known: [String: FileRecord], sliceSize: Int = 4096, slice: (([SyncEngine.Observation]) -> Void)? = nil) -> [SyncEngine.Observation] {
        fullScan(known: LocalIndex(known), sliceSize: sliceSize, slice: slice)
    }

    public func scan(paths: Set<String>, known: [String: FileRecord]) -> [SyncEngine.Observation] {
        scan(paths: paths, known: LocalIndex(known))
    }

    public func scan(paths: Set<String>, known: LocalIndex) -> [SyncEngine.Observation] {
        var out = [SyncEngine.Observation]()
        var seen = SeenPaths()
        // Parents first, so a new directory is recorded before its content.
        // The watcher reports the disk's spelling; the index knows NFC.
        for path in Set(paths.map { $0.precomposedStringWithCanonicalMapping }).sorted() where !seen.contains(path) {
            guard PathSafety.isSafe(path) else { continue }
            var entry: FolderEntry?
            var st: FileOps.Stat?
            do {
                entry = try root.entry(path)
                st = try entry?.stat()
            } catch {
                // A parent that is a symlink (or a file) now: nothing below it is in the folder.
                logger.debug("cannot look at a path", metadata: ["sync.path": "\(path)", "error": "\(error)"])
                entry = nil
                st = nil
            }
            guard let entry, let st, let kind = st.kind else {
                // Gone (or turned into something unsyncable): it and everything known below it.
                let prefix = path + "/"
                for (p, r) in known where !r.deleted && (p == path || p.hasPrefix(prefix)) && !seen.contains(p) {
                    seen.insert(p)
                    out.append(.init(path: p, record: nil))
                    versions?.observedGone(path: p, known: r, me: me.short)
                }
                continue
            }
            if ignore.isIgnored(path, isDirectory: kind == .directory) { continue }
            seen.insert(path)
            if let (record, hashed) = observe(entry.directory, entry.name, path, st, known: known[path]) {
                out.append(.init(path: path, record: record, hashed: hashed))
            }
            if kind == .directory {
                var found = SeenPaths()
                let dir = entry.open(O_RDONLY | O_DIRECTORY)
                if dir >= 0 {
                    walk(dir, path, known: known, into: &out, seen: &found)
                    close(dir)
                }
                let prefix = path + "/"
                for (p, r) in known where !r.deleted && p.hasPrefix(prefix) && !found.contains(p) && !ignore.isIgnored(p, isDirectory: r.kind == .directory) {
                    out.append(.init(path: p, record: nil))
                    versions?.observedGone(path: p, known: r, me: me.short)
                }
                seen.formUnion(found)
            }
        }
        return out
    }

    /// The paths a walk found, as 64-bit hashes of their bytes: a set of a million paths as
    /// strings took about 85 MB during a full scan, as hashes 16 MB. Two paths with the same
    /// hash (about one chance in 10^7 per scan at a million files; the seed differs per process)
    /// would hide one deletion until the next full scan.
    struct SeenPaths {
        private var hashes = Set<UInt64>()
        private static func key(_ path: String) -> UInt64 {
            var h = Hasher()
            h.combine(path)
            let a = UInt64(bitPattern: Int64(h.finalize()))
            return a
        }
        mutating func insert(_ path: String) { hashes.insert(Self.key(path)) }
        func contains(_ path: String) -> Bool { hashes.contains(Self.key(path)) }
        mutating func formUnion(_ other: SeenPaths) { hashes.formUnion(other.hashes) }
    }

    /// Where a walk hands its observations over in slices (`fullScan(known:sliceSize:slice:)`).
    struct Sink {
        let size: Int
        let handOver: ([SyncEngine.Observation]) -> Void

        func drain(_ out: inout [SyncEngine.Observation]) {
            guard out.count >= size else { return }
            handOver(out)
            out.removeAll(keepingCapacity: true)
        }
    }

    /// Recursively lists the directory open at `dir` (relative path `relative`; "" for the root).
    func walk(_ dir: Int32, _ relative: String, known: LocalIndex, into out: inout [SyncEngine.Observation], seen: inout SeenPaths, sink: Sink? = nil) {
        let entries: [(name: [UInt8], type: UInt8)]
        do { entries = try FolderRoot.list(dir) } catch {
            logger.warning("cannot list directory", metadata: ["sync.path": "\(relative)", "error": "\(error)"])
            return
        }
        // Each disk name with its NFC form (the name in the index); ASCII names are both.
        var names = [(disk: String, wire: String)]()
        names.reserveCapacity(entries.count)
        var hasNonASCII = false
        for e in entries {
            guard let name = String(validating: e.name, as: UTF8.self) else {
                report(relative + "/" + String(decoding: e.name, as: UTF8.self), "not valid UTF-8")
                continue
            }
            if e.name.allSatisfy({ $0 < 0x80 }) {
                names.append((name, name))
            } else {
                hasNonASCII = true
                let wire = name.precomposedStringWithCanonicalMapping
                // A name whose NFC is plain ASCII (the Kelvin sign U+212A is "K") would be looked
                // up by the ASCII fast path and never found: not synced, said so.
                if wire.utf8.allSatisfy({ $0 < 0x80 }) {
                    report(relative.isEmpty ? name : relative + "/" + name, "its Unicode NFC form \(wire.debugDescription) is another, plain-ASCII name; rename it")
                    continue
                }
                names.append((name, wire))
            }
        }
        if hasNonASCII {
            // Two spellings of one NFC name: the one already in NFC is the file (the lookup
            // prefers exact bytes too); the other is not synced, and said so.
            var byWire = [String: String]()
            // (Compared as bytes: Swift's == takes the two spellings for one string.)
            for n in names where byWire[n.wire] == nil || n.disk.utf8.elementsEqual(n.wire.utf8) { byWire[n.wire] = n.disk }
            names = names.filter { n in
                guard byWire[n.wire]?.utf8.elementsEqual(n.disk.utf8) == true else {
                    report(relative.isEmpty ? n.disk : relative + "/" + n.disk, "the same name as \(n.wire.debugDescription) in another Unicode form; only that one is synced")
                    return false
                }
                return true
            }
        }
        for (name, wireName) in names.sorted(by: { $0.wire < $1.wire }) {
            let path = relative.isEmpty ? wireName : relative + "/" + wireName
            // The state directory and temp files are skipped before they are judged.
            if IgnoreRules.isInternal(path) { continue }
            if let problem = PathSafety.problem(with: path) {
                report(path, problem)
                continue
            }
            guard let st = try? FolderEntry.stat(dir, name, path), let kind = st.kind else { continue }
            if ignore.isIgnored(path, isDirectory: kind == .directory) { continue }
            seen.insert(path)
            let old = known[path]
            if let (record, hashed) = observe(dir, name, path, st, known: old) {
                // A path exactly as the index has it (the quick check held and nothing else
                // moved) says nothing to the engine: it is left out, so that a restart's scan of
                // a million unchanged files hands the node an empty list instead of a million
                // observations it would compare and drop one by one.
                let changesNothing = !hashed && old.map { SyncEngine.changesNothing(record, in: $0) } == true
                if !changesNothing {
                    out.append(.init(path: path, record: record, hashed: hashed))
                    sink?.drain(&out)
                }
            }
            if kind == .directory {
                let sub = name.withCString { openat(dir, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                guard sub >= 0 else {
                    logger.warning("cannot open directory", metadata: ["sync.path": "\(path)", "error": "\(FileOps.errorText())"])
                    continue
                }
                walk(sub, path, known: known, into: &out, seen: &seen, sink: sink)
                close(sub)
            }
        }
    }

    /// Logs, once per path, a name that is on disk but cannot be synced.
    func report(_ path: String, _ problem: String) {
        guard reported.withLock({ $0.insert(path).inserted }) else { return }
        logger.warning("not syncing a name that SyncKit refuses", metadata: ["sync.path": "\(path.debugDescription)", "reason": "\(problem)"])
    }

    /// The record for one entry (`name` in the directory open at `dir`) as it is now, hashing
    /// only when the quick check fails. Nil when the file is unstable (being written) or
    /// unreadable; `hashed` tells whether the file was read.
    func observe(_ dir: Int32, _ name: String, _ path: String, _ st: FileOps.Stat, known: FileRecord?) -> (FileRecord, hashed: Bool)? {
        guard let kind = st.kind else { return nil }
        var r = FileRecord(path: path, kind: kind, mode: st.mode, modifiedBy: me, inode: st.inode)
        if !root.keepsPermissions {
            // The disk's mode is the file system's constant, not a choice: keep the known one.
            r.mode = known.flatMap { $0.deleted || $0.kind != kind ? nil : $0.mode } ?? (kind == .directory ? 0o755 : 0o644)
        }
        switch kind {
        case .directory:
            r.mtimeNs = 0  // directory times change with their content; not synced
        case .symlink:
            guard let target = FolderEntry.readLink(dir, name) else { return nil }
            r.symlinkTarget = target
            r.mtimeNs = st.mtimeNs
            r.mode = 0o777
        case .file:
            r.size = st.size
            r.mtimeNs = st.mtimeNs
            if let known, !known.deleted, known.kind == .file, known.size == st.size, known.mtimeNs == st.mtimeNs, known.inode == st.inode,
               !fixedBlocks || known.syncthingBlocks != nil {
                r.blocks = known.blocks
                r.fixedBlocks = known.fixedBlocks
                versions?.observedLocal(dir, name, path: path, st, known: known, me: me.short)
                return (r, false)
            }
            do {
                let raw = name.withCString { openat(dir, $0, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) }
                guard raw >= 0 else { throw SyncError(.io, "cannot open \(path): \(FileOps.errorText())") }
                let fd = try FolderEntry.regularFile(raw, path)
                defer { close(fd) }
                // A file no longer than the chunker's minimum is one chunk, which is also its
                // Syncthing list: no second hash.
                let wantFixed = fixedBlocks && st.size > UInt64(chunker.minSize)
                let (blocks, fixed, size) = try chunker.blocks(fileDescriptor: fd, fixedForSize: wantFixed ? st.size : nil)
                let after = try FileOps.fstat(fd)
                guard after.size == st.size, after.mtimeNs == st.mtimeNs, size == st.size else {
                    logger.debug("file changed while hashing; will look again", metadata: ["sync.path": "\(path)"])
                    return nil
                }
                r.blocks = blocks
                // Kept only when the chunks are not already of that shape (small files).
                if wantFixed && fixed != blocks { r.fixedBlocks = fixed }
                versions?.observedLocal(dir, name, path: path, st, known: known, me: me.short)
                return (r, true)
            } catch {
                logger.warning("cannot read file", metadata: ["sync.path": "\(path)", "error": "\(error)"])
                return nil
            }
        }
        return (r, false)
    }
}
