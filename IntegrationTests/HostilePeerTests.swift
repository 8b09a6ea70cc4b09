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
        /// What a hostile peer gets to do to one victim node: it holds the cluster key, sends
        /// `records`, serves `payload` for every block the victim asks, and may send raw
        /// frames. `check` then looks at the victim's folder.
        static func attack(
            records: (HostilePeer, FileRecord) -> [FileRecord], rawFrames: (HostilePeer, FileRecord) -> [Frame] = { _, _ in [] },
            expectRefused: Set<String>, payload: [UInt8] = Array("pwned".utf8),
            check: (TestCluster, String) throws -> Void
        ) async throws {
            let outside = FileManager.default.temporaryDirectory.appendingPathComponent("synckit-outside-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: outside) }

            try await withTestCluster(nodes: 1, transport: ScenarioTests.transport) { c in
                let victim = c.node(0)
                let refusals = await victim.events()
                let stateBefore = Set(try FileManager.default.contentsOfDirectory(atPath: c.folder(0) + "/.synckit"))
                let port = try #require(await victim.listeningPort)
                let hostile = try await HostilePeer.connect(to: port, in: c)
                try await hostile.handshake()
                let me = hostile.id
                // A legitimate file in the same batch: once it lands, the batch was processed.
                let fine = FileRecord(path: "fine.txt", kind: .file, size: UInt64(payload.count), mtimeNs: 1, mode: 0o644, version: .init([me: 1]), modifiedBy: me, blocks: Chunker.standard.blocks(of: payload), sequence: 99)
                for frame in rawFrames(hostile, fine) { try await hostile.channel.send(frame) }
                try await hostile.send(.indexUpdate(.init(indexID: 1, records: records(hostile, fine) + [fine], caughtUp: true)))
                let server = Task { try await hostile.serveBlocks(payload) }
                defer { server.cancel() }

                let deadline = ContinuousClock.now + .seconds(10)
                while c.read(0, "fine.txt") == nil && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                #expect(c.read(0, "fine.txt") == payload, "the batch was processed")
                try await Task.sleep(for: .milliseconds(300))

                // Nothing outside the folder, nothing new in the state directory.
                #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty, "written through a symlink")
                #expect(!FileManager.default.fileExists(atPath: c.root + "/escape.txt"))
                #expect(!FileManager.default.fileExists(atPath: c.root + "/\u{301}escape.txt"))
                #expect(!FileManager.default.fileExists(atPath: c.root + "/\u{200D}escape.txt"))
                let stateAfter = Set(try FileManager.default.contentsOfDirectory(atPath: c.folder(0) + "/.synckit"))
                #expect(stateAfter.subtracting(stateBefore).subtracting(["index.db-wal", "index.db-shm", "control.sock"]).isEmpty, "\(stateAfter.subtracting(stateBefore))")
                try check(c, outside)

                // Each refused record was reported as an event and logged.
                var refused = Set<String>()
                if !expectRefused.isEmpty {
                    for await event in refusals {
                        if case .refused(let path, _, _) = event { refused.insert(path) }
                        if refused.count == expectRefused.count { break }
                    }
                }
                #expect(refused == expectRefused)
                for path in expectRefused {
                    #expect(c.logs.text.contains("refused a record from a peer") && c.logs.text.contains(path.debugDescription), "logged: \(path.debugDescription)")
                }
            }
        }

        static func file(_ path: String, by me: NodeID, _ payload: [UInt8] = Array("pwned".utf8), mode: UInt32 = 0o644, sequence: UInt64 = 1) -> FileRecord {
            FileRecord(path: path, kind: .file, size: UInt64(payload.count), mtimeNs: 1, mode: mode, version: .init([me: 1]), modifiedBy: me, blocks: Chunker.standard.blocks(of: payload), sequence: sequence)
        }

        static func directory(_ path: String, by me: NodeID) -> FileRecord {
            FileRecord(path: path, kind: .directory, mode: 0o755, version: .init([me: 1]), modifiedBy: me, sequence: 1)
        }

        @Test func pathTraversalRecordsChangeNothingOutsideTheFolder() async throws {
            try await Self.attack(records: { h, _ in
                [Self.file("../escape.txt", by: h.id), Self.file("/tmp/abs-escape.txt", by: h.id), Self.file(".synckit/index.db", by: h.id),
                 Self.file("ok/../../x.txt", by: h.id), Self.file("a\u{0}b", by: h.id), Self.file("", by: h.id)]
            }, expectRefused: ["../escape.txt", "/tmp/abs-escape.txt", ".synckit/index.db", "ok/../../x.txt", "a\u{0}b", ""]) { c, _ in
                #expect(!FileManager.default.fileExists(atPath: "/tmp/abs-escape.txt"))
                #expect(!FileManager.default.fileExists(atPath: c.root + "/x.txt"))
                let state = try Data(contentsOf: URL(fileURLWithPath: c.folder(0) + "/.synckit/index.db"))
                #expect(state.count > 5, "the index was not overwritten")
            }
        }

        /// The reported escape: a directory `...` and `../\u{301}escape.txt` (a '/' followed by
        /// a combining acute accent, which Swift reads as one Character), then the same with a
        /// zero-width joiner and other marks that glue to the '/'.
        @Test func aSlashGluedToACombiningMarkDoesNotEscape() async throws {
            let tricks = ["../\u{301}escape.txt", "../\u{200D}escape.txt", ".../../\u{301}escape.txt", "../\u{0308}escape.txt", "..\u{0600}/../escape.txt"]
            try await Self.attack(records: { h, _ in
                [Self.directory("...", by: h.id)] + tricks.map { Self.file($0, by: h.id) }
            }, expectRefused: Set(tricks)) { c, _ in
                #expect(c.snapshot(0)["..."] == "dir", "a directory named ... is a legal name and stays inside")
            }
        }

        /// A synced symlink as a parent: the link itself is synced (as a link), but nothing is
        /// ever written through it, whether the name after it is plain or a Unicode trick.
        @Test func aSyncedSymlinkIsNeverWrittenThrough() async throws {
            try await Self.attack(records: { h, _ in
                [FileRecord(path: "evil", kind: .symlink, mtimeNs: 1, version: .init([h.id: 1]), modifiedBy: h.id, symlinkTarget: "/tmp", sequence: 1),
                 Self.file("evil/pwned.txt", by: h.id, sequence: 2), Self.file("evil/\u{301}pwned.txt", by: h.id, sequence: 3)]
            }, expectRefused: ["evil/\u{301}pwned.txt"]) { c, outside in
                #expect(!FileManager.default.fileExists(atPath: "/tmp/pwned.txt"))
                // The two jobs race: either the link won (and nothing is below it), or the file's
                // job made `evil` a real directory first (and the file is inside the folder).
                let snapshot = c.snapshot(0)
                if snapshot["evil"]?.hasPrefix("link:") == true { #expect(snapshot["evil/pwned.txt"] == nil) }
            }
            // And a link to a directory of the attacker's choosing, created first, then written under.
            try await Self.attack(records: { h, _ in
                [FileRecord(path: "link", kind: .symlink, mtimeNs: 1, version: .init([h.id: 1]), modifiedBy: h.id, symlinkTarget: "../..", sequence: 1),
                 Self.file("link/deep/pwned.txt", by: h.id, sequence: 2)]
            }, expectRefused: []) { c, _ in
                let above = ((c.root as NSString).deletingLastPathComponent as NSString).appendingPathComponent("deep/pwned.txt")
                #expect(!FileManager.default.fileExists(atPath: c.root + "/deep/pwned.txt"))
                #expect(!FileManager.default.fileExists(atPath: above))
                let snapshot = c.snapshot(0)
                if snapshot["link"]?.hasPrefix("link:") == true { #expect(snapshot["link/deep/pwned.txt"] == nil) }
            }
        }

        /// The state directory as a target, directly and through Unicode tricks, and a path that
        /// is not valid UTF-8 (the decoder refuses that one record, not the whole batch).
        @Test func theStateDirectoryAndInvalidUTF8AreRefused() async throws {
            let attempts = [".synckit/profile.sh", ".synckit/\u{301}x", ".synckit", ".synckit/index.db-wal"]
            try await Self.attack(records: { h, _ in attempts.map { Self.file($0, by: h.id, mode: 0o4777) } },
                                  rawFrames: { h, _ in [HostilePeer.invalidUTF8Update(by: h.id)] },
                                  expectRefused: Set(attempts + ["bad\\xff\\xfe.txt"])) { c, _ in
                #expect(!FileManager.default.fileExists(atPath: c.folder(0) + "/.synckit/profile.sh"))
            }
        }

        /// Two names for one file: a name in NFD is refused (paths are NFC on the wire), the NFC
        /// one is taken; the victim never ends up with two entries that Swift sees as one.
        @Test func aNameInAnotherNormalizationIsRefused() async throws {
            try await Self.attack(records: { h, _ in
                [Self.file("cafe\u{301}.txt", by: h.id), Self.file("caf\u{E9}.txt", by: h.id, sequence: 2)]
            }, expectRefused: ["cafe\u{301}.txt"]) { c, _ in
                let names = try FileManager.default.contentsOfDirectory(atPath: c.folder(0)).filter { $0.hasPrefix("caf") }
                #expect(names.map { Array($0.utf8) } == [Array("caf\u{E9}.txt".utf8)])
            }
        }

        /// A block request whose path hint points outside the folder (or at a symlink to
        /// outside) gets nothing: blocks are served from this node's own index, read through the
        /// folder's handle.
        @Test func blockRequestsCannotReadOutsideTheFolder() async throws {
            let secret = Array("top secret \(UUID())".utf8)
            let secretPath = FileManager.default.temporaryDirectory.appendingPathComponent("synckit-secret-\(UUID().uuidString.prefix(8))").path
            FileManager.default.createFile(atPath: secretPath, contents: Data(secret))
            defer { unlink(secretPath) }
            try await withTestCluster(nodes: 1, transport: ScenarioTests.transport) { c in
                symlink(secretPath, c.folder(0) + "/secret-link")
                await c.node(0).rescan()
                let port = try #require(await c.node(0).listeningPort)
                let hostile = try await HostilePeer.connect(to: port, in: c)
                try await hostile.handshake()
                let block = Chunker.standard.blocks(of: secret)[0]
                for (id, hint) in [(UInt32(1), "../" + (secretPath as NSString).lastPathComponent), (2, secretPath), (3, "secret-link")] {
                    try await hostile.send(.blockRequest(.init(id: id, hash: block.hash, size: block.size, path: hint, offset: 0)))
                }
                var answers = [UInt32: WireMessage.BlockResponse.Status]()
                for try await frame in hostile.channel.inbound {
                    if case .blockResponse(let r) = try WireCodec.decode(frame) { answers[r.id] = r.status }
                    if answers.count == 3 { break }
                }
                #expect(answers == [1: .notFound, 2: .notFound, 3: .notFound])
            }
        }
    }
}

/// The hostile side: a hand-driven protocol endpoint. Over TLS its ID is its certificate's
/// (`claim` lets a test present another); its proof of the key is bound to the connection
/// (`binding` lets a test present one made for another connection).
final class HostilePeer: Sendable {
    let channel: any PeerChannel
    let key: ClusterKey
    let id: NodeID
    let nonce = ClusterKey.nonce()

    init(channel: any PeerChannel, key: ClusterKey, id: NodeID? = nil) {
        self.channel = channel
        self.key = key
        self.id = id ?? NodeID(bytes: [UInt8](repeating: 0xEE, count: 32))
    }

    /// Connects to a node of `c` with an identity of its own (a new one by default).
    static func connect(to port: Int, in c: TestCluster, identity: NodeIdentity? = nil, key: ClusterKey? = nil) async throws -> HostilePeer {
        let identity = try identity ?? NodeIdentity.make()
        let channel = try await c.rawTransport(identity: identity).connect(to: PeerEndpoint(host: "127.0.0.1", port: port))
        return HostilePeer(channel: channel, key: key ?? c.clusterKey, id: identity.id)
    }

    func send(_ m: WireMessage) async throws { try await channel.send(WireCodec.encode(m)) }

    /// Runs the handshake as a node would; `claim` is the ID sent in `hello`, `binding` what the
    /// proof is bound to (this connection's by default). Throws when the victim refuses.
    func handshake(claim: NodeID? = nil, binding: [UInt8]? = nil) async throws {
        let me = claim ?? id
        try await send(.hello(.init(nodeID: me, nodeName: "mallory", clusterName: "itest", listenPort: 0, nonce: nonce, indexID: 1)))
        var it = channel.inbound.makeAsyncIterator()
        guard let f = try await it.next(), case .hello(let theirs) = try WireCodec.decode(f) else { throw SyncError(.protocolViolation, "no hello") }
        let mac = (binding ?? channel.security?.binding).map { key.proof(sender: me, receiver: theirs.nodeID, binding: $0) }
            ?? key.proof(sender: me, receiver: theirs.nodeID, receiverNonce: theirs.nonce, senderNonce: nonce)
        try await send(.auth(.init(mac: mac)))
        // The victim sends its own proof before it checks ours; what follows tells: an index
        // request once it took us in, a close (or the end of the stream) when it refused.
        guard let g = try await it.next(), case .auth = try WireCodec.decode(g) else { throw SyncError(.protocolViolation, "refused") }
        guard let h = try await it.next() else { throw SyncError(.protocolViolation, "refused: the connection ended") }
        switch try WireCodec.decode(h) {
        case .close(let reason): throw SyncError(.protocolViolation, "refused: \(reason)")
        case .indexRequest: return
        case let other: throw SyncError(.protocolViolation, "unexpected \(other) after the handshake")
        }
    }

    /// An index update holding one record whose path is the bytes `bad\xff\xfe.txt` (not UTF-8),
    /// made by encoding a placeholder and patching its bytes: the encoder only takes Strings.
    static func invalidUTF8Update(by me: NodeID) -> Frame {
        let placeholder = "badXY.txt"
        let r = FileRecord(path: placeholder, kind: .file, size: 5, mtimeNs: 1, version: .init([me: 1]), modifiedBy: me, blocks: Chunker.standard.blocks(of: Array("pwned".utf8)), sequence: 50)
        var frame = WireCodec.encode(.indexUpdate(.init(indexID: 1, records: [r], caughtUp: false)))
        var bytes = Array(frame.payload.readableBytesView)
        let needle = Array(placeholder.utf8)
        let at = (0...(bytes.count - needle.count)).first { Array(bytes[$0..<($0 + needle.count)]) == needle }!
        bytes[at + 3] = 0xFF
        bytes[at + 4] = 0xFE
        frame.payload = ByteBuffer(bytes: bytes)
        return frame
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
    func rawTransport(identity: NodeIdentity? = nil) -> any SyncTransport {
        guard transportKind == .tcp else { return network.transport(name: "outsider") }
        return TCPTransport(configuration: .init(bindHost: "127.0.0.1", tls: TLSSettings(identity: identity ?? (try! NodeIdentity.make()))))
    }
}
