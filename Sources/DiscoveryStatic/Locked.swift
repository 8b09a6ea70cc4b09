import Foundation

/// A value guarded by a lock, for the small amounts of state the discovery shares across
/// tasks. A lock rather than an actor because several operations (yielding into streams,
/// resuming continuations) must happen synchronously with the state change, and callers take
/// care to resume continuations only after the lock is released.
final class Locked<State>: @unchecked Sendable {
    private let lock = NSLock()
    private var state: State

    init(_ state: State) {
        self.state = state
    }

    func withLock<Result>(_ body: (inout State) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&state)
    }
}
