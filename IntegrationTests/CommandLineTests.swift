import Foundation
import SyncKit
import Testing
import TransportTCP

extension Integration {
    /// Bad input to `syncctl` gets one clear sentence and a non-zero exit status.
    @Suite struct CommandLineTests {
        static func syncctl(_ args: [String]) throws -> (Int32, String) {
            try DaemonTests.run(MultiProcessTests.syncctl, args)
        }

        @Test(arguments: [
            (["run", "--dir", "/nonexistent/folder", "--peer", "a:1"], "does not exist"),
            (["run", "--dir", "/tmp"], "--discovery static needs at least one --peer"),
            (["run", "--dir", "/tmp", "--peer", "nocolon"], "is not a peer address"),
            (["run", "--dir", "/tmp", "--peer", "host:99999"], "is not a peer address"),
            (["run", "--dir", "/tmp", "--peer", "a:1", "--policy", "random"], "random"),
            (["run", "--dir", "/tmp", "--peer", "a:1", "--port", "70000"], "--port must be between"),
            (["run", "--dir", "/tmp", "--peer", "a:1", "--cluster-key-file", "/nonexistent/key"], "Cannot read a cluster key"),
            (["demo", "--nodes", "1"], "--nodes must be between"),
        ])
        func refusesBadInput(_ args: [String], _ expected: String) throws {
            let (status, out) = try Self.syncctl(args)
            #expect(status != 0)
            #expect(out.contains(expected), "\(out)")
        }

        /// No silent open mode: without a key `run` refuses to start and says how to set one;
        /// `--open` is the explicit way to run without one, and it conflicts with a key.
        @Test func runWithoutAKeyRefusesUnlessOpen() throws {
            let dir = try DaemonTests.makeFolder("nokey")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let noKey = ["SYNCKIT_CLUSTER_KEY": ""]
            let (status, out) = try DaemonTests.run(MultiProcessTests.syncctl, ["run", "--dir", dir, "--peer", "127.0.0.1:9"], env: noKey)
            #expect(status != 0)
            #expect(out.contains("No cluster key and no trust list: set SYNCKIT_CLUSTER_KEY or --cluster-key-file"), "\(out)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/.synckit"), "refused before touching the folder")
            let (both, bothOut) = try DaemonTests.run(MultiProcessTests.syncctl, ["run", "--dir", dir, "--peer", "127.0.0.1:9", "--open"])
            #expect(both != 0)
            #expect(bothOut.contains("--open runs without a cluster key, but a key is set"), "\(bothOut)")
            let (_, help) = try DaemonTests.run(MultiProcessTests.syncctl, ["run", "--help"])
            #expect(help.contains("--open"))
        }

        @Test func anUnwritableFolderIsRefused() throws {
            let dir = try DaemonTests.makeFolder("readonly")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            chmod(dir, 0o555)
            // Root may write anywhere, so as root the check runs as `nobody`, with a copy of the
            // binary that `nobody` can surely reach.
            var status: Int32
            var out: String
            if getuid() == 0 {
                let copy = dir + "-syncctl"
                try? FileManager.default.removeItem(atPath: copy)
                try FileManager.default.copyItem(atPath: MultiProcessTests.syncctl, toPath: copy)
                defer { try? FileManager.default.removeItem(atPath: copy) }
                chmod(copy, 0o755)
                (status, out) = try DaemonTests.run("/usr/sbin/runuser", ["-u", "nobody", "--", copy, "run", "--dir", dir, "--peer", "a:1"])
            } else {
                (status, out) = try Self.syncctl(["run", "--dir", dir, "--peer", "a:1"])
            }
            #expect(status != 0)
            #expect(out.contains("is not writable by this user"), "\(out)")
        }

        @Test func aPortInUseIsOneSentence() throws {
            let dir = try DaemonTests.makeFolder("portinuse")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            // Hold a port on 127.0.0.1.
            let port = try TCPTransport.freeLoopbackPorts(1)[0]
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(s) }
            _ = withLoopbackAddress(port: port) { bind(s, $0, $1) }
            listen(s, 1)
            let (status, out) = try Self.syncctl(["run", "--dir", dir, "--bind", "127.0.0.1", "--port", "\(port)", "--peer", "127.0.0.1:9", "--log", "stderr"])
            #expect(status == 1)
            #expect(out.contains("port \(port) is already in use"), "\(out)")
        }

        @Test func idIsStable() throws {
            let dir = try DaemonTests.makeFolder("id")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let (s1, first) = try Self.syncctl(["id", "--dir", dir])
            let (_, second) = try Self.syncctl(["id", "--dir", dir])
            #expect(s1 == 0)
            #expect(first == second)
            // The first line is the ID alone (what --trust takes); the second says where the certificate is.
            let lines = first.split(separator: "\n")
            #expect(lines.count == 2 && NodeID(String(lines[0])) != nil, "\(first)")
            #expect(lines.count == 2 && lines[1].contains("cert.pem"), "\(first)")
        }
    }
}
