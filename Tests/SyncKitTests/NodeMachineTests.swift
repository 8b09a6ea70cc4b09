import Foundation
import Logging
import NIOCore
import Testing
@testable import SyncKit

/// The node's decisions, without any I/O: each test feeds a `NodeMachine` inputs and looks at the
/// directives it returns.
@Suite struct NodeMachineTests {
    static let key = ClusterKey(secret: "k")

    /// A machine and its clock, with helpers to connect fake peers.
    struct Harness {
        var machine: NodeMachine
        var now: Duration = .zero
        var nextConnection: UInt64 = 1

        init(me: NodeID = TestIDs.a, records: [FileRecord] = [], ignore: String = "") {
            var config = SyncConfiguration(folder: "/nonexistent/folder")
            config.clusterName = "c"
            config.clusterKey = NodeMachineTests.key
            let logger = Logger(label: "machine") { _ in SwiftLogNoOpLogHandler() }
            machine = NodeMachine(settings: .init(me: me, name: "me", indexID: 11, configuration: config, seed: 1), policy: NewestWinsPolicy(),
                                  records: records, peers: [], intents: [], reservedSequence: 0, ignoreText: ignore, logger: logger)
        }

        /// Hands `input` to the machine; index updates it sends are reported written at once (as
        /// a shell with an idle connection would), and what that lets through is returned too.
        mutating func handle(_ input: NodeInput) -> [Directive] {
            var all = [Directive]()
            var inputs = [input]
            while !inputs.isEmpty {
                let out = machine.handle(inputs.removeFirst(), now: now)
                all += out
                for case .send(let c, .indexUpdate) in out { inputs.append(.indexBatchSent(c)) }
            }
            return all
        }

        /// Starts the node and finishes its first scan (of `records`).
        mutating func start(scanned observations: [SyncEngine.Observation] = []) {
            _ = handle(.start(port: 22000))
            _ = handle(.scanned(ScanResult(request: .full, observations: observations, known: machine.engine.local)))
        }

        /// Connects `peer` (dialed by us when `dialed`), runs the handshake, and answers our index
        /// request with `records`. Returns the connection.
        @discardableResult
        mutating func connect(_ peer: NodeID, dialed: Bool = true, records: [FileRecord] = [], askIndex: Bool = true) -> ConnectionID {
            let c = ConnectionID(nextConnection)
            nextConnection += 1
            var theirs = PeerSession(connection: c, address: "peer", dialed: nil, nonce: ClusterKey.nonce(), now: now)
            let opened = handle(.connectionOpened(c, address: "peer", dialed: dialed ? PeerEndpoint(host: "peer", port: Int(c.raw)) : nil, nonce: ClusterKey.nonce()))
            guard case .send(_, let ourHello)? = opened.first(where: { if case .send = $0 { true } else { false } }) else { fatalError("no hello") }
            let theirHello = theirs.ourHello(id: peer, name: "p", clusterName: "c", port: 1, indexID: 99)
            guard case .sendAuth(let theirAuth) = theirs.handshake(ourHello, me: peer, clusterName: "c", key: NodeMachineTests.key) else { fatalError("they refused") }
            let afterHello = handle(.received(c, theirHello, wireSize: 10))
            guard case .send(_, let ourAuth)? = afterHello.first(where: { if case .send = $0 { true } else { false } }),
                  theirs.handshake(ourAuth, me: peer, clusterName: "c", key: NodeMachineTests.key) == .established else { fatalError("no auth") }
            _ = handle(.received(c, theirAuth, wireSize: 10))
            _ = handle(.received(c, .indexUpdate(.init(indexID: 99, records: records, caughtUp: true)), wireSize: 100))
            if askIndex { _ = handle(.received(c, .indexRequest(.init(indexID: 0, since: 0)), wireSize: 10)) }
            return c
        }
    }

    static func sends(_ directives: [Directive]) -> [(ConnectionID, WireMessage)] {
        directives.compactMap { if case .send(let c, let m) = $0 { (c, m) } else { nil } }
    }

    static func updates(_ directives: [Directive], on c: ConnectionID) -> [FileRecord] {
        sends(directives).filter { $0.0 == c }.flatMap { (_, message) -> [FileRecord] in
            if case .indexUpdate(let u) = message { return u.records }
            return []
        }
    }

