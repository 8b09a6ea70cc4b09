import Logging
import NIOCore

/// Every decision of a node, as one pure state machine: inputs in (`NodeInput`), directives out
/// (`Directive`), no I/O and no clock of its own (the time comes with each input).
///
/// It holds the `SyncEngine` (the index and what to pull) and one `PeerSession` per connection
/// (handshake, index exchange, block requests), and decides everything around them: when to
/// scan (debounce, one scan at a time), what a scan's result means (dropping observations a job
/// overtook), when to write the index and what (group commit, sequence reservation, peers'
/// records), whom to send each record to (no echo to a peer that holds the version), which
/// link to keep when two connect (the one dialed by the lower ID), whom to ask for a block (the
/// least busy peer holding the content, within a byte budget, with a deadline), where a
/// requested block is read from, when to redial (backoff with jitter) or drop a silent peer,
/// which records from a peer to refuse (unsafe paths, the state directory, ignored paths), and
/// when the folder is in sync. This is the shape of swift-cluster-membership's `SWIM.Instance`:
/// `SyncNode` only performs the directives, and the simulation (`SimulatedCluster` in
/// SyncKitTesting) drives the very same machine with an in-memory folder, network and clock.
public struct NodeMachine: Sendable {
    /// What the machine needs to know about its node besides its state.
    public struct Settings: Sendable {
        public var me: NodeID
        public var name: String
        public var indexID: UInt64
        public var configuration: SyncConfiguration
        /// Seeds the jitter of redials (random in production, the seed in simulations).
        public var seed: UInt64
        public init(me: NodeID, name: String, indexID: UInt64, configuration: SyncConfiguration, seed: UInt64) {
            self.me = me
            self.name = name
            self.indexID = indexID
            self.configuration = configuration
            self.seed = seed
        }
    }

    /// What the node did so far, for status, metrics and tests.
    public struct Statistics: Sendable, Equatable {
        public var filesPulled = 0
        /// Of those, files placed by moving a local file whose old path was deleted (a rename
        /// on a peer): no data read or written.
        public var filesMoved = 0
        public var bytesFromNetwork = 0
        public var bytesReused = 0
        public var conflicts = 0
        /// Files the scanner had to read and hash (the quick check failed or they were new).
        public var filesHashed = 0
        public var bytesReceived = 0
        public var lastConflictCopies: [String] = []
        public var recentErrors: [String] = []
    }

    /// How the machine dials one endpoint that discovery reported.
    struct Dialer: Sendable {
        var expected: NodeID?
        var delay: Duration
        /// A dial or a connection from it is under way.
        var busy = false
    }

    public let settings: Settings
    var config: SyncConfiguration { settings.configuration }
    public private(set) var engine: SyncEngine
    private(set) var sessions: [ConnectionID: PeerSession] = [:]
    /// The connection kept for each peer (established, deduplicated).
    private(set) var links: [NodeID: ConnectionID] = [:]
    private(set) var blockMap = BlockMap()
    /// This node's own recent block lists of large files (delta bases a peer may name).
    private var ownLists = RecentLists()
    public private(set) var ignore: IgnoreRules
    /// A state directory configured inside the folder (`SyncConfiguration.reservedPaths`,
    /// computed once: it resolves paths on disk).
    private let reservedPaths: [String]

    private var pendingScan: Set<String> = []
    private var scanning: ScanRequest?
    private var fullScanWanted = false
    private var debounceArmed = false
    private(set) var firstScanDone = false

    private var unsaved: [String: FileRecord] = [:]
    private var unsavedPeers: [NodeID: Set<String>] = [:]
    private var forgottenPeers: Set<NodeID> = []
    private var flushArmed = false
    private var reservedSequence: UInt64

    private var dialers: [PeerEndpoint: Dialer] = [:]
    private var selfEndpoints: Set<PeerEndpoint> = []
    private var endpointPeers: [PeerEndpoint: NodeID] = [:]
    /// The connection each waiting fetch was sent on.
    private var fetches: [FetchID: ConnectionID] = [:]
    private var sweepAt: Duration?

    public private(set) var inSync = false
    /// Paused by the user (`NodeInput.pause`): no job starts until resumed. Scans go on, and
    /// local changes are still recorded and offered to peers.
    public private(set) var paused = false
    /// A scan is running now (the dashboard's "scanning").
    public var isScanning: Bool { scanning != nil }
    private var tempsCleaned = false
    /// Paths whose pull stopped half-way (their temp file is kept for a resume).
    private var interruptedPulls: Set<String> = []
    public private(set) var stopping = false
    public private(set) var port = 0
    public private(set) var statistics = Statistics()
    private var random: SplitMix64
    private let logger: Logger

    private var now: Duration = .zero
    private var out: [Directive] = []
    /// Intents whose change the folder found on disk at start (see `adoptLandedIntents`).
    private let landed: Set<String>

