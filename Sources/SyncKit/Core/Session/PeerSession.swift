import DequeModule

/// One connection to a peer, as a pure state machine: the handshake, the index this node sends
/// on it (in order, in bounded batches, with block-list deltas), the deltas it receives, and the
/// block requests this node has in flight on it (IDs, a byte budget, deadlines).
///
/// It does no I/O and reads no clock: `NodeMachine` feeds it what arrived and the time, and
/// turns what it returns into directives. One per connection; a new connection starts afresh
/// (no delta bases, no requests), which is what the peer assumes too.
struct PeerSession: Sendable {
    enum Phase: Sendable, Equatable {
        /// Our `hello` is sent; theirs has not arrived.
        case awaitingHello
        /// Their `hello` arrived and our `auth` is sent; theirs has not arrived.
        case awaitingAuth
        /// Both proved the cluster key: records and blocks may flow.
        case established
    }

    let connection: ConnectionID
    /// For logs: the remote address.
    let address: String
    /// The endpoint this node dialed (nil: the peer dialed us).
    let dialed: PeerEndpoint?
    /// Our handshake nonce (fresh per connection).
    let nonce: [UInt8]
    /// What the transport proved (TLS: the peer's certificate, the connection's exporter).
    let security: PeerChannelSecurity?
    /// The proven peer was in the trust list when the connection opened (or `--open`).
    let trusted: Bool
    private(set) var phase = Phase.awaitingHello
    /// Set by their `hello`.
    private(set) var hello: WireMessage.Hello?
    var peer: NodeID? { hello?.nodeID }
    var peerName: String { hello?.nodeName ?? "?" }
    var initiatedLocally: Bool { dialed != nil }
    /// The link speaks SyncKit's own protocol, not another one through a `LinkCodec` (which
    /// the transport's ALPN choice tells): only then do index updates carry block-list deltas.
    var speaksSyncKit: Bool { security?.applicationProtocol.map(LinkProtocols.isSyncKit) ?? true }
    /// When something last arrived (the node's clock).
    private(set) var lastReceived: Duration
    private(set) var bytesReceived = 0
    /// Index records received on this connection, and whether the peer's catch-up was logged.
    var recordsReceived = 0
    var catchUpLogged = false

    init(connection: ConnectionID, address: String, dialed: PeerEndpoint?, nonce: [UInt8], security: PeerChannelSecurity? = nil,
         trusted: Bool = false, now: Duration) {
        self.connection = connection
        self.address = address
        self.dialed = dialed
        self.nonce = nonce
        self.security = security
        self.trusted = trusted
        self.lastReceived = now
    }

    mutating func noteReceived(bytes: Int, at now: Duration) {
        lastReceived = now
        bytesReceived += bytes
    }

    // MARK: handshake

    /// What this node says first.
    func ourHello(id: NodeID, name: String, clusterName: String, port: Int, indexID: UInt64) -> WireMessage {
        .hello(.init(nodeID: id, nodeName: name, clusterName: clusterName, listenPort: UInt16(clamping: port), nonce: nonce, indexID: indexID))
    }

    /// How the handshake went on a message.
    enum HandshakeStep: Sendable, Equatable {
        /// Send this `auth`.
        case sendAuth(WireMessage)
        /// The peer proved the key: the session is established.
        case established
        /// The peer is this node itself (a dial that looped back).
        case isSelf
        /// Refuse the peer, for this reason.
        case refuse(String)
    }

    /// Takes a handshake message (`hello`, then `auth`). Anything else before the handshake
    /// completes is a refusal.
    mutating func handshake(_ message: WireMessage, me: NodeID, clusterName: String, key: ClusterKey) -> HandshakeStep {
        switch (phase, message) {
        case (.awaitingHello, .hello(let theirs)):
            if theirs.nodeID == me { return .isSelf }
            // The ID a peer claims must be the one its certificate proves.
            if let security, security.peer != theirs.nodeID {
                return .refuse("presents the node ID \(theirs.nodeID) with the certificate of \(security.peer)")
            }
            guard theirs.clusterName == clusterName else {
                return .refuse("peer belongs to cluster '\(theirs.clusterName)', not '\(clusterName)'")
            }
            hello = theirs
            phase = .awaitingAuth
            let mac = security.map { key.proof(sender: me, receiver: theirs.nodeID, binding: $0.binding) }
                ?? key.proof(sender: me, receiver: theirs.nodeID, receiverNonce: theirs.nonce, senderNonce: nonce)
            return .sendAuth(.auth(.init(mac: mac)))
        case (.awaitingAuth, .auth(let auth)):
            guard let theirs = hello else { return .refuse("no hello") }
            if let security {
                // Over TLS: a trusted certificate, or the cluster key proven for this very connection.
                guard trusted || !key.isOpen && key.verify(auth.mac, sender: theirs.nodeID, receiver: me, binding: security.binding) else {
                    return .refuse(key.isOpen ? "not in the trust list" : "not in the trust list, and no proof of the cluster key for this connection")
                }
            } else {
                guard key.verify(auth.mac, sender: theirs.nodeID, receiver: me, receiverNonce: nonce, senderNonce: theirs.nonce) else {
                    return .refuse("peer does not hold this cluster's key")
                }
            }
            phase = .established
            return .established
        default:
            return .refuse("expected a handshake message")
        }
    }