    @Test func recordsFromPeersAreJudgedOnReceiptAsBytes() {
        var h = Harness(ignore: "*.tmp")
        h.start()
        let c = h.connect(TestIDs.b)
        let bad = ["../x", ".synckit/index.db", "../\u{301}x", "cafe\u{301}.txt"]
        let records = (bad + ["skip.tmp", "fine.txt"]).enumerated().map { fileRecord($1, [1], by: TestIDs.b, sequence: UInt64($0 + 1)) }
        let out = h.handle(.received(c, .indexUpdate(.init(indexID: 99, records: records, caughtUp: true)), wireSize: 100))
        let refused = out.compactMap { if case .emit(.refused(let path, _, _)) = $0 { path } else { nil } }
        #expect(Set(refused) == Set(bad))
        #expect(Set(h.machine.engine.peers[TestIDs.b]?.records.paths ?? []) == ["fine.txt"], "ignored and refused records never reach the engine")
    }

    @Test func twoLinksToOnePeerKeepTheOneDialedByTheLowerID() {
        // A < B: A keeps the link A dialed.
        var h = Harness(me: TestIDs.a)
        h.start()
        let inbound = h.connect(TestIDs.b, dialed: false)
        let outbound = h.connect(TestIDs.b, dialed: true)
        #expect(h.machine.connectedPeers.first?.connection == outbound)
        _ = inbound
        // B's view of the same two links: it keeps the one A dialed (inbound for B).
        var g = Harness(me: TestIDs.b)
        g.start()
        let fromA = g.connect(TestIDs.a, dialed: false)
        _ = g.connect(TestIDs.a, dialed: true)
        #expect(g.machine.connectedPeers.first?.connection == fromA)
    }

    @Test func aPulledRecordIsNotEchoedToThePeerItCameFrom() {
        var h = Harness()
        h.start()
        let theirs = fileRecord("f.txt", [1, 2, 3], by: TestIDs.b, sequence: 1)
        let b = h.connect(TestIDs.b, records: [theirs])
        let c = h.connect(TestIDs.c)
        var job = h.machine.engine.running["f.txt"]
        if job == nil {
            // Started during connect; find it through a fresh schedule.
            job = PullJob(operation: .writeFile, path: "f.txt", target: theirs, expectedLocal: nil, conflictCopyPath: nil)
        }
        var applied = theirs
        applied.inode = 5
        let out = h.handle(.jobFinished(job!, .applied(applied), PullStats()))
        #expect(Self.updates(out, on: b).isEmpty, "no echo to the source")
        #expect(Self.updates(out, on: c).map(\.path) == ["f.txt"], "the other peer gets it")
    }

    @Test func blocksAreAskedOfTheLeastBusyPeerThatHoldsTheContent() {
        var h = Harness()
        h.start()
        let content = [UInt8](repeating: 7, count: 100)
        let target = fileRecord("f.bin", content, by: TestIDs.b, sequence: 1)
        let b = h.connect(TestIDs.b, records: [target])
        let c = h.connect(TestIDs.c, records: [target])
        _ = h.connect(TestIDs.d, records: [])  // does not hold it
        let block = target.blocks[0]
        let first = Self.sends(h.handle(.needBlock(FetchID(1), target: target, block: block, offset: 0, excluding: [])))
        let second = Self.sends(h.handle(.needBlock(FetchID(2), target: target, block: block, offset: 0, excluding: [])))
        #expect(first.count == 1 && second.count == 1)
        #expect(Set([first[0].0, second[0].0]) == [b, c], "spread over both holders")
        let excluded = Self.sends(h.handle(.needBlock(FetchID(3), target: target, block: block, offset: 0, excluding: [TestIDs.b, TestIDs.c])))
        #expect(excluded.isEmpty)
        // Nobody left: the job hears "nil" at once.
        let none = h.handle(.needBlock(FetchID(4), target: target, block: block, offset: 0, excluding: [TestIDs.b, TestIDs.c]))
        #expect(none.contains { if case .deliver(FetchID(4), nil, nil) = $0 { true } else { false } })
        // An answer is handed to the fetch that asked.
        guard case .blockRequest(let r) = first[0].1 else { Issue.record("not a request"); return }
        let answer = h.handle(.received(first[0].0, .blockResponse(.init(id: r.id, status: .ok, data: ByteBuffer(bytes: content))), wireSize: 110))
        #expect(answer.contains { if case .deliver(FetchID(1), _?, _) = $0 { true } else { false } })
    }

    @Test func aSilentPeerIsDroppedAndALiveOnePinged() {
        var h = Harness()
        h.start()
        let c = h.connect(TestIDs.b)
        h.now = .seconds(15)
        #expect(Self.sends(h.handle(.timer(.ping))).contains { $0.0 == c && $0.1 == .ping })
        h.now = .seconds(60)
        #expect(h.handle(.timer(.ping)).contains { if case .close(c, _) = $0 { true } else { false } })
    }

