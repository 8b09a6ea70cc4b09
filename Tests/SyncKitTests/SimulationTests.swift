import Foundation
import SyncKit
import SyncKitTesting
import Testing

/// Whole clusters simulated from seeds: real node machines, sessions, engine, codec and folder
/// logic on in-memory disks, a simulated network with delays, resets and partitions, crashes,
/// restarts and a simulated clock. Each seed must end converged with every invariant holding.
///
/// `SYNCKIT_SIM_SEEDS=N` runs N seeds (default 1,000); `SYNCKIT_SIM_SEED=S` replays one seed and
/// prints its trace. Replays are exact with `SWIFT_DETERMINISTIC_HASHING=1` (scripts/test.sh
/// sets it).
@Suite struct SimulationTests {
    static let seeds: Int = ProcessInfo.processInfo.environment["SYNCKIT_SIM_SEEDS"].flatMap(Int.init) ?? 1000

    /// Runs one seed; returns its problems (empty: good) and a summary.
    static func run(seed: UInt64) -> (problems: [String], summary: String, cluster: SimulatedCluster) {
        var options = SimulatedCluster.Options()
        options.nodes = 3 + Int(seed % 3)
        let cluster = SimulatedCluster(seed: seed, options: options)
        let workload = Workload(cluster: cluster)
        workload.run()
        return (workload.check(), workload.summary, cluster)
    }

    @Test func manySeedsConvergeWithEveryInvariantHolding() {
        if let one = ProcessInfo.processInfo.environment["SYNCKIT_SIM_SEED"].flatMap(UInt64.init) {
            let (problems, summary, cluster) = Self.run(seed: one)
            print(summary)
            print(cluster.trace.suffix(400).joined(separator: "\n"))
            #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
            return
        }
        let failures = Locked<[(UInt64, [String])]>([])
        let summaries = Locked<[String]>([])
        let started = Date()
        let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for seed in stride(from: worker, to: Self.seeds, by: workers) {
                let (problems, summary, _) = Self.run(seed: UInt64(seed))
                if seed < 3 { summaries.withLock { $0.append(summary) } }
                if !problems.isEmpty { failures.withLock { $0.append((UInt64(seed), problems)) } }
            }
        }
        let elapsed = Date().timeIntervalSince(started)
        for s in summaries.withLock({ $0 }) { print(s) }
        print("simulation: \(Self.seeds) seeds in \(String(format: "%.1f", elapsed)) s, \(failures.withLock { $0.count }) failed")
        for (seed, problems) in failures.withLock({ $0 }).sorted(by: { $0.0 < $1.0 }).prefix(10) {
            let replay = "SWIFT_DETERMINISTIC_HASHING=1 SYNCKIT_SIM_SEED=\(seed) swift test --filter SimulationTests"
            Issue.record(Comment(rawValue: "seed \(seed) failed; replay: \(replay)\n" + problems.prefix(20).joined(separator: "\n")))
        }
    }
}
