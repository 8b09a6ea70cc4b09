import Foundation
import NIOCore
import SyncKit

/// A folder's disk, in memory: what survives a node's crash in a simulation. User operations
/// (write, delete, rename...) change it as a person would, and tell the watchers.
public final class InMemoryDisk: Sendable {
    /// One entry on the disk.
    public struct Entry: Sendable, Equatable {
        public var kind: FileRecord.Kind
        public var content: [UInt8] = []
        public var mode: UInt32
        public var mtimeNs: Int64
        public var symlinkTarget = ""
        public var inode: UInt64
    }

    private struct State {
        var entries: [String: Entry] = [:]
        /// Paths with a pull's temp file (assembled, not yet renamed into place).
        var temps: Set<String> = []
        var nextInode: UInt64 = 1
        var watchers: [UUID: AsyncStream<FolderChange>.Continuation] = [:]
    }

    private let state = Locked(State())

    public init() {}

    /// Every entry, by path.
    public var entries: [String: Entry] { state.withLock { $0.entries } }

    public func entry(_ path: String) -> Entry? { state.withLock { $0.entries[path] } }

    // MARK: what a user does

    /// Writes a file (making missing parent directories), as an editor would.
    public func write(_ path: String, _ content: [UInt8], mtimeNs: Int64, mode: UInt32 = 0o644) {
        change([path]) { s in
            Self.makeParents(path, &s)
            let inode = s.entries[path]?.kind == .file ? s.entries[path]!.inode : Self.newInode(&s)
            s.entries[path] = Entry(kind: .file, content: content, mode: mode, mtimeNs: mtimeNs, inode: inode)
        }
    }

    /// Deletes a file, a link, or a directory and everything below it.
    public func remove(_ path: String) {
        change([path]) { s in
            for p in s.entries.keys where p == path || p.hasPrefix(path + "/") { s.entries[p] = nil }
        }
    }

    /// Renames a file or a directory (with its subtree) to a new path, replacing what is there.
    public func rename(_ from: String, to: String) {
        change([from, to]) { s in
            Self.makeParents(to, &s)
            let moved = s.entries.filter { $0.key == from || $0.key.hasPrefix(from + "/") }
            for p in s.entries.keys where p == to || p.hasPrefix(to + "/") { s.entries[p] = nil }
            for (p, e) in moved {
                s.entries[p] = nil
                s.entries[to + p.dropFirst(from.count)] = e
            }
        }
    }

    public func makeDirectory(_ path: String, mode: UInt32 = 0o755) {
        change([path]) { s in
            Self.makeParents(path, &s)
            if s.entries[path] == nil { s.entries[path] = Entry(kind: .directory, mode: mode, mtimeNs: 0, inode: Self.newInode(&s)) }
        }
    }

    public func makeSymlink(_ path: String, to target: String, mtimeNs: Int64) {
        change([path]) { s in
            Self.makeParents(path, &s)
            s.entries[path] = Entry(kind: .symlink, mode: 0o777, mtimeNs: mtimeNs, symlinkTarget: target, inode: Self.newInode(&s))
        }
    }

    /// Applies `body` and tells the watchers which paths changed.
    private func change(_ paths: Set<String>, _ body: (inout State) -> Void) {
        let watchers = state.withLock { s -> [AsyncStream<FolderChange>.Continuation] in
            body(&s)
            return Array(s.watchers.values)
        }
        for w in watchers { w.yield(.changed(paths)) }
    }

    // MARK: what a folder implementation does

    func update(_ body: (inout [String: Entry], () -> UInt64) throws -> Void) rethrows {
        try state.withLock { s in
            var next = s.nextInode
            try body(&s.entries) {
                defer { next += 1 }
                return next
            }
            s.nextInode = next
        }
    }

    /// Paths with a pull's temp file.
    var temps: Set<String> { state.withLock { $0.temps } }

    func setTemp(_ path: String, _ present: Bool) {
        state.withLock { s in
            if present { s.temps.insert(path) } else { s.temps.remove(path) }
        }
    }