    @Test func redialsBackOffDoublingUpToTheMaximum() {
        var h = Harness()
        h.start()
        let endpoint = PeerEndpoint(host: "x", port: 1)
        #expect(h.handle(.discovered(.found(endpoint))).contains { if case .dial(endpoint) = $0 { true } else { false } })
        var delays = [Duration]()
        for _ in 0..<8 {
            let out = h.handle(.dialFailed(endpoint, reason: "refused"))
            guard case .setTimer(.redial(endpoint), let at)? = out.first(where: { if case .setTimer(.redial, _) = $0 { true } else { false } }) else {
                Issue.record("no redial timer"); return
            }
            delays.append(at - h.now)
            h.now = at
            #expect(h.handle(.timer(.redial(endpoint))).contains { if case .dial(endpoint) = $0 { true } else { false } })
        }
        #expect(delays[0] >= .milliseconds(250) && delays[0] <= .milliseconds(350))
        #expect(delays[1] >= .milliseconds(500) && delays[1] <= .milliseconds(600))
        #expect(delays.last! >= .seconds(10) && delays.last! <= .milliseconds(10_100), "\(delays)")
        _ = h.handle(.discovered(.lost(endpoint)))
        #expect(!h.handle(.timer(.redial(endpoint))).contains { if case .dial = $0 { true } else { false } })
    }

    @Test func aBurstOfWatcherEventsIsScannedOnceAfterTheDebounce() {
        var h = Harness()
        h.start()
        let first = h.handle(.folderChanged(["a"]))
        let second = h.handle(.folderChanged(["b"]))
        #expect(first.contains { if case .setTimer(.debounce, _) = $0 { true } else { false } })
        #expect(!second.contains { if case .setTimer(.debounce, _) = $0 { true } else { false } }, "one timer for the burst")
        h.now = .milliseconds(20)
        let scan = h.handle(.timer(.debounce))
        #expect(scan.contains { if case .scan(.paths(["a", "b"]), _) = $0 { true } else { false } })
        // One scan at a time: changes meanwhile wait for it.
        #expect(!h.handle(.folderChanged(["c"])).contains { if case .setTimer(.debounce, _) = $0 { true } else { false } })
        let done = h.handle(.scanned(ScanResult(request: .paths(["a", "b"]), observations: [], known: [:])))
        #expect(done.contains { if case .setTimer(.debounce, _) = $0 { true } else { false } }, "then c's turn")
    }