    // MARK: the index this node sends

    /// What the index writer sends, in order: a record, the bulk of an index request's answer
    /// (the keys to send, in sequence order, read a batch at a time as they go out), or the end
    /// of that answer.
    enum IndexItem: Sendable {
        case record(FileRecord)
        case backlog(ArraySlice<SyncEngine.RecordKey>)
        /// A spilled index's answer: the records numbered in (after, through], read in batches.
        case range(after: UInt64, through: UInt64, for: NodeID?)
        case caughtUp
    }

    /// What an index request is answered with (`SyncEngine.backlog`).
    enum Backlog: Sendable {
        case keys([SyncEngine.RecordKey])
        case range(after: UInt64, through: UInt64, for: NodeID?)
    }

    /// The peer asked for our index; from then on our changes go to it.
    private(set) var indexRequested = false
    private var indexQueue = Deque<IndexItem>()
    /// An index update was handed to the shell and not yet reported sent: one at a time, so
    /// that a slow peer holds back our reading of the backlog, not our memory.
    private(set) var indexBatchInFlight = false
    /// Block lists sent and received on this connection (delta bases).
    private var sentLists = RecentLists()
    private var receivedLists = RecentLists()
    /// Lists the peer announced for paths about to be sent: on a new connection, the base it
    /// is sure to hold as its own.
    private var peerLists: [String: RecentLists.Base] = [:]

    /// The peer asked for our records after `keys` (sorted by sequence): they go first, then the
    /// caught-up marker; changes made meanwhile follow in order.
    mutating func answerIndexRequest(_ keys: [SyncEngine.RecordKey]) {
        answerIndexRequest(.keys(keys))
    }

    mutating func answerIndexRequest(_ backlog: Backlog) {
        indexRequested = true
        switch backlog {
        case .keys(let keys): if !keys.isEmpty { indexQueue.append(.backlog(keys[...])) }
        case .range(let after, let through, let peer): indexQueue.append(.range(after: after, through: through, for: peer))
        }
        indexQueue.append(.caughtUp)
    }

    /// Queues changed records (in the order given; `peerHas`: the peer's own lists of some of
    /// these paths, bases for deltas).
    mutating func enqueue(_ records: [FileRecord], peerHas: [String: [BlockRef]]) {
        for (path, blocks) in peerHas {
            if let base = RecentLists.base(blocks) { peerLists[path] = base }
        }
        for r in records { indexQueue.append(.record(r)) }
    }

    /// The next index update to send, if one can go now: at most 1,000 records or about
    /// 1 MiB. `read` gives this node's current records of backlog keys (a record changed since
    /// the request is left out: it is queued again behind the backlog, so the peer's "since"
    /// never jumps a gap).
    mutating func nextIndexBatch(
        indexID: UInt64, read: ([SyncEngine.RecordKey]) -> [FileRecord],
        readRange: (_ after: UInt64, _ through: UInt64, _ peer: NodeID?) -> (records: [FileRecord], readThrough: UInt64) = { _, t, _ in ([], t) }
    ) -> WireMessage.IndexUpdate? {
        guard !indexBatchInFlight else { return nil }
        var batch = [FileRecord]()
        var bytes = 0
        var caughtUp = false
        loop: while let item = indexQueue.first {
            switch item {
            case .caughtUp:
                indexQueue.removeFirst()
                caughtUp = true
                break loop
            case .record(let r):
                let size = Self.estimatedSize(r)
                if !batch.isEmpty && (batch.count >= 1000 || bytes + size > 1 << 20) { break loop }
                indexQueue.removeFirst()
                batch.append(r)
                bytes += size
            case .backlog(let keys):
                if !batch.isEmpty { break loop }
                let take = min(keys.count, 1000)
                let records = read(Array(keys.prefix(take)))
                // Cut by bytes as well; what does not fit stays queued, as keys.
                let fit = Self.fitting(records, bytes: &bytes)
                batch = Array(records.prefix(fit))
                // The keys of the records sent (and of those read as gone) are consumed.
                let consumed = fit == records.count ? take : consumedKeys(keys, upTo: records[fit].path)
                if consumed == keys.count { indexQueue.removeFirst() } else { indexQueue[0] = .backlog(keys.dropFirst(consumed)) }
                if !batch.isEmpty { break loop }
            case .range(let after, let through, let peer):
                if !batch.isEmpty { break loop }
                let (records, readThrough) = readRange(after, through, peer)
                let fit = Self.fitting(records, bytes: &bytes)
                batch = Array(records.prefix(fit))
                // What did not fit is read again from the next batch (from after the last sent).
                let next = fit == records.count ? readThrough : records[fit - 1].sequence
                if next >= through { indexQueue.removeFirst() } else { indexQueue[0] = .range(after: next, through: through, for: peer) }
                if !batch.isEmpty { break loop }
            }
        }
        guard !batch.isEmpty || caughtUp else { return nil }
        indexBatchInFlight = true
        // A link in another protocol (BEP) carries whole block lists only.
        guard speaksSyncKit else { return .init(indexID: indexID, records: batch, caughtUp: caughtUp) }
        let (records, deltas) = deltaEncode(batch)
        return .init(indexID: indexID, records: records, caughtUp: caughtUp, deltas: deltas)
    }

