import Foundation
import Logging
import NIOCore
import ServiceLifecycle

/// A running SyncKit node: one folder, one discovery, one transport, one conflict policy.
///
/// The actor is the shell around the pure `SyncEngine`: it feeds the engine what the scanner,
/// the watcher and the peers report, and performs what the engine decides (store records, send
/// them, run pull jobs). It is a swift-service-lifecycle `Service`: `run()` works until the task
/// is cancelled or a graceful shutdown is triggered, then stops accepting work, tells its peers
/// goodbye and closes everything. Jobs in flight are cancelled and leave their temp files, which
/// the next start resumes.
///
/// Plugins, logger and configuration are injected, so tests run several nodes in one process
/// with in-memory or loopback transports.
public actor SyncNode: Service {
    public nonisolated let id: NodeID
    public nonisolated let configuration: SyncConfiguration
    public nonisolated let name: String
    let discovery: any PeerDiscovery
    let transport: any SyncTransport
    let logger: Logger
    let store: IndexStore
    /// The folder's directory handle: the only way this node touches the folder.
    nonisolated let root: FolderRoot
    /// Relative paths inside the folder that are never synced or written (a state directory
    /// configured inside it), besides `.synckit`.
    let reservedPaths: [String]
    let puller: Puller
    var scanner: Scanner
    var engine: SyncEngine
    var blockMap = BlockMap()
    let metrics: NodeMetrics

    var links: [NodeID: PeerLink] = [:]
    var indexRequested: Set<NodeID> = []
    var endpointPeers: [PeerEndpoint: NodeID] = [:]
    var selfEndpoints: Set<PeerEndpoint> = []
    var keepers: [PeerEndpoint: Task<Void, Never>] = [:]
    var connectionTasks: [UUID: Task<Void, Never>] = [:]
    var jobTasks: [String: Task<Void, Never>] = [:]
    var subscribers: [UUID: AsyncStream<SyncEvent>.Continuation] = [:]
    var pendingScan: Set<String> = []
    var scanTask: Task<Void, Never>?
    var fullScanRunning = false
    var listener: (any PeerListener)?
    var watcher: InotifyWatcher?
    var inSync = false
    var tempsCleaned = false
    /// Paths whose pull stopped half-way (their temp file is kept for a resume).
    var interruptedPulls: Set<String> = []
    /// Records changed since the last index write.
    var unsaved: [String: FileRecord] = [:]
    /// Paths of peers' records received since the last index write (the engine holds them).
    var unsavedPeers: [NodeID: Set<String>] = [:]
    /// Peers whose stored index is to be dropped at the next write (their index was reset).
    var forgottenPeers: Set<NodeID> = []
    /// Sequence numbers up to this may be handed out (see `reserveSequences`).
    var reservedSequence: UInt64 = 0
    /// This node's last two block lists of each large file (see `rememberList`).
    var recentLists: [String: [[BlockRef]]] = [:]
    var flushTask: Task<Void, Never>?
    var stopping = false
    var counters = Counters()
    var recentErrors: [String] = []

    /// Running totals, for status and metrics.
    public struct Counters: Sendable, Equatable {
        public var filesPulled = 0
        public var bytesFromNetwork = 0
        public var bytesReused = 0
        public var conflicts = 0
        /// Files the scanner had to read and hash (the quick check failed or they were new).
        public var filesHashed = 0
        public var lastConflictCopies: [String] = []
    }

    /// Opens the folder's state (identity, index) and checks it is safe to sync.
    ///
    /// Throws `SyncError` with `.folderMissing` when the folder is not a directory, and with
    /// `.folderMarkerMissing` when an index exists but the folder's marker does not (an unmounted
    /// disk would otherwise look like "every file was deleted").
    public init(
        configuration: SyncConfiguration, discovery: any PeerDiscovery, transport: any SyncTransport,
        policy: any ConflictPolicy, logger: Logger
    ) throws {
        var config = configuration
        config.folder = (config.folder as NSString).standardizingPath
        guard let st = try FileOps.lstat(config.folder), st.kind == .directory else {
            throw SyncError(.folderMissing, "the folder \(config.folder) does not exist or is not a directory")
        }
        guard access(config.folder, W_OK) == 0 else {
            throw SyncError(.folderMissing, "the folder \(config.folder) is not writable by this user")
        }
        let stateDir = config.resolvedStateDirectory
        let markerDir = config.folder + "/" + PathSafety.stateDirectory
        let marker = markerDir + "/folder-marker"
        let indexPath = stateDir + "/index.db"
        let indexExists = FileManager.default.fileExists(atPath: indexPath)
        if indexExists && !FileManager.default.fileExists(atPath: marker) {
            throw SyncError(.folderMarkerMissing, "\(config.folder) has no \(PathSafety.stateDirectory)/folder-marker but an index exists at \(indexPath): is the disk mounted? Refusing to sync, which would delete every file on the other nodes. If the folder is really empty now, remove \(indexPath) to start over.")
        }
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: markerDir, withIntermediateDirectories: true)
        let identity = try NodeIdentity.loadOrCreate(at: URL(fileURLWithPath: stateDir + "/identity.key"))
        store = try IndexStore(path: indexPath)
        if !FileManager.default.fileExists(atPath: marker) {
            FileManager.default.createFile(atPath: marker, contents: Data("This folder is synced by SyncKit. Do not delete this file.\n".utf8))
        }
        id = identity.id
        name = config.name ?? identity.id.short
        metrics = NodeMetrics(node: name)
        self.configuration = config
        self.discovery = discovery
        self.transport = transport
        var logger = logger
        logger[metadataKey: "node"] = "\(name)"
        logger[metadataKey: "node.id"] = "\(identity.id)"
        self.logger = logger
        // The folder is opened once; every file operation below it goes through this handle.
        // A state directory configured inside the folder is as untouchable as `.synckit`.
        reservedPaths = config.reservedPaths
        let root = try FolderRoot(path: config.folder, reserved: reservedPaths)
        self.root = root
        let ignore = IgnoreRules(text: Self.readIgnoreFile(root), reserved: reservedPaths)
        scanner = Scanner(root: root, me: identity.id, ignore: ignore, logger: logger)
        let store = self.store
        let intentLogger = logger
        puller = Puller(
            root: root, logger: logger, window: config.blockWindow, committer: GroupCommitter(), journalDirectory: config.resolvedStateDirectory,
            intents: GroupCommit(label: "synckit.intents") { records in
                do {
                    try store.saveIntents(records)
                    return records.map { _ in 0 }
                } catch {
                    intentLogger.error("cannot record pull intents", metadata: ["error": "\(error)"])
                    return records.map { _ in EIO }
                }
            })
        engine = SyncEngine(me: identity.id, policy: policy, order: config.pullOrder, maxConcurrentJobs: config.maxConcurrentJobs)
    }

    // MARK: public API

    /// A new stream of this node's events (each call makes an independent subscriber).
    public func events() -> AsyncStream<SyncEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: SyncEvent.self, bufferingPolicy: .bufferingNewest(10_000))
        let key = UUID()
        subscribers[key] = continuation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.unsubscribe(key) }
        }
        return stream
    }

    private func unsubscribe(_ key: UUID) { subscribers[key] = nil }

    /// The port peers can reach this node on, once it runs.
    public var listeningPort: Int? { listener?.port }

    /// IDs of the peers connected now.
    public var connectedPeers: [NodeID] { links.keys.sorted() }

    /// This node's index (what it has on disk, plus tombstones).
    public var localRecords: [String: FileRecord] { engine.local }

    /// True when nothing is pending and every connected peer has sent its index.
    public var isInSync: Bool { inSync }

    public var statistics: Counters { counters }

    /// Bytes this node sent to peers over the current links (frames, prefix included).
    public var bytesSentToPeers: Int { links.values.reduce(0) { $0 + $1.bytesSent } }

    /// A snapshot for `syncctl status`.
    public func status() -> NodeStatus {
        NodeStatus(
            nodeID: id.description, name: name, folder: configuration.folder, port: listener?.port ?? 0,
            peers: links.values.sorted { $0.id < $1.id }.map {
                .init(nodeID: $0.id.description, name: $0.name, address: $0.address, bytesSent: $0.bytesSent, bytesReceived: $0.bytesReceived, caughtUp: engine.peers[$0.id]?.caughtUp ?? false)
            },
            files: engine.local.values.filter { !$0.deleted && $0.kind == .file }.count,
            bytes: engine.local.values.filter { !$0.deleted }.reduce(0) { $0 + $1.size },
            pulling: engine.running.keys.sorted(), failed: engine.failed, inSync: inSync,
            counters: counters, recentErrors: recentErrors)
    }

    /// Asks for a full rescan now (tests, `syncctl`).
    public func rescan() async {
        await fullScan()
    }

    // MARK: lifecycle

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await self.runUntilCancelled()
        }
    }

    func runUntilCancelled() async throws {
        // Patches a crash interrupted are finished before anything looks at the folder.
        PatchJournal.replayAll(directory: configuration.resolvedStateDirectory, root: root, logger: logger)
        let records = try store.loadAll()
        engine.restore(records: records, sequenceFloor: store.reservedSequence)
        reservedSequence = store.reservedSequence
        for r in records {
            blockMap.update(r)
            rememberList(r)
        }
        // What the peers held when this node stopped, and the pulls that may have reached the
        // disk unrecorded: the first scan adopts their versions instead of counting edits.
        for peer in try store.loadPeers() {
            engine.restorePeer(peer.id, indexID: peer.indexID, maxSequence: peer.maxSequence, records: peer.records)
        }
        engine.restoreIntents(try store.loadIntents())
        logger.info("starting", metadata: ["folder": "\(configuration.folder)", "node.id": "\(id)", "records": "\(records.count)"])
        if configuration.clusterKey.isOpen {
            logger.warning("no cluster key: running in open mode (--open), any SyncKit node on the network that names cluster '\(configuration.clusterName)' can join and change files here. Set SYNCKIT_CLUSTER_KEY or --cluster-key-file.")
        }
        // Bind first: a port in use must fail at once, not after scanning a large folder.
        // Connections wait in the backlog until the scan is done and the accept loop runs.
        let listener = try await transport.listen(port: configuration.port)
        self.listener = listener
        await fullScan()
        // The intents have served: every path was looked at once.
        engine.dropIntents()
        do { try store.clearIntents() } catch { logger.error("cannot clear pull intents", metadata: ["error": "\(error)"]) }
        // Pulls and deletions that were pending at the last stop are queued again from the
        // stored peers' indexes (blocks wait for peers to connect; local work starts now).
        apply(engine.reevaluateAll())

        if configuration.watch {
            let w = InotifyWatcher(root: root, ignore: scanner.ignore, logger: logger)
            watcher = w
        }
        emit(.started(node: id, port: listener.port))
        logger.info("listening", metadata: ["port": "\(listener.port)"])

        defer { watcher?.stop() }
        var watchStream: AsyncStream<InotifyWatcher.Event>?
        do { watchStream = try watcher?.start() } catch {
            logger.error("cannot watch the folder; changes will be found by the periodic rescan only", metadata: ["error": "\(error)"])
        }
        let announcement = LocalAnnouncement(nodeID: id, name: name, clusterTag: configuration.clusterName, port: listener.port)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await channel in listener.channels {
                    await self.accept(channel)
                }
            }
            group.addTask {
                for await event in self.discovery.events(announcing: announcement) {
                    await self.discovered(event)
                }
            }
            if let watchStream {
                group.addTask {
                    for await event in watchStream {
                        switch event {
                        case .changed(let paths): await self.noteChanged(paths)
                        case .overflow: await self.fullScan()
                        }
                    }
                }
            }
            group.addTask { try await self.timers() }
            // Everything above runs until cancelled; wait for that.
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(3600))
            }
            group.cancelAll()
        }
        await shutdown()
    }

    /// Periodic work: full rescans, retries of failed pulls, pings and dead-peer detection.
    func timers() async throws {
        let clock = ContinuousClock()
        var nextRescan = clock.now + configuration.rescanInterval
        var nextRetry = clock.now + configuration.retryInterval
        var nextPing = clock.now + configuration.pingInterval
        while !Task.isCancelled {
            try await Task.sleep(for: .milliseconds(250))
            let now = clock.now
            if now >= nextRescan {
                nextRescan = now + configuration.rescanInterval
                await fullScan()
            }
            if now >= nextRetry {
                nextRetry = now + configuration.retryInterval
                retryFailed()
            }
            if now >= nextPing {
                nextPing = now + configuration.pingInterval
                pingOrDrop(now: now)
            }
            for link in links.values { link.expireRequests(now: now) }
        }
    }

    func retryFailed() {
        guard !engine.failed.isEmpty else { return }
        apply(engine.retryFailed())
    }

    func pingOrDrop(now: ContinuousClock.Instant) {
        for link in links.values {
            if now - link.lastReceived > configuration.deadPeerTimeout {
                logger.warning("peer silent too long; closing", metadata: ["peer.id": "\(link.id.short)"])
                Task { await link.shutdown() }
            } else {
                Task { try? await link.send(.ping) }
            }
        }
    }

    func shutdown() async {
        stopping = true
        logger.info("stopping")
        await listener?.close()
        scanTask?.cancel()
        for t in keepers.values { t.cancel() }
        // Pulls in flight stop where they are; their temp files are resumed at the next start.
        for t in jobTasks.values { t.cancel() }
        // Goodbyes go out in parallel, for at most half a second: a stalled peer must not hold
        // up the shutdown. Then every link closes, which fails whatever still waits on a peer.
        let said = Locked(0)
        let goodbyes = links.values.map { link in
            Task {
                try? await link.send(.close(reason: "shutting down"))
                said.withLock { $0 += 1 }
            }
        }
        let deadline = ContinuousClock.now + .milliseconds(500)
        while said.withLock({ $0 }) < goodbyes.count && ContinuousClock.now < deadline {
            // Detached: this task is cancelled, and its own sleeps would return at once.
            await Task.detached { try? await Task.sleep(for: .milliseconds(10)) }.value
        }
        for link in links.values { await link.shutdown() }
        for t in jobTasks.values { await t.value }
        for t in connectionTasks.values { t.cancel() }
        links.removeAll()
        for c in subscribers.values { c.finish() }
        subscribers.removeAll()
        flushIndex()
        try? store.close()
    }

    // MARK: events

    func emit(_ event: SyncEvent) {
        for c in subscribers.values { c.yield(event) }
    }

    /// Carries out what the engine decided: store, broadcast, report, schedule.
    func apply(_ out: SyncEngine.Output) {
        // No sequence number leaves this node before it is covered by the reservation on disk.
        if engine.sequence > reservedSequence { reserveSequences() }
        let changed = out.persist + out.persistQuietly
        if !changed.isEmpty {
            for r in changed {
                blockMap.update(r)
                unsaved[r.path] = r
                rememberList(r)
            }
            scheduleFlush()
        }
        if !out.persist.isEmpty {
            for link in links.values where indexRequested.contains(link.id) {
                // No echo: a peer that already holds this exact version (typically the one it
                // was pulled from) does not need it back. A 512 MiB file's record is 300 KB.
                let known = engine.peers[link.id]?.records
                let news = out.persist.filter { known?[$0.path]?.version != $0.version }
                // The peer's own lists of large files: bases for block-list deltas.
                var peerHas = [String: [BlockRef]]()
                for r in news where r.blocks.count >= WireMessage.BlockDelta.minimumBlocks {
                    if let theirs = known?[r.path], !theirs.deleted { peerHas[r.path] = theirs.blocks }
                }
                if !news.isEmpty { link.enqueueIndex(news, peerHas: peerHas) }
            }
        }
        for e in out.events {
            if case .conflict(let path, let copy) = e {
                counters.conflicts += 1
                metrics.conflicts.increment()
                counters.lastConflictCopies = Array((counters.lastConflictCopies + [copy]).suffix(20))
                logger.notice("conflict resolved; the other version is kept", metadata: ["sync.path": "\(path)", "sync.copy": "\(copy)"])
            }
            emit(e)
        }
        schedule()
    }

    /// Keeps this node's last two block lists of each large file: a peer may name either as the
    /// base of a block-list delta (the one it last saw announced may be one change behind).
    func rememberList(_ r: FileRecord) {
        guard r.kind == .file, !r.deleted, r.blocks.count >= WireMessage.BlockDelta.minimumBlocks else {
            recentLists[r.path] = nil
            return
        }
        var lists = recentLists[r.path] ?? []
        if lists.last != r.blocks { lists.append(r.blocks) }
        recentLists[r.path] = Array(lists.suffix(2))
    }

    /// Moves the sequence reservation well above the numbers in use (one small write per
    /// 100,000 changes), synchronously: it must be on disk before a number above the old mark
    /// is sent to a peer. Without it a crash could hand the same number out twice.
    func reserveSequences() {
        let mark = engine.sequence + 100_000
        do {
            try store.reserveSequences(through: mark)
            reservedSequence = mark
        } catch {
            logger.error("cannot write the sequence reservation", metadata: ["error": "\(error)"])
            noteError("sequence reservation failed: \(error)")
        }
    }

    /// Group commit of the index: records changed within `flushDelay` are written in one
    /// transaction (20,000 pulled files cost a few dozen commits, not 20,000).
    func scheduleFlush() {
        if unsaved.count + unsavedPeers.values.reduce(0, { $0 + $1.count }) >= 2000 {
            flushIndex()
            return
        }
        guard flushTask == nil, !stopping else { return }
        flushTask = Task {
            try? await Task.sleep(for: .milliseconds(100))
            self.flushIndex()
        }
    }

    func flushIndex() {
        flushTask?.cancel()
        flushTask = nil
        guard !unsaved.isEmpty || !unsavedPeers.isEmpty else { return }
        var changes = IndexStore.Changes()
        changes.records = Array(unsaved.values)
        unsaved.removeAll(keepingCapacity: true)
        changes.forgottenPeers = forgottenPeers
        forgottenPeers.removeAll()
        for (peer, paths) in unsavedPeers {
            guard let index = engine.peers[peer] else { continue }
            changes.peerRecords[peer] = paths.compactMap { index.records[$0] }
            changes.peerState[peer] = (index.indexID, index.maxSequence)
        }
        unsavedPeers.removeAll(keepingCapacity: true)
        do { try store.save(changes) } catch {
            logger.error("cannot write the index", metadata: ["error": "\(error)"])
            noteError("index write failed: \(error)")
        }
    }

    func noteError(_ text: String) {
        recentErrors = Array((recentErrors + [text]).suffix(10))
    }

    func schedule() {
        guard !stopping else { return }
        var decided = SyncEngine.Output()
        let jobs = engine.nextJobs(into: &decided)
        defer { if !decided.persist.isEmpty || !decided.persistQuietly.isEmpty { apply(decided) } }
        for job in jobs {
            var locals: [BlockHash: [BlockMap.Location]] = [:]
            if job.operation == .writeFile {
                for block in job.target.blocks where locals[block.hash] == nil {
                    let l = blockMap.locations(of: block.hash)
                    if !l.isEmpty { locals[block.hash] = l }
                }
            }
            let puller = self.puller
            jobTasks[job.path] = Task {
                let (outcome, stats) = await puller.perform(job, locals: locals) { block, path, offset, sources in
                    await self.fetchBlock(block, path: path, offset: offset, target: job.target, sources: sources)
                }
                await self.finished(job, outcome: outcome, stats: stats)
            }
        }
        checkInSync()
    }

    func finished(_ job: PullJob, outcome: PullOutcome, stats: Puller.Stats) {
        jobTasks[job.path] = nil
        counters.bytesFromNetwork += stats.bytesFromNetwork
        counters.bytesReused += stats.bytesReused
        if case .applied = outcome, job.operation == .writeFile {
            counters.filesPulled += 1
            metrics.filesPulled.increment()
        }
        switch outcome {
        case .applied:
            logger.debug("pulled", metadata: ["sync.path": "\(job.path)", "sync.op": "\(job.operation)", "bytes.network": "\(stats.bytesFromNetwork)", "bytes.local": "\(stats.bytesReused)"])
        case .localChanged:
            logger.info("local file changed during the pull; deciding again", metadata: ["sync.path": "\(job.path)"])
        case .unavailable:
            logger.debug("content not available from any peer yet", metadata: ["sync.path": "\(job.path)"])
        case .failed(let why):
            logger.warning("pull failed", metadata: ["sync.path": "\(job.path)", "error": "\(why)"])
            noteError("\(job.path): \(why)")
        }
        if job.operation == .writeFile {
            if case .applied = outcome { interruptedPulls.remove(job.path) } else { interruptedPulls.insert(job.path) }
        }
        let out = engine.jobFinished(job, outcome: outcome)
        if outcome == .localChanged { pendingScan.insert(job.path) }
        if let copy = job.conflictCopyPath, case .applied = outcome { pendingScan.insert(copy) }
        apply(out)
        if !pendingScan.isEmpty { triggerScan() }
    }

    func checkInSync() {
        let now = engine.isIdle && pendingScan.isEmpty && scanTask == nil && !fullScanRunning
            && links.keys.allSatisfy { engine.peers[$0]?.caughtUp == true }
        if now && !inSync {
            if !tempsCleaned {
                tempsCleaned = true
                cleanStaleTemps()
            }
            // Temp files of pulls that failed and were then settled otherwise.
            for path in interruptedPulls where engine.running[path] == nil {
                puller.removeTemp(for: path)
            }
            interruptedPulls.removeAll()
            emit(.inSync)
        }
        inSync = now
    }

    /// Removes temp files of pulls that are no longer wanted (left by a crash or a kill),
    /// walking the folder through its handle (never through a link).
    func cleanStaleTemps() {
        func clean(_ dir: Int32, _ relative: String) {
            guard let entries = try? FolderRoot.list(dir) else { return }
            for e in entries {
                guard let name = String(validating: e.name, as: UTF8.self) else { continue }
                let path = relative.isEmpty ? name : relative + "/" + name
                if path == PathSafety.stateDirectory || reservedPaths.contains(path) { continue }
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

    /// The text of `.syncignore` at the folder root (empty when there is none), read through
    /// the folder's handle: a `.syncignore` that is a symlink is not followed.
    static func readIgnoreFile(_ root: FolderRoot) -> String {
        root.readSmallFile(".syncignore").map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    // MARK: scanning

    func noteChanged(_ paths: Set<String>) {
        if paths.contains(".syncignore") {
            scanner.ignore = IgnoreRules(text: Self.readIgnoreFile(root), reserved: reservedPaths)
            logger.info("reloaded .syncignore")
        }
        pendingScan.formUnion(paths)
        inSync = false
        triggerScan()
    }

    func triggerScan() {
        guard scanTask == nil, !stopping else { return }
        let delay = configuration.debounce
        scanTask = Task {
            try? await Task.sleep(for: delay)
            await self.targetedScan()
        }
    }

    /// Scans what the watcher reported, except paths a job is writing right now (they are
    /// looked at again once the job ends).
    func targetedScan() async {
        let running = Set(engine.running.keys)
        let paths = pendingScan.filter { !running.contains($0) }
        pendingScan.subtract(paths)
        guard !paths.isEmpty else {
            scanTask = nil
            checkInSync()
            return
        }
        let scanner = self.scanner
        // Only the records the scan can need: the paths, and the subtrees of known directories.
        var known = [String: FileRecord]()
        var directories = [String]()
        for p in paths {
            guard let r = engine.local[p] else { continue }
            known[p] = r
            if r.kind == .directory { directories.append(p + "/") }
        }
        if !directories.isEmpty {
            for (p, r) in engine.local where directories.contains(where: { p.hasPrefix($0) }) { known[p] = r }
        }
        let observations = await Task.detached { [known] in scanner.scan(paths: paths, known: known) }.value
        ingest(observations, snapshot: known)
        scanTask = nil
        if !pendingScan.subtracting(engine.running.keys).isEmpty { triggerScan() }
        checkInSync()
    }

    /// Scans the whole folder (start-up, timer, inotify overflow).
    func fullScan() async {
        guard !fullScanRunning else { return }
        fullScanRunning = true
        let started = ContinuousClock.now
        let scanner = self.scanner
        let known = engine.local
        let observations = await Task.detached { scanner.fullScan(known: known) }.value
        ingest(observations, snapshot: known)
        fullScanRunning = false
        let elapsed = ContinuousClock.now - started
        metrics.scanDuration.recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
        logger.debug("full scan done", metadata: ["paths": "\(known.count)", "duration": "\(ContinuousClock.now - started)"])
        checkInSync()
    }

    /// Hands observations to the engine, dropping those a job overtook while the scan ran.
    func ingest(_ observations: [SyncEngine.Observation], snapshot: [String: FileRecord]) {
        let hashed = observations.reduce(0) { $0 + ($1.hashed ? 1 : 0) }
        counters.filesHashed += hashed
        metrics.filesHashed.increment(by: hashed)
        // In slices: the engine's output for a first scan of 20,000 files would otherwise hold
        // every new record at once (a peak of memory for nothing; each path is independent).
        var start = observations.startIndex
        while start < observations.endIndex {
            let end = min(start + 1000, observations.endIndex)
            let unfinished = puller.unfinishedPatches.withLock { $0 }
            let fresh = observations[start..<end].filter { o in
                engine.running[o.path] == nil && engine.local[o.path]?.sequence == snapshot[o.path]?.sequence
                    && !unfinished.contains(o.path)  // half patched: never recorded as an edit
            }
            if !fresh.isEmpty { apply(engine.localScan(fresh)) }
            start = end
        }
    }

    // MARK: peers

    func discovered(_ event: DiscoveryEvent) {
        switch event {
        case .found(let endpoint):
            var key = endpoint
            key.nodeID = nil
            if let nid = endpoint.nodeID, nid == id { return }
            guard keepers[key] == nil, !selfEndpoints.contains(key), !stopping else { return }
            keepers[key] = Task { await self.keep(key, expected: endpoint.nodeID) }
        case .lost(let endpoint):
            var key = endpoint
            key.nodeID = nil
            keepers.removeValue(forKey: key)?.cancel()
        }
    }

    /// Keeps a connection to `endpoint`: dials, runs the link until it ends, dials again with
    /// exponential backoff (0.25 s doubling to `maxRedialDelay`) while the endpoint is known.
    func keep(_ endpoint: PeerEndpoint, expected: NodeID?) async {
        var delay = Duration.milliseconds(250)
        while !Task.isCancelled && !stopping {
            if selfEndpoints.contains(endpoint) { return }
            if let nid = endpointPeers[endpoint] ?? expected, links[nid] != nil {
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            do {
                let channel = try await transport.connect(to: endpoint)
                delay = .milliseconds(250)
                await runChannel(channel, initiated: true, endpoint: endpoint)
            } catch {
                logger.debug("cannot reach peer", metadata: ["peer.address": "\(endpoint)", "error": "\(error)"])
            }
            let jitter = Duration.milliseconds(Int.random(in: 0...100))
            try? await Task.sleep(for: delay + jitter)
            delay = min(delay * 2, configuration.maxRedialDelay)
        }
    }

    func accept(_ channel: any PeerChannel) {
        guard !stopping else {
            Task { await channel.close() }
            return
        }
        let key = UUID()
        connectionTasks[key] = Task {
            await self.runChannel(channel, initiated: false, endpoint: nil)
            await self.connectionEnded(key)
        }
    }

    func connectionEnded(_ key: UUID) { connectionTasks[key] = nil }

    /// Handshake, then the link's receive loop until it ends. Runs off the actor; state changes
    /// hop onto it.
    nonisolated func runChannel(_ channel: any PeerChannel, initiated: Bool, endpoint: PeerEndpoint?) async {
        let watchdog = Task {
            try await Task.sleep(for: configuration.handshakeTimeout)
            await channel.close()
        }
        let link: PeerLink
        var iterator = channel.inbound.makeAsyncIterator()
        do {
            let myNonce = ClusterKey.nonce()
            let port = await listeningPort ?? 0
            let hello = WireMessage.Hello(nodeID: id, nodeName: name, clusterName: configuration.clusterName, listenPort: UInt16(clamping: port), nonce: myNonce, indexID: store.indexID)
            try await channel.send(WireCodec.encode(.hello(hello)))
            guard let first = try await iterator.next() else { throw SyncError(.transport, "closed during the handshake") }
            guard case .hello(let theirs) = try WireCodec.decode(first) else { throw SyncError(.protocolViolation, "expected hello") }
            if theirs.nodeID == id {
                if let endpoint { await markSelf(endpoint) }
                watchdog.cancel()
                await channel.close()
                return
            }
            guard theirs.clusterName == configuration.clusterName else {
                throw SyncError(.authenticationFailed, "peer belongs to cluster '\(theirs.clusterName)', not '\(configuration.clusterName)'")
            }
            let key = configuration.clusterKey
            try await channel.send(WireCodec.encode(.auth(.init(mac: key.proof(sender: id, receiver: theirs.nodeID, receiverNonce: theirs.nonce, senderNonce: myNonce)))))
            guard let second = try await iterator.next() else { throw SyncError(.authenticationFailed, "peer closed before proving the cluster key (it may hold another key)") }
            guard case .auth(let auth) = try WireCodec.decode(second),
                  key.verify(auth.mac, sender: theirs.nodeID, receiver: id, receiverNonce: myNonce, senderNonce: theirs.nonce)
            else { throw SyncError(.authenticationFailed, "peer does not hold this cluster's key") }
            watchdog.cancel()
            link = PeerLink(
                id: theirs.nodeID, name: theirs.nodeName, address: channel.remoteDescription, channel: channel,
                initiatedLocally: initiated, indexID: store.indexID, requestBudget: configuration.requestBudgetPerPeer, metrics: metrics)
            guard await register(link, peerIndexID: theirs.indexID, endpoint: endpoint) else {
                await channel.close()
                return
            }
        } catch {
            watchdog.cancel()
            logger.warning("peer refused at handshake", metadata: ["peer.address": "\(channel.remoteDescription)", "error": "\(error)"])
            await peerRejected(channel.remoteDescription, "\(error)")
            try? await channel.send(WireCodec.encode(.close(reason: "handshake failed")))
            await channel.close()
            return
        }

        var reason = "connection closed"
        do {
            try await withThrowingDiscardingTaskGroup { group in
                while let frame = try await iterator.next() {
                    link.noteReceived(frame)
                    let message: WireMessage
                    do { message = try WireCodec.decode(frame) } catch {
                        throw SyncError(.protocolViolation, "undecodable message", underlying: error)
                    }
                    switch message {
                    case .indexUpdate(let update):
                        try await receivedIndexUpdate(update, from: link)
                    case .indexRequest(let request):
                        await receivedIndexRequest(request, from: link)
                    case .blockRequest(let request):
                        // Served concurrently, never by blocking this loop: two nodes pulling
                        // from each other would otherwise stop reading each other's answers.
                        // A well-behaved peer keeps at most a few hundred requests in flight
                        // (its byte budget and per-file window); far more is an attack.
                        guard link.beginServe(limit: 1024) else {
                            throw SyncError(.protocolViolation, "more than 1024 block requests in flight")
                        }
                        group.addTask {
                            await self.serve(request, to: link)
                            link.endServe()
                        }
                    case .blockResponse(let response):
                        link.deliver(response)
                    case .ping:
                        break
                    case .close(let why):
                        reason = "peer said goodbye: \(why)"
                        group.cancelAll()
                        return
                    case .hello, .auth:
                        throw SyncError(.protocolViolation, "handshake message after the handshake")
                    }
                }
            }
        } catch {
            reason = "\(error)"
            logger.warning("dropping peer", metadata: ["peer.id": "\(link.id.short)", "error": "\(error)"])
        }
        await link.shutdown()
        await unregister(link, reason: reason)
    }

    func markSelf(_ endpoint: PeerEndpoint) {
        selfEndpoints.insert(endpoint)
        keepers.removeValue(forKey: endpoint)?.cancel()
    }

    func peerRejected(_ address: String, _ reason: String) {
        emit(.peerRejected(address: address, reason: reason))
        noteError("peer \(address) refused: \(reason)")
    }

    /// Adds an authenticated link. With two links to one peer (both dialed at once) the one
    /// dialed by the node with the lower ID is kept, which both sides compute alike.
    func register(_ link: PeerLink, peerIndexID: UInt64, endpoint: PeerEndpoint?) -> Bool {
        guard !stopping else { return false }
        if let endpoint { endpointPeers[endpoint] = link.id }
        if let existing = links[link.id] {
            let preferNew = link.initiatedLocally == (id < link.id)
            guard preferNew else { return false }
            Task { await existing.shutdown() }
        }
        links[link.id] = link
        metrics.peersConnected.record(links.count)
        indexRequested.remove(link.id)
        if let known = engine.peers[link.id]?.indexID, known != peerIndexID {
            // The peer's index was reset: what is stored of the old one means nothing now.
            forgottenPeers.insert(link.id)
            unsavedPeers[link.id] = nil
        }
        let out = engine.peerConnected(link.id, indexID: peerIndexID)
        if unsavedPeers[link.id] == nil { unsavedPeers[link.id] = [] }  // its index ID, at the next write
        inSync = false
        logger.info("peer connected", metadata: ["peer.id": "\(link.id.short)", "peer.name": "\(link.name)", "peer.address": "\(link.address)"])
        emit(.peerConnected(link.id, name: link.name))
        if !out.persist.isEmpty || !out.persistQuietly.isEmpty || !out.events.isEmpty { apply(out) } else { schedule() }
        let request = engine.indexRequest(for: link.id)
        Task { try? await link.send(.indexRequest(request)) }
        return true
    }

    func unregister(_ link: PeerLink, reason: String) {
        guard links[link.id] === link else { return }
        links[link.id] = nil
        metrics.peersConnected.record(links.count)
        indexRequested.remove(link.id)
        engine.peerDisconnected(link.id)
        logger.info("peer disconnected", metadata: ["peer.id": "\(link.id.short)", "reason": "\(reason)"])
        emit(.peerDisconnected(link.id, reason: reason))
        checkInSync()
    }

    func receivedIndexRequest(_ request: WireMessage.IndexRequest, from link: PeerLink) {
        guard links[link.id] === link else { return }
        let keys = engine.keys(after: request, ourIndexID: store.indexID)
        indexRequested.insert(link.id)
        link.enqueueBacklog(keys) { [weak self] keys in
            await self?.currentRecords(keys) ?? []
        }
    }

    /// This node's records of `keys` that are still at their sequence, for an index backlog.
    func currentRecords(_ keys: [SyncEngine.RecordKey]) -> [FileRecord] {
        keys.compactMap { key in engine.local[key.path].flatMap { $0.sequence == key.sequence ? $0 : nil } }
    }

    /// Rebuilds delta-encoded block lists (against this link's lists or this node's own), then
    /// takes the records in.
    func receivedIndexUpdate(_ update: WireMessage.IndexUpdate, from link: PeerLink) throws {
        let full = try link.deltaDecode(update) { self.recentLists[$0] ?? [] }
        receivedIndex(full, from: link)
    }

    func receivedIndex(_ update: WireMessage.IndexUpdate, from link: PeerLink) {
        guard links[link.id] === link else { return }
        var accepted = [FileRecord]()
        accepted.reserveCapacity(update.records.count)
        // Every path from a peer is judged here, once, as bytes (`PathSafety`); what is refused
        // never reaches the engine, and is logged and reported as an event.
        func refuse(_ path: String, _ problem: String) {
            logger.warning("refused a record from a peer", metadata: ["peer.id": "\(link.id.short)", "peer.address": "\(link.address)", "sync.path": "\(path.debugDescription)", "reason": "\(problem)"])
            emit(.refused(path: path, peer: link.id, reason: problem))
        }
        for bad in update.refused { refuse(bad.path, bad.reason) }
        for r in update.records {
            if let problem = PathSafety.problem(with: r.path) ?? reservedProblem(r.path) {
                refuse(r.path, problem)
                continue
            }
            if scanner.ignore.isIgnored(r.path, isDirectory: r.kind == .directory) { continue }
            accepted.append(r)
        }
        let hadFailures = !engine.failed.isEmpty
        let out = engine.peerIndex(link.id, records: accepted, caughtUp: update.caughtUp)
        // Kept in the index too, so that a restart asks this peer only for what changed.
        unsavedPeers[link.id, default: []].formUnion(accepted.lazy.map(\.path))
        if !accepted.isEmpty { scheduleFlush() }
        apply(out)
        if hadFailures && update.caughtUp { retryFailed() }
        if update.caughtUp { checkInSync() }
    }

    /// Why `path` may not be synced although it is well formed: it lies in a state directory
    /// configured inside the folder.
    func reservedProblem(_ path: String) -> String? {
        for r in reservedPaths where path == r || path.utf8.starts(with: (r + "/").utf8) { return "the state directory" }
        return nil
    }

    /// Links to ask for a block of `target`, least busy first: every connected peer whose
    /// record of the path holds the target content now (peers that connected or sent their
    /// index after the job started count too), else the job's original sources.
    func linksFor(_ target: FileRecord, fallback: [NodeID]) -> [PeerLink] {
        // Runs for every block request: the version is compared first (equal versions are the
        // common case and cheap), the 8,000 hashes of a large file only when it differs.
        var chosen = links.values.filter { link in
            guard let r = engine.peers[link.id]?.records[target.path] else { return false }
            return r.version == target.version && r.blocks == target.blocks || r.hasSameContent(as: target)
        }
        if chosen.isEmpty { chosen = fallback.compactMap { links[$0] } }
        return chosen.sorted { $0.outstandingBytes < $1.outstandingBytes }
    }

    /// Fetches a block from the least busy peer that has it, trying the others on failure.
    nonisolated func fetchBlock(_ block: BlockRef, path: String, offset: UInt64, target: FileRecord, sources: [NodeID]) async -> ByteBuffer? {
        for link in await linksFor(target, fallback: sources) {
            guard !Task.isCancelled else { return nil }
            // A peer that keeps the link alive but never answers must not stall the pull: the
            // link fails the request after `PeerLink.requestTimeout`, and the next peer is asked.
            let answer = try? await link.requestBlock(block, path: path, offset: offset)
            // Checked here, once (the puller relies on it): a wrong block from one peer is
            // then simply asked of the next.
            if let data = answer ?? nil,
               data.readableBytes == Int(block.size),
               data.withUnsafeReadableBytes({ Chunker.hash($0) }) == block.hash {
                return data
            }
        }
        return nil
    }

    /// Where a requested block can be read here: the hinted place if our record agrees, else
    /// any local file that has it.
    /// (A hash lookup: walking the record's block list for the offset made serving a large
    /// file quadratic.)
    func locate(_ request: WireMessage.BlockRequest) -> BlockMap.Location? {
        let places = blockMap.locations(of: request.hash)
        return places.first { $0.path == request.path && $0.offset == request.offset } ?? places.first
    }

    nonisolated func serve(_ request: WireMessage.BlockRequest, to link: PeerLink) async {
        var response = WireMessage.BlockResponse(id: request.id, status: .notFound, data: ByteBuffer())
        if let location = await locate(request), location.size == request.size,
           let data = Puller.readLocal(root: root, location) {
            response.status = .ok
            response.data = data
        }
        try? await link.send(.blockResponse(response))
    }
}

/// A snapshot of a node's state, for `syncctl status` (Codable for `--json`).
public struct NodeStatus: Sendable, Codable {
    public struct Peer: Sendable, Codable {
        public var nodeID: String
        public var name: String
        public var address: String
        public var bytesSent: Int
        public var bytesReceived: Int
        public var caughtUp: Bool
    }
    public var nodeID: String
    public var name: String
    public var folder: String
    public var port: Int
    public var peers: [Peer]
    public var files: Int
    public var bytes: UInt64
    public var pulling: [String]
    public var failed: [String: String]
    public var inSync: Bool
    public var filesPulled: Int
    public var bytesFromNetwork: Int
    public var bytesReused: Int
    public var conflicts: Int
    public var conflictCopies: [String]
    public var recentErrors: [String]

    init(nodeID: String, name: String, folder: String, port: Int, peers: [Peer], files: Int, bytes: UInt64, pulling: [String], failed: [String: String], inSync: Bool, counters: SyncNode.Counters, recentErrors: [String]) {
        self.nodeID = nodeID
        self.name = name
        self.folder = folder
        self.port = port
        self.peers = peers
        self.files = files
        self.bytes = bytes
        self.pulling = pulling
        self.failed = failed
        self.inSync = inSync
        filesPulled = counters.filesPulled
        bytesFromNetwork = counters.bytesFromNetwork
        bytesReused = counters.bytesReused
        conflicts = counters.conflicts
        conflictCopies = counters.lastConflictCopies
        self.recentErrors = recentErrors
    }
}

/// Runs `body`, giving up after `timeout`.
func withTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw SyncError(.transport, "timed out")
        }
        let result = try await group.next()!
        group.cancelAll()
        return result
    }
}
