import Foundation
import SyncKit
import Testing
import TransportTCP

extension Integration {
    /// Real `syncctl run` processes talking TCP on 127.0.0.1: what a user runs, including a node
    /// killed with SIGKILL in the middle of receiving a large file.
    @Suite(.serialized) struct MultiProcessTests {
        /// The syncctl binary built next to the tests (or `SYNCCTL_BIN`).
        static var syncctl: String {
            if let env = ProcessInfo.processInfo.environment["SYNCCTL_BIN"] { return env }
            var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            dir.appendPathComponent(".build/debug/syncctl")
            return dir.path
        }

        final class Cluster: @unchecked Sendable {
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("synckit-mp-\(UUID().uuidString.prefix(8))").path
            var ports: [Int] = []
            var processes: [Int: Process] = [:]
            let count: Int
            /// Flags every node gets besides the usual ones.
            var extraArgs: [String] = []
            /// A command that runs syncctl for the test (`setpriv` to drop root), if any.
            var launcher: [String] = []

            init(count: Int) throws {
                self.count = count
                ports = try freePorts(count)
                for i in 0..<count { try FileManager.default.createDirectory(atPath: folder(i), withIntermediateDirectories: true) }
            }

            func folder(_ i: Int) -> String { root + "/n\(i)" }
            func logPath(_ i: Int) -> String { root + "/n\(i).log" }

            func start(_ i: Int) throws {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: MultiProcessTests.syncctl)
                var args = ["run", "--dir", folder(i), "--port", "\(ports[i])", "--bind", "127.0.0.1", "--name", "n\(i)", "--log", "stderr", "--log-level", "info"]
                for j in 0..<count where j != i { args += ["--peer", "127.0.0.1:\(ports[j])"] }
                p.arguments = args + extraArgs
                if let tool = launcher.first {
                    p.executableURL = URL(fileURLWithPath: tool)
                    p.arguments = Array(launcher.dropFirst()) + [MultiProcessTests.syncctl] + args + extraArgs
                }
                var env = ProcessInfo.processInfo.environment
                env["SYNCKIT_CLUSTER_KEY"] = "multi-process-test"
                p.environment = env
                FileManager.default.createFile(atPath: logPath(i), contents: nil)
                let log = FileHandle(forWritingAtPath: logPath(i))!
                log.seekToEndOfFile()
                p.standardError = log
                p.standardOutput = log
                try p.run()
                processes[i] = p
            }

            func kill(_ i: Int, signal: Int32) {
                guard let p = processes.removeValue(forKey: i) else { return }
                Foundation.kill(p.processIdentifier, signal)
                p.waitUntilExit()
            }

            func stopAll() {
                for i in Array(processes.keys) { kill(i, signal: SIGTERM) }
            }

            func logs() -> String {
                (0..<count).map { "---- n\($0) ----\n" + ((try? String(contentsOfFile: logPath($0), encoding: .utf8)) ?? "") }.joined(separator: "\n")
            }

            /// Waits until all folders hold the same content for 0.5 s in a row.
            func waitConverged(timeout: Duration, where extra: ([String: String]) -> Bool = { _ in true }) async throws -> Duration {
                let start = ContinuousClock.now
                var stableSince: ContinuousClock.Instant?
                while ContinuousClock.now - start < timeout {
                    let snaps = (0..<count).map { TestCluster.snapshot(of: folder($0)) }
                    if snaps.allSatisfy({ $0 == snaps[0] }) && extra(snaps[0]) {
                        if let s = stableSince, ContinuousClock.now - s > .milliseconds(500) { return s - start }
                        stableSince = stableSince ?? ContinuousClock.now
                    } else {
                        stableSince = nil
                    }
                    try await Task.sleep(for: .milliseconds(20))
                }
                print(logs())
                throw TestCluster.NotConverged(description: "the \(count) syncctl processes did not converge within \(timeout)")
            }
        }

        @Test func fourProcessesConvergeAndSurviveASIGKILLMidTransfer() async throws {
            guard FileManager.default.isExecutableFile(atPath: Self.syncctl) else {
                Issue.record("syncctl is not built at \(Self.syncctl); run `swift build` first")
                return
            }
            let c = try Cluster(count: 4)
            defer {
                c.stopAll()
                try? FileManager.default.removeItem(atPath: c.root)
            }
            for i in 0..<4 {
                FileManager.default.createFile(atPath: c.folder(i) + "/unique-\(i).txt", contents: Data("node \(i)\n".utf8))
                try FileManager.default.createDirectory(atPath: c.folder(i) + "/dir\(i)", withIntermediateDirectories: true)
                FileManager.default.createFile(atPath: c.folder(i) + "/dir\(i)/blob.bin", contents: Data(bytes(500_000, seed: UInt64(i))))
            }
            for i in 0..<4 { try c.start(i) }
            let first = try await c.waitConverged(timeout: .seconds(60)) { $0.count == 12 }

            // A 256 MiB file appears on node 0; node 3 is killed while it is receiving it.
            let big = bytes(256 << 20, seed: 256)
            let started = ContinuousClock.now
            FileManager.default.createFile(atPath: c.folder(0) + "/big.bin", contents: Data(big))
            let temp = c.folder(3) + "/.big.bin" + PathSafety.tempSuffix
            var killedAt: UInt64 = 0
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline {
                var st = stat()
                if stat(temp, &st) == 0 {
                    let written = UInt64(st.st_blocks) * 512
                    if written > 16 << 20 && written < 200 << 20 {
                        killedAt = written
                        c.kill(3, signal: SIGKILL)
                        break
                    }
                }
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(killedAt > 0, "node 3 was killed mid-transfer")
            let othersDone = try await Task {
                while !(1...2).allSatisfy({ FileManager.default.contents(atPath: c.folder($0) + "/big.bin")?.count == big.count }) {
                    try await Task.sleep(for: .milliseconds(20))
                }
                return ContinuousClock.now - started
            }.value
            try c.start(3)
            let restarted = ContinuousClock.now
            let afterRestart = try await c.waitConverged(timeout: .seconds(120)) { $0["big.bin"] != nil }
            #expect(FileManager.default.contents(atPath: c.folder(3) + "/big.bin") == Data(big))
            for i in 0..<4 {
                let temps = (FileManager.default.enumerator(atPath: c.folder(i))?.allObjects as? [String] ?? []).filter { $0.hasSuffix(PathSafety.tempSuffix) }
                #expect(temps.isEmpty, "node \(i) left temp files: \(temps)")
            }
            report("4 syncctl processes", "first convergence \(first); 256 MiB on nodes 1-2 after \(othersDone); node 3 SIGKILLed with \(killedAt >> 20) MiB written, converged \(afterRestart) after restart (\(ContinuousClock.now - restarted) total)")
        }
    }
}

/// Free TCP ports on 127.0.0.1, for processes the tests start.
func freePorts(_ count: Int) throws -> [Int] { try TCPTransport.freeLoopbackPorts(count) }
