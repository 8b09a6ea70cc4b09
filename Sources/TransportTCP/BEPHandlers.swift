import NIOCore
import ProtocolBEP
import SyncKit

/// Splits an inbound BEP byte stream (after ALPN chose `bep/1.0`) into `Frame`s, one per
/// Hello or message (see `BEPFrames`), with ProtocolBEP's `BEPStreamDecoder`.
///
/// As for SyncKit's framing, a length over the limit ends the connection as soon as it is read,
/// before the body is buffered, and so does anything that is not BEP (a bad magic, an unknown
/// type or compression, an LZ4 block that does not decode, a body over its type's limits).
final class BEPFrameDecodingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Frame

    private var decoder: BEPStreamDecoder
    private var failed = false

    init(maximumMessageLength: Int) {
        decoder = BEPStreamDecoder(maxMessageLength: maximumMessageLength)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        decoder.append(Self.unwrapInboundIn(data).readableBytesView)
        do {
            while let item = try decoder.nextRaw() {
                context.fireChannelRead(Self.wrapInboundOut(BEPFrames.frame(item)))
            }
        } catch {
            failed = true
            context.fireErrorCaught(Self.wireError(error))
            context.close(promise: nil)
        }
    }

    /// A refused stream as the `WireError` every transport ends a connection with.
    static func wireError(_ error: any Error) -> WireError {
        let code: WireError.Code
        switch error as? BEPFramingError {
        case .helloTooLarge, .headerTooLarge, .messageTooLarge, .tooManyEntries: code = .frameTooLarge
        case .unknownMessageType: code = .unknownType
        default: code = .malformed
        }
        return WireError(code, "BEP: \(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !failed, decoder.bufferedByteCount > 0 {
            failed = true
            context.fireErrorCaught(
                WireError(.truncated, "the connection closed \(decoder.bufferedByteCount) bytes into a BEP message"))
        }
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension BEPFrameDecodingHandler: Sendable {}

/// Writes `Frame`s as BEP (`BEPFrames.wireBytes`): the Hello with its magic, messages with
/// their header, metadata LZ4-compressed as Syncthing's default setting does.
final class BEPFrameEncodingHandler: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = Frame
    typealias OutboundOut = ByteBuffer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        do {
            let frame = Self.unwrapOutboundIn(data)
            // A block (a Response) goes out as it is, after its header: no copy.
            if let header = try BEPFrames.plainHeader(frame) {
                context.write(Self.wrapOutboundOut(context.channel.allocator.buffer(bytes: header)), promise: nil)
                context.write(Self.wrapOutboundOut(frame.payload), promise: promise)
                return
            }
            let bytes = try BEPFrames.wireBytes(frame)
            context.write(Self.wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: promise)
        } catch {
            promise?.fail(error)
        }
    }
}

@available(*, unavailable)
extension BEPFrameEncodingHandler: Sendable {}
