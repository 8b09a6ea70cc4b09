import Foundation
import HeapModule
import Logging
import NIOCore
import SyncKit

/// A whole cluster in one thread, from one seed (the anchors: FoundationDB's simulation testing,
/// TigerBeetle's VOPR): real nodes, that is, each node's `NodeMachine` with its `SyncEngine` and
/// `PeerSession`s, the real wire codec, and an `InMemoryFolder` applying real jobs, over a
/// simulated network (delays, resets, partitions), disks that survive crashes, and a clock that
/// jumps from one event to the next. Nothing else runs: the same seed replays exactly (run
/// with `SWIFT_DETERMINISTIC_HASHING=1`, so that dictionaries iterate alike too).
///
/// This file is the machinery (events, network, nodes, crashes); `Workload` drives it with user
/// operations and `SimulationInvariants` checks the outcome.
public final class SimulatedCluster: @unchecked Sendable {
    /// The knobs of one run.
    public struct Options: Sendable {
        public var nodes = 4
        /// Network delay of one message, in milliseconds (each message picks one).
        public var delay: ClosedRange<Int> = 1...25
        /// Chance that sending a message resets its connection (a lost packet, as a stream sees it).
        public var resetChance = 0.002
        /// Chance that a watcher event is lost (the periodic rescan must find the change).
        public var missedEventChance = 0.05
        /// Set, each node's tables move to a spill file (`SpillStore`, in the temp directory)
        /// past this many entries, so the run exercises the spilled index, peers' indexes,
        /// block map and queue with folders of a few files.
        public var spillLimit: Int?
        public init() {}
    }

    // MARK: events

    enum Event {
        case input(node: Int, incarnation: Int, NodeInput)
        case timer(node: Int, incarnation: Int, TimerID, generation: UInt64)
        case action(() -> Void)
    }

    struct Scheduled: Comparable {
        var at: Duration
        var order: UInt64
        var event: Event
        static func < (a: Scheduled, b: Scheduled) -> Bool { (a.at, a.order) < (b.at, b.order) }
        static func == (a: Scheduled, b: Scheduled) -> Bool { a.at == b.at && a.order == b.order }
    }

    public let seed: UInt64
    public let options: Options
    public private(set) var now: Duration = .zero
    var random: SimulationRandom
    private var queue = Heap<Scheduled>()
    private var order: UInt64 = 0
    let executor = SimulationExecutor()
    public private(set) var nodes: [Node] = []
    /// Pairs of nodes whose network is cut.
    private var cuts: Set<[Int]> = []
    /// A short trace of what happened, printed when a seed fails.
    public private(set) var trace: [String] = []
    /// Problems seen while running (a machine handed a directive it should not have...).
    public private(set) var anomalies: [String] = []

    public init(seed: UInt64, options: Options = Options()) {
        self.seed = seed
        self.options = options
        random = SimulationRandom(seed: seed)
        for i in 0..<options.nodes { nodes.append(Node(index: i, cluster: self)) }
    }

    /// Schedules `event` at `at` (ties run in the order they were scheduled).
    func schedule(_ event: Event, at: Duration) {
        order += 1
        queue.insert(Scheduled(at: max(at, now), order: order, event: event))
    }

    /// Runs an action at `at` (user operations, crashes, cuts...).
    public func at(_ at: Duration, _ action: @escaping () -> Void) {
        schedule(.action(action), at: at)
    }

    /// Runs events until `until` (simulated time) or until nothing is left.
    public func run(until: Duration) {
        while let next = queue.min, next.at <= until {
            _ = queue.removeMin()
            now = next.at
            switch next.event {
            case .input(let n, let incarnation, let input): nodes[n].handle(input, incarnation: incarnation)
            case .timer(let n, let incarnation, let id, let generation): nodes[n].fire(id, incarnation: incarnation, generation: generation)
            case .action(let action): action()
            }
            executor.runUntilIdle()
        }
        now = max(now, until)
    }

