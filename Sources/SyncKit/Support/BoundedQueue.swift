/// A single-consumer FIFO with a bound on how many elements and how many bytes it holds; `push`
/// suspends while it is full. TransportTCP uses it to hand frames from a connection's reader task
/// to the consumer of `inbound` (while it is full the reader stops pulling from NIO, NIO stops
/// reading the socket, and the peer's TCP window closes, which suspends the peer's `send`), and
/// SyncKitTesting for each direction of an in-memory link. It is `package`: shared by the
/// modules of this package, not part of SyncKit's public API.
///
/// - An element is admitted when the queue is empty (so a single element larger than the byte
///   bound still gets through) or when it fits both bounds and no earlier sender is waiting
///   (senders are admitted in the order they arrived).
/// - `finish` ends the queue gracefully: elements already admitted are still delivered, then
///   the consumer sees the end (or `endError`). `terminate` drops them and ends at once.
/// - Waiting senders fail with the `sendError` given to whichever of the two came first; later
///   pushes throw it too. Both are idempotent: the first call decides the errors.
package final class BoundedQueue<Element: Sendable>: Sendable {
    private struct Waiter {
        var id: UInt64
        var element: Element
        var cost: Int
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var buffer: [(element: Element, cost: Int)] = []
        var head = 0
        var bufferedCost = 0
        var waiters: [Waiter] = []
        var receiver: (id: UInt64, continuation: CheckedContinuation<Element?, any Error>)?
        var ended = false
        var endError: (any Error)?
        var sendError: (any Error)?
        var nextID: UInt64 = 0

        var count: Int { buffer.count - head }

        func admits(cost: Int, maxCount: Int, maxCost: Int) -> Bool {
            count == 0 || (count < maxCount && bufferedCost + cost <= maxCost)
        }

        mutating func append(_ element: Element, cost: Int) {
            buffer.append((element, cost))
            bufferedCost += cost
        }

        mutating func popFirst() -> Element? {
            guard head < buffer.count else { return nil }
            let (element, cost) = buffer[head]
            head += 1
            bufferedCost -= cost
            if head == buffer.count {
                buffer.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 64 {
                buffer.removeFirst(head)
                head = 0
            }
            return element
        }

        /// Moves waiting senders into the buffer while they fit; returns whom to resume.
        mutating func admitWaiters(maxCount: Int, maxCost: Int) -> [CheckedContinuation<Void, any Error>] {
            var admitted: [CheckedContinuation<Void, any Error>] = []
            while let first = waiters.first, admits(cost: first.cost, maxCount: maxCount, maxCost: maxCost) {
                waiters.removeFirst()
                append(first.element, cost: first.cost)
                admitted.append(first.continuation)
            }
            return admitted
        }
    }

    private enum PushAction {
        case resume
        case fail(any Error)
        case deliver(CheckedContinuation<Element?, any Error>)
        case wait
    }

    private enum PopAction {
        case element(Element, [CheckedContinuation<Void, any Error>])
        case end((any Error)?)
        case wait
    }

    private let state = Locked(State())
    private let maxCount: Int
    private let maxCost: Int

    package init(maxCount: Int, maxCost: Int) {
        precondition(maxCount >= 1 && maxCost >= 1)
        self.maxCount = maxCount
        self.maxCost = maxCost
    }

    /// Elements admitted and not yet received.
    var bufferedCount: Int { state.withLock { $0.count } }

    /// Adds `element`, suspending while the queue is full. Throws the queue's send error once it
    /// has ended, or `CancellationError` if the task is cancelled while waiting (the element is
    /// then not queued).
    package func push(_ element: Element, cost: Int) async throws {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let action = state.withLock { state -> PushAction in
                    if let error = state.sendError { return .fail(error) }
                    if Task.isCancelled { return .fail(CancellationError()) }
                    if let receiver = state.receiver {
                        state.receiver = nil
                        return .deliver(receiver.continuation)
                    }
                    if state.waiters.isEmpty, state.admits(cost: cost, maxCount: maxCount, maxCost: maxCost) {
                        state.append(element, cost: cost)
                        return .resume
                    }
                    state.waiters.append(Waiter(id: id, element: element, cost: cost, continuation: continuation))
                    return .wait
                }
                switch action {
                case .resume:
                    continuation.resume()
                case .fail(let error):
                    continuation.resume(throwing: error)
                case .deliver(let receiver):
                    receiver.resume(returning: element)
                    continuation.resume()
                case .wait:
                    break
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// The next element; nil at the end (or when the consuming task is cancelled). Throws the
    /// end error once, if the queue ended with one.
    package func pop() async throws -> Element? {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Element?, any Error>) in
                let action = state.withLock { state -> PopAction in
                    if let element = state.popFirst() {
                        return .element(element, state.admitWaiters(maxCount: maxCount, maxCost: maxCost))
                    }
                    if state.ended {
                        let error = state.endError
                        state.endError = nil
                        return .end(error)
                    }
                    if Task.isCancelled { return .end(nil) }
                    precondition(state.receiver == nil, "BoundedQueue has a single consumer")
                    state.receiver = (id, continuation)
                    return .wait
                }
                switch action {
                case .element(let element, let admitted):
                    for sender in admitted { sender.resume() }
                    continuation.resume(returning: element)
                case .end(let error?):
                    continuation.resume(throwing: error)
                case .end(nil):
                    continuation.resume(returning: nil)
                case .wait:
                    break
                }
            }
        } onCancel: {
            let receiver = state.withLock { state -> CheckedContinuation<Element?, any Error>? in
                guard let receiver = state.receiver, receiver.id == id else { return nil }
                state.receiver = nil
                return receiver.continuation
            }
            receiver?.resume(returning: nil)
        }
    }

    /// Ends the queue after the elements already admitted.
    package func finish(endError: (any Error)? = nil, sendError: any Error) {
        end(dropBuffered: false, endError: endError, sendError: sendError)
    }

    /// Ends the queue now, dropping what it holds.
    package func terminate(endError: (any Error)? = nil, sendError: any Error) {
        end(dropBuffered: true, endError: endError, sendError: sendError)
    }

    private func end(dropBuffered: Bool, endError: (any Error)?, sendError: any Error) {
        let (waiters, receiver, error, failure) = state.withLock { state in
            if dropBuffered {
                state.buffer.removeAll()
                state.head = 0
                state.bufferedCost = 0
            }
            if !state.ended {
                state.ended = true
                state.endError = endError
                state.sendError = sendError
            }
            let waiters = state.waiters
            state.waiters.removeAll()
            let receiver = state.receiver
            state.receiver = nil
            // A waiting receiver means the buffer is empty: it gets the end now.
            let error = receiver == nil ? nil : state.endError
            if receiver != nil { state.endError = nil }
            return (waiters, receiver, error, state.sendError ?? sendError)
        }
        for waiter in waiters { waiter.continuation.resume(throwing: failure) }
        if let receiver {
            if let error { receiver.continuation.resume(throwing: error) } else { receiver.continuation.resume(returning: nil) }
        }
    }
}