    /// A machine over the index loaded from disk: `records` (this node's), `peers` (what each
    /// peer sent before), `intents` (pulls that may have reached the disk unrecorded) and the
    /// sequence reservation.
    public init(settings: Settings, policy: any ConflictPolicy, records: [FileRecord], peers: [StoredPeer], intents: [FileRecord],
                landed: Set<String> = [], reservedSequence: UInt64, ignoreText: String, spill: SpillStore? = nil, logger: Logger) {
        self.settings = settings
        self.logger = logger
        random = SplitMix64(seed: settings.seed)
        self.reservedSequence = reservedSequence
        let config = settings.configuration
        reservedPaths = config.reservedPaths
        ignore = IgnoreRules(text: ignoreText, reserved: reservedPaths)
        engine = SyncEngine(me: settings.me, policy: policy, order: config.pullOrder, maxConcurrentJobs: config.maxConcurrentJobs)
        engine.restore(records: [], sequenceFloor: reservedSequence)
        // Large tables move to the spill file past the limit (before the index is loaded, so
        // a restart of a million-file node never holds it all in memory).
        if let spill {
            engine.spill(to: spill, above: config.memoryRecordLimit)
            blockMap.spill(to: spill, above: config.memoryRecordLimit)
        }
        engine.restoreIntents(intents)
        self.landed = landed
        restoreLocal(records)
        for p in peers { restorePeer(p.id, state: p.state, records: p.records) }
    }

    /// Loads stored local records (before the node starts; `IndexPersistence.forEachRecord`
    /// hands them over in chunks, so a million are never decoded at once).
    public mutating func restoreLocal(_ records: [FileRecord]) {
        engine.restore(records: records)
        for r in records {
            blockMap.update(r)
            ownLists.remember(RecentLists.base(r), for: r.path)
        }
    }

    /// Loads a chunk of a peer's stored index (after the local records, so that a peer's record
    /// of the same change shares this node's).
    public mutating func restorePeer(_ peer: NodeID, state: PeerIndexState, records: [FileRecord]) {
        engine.restorePeer(peer, indexID: state.indexID, maxSequence: state.maxSequence, records: records)
    }

    /// Takes one input at `now` (the node's clock: time since it started) and returns what the
    /// shell must do, in order.
    public mutating func handle(_ input: NodeInput, now: Duration) -> [Directive] {
        self.now = now
        out = []
        switch input {
        case .start(let port): start(port: port)
        case .scanned(let result): scanned(result)
        case .folderChanged(let paths): folderChanged(paths)
        case .folderOverflow: requestFullScan()
        case .ignoreRulesLoaded(let text):
            ignore = IgnoreRules(text: text, reserved: reservedPaths)
            logger.info("reloaded .syncignore")
        case .timer(let id): timerFired(id)
        case .discovered(let event): discovered(event)
        case .dialFailed(let endpoint, let reason): dialFailed(endpoint, reason)
        case .connectionOpened(let c, let address, let dialed, let nonce, let security, let trusted):
            opened(c, address: address, dialed: dialed, nonce: nonce, security: security, trusted: trusted)
        case .received(let c, let message, let size): received(message, on: c, size: size)
        case .connectionClosed(let c, let reason): closed(c, reason: reason)
        case .indexBatchSent(let c):
            sessions[c]?.indexBatchSent()
            pumpIndex(c)
        case .served(let c, let count): sessions[c]?.endServe(count)
        case .needBlock(let fetch, let target, let block, let offset, let excluding):
            needBlock(fetch, target: target, block: block, offset: offset, excluding: excluding)
        case .fetchCancelled(let fetch):
            if let c = fetches.removeValue(forKey: fetch) { sessions[c]?.cancel(fetch) }
        case .jobFinished(let job, let outcome, let stats): jobFinished(job, outcome, stats)
        case .rescanRequested: requestFullScan()
        case .pause(let on):
            if paused != on { logger.notice(on ? "paused: pulling nothing until resumed" : "resumed: pulling again") }
            paused = on
        case .stop: stop()
        }
        // The inputs of moving one block (a fetch asked for or cancelled, a block request or
        // answer, a serve done) change neither what can be pulled next nor whether the node is
        // in sync: they skip both checks, which on a folder of small files ran for every block,
        // twice per block on each side.
        if !input.isBlockTraffic {
            // Paused, nothing new starts (jobs already running finish); resuming schedules.
            if !stopping && !paused { schedule() }
            checkInSync()
        }
        return out
    }

    // MARK: start and stop

    private mutating func start(port: Int) {
        self.port = port
        logger.info("starting", metadata: ["folder": "\(config.folder)", "node.id": "\(settings.me)", "records": "\(engine.local.count)"])
        if config.clusterKey.isOpen && (config.trust.isEmpty || config.trust.acceptsAnyone) {
            logger.warning("no cluster key: running in open mode (--open), any SyncKit node on the network that names cluster '\(config.clusterName)' can join and change files here. Set SYNCKIT_CLUSTER_KEY or --cluster-key-file.")
        }
        // Pulls that reached the disk before the last stop but not the index are recorded
        // first, so that the first scan judges the disk against them.
        absorb(engine.adoptLandedIntents(landed))
        // Watching starts before the first scan: a change made while it runs is then reported
        // (and scanned after it), instead of waiting for the next full rescan.
        if config.watch { out.append(.watch) }
        requestFullScan()
        out.append(.setTimer(.rescan, at: now + config.rescanInterval))
        out.append(.setTimer(.retryFailed, at: now + config.retryInterval))
        out.append(.setTimer(.ping, at: now + config.pingInterval))
    }

