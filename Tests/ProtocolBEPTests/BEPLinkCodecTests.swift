import Foundation
import NIOCore
import SyncKit
import Testing
@testable import ProtocolBEP

/// The BEP link codec (`BEPLinkCodec`): how a Syncthing peer's Hello, ClusterConfig, Index,
/// Request and Response become what the node's machine hears from a SyncKit peer, and how what
/// the machine says becomes BEP.
@Suite struct BEPLinkCodecTests {
    static let me = NodeID(bytes: (0..<32).map { UInt8($0) })
    static let peer = NodeID(bytes: (0..<32).map { UInt8(100 + $0) })
    static let ourIndexID: UInt64 = 77

    static func codec() -> BEPLinkCodec {
        BEPLinkCodec(configuration: .init(me: me, peer: peer, folderID: "default", folderLabel: "Shared", clientVersion: "v0.1"))
    }

    static func ourHello() -> WireMessage {
        .hello(.init(nodeID: me, nodeName: "laptop", clientName: "default", indexID: ourIndexID))
    }

    static func frame(_ item: BEPStreamDecoder.Item) throws -> Frame {
        switch item {
        case .hello(let h): try BEPFrames.frame(hello: h)
        case .message(let m): try BEPFrames.frame(m)
        }
    }

    static func peerHello() throws -> Frame {
        var h = Bep_Hello()
        h.deviceName = "nas"
        h.clientName = "syncthing"
        h.clientVersion = "v1.19.2"
        return try frame(.hello(h))
    }

    /// The peer's ClusterConfig: its own index (ID 9, at `peerMax`) and what it holds of ours.
    static func peerConfig(folder: String = "default", peerMax: Int64, heldOurs: (UInt64, Int64)) throws -> Frame {
        try frame(.message(.clusterConfig(BEPClusterConfig.make(folderID: folder, label: "", devices: [
            .init(id: peer, name: "nas", indexID: 9, maxSequence: peerMax),
            .init(id: me, name: "laptop", indexID: heldOurs.0, maxSequence: heldOurs.1),
        ]))))
    }

    /// A codec past the handshake: our Hello said, the peer's Hello and ClusterConfig read.
    static func started(peerMax: Int64 = 5, heldOurs: (UInt64, Int64) = (ourIndexID, 3)) throws -> (BEPLinkCodec, [WireMessage]) {
        let c = codec()
        _ = try c.encode(ourHello())
        #expect(try c.decode(peerHello()).isEmpty)
        return (c, try c.decode(peerConfig(peerMax: peerMax, heldOurs: heldOurs)))
    }

    static func parsed(_ frames: [Frame]) throws -> [BEPStreamDecoder.Item] { try frames.map { try BEPFrames.item($0) } }

    @Test func ourHelloBecomesABEPHelloAtOnce() throws {
        let (frames, back) = try Self.codec().encode(Self.ourHello())
        #expect(back.isEmpty)
        let items = try Self.parsed(frames)
        guard items.count == 1, case .hello(let h) = items[0] else { Issue.record("not one Hello: \(items)"); return }
        #expect(h.deviceName == "laptop" && h.clientName == "syncctl" && h.clientVersion == "v0.1")
    }

    /// The peer's ClusterConfig is its hello (its certificate's ID, its index ID), an empty
    /// auth (the trust list decides), and its request for our index above what it holds.
    @Test func thePeersClusterConfigIsItsHandshakeAndIndexRequest() throws {
        let (_, messages) = try Self.started()
        #expect(messages.count == 3)
        guard case .hello(let h) = messages[0], case .auth = messages[1], case .indexRequest(let r) = messages[2] else {
            Issue.record("\(messages)"); return
        }
        #expect(h.nodeID == Self.peer && h.nodeName == "nas" && h.indexID == 9 && h.clusterName == "default")
        #expect(r.indexID == Self.ourIndexID && r.since == 3)
        // It holds an index of ours under another ID: all of it.
        let (_, again) = try Self.started(heldOurs: (12345, 40))
        guard case .indexRequest(let all) = again.last else { Issue.record("\(again)"); return }
        #expect(all.since == 0)
    }

