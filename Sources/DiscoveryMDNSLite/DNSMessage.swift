/// DNS messages as multicast DNS uses them (RFC 1035 section 4, with the mDNS changes of
/// RFC 6762: the top bit of a question's class asks for a unicast answer (section 5.4), the top
/// bit of a record's class is the cache-flush bit (section 10.2)).
///
/// Decoding treats every packet as hostile, because anyone on the LAN can send one: names are
/// limited to 255 bytes and 63-byte labels, compression pointers must point strictly backwards
/// (so a pointer loop cannot exist) and may be followed at most 32 times per name, every count
/// is checked against the bytes left before anything is allocated, and a packet larger than
/// 9,000 bytes (the mDNS limit, section 17) is refused outright. Failures are a typed
/// `DNSError`, never a crash.
public struct DNSMessage: Equatable, Sendable {
    public var id: UInt16 = 0
    /// QR bit: a response (answers) rather than a query.
    public var isResponse: Bool
    /// AA bit: mDNS responses set it.
    public var isAuthoritative: Bool
    public var questions: [DNSQuestion] = []
    public var answers: [DNSRecord] = []
    public var authorities: [DNSRecord] = []
    public var additionals: [DNSRecord] = []

    public init(id: UInt16 = 0, isResponse: Bool, isAuthoritative: Bool = false, questions: [DNSQuestion] = [], answers: [DNSRecord] = [], authorities: [DNSRecord] = [], additionals: [DNSRecord] = []) {
        self.id = id
        self.isResponse = isResponse
        self.isAuthoritative = isAuthoritative
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
    }

    public static let maximumPacketSize = 9000
}

/// A question: name, type, and the unicast-response bit.
public struct DNSQuestion: Equatable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    /// QU: the asker wants the answer by unicast (RFC 6762 section 5.4).
    public var unicastResponse: Bool
    public init(name: DNSName, type: DNSRecordType, unicastResponse: Bool = false) {
        self.name = name
        self.type = type
        self.unicastResponse = unicastResponse
    }
}

/// Record types SyncKit reads and writes; anything else is kept as its number.
public struct DNSRecordType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let a = DNSRecordType(rawValue: 1)
    public static let ptr = DNSRecordType(rawValue: 12)
    public static let txt = DNSRecordType(rawValue: 16)
    public static let aaaa = DNSRecordType(rawValue: 28)
    public static let srv = DNSRecordType(rawValue: 33)
    public static let nsec = DNSRecordType(rawValue: 47)
    public static let any = DNSRecordType(rawValue: 255)
    public var description: String {
        switch self {
        case .a: "A"
        case .ptr: "PTR"
        case .txt: "TXT"
        case .aaaa: "AAAA"
        case .srv: "SRV"
        case .nsec: "NSEC"
        case .any: "ANY"
        default: "TYPE\(rawValue)"
        }
    }
}

/// A resource record.
public struct DNSRecord: Equatable, Sendable {
    public var name: DNSName
    public var ttl: UInt32
    /// The cache-flush bit: this record replaces what caches hold for its name and type
    /// (set on unique records: SRV, TXT, A, AAAA; RFC 6762 section 10.2).
    public var cacheFlush: Bool
    public var data: DNSRecordData

    public init(name: DNSName, ttl: UInt32, cacheFlush: Bool = false, data: DNSRecordData) {
        self.name = name
        self.ttl = ttl
        self.cacheFlush = cacheFlush
        self.data = data
    }

    public var type: DNSRecordType {
        switch data {
        case .a: .a
        case .aaaa: .aaaa
        case .ptr: .ptr
        case .srv: .srv
        case .txt: .txt
        case .other(let type, _): type
        }
    }
}

/// The typed content of a record.
public enum DNSRecordData: Equatable, Sendable {
    case a([UInt8])  // 4 bytes
    case aaaa([UInt8])  // 16 bytes
    case ptr(DNSName)
    case srv(priority: UInt16, weight: UInt16, port: UInt16, target: DNSName)
    /// TXT strings, each at most 255 bytes (RFC 6763 section 6: `key=value` pairs).
    case txt([[UInt8]])
    case other(DNSRecordType, [UInt8])
}

/// A domain name as labels; compared case-insensitively (ASCII), as DNS does.
public struct DNSName: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    public var labels: [[UInt8]]

    public init(labels: [[UInt8]]) { self.labels = labels }

    /// From dotted text (`_synckit._tcp.local`); a trailing dot is ignored. Dots inside an
    /// instance name are not supported by this form (use `init(labels:)`).
    public init(_ text: String) {
        labels = text.split(separator: ".", omittingEmptySubsequences: true).map { Array($0.utf8) }
    }

    public init(stringLiteral value: String) { self.init(value) }

    /// `instance` + `service`, the instance label taken whole (it may contain dots or spaces).
    public init(instance: String, service: DNSName) {
        labels = [Array(instance.utf8.prefix(63))] + service.labels
    }

    public var description: String {
        labels.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ".") + "."
    }

    /// Lower-cased ASCII labels, for comparison and hashing.
    var canonical: [[UInt8]] {
        labels.map { $0.map { ($0 >= 65 && $0 <= 90) ? $0 + 32 : $0 } }
    }

    public static func == (a: DNSName, b: DNSName) -> Bool { a.canonical == b.canonical }
    public func hash(into hasher: inout Hasher) { hasher.combine(canonical) }

    /// True when `self` ends with `suffix` (label-wise).
    public func hasSuffix(_ suffix: DNSName) -> Bool {
        let a = canonical, b = suffix.canonical
        return a.count >= b.count && Array(a.suffix(b.count)) == b
    }
}

/// Why a packet was refused.
public struct DNSError: Error, Equatable, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
