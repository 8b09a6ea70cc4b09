import DequeModule
import Foundation
import NIOCore

/// One authenticated connection to a peer, after the handshake.
///
/// It owns the request/response bookkeeping of block transfers (request IDs, a byte budget of
/// requests in flight, so that a fast node pipelines many requests without buffering without
/// bound), serializes sends on the channel, and keeps the queue of index records to send in the
/// exact order the node produced them (a lock-protected queue, filled synchronously from the
/// node's actor, drained by one writer task), so a peer never sees an older version of a path
/// after a newer one and its "since" bookkeeping has no gaps.
final class PeerLink: @unchecked Sendable {
    let id: NodeID
    let name: String
    let address: String
    let channel: any PeerChannel
    /// True when this node dialed the connection.
    let initiatedLocally: Bool
    /// Bytes of block requests in flight allowed at once.
    let requestBudget: Int

    private let lock = NSLock()
    private var nextRequestID: UInt32 = 1
    private var pending: [UInt32: (continuation: CheckedContinuation<ByteBuffer?, any Error>, size: Int, deadline: ContinuousClock.Instant)] = [:]
    /// How long a block request may wait for its answer before it fails (and the puller asks
    /// the next peer): a peer that keeps the link alive but never answers must not stall pulls.
    static let requestTimeout: Duration = .seconds(30)
    private var outstanding = 0
    private var budgetWaiters = Deque<(continuation: CheckedContinuation<Void, Never>, size: Int)>()
    /// Frames waiting to be written, with who to tell once they are handed to the channel.
    /// One writer task drains it, taking everything queued at once, so the many small frames
    /// of a burst (block requests for small files, their responses) go out in few writes.
    private var outbox = Deque<(frame: Frame, done: @Sendable ((any Error)?) -> Void)>()
    private var outboxWriterRunning = false
    private var indexQueue = Deque<IndexItem>()
    /// The last block list sent, and received, per path on this connection, for files of at
    /// least `BlockDelta.minimumBlocks` blocks, with their digests: the bases of block-list
    /// deltas (either direction's list can serve; see `WireMessage.BlockDelta`).
    /// The last two of each (the newest last): two lists can cross on the wire, each end then
    /// naming as base the list it knew before the other's arrived.
    private var sentBlocks: [String: [DeltaBase]] = [:]
    private var receivedBlocks: [String: [DeltaBase]] = [:]
    /// Lists the peer announced for paths about to be sent (from the node's view of the peer's
    /// index): on a new connection, the base the peer is sure to hold as its own.
    private var peerLists: [String: DeltaBase] = [:]

    typealias DeltaBase = (blocks: [BlockRef], digest: UInt64)

    private static func remember(_ base: DeltaBase?, in history: inout [String: [DeltaBase]], path: String) {
        guard let base else { history[path] = nil; return }
        var list = history[path] ?? []
        if list.last?.digest != base.digest { list.append(base) }
        history[path] = Array(list.suffix(2))
    }

    private static func deltaBase(_ r: FileRecord) -> DeltaBase? {
        deltaBase(r.kind == .file && !r.deleted ? r.blocks : [])
    }

    private static func deltaBase(_ blocks: [BlockRef]) -> DeltaBase? {
        guard blocks.count >= WireMessage.BlockDelta.minimumBlocks else { return nil }
        return (blocks, WireMessage.BlockDelta.digest(of: blocks))
    }
    private var writerRunning = false
    private(set) var closed = false
    private var _lastReceived = ContinuousClock.now
    private var _bytesSent = 0
    private var serving = 0
    private var _bytesReceived = 0
    let indexID: UInt64

    /// What the index writer sends, in order: a record, the end of an index request's answer,
    /// or the answer's bulk: the paths to send (sorted by sequence), read from the node a batch
    /// at a time as they go out (holding 20,000 records per peer in the queue at once was the
    /// largest share of a node's memory when peers connect).
    enum IndexItem { case record(FileRecord), caughtUp, backlog(ArraySlice<SyncEngine.RecordKey>) }