    /// Our index request becomes our ClusterConfig; when we already hold the peer's index up to
    /// what it announced, it will send nothing, and the machine hears "caught up" at once.
    @Test func ourIndexRequestIsOurClusterConfig() throws {
        let (c, _) = try Self.started(peerMax: 5)
        let (frames, back) = try c.encode(.indexRequest(.init(indexID: 9, since: 5)))
        let items = try Self.parsed(frames)
        guard case .message(.clusterConfig(let cc)) = items.first else { Issue.record("\(items)"); return }
        let devices = try #require(cc.folders.first).devices
        let theirs = try #require(devices.first { $0.id == Data(Self.peer.bytes) })
        let ours = try #require(devices.first { $0.id == Data(Self.me.bytes) })
        #expect(theirs.indexID == 9 && theirs.maxSequence == 5 && ours.indexID == Self.ourIndexID)
        #expect(cc.folders[0].id == "default" && cc.folders[0].label == "Shared")
        guard back.count == 1, case .indexUpdate(let u) = back[0] else { Issue.record("\(back)"); return }
        #expect(u.caughtUp && u.records.isEmpty)
    }

    /// Holding less than it announced: its Index comes, and the update that reaches its
    /// announced sequence is the one marked caught up.
    @Test func thePeersIndexIsCaughtUpAtItsAnnouncedSequence() throws {
        let (c, _) = try Self.started(peerMax: 2)
        let (_, back) = try c.encode(.indexRequest(.init(indexID: 0, since: 0)))
        #expect(back.isEmpty)
        func update(_ name: String, _ sequence: Int64) throws -> WireMessage.IndexUpdate {
            var f = Bep_FileInfo()
            f.name = name
            f.type = .directory
            f.sequence = sequence
            f.modifiedBy = Self.peer.shortID
            var counter = Bep_Counter()
            counter.id = Self.peer.shortID
            counter.value = 1
            f.version.counters = [counter]
            var u = Bep_IndexUpdate()
            u.folder = "default"
            u.files = [f]
            let out = try c.decode(Self.frame(.message(.indexUpdate(u))))
            guard out.count == 1, case .indexUpdate(let update) = out[0] else { throw Failure("\(out)") }
            return update
        }
        let first = try update("a", 1)
        #expect(!first.caughtUp && first.records.map(\.path) == ["a"] && first.records[0].sequence == 1)
        #expect(try update("b", 2).caughtUp)
    }

    struct Failure: Error, CustomStringConvertible { var description: String; init(_ d: String) { description = d } }

    static func record(_ path: String, content: [UInt8], fixed: Bool, sequence: UInt64) -> FileRecord {
        var r = FileRecord(path: path, kind: .file, size: UInt64(content.count), mtimeNs: 1_700_000_000_000_000_000,
                           version: VersionVector([me: 3]), modifiedBy: me, blocks: Chunker.standard.blocks(of: content), sequence: sequence)
        if fixed && !FixedBlocks.isFixedShape(r.blocks, size: r.size) { r.fixedBlocks = FixedBlocks.blocks(of: content) }
        return r
    }