    /// Says goodbye to every peer (once) and writes what is unsaved; given again after the last
    /// jobs ended, it writes what they recorded.
    private mutating func stop() {
        if !stopping {
            stopping = true
            logger.info("stopping")
            for (c, s) in sessions.sorted(by: { $0.key < $1.key }) where s.phase == .established {
                out.append(.send(c, .close(reason: "shutting down")))
            }
        }
        flush()
    }

    // MARK: scanning

    private mutating func requestFullScan() {
        guard !stopping else { return }
        guard scanning == nil else {
            fullScanWanted = true
            return
        }
        scanning = .full
        var known = engine.local
        known.scanHorizon = engine.sequence
        out.append(.scan(.full, known: known))
    }

    private mutating func folderChanged(_ paths: Set<String>) {
        if paths.contains(".syncignore") { out.append(.loadIgnoreRules) }
        pendingScan.formUnion(paths)
        inSync = false
        armDebounce()
    }

    /// The watcher's reports are scanned once a burst settles (`debounce`), one scan at a time.
    private mutating func armDebounce() {
        guard !debounceArmed, scanning == nil, !stopping, !pendingScan.isEmpty else { return }
        debounceArmed = true
        out.append(.setTimer(.debounce, at: now + config.debounce))
    }

    /// Scans what the watcher reported, except paths a job is writing right now (they are
    /// looked at again once the job ends).
    private mutating func debounceFired() {
        debounceArmed = false
        guard scanning == nil else { return }
        let paths = pendingScan.filter { engine.running[$0] == nil }
        pendingScan.subtract(paths)
        guard !paths.isEmpty else { return }
        // Only the records the scan can need: the paths, and the subtrees of known directories.
        var known = [String: FileRecord]()
        var directories = [String]()
        for p in paths {
            guard let r = engine.local[p] else { continue }
            known[p] = r
            if r.kind == .directory { directories.append(p + "/") }
        }
        if !directories.isEmpty {
            if engine.local.isSpilled {
                // One range query per directory instead of a walk over every record.
                for d in directories { for r in engine.local.records(under: d) { known[r.path] = r } }
            } else {
                for (p, r) in engine.local where directories.contains(where: { p.hasPrefix($0) }) { known[p] = r }
            }
        }
        scanning = .paths(paths)
        var index = LocalIndex(known)
        index.scanHorizon = engine.sequence
        out.append(.scan(.paths(paths), known: index))
    }

    /// True when this node's record of `path` is the one the scan compared against: nothing
    /// (a job, an earlier observation) recorded a change of the path since the scan began.
    /// Every change takes a new sequence number, so with the scan's horizon (the highest number
    /// when it began) a record numbered at most that is unchanged; a spilled index is a live
    /// view, not a snapshot to compare with. Without a horizon (tests' results), the records
    /// the scan carried are compared.
    private func unchangedSinceScan(_ path: String, _ result: ScanResult) -> Bool {
        if let horizon = result.known.scanHorizon, result.known.isSpilled {
            return (engine.local[path]?.sequence ?? 0) <= horizon
        }
        return engine.local[path]?.sequence == result.known[path]?.sequence
    }

    private mutating func scanned(_ result: ScanResult) {
        // A slice of a full scan still running: its observations now, the rest at its end.
        if !result.isSlice { scanning = nil }
        let hashed = result.observations.reduce(0) { $0 + ($1.hashed ? 1 : 0) }
        statistics.filesHashed += hashed
        // Observations a job overtook while the scan ran (their record changed since) are
        // dropped, and so are half-patched files. In slices: the output for a first scan of
        // 20,000 files would otherwise hold every new record at once.
        // Renames paired (`SyncEngine.pairingRenames`): each new name is numbered, so sent,
        // right before the old name's deletion, and a peer hears of both in one index message.
        let observations = SyncEngine.pairingRenames(result.observations) { engine.local[$0] }
        var start = observations.startIndex
        while start < observations.endIndex {
            let end = min(start + 1000, observations.endIndex)
            let fresh = observations[start..<end].filter { o in
                engine.running[o.path] == nil && unchangedSinceScan(o.path, result) && !result.unfinished.contains(o.path)
            }
            if !fresh.isEmpty { absorb(engine.localScan(fresh)) }
            start = end
        }
        if result.isSlice { return }
        if result.request == .full && !firstScanDone {
            firstScanDone = true
            // The intents of the last run have served: every path was looked at once. What the
            // scan adopted from them is written first (a crash between the two would otherwise
            // lose both the intents and the records they made).
            engine.dropIntents()
            flush()
            out.append(.clearIntents)
            // Pulls and deletions pending at the last stop are queued again from the stored
            // peers' indexes (blocks wait for peers to connect; local work starts now).
            absorb(engine.reevaluateAll())
            logger.info("listening", metadata: ["port": "\(port)"])
            out.append(.ready)
            out.append(.emit(.started(node: settings.me, port: port)))
        }
        if fullScanWanted {
            fullScanWanted = false
            requestFullScan()
        } else {
            armDebounce()
        }
    }

    // MARK: timers

