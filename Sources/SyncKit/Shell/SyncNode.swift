import Foundation
import Logging
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
    var nextFetch: UInt64 = 1
    var fetchWaiters: [FetchID: CheckedContinuation<(ByteBuffer?, NodeID?), Never>] = [:]
    var jobs: [String: Task<Void, Never>] = [:]
    var timers: [TimerID: Duration] = [:]
    var timerTask: Task<Void, Never>?
    var background: [Task<Void, Never>] = []
    var listener: (any PeerListener)?
    var subscribers: [UUID: AsyncStream<SyncEvent>.Continuation] = [:]
    var published = NodeMachine.Statistics()
    /// Full scans started and taken in (for `rescan`).
    var fullScansStarted = 0
    var fullScansDone = 0
    var scanWaiters: [(target: Int, continuation: CheckedContinuation<Void, Never>)] = []

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
            me: state.identity.id, blockWindow: config.blockWindow, logger: logger)
        try self.init(id: state.identity.id, name: name, configuration: config, folder: folder, index: state.index,
                      discovery: discovery, transport: transport, policy: policy, logger: logger, clock: clock)
    }

    /// A node over any folder and index (tests run nodes on in-memory ones).
    public init(
        id: NodeID, name: String, configuration: SyncConfiguration, folder: any LocalFolder, index: any IndexPersistence,
        discovery: any PeerDiscovery, transport: any SyncTransport, policy: any ConflictPolicy, logger: Logger,
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
        do {
            machine = NodeMachine(
                settings: .init(me: id, name: name, indexID: index.indexID, configuration: configuration, seed: UInt64.random(in: 0...UInt64.max)),
                policy: policy, records: try index.loadAll(), peers: try index.loadPeers(), intents: try index.loadIntents(),
                reservedSequence: index.reservedSequence, ignoreText: folder.readIgnoreFile(), logger: logger)
        } catch let error as SyncError {
            throw error
        } catch {
            throw SyncError(.index, "cannot read the index", underlying: error)
        }
    }

    // MARK: public API

    /// A new stream of this node's events (each call makes an independent subscriber).
    public func events() -> AsyncStream<SyncEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: SyncEvent.self, bufferingPolicy: .bufferingNewest(10_000))
        let key = UUID()
        subscribers[key] = continuation
        continuation.onTermination = { [weak self] _ in Task { await self?.unsubscribe(key) } }
        return stream
    }

    private func unsubscribe(_ key: UUID) { subscribers[key] = nil }

    /// The port peers can reach this node on, once it runs.
    public var listeningPort: Int? { listener?.port }

    /// This node's index (what it has on disk, plus tombstones).
    public var localRecords: [String: FileRecord] { machine.engine.local }

    /// True when nothing is pending and every connected peer has sent its index.
    public var isInSync: Bool { machine.inSync }

    public var statistics: NodeMachine.Statistics { machine.statistics }

    /// A snapshot for `syncctl status`.
    public func status() -> NodeStatus {
        let engine = machine.engine
        let bytesSent = Dictionary(machine.connectedPeers.compactMap { peer in
            connections.values.first { machine.peer(of: $0.id) == peer.id }.map { (peer.id, $0.bytesSent) }
        }, uniquingKeysWith: { a, _ in a })
        return NodeStatus(
            nodeID: id.description, name: name, folder: configuration.folder, port: listener?.port ?? 0,
            peers: machine.connectedPeers.map {
                .init(nodeID: $0.id.description, name: $0.name, address: $0.address, bytesSent: bytesSent[$0.id] ?? 0,
                      bytesReceived: machine.bytesReceived(from: $0.id), caughtUp: $0.caughtUp)
            },
            files: engine.local.values.filter { !$0.deleted && $0.kind == .file }.count,
            bytes: engine.local.values.filter { !$0.deleted }.reduce(0) { $0 + $1.size },
            pulling: engine.running.keys.sorted(), failed: engine.failed, inSync: machine.inSync,
            statistics: machine.statistics)
    }

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
        handle(.start(port: listener.port))
        // Everything runs in tasks the directives start; wait for cancellation.
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(3600))
        }
        await shutdown()
    }

    /// The first scan is done: watch the folder, accept peers, look for them.
    func becomeReady() {
        guard let listener else { return }
        if configuration.watch {
            do {
                let changes = try folder.watch(ignore: machine.ignore)
                background.append(Task {
                    for await change in changes {
                        switch change {
                        case .changed(let paths): await self.handle(.folderChanged(paths))
                        case .overflow: await self.handle(.folderOverflow)
                        }
                    }
                })
            } catch {
                logger.error("cannot watch the folder; changes will be found by the periodic rescan only", metadata: ["error": "\(error)"])
            }
        }
        background.append(Task {
            for await channel in listener.channels { await self.opened(channel, dialed: nil) }
        })
        let announcement = LocalAnnouncement(nodeID: id, name: name, clusterTag: configuration.clusterName, port: listener.port)
        background.append(Task {
            for await event in self.discovery.events(announcing: announcement) { await self.handle(.discovered(event)) }
        })
    }

    func shutdown() async {
        handle(.stop)
        await listener?.close()
        folder.stopWatching()
        for t in background { t.cancel() }
        // Goodbyes go out for at most half a second: a stalled peer must not hold up the stop.
        let deadline = clock.now + .milliseconds(500)
        while connections.values.contains(where: { !$0.isIdle }) && clock.now < deadline {
            await Task.detached { try? await Task.sleep(for: .milliseconds(10)) }.value
        }
        for c in connections.values { await c.close() }
        // Pulls in flight stop where they are; their temp files are resumed at the next start.
        for (fetch, waiter) in fetchWaiters {
            fetchWaiters[fetch] = nil
            waiter.resume(returning: (nil, nil))
        }
        for t in jobs.values { t.cancel() }
        for t in jobs.values { await t.value }
        timerTask?.cancel()
        for c in subscribers.values { c.finish() }
        subscribers.removeAll()
        for w in scanWaiters { w.continuation.resume() }
        scanWaiters.removeAll()
        try? index.close()
    }

    // MARK: the machine

    /// Hands an input to the machine and carries out its directives, in order. Directives that
    /// answer at once (reading `.syncignore`) feed their input back in the same turn.
    func handle(_ input: NodeInput) {
        if case .scanned(let result) = input, result.request == .full { fullScansDone += 1 }
        var inputs = [input]
        while !inputs.isEmpty {
            let next = inputs.removeFirst()
            for directive in machine.handle(next, now: clock.now) {
                if let more = perform(directive) { inputs.append(more) }
            }
        }
        publishMetrics()
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
            timers[id] = at
            rearmTimers()
        case .cancelTimer(let id):
            timers[id] = nil
        case .scan(let request, let known):
            scan(request, known: known)
        case .loadIgnoreRules:
            return .ignoreRulesLoaded(folder.readIgnoreFile())
        case .startJob(let job, let locals):
            startJob(job, locals: locals)
        case .deliver(let fetch, let data, let peer):
            fetchWaiters.removeValue(forKey: fetch)?.resume(returning: (data, peer))
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
        case .ready:
            becomeReady()
        case .emit(let event):
            for c in subscribers.values { c.yield(event) }
        }
        return nil
    }

    private func attempt(_ what: String, _ body: () throws -> Void) {
        do { try body() } catch { logger.error("cannot \(what)", metadata: ["error": "\(error)"]) }
    }

    /// Updates the swift-metrics handles by what changed since the last input.
    private func publishMetrics() {
        let s = machine.statistics
        if s.filesPulled > published.filesPulled { metrics.filesPulled.increment(by: s.filesPulled - published.filesPulled) }
        if s.conflicts > published.conflicts { metrics.conflicts.increment(by: s.conflicts - published.conflicts) }
        if s.filesHashed > published.filesHashed { metrics.filesHashed.increment(by: s.filesHashed - published.filesHashed) }
        if s.bytesReceived > published.bytesReceived { metrics.bytesReceived.increment(by: s.bytesReceived - published.bytesReceived) }
        published = s
        metrics.peersConnected.record(machine.connectedPeers.count)
    }

    // MARK: timers

    /// One task sleeps until the earliest armed timer, then fires every timer that is due.
    private func rearmTimers() {
        timerTask?.cancel()
        guard let next = timers.values.min() else { return }
        let clock = self.clock
        timerTask = Task {
            do { try await clock.sleep(until: next) } catch { return }
            await self.fireDueTimers()
        }
    }

    private func fireDueTimers() {
        let now = clock.now
        let due = timers.filter { $0.value <= now }.sorted { $0.value < $1.value }.map(\.key)
        for id in due {
            timers[id] = nil
            handle(.timer(id))
        }
        rearmTimers()
    }

    // MARK: connections

    private func dial(_ endpoint: PeerEndpoint) {
        let transport = self.transport
        Task {
            do {
                let channel = try await transport.connect(to: endpoint)
                await self.opened(channel, dialed: endpoint)
            } catch {
                await self.handle(.dialFailed(endpoint, reason: "\(error)"))
            }
        }
    }

    /// A connection is up: its outbox, its receive loop, and the machine hears of it.
    private func opened(_ channel: any PeerChannel, dialed: PeerEndpoint?) {
        let c = ConnectionID(nextConnection)
        nextConnection += 1
        let connection = Connection(id: c, channel: channel, metrics: metrics) { [weak self] c in await self?.handle(.indexBatchSent(c)) }
        connections[c] = connection
        handle(.connectionOpened(c, address: channel.remoteDescription, dialed: dialed, nonce: ClusterKey.nonce()))
        Task { await self.receive(on: connection) }
    }

    /// Reads frames until the connection ends, decoding them off the actor.
    private nonisolated func receive(on connection: Connection) async {
        var reason = "connection closed"
        do {
            for try await frame in connection.channel.inbound {
                let message: WireMessage
                do { message = try WireCodec.decode(frame) } catch {
                    reason = "undecodable message: \(error)"
                    break
                }
                await handle(.received(connection.id, message, wireSize: frame.wireSize))
            }
        } catch {
            reason = "\(error)"
        }
        await connection.close()
        await connectionEnded(connection.id, reason: reason)
    }

    private func connectionEnded(_ c: ConnectionID, reason: String) {
        connections[c] = nil
        handle(.connectionClosed(c, reason: reason))
    }

    private func serve(_ request: WireMessage.BlockRequest, at location: BlockMap.Location?, on c: ConnectionID) {
        guard let connection = connections[c] else {
            handle(.served(c))
            return
        }
        let folder = self.folder
        Task {
            var response = WireMessage.BlockResponse(id: request.id, status: .notFound, data: ByteBuffer())
            if let location, let data = folder.readBlock(location) {
                response.status = .ok
                response.data = data
            }
            connection.send(.blockResponse(response))
            await self.handle(.served(c))
        }
    }

    // MARK: scans and jobs

    private func scan(_ request: ScanRequest, known: [String: FileRecord]) {
        if request == .full { fullScansStarted += 1 }
        let folder = self.folder
        let ignore = machine.ignore
        let clock = self.clock
        let metrics = self.metrics
        Task.detached {
            let started = clock.now
            let result = await folder.scan(request, known: known, ignore: ignore)
            if request == .full {
                let elapsed = clock.now - started
                metrics.scanDuration.recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
            }
            await self.handle(.scanned(result))
        }
    }

    private func startJob(_ job: PullJob, locals: [BlockHash: [BlockMap.Location]]) {
        let folder = self.folder
        let source = NodeBlockSource(node: self)
        jobs[job.path] = Task {
            let (outcome, stats) = await folder.apply(job, locals: locals, blocks: source)
            await self.jobEnded(job, outcome, stats)
        }
    }

    private func jobEnded(_ job: PullJob, _ outcome: PullOutcome, _ stats: PullStats) {
        jobs[job.path] = nil
        handle(.jobFinished(job, outcome, stats))
    }

    /// Asks the machine for a block for a job; returns what a peer answered and who it was.
    func requestBlock(_ block: BlockRef, offset: UInt64, of target: FileRecord, excluding: Set<NodeID>) async -> (ByteBuffer?, NodeID?) {
        let fetch = FetchID(nextFetch)
        nextFetch += 1
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                fetchWaiters[fetch] = continuation
                handle(.needBlock(fetch, target: target, block: block, offset: offset, excluding: excluding))
            }
        } onCancel: {
            Task { await self.cancelFetch(fetch) }
        }
    }

    private func cancelFetch(_ fetch: FetchID) {
        guard let waiter = fetchWaiters.removeValue(forKey: fetch) else { return }
        waiter.resume(returning: (nil, nil))
        handle(.fetchCancelled(fetch))
    }
}

/// The `BlockSource` of a node's jobs: asks the node (which asks the machine for the peer), and
/// checks what comes back against the block's size and SHA-256, off the node's actor. A wrong
/// or missing answer is asked of the next peer, until none is left.
struct NodeBlockSource: BlockSource {
    let node: SyncNode

    func fetch(_ block: BlockRef, offset: UInt64, of target: FileRecord) async -> ByteBuffer? {
        var tried = Set<NodeID>()
        while !Task.isCancelled {
            let (data, peer) = await node.requestBlock(block, offset: offset, of: target, excluding: tried)
            if let data, data.readableBytes == Int(block.size), data.withUnsafeReadableBytes({ Chunker.hash($0) }) == block.hash {
                return data
            }
            guard let peer else { return nil }
            tried.insert(peer)
        }
        return nil
    }
}
