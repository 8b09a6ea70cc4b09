import Foundation
import Logging
import Metrics
import NIOCore
import ServiceLifecycle

/// A running SyncKit node: one folder, one discovery, one transport, one conflict policy.
///
/// The actor is the shell around `NodeMachine`, and decides nothing: it turns what happens
/// (a scan finished, a frame arrived, a timer fired, a job ended) into `NodeInput`s, and carries
/// out the machine's `Directive`s with real I/O (connections, the folder, the index, timers on
/// an injected clock). It is a swift-service-lifecycle `Service`: `run()` works until the task
/// is cancelled or a graceful shutdown is triggered, then tells its peers goodbye, writes its
/// index and closes everything; jobs in flight are cancelled and leave their temp files, which
/// the next start resumes.
public actor SyncNode: Service {
    public nonisolated let id: NodeID
    public nonisolated let configuration: SyncConfiguration
    public nonisolated let name: String
    let discovery: any PeerDiscovery
    let transport: any SyncTransport
    let folder: any LocalFolder
    let index: any IndexPersistence
    let logger: Logger
    let clock: NodeClock
    let metrics: NodeMetrics
    var machine: NodeMachine

    var connections: [ConnectionID: Connection] = [:]
    var nextConnection: UInt64 = 1
    let fetches = BlockFetches()
    let mailbox = InputMailbox()
    /// Slices of a full scan handed over and not yet taken in, at most two (see `scan`).
    nonisolated let scanSlices = DispatchSemaphore(value: 2)
    /// Where scans run: a serial Dispatch queue of the node's own (see `scan`).
    nonisolated let scanExecutor = QueueExecutor(label: "synckit.scan")
    var jobs: [String: Task<Void, Never>] = [:]
    /// Set once `run()` starts (it needs the actor).
    var timers: Timers?
    var background: [Task<Void, Never>] = []
    var listener: (any PeerListener)?
    let subscribers = EventFanout()
    var published = NodeMachine.Statistics()
    /// Full scans started and taken in (for `rescan`).
    var fullScansStarted = 0
    var fullScansDone = 0
    var scanWaiters: [(target: Int, continuation: CheckedContinuation<Void, Never>)] = []
    /// When the last full scan was taken in, and when the node was made (the dashboard's).
    var lastFullScan: Date?
    public nonisolated let startedAt = Date()
    /// Bytes each running pull has received so far (the dashboard's progress bars).
    let progress = TransferProgress()

    /// Opens the folder's state (identity, index) and checks it is safe to sync (see
    /// `StateDirectory`), with the folder on disk (`PosixFolder`).
    public init(
        configuration: SyncConfiguration, discovery: any PeerDiscovery, transport: any SyncTransport,
        policy: any ConflictPolicy, logger: Logger, clock: some Clock<Duration> = ContinuousClock()
    ) throws {
        var config = configuration
        config.folder = (config.folder as NSString).standardizingPath
        let state = try StateDirectory(config)
        let name = config.name ?? state.identity.id.short
        var logger = logger
        logger[metadataKey: "node"] = "\(name)"
        logger[metadataKey: "node.id"] = "\(state.identity.id)"
        let folder = try PosixFolder(
            path: config.folder, stateDirectory: config.resolvedStateDirectory, reserved: config.reservedPaths, index: state.index,
            me: state.identity.id, blockWindow: config.blockWindow, fixedBlocks: config.linkCodecs != nil,
            versioning: config.versioning, logger: logger)
        // The scratch file the engine's tables move to when the folder outgrows memory.
        let spill = try SpillStore(path: config.resolvedStateDirectory + "/spill.db")
        try self.init(id: state.identity.id, name: name, configuration: config, folder: folder, index: state.index,
                      discovery: discovery, transport: transport, policy: policy, spill: spill, logger: logger, clock: clock)
    }

    /// A node over any folder and index (tests run nodes on in-memory ones).
    public init(
        id: NodeID, name: String, configuration: SyncConfiguration, folder: any LocalFolder, index: any IndexPersistence,
        discovery: any PeerDiscovery, transport: any SyncTransport, policy: any ConflictPolicy, spill: SpillStore? = nil, logger: Logger,
        clock: some Clock<Duration> = ContinuousClock()
    ) throws {
        self.id = id
        self.name = name
        self.configuration = configuration
        self.folder = folder
        self.index = index
        self.discovery = discovery
        self.transport = transport
        self.logger = logger
        self.clock = NodeClock(clock)
        metrics = NodeMetrics(node: name)
        // Patches a crash interrupted are finished before anything looks at the folder.
        folder.recover()
        let intents = try index.loadIntents()
        var machine = NodeMachine(
            settings: .init(me: id, name: name, indexID: index.indexID, configuration: configuration, seed: UInt64.random(in: 0...UInt64.max)),
            policy: policy, records: [], peers: [], intents: intents, landed: folder.landed(intents),
            reservedSequence: index.reservedSequence, ignoreText: folder.readIgnoreFile(), spill: spill, logger: logger)
        // The stored indexes in chunks, this node's first: loaded whole, the local records and
        // every peer's were decoded into arrays that all lived at once beside the engine's
        // tables (2.1 GiB at the restart of a node holding a million files).
        try index.forEachRecord(chunk: 10_000) { machine.restoreLocal($0) }
        try index.forEachPeer(chunk: 10_000) { machine.restorePeer($0, state: $1, records: $2) }
        self.machine = machine
    }

    // MARK: public API

    /// A new stream of this node's events (each call makes an independent subscriber).
    public nonisolated func events() -> AsyncStream<SyncEvent> { subscribers.subscribe() }

    /// Asks for a full rescan now (tests, `syncctl`); returns once a full scan that started
    /// after the call has been taken in.
    public func rescan() async {
        let target = fullScansStarted + 1
        handle(.rescanRequested)
        guard fullScansDone < target else { return }
        await withCheckedContinuation { scanWaiters.append((target, $0)) }
    }

    // MARK: lifecycle

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await self.runUntilCancelled()
        }
    }

    func runUntilCancelled() async throws {
        // Bind first: a port in use must fail at once, not after scanning a large folder.
        // Connections wait in the backlog until the first scan is done.
        let listener = try await transport.listen(port: configuration.port)
        self.listener = listener
        timers = Timers(clock: clock) { [weak self] due in
            for id in due { await self?.handle(.timer(id)) }
        }
        handle(.start(port: listener.port))
        // Everything runs in tasks the directives start; wait for cancellation.
        let (cancelled, signal) = AsyncStream<Void>.makeStream()
        await withTaskCancellationHandler {
            for await _ in cancelled {}
        } onCancel: {
            signal.finish()
        }
        await shutdown()
    }

    /// Watches the folder: what the watcher reports goes to the machine.
    func watch() {
        do {
            let changes = try folder.watch(ignore: machine.ignore)
            background.append(Task {
                for await change in changes {
                    switch change {
                    case .changed(let paths): self.handle(.folderChanged(paths))
                    case .overflow: self.handle(.folderOverflow)
                    }
                }
            })
        } catch {
            logger.error("cannot watch the folder; changes will be found by the periodic rescan only", metadata: ["error": "\(error)"])
        }
    }

    /// The first scan is done: accept peers, look for them.
    func becomeReady() {
        guard let listener else { return }
        background.append(Task {
            for await channel in listener.channels { self.opened(channel, dialed: nil) }
        })
        let announcement = LocalAnnouncement(nodeID: id, name: name, clusterTag: configuration.clusterName, port: listener.port)
        background.append(Task {
            for await event in self.discovery.events(announcing: announcement) { self.handle(.discovered(event)) }
        })
    }

    func shutdown() async {
        handle(.stop)
        await listener?.close()
        folder.stopWatching()
        for t in background { t.cancel() }
        // Goodbyes go out for at most half a second: a stalled peer must not hold up the stop.
        let open = Array(connections.values)
        let clock = self.clock
        let deadline = clock.now + .milliseconds(500)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for c in open { await c.drained() } }
            group.addTask { try? await Task.detached { try await clock.sleep(until: deadline) }.value }
            await group.next()
            group.cancelAll()
        }
        for c in open { await c.close() }
        // Pulls in flight stop where they are; their temp files are resumed at the next start.
        fetches.failAll()
        for t in jobs.values { t.cancel() }
        for t in jobs.values { await t.value }
        handle(.stop)  // what the last jobs recorded is written too
        timers?.stop()
        subscribers.finish()
        for w in scanWaiters { w.continuation.resume() }
        scanWaiters.removeAll()
        try? index.close()
    }

    // MARK: the machine

    /// Hands an input to the machine; what was posted before it (`InputMailbox`) is older and
    /// goes first.
    func handle(_ input: NodeInput) { handle(batch: mailbox.takeAll() + [input]) }

    /// Hands inputs to the machine in order and carries out its directives. Directives that
    /// answer at once (reading `.syncignore`) feed their input back right after the one that
    /// asked.
    func handle(batch: [NodeInput]) {
        for input in batch {
            var queue = [input], i = 0
            while i < queue.count {
                if case .scanned(let result) = queue[i], result.request == .full, !result.isSlice {
                    fullScansDone += 1
                    lastFullScan = Date()
                }
                for directive in machine.handle(queue[i], now: clock.now) {
                    if let more = perform(directive) { queue.append(more) }
                }
                // A slice taken in: the scan may hand over the next one.
                if case .scanned(let result) = queue[i], result.isSlice { scanSlices.signal() }
                i += 1
            }
        }
        published = metrics.publish(machine.statistics, since: published, peers: machine.peerCount)
        if !scanWaiters.isEmpty {
            let done = fullScansDone
            for w in scanWaiters where w.target <= done { w.continuation.resume() }
            scanWaiters.removeAll { $0.target <= done }
        }
    }

    private func perform(_ directive: Directive) -> NodeInput? {
        switch directive {
        case .send(let c, let message):
            connections[c]?.send(message)
        case .close(let c, _):
            if let connection = connections[c] { Task { await connection.close() } }
        case .dial(let endpoint):
            dial(endpoint)
        case .setTimer(let id, let at):
            timers?.set(id, at: at)
        case .cancelTimer(let id):
            timers?.cancel(id)
        case .scan(let request, let known):
            scan(request, known: known)
        case .loadIgnoreRules:
            return .ignoreRulesLoaded(folder.readIgnoreFile())
        case .startJob(let job, let locals):
            startJob(job, locals: locals)
        case .deliver(let fetch, let data, let peer):
            fetches.deliver(fetch, (data, peer))
        case .serve(let c, let request, let location):
            serve(request, at: location, on: c)
        case .persist(let changes):
            attempt("write the index") { try index.save(changes) }
        case .reserveSequences(let through):
            attempt("write the sequence reservation") { try index.reserveSequences(through: through) }
        case .clearIntents:
            attempt("clear pull intents") { try index.clearIntents() }
        case .removeTemp(let path):
            folder.removeTemp(for: path)
        case .cleanStaleTemps:
            folder.cleanStaleTemps()
        case .watch:
            watch()
        case .ready:
            becomeReady()
        case .emit(let event):
            subscribers.yield(event)
        }
        return nil
    }

    private func attempt(_ what: String, _ body: () throws -> Void) {
        do { try body() } catch { logger.error("cannot \(what)", metadata: ["error": "\(error)"]) }
    }

    // MARK: connections

    private func dial(_ endpoint: PeerEndpoint) {
        let transport = self.transport
        Task {
            do {
                let channel = try await transport.connect(to: endpoint)
                self.opened(channel, dialed: endpoint)
            } catch {
                await self.handle(.dialFailed(endpoint, reason: "\(error)"))
            }
        }
    }

    /// A connection is up: its outbox, its receive loop, and the machine hears of it.
    private func opened(_ channel: any PeerChannel, dialed: PeerEndpoint?) {
        let c = ConnectionID(nextConnection)
        nextConnection += 1
        // Another protocol than ours (ALPN): its codec, or the link is refused.
        var codec: (any LinkCodec)?
        if let security = channel.security, let name = security.applicationProtocol, !LinkProtocols.isSyncKit(name) {
            guard let made = configuration.linkCodecs?(security) else {
                logger.warning("refusing a link in a protocol this node does not speak", metadata: ["peer.address": "\(channel.remoteDescription)", "protocol": "\(name)"])
                Task { await channel.close() }
                return
            }
            codec = made
        }
        let connection = Connection(
            id: c, channel: channel, metrics: metrics, codec: codec,
            indexSent: { [weak self] c in await self?.handle(.indexBatchSent(c)) },
            loopback: { [weak self] m in await self?.post(.received(c, m, wireSize: 0)) })
        connections[c] = connection
        // Trusted: the certificate's ID is in the trust list (read again if its file changed).
        let trusted = channel.security.map { configuration.trust.trusts($0.peer) } ?? false
        handle(.connectionOpened(c, address: channel.remoteDescription, dialed: dialed, nonce: ClusterKey.nonce(), security: channel.security, trusted: trusted))
        Task { await self.receive(on: connection) }
    }

    private func receive(on connection: Connection) async {
        let reason = await connection.receive { message, size in await self.post(.received(connection.id, message, wireSize: size)) }
        connections[connection.id] = nil
        handle(.connectionClosed(connection.id, reason: reason))
    }

    /// Reads and sends a block off the actor. Answers reach the machine in batches: the one that
    /// finds none pending makes the hop, which takes all sent by then (`Connection.takeServed`).
    private func serve(_ request: WireMessage.BlockRequest, at location: BlockMap.Location?, on c: ConnectionID) {
        // No connection: it ended in an earlier turn, and its session with it.
        guard let connection = connections[c] else { return }
        let folder = self.folder
        Task {
            await connection.answer(request, at: location, from: folder)
            if connection.noteServed() { self.handle(served: connection) }
        }
    }

    private func handle(served connection: Connection) { handle(.served(connection.id, count: connection.takeServed())) }

    // MARK: scans and jobs

    private func scan(_ request: ScanRequest, known: LocalIndex) {
        if request == .full { fullScansStarted += 1 }
        let (folder, ignore, clock, metrics) = (self.folder, machine.ignore, self.clock, self.metrics)
        // A full scan hands its observations over in slices as it walks (posted, in order,
        // before its end): a first scan of a million files is recorded and stored as it goes
        // instead of in one input whose output (a record, a store and an event per file) the
        // node would hold all at once.
        //
        // At most two slices wait for the node at a time (`scanSlices`): the walk is faster than
        // recording what it finds, most of all once the index is spilled to SQLite, and without
        // the wait every slice of a million-file scan was queued in the mailbox at once (280 MB
        // of observations). The wait gives up after 10 s, so a node that stops taking inputs
        // never holds a scan forever.
        var slices: (@Sendable ([SyncEngine.Observation]) -> Void)?
        if request == .full {
            let gate = scanSlices
            slices = { @Sendable [weak self] observations in
                _ = gate.wait(timeout: .now() + .seconds(10))
                self?.postNow(.scanned(ScanResult(request: request, observations: observations, known: known, isSlice: true)))
            }
        }
        let sliceSink = slices
        // On the node's scan queue, not the cooperative pool: a scan's walk and hashing block
        // their thread for as long as they take (a minute at a million files), and waiting for
        // the node to take a slice blocks it too; on two cores the pool has two threads, and a
        // blocked one was half of what the node's actor, its connections and every other task
        // had (a status call once waited 30 s during a first scan).
        Task.detached(executorPreference: scanExecutor) {
            let started = clock.now
            let result = await folder.scan(request, known: known, ignore: ignore, slices: sliceSink)
            if request == .full { metrics.scanDuration.record(duration: clock.now - started) }
            await self.handle(.scanned(result))
        }
    }

    private func startJob(_ job: PullJob, locals: [BlockHash: [BlockMap.Location]]) {
        let folder = self.folder
        let source = NodeBlockSource(node: self)
        if job.operation == .writeFile { progress.begin(job.path, size: job.target.size) }
        jobs[job.path] = Task {
            let (outcome, stats) = await folder.apply(job, locals: locals, blocks: source)
            self.jobEnded(job, outcome, stats)
        }
    }

    private func jobEnded(_ job: PullJob, _ outcome: PullOutcome, _ stats: PullStats) {
        jobs[job.path] = nil
        progress.end(job.path)
        handle(.jobFinished(job, outcome, stats))
    }

    /// Asks the machine for a block for a job; returns what a peer answered and who it was.
    /// The request is posted (no hop of its own): the jobs of a burst of small files ask in
    /// one actor turn.
    nonisolated func requestBlock(_ block: BlockRef, offset: UInt64, of target: FileRecord, excluding: Set<NodeID>) async -> BlockFetches.Answer {
        let fetch = fetches.newFetch()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                fetches.wait(fetch, continuation)
                postNow(.needBlock(fetch, target: target, block: block, offset: offset, excluding: excluding))
            }
        } onCancel: {
            if fetches.deliver(fetch, (nil, nil)) { postNow(.fetchCancelled(fetch)) }
        }
    }
}

/// A task executor over a serial Dispatch queue: tasks preferring it run their non-isolated
/// code on a thread of that queue (Dispatch gives it one of its own, outside the cooperative
/// pool, while it has work), so they may block without starving the pool.
final class QueueExecutor: TaskExecutor, @unchecked Sendable {
    private let queue: DispatchQueue

    init(label: String) { queue = DispatchQueue(label: label) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}
