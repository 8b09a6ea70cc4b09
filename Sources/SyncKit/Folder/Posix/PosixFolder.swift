import Foundation
import Logging
import NIOCore

/// The Linux `LocalFolder`: the folder reached only through its directory handle (`FolderRoot`,
/// openat2), scanned by `Scanner`, watched by `InotifyWatcher`, written by `Puller` (temp files,
/// group commit, patch journals, intents).
public final class PosixFolder: LocalFolder {
    public let root: FolderRoot
    let scanner: Scanner
    let puller: Puller
    let logger: Logger
    /// The old versions kept of what pulls replace or delete (nil: versioning is off).
    public let versions: VersionStore?
    private let watcher = Locked<InotifyWatcher?>(nil)

    /// A folder at `path`; `stateDirectory` holds patch journals; `index` receives the pulls'
    /// intents; `reserved` are relative paths never touched besides `.synckit`.
    public init(path: String, stateDirectory: String, reserved: [String], index: any IndexPersistence, me: NodeID,
                blockWindow: Int, fixedBlocks: Bool = false, versioning: VersioningPolicy = .off, logger: Logger) throws {
        let root = try FolderRoot(path: path, reserved: reserved)
        self.root = root
        self.logger = logger
        let versions = versioning.isOn ? VersionStore(stateDirectory: stateDirectory, policy: versioning, logger: logger) : nil
        self.versions = versions
        var scanner = Scanner(root: root, me: me, logger: logger)
        scanner.fixedBlocks = fixedBlocks
        scanner.versions = versions
        self.scanner = scanner
        let intentLogger = logger
        var puller = Puller(
            root: root, logger: logger, window: blockWindow, committer: GroupCommitter(), journalDirectory: stateDirectory,
            intents: GroupCommit(label: "synckit.intents") { records in
                do {
                    try index.saveIntents(records)
                    return records.map { _ in 0 }
                } catch {
                    intentLogger.error("cannot record pull intents", metadata: ["error": "\(error)"])
                    return records.map { _ in EIO }
                }
            })
        puller.versions = versions
        self.puller = puller
    }

    /// The same folder through another root handle (tests run the openat2 fallback this way).
    init(root: FolderRoot, from other: PosixFolder) {
        self.root = root
        logger = other.logger
        var scanner = Scanner(root: root, me: other.scanner.me, logger: other.logger)
        scanner.fixedBlocks = other.scanner.fixedBlocks
        scanner.versions = other.versions
        self.scanner = scanner
        var puller = Puller(root: root, logger: other.logger, window: other.puller.window, committer: other.puller.committer,
                            journalDirectory: other.puller.journalDirectory, intents: other.puller.intents)
        puller.versions = other.versions
        self.puller = puller
        versions = other.versions
    }

    public func recover() {
        PatchJournal.replayAll(directory: puller.journalDirectory, root: root, logger: logger)
    }

    /// A write whose temp file is gone was renamed into place (the intent is recorded after the
    /// temp file is complete, before the rename; a patch has no temp file, and its journal was
    /// replayed by `recover`).
    public func landed(_ intents: [FileRecord]) -> Set<String> {
        var out = Set<String>()
        for intent in intents where !intent.deleted && (intent.kind == .file || intent.kind == .symlink) {
            guard let entry = try? root.entry(intent.path) else {
                out.insert(intent.path)  // not even its directory is left
                continue
            }
            if (try? FolderEntry.stat(entry.directory, Puller.tempName(forName: entry.name), intent.path)) ?? nil == nil {
                out.insert(intent.path)
            }
        }
        return out
    }

    public func scan(_ request: ScanRequest, known: LocalIndex, ignore: IgnoreRules) async -> ScanResult {
        await scan(request, known: known, ignore: ignore, slices: nil)
    }

    public func scan(_ request: ScanRequest, known: LocalIndex, ignore: IgnoreRules,
                     slices: (@Sendable ([SyncEngine.Observation]) -> Void)?) async -> ScanResult {
        var scanner = self.scanner
        scanner.ignore = ignore
        let observations: [SyncEngine.Observation]
        switch request {
        case .full:
            // Half-patched files are kept away from each slice as from the final result (read
            // when the slice is handed over, after its files were looked at).
            let puller = self.puller
            let sink = slices.map { handOver in
                { (found: [SyncEngine.Observation]) in
                    let unfinished = puller.unfinishedPatches.withLock { $0 }
                    handOver(unfinished.isEmpty ? found : found.filter { !unfinished.contains($0.path) })
                }
            }
            observations = scanner.fullScan(known: known, slice: sink)
        case .paths(let paths): observations = scanner.scan(paths: paths, known: known)
        }
        return ScanResult(request: request, observations: observations, known: known, unfinished: puller.unfinishedPatches.withLock { $0 })
    }

    public func watch(ignore: IgnoreRules) throws -> AsyncStream<FolderChange> {
        let w = InotifyWatcher(root: root, ignore: ignore, logger: logger)
        watcher.withLock { $0 = w }
        return try w.start()
    }

    public func stopWatching() {
        watcher.withLock { $0?.stop() }
    }

    public func apply(_ job: PullJob, locals: [BlockHash: [BlockMap.Location]], blocks: any BlockSource) async -> (PullOutcome, PullStats) {
        await puller.perform(job, locals: locals, source: blocks)
    }

    public func readBlock(_ location: BlockMap.Location) -> ByteBuffer? {
        Puller.readLocal(root: root, location)
    }

    public func removeTemp(for path: String) {
        puller.removeTemp(for: path)
    }

    /// Removes temp files of pulls that are no longer wanted (left by a crash or a kill),
    /// walking the folder through its handle (never through a link).
    public func cleanStaleTemps() {
        let reserved = root.reservedPaths
        let logger = self.logger
        func clean(_ dir: Int32, _ relative: String) {
            guard let entries = try? FolderRoot.list(dir) else { return }
            for e in entries {
                guard let name = String(validating: e.name, as: UTF8.self) else { continue }
                let path = relative.isEmpty ? name : relative + "/" + name
                if reserved.contains(path) { continue }
                if e.name.count > PathSafety.tempSuffix.utf8.count, e.name.suffix(PathSafety.tempSuffix.utf8.count).elementsEqual(PathSafety.tempSuffix.utf8) {
                    logger.info("removing a stale temp file", metadata: ["sync.path": "\(path)"])
                    _ = name.withCString { unlinkat(dir, $0, 0) }
                    continue
                }
                guard e.type == DT_DIR || e.type == DT_UNKNOWN else { continue }
                let sub = name.withCString { openat(dir, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                guard sub >= 0 else { continue }
                clean(sub, path)
                close(sub)
            }
        }
        guard let top = try? root.openDirectory(nil) else { return }
        clean(top, "")
        close(top)
    }

    /// `.syncignore` read through the folder's handle: one that is a symlink is not followed.
    public func readIgnoreFile() -> String {
        root.readSmallFile(".syncignore").map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}