    private mutating func timerFired(_ id: TimerID) {
        switch id {
        case .debounce: debounceFired()
        case .flushIndex:
            flushArmed = false
            flush()
        case .retryFailed:
            if !engine.failed.isEmpty { absorb(engine.retryFailed()) }
            out.append(.setTimer(.retryFailed, at: now + config.retryInterval))
        case .ping:
            pingOrDrop()
            out.append(.setTimer(.ping, at: now + config.pingInterval))
        case .rescan:
            requestFullScan()
            out.append(.setTimer(.rescan, at: now + config.rescanInterval))
        case .requestSweep: sweepRequests()
        case .redial(let endpoint): dial(endpoint)
        case .handshake(let c):
            if let s = sessions[c], s.phase != .established { close(c, "no handshake within \(config.handshakeTimeout)") }
        }
    }

    /// Idle links get a ping; a link that received nothing for `deadPeerTimeout` is closed.
    private mutating func pingOrDrop() {
        for (peer, c) in links.sorted(by: { $0.key < $1.key }) {
            guard let s = sessions[c] else { continue }
            // A Syncthing peer pings only after 90 s without sending; it is given its own
            // protocol's 300 s.
            let timeout = s.speaksSyncKit ? config.deadPeerTimeout : max(config.deadPeerTimeout, .seconds(300))
            if now - s.lastReceived > timeout {
                logger.warning("peer silent too long; closing", metadata: ["peer.id": "\(peer.short)"])
                close(c, "silent for more than \(timeout)")
            } else {
                out.append(.send(c, .ping))
            }
        }
    }

    // MARK: discovery and dialing

    private mutating func discovered(_ event: DiscoveryEvent) {
        switch event {
        case .found(let endpoint):
            var key = endpoint
            key.nodeID = nil
            if endpoint.nodeID == settings.me { return }
            guard dialers[key] == nil, !selfEndpoints.contains(key), !stopping else { return }
            dialers[key] = Dialer(expected: endpoint.nodeID, delay: .milliseconds(250))
            dial(key)
        case .lost(let endpoint):
            var key = endpoint
            key.nodeID = nil
            dialers[key] = nil
            out.append(.cancelTimer(.redial(key)))
        }
    }

    /// Dials `endpoint`, unless its peer is connected already (then it is dialed again when
    /// that link ends) or a dial is under way.
    private mutating func dial(_ endpoint: PeerEndpoint) {
        guard var d = dialers[endpoint], !d.busy, !stopping, !selfEndpoints.contains(endpoint) else { return }
        if let peer = endpointPeers[endpoint] ?? d.expected, links[peer] != nil { return }
        d.busy = true
        dialers[endpoint] = d
        out.append(.dial(endpoint))
    }

    /// Dials again after `delay` plus up to 100 ms of jitter (so that two nodes do not dial each
    /// other in lockstep forever), doubling the delay up to `maxRedialDelay`.
    private mutating func redialLater(_ endpoint: PeerEndpoint, resetDelay: Bool) {
        guard var d = dialers[endpoint], !stopping else { return }
        if resetDelay { d.delay = .milliseconds(250) }
        d.busy = false
        let jitter = Duration.milliseconds(Int(random.next() % 101))
        out.append(.setTimer(.redial(endpoint), at: now + d.delay + jitter))
        d.delay = min(d.delay * 2, config.maxRedialDelay)
        dialers[endpoint] = d
    }

    private mutating func dialFailed(_ endpoint: PeerEndpoint, _ reason: String) {
        logger.debug("cannot reach peer", metadata: ["peer.address": "\(endpoint)", "error": "\(reason)"])
        redialLater(endpoint, resetDelay: false)
    }

    // MARK: connections

    private mutating func opened(_ c: ConnectionID, address: String, dialed: PeerEndpoint?, nonce: [UInt8], security: PeerChannelSecurity?, trusted: Bool) {
        guard !stopping else {
            close(c, "shutting down")
            return
        }
        let session = PeerSession(connection: c, address: address, dialed: dialed, nonce: nonce, security: security, trusted: trusted, now: now)
        // A link in another protocol (Syncthing) to a peer already linked is not started:
        // Syncthing keeps the link it has and drops the new one, and its endpoint is not dialed
        // again while that link lasts (redialing a connected Syncthing makes it churn).
        if let dialed, let peer = security?.peer, !session.speaksSyncKit, links[peer] != nil {
            endpointPeers[dialed] = peer
            sessions[c] = session
            close(c, "a link to this peer exists")
            return
        }
        sessions[c] = session
        out.append(.send(c, session.ourHello(id: settings.me, name: settings.name, clusterName: config.clusterName, port: port, indexID: settings.indexID)))
        out.append(.setTimer(.handshake(c), at: now + config.handshakeTimeout))
    }

    private mutating func close(_ c: ConnectionID, _ reason: String) {
        out.append(.close(c, reason: reason))
    }