    func watch() -> (UUID, AsyncStream<FolderChange>) {
        let (stream, continuation) = AsyncStream.makeStream(of: FolderChange.self)
        let key = UUID()
        state.withLock { $0.watchers[key] = continuation }
        return (key, stream)
    }

    func unwatch(_ key: UUID) {
        state.withLock { $0.watchers.removeValue(forKey: key) }?.finish()
    }

    private static func newInode(_ s: inout State) -> UInt64 {
        defer { s.nextInode += 1 }
        return s.nextInode
    }

    private static func makeParents(_ path: String, _ s: inout State) {
        var parent = ""
        for component in path.split(separator: "/").dropLast() {
            parent = parent.isEmpty ? String(component) : parent + "/" + component
            if s.entries[parent] == nil { s.entries[parent] = Entry(kind: .directory, mode: 0o755, mtimeNs: 0, inode: newInode(&s)) }
        }
    }
}

/// A `LocalFolder` over an `InMemoryDisk`, with the same rules as the Linux one: it scans what
/// is on the disk (hashing with `Chunker`, reusing known blocks when size, mtime and inode are
/// unchanged), applies jobs only when the disk is still what the job expected, records the
/// target as an intent before it changes the disk, verifies every block, refuses a path through
/// a symlink or a file, and never touches the state directory.
///
/// It can be "crashed" (`kill`): from then on it changes nothing, as a process that died, while
/// the disk stays for the next incarnation. Writes are durable at once (the simulation's crash
/// point is between a write and the index record of it, the window that matters).
public final class InMemoryFolder: LocalFolder {
    public let disk: InMemoryDisk
    let index: any IndexPersistence
    let me: NodeID
    private let alive = Locked(true)
    private let watching = Locked<UUID?>(nil)

    public init(disk: InMemoryDisk, index: any IndexPersistence, me: NodeID) {
        self.disk = disk
        self.index = index
        self.me = me
    }

    /// Stops every change this folder would make (its process died).
    public func kill() { alive.withLock { $0 = false } }

    var isAlive: Bool { alive.withLock { $0 } }

    public func recover() {}

    public func landed(_ intents: [FileRecord]) -> Set<String> {
        let temps = disk.temps
        return Set(intents.filter { !$0.deleted && ($0.kind == .file || $0.kind == .symlink) && !temps.contains($0.path) }.map(\.path))
    }

    public func scan(_ request: ScanRequest, known: LocalIndex, ignore: IgnoreRules) async -> ScanResult {
        let entries = disk.entries
        var out = [SyncEngine.Observation]()
        var seen = Set<String>()
        func syncable(_ path: String, _ e: InMemoryDisk.Entry) -> Bool {
            !IgnoreRules.isInternal(path) && PathSafety.isSafe(path) && !ignore.isIgnored(path, isDirectory: e.kind == .directory)
                && !Self.hasUnsyncedParent(path, entries, ignore)
        }
        let selected: [String]
        switch request {
        case .full:
            selected = entries.keys.sorted()
        case .paths(let paths):
            selected = entries.keys.filter { p in paths.contains { p == $0 || p.hasPrefix($0 + "/") } }.sorted()
        }
        for path in selected {
            guard let e = entries[path], syncable(path, e) else { continue }
            seen.insert(path)
            out.append(observe(path, e, known[path]))
        }
        for (path, r) in known.sorted(by: { $0.key < $1.key }) where !r.deleted && !seen.contains(path) {
            let inScope: Bool
            switch request {
            case .full: inScope = true
            case .paths(let paths): inScope = paths.contains { path == $0 || path.hasPrefix($0 + "/") }
            }
            if inScope && !ignore.isIgnored(path, isDirectory: r.kind == .directory) && entries[path].map({ !syncable(path, $0) }) != false {
                out.append(.init(path: path, record: nil))
            }
        }
        return ScanResult(request: request, observations: out, known: known)
    }

