import CSyncKitShims
import Foundation

/// Bytes received so far by each running pull, for the dashboard's progress bars.
///
/// Written by the jobs' block fetches off the node's actor (one lock per verified block) and
/// read by the REST API, so it is a lock, not actor state. A block taken from a local file does
/// not pass here: a pull mostly made of reused blocks jumps to the end when it lands.
final class TransferProgress: Sendable {
    struct Entry: Sendable {
        var size: UInt64
        var done: UInt64 = 0
        var started = Date()
    }

    private let state = Locked([String: Entry]())

    func begin(_ path: String, size: UInt64) { state.withLock { $0[path] = Entry(size: size) } }
    func add(_ path: String, bytes: UInt64) { state.withLock { $0[path]?.done += bytes } }
    func end(_ path: String) { _ = state.withLock { $0.removeValue(forKey: path) } }
    var all: [String: Entry] { state.withLock { $0 } }
}

/// What the dashboard and the REST API show and do (`syncctl`'s GUI server calls these).
extension SyncNode {
    /// A pull in flight: the file, its size, and the bytes received from peers so far.
    public struct Transfer: Sendable, Codable, Equatable {
        public var path: String
        public var operation: String
        public var size: UInt64
        public var done: UInt64
        public var startedAt: Double
    }

    /// A peer this node knows: connected now, or seen before (its index is kept).
    public struct PeerSummary: Sendable, Codable, Equatable {
        public var nodeID: String
        public var shortID: String
        public var name: String
        public var address: String
        public var connected: Bool
        /// "synckit", or "bep" for a Syncthing device.
        public var `protocol`: String
        public var bytesIn: Int
        public var bytesOut: Int
        /// It sent its whole index since it connected.
        public var caughtUp: Bool
        /// What this node still pulls that it offers (`SyncEngine.neededFrom`).
        public var pullFiles: Int
        public var pullBytes: UInt64
    }

    /// The folder's condition, beside `status()`.
    public struct FolderState: Sendable, Codable, Equatable {
        /// "scanning", "syncing", "idle" or "paused".
        public var state: String
        public var paused: Bool
        public var needFiles: Int
        public var needBytes: UInt64
        /// Of bytes: what is here over what is here and still to come.
        public var percentInSync: Double
        public var lastScan: Double?
        public var startedAt: Double
    }

    /// The status and the folder's state from one walk of the index (the dashboard asks for
    /// both twice a second while things move).
    public func statusAndFolderState() -> (NodeStatus, FolderState) {
        let status = status()
        return (status, folderState(have: status.bytes))
    }

    /// `have`: the bytes of the live entries of the index (`NodeStatus.bytes`).
    private func folderState(have: UInt64) -> FolderState {
        var have = have
        var need = machine.engine.needSummary()
        // Bytes already received by pulls in flight count as here: a large file's progress
        // moves the folder's percentage too, not only when it lands.
        let received = progress.all.values.reduce(UInt64(0)) { $0 + min($1.done, $1.size) }
        have += min(received, need.bytes)
        need.bytes -= min(received, need.bytes)
        let state = machine.paused ? "paused" : machine.isScanning && !machine.inSync ? "scanning" : machine.inSync ? "idle" : "syncing"
        let percent = have + need.bytes == 0 ? (need.files == 0 ? 100 : 0) : Double(have) * 100 / Double(have + need.bytes)
        return FolderState(state: state, paused: machine.paused, needFiles: need.files, needBytes: need.bytes,
                           percentInSync: need.files == 0 ? 100 : min(percent, 99.9),
                           lastScan: lastFullScan?.timeIntervalSince1970, startedAt: startedAt.timeIntervalSince1970)
    }