    private mutating func received(_ message: WireMessage, on c: ConnectionID, size: Int) {
        guard var session = sessions[c] else { return }
        session.noteReceived(bytes: size, at: now)
        statistics.bytesReceived += size
        sessions[c] = session
        guard session.phase == .established else {
            handshake(message, on: c)
            return
        }
        guard links[session.peer!] == c else { return }  // a duplicate link on its way out
        switch message {
        case .indexUpdate(let update):
            do {
                let full = try sessions[c]!.deltaDecode(update, own: ownLists)
                receivedIndex(full, on: c)
            } catch {
                protocolViolation(c, "\(error)")
            }
        case .indexRequest(let request):
            // No echo on our own protocol only: a peer of another protocol (Syncthing) shows
            // which devices have which version from what each announced, so it gets all.
            let backlog = engine.backlog(after: request, ourIndexID: settings.indexID, for: session.speaksSyncKit ? session.peer : nil)
            sessions[c]!.answerIndexRequest(backlog)
            pumpIndex(c)
        case .blockRequest(let request):
            guard sessions[c]!.beginServe(limit: 1024) else {
                protocolViolation(c, "more than 1024 block requests in flight")
                return
            }
            out.append(.serve(c, request, locate(request)))
        case .blockResponse(let response):
            let (fetch, admitted) = sessions[c]!.answered(response.id, budget: config.requestBudgetPerPeer, now: now, timeout: config.requestTimeout)
            for m in admitted { out.append(.send(c, m)) }
            if let fetch {
                fetches[fetch] = nil
                out.append(.deliver(fetch, response.status == .ok ? response.data : nil, from: session.peer))
            }
        case .ping:
            break
        case .close(let why):
            close(c, "peer said goodbye: \(why)")
        case .hello, .auth:
            protocolViolation(c, "a handshake message after the handshake")
        }
    }

    private mutating func protocolViolation(_ c: ConnectionID, _ what: String) {
        logger.warning("dropping peer", metadata: ["peer.id": "\(sessions[c]?.peer?.short ?? "?")", "error": "\(what)"])
        close(c, what)
    }

    private mutating func handshake(_ message: WireMessage, on c: ConnectionID) {
        let step = sessions[c]!.handshake(message, me: settings.me, clusterName: config.clusterName, key: config.clusterKey)
        let session = sessions[c]!
        switch step {
        case .sendAuth(let auth):
            out.append(.send(c, auth))
        case .established:
            out.append(.cancelTimer(.handshake(c)))
            register(c)
        case .isSelf:
            if let endpoint = session.dialed {
                selfEndpoints.insert(endpoint)
                dialers[endpoint] = nil
            }
            out.append(.cancelTimer(.handshake(c)))
            close(c, "connected to itself")
        case .refuse(let reason):
            logger.warning("peer refused at handshake", metadata: [
                "peer.address": "\(session.address)", "peer.id": "\(session.security?.peer.description ?? session.hello?.nodeID.description ?? "unknown")",
                "error": "\(reason)"])
            out.append(.emit(.peerRejected(address: session.address, reason: reason)))
            noteError("peer \(session.address) refused: \(reason)")
            out.append(.send(c, .close(reason: "handshake failed")))
            close(c, reason)
        }
    }

    /// Keeps an authenticated connection as the peer's link. With two links to one peer (both
    /// dialed at once) the one dialed by the node with the lower ID is kept, which both sides
    /// compute alike.
    private mutating func register(_ c: ConnectionID) {
        let session = sessions[c]!
        guard let peer = session.peer, let hello = session.hello, !stopping else { return }
        if let endpoint = session.dialed { endpointPeers[endpoint] = peer }
        if let existing = links[peer], existing != c {
            // Another protocol's peer (Syncthing) keeps the link it has: so do we.
            let preferNew = session.speaksSyncKit && session.initiatedLocally == (settings.me < peer)
            guard preferNew else {
                close(c, "a link to this peer exists")
                return
            }
            close(existing, "replaced by a new link")
        }
        links[peer] = c
        if let known = engine.peers[peer], known.indexID != 0, known.indexID != hello.indexID {
            // The peer's index was reset: what is stored of the old one means nothing now.
            forgottenPeers.insert(peer)
            unsavedPeers[peer] = nil
        }
        absorb(engine.peerConnected(peer, indexID: hello.indexID))
        if unsavedPeers[peer] == nil { unsavedPeers[peer] = [] }  // its index ID, at the next write
        inSync = false
        logger.info("peer connected", metadata: ["peer.id": "\(peer.short)", "peer.name": "\(session.peerName)", "peer.address": "\(session.address)"])
        out.append(.emit(.peerConnected(peer, name: session.peerName)))
        out.append(.send(c, .indexRequest(engine.indexRequest(for: peer))))
    }

    private mutating func closed(_ c: ConnectionID, reason: String) {
        guard let session = sessions.removeValue(forKey: c) else { return }
        out.append(.cancelTimer(.handshake(c)))
        var drained = session
        for fetch in drained.drainFetches() {
            fetches[fetch] = nil
            out.append(.deliver(fetch, nil, from: session.peer))
        }
        if let peer = session.peer, links[peer] == c {
            links[peer] = nil
            engine.peerDisconnected(peer)
            logger.info("peer disconnected", metadata: ["peer.id": "\(peer.short)", "reason": "\(reason)"])
            out.append(.emit(.peerDisconnected(peer, reason: reason)))
            // Endpoints left idle because this link existed are dialed again.
            for (endpoint, d) in dialers where !d.busy && (endpointPeers[endpoint] ?? d.expected) == peer {
                redialLater(endpoint, resetDelay: true)
            }
        }
        if let endpoint = session.dialed, dialers[endpoint] != nil {
            redialLater(endpoint, resetDelay: session.phase == .established)
        }
    }