    /// True when a parent of `path` is not a directory or is ignored (its content is not synced).
    static func hasUnsyncedParent(_ path: String, _ entries: [String: InMemoryDisk.Entry], _ ignore: IgnoreRules) -> Bool {
        var parent = ""
        for component in path.split(separator: "/").dropLast() {
            parent = parent.isEmpty ? String(component) : parent + "/" + component
            guard entries[parent]?.kind == .directory else { return true }
        }
        return false
    }

    func observe(_ path: String, _ e: InMemoryDisk.Entry, _ known: FileRecord?) -> SyncEngine.Observation {
        var r = FileRecord(path: path, kind: e.kind, mode: e.mode & 0o777, modifiedBy: me, inode: e.inode)
        switch e.kind {
        case .directory:
            r.mtimeNs = 0
        case .symlink:
            r.symlinkTarget = e.symlinkTarget
            r.mtimeNs = e.mtimeNs
            r.mode = 0o777
        case .file:
            r.size = UInt64(e.content.count)
            r.mtimeNs = e.mtimeNs
            if let known, !known.deleted, known.kind == .file, known.size == r.size, known.mtimeNs == e.mtimeNs, known.inode == e.inode {
                r.blocks = known.blocks
                return .init(path: path, record: r)
            }
            r.blocks = Chunker.standard.blocks(of: e.content)
            return .init(path: path, record: r, hashed: true)
        }
        return .init(path: path, record: r)
    }

    public func watch(ignore: IgnoreRules) throws -> AsyncStream<FolderChange> {
        let (key, stream) = disk.watch()
        watching.withLock { $0 = key }
        return stream
    }

    public func stopWatching() {
        if let key = watching.withLock({ $0 }) { disk.unwatch(key) }
    }

    // MARK: jobs

    struct Refused: Error, CustomStringConvertible {
        var description: String
    }

    /// True when the disk at `path` is what `expected` describes (nil: nothing there).
    static func matches(_ expected: FileRecord?, _ e: InMemoryDisk.Entry?) -> Bool {
        guard let expected, !expected.deleted else { return e == nil }
        guard let e, e.kind == expected.kind else { return false }
        switch e.kind {
        case .file: return UInt64(e.content.count) == expected.size && e.mtimeNs == expected.mtimeNs && (expected.inode == 0 || e.inode == expected.inode)
        case .directory: return true
        case .symlink: return e.symlinkTarget == expected.symlinkTarget
        }
    }

    /// Checks that every parent of `path` is a directory (none: made, with `create`).
    static func checkParents(_ path: String, _ entries: inout [String: InMemoryDisk.Entry], create: Bool, inode: () -> UInt64) throws {
        var parent = ""
        for component in path.split(separator: "/").dropLast() {
            parent = parent.isEmpty ? String(component) : parent + "/" + component
            switch entries[parent]?.kind {
            case .directory?: continue
            case nil where create: entries[parent] = .init(kind: .directory, mode: 0o755, mtimeNs: 0, inode: inode())
            case nil: throw Refused(description: "no parent directory for \(path)")
            default: throw Refused(description: "\(parent) is not a real directory; refusing to write through it")
            }
        }
    }

