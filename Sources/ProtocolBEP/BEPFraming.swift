import SyncKit
import SwiftProtobuf

/// One message of Syncthing's Block Exchange Protocol after the Hello, decoded.
///
/// The wire names the type in a `Header` ahead of the body; this enum is that pairing made
/// explicit, so a reader switches on one value and can never pair a body with the wrong type.
public enum BEPMessage: Sendable, Equatable {
    case clusterConfig(Bep_ClusterConfig)
    case index(Bep_Index)
    case indexUpdate(Bep_IndexUpdate)
    case request(Bep_Request)
    case response(Bep_Response)
    case downloadProgress(Bep_DownloadProgress)
    case ping
    case close(Bep_Close)

    /// The type the Header announces for this message.
    public var type: Bep_MessageType {
        switch self {
        case .clusterConfig: .clusterConfig
        case .index: .index
        case .indexUpdate: .indexUpdate
        case .request: .request
        case .response: .response
        case .downloadProgress: .downloadProgress
        case .ping: .ping
        case .close: .close
        }
    }

    /// The message body in protobuf's binary form.
    public func serializedBody() throws -> [UInt8] {
        switch self {
        case .clusterConfig(let m): try m.serializedBytes()
        case .index(let m): try m.serializedBytes()
        case .indexUpdate(let m): try m.serializedBytes()
        case .request(let m): try m.serializedBytes()
        case .response(let m): try m.serializedBytes()
        case .downloadProgress(let m): try m.serializedBytes()
        case .ping: []
        case .close(let m): try m.serializedBytes()
        }
    }

    /// Parses a body of the given type. An unknown type is an error, as it is for Syncthing:
    /// the two sides no longer agree on what the stream means.
    public static func parse(type: Bep_MessageType, body: [UInt8]) throws -> BEPMessage {
        switch type {
        case .clusterConfig: return .clusterConfig(try Bep_ClusterConfig(serializedBytes: body))
        case .index: return .index(try Bep_Index(serializedBytes: body))
        case .indexUpdate: return .indexUpdate(try Bep_IndexUpdate(serializedBytes: body))
        case .request: return .request(try Bep_Request(serializedBytes: body))
        case .response: return .response(try Bep_Response(serializedBytes: body))
        case .downloadProgress: return .downloadProgress(try Bep_DownloadProgress(serializedBytes: body))
        case .ping: _ = try Bep_Ping(serializedBytes: body); return .ping
        case .close: return .close(try Bep_Close(serializedBytes: body))
        case .UNRECOGNIZED(let raw): throw BEPFramingError.unknownMessageType(raw)
        }
    }
}

/// Why a BEP byte stream was refused. Every case ends the connection: BEP has no way to skip a
/// message it cannot read.
public enum BEPFramingError: Error, Equatable, CustomStringConvertible {
    case badHelloMagic(UInt32)
    case helloTooLarge(Int)
    case headerTooLarge(Int)
    case messageTooLarge(Int)
    case unknownMessageType(Int)
    case unknownCompression(Int)
    case badLZ4
    case tooManyEntries(String, Int)
    case malformed(String)

    public var description: String {
        switch self {
        case .badHelloMagic(let magic):
            let old: Set<UInt32> = [0x0001_0001, 0x0001_0000, 0x9F79_BC40]
            return old.contains(magic)
                ? "the peer speaks an older BEP (hello magic 0x\(String(magic, radix: 16))); Syncthing 0.14 or newer is needed"
                : "not a BEP hello (magic 0x\(String(magic, radix: 16)))"
        case .helloTooLarge(let n): return "hello of \(n) bytes is over the 32,767-byte limit"
        case .headerTooLarge(let n): return "message header of \(n) bytes is over the 32,767-byte limit"
        case .messageTooLarge(let n): return "message of \(n) bytes is over this node's limit"
        case .unknownMessageType(let t): return "unknown message type \(t)"
        case .unknownCompression(let c): return "unknown message compression \(c)"
        case .badLZ4: return "LZ4 data that does not decompress to the size it announces"
        case .tooManyEntries(let what, let n): return "more than \(n) \(what) in one message"
        case .malformed(let why): return "malformed message: \(why)"
        }
    }
}

