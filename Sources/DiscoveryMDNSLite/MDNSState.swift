import SyncKit

/// The mDNS / DNS-SD logic for one interface, without sockets: packets and time in, packets
/// and discovery events out (the same shape as SyncKit's engine), so it is tested with
/// hand-made packets and no network.
///
/// What it implements (RFC 6762 multicast DNS, RFC 6763 DNS-SD), and where:
/// - our records (section 6 of RFC 6763): `PTR _synckit._tcp.local -> <name>._synckit._tcp.local`,
///   `SRV` (port, host), `TXT` (`txtvers`, node `id`, `cluster` tag, protocol `proto`) and `A`;
///   host records (SRV, A) live 120 s, the others 4,500 s (RFC 6762 section 10); the unique
///   ones carry the cache-flush bit (section 10.2); `AAAA` records for the interface's IPv6
///   addresses, and queries and answers on ff02::fb as well as 224.0.0.251 when it has IPv6;
/// - probing (8.1): three queries for our instance name, 250 ms apart; a response that claims
///   the name with other data is a conflict and the name gets a " (2)" suffix (9);
/// - announcing (8.3): our records, twice, one second apart;
/// - answering (6): PTR, SRV, TXT, A and ANY questions about us, multicast after a 20-120 ms
///   delay for shared records, unicast when the question has the QU bit (5.4) or comes from a
///   port other than 5353 (legacy unicast, 6.7); known answers the asker listed with at least
///   half our TTL left are not repeated (7.1);
/// - browsing (5.2): PTR queries at a random 20-120 ms, then 1 s, 2 s, 4 s ... up to an hour,
///   listing the answers already known; cached records are refreshed at 80, 85, 90 and 95 %
///   of their TTL and dropped when it runs out; a TTL of 0 is a goodbye (10.1);
/// - only packets from the interface's own subnet are believed (11).
///
/// Peers are reported found once their SRV, TXT and A records are all known, their cluster tag
/// matches and their node ID is not ours; at most `maximumPeers` at once, whatever a flood says.
struct MDNSState {
    struct Settings {
        var serviceType: DNSName = "_synckit._tcp.local"
        var hostTTL: UInt32 = 120
        var otherTTL: UInt32 = 4500
        var maximumPeers = 64
        var maximumCachedInstances = 256
    }

    /// A packet to send.
    enum Outgoing: Equatable {
        case multicast(DNSMessage, delayMilliseconds: Int)
        case unicast(DNSMessage, toAddress: [UInt8], port: Int)
    }

    struct Instance {
        var ptrExpiry: ContinuousClock.Instant?
        var srv: (port: Int, target: DNSName, expiry: ContinuousClock.Instant, ttl: UInt32)?
        var txt: (fields: [String: String], expiry: ContinuousClock.Instant)?
        var refreshesSent = 0
    }

    let me: LocalAnnouncement
    let settings: Settings
    let address: [UInt8]
    let netmask: [UInt8]
    /// The interface's IPv6 addresses and masks (16 bytes each), announced as AAAA records.
    let ipv6: [(address: [UInt8], netmask: [UInt8])]
    private(set) var instanceName: DNSName
    let hostName: DNSName
    private(set) var instances: [DNSName: Instance] = [:]
    private(set) var hosts: [DNSName: (address: [UInt8], expiry: ContinuousClock.Instant)] = [:]
    private(set) var hosts6: [DNSName: (address: [UInt8], expiry: ContinuousClock.Instant)] = [:]
    private(set) var reported: [DNSName: PeerEndpoint] = [:]
    /// Complete instances of the service that are not peers (another cluster, this node, or a
    /// TXT without a valid ID), with why; reported once each for logs.
    private(set) var ignored: [DNSName: String] = [:]
    /// Instances newly added to `ignored` since the caller last took them.
    var newlyIgnored: [(DNSName, String)] = []
    private var conflicts = 0
    var randomDelay: () -> Int = { Int.random(in: 20...120) }

    init(me: LocalAnnouncement, address: [UInt8], netmask: [UInt8], ipv6: [(address: [UInt8], netmask: [UInt8])] = [], settings: Settings = Settings()) {
        self.me = me
        self.settings = settings
        self.address = address
        self.netmask = netmask
        self.ipv6 = ipv6
        instanceName = DNSName(instance: me.name, service: settings.serviceType)
        hostName = DNSName("synckit-\(me.nodeID.short.lowercased()).local")
    }

    // MARK: our records

    func txtFields() -> [[UInt8]] {
        ["txtvers=1", "id=\(me.nodeID)", "cluster=\(me.clusterTag)", "proto=\(WireMessage.protocolVersion)"].map { Array($0.utf8) }
    }