    /// Reads the node's records of some paths, each only if it is still at the given sequence
    /// (the backlog's source). A record changed since the request is left out: it was queued
    /// after the backlog when it changed, and sending it early would let the peer's "since"
    /// jump over records of the backlog not yet sent.
    typealias RecordSource = @Sendable ([SyncEngine.RecordKey]) async -> [FileRecord]
    private var backlogSource: RecordSource?

    let metrics: NodeMetrics

    init(id: NodeID, name: String, address: String, channel: any PeerChannel, initiatedLocally: Bool, indexID: UInt64, requestBudget: Int, metrics: NodeMetrics) {
        self.metrics = metrics
        self.id = id
        self.name = name
        self.address = address
        self.channel = channel
        self.initiatedLocally = initiatedLocally
        self.indexID = indexID
        self.requestBudget = requestBudget
    }

    var lastReceived: ContinuousClock.Instant { lock.withLock { _lastReceived } }
    var bytesSent: Int { lock.withLock { _bytesSent } }
    var bytesReceived: Int { lock.withLock { _bytesReceived } }
    var outstandingBytes: Int { lock.withLock { outstanding } }

    /// Counts a block request being served; false when `limit` are already in flight.
    func beginServe(limit: Int) -> Bool {
        lock.withLock {
            guard serving < limit else { return false }
            serving += 1
            return true
        }
    }

    func endServe() { lock.withLock { serving -= 1 } }

    func noteReceived(_ frame: Frame) {
        lock.withLock {
            _lastReceived = .now
            _bytesReceived += frame.wireSize
        }
        metrics.bytesReceived.increment(by: frame.wireSize)
    }

