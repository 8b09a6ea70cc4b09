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
        var queue = Deque<WireMessage>()
        var writing = false
        var closed = false
        var bytesSent = 0
        /// Waiting for the queue to empty (`drained`).
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
    }

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
    func send(_ message: WireMessage) {
        let start = state.withLock { s -> Bool in
            guard !s.closed else { return false }
            s.queue.append(message)
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
            let (batch, idle) = state.withLock { s -> ([WireMessage], [CheckedContinuation<Void, Never>]) in
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
            for message in batch {
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
                }
            }
            if !frames.isEmpty {
                guard await write(frames, bytes) else { return }
            }
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
            let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                s.closed = true
                s.queue.removeAll()
                s.writing = false
                defer { s.drainWaiters.removeAll() }
                return s.drainWaiters
            }
            for w in waiters { w.resume() }
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
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.closed = true
            s.queue.removeAll()
            defer { s.drainWaiters.removeAll() }
            return s.drainWaiters
        }
        for w in waiters { w.resume() }
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
    func answer(_ request: WireMessage.BlockRequest, at location: BlockMap.Location?, from folder: any LocalFolder) {
        var response = WireMessage.BlockResponse(id: request.id, status: .notFound, data: ByteBuffer())
        if let location, let data = folder.readBlock(location),
           // A peer of another protocol names blocks it may not verify the way ours do (or
           // asks for any range): what is sent is checked against the hash asked for, so a
           // file that changed since it was announced gets "not found", never other bytes.
           codec == nil || data.withUnsafeReadableBytes({ Chunker.hash($0) }) == request.hash {
            response.status = .ok
            response.data = data
        }
        send(.blockResponse(response))
    }
}
