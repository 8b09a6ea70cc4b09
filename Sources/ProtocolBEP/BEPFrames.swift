import NIOCore
import SyncKit

/// BEP carried over SyncKit's `PeerChannel`, which moves `Frame`s (a type byte and a payload).
///
/// A transport that negotiated `bep/1.0` by ALPN splits the byte stream with
/// `BEPStreamDecoder.nextRaw()` and hands each item on as one frame: the frame's type is the
/// BEP message type (0 to 7; 255 for the Hello, which has no type on the wire) and its payload
/// the protobuf body, already uncompressed and held to its type's limits. Going out, the
/// transport writes a frame back with `wireBytes(_:)`, which compresses as Syncthing's
/// default does (metadata only, when LZ4 saves 1/32). The session above never sees the
/// framing, the compression or the Hello magic; the transport never parses protobuf.
public enum BEPFrames {
    /// The protocol's ALPN name, as Syncthing offers and accepts it.
    public static let applicationProtocol = "bep/1.0"
    /// The frame type that stands for the Hello.
    public static let helloType: UInt8 = 0xFF

    /// The frame of one item of the stream.
    public static func frame(_ item: BEPStreamDecoder.RawItem) -> Frame {
        Frame(type: item.type.map { UInt8(truncatingIfNeeded: $0.rawValue) } ?? helloType, payload: ByteBuffer(bytes: item.body))
    }

    /// A Hello as a frame.
    public static func frame(hello: Bep_Hello) throws -> Frame {
        frame(BEPStreamDecoder.RawItem(type: nil, body: try hello.serializedBytes()))
    }

    /// A message as a frame.
    public static func frame(_ message: BEPMessage) throws -> Frame {
        frame(BEPStreamDecoder.RawItem(type: message.type, body: try message.serializedBody()))
    }

    /// Throws what `wireBytes` would throw for this frame (a type BEP does not have, a Hello over
    /// 32,767 bytes), without copying it: a sender checks before it queues a frame, since a
    /// write that fails later, on the I/O thread, has nobody to tell.
    public static func check(_ frame: Frame) throws {
        if frame.type == helloType {
            guard frame.payload.readableBytes <= BEPFraming.maxHelloLength else {
                throw BEPFramingError.helloTooLarge(frame.payload.readableBytes)
            }
            return
        }
        guard frame.type <= 7 else { throw BEPFramingError.unknownMessageType(Int(frame.type)) }
        guard frame.payload.readableBytes <= BEPFraming.maxMessageLengthOnWire else {
            throw BEPFramingError.messageTooLarge(frame.payload.readableBytes)
        }
    }

    /// The item a frame stands for, unparsed; throws on a type BEP does not have.
    public static func rawItem(_ frame: Frame) throws -> BEPStreamDecoder.RawItem {
        let body = Array(frame.payload.readableBytesView)
        if frame.type == helloType { return .init(type: nil, body: body) }
        guard let type = Bep_MessageType(rawValue: Int(frame.type)), frame.type <= 7 else {
            throw BEPFramingError.unknownMessageType(Int(frame.type))
        }
        return .init(type: type, body: body)
    }

    /// The item a frame stands for, parsed (what a session reads).
    public static func item(_ frame: Frame) throws -> BEPStreamDecoder.Item {
        try rawItem(frame).parsed()
    }

    /// A Response as a frame, its block copied once, straight into the frame's payload (not
    /// through `Bep_Response`'s `Data`, its serialized bytes and a frame buffer: with a
    /// Syncthing peer pulling 32 MiB at a time from each of three links, those copies took a
    /// serving node to 330 MiB). The bytes are protobuf's encoding of `Bep_Response`: field 1
    /// the ID (an int32, sign-extended to 64 bits as protobuf does), field 2 the data, field 3
    /// the code when not 0.
    public static func responseFrame(id: Int32, data: ByteBuffer, code: Bep_ErrorCode) -> Frame {
        var payload = ByteBufferAllocator().buffer(capacity: data.readableBytes + 24)
        func varint(_ v: UInt64) {
            var v = v
            while v >= 0x80 {
                payload.writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
                v >>= 7
            }
            payload.writeInteger(UInt8(v))
        }
        if id != 0 {
            payload.writeInteger(UInt8(0x08))
            varint(UInt64(bitPattern: Int64(id)))
        }
        if data.readableBytes > 0 {
            payload.writeInteger(UInt8(0x12))
            varint(UInt64(data.readableBytes))
            var data = data
            payload.writeBuffer(&data)
        }
        if code.rawValue != 0 {
            payload.writeInteger(UInt8(0x18))
            varint(UInt64(bitPattern: Int64(code.rawValue)))
        }
        return Frame(type: UInt8(Bep_MessageType.response.rawValue), payload: payload)
    }

    /// The header that goes before `frame`'s payload as it is, when the frame goes out
    /// uncompressed under `compression` (a Response, always, under Syncthing's default); nil when
    /// it must go through `wireBytes` (a Hello, or a body to compress). Lets the transport write
    /// a block without copying it again.
    public static func plainHeader(_ frame: Frame, compression: BEPCompression = .metadata) throws -> [UInt8]? {
        guard frame.type != helloType, let type = Bep_MessageType(rawValue: Int(frame.type)), frame.type <= 7 else { return nil }
        let plain: Bool
        switch compression {
        case .never: plain = true
        case .always: plain = frame.payload.readableBytes < BEPFraming.compressionThreshold
        case .metadata: plain = type == .response || frame.payload.readableBytes < BEPFraming.compressionThreshold
        }
        guard plain else { return nil }
        return try BEPFraming.frame(type: type, compression: .none, body: [], length: frame.payload.readableBytes)
    }

    /// A frame as it goes on the wire: the Hello with its magic, a message with its header,
    /// compressed as `compression` says.
    public static func wireBytes(_ frame: Frame, compression: BEPCompression = .metadata) throws -> [UInt8] {
        let item = try rawItem(frame)
        guard let type = item.type else { return try BEPFraming.encodeHello(body: item.body) }
        return try BEPFraming.encode(type: type, body: item.body, compression: compression)
    }
}
