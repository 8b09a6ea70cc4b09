import Foundation

/// A value guarded by a lock, for the small amounts of state the transports, discoveries and
/// fakes of this package share across tasks (`package`, not public API). A lock rather than an
/// actor because several operations (yielding into streams, resuming continuations) must happen
/// synchronously with the state change, and callers resume continuations only after the lock
/// is released.
package final class Locked<State>: @unchecked Sendable {
    private let lock = NSLock()
    private var state: State

    package init(_ state: State) {
        self.state = state
    }

    package func withLock<Result>(_ body: (inout State) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&state)
    }
}