    /// Sends one message, after every message queued before it; returns once it is handed to
    /// the channel (whose own backpressure thus reaches the caller).
    func send(_ message: WireMessage) async throws {
        let frame = WireCodec.encode(message)
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            enqueue(frame) { error in
                if let error { c.resume(throwing: error) } else { c.resume() }
            }
        }
    }

    /// Queues a frame without waiting; `done` runs once it is written (nil) or failed.
    func enqueue(_ frame: Frame, done: @escaping @Sendable ((any Error)?) -> Void) {
        let start = lock.withLock { () -> Bool? in
            if closed { return nil }
            outbox.append((frame, done))
            if outboxWriterRunning { return false }
            outboxWriterRunning = true
            return true
        }
        switch start {
        case nil: done(SyncError(.transport, "connection to \(name) is closed"))
        case true?: Task { await self.drainOutbox() }
        case false?: break
        }
    }

    /// Writes what is queued in batches of up to 4 MiB, until the queue is empty.
    private func drainOutbox() async {
        while true {
            let batch = lock.withLock { () -> [(frame: Frame, done: @Sendable ((any Error)?) -> Void)] in
                var batch = [(frame: Frame, done: @Sendable ((any Error)?) -> Void)]()
                var bytes = 0
                while let next = outbox.first, batch.isEmpty || bytes + next.frame.wireSize <= 4 << 20 {
                    bytes += next.frame.wireSize
                    batch.append(outbox.removeFirst())
                }
                if batch.isEmpty { outboxWriterRunning = false }
                return batch
            }
            if batch.isEmpty { return }
            var failure: (any Error)?
            if lock.withLock({ closed }) {
                failure = SyncError(.transport, "connection to \(name) is closed")
            } else {
                do { try await channel.send(contentsOf: batch.map(\.frame)) } catch { failure = error }
            }
            if failure == nil {
                let bytes = batch.reduce(0) { $0 + $1.frame.wireSize }
                lock.withLock { _bytesSent += bytes }
                metrics.bytesSent.increment(by: bytes)
            }
            for item in batch { item.done(failure) }
        }
    }

    // MARK: index

    /// Queues records for the peer, in the order given (`peerHas`: the peer's own lists of some
    /// of those paths, bases for deltas). Returns at once; a writer task sends them in batches.
    func enqueueIndex(_ records: [FileRecord], peerHas: [String: [BlockRef]] = [:]) {
        let start = lock.withLock { () -> Bool in
            if closed { return false }
            for (path, blocks) in peerHas where blocks.count >= WireMessage.BlockDelta.minimumBlocks {
                peerLists[path] = Self.deltaBase(blocks)
            }
            for r in records { indexQueue.append(.record(r)) }
            if writerRunning || indexQueue.isEmpty { return false }
            writerRunning = true
            return true
        }
        if start { Task { await self.drainIndex() } }
    }

    /// Queues the answer to an index request: `paths` (sorted by sequence), read through
    /// `source` as they are sent, then the caught-up marker.
    func enqueueBacklog(_ paths: [SyncEngine.RecordKey], source: @escaping RecordSource) {
        let start = lock.withLock { () -> Bool in
            if closed { return false }
            backlogSource = source
            if !paths.isEmpty { indexQueue.append(.backlog(paths[...])) }
            indexQueue.append(.caughtUp)
            if writerRunning { return false }
            writerRunning = true
            return true
        }
        if start { Task { await self.drainIndex() } }
    }

    /// Sends one index update; false (and the link shut down) when it could not be sent.
    private func sendIndexBatch(_ batch: [FileRecord], caughtUp: Bool) async -> Bool {
        let (records, deltas) = lock.withLock { deltaEncode(batch) }
        do {
            try await send(.indexUpdate(.init(indexID: indexID, records: records, caughtUp: caughtUp, deltas: deltas)))
            return true
        } catch {
            lock.withLock {
                indexQueue.removeAll()
                writerRunning = false
            }
            // Records were lost for this peer: drop the link, so that it reconnects and asks
            // again from what it holds, instead of skipping them for good.
            await shutdown()
            return false
        }
    }

    /// A record's approximate size on the wire.
    static func estimatedSize(_ r: FileRecord) -> Int {
        100 + r.path.utf8.count + r.blocks.count * 36 + r.version.entries.count * 40
    }

    /// Batches of at most 1,000 records or about 1 MiB, so one update never nears the frame limit.
    private func drainIndex() async {
        while true {
            var (batch, caughtUp) = lock.withLock { () -> ([FileRecord], Bool) in
                var batch = [FileRecord]()
                var bytes = 0
                while let item = indexQueue.first {
                    switch item {
                    case .caughtUp:
                        indexQueue.removeFirst()
                        return (batch, true)
                    case .backlog:
                        return (batch, false)
                    case .record(let r):
                        let size = Self.estimatedSize(r)
                        if !batch.isEmpty && (batch.count >= 1000 || bytes + size > 1 << 20) { return (batch, false) }
                        indexQueue.removeFirst()
                        batch.append(r)
                        bytes += size
                    }
                }
                return (batch, false)
            }
            if batch.isEmpty && !caughtUp, let (paths, source) = lock.withLock({ () -> ([SyncEngine.RecordKey], RecordSource)? in
                // The backlog is first in the queue: take its next paths.
                guard case .backlog(let rest)? = indexQueue.first, let source = backlogSource else { return nil }
                // By count here; the records' sizes are known only once read, so a batch of
                // large records is cut below by bytes.
                let taken = min(rest.count, 1000)
                let paths = Array(rest.prefix(taken))
                indexQueue[0] = .backlog(rest.dropFirst(taken))
                if rest.count == taken { indexQueue.removeFirst() }
                return (paths, source)
            }) {
                let records = await source(paths)
                // Cut by bytes like queued records.
                var start = 0
                var bytes = 0
                for (i, r) in records.enumerated() {
                    let size = Self.estimatedSize(r)
                    if i > start && bytes + size > 1 << 20 {
                        if !(await sendIndexBatch(Array(records[start..<i]), caughtUp: false)) { return }
                        start = i
                        bytes = 0
                    }
                    bytes += size
                }
                batch = Array(records[start...])
                caughtUp = false
                if batch.isEmpty { continue }
            }
            if batch.isEmpty && !caughtUp {
                let done = lock.withLock { () -> Bool in
                    if indexQueue.isEmpty {
                        writerRunning = false
                        return true
                    }
                    return false
                }
                if done { return }
                continue
            }
            if !(await sendIndexBatch(batch, caughtUp: caughtUp)) { return }
        }
    }

    /// Replaces the block lists of large files that share a start or an end with the list
    /// last sent for the same path by a delta, and remembers what was sent. Called under the
    /// lock, by the single index writer, in sending order.
    private func deltaEncode(_ batch: [FileRecord]) -> ([FileRecord], [Int: WireMessage.BlockDelta]) {
        var records = batch
        var deltas = [Int: WireMessage.BlockDelta]()
        for (i, r) in batch.enumerated() {
            let hint = peerLists.removeValue(forKey: r.path)
            guard let mine = Self.deltaBase(r) else {
                sentBlocks[r.path] = nil
                continue
            }
            // The base that leaves the fewest blocks to send, among the lists the peer holds for
            // sure: what we sent it last, what it sent us last, what it announced as its own.
            var best: (WireMessage.BlockDelta, [BlockRef])?
            let candidates = [sentBlocks[r.path]?.last, receivedBlocks[r.path]?.last, hint].compactMap { $0 }
            for base in candidates {
                if let (delta, middle) = WireMessage.BlockDelta.between(base.blocks, r.blocks), middle.count < best?.1.count ?? Int.max {
                    best = (WireMessage.BlockDelta(keepPrefix: delta.keepPrefix, keepSuffix: delta.keepSuffix, baseDigest: base.digest), middle)
                }
            }
            if let (delta, middle) = best {
                deltas[i] = delta
                records[i].blocks = middle
            }
            Self.remember(mine, in: &sentBlocks, path: r.path)
        }
        return (records, deltas)
    }

    /// Rebuilds the full block lists of an update that arrived on this link, and remembers the
    /// lists for the next deltas. `local` gives this node's own recent lists of a path (the
    /// peer may name the one it last saw announced). Throws when a delta names a base this end
    /// does not hold or does not add up: the peer broke the protocol (or lists crossed in a way
    /// the kept lists do not cover), and the link is dropped; the new connection starts from
    /// full lists. A wrong list is never built.
    func deltaDecode(_ update: WireMessage.IndexUpdate, local: (String) -> [[BlockRef]]) throws -> WireMessage.IndexUpdate {
        try lock.withLock {
            var update = update
            for (i, r) in update.records.enumerated() {
                if let delta = update.deltas[i] {
                    // The link's lists first (their digests are known); this node's own lists
                    // only when none matches (a digest costs a hash of the whole list).
                    let kept = (receivedBlocks[r.path] ?? []) + (sentBlocks[r.path] ?? [])
                    let base = kept.first { $0.digest == delta.baseDigest }
                        ?? local(r.path).lazy.compactMap(Self.deltaBase).first { $0.digest == delta.baseDigest }
                    guard let base, let full = delta.apply(to: base.blocks, middle: r.blocks) else {
                        throw SyncError(.protocolViolation, "a block-list delta for \(r.path) without its base")
                    }
                    update.records[i].blocks = full
                    try WireCodec.checkBlocks(of: update.records[i])
                }
                Self.remember(Self.deltaBase(update.records[i]), in: &receivedBlocks, path: r.path)
            }
            update.deltas = [:]
            return update
        }
    }

    // MARK: blocks

    /// Asks the peer for a block; nil when it does not have it. Waits while the requests in
    /// flight already use the byte budget.
    func requestBlock(_ block: BlockRef, path: String, offset: UInt64) async throws -> ByteBuffer? {
        let size = Int(block.size)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = lock.withLock { () -> Bool in
                if outstanding == 0 || outstanding + size <= requestBudget || closed {
                    outstanding += size
                    return true
                }
                budgetWaiters.append((c, size))
                return false
            }
            if ready { c.resume() }
        }
        // Cancellation (a shutdown) fails the request at once instead of waiting for a peer
        // that may never answer.
        let slot = RequestSlot()
        return try await withTaskCancellationHandler {
            try await send(block, path: path, offset: offset, size: size, slot: slot)
        } onCancel: {
            if let id = slot.id { self.complete(id, with: .failure(CancellationError())) }
        }
    }

    /// Remembers the ID of a request for its cancellation handler.
    final class RequestSlot: @unchecked Sendable {
        private let lock = NSLock()
        private var _id: UInt32?
        var id: UInt32? {
            get { lock.withLock { _id } }
            set { lock.withLock { _id = newValue } }
        }
    }

    private func send(_ block: BlockRef, path: String, offset: UInt64, size: Int, slot: RequestSlot) async throws -> ByteBuffer? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<ByteBuffer?, any Error>) in
            let id = lock.withLock { () -> UInt32? in
                if closed { return nil }
                let id = nextRequestID
                nextRequestID &+= 1
                if nextRequestID == 0 { nextRequestID = 1 }
                pending[id] = (c, size, .now + Self.requestTimeout)
                return id
            }
            guard let id else {
                releaseBudget(size)
                c.resume(throwing: SyncError(.transport, "connection to \(name) is closed"))
                return
            }
            slot.id = id
            if Task.isCancelled {
                complete(id, with: .failure(CancellationError()))
                return
            }
            enqueue(WireCodec.encode(.blockRequest(.init(id: id, hash: block.hash, size: block.size, path: path, offset: offset)))) { error in
                if let error { self.complete(id, with: .failure(error)) }
            }
        }
    }

    /// Hands a response to the request waiting for it (unknown IDs are ignored: a late answer
    /// to a request that already failed).
    func deliver(_ response: WireMessage.BlockResponse) {
        let result: Result<ByteBuffer?, any Error> = response.status == .ok ? .success(response.data) : .success(nil)
        complete(response.id, with: result)
    }

    private func complete(_ id: UInt32, with result: Result<ByteBuffer?, any Error>) {
        guard let entry = lock.withLock({ pending.removeValue(forKey: id) }) else { return }
        releaseBudget(entry.size)
        entry.continuation.resume(with: result)
    }

    private func releaseBudget(_ size: Int) {
        let waiters = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            outstanding -= size
            var wake = [CheckedContinuation<Void, Never>]()
            // Admit waiters in order while their requests fit; their bytes are counted here.
            while let next = budgetWaiters.first, closed || outstanding == 0 || outstanding + next.size <= requestBudget {
                budgetWaiters.removeFirst()
                outstanding += next.size
                wake.append(next.continuation)
            }
            return wake
        }
        for w in waiters { w.resume() }
    }

    /// Fails the block requests whose answer is overdue (called by the node's timer: one sweep
    /// instead of a timer task per request).
    func expireRequests(now: ContinuousClock.Instant) {
        let overdue = lock.withLock { pending.filter { $0.value.deadline <= now }.map(\.key) }
        for id in overdue {
            complete(id, with: .failure(SyncError(.blockUnavailable, "no answer within \(Self.requestTimeout)")))
        }
    }

    /// Fails every request in flight and refuses new ones; closes the channel.
    func shutdown() async {
        let (requests, waiters, unsent) = lock.withLock { () -> ([(CheckedContinuation<ByteBuffer?, any Error>, Int)], [CheckedContinuation<Void, Never>], [@Sendable ((any Error)?) -> Void]) in
            closed = true
            let r = pending.values.map { ($0.continuation, $0.size) }
            pending.removeAll()
            let w = budgetWaiters.map(\.continuation)
            budgetWaiters.removeAll()
            indexQueue.removeAll()
            let u = outbox.map(\.done)
            outbox.removeAll()
            return (r, w, u)
        }
        for w in waiters { w.resume() }
        for done in unsent { done(SyncError(.transport, "connection to \(name) closed")) }
        for (c, _) in requests { c.resume(throwing: SyncError(.transport, "connection to \(name) closed")) }
        await channel.close()
    }
}
