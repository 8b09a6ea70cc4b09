import NIOCore

/// The jobs' waits for blocks: each fetch a job asks for waits here until the machine delivers
/// an answer (`Directive.deliver`), the job is cancelled, or the node stops.
final class BlockFetches: Sendable {
    typealias Answer = (data: ByteBuffer?, peer: NodeID?)

    private struct State {
        var next: UInt64 = 1
        var waiters: [FetchID: CheckedContinuation<Answer, Never>] = [:]
    }

    private let state = Locked(State())

    /// A new fetch ID.
    func newFetch() -> FetchID {
        state.withLock { s in
            defer { s.next += 1 }
            return FetchID(s.next)
        }
    }

    func wait(_ fetch: FetchID, _ continuation: CheckedContinuation<Answer, Never>) {
        state.withLock { $0.waiters[fetch] = continuation }
    }

    /// Hands the answer to the job waiting for `fetch`; false when none waits any more.
    @discardableResult
    func deliver(_ fetch: FetchID, _ answer: Answer) -> Bool {
        guard let waiter = state.withLock({ $0.waiters.removeValue(forKey: fetch) }) else { return false }
        waiter.resume(returning: answer)
        return true
    }

    /// Wakes every waiting job with "no answer" (the node stops).
    func failAll() {
        let all = state.withLock { s -> [CheckedContinuation<Answer, Never>] in
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        for w in all { w.resume(returning: (nil, nil)) }
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
                node.progress.add(target.path, bytes: UInt64(block.size))
                return data
            }
            guard let peer else { return nil }
            tried.insert(peer)
        }
        return nil
    }
}