    /// Every peer in the index (connected ones first, then by name), with what each still needs.
    public func peerSummaries() -> [PeerSummary] {
        var out: [PeerSummary] = []
        var seen = Set<NodeID>()
        for p in machine.connectedPeers {
            seen.insert(p.id)
            let need = machine.engine.neededFrom(peer: p.id)
            let connection = connections[p.connection]
            out.append(PeerSummary(nodeID: p.id.description, shortID: p.id.short, name: p.name, address: p.address, connected: true,
                                   protocol: connection?.codec == nil ? "synckit" : "bep", bytesIn: p.bytesReceived,
                                   bytesOut: connection?.bytesSent ?? 0, caughtUp: p.caughtUp, pullFiles: need.files, pullBytes: need.bytes))
        }
        for id in machine.engine.peers.keys.sorted() where !seen.contains(id) {
            let need = machine.engine.neededFrom(peer: id)
            out.append(PeerSummary(nodeID: id.description, shortID: id.short, name: id.short, address: "", connected: false,
                                   protocol: "", bytesIn: 0, bytesOut: 0, caughtUp: false, pullFiles: need.files, pullBytes: need.bytes))
        }
        return out
    }

    /// Pulls in flight, largest first (small files come and go too fast to show).
    public func transfers() -> [Transfer] {
        let bytes = progress.all
        return machine.engine.running.values.map { job in
            let entry = bytes[job.path]
            return Transfer(path: job.path, operation: "\(job.operation)", size: job.target.deleted ? 0 : job.target.size,
                            done: min(entry?.done ?? 0, job.target.size), startedAt: (entry?.started ?? Date()).timeIntervalSince1970)
        }.sorted { ($0.size, $0.path) > ($1.size, $1.path) }
    }

    /// Stops pulling (`true`) or pulls again (`false`).
    public func setPaused(_ on: Bool) { handle(.pause(on)) }

    /// The first `limit` bytes of the regular file at `path` in the folder (nil when none is
    /// there); read through the folder's root, so never outside it nor through a link.
    public nonisolated func head(of path: String, limit: Int) throws -> [UInt8]? {
        guard let posix = folder as? PosixFolder else { throw SyncError(.configuration, "this folder is not on disk") }
        if let problem = PathSafety.problem(with: path) { throw SyncError(.unsafePath, "'\(path)' is not a path in the folder: \(problem)") }
        guard try posix.root.stat(path) != nil else { return nil }
        return posix.root.readSmallFile(path, limit: limit)
    }

    /// A conflict copy and the original it stands beside, as found on disk.
    public struct ConflictPair: Sendable, Codable, Equatable {
        public struct Side: Sendable, Codable, Equatable {
            public var size: UInt64
            public var mtime: Double
            public var modifiedBy: String
        }
        public var copy: String
        public var original: String
        public var copyInfo: Side
        public var originalInfo: Side?
    }

    /// The conflict copies in the folder now (from the index), each with its original.
    public func conflicts() -> [ConflictPair] {
        let local = machine.engine.local
        func side(_ r: FileRecord?) -> ConflictPair.Side? {
            guard let r, !r.deleted else { return nil }
            return .init(size: r.size, mtime: Double(r.mtimeNs) / 1e9, modifiedBy: r.modifiedBy.short)
        }
        return local.records(containing: ConflictNaming.marker).filter { !$0.deleted && $0.kind == .file }.compactMap { r in
            guard let parsed = ConflictNaming.parse(r.path), let copy = side(r) else { return nil }
            return ConflictPair(copy: r.path, original: parsed.original, copyInfo: copy, originalInfo: side(local[parsed.original]))
        }.sorted { $0.copy < $1.copy }
    }

    /// What to keep of a conflict.
    public enum ConflictChoice: String, Sendable, Codable, CaseIterable {
        /// The original; the copy goes.
        case original
        /// The copy's content, under the original's name.
        case copy
        /// Both: the copy takes an ordinary name beside the original.
        case both
    }