    // MARK: index exchange

    /// Sends the next index update on `c` if one is ready and none is in flight.
    private mutating func pumpIndex(_ c: ConnectionID) {
        guard sessions[c] != nil else { return }
        let local = engine.local
        let engine = self.engine
        let batch = sessions[c]!.nextIndexBatch(indexID: settings.indexID, read: { keys in
            keys.compactMap { key in local[key.path].flatMap { $0.sequence == key.sequence ? $0 : nil } }
        }, readRange: { after, through, peer in
            engine.backlogBatch(after: after, through: through, for: peer, limit: 1000)
        })
        if let batch { out.append(.send(c, .indexUpdate(batch))) }
    }

    /// Takes records a peer sent: every path is judged here, once, as bytes (`PathSafety`);
    /// what is refused never reaches the engine, and is logged and reported as an event.
    private mutating func receivedIndex(_ update: WireMessage.IndexUpdate, on c: ConnectionID) {
        let session = sessions[c]!
        let peer = session.peer!
        var accepted = [FileRecord]()
        accepted.reserveCapacity(update.records.count)
        for bad in update.refused { refuse(bad.path, bad.reason, from: session) }
        for r in update.records {
            if let problem = PathSafety.problem(with: r.path) ?? reservedProblem(r.path) {
                refuse(r.path, problem, from: session)
                continue
            }
            if ignore.isIgnored(r.path, isDirectory: r.kind == .directory) { continue }
            accepted.append(r)
        }
        sessions[c]!.recordsReceived += update.records.count
        if update.caughtUp && !session.catchUpLogged {
            // How much of its index a peer sent before we held all of it: after a restart of
            // either side only what changed meanwhile, never the whole index again.
            sessions[c]!.catchUpLogged = true
            logger.info("peer's index received", metadata: ["peer.id": "\(peer.short)", "records": "\(sessions[c]!.recordsReceived)"])
        }
        let hadFailures = !engine.failed.isEmpty
        let decided = engine.peerIndex(peer, records: accepted, caughtUp: update.caughtUp)
        // Kept in the index too, so that a restart asks this peer only for what changed.
        unsavedPeers[peer, default: []].formUnion(accepted.lazy.map(\.path))
        if !accepted.isEmpty { scheduleFlush() }
        absorb(decided)
        if hadFailures && update.caughtUp { absorb(engine.retryFailed()) }
    }

    private mutating func refuse(_ path: String, _ problem: String, from session: PeerSession) {
        logger.warning("refused a record from a peer", metadata: [
            "peer.id": "\(session.peer?.short ?? "?")", "peer.address": "\(session.address)",
            "sync.path": "\(path.debugDescription)", "reason": "\(problem)"])
        out.append(.emit(.refused(path: path, peer: session.peer!, reason: problem)))
    }

    /// Why `path` may not be synced although it is well formed: it lies in a state directory
    /// configured inside the folder.
    private func reservedProblem(_ path: String) -> String? {
        for r in reservedPaths where path == r || path.utf8.starts(with: (r + "/").utf8) { return "the state directory" }
        return nil
    }

    // MARK: the engine's output

    /// Carries out what the engine decided, except starting jobs (`schedule` does that once per
    /// input): stores the changed records, sends them, reports events.
    private mutating func absorb(_ decided: SyncEngine.Output) {
        // No sequence number leaves this node before the reservation on disk covers it: a crash
        // then never hands the same number out twice.
        if engine.sequence > reservedSequence {
            reservedSequence = engine.sequence + 100_000
            out.append(.reserveSequences(through: reservedSequence))
        }
        let changed = decided.persist + decided.persistQuietly
        if !changed.isEmpty {
            for r in changed {
                blockMap.update(r)
                unsaved[r.path] = r
                ownLists.remember(RecentLists.base(r), for: r.path)
            }
            scheduleFlush()
        }
        // A version this node made (a local edit) is written to its index before any peer hears
        // of it: otherwise a crash could leave peers holding a version the node forgot, and a
        // user's delete of that file while the node was down would leave no trace here (found by
        // the simulation). Pulled records need not wait: their intents cover them.
        if decided.events.contains(where: { if case .localChange = $0 { true } else { false } }) { flush() }
        if !decided.persist.isEmpty {
            for (peer, c) in links.sorted(by: { $0.key < $1.key }) where sessions[c]?.indexRequested == true {
                // No echo: a peer that already holds this exact version (typically the one it
                // was pulled from) does not need it back. A 512 MiB file's record is 300 KB.
                let known = engine.peers[peer]?.records
                let native = sessions[c]!.speaksSyncKit
                let news = native ? decided.persist.filter { known?[$0.path]?.version != $0.version } : decided.persist
                guard !news.isEmpty else { continue }
                // The peer's own lists of large files: bases for block-list deltas.
                var peerHas = [String: [BlockRef]]()
                for r in news where r.blocks.count >= WireMessage.BlockDelta.minimumBlocks {
                    if let theirs = known?[r.path], !theirs.deleted { peerHas[r.path] = theirs.blocks }
                }
                sessions[c]!.enqueue(news, peerHas: peerHas)
                pumpIndex(c)
            }
        }
        for e in decided.events {
            if case .conflict(let path, let copy) = e {
                statistics.conflicts += 1
                statistics.lastConflictCopies = Array((statistics.lastConflictCopies + [copy]).suffix(20))
                logger.notice("conflict resolved; the other version is kept", metadata: ["sync.path": "\(path)", "sync.copy": "\(copy)"])
            }
            out.append(.emit(e))
        }
    }

