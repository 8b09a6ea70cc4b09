import Foundation
import SyncKit

/// Runs many seeds of the whole-cluster simulation on every core and sums them up: what
/// `SimulationTests` and `synckit-sim` share.
public enum Simulation {
    /// The outcome of a batch of seeds.
    public struct Report: Sendable {
        /// Each failing seed with what broke.
        public var failures: [(seed: UInt64, problems: [String])]
        public var seeds: Int
        public var seconds: Double
        /// Totals over all seeds: operations by kind, and the longest time to settle.
        public var totals: [String: Int]
        public var longestSettle: Duration
        /// The trace of the last seed when one seed was run with `trace`.
        public var trace: [String]

        /// A human summary, with a replay command per failing seed.
        public var text: String {
            var lines = ["simulation: \(seeds) seeds in \(String(format: "%.1f", seconds)) s; \(failures.count) failed; "
                + totals.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                + "; longest settle \(longestSettle.milliseconds) ms (simulated)"]
            lines += trace
            for (seed, problems) in failures.prefix(20) {
                lines.append("seed \(seed) failed; replay: SWIFT_DETERMINISTIC_HASHING=1 synckit-sim --seed \(seed)")
                lines += problems.prefix(20).map { "  " + $0 }
            }
            return lines.joined(separator: "\n")
        }
    }

    /// One seed: a cluster of 3 to 5 nodes (from the seed) under the workload.
    /// With `spillLimit`, the nodes' tables spill to SQLite past that many entries.
    public static func run(seed: UInt64, long: Bool = false, spillLimit: Int? = nil) -> (problems: [String], workload: Workload) {
        var options = SimulatedCluster.Options()
        options.nodes = 3 + Int(seed % 3)
        options.spillLimit = spillLimit
        var workloadOptions = Workload.Options()
        if long {
            workloadOptions.duration = .seconds(60)
            workloadOptions.operations = 120
            workloadOptions.faults = 25
        }
        let workload = Workload(cluster: SimulatedCluster(seed: seed, options: options), options: workloadOptions)
        workload.run()
        return (workload.check(), workload)
    }

    /// Many seeds, spread over the machine's cores.
    public static func run(seeds: [UInt64], long: Bool = false, trace: Bool = false, spillLimit: Int? = nil) -> Report {
        let results = Locked<(failures: [(UInt64, [String])], totals: [String: Int], longest: Duration, trace: [String])>(([], [:], .zero, []))
        let started = Date()
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, seeds.count))
        // Threads of their own, not `concurrentPerform`: on Linux that runs on Dispatch's global
        // queue, whose threads are the cooperative pool's, and a test run's async tests (and
        // the resolver) waited for the whole simulation.
        let runSeeds: @Sendable (Int) -> Void = { worker in
            for i in stride(from: worker, to: seeds.count, by: workers) {
                let (problems, workload) = run(seed: seeds[i], long: long, spillLimit: spillLimit)
                results.withLock { r in
                    if !problems.isEmpty { r.failures.append((seeds[i], problems)) }
                    for (k, v) in workload.counts { r.totals[k, default: 0] += v }
                    r.longest = max(r.longest, workload.settledAfter ?? .zero)
                    if trace { r.trace = [workload.summary] + workload.cluster.trace.suffix(400) }
                }
            }
        }
        let finished = DispatchGroup()
        for worker in 0..<workers {
            finished.enter()
            Thread.detachNewThread {
                runSeeds(worker)
                finished.leave()
            }
        }
        finished.wait()
        let r = results.withLock { $0 }
        return Report(failures: r.failures.sorted { $0.0 < $1.0 }, seeds: seeds.count, seconds: Date().timeIntervalSince(started),
                      totals: r.totals, longestSettle: r.longest, trace: r.trace)
    }
}