    /// Settles a conflict by changing the folder as a person would (remove the copy, rename it
    /// over the original, or rename it to an ordinary name), then scans those paths at once: the
    /// result is this node's edit and reaches every peer like any other. With versioning on,
    /// what goes is kept as a version (the scan adopts the shadow of a removed or replaced file).
    /// Answers the path kept and the path removed.
    public func resolveConflict(copy: String, keep choice: ConflictChoice) throws -> (kept: String, removed: String?) {
        guard let posix = folder as? PosixFolder else { throw SyncError(.configuration, "this folder is not on disk") }
        if let problem = PathSafety.problem(with: copy) { throw SyncError(.unsafePath, "'\(copy)' is not a path in the folder: \(problem)") }
        guard let parsed = ConflictNaming.parse(copy) else { throw SyncError(.protocolViolation, "'\(copy)' is not a conflict copy") }
        // The original must be a name the folder syncs (not a temp name, not '.' or '..').
        if let problem = PathSafety.problem(with: parsed.original) {
            throw SyncError(.unsafePath, "'\(copy)' stands beside '\(parsed.original)', which is not a synced name: \(problem)")
        }
        guard let entry = try posix.root.entry(copy), let st = try entry.stat() else {
            throw SyncError(.notFound, "no conflict copy \(copy) in the folder")
        }
        guard st.kind == .file else { throw SyncError(.protocolViolation, "\(copy) is not a file") }
        // The original as the disk spells it (NFD on a Mac-made folder, other case on FAT).
        guard let original = try posix.root.entry(parsed.original) else { throw SyncError(.notFound, "the directory of \(copy) is gone") }
        let originalExists = try original.stat() != nil
        let result: (kept: String, removed: String?)
        switch choice {
        case .original:
            // Removing the copy when the original is gone would lose both versions.
            guard originalExists else {
                throw SyncError(.stateConflict, "\(parsed.original) is gone: keeping it would delete the only version left; keep the copy or both")
            }
            guard entry.remove() else { throw SyncError(.io, "cannot remove \(copy): \(FileOps.errorText())") }
            result = (parsed.original, copy)
        case .copy:
            let moved = entry.name.withCString { f in original.name.withCString { renameat(entry.directory, f, original.directory, $0) } } == 0
            guard moved else { throw SyncError(.io, "cannot rename \(copy): \(FileOps.errorText())") }
            result = (parsed.original, copy)
        case .both:
            // `doc (conflict 20261203-101010 ABCDEFG).txt`: never replacing a name (a file
            // already called so is kept and a number is added). A link where the file system
            // has them, else a rename that refuses to replace (FAT has no hard links).
            // The last component by the path's own split (bytes at '/', as the kernel sees it).
            let (stem, ext) = ConflictNaming.stemAndExtension(try RelativePath(parsed.original).split.name)
            var keptName: String?
            var linked = false
            for n in 1...100 {
                let name = "\(stem) (conflict \(parsed.stamp) \(parsed.winner)\(n == 1 ? "" : " \(n)"))\(ext)"
                if entry.link(entry.name, to: name) {
                    keptName = name
                    linked = true
                    break
                }
                if errno == EPERM || errno == EOPNOTSUPP || errno == EMLINK {
                    let moved = entry.name.withCString { f in name.withCString { synckit_renameat_noreplace(entry.directory, f, entry.directory, $0) } } == 0
                    if moved {
                        keptName = name
                        break
                    }
                }
                if errno != EEXIST { throw SyncError(.io, "cannot rename \(copy): \(FileOps.errorText())") }
            }
            guard let keptName else { throw SyncError(.io, "no free name beside \(copy)") }
            if linked && !entry.remove() {
                let why = FileOps.errorText()
                _ = entry.remove(name: keptName)
                throw SyncError(.io, "cannot rename \(copy): \(why)")
            }
            result = (entry.sibling(keptName), copy)
        }
        logger.notice("conflict resolved by the user", metadata: ["sync.copy": "\(copy)", "sync.keep": "\(choice.rawValue)", "sync.path": "\(result.kept)"])
        handle(.folderChanged(Set([copy, parsed.original, result.kept])))
        return result
    }
}

extension SyncNode {
    /// Bytes in and out of each connected peer's link (cheap: for rates sampled every second).
    public struct PeerTraffic: Sendable, Equatable {
        public var nodeID: String
        public var name: String
        public var bytesIn: Int
        public var bytesOut: Int
    }

    public func peerTraffic() -> [PeerTraffic] {
        machine.connectedPeers.map {
            PeerTraffic(nodeID: $0.id.description, name: $0.name, bytesIn: $0.bytesReceived, bytesOut: connections[$0.connection]?.bytesSent ?? 0)
        }
    }

    /// The short ID of the node that made the version this node has of each path.
    public func authors(of paths: Set<String>) -> [String: String] {
        var out: [String: String] = [:]
        for p in paths { if let r = machine.engine.local[p] { out[p] = r.modifiedBy.short } }
        return out
    }
}