    /// Starts the jobs the engine has room for. A path whose turn came but needs no disk change
    /// any more gives a record to store, which is absorbed, and the loop goes on.
    private mutating func schedule() {
        while true {
            var decided = SyncEngine.Output()
            let jobs = engine.nextJobs(into: &decided)
            for var job in jobs {
                var locals: [BlockHash: [BlockMap.Location]] = [:]
                if job.operation == .writeFile {
                    for block in job.target.blocks where locals[block.hash] == nil {
                        let l = blockMap.locations(of: block.hash)
                        if !l.isEmpty { locals[block.hash] = l }
                    }
                    // A file whose content a file of ours holds from its first byte, and that
                    // file is to be deleted: the engine may let the job move it instead (a
                    // rename or a moved directory on a peer). The block map keeps a few places
                    // per hash.
                    if let first = job.target.blocks.first, let places = locals[first.hash] {
                        engine.attachMoveSource(to: &job, candidates: places.filter { $0.offset == 0 }.map(\.path))
                    }
                }
                out.append(.startJob(job, locals: locals))
            }
            if decided.persist.isEmpty && decided.persistQuietly.isEmpty && decided.events.isEmpty { return }
            absorb(decided)
        }
    }

    private mutating func jobFinished(_ job: PullJob, _ outcome: PullOutcome, _ stats: PullStats) {
        statistics.bytesFromNetwork += stats.bytesFromNetwork
        statistics.bytesReused += stats.bytesReused
        if outcome.reached != nil, job.operation == .writeFile { statistics.filesPulled += 1 }
        switch outcome {
        case .applied:
            logger.debug("pulled", metadata: ["sync.path": "\(job.path)", "sync.op": "\(job.operation)", "bytes.network": "\(stats.bytesFromNetwork)", "bytes.local": "\(stats.bytesReused)"])
        case .moved:
            statistics.filesMoved += 1
            logger.debug("moved into place", metadata: ["sync.path": "\(job.path)", "sync.from": "\(job.renameFrom?.from.path ?? "?")"])
        case .localChanged:
            logger.info("local file changed during the pull; deciding again", metadata: ["sync.path": "\(job.path)"])
        case .unavailable:
            logger.debug("content not available from any peer yet", metadata: ["sync.path": "\(job.path)"])
        case .failed(let why):
            logger.warning("pull failed", metadata: ["sync.path": "\(job.path)", "error": "\(why)"])
            noteError("\(job.path): \(why)")
        }
        if job.operation == .writeFile {
            // A move does not use the temp file an earlier, interrupted pull of the path left:
            // removed now rather than at the next start.
            if case .moved = outcome, interruptedPulls.contains(job.path) { out.append(.removeTemp(path: job.path)) }
            if outcome.reached != nil { interruptedPulls.remove(job.path) } else { interruptedPulls.insert(job.path) }
        }
        let decided = engine.jobFinished(job, outcome: outcome)
        if outcome == .localChanged {
            pendingScan.insert(job.path)
            // A move found its source changed, or something at its target: both looked at.
            if let source = job.renameFrom?.from { pendingScan.insert(source.path) }
        }
        if let copy = job.conflictCopyPath, case .applied = outcome { pendingScan.insert(copy) }
        // Applied, but the disk does not hold it under its name (removed right after it landed,
        // or written under its case-conflict name on a case-insensitive file system): look
        // again, so that the path's absence becomes a change of this node's at once.
        if let r = outcome.reached, r.inode == 0, !r.deleted { pendingScan.insert(job.path) }
        absorb(decided)
        armDebounce()
    }

    // MARK: blocks

    /// Asks the least busy peer that holds the target's content for a block (peers that
    /// connected or sent their index after the job started count too). Nobody: the job hears
    /// "nil" at once, and fails as unavailable if no other source has it.
    private mutating func needBlock(_ fetch: FetchID, target: FileRecord, block: BlockRef, offset: UInt64, excluding: Set<NodeID>) {
        var best: (peer: NodeID, c: ConnectionID, load: Int)?
        for (peer, c) in links where !excluding.contains(peer) {
            // The version first (equal versions are the common case and cheap), the hashes of
            // a large file only when it differs.
            guard let s = sessions[c], let r = engine.peers[peer]?.records[target.path],
                  r.version == target.version && r.blocks == target.blocks || r.hasSameContent(as: target) else { continue }
            let load = s.outstandingBytes
            if best == nil || load < best!.load || (load == best!.load && peer < best!.peer) { best = (peer, c, load) }
        }
        guard let best else {
            out.append(.deliver(fetch, nil, from: nil))
            return
        }
        fetches[fetch] = best.c
        if let message = sessions[best.c]!.request(
            fetch, hash: block.hash, size: block.size, path: target.path, offset: offset,
            budget: config.requestBudgetPerPeer, now: now, timeout: config.requestTimeout) {
            out.append(.send(best.c, message))
        }
        if sweepAt == nil {
            sweepAt = now + config.requestTimeout
            out.append(.setTimer(.requestSweep, at: sweepAt!))
        }
    }