    /// Our records; with `goodbye` every TTL is 0 (RFC 6762 section 10.1).
    func records(goodbye: Bool = false) -> (ptr: DNSRecord, unique: [DNSRecord]) {
        let ttl: (UInt32) -> UInt32 = { goodbye ? 0 : $0 }
        let ptr = DNSRecord(name: settings.serviceType, ttl: ttl(settings.otherTTL), data: .ptr(instanceName))
        let unique = [
            DNSRecord(name: instanceName, ttl: ttl(settings.hostTTL), cacheFlush: true, data: .srv(priority: 0, weight: 0, port: UInt16(me.port), target: hostName)),
            DNSRecord(name: instanceName, ttl: ttl(settings.otherTTL), cacheFlush: true, data: .txt(txtFields())),
            DNSRecord(name: hostName, ttl: ttl(settings.hostTTL), cacheFlush: true, data: .a(address)),
        ] + ipv6.map { DNSRecord(name: hostName, ttl: ttl(settings.hostTTL), cacheFlush: true, data: .aaaa($0.address)) }
        return (ptr, unique)
    }

    func probe() -> DNSMessage {
        let r = records()
        return DNSMessage(
            isResponse: false, questions: [DNSQuestion(name: instanceName, type: .any, unicastResponse: true), DNSQuestion(name: hostName, type: .any, unicastResponse: true)],
            authorities: r.unique)
    }

    func announcement() -> DNSMessage {
        let r = records()
        return DNSMessage(isResponse: true, isAuthoritative: true, answers: [r.ptr] + r.unique)
    }

    func goodbye() -> DNSMessage {
        let r = records(goodbye: true)
        return DNSMessage(isResponse: true, isAuthoritative: true, answers: [r.ptr] + r.unique)
    }

    /// A browse query, listing the PTR answers we already hold with more than half their TTL
    /// left (known-answer suppression, 7.1).
    func browseQuery(now: ContinuousClock.Instant) -> DNSMessage {
        let known = instances.compactMap { name, i -> DNSRecord? in
            guard let expiry = i.ptrExpiry, expiry - now > .seconds(Int(settings.otherTTL / 2)) else { return nil }
            let left = UInt32(max(0, (expiry - now).components.seconds))
            return DNSRecord(name: settings.serviceType, ttl: left, data: .ptr(name))
        }
        return DNSMessage(isResponse: false, questions: [DNSQuestion(name: settings.serviceType, type: .ptr)], answers: known)
    }

    /// Picks the next name after a conflict: "name (2)", "name (3)" ...
    mutating func renameAfterConflict() {
        conflicts += 1
        instanceName = DNSName(instance: "\(me.name) (\(conflicts + 1))", service: settings.serviceType)
    }

    // MARK: receiving

    func onLink(_ source: [UInt8]) -> Bool {
        if source.count == 16 {
            // IPv6: link-local senders are on the link by definition; others must share a prefix.
            if source[0] == 0xfe && source[1] & 0xc0 == 0x80 { return true }
            return ipv6.contains { mine in (0..<16).allSatisfy { source[$0] & mine.netmask[$0] == mine.address[$0] & mine.netmask[$0] } }
        }
        guard source.count == 4, address.count == 4, netmask.count == 4 else { return false }
        return (0..<4).allSatisfy { source[$0] & netmask[$0] == address[$0] & netmask[$0] }
    }

    /// True when `m` is a response that claims our instance or host name with other data
    /// than ours: a name conflict while probing.
    func isConflict(_ m: DNSMessage) -> Bool {
        guard m.isResponse else { return false }
        let ours = records().unique
        for r in m.answers + m.additionals where r.name == instanceName || r.name == hostName {
            if r.type == .srv || r.type == .txt || r.type == .a, !ours.contains(where: { $0.name == r.name && $0.data == r.data }) {
                return true
            }
        }
        return false
    }

    /// Handles a packet from `source` (address, port): answers to send and discovery events.
    mutating func receive(_ m: DNSMessage, from source: [UInt8], port: Int, now: ContinuousClock.Instant) -> (out: [Outgoing], events: [DiscoveryEvent]) {
        guard onLink(source) else { return ([], []) }
        if m.isResponse {
            return ([], learn(m.answers + m.additionals, now: now))
        }
        return (answer(m, from: source, port: port), [])
    }

