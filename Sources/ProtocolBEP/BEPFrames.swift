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

    /// A frame as it goes on the wire: the Hello with its magic, a message with its header,
    /// compressed as `compression` says.
    public static func wireBytes(_ frame: Frame, compression: BEPCompression = .metadata) throws -> [UInt8] {
        let item = try rawItem(frame)
        guard let type = item.type else { return try BEPFraming.encodeHello(body: item.body) }
        return try BEPFraming.encode(type: type, body: item.body, compression: compression)
    }
}
