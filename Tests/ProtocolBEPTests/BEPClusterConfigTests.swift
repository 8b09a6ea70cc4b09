import Foundation
import SyncKit
import Testing
@testable import ProtocolBEP

/// The ClusterConfig exchange (`BEPClusterConfig`): what we announce, and how a peer's
/// announcement decides where the index exchange starts, by Syncthing's rules, on a real
/// Syncthing's message and on the cases its index handler distinguishes.
@Suite struct BEPClusterConfigTests {
    static let me = NodeID(bytes: (0..<32).map { UInt8($0) })
    static let peer = NodeID(bytes: (0..<32).map { UInt8(100 + $0) })
    static let third = NodeID(bytes: (0..<32).map { UInt8(200 + $0 / 2) })

    /// The peer's ClusterConfig for `default`: its entry for us and for itself.
    static func fromPeer(ourIndexID: UInt64 = 0, ourMax: Int64 = 0, itsIndexID: UInt64 = 77, itsMax: Int64 = 40, paused: Bool = false) -> Bep_ClusterConfig {
        BEPClusterConfig.make(folderID: "default", label: "Default Folder", devices: [
            .init(id: peer, name: "nas", indexID: itsIndexID, maxSequence: itsMax),
            .init(id: me, name: "laptop", indexID: ourIndexID, maxSequence: ourMax),
            .init(id: third, name: "phone", indexID: 5, maxSequence: 9),
        ], paused: paused)
    }

    static func start(_ config: Bep_ClusterConfig, ourIndexID: UInt64 = 1234, ourSequence: Int64 = 100, held: UInt64 = 77) throws -> BEPClusterConfig.Start? {
        try BEPClusterConfig.start(from: config, folderID: "default", me: me, peer: peer,
                                   ourIndexID: ourIndexID, ourSequence: ourSequence, heldPeerIndexID: held)
    }