    /// Answers the questions about us that `m` asks.
    func answer(_ m: DNSMessage, from source: [UInt8], port: Int) -> [Outgoing] {
        let r = records()
        var answers = [DNSRecord]()
        var additionals = [DNSRecord]()
        var wantsUnicast = false
        for q in m.questions {
            if q.unicastResponse { wantsUnicast = true }
            if (q.type == .ptr || q.type == .any) && q.name == settings.serviceType {
                answers.append(r.ptr)
                additionals += r.unique
            } else if (q.type == .ptr || q.type == .any) && q.name == DNSName("_services._dns-sd._udp.local") {
                answers.append(DNSRecord(name: q.name, ttl: settings.otherTTL, data: .ptr(settings.serviceType)))
            } else if q.name == instanceName {
                answers += r.unique.filter { $0.name == instanceName && (q.type == .any || q.type == $0.type) }
                additionals += r.unique.filter { $0.name == hostName }
            } else if q.name == hostName && (q.type == .a || q.type == .aaaa || q.type == .any) {
                answers += r.unique.filter { $0.name == hostName && (q.type == .any || $0.type == q.type) }
            }
        }
        // Known-answer suppression: drop what the asker already holds with >= half our TTL.
        answers.removeAll { mine in
            m.answers.contains { $0.name == mine.name && $0.data == mine.data && $0.ttl >= mine.ttl / 2 }
        }
        additionals.removeAll { extra in answers.contains(extra) }
        guard !answers.isEmpty else { return [] }
        if port != 5353 {
            // Legacy unicast (6.7): answer the asker directly, echo the question and ID, short TTLs.
            let capped = (answers + additionals).map { var c = $0; c.ttl = min(c.ttl, 10); c.cacheFlush = false; return c }
            return [.unicast(DNSMessage(id: m.id, isResponse: true, isAuthoritative: true, questions: m.questions, answers: capped), toAddress: source, port: port)]
        }
        let reply = DNSMessage(isResponse: true, isAuthoritative: true, answers: answers, additionals: additionals)
        if wantsUnicast { return [.unicast(reply, toAddress: source, port: port)] }
        let shared = answers.contains { $0.type == .ptr }
        return [.multicast(reply, delayMilliseconds: shared ? randomDelay() : 0)]
    }

    /// Updates the cache from response records and reports what changed.
    mutating func learn(_ records: [DNSRecord], now: ContinuousClock.Instant) -> [DiscoveryEvent] {
        func expiry(_ ttl: UInt32) -> ContinuousClock.Instant { now + .seconds(Int(ttl)) }
        var touched = Set<DNSName>()
        for r in records {
            switch r.data {
            case .ptr(let instance) where r.name == settings.serviceType && instance.hasSuffix(settings.serviceType):
                guard instances[instance] != nil || instances.count < settings.maximumCachedInstances else { continue }
                instances[instance, default: Instance()].ptrExpiry = r.ttl == 0 ? now : expiry(r.ttl)
                touched.insert(instance)
            case .srv(_, _, let port, let target) where r.name.hasSuffix(settings.serviceType):
                guard instances[r.name] != nil || instances.count < settings.maximumCachedInstances else { continue }
                instances[r.name, default: Instance()].srv = (Int(port), target, r.ttl == 0 ? now : expiry(r.ttl), r.ttl)
                instances[r.name]?.refreshesSent = 0
                touched.insert(r.name)
            case .txt(let strings) where r.name.hasSuffix(settings.serviceType):
                guard instances[r.name] != nil || instances.count < settings.maximumCachedInstances else { continue }
                var fields = [String: String]()
                for s in strings.prefix(32) {
                    let text = String(decoding: s, as: UTF8.self)
                    if let eq = text.firstIndex(of: "=") {
                        fields[String(text[..<eq]).lowercased()] = String(text[text.index(after: eq)...])
                    }
                }
                instances[r.name, default: Instance()].txt = (fields, r.ttl == 0 ? now : expiry(r.ttl))
                touched.insert(r.name)
            case .a(let bytes):
                guard hosts[r.name] != nil || hosts.count < settings.maximumCachedInstances else { continue }
                hosts[r.name] = (bytes, r.ttl == 0 ? now : expiry(r.ttl))
                for (name, i) in instances where i.srv?.target == r.name { touched.insert(name) }
            case .aaaa(let bytes):
                // Only routable IPv6 addresses can be dialed without knowing the interface.
                guard !(bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80) else { continue }
                guard hosts6[r.name] != nil || hosts6.count < settings.maximumCachedInstances else { continue }
                hosts6[r.name] = (bytes, r.ttl == 0 ? now : expiry(r.ttl))
                for (name, i) in instances where i.srv?.target == r.name { touched.insert(name) }
            default:
                continue
            }
        }
        var events = [DiscoveryEvent]()
        for name in touched.sorted(by: { $0.description < $1.description }) { events += reevaluate(name, now: now) }
        return events
    }