    func note(_ line: String) {
        trace.append("\(now.milliseconds)ms \(line)")
        if trace.count > 4000 { trace.removeFirst(1000) }
    }

    func anomaly(_ line: String) {
        anomalies.append("\(now.milliseconds)ms \(line)")
    }

    // MARK: network

    /// Whether the network between two nodes is cut now.
    public func isCut(_ a: Int, _ b: Int) -> Bool { cuts.contains([min(a, b), max(a, b)]) }

    /// Cuts the network between two nodes: their connections reset, and dials fail until `heal`.
    public func cut(_ a: Int, _ b: Int) {
        guard a != b else { return }
        note("cut n\(a) n\(b)")
        cuts.insert([min(a, b), max(a, b)])
        nodes[a].resetLinks(to: b, reason: "network cut")
        nodes[b].resetLinks(to: a, reason: "network cut")
    }

    public func heal(_ a: Int, _ b: Int) {
        note("heal n\(a) n\(b)")
        cuts.remove([min(a, b), max(a, b)])
    }

    public func healAll() {
        note("heal all")
        cuts.removeAll()
    }

    /// A delay for one message.
    func messageDelay() -> Duration { .milliseconds(random.int(in: options.delay)) }

    /// The node listening on `port` (the simulated address book).
    func node(atPort port: Int) -> Node? {
        let i = port - 1000
        return nodes.indices.contains(i) ? nodes[i] : nil
    }

    // MARK: one node

    /// One node: its disk and index (they outlive crashes), and its running incarnation.
    public final class Node: @unchecked Sendable {
        public let index: Int
        public let id: NodeID
        public let name: String
        public let disk = InMemoryDisk()
        public let store: InMemoryIndex
        public var port: Int { 1000 + index }
        unowned let cluster: SimulatedCluster
        public private(set) var running: Incarnation?
        private var incarnations = 0
        /// Every event any incarnation reported (the invariants read them).
        public private(set) var events: [SyncEvent] = []

        init(index: Int, cluster: SimulatedCluster) {
            self.index = index
            self.cluster = cluster
            var bytes = [UInt8](repeating: 0, count: 32)
            bytes[0] = UInt8(index + 1)
            bytes[31] = UInt8(truncatingIfNeeded: cluster.seed)
            id = NodeID(bytes: bytes)
            name = "n\(index)"
            store = InMemoryIndex(indexID: UInt64(index + 1) &* 0x9E37_79B9)
        }

        public var isUp: Bool { running != nil }

        /// One life of the node, from start to crash or stop.
        public final class Incarnation: @unchecked Sendable {
            public let number: Int
            public var machine: NodeMachine
            let folder: InMemoryFolder
            var timers: [TimerID: UInt64] = [:]
            var timerGeneration: UInt64 = 0
            var links: [ConnectionID: Link] = [:]
            var nextConnection: UInt64 = 1
            var nextFetch: UInt64 = 1
            var fetchWaiters: [FetchID: CheckedContinuation<(ByteBuffer?, NodeID?), Never>] = [:]
            var ready = false

            init(number: Int, machine: NodeMachine, folder: InMemoryFolder) {
                self.number = number
                self.machine = machine
                self.folder = folder
            }
        }

        /// This side of a connection: where it leads, and when its last message arrives there
        /// (a stream delivers in order).
        struct Link {
            var peer: Int
            var peerIncarnation: Int
            var peerConnection: ConnectionID
            var lastArrival: Duration
            var closed = false
        }

        /// The configuration of simulated nodes: the production defaults, with the slow timers
        /// shortened so that a run covers many of their periods.
        static func configuration(_ name: String) -> SyncConfiguration {
            var c = SyncConfiguration(folder: "/sim/\(name)")
            c.name = name
            c.clusterName = "sim"
            c.clusterKey = ClusterKey(secret: "simulation")
            c.rescanInterval = .seconds(5)
            c.retryInterval = .milliseconds(500)
            c.pingInterval = .seconds(2)
            c.deadPeerTimeout = .seconds(6)
            c.maxRedialDelay = .seconds(2)
            c.handshakeTimeout = .seconds(2)
            c.requestTimeout = .seconds(3)
            return c
        }

