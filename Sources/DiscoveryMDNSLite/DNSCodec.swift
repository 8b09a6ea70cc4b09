/// Wire encoding and decoding of `DNSMessage` (RFC 1035 section 4.1, name compression 4.1.4).
///
/// Packets come from anyone on the link, so decoding trusts nothing: sizes are checked against
/// what is left before anything is allocated, compression pointers may only point backwards
/// (no loops), and every malformed packet is a thrown `DNSError`, never a trap. The fuzz target
/// `dns` (Fuzz/) checks that, and that what decodes encodes back to the same message.
public enum DNSCodec {
    // MARK: encoding

    /// Encodes a message, compressing names against earlier ones. Flags other than QR and AA are
    /// zero (mDNS needs no others); every class is IN, with the top bit as unicast-response (in a
    /// question) or cache-flush (in a record), RFC 6762 sections 5.4 and 10.2.
    public static func encode(_ m: DNSMessage) -> [UInt8] {
        var w = Writer()
        w.u16(m.id)
        var flags: UInt16 = 0
        if m.isResponse { flags |= 0x8000 }
        if m.isAuthoritative { flags |= 0x0400 }
        w.u16(flags)
        w.u16(UInt16(m.questions.count))
        w.u16(UInt16(m.answers.count))
        w.u16(UInt16(m.authorities.count))
        w.u16(UInt16(m.additionals.count))
        for q in m.questions {
            w.name(q.name)
            w.u16(q.type.rawValue)
            w.u16(1 | (q.unicastResponse ? 0x8000 : 0))
        }
        for r in m.answers + m.authorities + m.additionals { w.record(r) }
        return w.bytes
    }

    /// Appends big-endian fields to a growing packet and remembers where each name suffix was
    /// written, so a later name ending the same way becomes a two-byte pointer.
    struct Writer {
        var bytes: [UInt8] = []
        /// Offset of every name suffix written so far, keyed by its lower-cased labels (names
        /// compare case-insensitively, RFC 1035 section 2.3.3).
        var offsets: [[[UInt8]]: Int] = [:]

        mutating func u16(_ v: UInt16) { bytes += [UInt8(v >> 8), UInt8(v & 0xff)] }
        mutating func u32(_ v: UInt32) { u16(UInt16(v >> 16)); u16(UInt16(v & 0xffff)) }

        /// Writes `n` label by label until a suffix was already written, then points at it.
        /// Only offsets below 0x3FFF can be pointed at (14 bits); labels are cut at 63 bytes.
        mutating func name(_ n: DNSName) {
            let canonical = n.canonical
            for i in n.labels.indices {
                let suffix = Array(canonical[i...])
                if let at = offsets[suffix], at < 0x3fff {
                    u16(0xC000 | UInt16(at))
                    return
                }
                if bytes.count < 0x3fff { offsets[suffix] = bytes.count }
                let label = n.labels[i].prefix(63)
                bytes.append(UInt8(label.count))
                bytes += label
            }
            bytes.append(0)
        }

        /// Writes a resource record; its data length is patched in once the data is written
        /// (a compressed name inside it has a length known only then).
        mutating func record(_ r: DNSRecord) {
            name(r.name)
            u16(r.type.rawValue)
            u16(1 | (r.cacheFlush ? 0x8000 : 0))
            u32(r.ttl)
            let lengthAt = bytes.count
            u16(0)
            let start = bytes.count
            switch r.data {
            case .a(let b), .aaaa(let b): bytes += b
            case .ptr(let n): name(n)
            case .srv(let priority, let weight, let port, let target):
                u16(priority)
                u16(weight)
                u16(port)
                name(target)
            case .txt(let strings):
                if strings.isEmpty { bytes.append(0) }  // RFC 6763 section 6.1: never empty
                for s in strings {
                    let s = s.prefix(255)
                    bytes.append(UInt8(s.count))
                    bytes += s
                }
            case .other(_, let raw): bytes += raw
            }
            let length = bytes.count - start
            bytes[lengthAt] = UInt8(length >> 8)
            bytes[lengthAt + 1] = UInt8(length & 0xff)
        }
    }

    // MARK: decoding