    /// Our records go out as an Index when the peer gets all of ours (it replaces what it
    /// holds), as IndexUpdates after; each file with Syncthing's block list (one empty block
    /// for an empty file); a file whose Syncthing list is unknown is left out.
    @Test func ourRecordsGoOutWithSyncthingsBlockLists() throws {
        let (c, _) = try Self.started(heldOurs: (0, 0))
        let big = (0..<(300 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let records = [
            Self.record("big.bin", content: big, fixed: true, sequence: 1),
            Self.record("empty", content: [], fixed: true, sequence: 2),
            Self.record("unknown.bin", content: big, fixed: false, sequence: 3),
        ]
        let items = try Self.parsed(c.encode(.indexUpdate(.init(indexID: Self.ourIndexID, records: records, caughtUp: true))).frames)
        guard case .message(.index(let index)) = items.first else { Issue.record("not an Index: \(items)"); return }
        #expect(index.folder == "default" && index.files.map(\.name) == ["big.bin", "empty"])
        let expected = SyncthingBlocks.blocks(of: big)
        #expect(index.files[0].blocks.map(\.hash) == expected.map(\.hash) && index.files[0].blocks.map(\.offset) == expected.map(\.offset))
        #expect(index.files[0].blockSize == 128 << 10 && index.files[0].sequence == 1)
        #expect(index.files[1].blocks.count == 1 && index.files[1].blocks[0].size == 0 && index.files[1].blocks[0].hash == Data(SHA256Empty.digest))
        // Records from the peer's own scheme (fixed-size chunks already) need no second list.
        let later = try Self.parsed(c.encode(.indexUpdate(.init(indexID: Self.ourIndexID, records: [Self.record("small.txt", content: Array("hi".utf8), fixed: false, sequence: 4)], caughtUp: false))).frames)
        guard case .message(.indexUpdate(let update)) = later.first else { Issue.record("not an IndexUpdate: \(later)"); return }
        #expect(update.files.map(\.name) == ["small.txt"] && update.files[0].blocks.count == 1)
        // Nothing announceable: nothing sent.
        #expect(try c.encode(.indexUpdate(.init(indexID: Self.ourIndexID, records: [records[2]], caughtUp: false))).frames.isEmpty)
    }

    /// Requests both ways carry name, offset, size and the block's hash; an answer we cannot
    /// give is Syncthing's "no such file".
    @Test func blockRequestsAndAnswersCrossBothWays() throws {
        let (c, _) = try Self.started()
        var request = Bep_Request()
        request.id = -2
        request.folder = "default"
        request.name = "dir/file.bin"
        request.offset = 131072
        request.size = 1000
        request.hash = Data((0..<32).map { UInt8($0) })
        let out = try c.decode(Self.frame(.message(.request(request))))
        guard out.count == 1, case .blockRequest(let r) = out[0] else { Issue.record("\(out)"); return }
        #expect(r.id == UInt32(bitPattern: -2) && r.path == "dir/file.bin" && r.offset == 131072 && r.size == 1000)
        #expect(r.hash == BlockHash(digest: request.hash) && r.hash.digestBytes == Array(request.hash))
        let answer = try Self.parsed(c.encode(.blockResponse(.init(id: r.id, status: .notFound, data: ByteBuffer()))).frames)
        guard case .message(.response(let response)) = answer.first else { Issue.record("\(answer)"); return }
        #expect(response.id == -2 && response.code == .noSuchFile)
        let ours = try Self.parsed(c.encode(.blockRequest(.init(id: 7, hash: r.hash, size: 1000, path: "x", offset: 5))).frames)
        guard case .message(.request(let sent)) = ours.first else { Issue.record("\(ours)"); return }
        #expect(sent.id == 7 && sent.folder == "default" && sent.name == "x" && sent.offset == 5 && sent.size == 1000 && sent.hash == request.hash)
        // A request for a folder we do not share with it ends the link.
        request.folder = "other"
        #expect(throws: BEPLinkCodec.Refused.self) { try c.decode(Self.frame(.message(.request(request)))) }
    }

    /// A peer that does not share our folder is a peer with nothing to send: caught up at once,
    /// so the node can be in sync with it connected.
    @Test func aPeerWithoutOurFolderHasNothingToSend() throws {
        let c = Self.codec()
        _ = try c.encode(Self.ourHello())
        _ = try c.decode(Self.peerHello())
        let messages = try c.decode(Self.peerConfig(folder: "photos", peerMax: 9, heldOurs: (0, 0)))
        #expect(messages.count == 3)
        let (_, back) = try c.encode(.indexRequest(.init(indexID: 0, since: 0)))
        guard back.count == 1, case .indexUpdate(let u) = back[0] else { Issue.record("\(back)"); return }
        #expect(u.caughtUp)
    }

    @Test func anythingBeforeTheHelloEndsTheLink() throws {
        let c = Self.codec()
        _ = try c.encode(Self.ourHello())
        #expect(throws: BEPLinkCodec.Refused.self) { try c.decode(Self.frame(.message(.ping))) }
        #expect(throws: BEPLinkCodec.Refused.self) { try Self.codec().decode(Self.peerHello()) }
    }
}

/// The SHA-256 of nothing, the hash of an empty file's one block.
enum SHA256Empty {
    static let digest: [UInt8] = Chunker.hash(UnsafeRawBufferPointer(start: nil, count: 0)).digestBytes
}

extension WireMessage.Hello {
    init(nodeID: NodeID, nodeName: String, clientName cluster: String, indexID: UInt64) {
        self.init(nodeID: nodeID, nodeName: nodeName, clusterName: cluster, listenPort: 0, nonce: [UInt8](repeating: 1, count: 32), indexID: indexID)
    }
}
