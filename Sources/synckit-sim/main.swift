// synckit-sim: runs whole-cluster simulations (SyncKitTesting's SimulatedCluster and Workload)
// from seeds, on every core, and says which seeds broke an invariant, with a one-line replay.
//
//   synckit-sim                      1,000 seeds (0..<1000)
//   synckit-sim --seeds 5000 --from 1000
//   synckit-sim --seed 42            one seed, with its trace
//   synckit-sim --long               10,000 seeds, longer runs
//   synckit-sim --spill 2            tables spill to SQLite past 2 entries (SpillStore)
//
// Replays are exact under SWIFT_DETERMINISTIC_HASHING=1 (the scripts set it).
import Foundation
import SyncKitTesting

var seeds = 1000
var from: UInt64 = 0
var one: UInt64?
var long = false
var spillLimit: Int?
var arguments = CommandLine.arguments.dropFirst()
while let arg = arguments.popFirst() {
    switch arg {
    case "--seeds": seeds = Int(arguments.popFirst() ?? "") ?? seeds
    case "--from": from = UInt64(arguments.popFirst() ?? "") ?? 0
    case "--seed": one = UInt64(arguments.popFirst() ?? "")
    case "--long": long = true
    case "--spill": spillLimit = Int(arguments.popFirst() ?? "") ?? 2
    default:
        FileHandle.standardError.write(Data("synckit-sim: unknown argument \(arg); see the comment at the top of main.swift\n".utf8))
        exit(2)
    }
}
if ProcessInfo.processInfo.environment["SWIFT_DETERMINISTIC_HASHING"] == nil {
    FileHandle.standardError.write(Data("synckit-sim: set SWIFT_DETERMINISTIC_HASHING=1 for exact replays\n".utf8))
}
if long && seeds == 1000 { seeds = 10_000 }

let report = Simulation.run(seeds: one.map { [$0] } ?? Array(from..<(from + UInt64(seeds))), long: long, trace: one != nil, spillLimit: spillLimit)
print(report.text)
exit(report.failures.isEmpty ? 0 : 1)
