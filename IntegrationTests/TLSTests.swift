import Foundation
import NIOCore
import SyncKit
import Testing
import TransportTCP

extension Integration {
    /// Links are TLS 1.3 and a node's identity is its certificate: what crosses the wire is
    /// encrypted, nobody can pose as another node, and only trusted nodes or holders of the
    /// cluster key (proven for the very connection) get in.
    @Suite(.serialized) struct TLSTests {
        /// A capture of the loopback traffic while a file with a marker syncs between two
        /// `syncctl run` processes: no marker in it, and a TLS 1.3 handshake.
        @Test func whatCrossesTheWireIsTLS13() async throws {
            let tcpdump = "/usr/bin/tcpdump"
            try #require(FileManager.default.isExecutableFile(atPath: tcpdump), "tcpdump is needed (scripts/setup.sh installs it)")
            let c = try MultiProcessTests.Cluster(count: 2)
            defer { try? FileManager.default.removeItem(atPath: c.root) }
            let pcap = c.root + "/lo.pcap"
            let capture = Process()
            capture.executableURL = URL(fileURLWithPath: tcpdump)
            capture.arguments = ["-i", "lo", "-U", "--immediate-mode", "-w", pcap, "-s", "0", "tcp port \(c.ports[0]) or tcp port \(c.ports[1])"]
            let captureErrors = Pipe()
            capture.standardError = captureErrors
            try capture.run()
            // tcpdump says it listens once the capture runs.
            let listening = captureErrors.fileHandleForReading
            var said = Data()
            while !String(decoding: said, as: UTF8.self).contains("listening on") {
                let chunk = listening.availableData
                if chunk.isEmpty { break }
                said += chunk
            }
            try c.start(0)
            try c.start(1)
            let marker = "SYNCKIT-SECRET-MARKER-\(UUID().uuidString)"
            let content = String(repeating: marker + "\n", count: 2000)
            FileManager.default.createFile(atPath: c.folder(0) + "/secret.txt", contents: Data(content.utf8))
            let deadline = ContinuousClock.now + .seconds(30)
            while FileManager.default.contents(atPath: c.folder(1) + "/secret.txt").map({ String(decoding: $0, as: UTF8.self) }) != content {
                guard ContinuousClock.now < deadline else { Issue.record("the file did not arrive:\n\(c.logs())"); break }
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Task.sleep(for: .milliseconds(300))
            c.stopAll()
            // tcpdump writes each packet as it comes (-U, --immediate-mode), so the file is whole
            // now. SIGINT asks it to stop; libpcap may sleep in poll(2) until another packet
            // matches, so after 3 s it is killed.
            kill(capture.processIdentifier, SIGINT)
            let stopBy = ContinuousClock.now + .seconds(3)
            while capture.isRunning, ContinuousClock.now < stopBy { try await Task.sleep(for: .milliseconds(20)) }
            if capture.isRunning { kill(capture.processIdentifier, SIGKILL) }
            while capture.isRunning { try await Task.sleep(for: .milliseconds(20)) }
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: pcap)))
            #expect(bytes.count > 10_000, "the capture holds the transfer (\(bytes.count) bytes)")
            #expect(!Self.contains(bytes, Array(marker.utf8)), "the marker crossed the wire in clear")
            // A TLS 1.3 ServerHello carries supported_versions = 0x0304 (RFC 8446 section 4.2.1),
            // and TLS 1.3 records of application data have the type 23 and legacy version 0x0303.
            #expect(Self.contains(bytes, [0x00, 0x2B, 0x00, 0x02, 0x03, 0x04]), "a TLS 1.3 ServerHello")
            #expect(Self.contains(bytes, [0x16, 0x03, 0x01]), "a TLS ClientHello record")
            #expect(Self.contains(bytes, [0x17, 0x03, 0x03]), "TLS application data records")
        }

        static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
            guard haystack.count >= needle.count else { return false }
            for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
                if Array(haystack[i..<(i + needle.count)]) == needle { return true }
            }
            return false
        }

        /// Every message the victim sent on a link until it closed.
        static func drain(_ peer: HostilePeer) async -> [WireMessage] {
            var seen = [WireMessage]()
            do {
                for try await frame in peer.channel.inbound {
                    if let m = try? WireCodec.decode(frame) { seen.append(m) }
                }
            } catch {}
            return seen
        }

        /// A node that presents another node's ID with its own certificate is refused.
        @Test func anotherNodesIDWithOwnCertificateIsRefused() async throws {
            try await withTestCluster(nodes: 2) { c in
                try await c.waitUntilConverged()
                let victim = c.node(0)
                let events = await victim.events()
                let port = try #require(await victim.listeningPort)
                let impostor = try await HostilePeer.connect(to: port, in: c)
                let otherNode = c.node(1).id
                await #expect(throws: (any Error).self) { try await impostor.handshake(claim: otherNode) }
                var reason = ""
                for await e in events { if case .peerRejected(_, let why) = e { reason = why; break } }
                #expect(reason.contains("presents the node ID \(otherNode)"), "\(reason)")
            }
        }

        /// A certificate nobody trusts, without the cluster key: refused before any index or
        /// block moves.
        @Test func anUntrustedCertificateIsRefusedBeforeAnyIndexOrBlock() async throws {
            try await withTestCluster(nodes: 1, seed: { $0.write(0, "private.txt", "not for strangers") }) { c in
                let port = try #require(await c.node(0).listeningPort)
                let stranger = try await HostilePeer.connect(to: port, in: c, key: ClusterKey(secret: "a guess"))
                await #expect(throws: (any Error).self) { try await stranger.handshake() }
                let seen = await Self.drain(stranger)
                #expect(!seen.contains { if case .indexUpdate = $0 { true } else if case .indexRequest = $0 { true } else if case .blockRequest = $0 { true } else { false } },
                        "\(seen)")
                #expect(c.logs.text.contains("peer refused at handshake") && c.logs.text.contains(stranger.id.description), "logged with the peer's ID")
            }
        }

        /// A trusted node needs no key; once its ID leaves the trust file, its next connection
        /// is refused.
        @Test func aNodeRemovedFromTheTrustListIsRefusedAtItsNextConnection() async throws {
            let friend = try NodeIdentity.make()
            let trustFile = FileManager.default.temporaryDirectory.appendingPathComponent("trust-\(UUID().uuidString.prefix(8))").path
            try "# friends\n\(friend.id)\n".write(toFile: trustFile, atomically: true, encoding: .utf8)
            defer { unlink(trustFile) }
            let cluster = TestCluster(nodes: 1, transport: .tcp, policy: NewestWinsPolicy())
            cluster.configure = { $0.trust = TrustList(file: trustFile) }
            defer { Task { await cluster.cleanUp() } }
            try await cluster.startAll()
            let port = try #require(await cluster.node(0).listeningPort)
            let noKey = ClusterKey(secret: "the friend does not know the key")
            let first = try await HostilePeer.connect(to: port, in: cluster, identity: friend, key: noKey)
            try await first.handshake()  // trusted: in
            await first.channel.close()
            try "# friends\n".write(toFile: trustFile, atomically: true, encoding: .utf8)
            let second = try await HostilePeer.connect(to: port, in: cluster, identity: friend, key: noKey)
            await #expect(throws: (any Error).self) { try await second.handshake() }
            await cluster.cleanUp()
        }

        /// A proof of the cluster key made for one connection is refused on another: it is
        /// bound to the connection's TLS exporter, which a relay cannot make equal.
        @Test func aClusterKeyProofFromAnotherConnectionIsRefused() async throws {
            try await withTestCluster(nodes: 1) { c in
                let port = try #require(await c.node(0).listeningPort)
                let identity = try NodeIdentity.make()
                let first = try await HostilePeer.connect(to: port, in: c, identity: identity)
                let firstBinding = try #require(first.channel.security?.binding)
                try await first.handshake()  // the right key, bound to this connection: in
                await first.channel.close()
                let second = try await HostilePeer.connect(to: port, in: c, identity: identity)
                #expect(second.channel.security?.binding != firstBinding)
                await #expect(throws: (any Error).self) { try await second.handshake(binding: firstBinding) }
            }
        }
    }
}
