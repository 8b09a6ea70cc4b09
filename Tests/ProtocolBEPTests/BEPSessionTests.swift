import Foundation
import SyncKit
import Testing
@testable import ProtocolBEP

/// The BEP session state machine (`BEPSession`): the order Syncthing requires, what a real
/// Syncthing's stream turns into, liveness on Syncthing's intervals, and refusals that end the
/// connection with a Close saying why.
@Suite struct BEPSessionTests {
    static let me = NodeID(bytes: (0..<32).map { UInt8($0) })
    static let peer = NodeID(bytes: (0..<32).map { UInt8(100 + $0) })
    static let state: @Sendable () -> (ourIndexID: UInt64, ourSequence: Int64, heldPeerIndexID: UInt64) = { (5, 10, 0) }

    static func session(me: NodeID = me, peer: NodeID = peer) -> BEPSession {
        BEPSession(configuration: .init(me: me, deviceName: "laptop", clientVersion: "v0.1", folderID: "default"), peer: peer, now: .zero)
    }

    static func hello() -> BEPStreamDecoder.Item {
        var h = Bep_Hello()
        h.deviceName = "nas"
        h.clientName = "syncthing"
        h.clientVersion = "v1.19.2"
        return .hello(h)
    }

    static func config() -> BEPStreamDecoder.Item {
        .message(.clusterConfig(BEPClusterConfig.make(folderID: "default", label: "", devices: [
            .init(id: peer, name: "nas", indexID: 9, maxSequence: 3), .init(id: me, name: "laptop"),
        ])))
    }

    static func isRefusal(_ out: [BEPSession.Output]) -> Bool {
        guard out.count == 2, case .send(.close) = out[0], case .close = out[1] else { return false }
        return true
    }

    /// A real Syncthing's stream (tests/bep/capture.py): its Hello, its ClusterConfig (which
    /// shares `default` with us), its Index as records, and its answer to our request.
    @Test func aRealSyncthingsStreamDrivesTheSession() throws {
        let (manifest, items) = try BEPTranscriptTests.load()
        var s = BEPSession(configuration: .init(me: NodeID(manifest.ourDeviceID)!, deviceName: "laptop", clientVersion: "v0.1", folderID: manifest.folder),
                           peer: NodeID(manifest.syncthingDeviceID)!, now: .zero)
        guard case .sendHello(let ours) = s.start(now: .zero).first else { Issue.record("no hello first"); return }
        #expect(ours.clientName == "syncctl" && ours.deviceName == "laptop")
        var outputs: [BEPSession.Output] = []
        for (i, item) in items.enumerated() { outputs += s.receive(item, now: .seconds(i), folderState: Self.state) }
        #expect(s.phase == .ready)
        guard case .peerHello(let name, let client) = outputs.first else { Issue.record("no peer hello"); return }
        #expect(!name.isEmpty && client.hasPrefix("syncthing v1.19.2"))
        let starts = outputs.compactMap { if case .clusterConfig(let start) = $0 { start } else { nil } }
        #expect(starts.count == 1 && starts[0].sendAfter == 0 && starts[0].dropPeerIndex == true)
        let indexes = outputs.compactMap { if case .index(let records, let full, let last) = $0 { (records, full, last) } else { nil } }
        let index = try #require(indexes.first)
        #expect(index.1 && Set(index.0.map(\.path)).isSuperset(of: manifest.files.map(\.name)))
        #expect(index.2 == starts[0].peerMaxSequence)
        #expect(outputs.contains { if case .response(let r) = $0 { r.id == manifest.request.id } else { false } })
        #expect(!outputs.contains { if case .close = $0 { true } else { false } })
    }