    /// Fails the block requests whose answer is overdue: a peer that keeps the link alive but
    /// never answers must not stall a pull.
    private mutating func sweepRequests() {
        sweepAt = nil
        var next: Duration?
        for c in sessions.keys.sorted() {
            let (expired, admitted) = sessions[c]!.expire(now: now, budget: config.requestBudgetPerPeer, timeout: config.requestTimeout)
            for m in admitted { out.append(.send(c, m)) }
            for fetch in expired {
                fetches[fetch] = nil
                out.append(.deliver(fetch, nil, from: sessions[c]!.peer))
            }
            if let d = sessions[c]!.nextDeadline { next = min(next ?? d, d) }
        }
        if let next {
            sweepAt = next
            out.append(.setTimer(.requestSweep, at: next))
        }
    }

    /// Where a requested block can be read here: the hinted place if this node's index agrees,
    /// else any local file that has it; never a path the request names on its own.
    func locate(_ request: WireMessage.BlockRequest) -> BlockMap.Location? {
        let places = blockMap.locations(of: request.hash)
        let place = places.first { $0.path == request.path && $0.offset == request.offset } ?? places.first
        return place?.size == request.size ? place : nil
    }

    // MARK: the index on disk

    /// Group commit of the index: records changed within `flushDelay` are written in one
    /// transaction (20,000 pulled files cost a few dozen commits, not 20,000).
    private mutating func scheduleFlush() {
        if unsaved.count + unsavedPeers.values.reduce(0, { $0 + $1.count }) >= 2000 {
            flush()
            return
        }
        guard !flushArmed, !stopping else { return }
        flushArmed = true
        out.append(.setTimer(.flushIndex, at: now + .milliseconds(100)))
    }

    private mutating func flush() {
        if flushArmed {
            flushArmed = false
            out.append(.cancelTimer(.flushIndex))
        }
        guard !unsaved.isEmpty || !unsavedPeers.isEmpty || !forgottenPeers.isEmpty else { return }
        var changes = IndexChanges()
        changes.records = unsaved.values.sorted { $0.sequence < $1.sequence }
        unsaved.removeAll(keepingCapacity: true)
        changes.forgottenPeers = forgottenPeers
        forgottenPeers.removeAll()
        for (peer, paths) in unsavedPeers {
            guard let index = engine.peers[peer] else { continue }
            changes.peerRecords[peer] = paths.compactMap { index.records[$0] }
            changes.peerState[peer] = PeerIndexState(indexID: index.indexID, maxSequence: index.maxSequence)
        }
        unsavedPeers.removeAll(keepingCapacity: true)
        out.append(.persist(changes))
    }

    private mutating func noteError(_ text: String) {
        statistics.recentErrors = Array((statistics.recentErrors + [text]).suffix(10))
    }

    // MARK: in sync

    /// In sync: the first scan is done, nothing is pending, running, failed or waiting to be
    /// scanned, and every connected peer has sent its whole index.
    private mutating func checkInSync() {
        let now = firstScanDone && !stopping && engine.isIdle && pendingScan.isEmpty && scanning == nil && !debounceArmed
            && links.keys.allSatisfy { engine.peers[$0]?.caughtUp == true }
        if now && !inSync {
            if !tempsCleaned {
                tempsCleaned = true
                out.append(.cleanStaleTemps)
            }
            // Temp files of pulls that failed and were then settled otherwise.
            for path in interruptedPulls.sorted() where engine.running[path] == nil { out.append(.removeTemp(path: path)) }
            interruptedPulls.removeAll()
            out.append(.emit(.inSync))
        }
        inSync = now
    }

    // MARK: views for the shell

    /// A connected peer, for status.
    public struct ConnectedPeer: Sendable {
        public var id: NodeID
        public var name: String
        public var address: String
        public var connection: ConnectionID
        public var bytesReceived: Int
        public var caughtUp: Bool
    }

    /// How many peers are connected now.
    public var peerCount: Int { links.count }

    /// The peers connected now.
    public var connectedPeers: [ConnectedPeer] {
        links.sorted { $0.key < $1.key }.compactMap { peer, c in
            sessions[c].map { ConnectedPeer(id: peer, name: $0.peerName, address: $0.address, connection: c, bytesReceived: $0.bytesReceived, caughtUp: engine.peers[peer]?.caughtUp ?? false) }
        }
    }

    /// The peer behind a connection, once its handshake is done.
    public func peer(of c: ConnectionID) -> NodeID? { sessions[c]?.peer }
}

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014):
/// a small, good, seedable generator for jitter that a simulation replays exactly.
struct SplitMix64: Sendable {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