    /// Decodes a packet, or throws `DNSError` for anything malformed or oversized.
    public static func decode(_ packet: [UInt8]) throws -> DNSMessage {
        guard packet.count <= DNSMessage.maximumPacketSize else { throw DNSError("packet of \(packet.count) bytes is over the mDNS limit") }
        var r = Reader(bytes: packet)
        let id = try r.u16()
        let flags = try r.u16()
        let qd = Int(try r.u16()), an = Int(try r.u16()), ns = Int(try r.u16()), ar = Int(try r.u16())
        // A question takes at least 5 bytes, a record at least 11: counts beyond that are lies.
        guard qd * 5 + (an + ns + ar) * 11 <= r.remaining else { throw DNSError("record counts do not fit in the packet") }
        var m = DNSMessage(id: id, isResponse: flags & 0x8000 != 0, isAuthoritative: flags & 0x0400 != 0)
        guard flags & 0x7800 == 0 else { throw DNSError("not a standard query (opcode \((flags >> 11) & 0xf))") }
        for _ in 0..<qd {
            let name = try r.name()
            let type = DNSRecordType(rawValue: try r.u16())
            let cls = try r.u16()
            m.questions.append(DNSQuestion(name: name, type: type, unicastResponse: cls & 0x8000 != 0))
        }
        m.answers = try (0..<an).map { _ in try r.record() }
        m.authorities = try (0..<ns).map { _ in try r.record() }
        m.additionals = try (0..<ar).map { _ in try r.record() }
        return m
    }

    /// A cursor over a received packet. Every read checks what is left and throws on a short
    /// packet; names may jump backwards through compression pointers without moving the cursor
    /// past the pointer.
    struct Reader {
        let bytes: [UInt8]
        var at = 0
        var remaining: Int { bytes.count - at }

        mutating func u8() throws -> UInt8 {
            guard at < bytes.count else { throw DNSError("truncated packet") }
            defer { at += 1 }
            return bytes[at]
        }

        mutating func u16() throws -> UInt16 { UInt16(try u8()) << 8 | UInt16(try u8()) }
        mutating func u32() throws -> UInt32 { UInt32(try u16()) << 16 | UInt32(try u16()) }

        /// The next `n` bytes, or a throw when fewer are left (or `n` is negative).
        mutating func take(_ n: Int) throws -> [UInt8] {
            guard n >= 0, n <= remaining else { throw DNSError("truncated packet") }
            defer { at += n }
            return Array(bytes[at..<at + n])
        }

        /// Reads a possibly compressed name starting at the cursor. Bounded three ways, so a
        /// hostile packet cannot make it loop or grow: 255 bytes of name in all, at most 32
        /// pointers, and each pointer strictly before every earlier one.
        mutating func name() throws -> DNSName {
            var labels = [[UInt8]]()
            var total = 0
            var position = at
            var jumped = false
            var jumps = 0
            var lowestTarget = at
            while true {
                guard position < bytes.count else { throw DNSError("truncated name") }
                let length = Int(bytes[position])
                switch length & 0xC0 {
                case 0x00:
                    if length == 0 {
                        if !jumped { at = position + 1 }
                        return DNSName(labels: labels)
                    }
                    guard position + 1 + length <= bytes.count else { throw DNSError("truncated label") }
                    total += length + 1
                    guard total <= 255 else { throw DNSError("name longer than 255 bytes") }
                    labels.append(Array(bytes[(position + 1)...(position + length)]))
                    position += 1 + length
                case 0xC0:
                    guard position + 1 < bytes.count else { throw DNSError("truncated pointer") }
                    let target = (length & 0x3F) << 8 | Int(bytes[position + 1])
                    // Strictly backwards, and before every earlier target: no loop can form.
                    guard target < lowestTarget else { throw DNSError("compression pointer does not point backwards") }
                    jumps += 1
                    guard jumps <= 32 else { throw DNSError("too many compression pointers") }
                    if !jumped { at = position + 2 }
                    jumped = true
                    lowestTarget = target
                    position = target
                default:
                    throw DNSError("unknown label type")
                }
            }
        }

        /// Reads one resource record. A, AAAA, PTR, SRV and TXT are parsed (their data must fill
        /// the stated length exactly); any other type is kept as raw bytes.
        mutating func record() throws -> DNSRecord {
            let owner = try name()
            let type = DNSRecordType(rawValue: try u16())
            let cls = try u16()
            let ttl = try u32()
            let length = Int(try u16())
            guard length <= remaining else { throw DNSError("record data runs past the packet") }
            let end = at + length
            let data: DNSRecordData
            switch type {
            case .a:
                guard length == 4 else { throw DNSError("A record of \(length) bytes") }
                data = .a(try take(4))
            case .aaaa:
                guard length == 16 else { throw DNSError("AAAA record of \(length) bytes") }
                data = .aaaa(try take(16))
            case .ptr:
                data = .ptr(try name())
            case .srv:
                let priority = try u16(), weight = try u16(), port = try u16()
                data = .srv(priority: priority, weight: weight, port: port, target: try name())
            case .txt:
                var strings = [[UInt8]]()
                while at < end {
                    let n = Int(try u8())
                    guard at + n <= end else { throw DNSError("TXT string runs past its record") }
                    if n > 0 { strings.append(try take(n)) }
                }
                data = .txt(strings)
            default:
                data = .other(type, try take(length))
            }
            guard at == end else { throw DNSError("record data length does not match its content") }
            return DNSRecord(name: owner, ttl: ttl, cacheFlush: cls & 0x8000 != 0, data: data)
        }
    }
}