    /// How many of `records` fit in an update of about 1 MiB holding `bytes` already (at least
    /// one), with `bytes` counting them.
    private static func fitting(_ records: [FileRecord], bytes: inout Int) -> Int {
        var fit = 0
        for r in records {
            let size = estimatedSize(r)
            if fit > 0 && bytes + size > 1 << 20 { break }
            bytes += size
            fit += 1
        }
        return fit
    }

    /// How many keys precede the one of `path` (the first record that did not fit).
    private func consumedKeys(_ keys: ArraySlice<SyncEngine.RecordKey>, upTo path: String) -> Int {
        (keys.firstIndex { $0.path == path } ?? keys.endIndex) - keys.startIndex
    }

    /// The shell handed the last update to the connection.
    mutating func indexBatchSent() { indexBatchInFlight = false }

    /// True when nothing of the index is waiting to be sent.
    var indexQueueIsEmpty: Bool { indexQueue.isEmpty }

    /// A record's approximate size on the wire.
    static func estimatedSize(_ r: FileRecord) -> Int {
        100 + r.path.utf8.count + r.blocks.count * 36 + r.version.entries.count * 40
    }

    /// Replaces the block lists of large files that share a start or an end with a list the
    /// peer holds for sure by a delta (what we sent it last, what it sent us last, what it
    /// announced as its own), and remembers what was sent.
    private mutating func deltaEncode(_ batch: [FileRecord]) -> ([FileRecord], [Int: WireMessage.BlockDelta]) {
        var records = batch
        var deltas = [Int: WireMessage.BlockDelta]()
        for (i, r) in batch.enumerated() {
            let hint = peerLists.removeValue(forKey: r.path)
            guard let mine = RecentLists.base(r) else {
                sentLists.remember(nil, for: r.path)
                continue
            }
            var best: (WireMessage.BlockDelta, [BlockRef])?
            for base in [sentLists.latest(r.path), receivedLists.latest(r.path), hint].compactMap({ $0 }) {
                if let (delta, middle) = WireMessage.BlockDelta.between(base.blocks, r.blocks), middle.count < best?.1.count ?? Int.max {
                    best = (WireMessage.BlockDelta(keepPrefix: delta.keepPrefix, keepSuffix: delta.keepSuffix, baseDigest: base.digest), middle)
                }
            }
            if let (delta, middle) = best {
                deltas[i] = delta
                records[i].blocks = middle
            }
            sentLists.remember(mine, for: r.path)
        }
        return (records, deltas)
    }

    // MARK: the index this node receives

    /// Rebuilds the full block lists of an update that arrived here and remembers them as
    /// bases. `own` holds this node's own recent lists (the peer may name the one it last saw
    /// announced). Throws when a delta names a base this end does not hold or does not add up:
    /// the link is then dropped and the next one starts from full lists. A wrong list is never
    /// built.
    mutating func deltaDecode(_ update: WireMessage.IndexUpdate, own: RecentLists) throws -> WireMessage.IndexUpdate {
        var update = update
        for (i, r) in update.records.enumerated() {
            if let delta = update.deltas[i] {
                let base = receivedLists.find(r.path, digest: delta.baseDigest) ?? sentLists.find(r.path, digest: delta.baseDigest)
                    ?? own.find(r.path, digest: delta.baseDigest)
                guard let base, let full = delta.apply(to: base.blocks, middle: r.blocks) else {
                    throw SyncError(.protocolViolation, "a block-list delta for \(r.path) without its base")
                }
                update.records[i].blocks = full
                try WireCodec.checkBlocks(of: update.records[i])
            }
            receivedLists.remember(RecentLists.base(update.records[i]), for: r.path)
        }
        update.deltas = [:]
        return update
    }