/// When a sender compresses, as Syncthing's per-device `compression` setting says.
public enum BEPCompression: Sendable {
    /// Everything but block data (Syncthing's default): file data rarely shrinks and costs CPU.
    case metadata
    /// Every message of 128 bytes or more.
    case always
    /// Nothing.
    case never
}

/// Writes and reads the BEP byte stream (docs.syncthing.net/specs/bep-v1.html).
///
/// - The Hello: a 4-byte magic `0x2EA7D90B`, a 2-byte length, the `Hello` message. Both sides
///   send it at once after TLS, before either knows whether it trusts the other.
/// - Every later message: a 2-byte header length, a `Header` (type, compression), a 4-byte
///   body length, the body. A compressed body is a 4-byte uncompressed length and one raw LZ4
///   block, as Syncthing's lz4Compress writes it. All lengths are big-endian.
public enum BEPFraming {
    public static let helloMagic: UInt32 = 0x2EA7_D90B
    /// Syncthing reads the Hello and Header lengths as signed 16-bit values.
    public static let maxHelloLength = 32767
    public static let maxHeaderLength = 32767
    /// Syncthing compresses nothing smaller than this.
    public static let compressionThreshold = 128
    /// Syncthing's MaxMessageLen: no body, compressed or not, may be longer.
    public static let maxMessageLengthOnWire = 500_000_000

    /// The Hello as it goes on the wire.
    public static func encodeHello(_ hello: Bep_Hello) throws -> [UInt8] {
        try encodeHello(body: try hello.serializedBytes())
    }

    /// A serialized Hello as it goes on the wire.
    public static func encodeHello(body: [UInt8]) throws -> [UInt8] {
        guard body.count <= maxHelloLength else { throw BEPFramingError.helloTooLarge(body.count) }
        var out: [UInt8] = []
        out.reserveCapacity(6 + body.count)
        appendBigEndian(helloMagic, to: &out)
        appendBigEndian(UInt16(body.count), to: &out)
        out += body
        return out
    }

    /// A message as it goes on the wire, compressed when the policy asks for it and LZ4 makes
    /// it smaller.
    public static func encode(_ message: BEPMessage, compression: BEPCompression = .metadata) throws -> [UInt8] {
        try encode(type: message.type, body: try message.serializedBody(), compression: compression)
    }

    /// A serialized message body of `type` as it goes on the wire (see `encode(_:compression:)`).
    public static func encode(type: Bep_MessageType, body: [UInt8], compression: BEPCompression = .metadata) throws -> [UInt8] {
        let wantsCompression: Bool
        switch compression {
        case .never: wantsCompression = false
        case .always: wantsCompression = body.count >= compressionThreshold
        case .metadata: wantsCompression = type != .response && body.count >= compressionThreshold
        }
        // As Syncthing: compressed only when it saves at least 1/32 (3.125 %) of the body.
        if wantsCompression, let packed = lz4Compress(body), packed.count <= body.count - body.count / 32 {
            return try frame(type: type, compression: .lz4, body: packed)
        }
        return try frame(type: type, compression: .none, body: body)
    }

    /// The header, the length and `body`; with `length`, the header and that length only (the
    /// body is written after it by the caller, `BEPFrames.plainHeader`).
    static func frame(type: Bep_MessageType, compression: Bep_MessageCompression, body: [UInt8], length: Int? = nil) throws -> [UInt8] {
        let count = length ?? body.count
        // Syncthing drops a connection that announces more than 500 MB.
        guard count <= maxMessageLengthOnWire else { throw BEPFramingError.messageTooLarge(count) }
        var header = Bep_Header()
        header.type = type
        header.compression = compression
        let head: [UInt8] = try header.serializedBytes()
        var out: [UInt8] = []
        out.reserveCapacity(6 + head.count + body.count)
        appendBigEndian(UInt16(head.count), to: &out)
        out += head
        appendBigEndian(UInt32(count), to: &out)
        out += body
        return out
    }