    /// Reports `name` found, changed or lost after its records changed.
    mutating func reevaluate(_ name: DNSName, now: ContinuousClock.Instant) -> [DiscoveryEvent] {
        var events = [DiscoveryEvent]()
        let endpoint = resolved(name, now: now)
        if endpoint == nil, ignored[name] == nil, let why = whyIgnored(name, now: now) {
            ignored[name] = why
            newlyIgnored.append((name, why))
        }
        let previous = reported[name]
        if previous != endpoint {
            if let previous {
                events.append(.lost(previous))
                reported[name] = nil
            }
            if let endpoint, reported.count < settings.maximumPeers {
                reported[name] = endpoint
                events.append(.found(endpoint))
            }
        }
        if let i = instances[name], i.ptrExpiry.map({ $0 <= now }) ?? true, i.srv.map({ $0.expiry <= now }) ?? true {
            instances[name] = nil
        }
        return events
    }

    /// The endpoint of a complete, live, foreign instance of our cluster, if `name` is one.
    func resolved(_ name: DNSName, now: ContinuousClock.Instant) -> PeerEndpoint? {
        guard let i = instances[name], let srv = i.srv, srv.expiry > now, let txt = i.txt, txt.expiry > now,
              let host = address(of: srv.target, now: now),
              txt.fields["cluster"] == me.clusterTag, let idText = txt.fields["id"], let id = NodeID(idText), id != me.nodeID
        else { return nil }
        if let ptr = i.ptrExpiry, ptr <= now { return nil }
        return PeerEndpoint(host: host, port: srv.port, nodeID: id)
    }

    /// A host's address as text: its IPv4 address when known, else a routable IPv6 one.
    func address(of host: DNSName, now: ContinuousClock.Instant) -> String? {
        if let v4 = hosts[host], v4.expiry > now, v4.address.count == 4 {
            return v4.address.map(String.init).joined(separator: ".")
        }
        if let v6 = hosts6[host], v6.expiry > now, v6.address.count == 16 {
            return stride(from: 0, to: 16, by: 2).map { String(UInt16(v6.address[$0]) << 8 | UInt16(v6.address[$0 + 1]), radix: 16) }.joined(separator: ":")
        }
        return nil
    }

    /// Why a complete, live instance is not a peer (nil if it is incomplete or a peer).
    func whyIgnored(_ name: DNSName, now: ContinuousClock.Instant) -> String? {
        guard let i = instances[name], let srv = i.srv, srv.expiry > now, let txt = i.txt, txt.expiry > now,
              let host = address(of: srv.target, now: now)
        else { return nil }
        if txt.fields["cluster"] != me.clusterTag { return "cluster '\(txt.fields["cluster"] ?? "")' is not ours" }
        guard let idText = txt.fields["id"], let id = NodeID(idText) else { return "no valid node id in its TXT record" }
        if id == me.nodeID { return "it is this node" }
        _ = host
        return nil
    }

    /// Drops what expired (reporting it lost) and asks again for records at 80, 85, 90 and
    /// 95 % of their lifetime.
    mutating func tick(now: ContinuousClock.Instant) -> (out: [Outgoing], events: [DiscoveryEvent]) {
        var events = [DiscoveryEvent]()
        var questions = [DNSQuestion]()
        for (name, i) in instances {
            if let srv = i.srv {
                let total = Double(srv.ttl)
                let left = Double((srv.expiry - now).components.seconds) + Double((srv.expiry - now).components.attoseconds) / 1e18
                let fraction = total > 0 ? 1 - left / total : 1
                let due = [0.80, 0.85, 0.90, 0.95]
                if i.refreshesSent < due.count, fraction >= due[i.refreshesSent], left > 0 {
                    instances[name]?.refreshesSent += 1
                    questions.append(DNSQuestion(name: name, type: .srv))
                }
            }
        }
        for name in Array(instances.keys) { events += reevaluate(name, now: now) }
        for name in Array(reported.keys) where instances[name] == nil {
            if let e = reported.removeValue(forKey: name) { events.append(.lost(e)) }
        }
        for (h, v) in hosts where v.expiry <= now { hosts[h] = nil }
        for (h, v) in hosts6 where v.expiry <= now { hosts6[h] = nil }
        let out: [Outgoing] = questions.isEmpty ? [] : [.multicast(DNSMessage(isResponse: false, questions: questions), delayMilliseconds: 0)]
        return (out, events)
    }
}
