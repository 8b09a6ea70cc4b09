import Foundation
import NIOCore
import SyncKit
import SyncKitTesting
import TransportTCP
import Testing

extension Integration {
    /// A peer that holds the cluster key but sends poisoned records: it must not be able to make
    /// the node write anything outside its folder, or into its state directory.
    @Suite(.serialized) struct HostilePeerTests {
        @Test func pathTraversalRecordsChangeNothingOutsideTheFolder() async throws {
            let outside = FileManager.default.temporaryDirectory.appendingPathComponent("synckit-outside-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: outside) }

            try await withTestCluster(nodes: 1, transport: ScenarioTests.transport) { c in
                let victim = c.node(0)
                let refusals = await victim.events()
                let port = try #require(await victim.listeningPort)
                let channel = try await c.rawTransport().connect(to: PeerEndpoint(host: "127.0.0.1", port: port))
                let hostile = HostilePeer(channel: channel, key: c.clusterKey)
                try await hostile.handshake()

                let payload = Array("pwned".utf8)
                let me = hostile.id
                func file(_ path: String) -> FileRecord {
                    FileRecord(path: path, kind: .file, size: UInt64(payload.count), mtimeNs: 1, mode: 0o644, version: .init([me: 1]), modifiedBy: me, blocks: Chunker.standard.blocks(of: payload), sequence: 1)
                }
                let records = [
                    file("../escape.txt"), file("/tmp/abs-escape.txt"), file(".synckit/index.db"), file("ok/../../x.txt"),
                    file("a\u{0}b"), file(""),
                    FileRecord(path: "evil", kind: .symlink, mtimeNs: 1, version: .init([me: 1]), modifiedBy: me, symlinkTarget: outside, sequence: 2),
                    file("evil/pwned.txt"),
                    file("fine.txt"),
                ]
                try await hostile.send(.indexUpdate(.init(indexID: 1, records: records, caughtUp: true)))
                let server = Task { try await hostile.serveBlocks(payload) }
                defer { server.cancel() }

                // The legitimate file lands, so the node did process the batch...
                let deadline = ContinuousClock.now + .seconds(10)
                while c.read(0, "fine.txt") == nil && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                #expect(c.read(0, "fine.txt") == payload)
                try await Task.sleep(for: .milliseconds(500))

                // ...and nothing escaped.
                #expect(!FileManager.default.fileExists(atPath: c.root + "/escape.txt"))
                #expect(!FileManager.default.fileExists(atPath: "/tmp/abs-escape.txt"))
                #expect(!FileManager.default.fileExists(atPath: c.root + "/x.txt"))
                #expect(!FileManager.default.fileExists(atPath: outside + "/pwned.txt"), "written through a symlink")
                #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty)
                let state = try Data(contentsOf: URL(fileURLWithPath: c.folder(0) + "/.synckit/index.db"))
                #expect(state.count > 5, "the index was not overwritten")

                var refused = Set<String>()
                for await event in refusals {
                    if case .refused(let path, _, _) = event { refused.insert(path) }
                    if refused.count == 6 { break }
                }
                #expect(refused == ["../escape.txt", "/tmp/abs-escape.txt", ".synckit/index.db", "ok/../../x.txt", "a\u{0}b", ""])
            }
        }
    }
}

/// The hostile side: a hand-driven protocol endpoint.
final class HostilePeer: Sendable {
    let channel: any PeerChannel
    let key: ClusterKey
    let id = NodeID(bytes: [UInt8](repeating: 0xEE, count: 32))
    let nonce = ClusterKey.nonce()

    init(channel: any PeerChannel, key: ClusterKey) {
        self.channel = channel
        self.key = key
    }

    func send(_ m: WireMessage) async throws { try await channel.send(WireCodec.encode(m)) }

    func handshake() async throws {
        try await send(.hello(.init(nodeID: id, nodeName: "mallory", clusterName: "itest", listenPort: 0, nonce: nonce, indexID: 1)))
        var it = channel.inbound.makeAsyncIterator()
        guard let f = try await it.next(), case .hello(let theirs) = try WireCodec.decode(f) else { throw SyncError(.protocolViolation, "no hello") }
        try await send(.auth(.init(mac: key.proof(sender: id, receiver: theirs.nodeID, receiverNonce: theirs.nonce, senderNonce: nonce))))
        guard let g = try await it.next(), case .auth = try WireCodec.decode(g) else { throw SyncError(.protocolViolation, "no auth") }
    }

    /// Answers every block request with `payload`.
    func serveBlocks(_ payload: [UInt8]) async throws {
        for try await frame in channel.inbound {
            if case .blockRequest(let r) = try WireCodec.decode(frame) {
                try await send(.blockResponse(.init(id: r.id, status: .ok, data: ByteBuffer(bytes: payload))))
            }
        }
    }
}

extension TestCluster {
    /// A transport that is not one of the nodes (for hand-made peers).
    func rawTransport() -> any SyncTransport {
        transportKind == .tcp ? TCPTransport(configuration: .init(bindHost: "127.0.0.1")) : network.transport(name: "outsider")
    }
}
