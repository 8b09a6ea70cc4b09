import DiscoveryMDNSLite
import Testing

@Suite struct DNSCodecTests {
    static let service: DNSName = "_synckit._tcp.local"
    static let instance = DNSName(instance: "node 1.lab", service: service)
    static let host: DNSName = "node1.local"

    static let announcement = DNSMessage(
        isResponse: true, isAuthoritative: true,
        answers: [
            DNSRecord(name: service, ttl: 4500, data: .ptr(instance)),
            DNSRecord(name: instance, ttl: 120, cacheFlush: true, data: .srv(priority: 0, weight: 0, port: 22000, target: host)),
            DNSRecord(name: instance, ttl: 4500, cacheFlush: true, data: .txt([Array("txtvers=1".utf8), Array("id=ABC".utf8)])),
            DNSRecord(name: host, ttl: 120, cacheFlush: true, data: .a([10, 0, 0, 1])),
            DNSRecord(name: host, ttl: 120, cacheFlush: true, data: .aaaa([0xfe, 0x80] + [UInt8](repeating: 0, count: 13) + [1])),
        ])

    @Test func roundTripsWithCompression() throws {
        let bytes = DNSCodec.encode(Self.announcement)
        #expect(try DNSCodec.decode(bytes) == Self.announcement)
        // Compression: "_synckit._tcp.local" is spelled out once.
        let spelled = Array("_synckit".utf8)
        let occurrences = (0...(bytes.count - spelled.count)).filter { Array(bytes[$0..<$0 + spelled.count]) == spelled }
        #expect(occurrences.count == 1)
    }

    @Test func questionsKeepTheUnicastBit() throws {
        let q = DNSMessage(isResponse: false, questions: [DNSQuestion(name: Self.service, type: .ptr, unicastResponse: true)])
        let back = try DNSCodec.decode(DNSCodec.encode(q))
        #expect(back.questions.first?.unicastResponse == true)
        #expect(back.isResponse == false)
    }

    @Test func namesCompareCaseInsensitively() {
        #expect(DNSName("_SyncKit._TCP.Local") == Self.service)
        #expect(Self.instance.hasSuffix(Self.service))
    }

    @Test func everyTruncationFailsCleanly() {
        let bytes = DNSCodec.encode(Self.announcement)
        for cut in 0..<bytes.count {
            #expect(throws: DNSError.self) { try DNSCodec.decode(Array(bytes[..<cut])) }
        }
    }

    @Test func aPointerLoopIsRejected() {
        // Header with one question whose name is a pointer to itself (offset 12).
        let packet: [UInt8] = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 12, 0, 1]
        #expect(throws: DNSError.self) { try DNSCodec.decode(packet) }
        // Two pointers pointing at each other.
        let pair: [UInt8] = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0xC0, 16, 0xC0, 12, 0, 12, 0, 1]
        #expect(throws: DNSError.self) { try DNSCodec.decode(pair) }
    }

    @Test func lyingCountsAreRejectedBeforeAllocating() {
        let packet: [UInt8] = [0, 0, 0x84, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        #expect(throws: DNSError.self) { try DNSCodec.decode(packet) }
    }

    @Test func oversizedPacketsAndNamesAreRejected() {
        #expect(throws: DNSError.self) { try DNSCodec.decode([UInt8](repeating: 0, count: 9001)) }
        // A name of 5 labels of 63 bytes (over 255).
        var packet: [UInt8] = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        for _ in 0..<5 { packet += [63] + [UInt8](repeating: 0x61, count: 63) }
        packet += [0, 0, 12, 0, 1]
        #expect(throws: DNSError.self) { try DNSCodec.decode(packet) }
    }

    @Test func recordLengthsMustMatchTheirContent() {
        var bytes = DNSCodec.encode(DNSMessage(isResponse: true, answers: [DNSRecord(name: Self.host, ttl: 1, data: .a([1, 2, 3, 4]))]))
        // Make the A record claim 5 bytes.
        bytes[bytes.count - 5] = 5
        #expect(throws: DNSError.self) { try DNSCodec.decode(bytes + [0]) }
    }

    /// Random bytes, and random mutations of a valid packet, never crash the decoder.
    @Test func fuzzNeverCrashes() {
        var state: UInt64 = 12345
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            return z ^ (z >> 31)
        }
        let valid = DNSCodec.encode(Self.announcement)
        for i in 0..<20_000 {
            var packet: [UInt8]
            if i % 2 == 0 {
                packet = (0..<Int(next() % 200)).map { _ in UInt8(truncatingIfNeeded: next()) }
            } else {
                packet = valid
                for _ in 0..<Int(next() % 6 + 1) { packet[Int(next() % UInt64(packet.count))] = UInt8(truncatingIfNeeded: next()) }
            }
            _ = try? DNSCodec.decode(packet)
        }
    }
}
