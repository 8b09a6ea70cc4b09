import SyncKit

/// A requirement of a SyncKit plugin protocol that an implementation did not meet, as found by
/// `TransportConformance` or `DiscoveryConformance`.
///
/// The kits throw it instead of recording test issues so they work under any test framework:
/// `try await TransportConformance(...).run()` fails the test with this message.
public struct ConformanceFailure: Error, CustomStringConvertible, Sendable {
    /// The check that failed, e.g. `"framesArriveInOrder"`.
    public var check: String
    /// What was expected and what happened.
    public var message: String
    /// The error the implementation threw, if that is what went wrong.
    public var underlying: (any Error)?

    /// Creates a failure of `check`.
    public init(check: String, _ message: String, underlying: (any Error)? = nil) {
        self.check = check
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying { return "conformance check '\(check)' failed: \(message) (\(underlying))" }
        return "conformance check '\(check)' failed: \(message)"
    }
}

/// Runs `body` and fails `check` if it takes longer than `limit`.
///
/// The body runs in a child task that is cancelled at the deadline; the helper returns (throws)
/// once that child has ended, so implementations that ignore cancellation can still hang it.
func withDeadline<Result: Sendable>(
    _ limit: Duration,
    check: String,
    _ what: String,
    _ body: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Result?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let result = first else {
            throw ConformanceFailure(check: check, "timed out after \(limit) waiting for \(what)")
        }
        return result
    }
}

/// A thread-safe counter the kits use to watch progress of a task from outside it.
final class Counter: Sendable {
    private let value = Locked(0)
    func increment() { value.withLock { $0 += 1 } }
    var current: Int { value.withLock { $0 } }
}