    public func apply(_ job: PullJob, locals: [BlockHash: [BlockMap.Location]], blocks: any BlockSource) async -> (PullOutcome, PullStats) {
        var stats = PullStats()
        guard PathSafety.isSafe(job.path) else { return (.failed("unsafe path"), stats) }
        if job.operation == .writeFile, let move = job.renameFrom, let outcome = self.move(job, move) { return (outcome, stats) }
        var content = [UInt8]()
        if job.operation == .writeFile {
            // Blocks: local copies first (verified), then peers.
            for (block, offset) in zip(job.target.blocks, job.target.blockOffsets) {
                if let data = locals[block.hash]?.lazy.compactMap({ self.readBlock($0) }).first(where: { $0.withUnsafeReadableBytes { Chunker.hash($0) } == block.hash }) {
                    content += data.readableBytesView
                    stats.bytesReused += data.readableBytes
                    continue
                }
                guard let data = await blocks.fetch(block, offset: offset, of: job.target), data.readableBytes == Int(block.size),
                      data.withUnsafeReadableBytes({ Chunker.hash($0) }) == block.hash else {
                    return (.unavailable, stats)
                }
                content += data.readableBytesView
                stats.bytesFromNetwork += data.readableBytes
            }
        }
        guard isAlive else { return (.failed("the node stopped"), stats) }
        // The temp file is complete (a write assembles it first, as on disk).
        let usesTemp = job.operation == .writeFile || job.operation == .makeSymlink
        if usesTemp { disk.setTemp(job.path, true) }
        // (A directory that is already there is fine for a directory job, as on disk.)
        let directoryThere = job.operation == .makeDirectory && disk.entry(job.path)?.kind == .directory
        guard directoryThere || Self.matches(job.expectedLocal, disk.entry(job.path)) else { return (.localChanged, stats) }
        // The intent first: if the node dies right after the change, the next start knows it.
        do { try index.saveIntents([job.target]) } catch { return (.failed("cannot record the intent: \(error)"), stats) }
        var applied = job.target
        do {
            try disk.update { entries, inode in
                guard directoryThere || Self.matches(job.expectedLocal, entries[job.path]) else { throw Refused(description: "changed") }
                try Self.checkParents(job.path, &entries, create: job.operation != .delete, inode: inode)
                switch job.operation {
                case .writeFile, .makeSymlink:
                    if let copy = job.conflictCopyPath, let loser = entries[job.path] { entries[copy] = loser }
                    if job.operation == .writeFile {
                        entries[job.path] = .init(kind: .file, content: content, mode: job.target.mode & 0o777, mtimeNs: job.target.mtimeNs, inode: inode())
                    } else {
                        entries[job.path] = .init(kind: .symlink, mode: 0o777, mtimeNs: job.target.mtimeNs, symlinkTarget: job.target.symlinkTarget, inode: inode())
                    }
                case .makeDirectory:
                    if entries[job.path]?.kind != .directory {
                        entries[job.path] = .init(kind: .directory, mode: job.target.mode & 0o777, mtimeNs: 0, inode: inode())
                    } else {
                        entries[job.path]!.mode = job.target.mode & 0o777
                    }
                case .updateMetadata:
                    if job.target.kind != .symlink { entries[job.path]?.mode = job.target.mode & 0o777 }
                    if job.target.kind != .directory { entries[job.path]?.mtimeNs = job.target.mtimeNs }
                case .delete:
                    if entries[job.path]?.kind == .directory, entries.keys.contains(where: { $0.hasPrefix(job.path + "/") }) {
                        throw Refused(description: "the directory still holds files that are not synced (ignored or unreadable); keeping it")
                    }
                    entries[job.path] = nil
                }
                if let e = entries[job.path] {
                    applied.inode = e.inode
                    if applied.kind == .file { applied.mtimeNs = e.mtimeNs }
                } else {
                    applied.inode = 0
                }
            }
            // The temp file was renamed into place (no crash can fall between the two here).
            if usesTemp { disk.setTemp(job.path, false) }
        } catch let refused as Refused where refused.description == "changed" {
            return (.localChanged, stats)
        } catch {
            return (.failed("\(error)"), stats)
        }
        return (.applied(applied), stats)
    }

