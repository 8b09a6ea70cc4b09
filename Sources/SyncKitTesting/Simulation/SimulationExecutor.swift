import Foundation
import SyncKit

/// Runs tasks one at a time, in the order they became ready, on the thread that calls
/// `runUntilIdle`. A simulation starts the async code it drives (a folder applying a job) on it
/// with `Task(executorPreference:)`; a continuation resumed later puts the task back here, so
/// nothing runs until the simulation says so, and every run of a seed interleaves the same way.
final class SimulationExecutor: TaskExecutor, @unchecked Sendable {
    private let lock = NSLock()
    private var queue: [UnownedJob] = []

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        lock.withLock { queue.append(unowned) }
    }

    func asUnownedTaskExecutor() -> UnownedTaskExecutor { UnownedTaskExecutor(ordinary: self) }

    /// Runs ready tasks until none is left (each runs until it suspends or ends).
    func runUntilIdle() {
        while let job = lock.withLock({ queue.isEmpty ? nil : queue.removeFirst() }) {
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }

    /// Runs `body` to completion on this executor and returns its result. `body` must not wait
    /// for anything the simulation has yet to do.
    func run<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let result = Locked<T?>(nil)
        Task(executorPreference: self) { result.withLock { $0 = nil }; let value = await body(); result.withLock { $0 = value } }
        runUntilIdle()
        guard let value = result.withLock({ $0 }) else { fatalError("a simulated call did not finish on its own") }
        return value
    }
}
