@testable import DiscoveryMDNSLite
import SyncKit
import Testing

@Suite struct MDNSStateTests {
    static func node(_ n: UInt8, name: String, cluster: String = "lab", port: Int = 22000) -> MDNSState {
        let me = LocalAnnouncement(nodeID: NodeID(bytes: [n] + [UInt8](repeating: 0, count: 31)), name: name, clusterTag: cluster, port: port)
        var s = MDNSState(me: me, address: [10, 0, 0, n], netmask: [255, 255, 255, 0])
        s.randomDelay = { 50 }
        return s
    }

    /// What `to` learns from a packet `from` multicasts (through the real codec).
    static func deliver(_ m: DNSMessage, from: MDNSState, to: inout MDNSState, now: ContinuousClock.Instant = .now) throws -> (out: [MDNSState.Outgoing], events: [DiscoveryEvent]) {
        to.receive(try DNSCodec.decode(DNSCodec.encode(m)), from: from.address, port: 5353, now: now)
    }

    @Test func anAnnouncementMakesAPeerFound() throws {
        let a = Self.node(1, name: "alpha")
        var b = Self.node(2, name: "beta")
        let (_, events) = try Self.deliver(a.announcement(), from: a, to: &b)
        #expect(events == [.found(PeerEndpoint(host: "10.0.0.1", port: 22000, nodeID: a.me.nodeID))])
    }

    @Test func anotherClusterIsSeenButNotAPeer() throws {
        let a = Self.node(1, name: "alpha", cluster: "other")
        var b = Self.node(2, name: "beta")
        let (_, events) = try Self.deliver(a.announcement(), from: a, to: &b)
        #expect(events.isEmpty)
        #expect(b.ignored.values.first?.contains("cluster") == true)
    }

    @Test func ourOwnAnnouncementIsNotAPeer() throws {
        var a = Self.node(1, name: "alpha")
        let (_, events) = try Self.deliver(a.announcement(), from: a, to: &a)
        #expect(events.isEmpty)
    }

    @Test func aGoodbyeMakesThePeerLost() throws {
        let a = Self.node(1, name: "alpha")
        var b = Self.node(2, name: "beta")
        _ = try Self.deliver(a.announcement(), from: a, to: &b)
        let (_, events) = try Self.deliver(a.goodbye(), from: a, to: &b)
        #expect(events == [.lost(PeerEndpoint(host: "10.0.0.1", port: 22000, nodeID: a.me.nodeID))])
    }

    @Test func expiryMakesThePeerLostAndRefreshesComeFirst() throws {
        let a = Self.node(1, name: "alpha")
        var b = Self.node(2, name: "beta")
        let t0 = ContinuousClock.now
        _ = try Self.deliver(a.announcement(), from: a, to: &b, now: t0)
        // At 81% of the 120 s host TTL, a refresh query for the SRV goes out.
        let (out, none) = b.tick(now: t0 + .seconds(98))
        #expect(none.isEmpty)
        guard case .multicast(let q, _)? = out.first else {
            Issue.record("no refresh query")
            return
        }
        #expect(q.questions == [DNSQuestion(name: a.instanceName, type: .srv)])
        let (_, events) = b.tick(now: t0 + .seconds(121))
        #expect(events == [.lost(PeerEndpoint(host: "10.0.0.1", port: 22000, nodeID: a.me.nodeID))])
    }

    @Test func browseQueriesAreAnsweredWithAllRecords() throws {
        var a = Self.node(1, name: "alpha")
        let b = Self.node(2, name: "beta")
        let (out, _) = try Self.deliver(b.browseQuery(now: .now), from: b, to: &a)
        guard case .multicast(let reply, let delay)? = out.first else {
            Issue.record("no answer")
            return
        }
        #expect(delay == 50, "shared records wait 20-120 ms")
        #expect(reply.answers.map(\.type) == [.ptr])
        #expect(Set(reply.additionals.map(\.type)) == [.srv, .txt, .a])
    }

    @Test func knownAnswersAreNotRepeated() throws {
        let a = Self.node(1, name: "alpha")
        var b = Self.node(2, name: "beta")
        var a2 = a
        _ = try Self.deliver(a.announcement(), from: a, to: &b)
        // b now lists a's PTR as a known answer: a stays silent.
        let (out, _) = try Self.deliver(b.browseQuery(now: .now), from: b, to: &a2)
        #expect(out.isEmpty)
    }