    /// A real Syncthing meeting us for the first time: it holds nothing of ours (index ID 0),
    /// so we send everything, and its own index is new to us, so what it sends replaces
    /// whatever we held.
    @Test func aRealSyncthingMeetingUsFirstGetsOurWholeIndex() throws {
        let (manifest, items) = try BEPTranscriptTests.load()
        let config = try #require(items.lazy.compactMap { if case .message(.clusterConfig(let c)) = $0 { c } else { nil } }.first)
        let index = try #require(items.lazy.compactMap { if case .message(.index(let i)) = $0 { i } else { nil } }.first)
        let start = try #require(try BEPClusterConfig.start(
            from: config, folderID: manifest.folder, me: NodeID(manifest.ourDeviceID)!, peer: NodeID(manifest.syncthingDeviceID)!,
            ourIndexID: 42, ourSequence: 10, heldPeerIndexID: 0))
        #expect(start.sendAfter == 0)
        #expect(start.dropPeerIndex && start.peerIndexID != 0)
        #expect(start.peerMaxSequence == index.files.map(\.sequence).max(), "it announces the highest sequence it then sends")
        #expect(!start.peerPaused)
        // It does not share another folder with us.
        #expect(try BEPClusterConfig.start(
            from: config, folderID: "photos", me: NodeID(manifest.ourDeviceID)!, peer: NodeID(manifest.syncthingDeviceID)!,
            ourIndexID: 42, ourSequence: 10, heldPeerIndexID: 0) == nil)
    }

    /// Same index ID, and it has seen our sequence 60 of 100: we send from 60 on, and keep its
    /// entries (same index ID as we hold).
    @Test func aPeerThatKnowsOurIndexGetsOnlyWhatIsNew() throws {
        let start = try #require(try Self.start(Self.fromPeer(ourIndexID: 1234, ourMax: 60)))
        #expect(start == .init(sendAfter: 60, dropPeerIndex: false, peerIndexID: 77, peerMaxSequence: 40, peerPaused: false))
        // All of it seen: nothing to send but what comes later.
        #expect(try Self.start(Self.fromPeer(ourIndexID: 1234, ourMax: 100))?.sendAfter == 100)
    }

    /// It claims more of our index than we have (we lost index data but kept the ID): all again.
    @Test func aPeerAheadOfUsGetsTheWholeIndex() throws {
        #expect(try Self.start(Self.fromPeer(ourIndexID: 1234, ourMax: 101))?.sendAfter == 0)
        #expect(try Self.start(Self.fromPeer(ourIndexID: 1234, ourMax: -5))?.sendAfter == 0)
    }

    /// It holds another index of ours (we reset ours since): all again.
    @Test func aPeerWithAnotherIndexIDOfOursGetsTheWholeIndex() throws {
        #expect(try Self.start(Self.fromPeer(ourIndexID: 999, ourMax: 50))?.sendAfter == 0)
        // And an index ID of 0 on both sides never counts as a match.
        #expect(try Self.start(Self.fromPeer(ourIndexID: 0, ourMax: 50), ourIndexID: 0)?.sendAfter == 0)
    }

    /// Its own index under a new ID (it reset), or under none: what we hold of it goes.
    @Test func aPeerThatResetItsIndexHasItsEntriesDropped() throws {
        let reset = try #require(try Self.start(Self.fromPeer(itsIndexID: 78)))
        #expect(reset.dropPeerIndex && reset.peerIndexID == 78)
        let none = try #require(try Self.start(Self.fromPeer(itsIndexID: 0)))
        #expect(none.dropPeerIndex && none.peerIndexID == 0)
        #expect(try Self.start(Self.fromPeer(itsIndexID: 77))?.dropPeerIndex == false)
    }

    @Test func aPausedFolderIsSeenAsPaused() throws {
        #expect(try Self.start(Self.fromPeer(paused: true))?.peerPaused == true)
    }

    /// What Syncthing refuses ends the connection here too, and nothing in a ClusterConfig can
    /// crash the node (a device ID of the wrong length is a refusal, not a trap).
    @Test func malformedClusterConfigsAreRefused() throws {
        var noUs = Self.fromPeer()
        noUs.folders[0].devices.removeAll { $0.id == Data(Self.me.bytes) }
        #expect(throws: BEPClusterConfig.Refusal.missingDevice(folder: "default", which: "us")) { try Self.start(noUs) }

        var noSender = Self.fromPeer()
        noSender.folders[0].devices.removeAll { $0.id == Data(Self.peer.bytes) }
        #expect(throws: BEPClusterConfig.Refusal.missingDevice(folder: "default", which: "the sender")) { try Self.start(noSender) }

        // Another folder, not ours, that is malformed still refuses the message, as Syncthing does.
        var other = Self.fromPeer()
        var photos = other.folders[0]
        photos.id = "photos"
        photos.devices.removeAll { $0.id == Data(Self.me.bytes) }
        other.folders.append(photos)
        #expect(throws: BEPClusterConfig.Refusal.missingDevice(folder: "photos", which: "us")) { try Self.start(other) }

        for length in [0, 8, 31, 33] {
            var short = Self.fromPeer()
            short.folders[0].devices[2].id = Data(repeating: 7, count: length)
            #expect(throws: BEPClusterConfig.Refusal.badDeviceID(folder: "default")) { try Self.start(short) }
        }

        var twice = Self.fromPeer()
        twice.folders.append(twice.folders[0])
        #expect(throws: BEPClusterConfig.Refusal.duplicateFolder("default")) { try Self.start(twice) }
    }

    /// What we announce survives the wire and reads back, on the peer's side, as what we hold:
    /// our own entry carries our index ID and sequence, the peer's entry what we hold of it.
    @Test func whatWeAnnounceReadsBackOnThePeersSide() throws {
        let ours = BEPClusterConfig.make(folderID: "default", label: "Docs", devices: [
            .init(id: Self.me, name: "laptop", addresses: ["tcp://127.0.0.1:22000"], indexID: 1234, maxSequence: 100),
            .init(id: Self.peer, name: "nas", indexID: 77, maxSequence: 40),
        ])
        var decoder = BEPStreamDecoder()
        decoder.append(try BEPFraming.encodeHello(Bep_Hello()))
        decoder.append(try BEPFraming.encode(.clusterConfig(ours)))
        _ = try decoder.next()
        guard case .message(.clusterConfig(let received)) = try decoder.next() else { Issue.record("no cluster config"); return }
        #expect(received == ours)
        #expect(received.folders[0].label == "Docs" && received.folders[0].stopReason == 0)
        // The peer (roles swapped) holds our index 1234 up to 80 and its own is 77 at 40.
        let onPeer = try #require(try BEPClusterConfig.start(
            from: received, folderID: "default", me: Self.peer, peer: Self.me, ourIndexID: 77, ourSequence: 45, heldPeerIndexID: 1234))
        #expect(onPeer == .init(sendAfter: 40, dropPeerIndex: false, peerIndexID: 1234, peerMaxSequence: 100, peerPaused: false))
        #expect(BEPClusterConfig.make(folderID: "default", label: "", devices: [], paused: true).folders[0].stopReason == 1)
    }
}