    /// The 4-byte uncompressed length and one LZ4 block (`LZ4Block`, shared with SyncKit's
    /// own compressed index updates); nil for an empty input or when LZ4 fails: the caller then
    /// sends the body as it is.
    package static func lz4Compress(_ input: [UInt8]) -> [UInt8]? {
        input.withUnsafeBytes { LZ4Block.compress($0) }
    }

    /// Undoes `lz4Compress`: the announced size is checked against `limit` (and BEP's largest
    /// message) before anything is allocated, and output shorter than announced is refused
    /// (Syncthing accepts it, but no correct sender produces it).
    package static func lz4Decompress(_ input: ArraySlice<UInt8>, limit: Int) throws -> [UInt8] {
        do {
            return try input.withUnsafeBytes { raw in
                try LZ4Block.decompress(raw, limit: min(limit, BEPFraming.maxMessageLengthOnWire))
            }
        } catch LZ4Block.Failure.tooLarge(let announced) {
            throw BEPFramingError.messageTooLarge(Int(clamping: announced))
        } catch {
            throw BEPFramingError.badLZ4
        }
    }

    static func appendBigEndian<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { out += $0 }
    }
}

/// Reads a BEP byte stream incrementally: feed it whatever arrived (`append`), then take
/// complete items out with `next()` until it returns nil. The first item is always the Hello.
///
/// Limits are checked as soon as a length is known, before the body is waited for or any
/// buffer is sized from it, so a peer cannot make us hold more than `maxMessageLength` bytes
/// of one message (plus what is in flight), compressed or not.
public struct BEPStreamDecoder: Sendable {
    public enum Item: Sendable, Equatable {
        case hello(Bep_Hello)
        case message(BEPMessage)
    }

    /// The largest body, before or after decompression, that this side accepts. Syncthing's own
    /// limit is 500 MB; its largest real messages are block responses of at most 16 MiB and
    /// index batches of a few hundred KiB, so 64 MiB leaves room. A body is also held to its
    /// type's limits before it is parsed (`BEPLimits`): parsed messages take more memory than
    /// their bytes (an empty `FileInfo` is 2 bytes on the wire and a few hundred in memory).
    public let maxMessageLength: Int
    private var buffer: [UInt8] = []
    private var start = 0
    private var sawHello = false

    /// `maxMessageLength` is clamped to Syncthing's own 500 MB.
    public init(maxMessageLength: Int = 64 << 20) {
        self.maxMessageLength = max(0, min(maxMessageLength, BEPFraming.maxMessageLengthOnWire))
    }

    /// Bytes held that do not yet form a whole item.
    public var bufferedByteCount: Int { buffer.count - start }

    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        // Drop what was consumed before growing, so the buffer never holds more than one
        // partial item plus the newest read.
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete item, or nil when more bytes are needed. Throws on anything that is
    /// not valid BEP; the stream is then unusable.
    public mutating func next() throws -> Item? {
        guard let raw = try nextRaw() else { return nil }
        // `nextRaw` has just held the body to its type's limits.
        return try raw.parsed(checkingLimits: false)
    }