        /// Starts a new incarnation from what is on its disk and in its index.
        public func start() {
            guard running == nil else { return }
            incarnations += 1
            cluster.note("start n\(index) (#\(incarnations))")
            let folder = InMemoryFolder(disk: disk, index: store, me: id)
            var configuration = Self.configuration(name)
            var spill: SpillStore?
            if let limit = cluster.options.spillLimit {
                configuration.memoryRecordLimit = limit
                spill = try? SpillStore(path: NSTemporaryDirectory() + "/synckit-sim-\(UUID().uuidString).db", cacheKiB: 256)
                if spill == nil { cluster.anomaly("n\(index): cannot make a spill file") }
            }
            let settings = NodeMachine.Settings(me: id, name: name, indexID: store.indexID, configuration: configuration, seed: cluster.random.next())
            var logger = Logger(label: name) { _ in SwiftLogNoOpLogHandler() }
            logger.logLevel = .critical
            let intents = (try? store.loadIntents()) ?? []
            let machine = NodeMachine(
                settings: settings, policy: NewestWinsPolicy(), records: (try? store.loadAll()) ?? [], peers: (try? store.loadPeers()) ?? [],
                intents: intents, landed: folder.landed(intents), reservedSequence: store.reservedSequence, ignoreText: folder.readIgnoreFile(), spill: spill, logger: logger)
            let life = Incarnation(number: incarnations, machine: machine, folder: folder)
            running = life
            cluster.schedule(.input(node: index, incarnation: life.number, .start(port: port)), at: cluster.now)
        }

        /// Kills the node: whatever it did not write is lost, its connections reset.
        public func crash() {
            guard let life = running else { return }
            cluster.note("crash n\(index)")
            life.folder.kill()
            running = nil
            for (c, _) in life.links { dropLink(life, c, reason: "peer crashed", local: false) }
            // Jobs waiting for blocks wake up, find the folder dead, and change nothing.
            for (_, waiter) in life.fetchWaiters { waiter.resume(returning: (nil, nil)) }
            life.fetchWaiters.removeAll()
            cluster.executor.runUntilIdle()
        }

        /// Stops the node the way SIGTERM does: goodbyes and a last index write, then down.
        public func stop() {
            guard let life = running else { return }
            cluster.note("stop n\(index)")
            handle(.stop, incarnation: life.number)
            cluster.at(cluster.now + .milliseconds(50)) { [self] in
                guard running === life else { return }
                crash()
            }
        }

        // MARK: inputs and directives

        func handle(_ input: NodeInput, incarnation: Int) {
            guard let life = running, life.number == incarnation else { return }
            let directives = life.machine.handle(input, now: cluster.now)
            for d in directives { perform(d, life) }
        }

        func fire(_ id: TimerID, incarnation: Int, generation: UInt64) {
            guard let life = running, life.number == incarnation, life.timers[id] == generation else { return }
            life.timers[id] = nil
            handle(.timer(id), incarnation: incarnation)
        }

        private func post(_ input: NodeInput, _ life: Incarnation, after delay: Duration = .zero) {
            cluster.schedule(.input(node: index, incarnation: life.number, input), at: cluster.now + delay)
        }