    /// Nothing but a Hello first, nothing but a ClusterConfig (or Ping, or Close) next.
    @Test func theOrderIsEnforced() {
        var s = Self.session()
        _ = s.start(now: .zero)
        #expect(Self.isRefusal(s.receive(Self.config(), now: .zero, folderState: Self.state)), "a ClusterConfig before the Hello")
        #expect(s.phase == .closed)
        #expect(s.receive(Self.hello(), now: .zero, folderState: Self.state).isEmpty, "nothing after the end")

        var t = Self.session()
        _ = t.receive(Self.hello(), now: .zero, folderState: Self.state)
        #expect(t.receive(.message(.ping), now: .zero, folderState: Self.state).isEmpty)
        #expect(Self.isRefusal(t.receive(.message(.index(Bep_Index())), now: .zero, folderState: Self.state)), "an Index before the ClusterConfig")

        var u = Self.session()
        _ = u.receive(Self.hello(), now: .zero, folderState: Self.state)
        #expect(Self.isRefusal(u.receive(Self.hello(), now: .zero, folderState: Self.state)), "a second Hello")
    }

    @Test func aCloseFromThePeerEndsTheSessionWithoutAnswer() {
        var s = Self.session()
        _ = s.receive(Self.hello(), now: .zero, folderState: Self.state)
        var close = Bep_Close()
        close.reason = "shutting down"
        #expect(s.receive(.message(.close(close)), now: .zero, folderState: Self.state) == [.close(reason: "closed by the peer: shutting down")])
        #expect(s.phase == .closed)
    }

    /// Index entries and requests are checked before the node sees them; another folder's
    /// index is none of ours.
    @Test func whatThePeerSendsIsCheckedWhenReady() {
        func ready() -> BEPSession {
            var s = Self.session()
            _ = s.receive(Self.hello(), now: .zero, folderState: Self.state)
            _ = s.receive(Self.config(), now: .zero, folderState: Self.state)
            return s
        }
        var good = Bep_FileInfo()
        good.name = "a.txt"
        good.size = 3
        good.blocks = SyncthingBlocks.blocks(of: [1, 2, 3])
        good.sequence = 4
        var bad = good
        bad.name = "../../etc/passwd"
        var index = Bep_Index()
        index.folder = "default"
        index.files = [good]
        var s = ready()
        guard case .index(let records, true, 4) = s.receive(.message(.index(index)), now: .zero, folderState: Self.state).first else {
            Issue.record("no records"); return
        }
        #expect(records.map(\.path) == ["a.txt"])
        var update = Bep_IndexUpdate()
        update.folder = "default"
        update.files = [good, bad]
        #expect(Self.isRefusal(s.receive(.message(.indexUpdate(update)), now: .zero, folderState: Self.state)), "one unsafe entry ends it")

        var other = ready()
        index.folder = "photos"
        #expect(other.receive(.message(.index(index)), now: .zero, folderState: Self.state).isEmpty)

        for (name, size) in [("../x", Int32(10)), ("/etc/shadow", 10), ("ok.txt", -1), ("ok.txt", Int32(32 << 20))] {
            var r = ready()
            var request = Bep_Request()
            request.folder = "default"
            request.name = name
            request.size = size
            #expect(Self.isRefusal(r.receive(.message(.request(request)), now: .zero, folderState: Self.state)), "\(name) \(size)")
        }
        var r = ready()
        var request = Bep_Request()
        request.folder = "default"
        request.name = "a.txt"
        request.size = 3
        #expect(r.receive(.message(.request(request)), now: .zero, folderState: Self.state) == [.request(request)])
    }

    /// Syncthing's liveness: a Ping after 90 s without sending, a close after 300 s without
    /// receiving; and `tick` says when to come back.
    @Test func pingsAndTimeoutsFollowSyncthingsIntervals() {
        var s = Self.session()
        _ = s.start(now: .zero)
        _ = s.receive(Self.hello(), now: .zero, folderState: Self.state)
        #expect(s.tick(now: .seconds(89)).outputs.isEmpty)
        let (out, next) = s.tick(now: .seconds(90))
        #expect(out == [.send(.ping)] && next == .seconds(180))
        s.noteSent(now: .seconds(150))
        #expect(s.tick(now: .seconds(200)).outputs.isEmpty)
        _ = s.receive(.message(.ping), now: .seconds(200), folderState: Self.state)
        #expect(s.tick(now: .seconds(240)).outputs == [.send(.ping)])
        #expect(s.tick(now: .seconds(499)).outputs == [.send(.ping)])
        #expect(Self.isRefusal(s.tick(now: .seconds(500)).outputs))
        #expect(s.phase == .closed)
    }
}