    /// The next complete item with its body unparsed (decompressed, and held to its type's
    /// limits), or nil when more bytes are needed: what a transport hands on, so that the
    /// session parses each message once, on its own task, not on the I/O thread.
    public mutating func nextRaw() throws -> RawItem? {
        if !sawHello {
            guard bufferedByteCount >= 6 else { return nil }
            let magic = UInt32(buffer[start]) << 24 | UInt32(buffer[start + 1]) << 16 | UInt32(buffer[start + 2]) << 8 | UInt32(buffer[start + 3])
            guard magic == BEPFraming.helloMagic else { throw BEPFramingError.badHelloMagic(magic) }
            let length = try readLength(at: start + 4, count: 2, limit: BEPFraming.maxHelloLength, tooLarge: BEPFramingError.helloTooLarge)
            guard bufferedByteCount >= 6 + length else { return nil }
            let body = Array(buffer[(start + 6)..<(start + 6 + length)])
            start += 6 + length
            sawHello = true
            return RawItem(type: nil, body: body)
        }
        guard bufferedByteCount >= 2 else { return nil }
        let headerLength = try readLength(at: start, count: 2, limit: BEPFraming.maxHeaderLength, tooLarge: BEPFramingError.headerTooLarge)
        guard bufferedByteCount >= 2 + headerLength + 4 else { return nil }
        let bodyLength = try readLength(at: start + 2 + headerLength, count: 4, limit: maxMessageLength, tooLarge: BEPFramingError.messageTooLarge)
        let total = 2 + headerLength + 4 + bodyLength
        guard bufferedByteCount >= total else { return nil }
        let header: Bep_Header
        do {
            header = try Bep_Header(serializedBytes: Array(buffer[(start + 2)..<(start + 2 + headerLength)]))
        } catch {
            throw BEPFramingError.malformed("header: \(error)")
        }
        // An unknown type ends the stream here, before its body is looked at.
        if case .UNRECOGNIZED(let raw) = header.type { throw BEPFramingError.unknownMessageType(raw) }
        let bodyStart = start + 2 + headerLength + 4
        let raw = buffer[bodyStart..<(bodyStart + bodyLength)]
        let body: [UInt8]
        switch header.compression {
        case .none: body = Array(raw)
        case .lz4: body = try BEPFraming.lz4Decompress(raw, limit: maxMessageLength)
        case .UNRECOGNIZED(let c): throw BEPFramingError.unknownCompression(c)
        }
        try BEPLimits.check(type: header.type, body: body)
        start += total
        return RawItem(type: header.type, body: body)
    }

    /// An item of the stream before parsing: the Hello (`type` nil) or a message of `type`,
    /// its body uncompressed and within its type's limits.
    public struct RawItem: Sendable, Equatable {
        public var type: Bep_MessageType?
        public var body: [UInt8]

        public init(type: Bep_MessageType?, body: [UInt8]) {
            self.type = type
            self.body = body
        }

        /// The item parsed; throws `BEPFramingError` on a body that is not what its type says.
        /// The body is held to its type's limits first: an item can come from anywhere (a frame
        /// of any transport), not only from `nextRaw`.
        public func parsed() throws -> Item {
            try parsed(checkingLimits: true)
        }

        func parsed(checkingLimits: Bool) throws -> Item {
            guard let type else {
                do { return .hello(try Bep_Hello(serializedBytes: body)) } catch { throw BEPFramingError.malformed("hello: \(error)") }
            }
            if checkingLimits { try BEPLimits.check(type: type, body: body) }
            do {
                return .message(try BEPMessage.parse(type: type, body: body))
            } catch let error as BEPFramingError {
                throw error
            } catch {
                throw BEPFramingError.malformed("\(type): \(error)")
            }
        }
    }

    /// A big-endian length of 2 or 4 bytes, checked against `limit` while still unsigned (so
    /// no platform reads 0x80000000 as a negative length); throws `tooLarge` over it.
    private func readLength(at offset: Int, count: Int, limit: Int, tooLarge: (Int) -> BEPFramingError) throws -> Int {
        var value: UInt64 = 0
        for i in 0..<count { value = value << 8 | UInt64(buffer[offset + i]) }
        guard value <= UInt64(limit) else { throw tooLarge(Int(clamping: value)) }
        return Int(value)
    }
}