        private func perform(_ directive: Directive, _ life: Incarnation) {
            switch directive {
            case .send(let c, let message):
                send(message, on: c, life)
            case .close(let c, let reason):
                dropLink(life, c, reason: reason, local: true)
            case .dial(let endpoint):
                dial(endpoint, life)
            case .setTimer(let id, let at):
                life.timerGeneration += 1
                life.timers[id] = life.timerGeneration
                cluster.schedule(.timer(node: index, incarnation: life.number, id, generation: life.timerGeneration), at: at)
            case .cancelTimer(let id):
                life.timers[id] = nil
            case .scan(let request, let known):
                let folder = life.folder
                let ignore = life.machine.ignore
                let result = cluster.executor.run { await folder.scan(request, known: known, ignore: ignore) }
                post(.scanned(result), life, after: .milliseconds(1))
            case .loadIgnoreRules:
                post(.ignoreRulesLoaded(life.folder.readIgnoreFile()), life)
            case .startJob(let job, let locals):
                let folder = life.folder
                let source = SimulatedBlockSource(node: self, life: life)
                let number = life.number
                let cluster = self.cluster
                let index = self.index
                Task(executorPreference: cluster.executor) {
                    let (outcome, stats) = await folder.apply(job, locals: locals, blocks: source)
                    cluster.schedule(.input(node: index, incarnation: number, .jobFinished(job, outcome, stats)), at: cluster.now)
                }
            case .deliver(let fetch, let data, let peer):
                life.fetchWaiters.removeValue(forKey: fetch)?.resume(returning: (data, peer))
            case .serve(let c, let request, let location):
                var response = WireMessage.BlockResponse(id: request.id, status: .notFound, data: ByteBuffer())
                if let location, let data = life.folder.readBlock(location) {
                    response.status = .ok
                    response.data = data
                }
                send(.blockResponse(response), on: c, life)
                post(.served(c, count: 1), life)
            case .persist(let changes):
                try? store.save(changes)
            case .reserveSequences(let through):
                try? store.reserveSequences(through: through)
            case .clearIntents:
                try? store.clearIntents()
            case .removeTemp, .cleanStaleTemps, .watch:
                break  // no temp files to clean; the workload reports changes itself (`notice`)
            case .ready:
                life.ready = true
                // Static discovery of every other node.
                for other in cluster.nodes where other.index != index {
                    post(.discovered(.found(PeerEndpoint(host: "sim", port: other.port))), life, after: .milliseconds(1))
                }
            case .emit(let event):
                events.append(event)
                if case .localChange(let path, let deleted) = event { cluster.note("n\(index) local \(deleted ? "delete" : "change") \(path)") }
            }
        }

        /// Sends a message through the wire codec (as a real connection would) to the other end.
        private func send(_ message: WireMessage, on c: ConnectionID, _ life: Incarnation) {
            guard var link = life.links[c], !link.closed else { return }
            if cluster.random.chance(cluster.options.resetChance) {
                dropLink(life, c, reason: "connection reset", local: true)
                return
            }
            let frame = WireCodec.encode(message)
            let decoded: WireMessage
            do { decoded = try WireCodec.decode(frame) } catch {
                cluster.anomaly("n\(index) sent a message that does not decode: \(error)")
                return
            }
            let arrival = max(cluster.now + cluster.messageDelay(), link.lastArrival)
            link.lastArrival = arrival
            life.links[c] = link
            cluster.schedule(.input(node: link.peer, incarnation: link.peerIncarnation, .received(link.peerConnection, decoded, wireSize: frame.wireSize)), at: arrival)
            if case .indexUpdate = message { post(.indexBatchSent(c), life) }
        }

        private func dial(_ endpoint: PeerEndpoint, _ life: Incarnation) {
            guard let target = cluster.node(atPort: endpoint.port), let theirs = target.running, theirs.ready, !cluster.isCut(index, target.index) else {
                post(.dialFailed(endpoint, reason: "connection refused"), life, after: .milliseconds(2))
                return
            }
            let mine = ConnectionID(life.nextConnection)
            life.nextConnection += 1
            let their = ConnectionID(theirs.nextConnection)
            theirs.nextConnection += 1
            let delay = cluster.messageDelay()
            life.links[mine] = Link(peer: target.index, peerIncarnation: theirs.number, peerConnection: their, lastArrival: cluster.now + delay)
            theirs.links[their] = Link(peer: index, peerIncarnation: life.number, peerConnection: mine, lastArrival: cluster.now + delay)
            cluster.note("connect n\(index) -> n\(target.index)")
            post(.connectionOpened(mine, address: "n\(target.index)", dialed: endpoint, nonce: cluster.random.bytes(32)), life, after: delay)
            cluster.schedule(.input(node: target.index, incarnation: theirs.number, .connectionOpened(their, address: "n\(index)", dialed: nil, nonce: cluster.random.bytes(32))), at: cluster.now + delay)
        }

