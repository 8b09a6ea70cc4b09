@testable import DiscoveryMDNSLite
import SyncKit
import Testing

/// Real packets from avahi decode, and our browser finds the service avahi published and
/// drops it on avahi's goodbye.
@Suite struct AvahiInteropTests {
    static func bytes(_ hex: String) -> [UInt8] {
        var out = [UInt8]()
        var it = hex.utf8.makeIterator()
        func nibble(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : (c | 0x20) - 87 }
        while let a = it.next(), let b = it.next() { out.append(nibble(a) << 4 | nibble(b)) }
        return out
    }

    @Test func everyCapturedPacketDecodes() throws {
        #expect(AvahiCapture.packets.count >= 10)
        var types = Set<DNSRecordType>()
        for hex in AvahiCapture.packets {
            let m = try DNSCodec.decode(Self.bytes(hex))
            for r in m.answers + m.authorities + m.additionals { types.insert(r.type) }
        }
        #expect(types.isSuperset(of: [.ptr, .srv, .txt, .a, .aaaa]))
    }

    @Test func theAvahiServiceIsFoundThenLostOnItsGoodbye() throws {
        let me = LocalAnnouncement(nodeID: NodeID(bytes: [9] + [UInt8](repeating: 0, count: 31)), name: "us", clusterTag: "lab", port: 22000)
        var state = MDNSState(me: me, address: [10, 78, 0, 1], netmask: [255, 255, 255, 0])
        var events = [DiscoveryEvent]()
        for hex in AvahiCapture.packets {
            events += state.receive(try DNSCodec.decode(Self.bytes(hex)), from: AvahiCapture.source, port: 5353, now: .now).events
        }
        let avahi = PeerEndpoint(host: "10.78.0.2", port: 22000, nodeID: NodeID("GEAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        #expect(events.first == .found(avahi))
        #expect(events.last == .lost(avahi))
    }
}