    // MARK: block requests this node sent

    struct Request: Sendable {
        /// Nil once the job stopped waiting (a late answer is then ignored).
        var fetch: FetchID?
        var size: Int
        var deadline: Duration
    }

    private var nextRequestID: UInt32 = 1
    private var requests: [UInt32: Request] = [:]
    /// Bytes asked for and not yet answered.
    private(set) var outstandingBytes = 0
    /// Requests waiting for room in the byte budget, in order.
    private var waiting = Deque<(fetch: FetchID, request: WireMessage.BlockRequest)>()

    /// Asks for a block, or queues the request while `budget` bytes are already asked for (a
    /// request always goes when nothing is outstanding, so one block larger than the budget
    /// still gets through). Returns the message to send now, if any.
    mutating func request(_ fetch: FetchID, hash: BlockHash, size: UInt32, path: String, offset: UInt64, budget: Int, now: Duration, timeout: Duration) -> WireMessage? {
        let id = nextRequestID
        nextRequestID &+= 1
        if nextRequestID == 0 { nextRequestID = 1 }
        let message = WireMessage.BlockRequest(id: id, hash: hash, size: size, path: path, offset: offset)
        guard waiting.isEmpty, outstandingBytes == 0 || outstandingBytes + Int(size) <= budget else {
            waiting.append((fetch, message))
            return nil
        }
        return admit(fetch, message, now: now, timeout: timeout)
    }

    private mutating func admit(_ fetch: FetchID, _ message: WireMessage.BlockRequest, now: Duration, timeout: Duration) -> WireMessage {
        requests[message.id] = Request(fetch: fetch, size: Int(message.size), deadline: now + timeout)
        outstandingBytes += Int(message.size)
        return .blockRequest(message)
    }

    /// An answer arrived: the fetch it belongs to (nil for an unknown or late ID), and the
    /// queued requests that now fit the budget.
    mutating func answered(_ id: UInt32, budget: Int, now: Duration, timeout: Duration) -> (fetch: FetchID?, admitted: [WireMessage]) {
        guard let request = requests.removeValue(forKey: id) else { return (nil, []) }
        outstandingBytes -= request.size
        return (request.fetch, admitWaiting(budget: budget, now: now, timeout: timeout))
    }

    private mutating func admitWaiting(budget: Int, now: Duration, timeout: Duration) -> [WireMessage] {
        var out = [WireMessage]()
        while let next = waiting.first, outstandingBytes == 0 || outstandingBytes + Int(next.request.size) <= budget {
            waiting.removeFirst()
            out.append(admit(next.fetch, next.request, now: now, timeout: timeout))
        }
        return out
    }

    /// Requests whose answer is overdue at `now`: they fail (the job asks another peer), and
    /// the budget they held goes to queued ones.
    mutating func expire(now: Duration, budget: Int, timeout: Duration) -> (expired: [FetchID], admitted: [WireMessage]) {
        let overdue = requests.filter { $0.value.deadline <= now }
        for (id, r) in overdue {
            requests[id] = nil
            outstandingBytes -= r.size
        }
        return (overdue.values.compactMap(\.fetch), admitWaiting(budget: budget, now: now, timeout: timeout))
    }

    /// Forgets a fetch the job no longer waits for.
    mutating func cancel(_ fetch: FetchID) {
        waiting.removeAll { $0.fetch == fetch }
        // An answer that comes later is ignored; its bytes stay counted until then.
        for (id, r) in requests where r.fetch == fetch { requests[id]?.fetch = nil }
    }

    /// The earliest deadline of a request in flight.
    var nextDeadline: Duration? { requests.values.map(\.deadline).min() }

    /// Every fetch waiting on this connection (it is closing).
    mutating func drainFetches() -> [FetchID] {
        let all = requests.values.compactMap(\.fetch) + waiting.map(\.fetch)
        requests.removeAll()
        waiting.removeAll()
        outstandingBytes = 0
        return all
    }

    // MARK: serving

    /// Block requests of the peer being served now.
    private(set) var serving = 0

    /// Counts a request being served; false when `limit` are already in flight (a well-behaved
    /// peer keeps at most a few hundred; far more is an attack).
    mutating func beginServe(limit: Int) -> Bool {
        guard serving < limit else { return false }
        serving += 1
        return true
    }

    /// `count` requests were answered.
    mutating func endServe(_ count: Int) { serving = max(0, serving - count) }
}