        /// Ends a connection on both sides (this side at once, the other after a delay).
        func dropLink(_ life: Incarnation, _ c: ConnectionID, reason: String, local: Bool) {
            guard let link = life.links[c], !link.closed else { return }
            life.links[c]!.closed = true
            if local { post(.connectionClosed(c, reason: reason), life) }
            let peer = cluster.nodes[link.peer]
            if let theirs = peer.running, theirs.number == link.peerIncarnation, theirs.links[link.peerConnection]?.closed == false {
                theirs.links[link.peerConnection]!.closed = true
                cluster.schedule(.input(node: peer.index, incarnation: theirs.number, .connectionClosed(link.peerConnection, reason: reason)),
                                 at: max(cluster.now + cluster.messageDelay(), link.lastArrival))
            }
        }

        /// Resets every connection to node `other`.
        func resetLinks(to other: Int, reason: String) {
            guard let life = running else { return }
            for (c, link) in life.links where link.peer == other && !link.closed { dropLink(life, c, reason: reason, local: true) }
        }

        /// Registers a job's wait for a block and asks the machine (see `SimulatedBlockSource`).
        func requestBlock(_ life: Incarnation, _ block: BlockRef, offset: UInt64, of target: FileRecord, excluding: Set<NodeID>,
                          _ continuation: CheckedContinuation<(ByteBuffer?, NodeID?), Never>) {
            guard running === life else {
                continuation.resume(returning: (nil, nil))
                return
            }
            let fetch = FetchID(life.nextFetch)
            life.nextFetch += 1
            life.fetchWaiters[fetch] = continuation
            post(.needBlock(fetch, target: target, block: block, offset: offset, excluding: excluding), life)
        }

        // MARK: what a user does on this node

        /// Tells the running node's watcher about changed paths (unless the event is lost).
        public func notice(_ paths: Set<String>) {
            guard let life = running else { return }
            if cluster.random.chance(cluster.options.missedEventChance) {
                cluster.note("n\(index) watcher missed \(paths.sorted())")
                return
            }
            post(.folderChanged(paths), life, after: .milliseconds(3))
        }
    }
}

/// The block source of a simulated node's jobs: asks the node's machine, checks the answer, asks
/// the next peer on a wrong or missing one (as `NodeBlockSource` does for a real node).
struct SimulatedBlockSource: BlockSource, @unchecked Sendable {
    let node: SimulatedCluster.Node
    let life: SimulatedCluster.Node.Incarnation

    func fetch(_ block: BlockRef, offset: UInt64, of target: FileRecord) async -> ByteBuffer? {
        var tried = Set<NodeID>()
        while true {
            let (data, peer) = await withCheckedContinuation { continuation in
                node.requestBlock(life, block, offset: offset, of: target, excluding: tried, continuation)
            }
            if let data, data.readableBytes == Int(block.size), data.withUnsafeReadableBytes({ Chunker.hash($0) }) == block.hash {
                return data
            }
            guard let peer else { return nil }
            tried.insert(peer)
        }
    }
}

/// The simulation's random numbers: SplitMix64 from the seed, so a run replays exactly.
struct SimulationRandom {
    private var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x1234_5678 }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func int(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }

    mutating func chance(_ p: Double) -> Bool { Double(next() % 1_000_000) / 1_000_000 < p }

    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }

    mutating func pick<T>(_ items: [T]) -> T? { items.isEmpty ? nil : items[int(in: 0...(items.count - 1))] }
}

extension Duration {
    /// Whole milliseconds (for traces).
    public var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
