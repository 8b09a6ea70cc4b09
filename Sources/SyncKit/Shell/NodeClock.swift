/// The clock a node's shell reads and sleeps on: time since the node started, as a `Duration`
/// (which is what `NodeMachine` takes), over any `Clock` (a manual clock in tests).
struct NodeClock: Sendable {
    private let nowFunction: @Sendable () -> Duration
    private let sleepFunction: @Sendable (Duration) async throws -> Void

    init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let start = clock.now
        nowFunction = { start.duration(to: clock.now) }
        sleepFunction = { offset in try await clock.sleep(until: start.advanced(by: offset), tolerance: nil) }
    }

    /// Time since the node started.
    var now: Duration { nowFunction() }

    /// Sleeps until `offset` after the start (throws when cancelled).
    func sleep(until offset: Duration) async throws { try await sleepFunction(offset) }
}
