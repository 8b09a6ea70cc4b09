import Foundation
import JournaldLogging
import SyncKit
import Testing

extension Integration {
    /// `syncctl` as an operator meets it: journald logging, graceful and forced stops, status.
    @Suite(.serialized) struct DaemonTests {
        /// The environment the daemons of these tests run with: a cluster key (`run` refuses to
        /// start without one).
        static let environment = ProcessInfo.processInfo.environment.merging(["SYNCKIT_CLUSTER_KEY": "daemon-test-key"]) { $1 }

        /// Runs a command to completion and returns (status, stdout + stderr).
        @discardableResult
        static func run(_ path: String, _ args: [String], env: [String: String] = [:]) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: path)
            p.arguments = args
            p.environment = environment.merging(env) { $1 }
            let pipe = Pipe()
            p.standardOutput = pipe
            p.standardError = pipe
            try p.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: data, as: UTF8.self))
        }

        static func makeFolder(_ label: String) throws -> String {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("synckit-\(label)-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return dir
        }

        /// Starts systemd-journald when no journal runs (as root; CI is root). Returns false if it
        /// cannot be had here.
        static func ensureJournal() async throws -> Bool {
            if JournaldLogHandler.journalIsAvailable { return true }
            guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd-journald") else { return false }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/lib/systemd/systemd-journald")
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            for _ in 0..<100 where !JournaldLogHandler.journalIsAvailable {
                try await Task.sleep(for: .milliseconds(50))
            }
            return JournaldLogHandler.journalIsAvailable
        }

        @Test func logsReachARealJournalWithStructuredFields() async throws {
            guard try await Self.ensureJournal() else {
                Issue.record("no systemd-journald available (needs root and the systemd package)")
                return
            }
            let dir = try Self.makeFolder("journal")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let name = "jtest-\(UUID().uuidString.prefix(6))"
            let ports = try freePorts(2)
            let c = try MultiProcessTests.Cluster(count: 1)
            defer { try? FileManager.default.removeItem(atPath: c.root) }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: MultiProcessTests.syncctl)
            // In open mode (explicit `--open`): it starts, and warns about it in the journal.
            p.arguments = ["run", "--dir", dir, "--port", "\(ports[0])", "--bind", "127.0.0.1", "--name", name, "--peer", "127.0.0.1:\(ports[1])", "--log", "journald", "--log-level", "debug", "--open"]
            p.environment = Self.environment.merging(["SYNCKIT_CLUSTER_KEY": ""]) { $1 }
            p.standardError = FileHandle.nullDevice
            try p.run()
            try await Task.sleep(for: .seconds(2))
            kill(p.processIdentifier, SIGTERM)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)

            var entries = [[String: Any]]()
            for _ in 0..<50 {
                let (_, out) = try Self.run("/usr/bin/journalctl", ["-t", "syncctl", "-o", "json", "--no-pager", "SYNCKIT_NODE=\(name)"])
                entries = out.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                if entries.contains(where: { ($0["MESSAGE"] as? String) == "stopping" }) { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(!entries.isEmpty, "syncctl's entries are in the journal")
            for e in entries {
                #expect(e["SYSLOG_IDENTIFIER"] as? String == "syncctl")
                #expect(e["PRIORITY"] as? String != nil)
                #expect((e["CODE_FILE"] as? String)?.hasSuffix(".swift") == true)
                #expect(Int(e["CODE_LINE"] as? String ?? "") != nil)
                #expect(e["CODE_FUNC"] as? String != nil)
                #expect((e["SYNCKIT_NODE_ID"] as? String).flatMap(NodeID.init) != nil, "the node ID is on every entry")
            }
            let starting = entries.first { ($0["MESSAGE"] as? String) == "starting" }
            #expect(starting?["SYNCKIT_FOLDER"] as? String == dir)
            #expect(starting?["PRIORITY"] as? String == "6")
            let warning = entries.first { ($0["MESSAGE"] as? String)?.hasPrefix("no cluster key") == true }
            #expect(warning?["PRIORITY"] as? String == "4")
        }

        @Test func journaldWithoutAJournalIsAClearError() throws {
            guard !JournaldLogHandler.journalIsAvailable else { return }
            let dir = try Self.makeFolder("nojournal")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let (status, out) = try Self.run(MultiProcessTests.syncctl, ["run", "--dir", dir, "--peer", "127.0.0.1:9", "--log", "journald"])
            #expect(status != 0)
            #expect(out.contains("no systemd journal is running"))
        }

        /// SIGTERM in the middle of a pull: exit 0 within a few seconds, the half-pulled file left
        /// as a temp file at most, and the next start finishes it and leaves no temp file.
        @Test func sigtermStopsGracefullyAndTheNextStartResumes() async throws {
            let c = try MultiProcessTests.Cluster(count: 2)
            defer {
                c.stopAll()
                try? FileManager.default.removeItem(atPath: c.root)
            }
            let big = bytes(192 << 20, seed: 5)
            FileManager.default.createFile(atPath: c.folder(0) + "/big.bin", contents: Data(big))
            try c.start(0)
            try c.start(1)
            let temp = c.folder(1) + "/.big.bin" + PathSafety.tempSuffix
            let deadline = ContinuousClock.now + .seconds(60)
            var caught = false
            while ContinuousClock.now < deadline {
                var st = stat()
                if stat(temp, &st) == 0, st.st_blocks * 512 > 8 << 20 {
                    caught = true
                    break
                }
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(caught, "the pull was under way")
            let removed = c.processes.removeValue(forKey: 1)
            let p = try #require(removed)
            let signalled = ContinuousClock.now
            kill(p.processIdentifier, SIGTERM)
            p.waitUntilExit()
            let took = ContinuousClock.now - signalled
            #expect(p.terminationStatus == 0, "graceful stop exits 0")
            #expect(took < .seconds(5), "stopped in \(took)")
            #expect(FileManager.default.contents(atPath: c.folder(1) + "/big.bin") == nil || FileManager.default.contents(atPath: c.folder(1) + "/big.bin") == Data(big), "never a torn file")
            try c.start(1)
            _ = try await c.waitConverged(timeout: .seconds(120)) { $0["big.bin"] != nil }
            #expect(!FileManager.default.fileExists(atPath: temp))
            report("graceful stop", "SIGTERM mid-pull: exited 0 in \(took)")
        }

        @Test func aSecondSignalExitsAtOnce() async throws {
            let dir = try Self.makeFolder("twice")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let ports = try freePorts(2)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: MultiProcessTests.syncctl)
            p.arguments = ["run", "--dir", dir, "--port", "\(ports[0])", "--bind", "127.0.0.1", "--peer", "127.0.0.1:\(ports[1])", "--log", "stderr"]
            p.environment = Self.environment.merging(["SYNCKIT_TEST_SHUTDOWN_DELAY_MS": "6000"]) { $1 }
            p.standardError = FileHandle.nullDevice
            try p.run()
            try await Task.sleep(for: .seconds(1))
            kill(p.processIdentifier, SIGINT)
            try await Task.sleep(for: .milliseconds(300))
            #expect(p.isRunning, "the first signal starts a (slow) graceful shutdown")
            let second = ContinuousClock.now
            kill(p.processIdentifier, SIGINT)
            p.waitUntilExit()
            #expect(ContinuousClock.now - second < .seconds(1))
            #expect(p.terminationStatus == 130)
        }

        @Test func statusAndPeersAskTheRunningDaemon() async throws {
            let c = try MultiProcessTests.Cluster(count: 2)
            defer {
                c.stopAll()
                try? FileManager.default.removeItem(atPath: c.root)
            }
            FileManager.default.createFile(atPath: c.folder(0) + "/hello.txt", contents: Data("hi\n".utf8))
            try c.start(0)
            try c.start(1)
            _ = try await c.waitConverged(timeout: .seconds(30)) { $0["hello.txt"] != nil }
            try await Task.sleep(for: .milliseconds(500))
            let (status, text) = try Self.run(MultiProcessTests.syncctl, ["status", "--dir", c.folder(1)])
            #expect(status == 0, "\(text)")
            #expect(text.contains("peers     1 connected"))
            #expect(text.contains("state     in sync"))
            #expect(text.contains("n0"))
            print("[status output]\n\(text)")
            let (_, json) = try Self.run(MultiProcessTests.syncctl, ["status", "--dir", c.folder(1), "--json"])
            let decoded = try JSONDecoder().decode(NodeStatus.self, from: Data(json.utf8))
            #expect(decoded.peers.count == 1)
            #expect(decoded.files == 1)
            #expect(decoded.name == "n1")
            let (_, peers) = try Self.run(MultiProcessTests.syncctl, ["peers", "--dir", c.folder(1)])
            #expect(peers.contains("n0\t127.0.0.1"))
            // The socket is for the owner only.
            var st = stat()
            #expect(stat(c.folder(1) + "/.synckit/control.sock", &st) == 0)
            #expect(st.st_mode & 0o777 == 0o600)
            // A folder with no daemon says so.
            let empty = try Self.makeFolder("nodaemon")
            defer { try? FileManager.default.removeItem(atPath: empty) }
            let (code, message) = try Self.run(MultiProcessTests.syncctl, ["status", "--dir", empty])
            #expect(code != 0)
            #expect(message.contains("No syncctl daemon is running"))
        }

        /// `--metrics-address` serves Prometheus text, and `--config` fills flags (typed flags win).
        @Test func metricsEndpointAndConfigFile() async throws {
            let dir = try Self.makeFolder("metrics")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let ports = try freePorts(3)
            let config = dir + "/.synckit-test-config.yaml"
            try """
                port: \(ports[0])
                bind: 127.0.0.1
                peer: ["127.0.0.1:\(ports[1])"]
                name: from-file
                log: stderr
                metrics-address: 127.0.0.1:\(ports[2])
                """.write(toFile: config, atomically: true, encoding: .utf8)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: MultiProcessTests.syncctl)
            p.arguments = ["run", "--config", config, "--dir", dir, "--name", "from-flag"]
            p.environment = Self.environment
            p.standardError = FileHandle.nullDevice
            try p.run()
            defer {
                kill(p.processIdentifier, SIGTERM)
                p.waitUntilExit()
            }
            var body = ""
            for _ in 0..<100 {
                body = (try? httpGet(port: ports[2], path: "/metrics")) ?? ""
                if body.contains("synckit_files_hashed_total") { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(body.contains("synckit_peers_connected"))
            #expect(body.contains("synckit_files_hashed_total{node=\"from-flag\"}"), "the name typed on the command line wins")
            let (_, text) = try Self.run(MultiProcessTests.syncctl, ["status", "--dir", dir, "--json"])
            let status = try JSONDecoder().decode(NodeStatus.self, from: Data(text.utf8))
            #expect(status.port == ports[0], "the port comes from the file")
            #expect(status.name == "from-flag")
            let (code, message) = try Self.run(MultiProcessTests.syncctl, ["run", "--config", dir + "/missing.yaml", "--dir", dir])
            #expect(code != 0 && message.contains("cannot read the config file"))
        }
    }
}

/// Calls `body` with 127.0.0.1:`port` as a `sockaddr` and its length (for bind or connect).
func withLoopbackAddress<T>(port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

/// A minimal HTTP/1.0 GET on 127.0.0.1, returning the whole response.
func httpGet(port: Int, path: String) throws -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    let ok = withLoopbackAddress(port: port) { connect(fd, $0, $1) == 0 }
    guard ok else { throw SyncError(.transport, "connection refused") }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    _ = write(fd, request, request.count)
    var out = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        out += buffer[..<n]
    }
    return String(decoding: out, as: UTF8.self)
}
