/// The machine's timers on the node's clock: each `TimerID` is armed at one instant or not at
/// all, and one task sleeps until the earliest instant, then hands every timer that is due to
/// `fire` (in deadline order) and sleeps again. No polling: with nothing armed, nothing runs.
final class Timers: Sendable {
    private struct State {
        var deadlines: [TimerID: Duration] = [:]
        var sleeper: Task<Void, Never>?
        var stopped = false
    }

    private let state = Locked(State())
    private let clock: NodeClock
    private let fire: @Sendable ([TimerID]) async -> Void

    init(clock: NodeClock, fire: @escaping @Sendable ([TimerID]) async -> Void) {
        self.clock = clock
        self.fire = fire
    }

    /// Arms `id` at `at` (time since the node started), replacing an earlier arming.
    func set(_ id: TimerID, at: Duration) {
        state.withLock { $0.deadlines[id] = at }
        rearm()
    }

    func cancel(_ id: TimerID) {
        state.withLock { _ = $0.deadlines.removeValue(forKey: id) }
    }

    /// Disarms everything for good.
    func stop() {
        state.withLock {
            $0.stopped = true
            $0.deadlines.removeAll()
            $0.sleeper?.cancel()
        }
    }

    /// Restarts the sleeper for the earliest deadline.
    private func rearm() {
        state.withLock { s in
            s.sleeper?.cancel()
            guard !s.stopped, let next = s.deadlines.values.min() else { return }
            let clock = self.clock
            s.sleeper = Task {
                do { try await clock.sleep(until: next) } catch { return }
                let now = clock.now
                let due = self.state.withLock { s -> [TimerID] in
                    let due = s.deadlines.filter { $0.value <= now }.sorted { $0.value < $1.value }.map(\.key)
                    for id in due { s.deadlines[id] = nil }
                    return due
                }
                await self.fire(due)
                self.rearm()
            }
        }
    }
}