/// What one message of each type may hold before it is parsed: parsing makes objects, and an
/// object per 2-byte entry would turn a 64 MiB body (or a 256 KiB LZ4 bomb of it) into
/// gigabytes. Syncthing sends at most about 1,000 files or 250 KiB per index batch and one
/// block (at most 16 MiB) per response, so these limits never refuse what it sends.
enum BEPLimits {
    /// Files per Index or IndexUpdate.
    static let filesPerIndex = 20_000
    /// Blocks over all files of one Index or IndexUpdate (a 1 TB file has 65,536 blocks of 16 MiB).
    static let blocksPerIndex = 1_000_000
    /// Folders, and devices per folder, of a ClusterConfig; updates of a DownloadProgress.
    static let entriesPerConfig = 10_000
    /// Bodies of the small messages (Request, Ping, Close) and of a Response beyond its block.
    static let smallBody = 64 << 10

    static func check(type: Bep_MessageType, body: [UInt8]) throws {
        switch type {
        case .response:
            guard body.count <= SyncthingBlocks.maxBlockSize + smallBody else { throw BEPFramingError.messageTooLarge(body.count) }
        case .request, .ping, .close:
            guard body.count <= smallBody else { throw BEPFramingError.messageTooLarge(body.count) }
        case .index, .indexUpdate:
            var files = 0, blocks = 0
            try ProtobufScan.fields(body[...]) { field, value in
                guard field == 2, let file = value else { return }
                files += 1
                guard files <= filesPerIndex else { throw BEPFramingError.tooManyEntries("files", filesPerIndex) }
                try ProtobufScan.fields(file) { f, _ in
                    if f == 16 { blocks += 1 }
                }
                guard blocks <= blocksPerIndex else { throw BEPFramingError.tooManyEntries("blocks", blocksPerIndex) }
            }
        case .clusterConfig:
            var folders = 0
            try ProtobufScan.fields(body[...]) { field, value in
                guard field == 1, let folder = value else { return }
                folders += 1
                var devices = 0
                try ProtobufScan.fields(folder) { f, _ in if f == 16 { devices += 1 } }
                guard folders <= entriesPerConfig, devices <= entriesPerConfig else {
                    throw BEPFramingError.tooManyEntries("folders or devices", entriesPerConfig)
                }
            }
        case .downloadProgress:
            var updates = 0
            try ProtobufScan.fields(body[...]) { field, _ in
                if field == 2 { updates += 1 }
                guard updates <= entriesPerConfig else { throw BEPFramingError.tooManyEntries("updates", entriesPerConfig) }
            }
        case .UNRECOGNIZED:
            break  // refused by the parser
        }
    }
}

/// Walks the top-level fields of protobuf bytes without parsing them into messages: the field
/// number of each, and the bytes of the length-delimited ones. Malformed bytes throw; the
/// parser would refuse them too.
enum ProtobufScan {
    static func fields(_ bytes: ArraySlice<UInt8>, _ visit: (Int, ArraySlice<UInt8>?) throws -> Void) throws {
        var i = bytes.startIndex
        func varint() throws -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard i < bytes.endIndex, shift < 64 else { throw BEPFramingError.malformed("truncated varint") }
                let b = bytes[i]
                i += 1
                value |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return value }
                shift += 7
            }
        }
        while i < bytes.endIndex {
            let key = try varint()
            let field = Int(clamping: key >> 3)
            switch key & 7 {
            case 0: _ = try varint(); try visit(field, nil)
            case 1:
                guard bytes.endIndex - i >= 8 else { throw BEPFramingError.malformed("truncated field") }
                i += 8; try visit(field, nil)
            case 5:
                guard bytes.endIndex - i >= 4 else { throw BEPFramingError.malformed("truncated field") }
                i += 4; try visit(field, nil)
            case 2:
                let length = try varint()
                guard length <= UInt64(bytes.endIndex - i) else { throw BEPFramingError.malformed("truncated field") }
                let value = bytes[i..<(i + Int(length))]
                i += Int(length)
                try visit(field, value)
            case 3, 4:
                // The start and end of a group (proto2's old nesting, which no BEP peer sends but
                // the parser skips as an unknown field): no payload of its own; the fields
                // between are walked as if they were at this level, which can only overcount.
                try visit(field, nil)
            default:
                throw BEPFramingError.malformed("unsupported wire type \(key & 7)")
            }
        }
    }
}