    /// Places a file by moving `source`'s entry (its inode kept), as the disk folder does with
    /// `renameat2(RENAME_NOREPLACE)`: nil when the source is no longer the file the node knew
    /// (the caller then writes a copy), `.localChanged` when the target's name is taken.
    private func move(_ job: PullJob, _ move: PullJob.Move) -> PullOutcome? {
        let source = move.from
        guard isAlive, Self.matches(source, disk.entry(source.path)) else { return nil }
        guard Self.matches(job.expectedLocal, disk.entry(job.path)) else { return .localChanged }
        do { try index.saveIntents([job.target, move.deletion]) } catch { return .failed("cannot record the intent: \(error)") }
        var applied = job.target
        do {
            try disk.update { entries, inode in
                guard Self.matches(source, entries[source.path]) else { throw Refused(description: "source") }
                guard Self.matches(job.expectedLocal, entries[job.path]) else { throw Refused(description: "changed") }
                try Self.checkParents(job.path, &entries, create: true, inode: inode)
                var moved = entries.removeValue(forKey: source.path)!
                moved.mtimeNs = job.target.mtimeNs
                entries[job.path] = moved
                applied.inode = moved.inode
                applied.mtimeNs = moved.mtimeNs
            }
        } catch let refused as Refused where refused.description == "changed" {
            return .localChanged
        } catch let refused as Refused where refused.description == "source" {
            return nil
        } catch {
            return .failed("\(error)")
        }
        return .moved(applied)
    }

    public func readBlock(_ location: BlockMap.Location) -> ByteBuffer? {
        guard let e = disk.entry(location.path), e.kind == .file, UInt64(e.content.count) >= location.offset + UInt64(location.size) else { return nil }
        let start = Int(location.offset)
        return ByteBuffer(bytes: e.content[start..<(start + Int(location.size))])
    }

    public func removeTemp(for path: String) {}
    public func cleanStaleTemps() {}

    public func readIgnoreFile() -> String {
        disk.entry(".syncignore").flatMap { $0.kind == .file ? String(decoding: $0.content, as: UTF8.self) : nil } ?? ""
    }
}

/// The index in memory, for tests and simulations: it outlives a simulated crash (it is "on
/// disk"), and loses only what the node never wrote.
public final class InMemoryIndex: IndexPersistence {
    private struct State {
        var files: [String: FileRecord] = [:]
        var peers: [NodeID: (state: PeerIndexState, records: [String: FileRecord])] = [:]
        var intents: [String: FileRecord] = [:]
        var reserved: UInt64 = 0
    }

    private let state = Locked(State())
    public let indexID: UInt64

    public init(indexID: UInt64 = UInt64.random(in: 1...UInt64(Int64.max))) {
        self.indexID = indexID
    }

    public var reservedSequence: UInt64 { state.withLock { $0.reserved } }
    public func loadAll() throws -> [FileRecord] { state.withLock { Array($0.files.values) } }

    public func loadPeers() throws -> [StoredPeer] {
        state.withLock { s in
            s.peers.sorted { $0.key < $1.key }.map { StoredPeer(id: $0.key, state: $0.value.state, records: Array($0.value.records.values)) }
        }
    }

    public func loadIntents() throws -> [FileRecord] { state.withLock { Array($0.intents.values) } }

    public func save(_ changes: IndexChanges) throws {
        state.withLock { s in
            for r in changes.records {
                s.files[r.path] = r
                // As `IndexStore`: a stored record makes the intent it carries out needless.
                if let intent = s.intents[r.path], IndexStore.supersedes(r, intent: intent) { s.intents[r.path] = nil }
            }
            for peer in changes.forgottenPeers { s.peers[peer] = nil }
            for (peer, records) in changes.peerRecords {
                var entry = s.peers[peer] ?? (PeerIndexState(indexID: 0, maxSequence: 0), [:])
                for r in records { entry.records[r.path] = r }
                s.peers[peer] = entry
            }
            for (peer, st) in changes.peerState {
                var entry = s.peers[peer] ?? (st, [:])
                entry.state = st
                s.peers[peer] = entry
            }
        }
    }

    public func reserveSequences(through: UInt64) throws { state.withLock { $0.reserved = through } }
    public func saveIntents(_ records: [FileRecord]) throws { state.withLock { s in for r in records { s.intents[r.path] = r } } }
    public func clearIntents() throws { state.withLock { $0.intents.removeAll() } }
    public func close() throws {}
}