    /// A version this node made is written before any peer hears of it (a crash must not leave
    /// peers holding a version the node forgot), after the sequence reservation; what peers send
    /// waits for the group commit (100 ms), unless 2,000 changes are pending.
    @Test func ownVersionsAreWrittenBeforeTheyLeaveAndPeersRecordsAreGroupCommitted() {
        var h = Harness()
        h.start()
        let c = h.connect(TestIDs.b)
        let obs = (0..<3).map { SyncEngine.Observation(path: "f\($0)", record: fileRecord("f\($0)", [UInt8($0)], by: TestIDs.a)) }
        let out = h.handle(.scanned(ScanResult(request: .paths(["f0", "f1", "f2"]), observations: obs, known: [:])))
        let reserve = out.firstIndex { if case .reserveSequences = $0 { true } else { false } }
        let persist = out.firstIndex { if case .persist = $0 { true } else { false } }
        let send = out.firstIndex { if case .send(c, .indexUpdate) = $0 { true } else { false } }
        #expect(reserve != nil && send != nil && reserve! < send!, "the reservation is written before a number leaves")
        #expect(persist != nil && send != nil && persist! < send!, "a local edit is written before a peer hears of it")

        // A peer's records: no write at once, one at the group commit.
        let theirs = (0..<3).map { fileRecord("p\($0)", [UInt8($0)], by: TestIDs.b) }
        let received = h.handle(.received(c, .indexUpdate(.init(indexID: 99, records: theirs, caughtUp: true)), wireSize: 100))
        #expect(!received.contains { if case .persist = $0 { true } else { false } }, "peer records wait for the group commit")
        #expect(received.contains { if case .setTimer(.flushIndex, _) = $0 { true } else { false } })
        h.now = .milliseconds(200)
        let flush = h.handle(.timer(.flushIndex))
        guard case .persist(let changes)? = flush.first(where: { if case .persist = $0 { true } else { false } }) else { Issue.record("no write"); return }
        #expect(Set((changes.peerRecords[TestIDs.b] ?? []).map(\.path)).isSuperset(of: ["p0", "p1", "p2"]))
        // 2,000 pending changes are written at once, without waiting for the timer.
        let many = (0..<2000).map { fileRecord("m\($0)", [1], by: TestIDs.b) }
        #expect(h.handle(.received(c, .indexUpdate(.init(indexID: 99, records: many, caughtUp: true)), wireSize: 100_000))
            .contains { if case .persist = $0 { true } else { false } })
    }

    @Test func inSyncNeedsTheFirstScanAndEveryPeersIndex() {
        var h = Harness()
        #expect(!h.machine.inSync)
        _ = h.handle(.start(port: 1))
        #expect(!h.machine.inSync, "the first scan is not done")
        let scanned = h.handle(.scanned(ScanResult(request: .full, observations: [], known: [:])))
        #expect(h.machine.inSync)
        #expect(scanned.contains { if case .ready = $0 { true } else { false } })
        let c = ConnectionID(50)
        _ = h.handle(.connectionOpened(c, address: "x", dialed: nil, nonce: ClusterKey.nonce()))
        #expect(h.machine.inSync, "a connection still in its handshake does not count")
        h.connect(TestIDs.b)
        #expect(h.machine.inSync, "the peer sent its whole index")
        _ = h.handle(.folderChanged(["x"]))
        #expect(!h.machine.inSync, "a change waits for its scan")
    }

    /// A full scan's slices are recorded and stored as they come, each input giving back only
    /// its own records; the node is ready (and in sync) only at the scan's end.
    @Test func aFullScansSlicesAreRecordedAsTheyComeAndOnlyItsEndMakesTheNodeReady() {
        var h = Harness()
        _ = h.handle(.start(port: 1))
        func seen(_ path: String) -> SyncEngine.Observation {
            .init(path: path, record: FileRecord(path: path, kind: .file, size: 1, mtimeNs: 5, modifiedBy: TestIDs.a,
                                                 blocks: [BlockRef(hash: BlockHash(w0: 1, w1: 2, w2: 3, w3: 4), size: 1)]), hashed: true)
        }
        func stored(_ out: [Directive]) -> [String] {
            out.flatMap { d -> [String] in if case .persist(let changes) = d { changes.records.map(\.path) } else { [] } }
        }
        let first = h.handle(.scanned(ScanResult(request: .full, observations: [seen("a"), seen("b")], known: [:], isSlice: true)))
        #expect(h.machine.engine.local.keys.sorted() == ["a", "b"])
        #expect(!first.contains { if case .ready = $0 { true } else { false } })
        #expect(!h.machine.inSync, "the scan is still running")
        h.now += .seconds(1)
        let flushed = h.handle(.timer(.flushIndex))
        #expect(stored(first + flushed).sorted() == ["a", "b"])
        let end = h.handle(.scanned(ScanResult(request: .full, observations: [seen("c")], known: [:])))
        #expect(h.machine.engine.local.keys.sorted() == ["a", "b", "c"])
        #expect(end.contains { if case .ready = $0 { true } else { false } })
        #expect(!stored(end).contains("a"), "a slice's records are not stored twice")
        #expect(h.machine.inSync)
    }
}

@Suite struct InputMailboxTests {
    func update(_ count: Int) -> NodeInput {
        let records = (0..<count).map { FileRecord(path: "f\($0)", kind: .directory, modifiedBy: TestIDs.b) }
        return .received(ConnectionID(1), .indexUpdate(.init(indexID: 1, records: records, caughtUp: false)), wireSize: 1)
    }

    /// A poster waits once the mailbox holds `limit` inputs, or index updates carrying
    /// `recordLimit` records; taking the inputs starts the count again.
    @Test func aPosterWaitsForManyInputsOrManyIndexRecords() {
        let mailbox = InputMailbox(limit: 4, recordLimit: 2_500)
        #expect(mailbox.post(update(1_000)) == .hop)
        #expect(mailbox.post(update(1_000)) == .nothing)
        #expect(mailbox.post(update(1_000)) == .hopAndWait, "3,000 records waiting")
        #expect(mailbox.takeAll().count == 3)
        #expect(mailbox.post(update(1_000)) == .hop, "counted again from zero")
        #expect(mailbox.post(.timer(.flushIndex)) == .nothing)
        #expect(mailbox.post(.timer(.flushIndex)) == .nothing)
        #expect(mailbox.post(.timer(.flushIndex)) == .hopAndWait, "four inputs")
    }
}
