import DequeModule
import Foundation
import NIOCore

/// One live connection in the shell: its channel, and the outbox that writes what the machine
/// sends on it.
///
/// Messages are queued without waiting (the machine's directives are carried out in order, on
/// the node's actor) and one writer task drains the queue: it encodes what is queued (off the
/// actor) and hands up to 4 MiB of frames to the channel in one write, so the many small frames
/// of a burst (block requests and responses for small files) cost one system call and one
/// wake-up of the I/O thread, not one each. The channel's backpressure holds the writer, not
/// the node. When an index update has been handed over, the node hears of it (the machine
/// sends the next one then: one in flight per connection keeps memory bounded).
final class Connection: Sendable {
    let id: ConnectionID
    let channel: any PeerChannel
    private let metrics: NodeMetrics
    private let indexSent: @Sendable (ConnectionID) async -> Void
    /// The link's protocol when it is not SyncKit's (nil: `WireCodec`).
    let codec: (any LinkCodec)?
    /// Hands the machine what the codec says the peer implied (`LinkCodec.encode`'s loopback).
    private let loopback: @Sendable (WireMessage) async -> Void

    private struct State {
        /// Each message, with the bytes of serving budget its writing gives back.
        var queue = Deque<(WireMessage, serving: Int)>()
        var writing = false
        var closed = false
        var bytesSent = 0
        /// Waiting for the queue to empty (`drained`).
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        /// Bytes of blocks being answered: read, queued or being written.
        var serving = 0
        /// Answers waiting for budget, in order.
        var servingWaiters = Deque<(bytes: Int, continuation: CheckedContinuation<Void, Never>)>()
    }

    /// Bytes of block answers a connection holds at once. A SyncKit peer asks for at most its
    /// request budget (8 MiB); a Syncthing peer asks for up to 32 MiB, and three of them pulling
    /// took a serving node from 60 to 300 MiB: beyond this the answers wait for the writes.
    static let servingBudget = 8 << 20

    private let state = Locked(State())
    /// Blocks answered and not yet reported to the machine.
    private let served = Locked(0)

    init(id: ConnectionID, channel: any PeerChannel, metrics: NodeMetrics, codec: (any LinkCodec)? = nil,
         indexSent: @escaping @Sendable (ConnectionID) async -> Void, loopback: @escaping @Sendable (WireMessage) async -> Void = { _ in }) {
        self.id = id
        self.channel = channel
        self.metrics = metrics
        self.codec = codec
        self.indexSent = indexSent
        self.loopback = loopback
    }

    /// Bytes written so far (frames, length prefix included).
    var bytesSent: Int { state.withLock { $0.bytesSent } }

    /// Queues a message after every message queued before it.
    func send(_ message: WireMessage) { send(message, serving: 0) }

    private func send(_ message: WireMessage, serving: Int) {
        let start = state.withLock { s -> Bool in
            // Closed: the budget was reset when it closed (`endServing`).
            guard !s.closed else { return false }
            s.queue.append((message, serving))
            guard !s.writing else { return false }
            s.writing = true
            return true
        }
        if start { Task { await self.drain() } }
    }

    /// Counts one block answered; true when no count was waiting to be reported, so the
    /// caller must report (`takeServed`, on the node's actor). Answers that finish before that
    /// report runs ride along with it.
    func noteServed() -> Bool {
        served.withLock { n in
            n += 1
            return n == 1
        }
    }

    /// The answers counted since the last call.
    func takeServed() -> Int {
        served.withLock { n in
            defer { n = 0 }
            return n
        }
    }

    /// Writes what is queued in batches of up to 4 MiB, until the queue is empty.
    private func drain() async {
        while true {
            let (batch, idle) = state.withLock { s -> ([(WireMessage, serving: Int)], [CheckedContinuation<Void, Never>]) in
                let b = Array(s.queue)
                s.queue.removeAll()
                guard b.isEmpty || s.closed else { return (b, []) }
                s.writing = false
                defer { s.drainWaiters.removeAll() }
                return ([], s.drainWaiters)
            }
            for w in idle { w.resume() }
            if batch.isEmpty { return }
            var frames = [Frame]()
            var bytes = 0
            var indexUpdates = 0
            var looped = [WireMessage]()
            // Serving budget the frames in hand give back once written.
            var serving = 0
            for (message, budget) in batch {
                serving += budget
                if case .indexUpdate = message { indexUpdates += 1 }
                if let codec {
                    do {
                        let (encoded, back) = try codec.encode(message)
                        for frame in encoded {
                            frames.append(frame)
                            bytes += frame.wireSize
                        }
                        looped += back
                    } catch {
                        // Nothing this node says should fail to translate; if it does, the
                        // link ends rather than going on with a gap.
                        await close()
                        return
                    }
                } else {
                    let frame = WireCodec.encode(message)
                    frames.append(frame)
                    bytes += frame.wireSize
                }
                if bytes >= 4 << 20 {
                    guard await write(frames, bytes) else { return }
                    frames.removeAll()
                    bytes = 0
                    releaseServing(serving)
                    serving = 0
                }
            }
            if !frames.isEmpty {
                guard await write(frames, bytes) else { return }
            }
            releaseServing(serving)
            for m in looped { await loopback(m) }
            for _ in 0..<indexUpdates { await indexSent(id) }
        }
    }