    @Test func unicastQuestionsGetUnicastAnswers() throws {
        var a = Self.node(1, name: "alpha")
        let q = DNSMessage(isResponse: false, questions: [DNSQuestion(name: "_synckit._tcp.local", type: .ptr, unicastResponse: true)])
        let out = a.receive(q, from: [10, 0, 0, 9], port: 5353, now: .now).out
        guard case .unicast(_, let to, let port)? = out.first else {
            Issue.record("expected a unicast answer: \(out)")
            return
        }
        #expect(to == [10, 0, 0, 9] && port == 5353)
        // A legacy resolver (not port 5353) gets the question echoed and short TTLs.
        let legacy = a.receive(DNSMessage(id: 77, isResponse: false, questions: [DNSQuestion(name: "_synckit._tcp.local", type: .ptr)]), from: [10, 0, 0, 9], port: 40000, now: .now).out
        guard case .unicast(let m, _, 40000)? = legacy.first else {
            Issue.record("expected a legacy unicast answer")
            return
        }
        #expect(m.id == 77 && !m.questions.isEmpty && m.answers.allSatisfy { $0.ttl <= 10 })
    }

    @Test func packetsFromOffTheLinkAreIgnored() throws {
        let a = Self.node(1, name: "alpha")
        var b = Self.node(2, name: "beta")
        let result = b.receive(a.announcement(), from: [192, 168, 1, 1], port: 5353, now: .now)
        #expect(result.events.isEmpty && result.out.isEmpty)
    }

    @Test func aConflictingClaimIsDetectedAndRenamed() throws {
        var a = Self.node(1, name: "alpha")
        let impostor = Self.node(3, name: "alpha", port: 9999)
        #expect(a.isConflict(impostor.announcement()))
        #expect(!a.isConflict(a.announcement()))
        a.renameAfterConflict()
        #expect(a.instanceName == DNSName(instance: "alpha (2)", service: "_synckit._tcp.local"))
    }

    @Test func aFloodIsBounded() throws {
        var b = Self.node(2, name: "beta")
        var found = 0
        for i in 0..<1000 {
            var fake = Self.node(UInt8(truncatingIfNeeded: i % 250 + 3), name: "flood-\(i)")
            fake = MDNSState(me: LocalAnnouncement(nodeID: NodeID(bytes: [UInt8(i % 256), UInt8(i / 256)] + [UInt8](repeating: 7, count: 30)), name: "flood-\(i)", clusterTag: "lab", port: 1000 + i), address: [10, 0, 0, 3], netmask: [255, 255, 255, 0])
            let (_, events) = try Self.deliver(fake.announcement(), from: fake, to: &b)
            found += events.filter { if case .found = $0 { true } else { false } }.count
        }
        #expect(found <= 64, "found \(found)")
        #expect(b.instances.count <= 256)
    }

    @Test func ipv6AddressesAreAnnouncedAndUsedWhenThereIsNoIPv4() throws {
        let v6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [5]
        let me = LocalAnnouncement(nodeID: NodeID(bytes: [5] + [UInt8](repeating: 0, count: 31)), name: "six", clusterTag: "lab", port: 22000)
        let a = MDNSState(me: me, address: [10, 0, 0, 5], netmask: [255, 255, 255, 0], ipv6: [(v6, [UInt8](repeating: 0xff, count: 8) + [UInt8](repeating: 0, count: 8))])
        #expect(a.announcement().answers.contains { $0.type == .aaaa && $0.data == .aaaa(v6) })
        // A receiver that only gets the AAAA (the A record stripped) dials the IPv6 address.
        var stripped = a.announcement()
        stripped.answers.removeAll { $0.type == .a }
        var b = Self.node(2, name: "beta")
        let events = b.receive(try DNSCodec.decode(DNSCodec.encode(stripped)), from: [0xfe, 0x80] + [UInt8](repeating: 0, count: 13) + [5], port: 5353, now: .now).events
        #expect(events == [.found(PeerEndpoint(host: "2001:db8:0:0:0:0:0:5", port: 22000, nodeID: me.nodeID))])
    }
}