    /// Hands frames to the channel; false (and the outbox closed) when the channel failed: the
    /// receive side then reports the connection closed.
    private func write(_ frames: [Frame], _ bytes: Int) async -> Bool {
        do {
            try await channel.send(contentsOf: frames)
            state.withLock { $0.bytesSent += bytes }
            metrics.bytesSent.increment(by: bytes)
            return true
        } catch {
            let (waiters, servingWaiters) = state.withLock { s -> ([CheckedContinuation<Void, Never>], [CheckedContinuation<Void, Never>]) in
                s.closed = true
                s.queue.removeAll()
                s.writing = false
                defer { s.drainWaiters.removeAll() }
                return (s.drainWaiters, Self.endServing(&s))
            }
            for w in waiters + servingWaiters { w.resume() }
            await channel.close()
            return false
        }
    }

    /// Returns once everything queued so far is written (or the connection closed).
    func drained() async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { s -> Bool in
                guard s.writing && !s.closed else { return true }
                s.drainWaiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Drops what is queued and closes the channel (its inbound stream then ends).
    func close() async {
        let (waiters, servingWaiters) = state.withLock { s -> ([CheckedContinuation<Void, Never>], [CheckedContinuation<Void, Never>]) in
            s.closed = true
            s.queue.removeAll()
            defer { s.drainWaiters.removeAll() }
            return (s.drainWaiters, Self.endServing(&s))
        }
        for w in waiters + servingWaiters { w.resume() }
        await channel.close()
    }

    /// Reads frames until the connection ends, decoding each (off the node's actor) and handing
    /// it to `deliver` with its size on the wire; returns why the connection ended.
    func receive(_ deliver: @Sendable (WireMessage, Int) async -> Void) async -> String {
        var reason = "connection closed"
        do {
            for try await frame in channel.inbound {
                if let codec {
                    let messages: [WireMessage]
                    do { messages = try codec.decode(frame) } catch {
                        reason = "\(error)"
                        break
                    }
                    // The frame's size counts once, with its first message.
                    for (i, m) in messages.enumerated() { await deliver(m, i == 0 ? frame.wireSize : 0) }
                    continue
                }
                let message: WireMessage
                do { message = try WireCodec.decode(frame) } catch {
                    reason = "undecodable message: \(error)"
                    break
                }
                await deliver(message, frame.wireSize)
            }
        } catch {
            reason = "\(error)"
        }
        await close()
        return reason
    }

    /// Answers a block request with the block read from `folder` at `location` (nil, or a
    /// block that cannot be read: "not found").
    func answer(_ request: WireMessage.BlockRequest, at location: BlockMap.Location?, from folder: any LocalFolder) async {
        // The block is read only when the connection's serving budget has room for it, and the
        // room is given back once its answer is written (`drain`).
        let cost = min(Int(request.size), Self.servingBudget)
        await acquireServing(cost)
        var response = WireMessage.BlockResponse(id: request.id, status: .notFound, data: ByteBuffer())
        if let location, let data = folder.readBlock(location),
           // A peer of another protocol names blocks it may not verify the way ours do (or
           // asks for any range): what is sent is checked against the hash asked for, so a
           // file that changed since it was announced gets "not found", never other bytes.
           codec == nil || data.withUnsafeReadableBytes({ Chunker.hash($0) }) == request.hash {
            response.status = .ok
            response.data = data
        }
        send(.blockResponse(response), serving: cost)
    }

    // MARK: serving budget

    /// Waits until `bytes` more of block answers fit in `servingBudget` (at once when none is
    /// held: one answer larger than the budget still goes, alone), then holds them.
    private func acquireServing(_ bytes: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.closed || s.serving == 0 || s.serving + bytes <= Self.servingBudget && s.servingWaiters.isEmpty {
                    if !s.closed { s.serving += bytes }
                    return true
                }
                s.servingWaiters.append((bytes, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Gives back `bytes` of the budget and lets waiting answers in, in order, while they fit.
    private func releaseServing(_ bytes: Int) {
        guard bytes > 0 else { return }
        let ready = state.withLock { s in Self.release(bytes, in: &s) }
        for c in ready { c.resume() }
    }

    private static func release(_ bytes: Int, in s: inout State) -> [CheckedContinuation<Void, Never>] {
        s.serving = max(0, s.serving - bytes)
        var ready = [CheckedContinuation<Void, Never>]()
        while let next = s.servingWaiters.first, s.serving == 0 || s.serving + next.bytes <= servingBudget {
            s.servingWaiters.removeFirst()
            s.serving += next.bytes
            ready.append(next.continuation)
        }
        return ready
    }

    /// The connection ended: every waiting answer goes on (and finds it closed).
    private static func endServing(_ s: inout State) -> [CheckedContinuation<Void, Never>] {
        s.serving = 0
        defer { s.servingWaiters.removeAll() }
        return s.servingWaiters.map(\.continuation)
    }
}
