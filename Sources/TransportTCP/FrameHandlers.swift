import NIOCore
import SyncKit

/// Splits the inbound byte stream into `Frame`s with SyncKit's `FrameDecoder`.
///
/// The decoder checks a frame's declared length as soon as its 4-byte prefix is in, so a peer
/// that announces a frame above the limit (or of length 0) is cut off after at most one socket
/// read, before anything of that size is buffered. The error (`WireError`) is passed on to the
/// `NIOAsyncChannel`, which finishes `inbound` with it, and the connection is closed.
final class FrameDecodingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Frame

    private var decoder: FrameDecoder
    /// Payloads up to this size are copied out of the read buffer (see `channelRead`).
    static let copyLimit = 16 << 10
    /// Set once the stream was found malformed: later reads are dropped, not decoded.
    private var failed = false

    init(maximumFrameSize: Int) {
        decoder = FrameDecoder(maximumSize: maximumFrameSize)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        decoder.append(Self.unwrapInboundIn(data))
        do {
            while var frame = try decoder.next() {
                // The decoder returns a slice of the read or of its own gathering buffer. A small
                // frame is copied, so that keeping it (an index update, a request) does not pin a
                // whole read buffer in memory; a large one (a block) is most of its buffer anyway
                // and goes on as is, saving a copy of every block received.
                if frame.payload.readableBytes <= Self.copyLimit {
                    var payload = context.channel.allocator.buffer(capacity: frame.payload.readableBytes)
                    payload.writeImmutableBuffer(frame.payload)
                    frame.payload = payload
                }
                context.fireChannelRead(Self.wrapInboundOut(frame))
            }
        } catch {
            failed = true
            context.fireErrorCaught(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The peer went away in the middle of a frame: say so rather than end quietly.
        if !failed, decoder.bufferedBytes > 0 {
            failed = true
            context.fireErrorCaught(
                WireError(.truncated, "the connection closed \(decoder.bufferedBytes) bytes into a frame")
            )
        }
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension FrameDecodingHandler: Sendable {}

/// Writes `Frame`s as `u32 length | type | payload`.
///
/// Small frames are encoded into one buffer with `Frame.encode(into:)` (one write, one syscall
/// entry); large ones are written as a 5-byte header followed by the payload buffer itself, so a
/// 256 KiB block is never copied on its way to the socket.
final class FrameEncodingHandler: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = Frame
    typealias OutboundOut = ByteBuffer

    /// Payloads up to this size are copied next to their header.
    static let copyLimit = 16 << 10

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = Self.unwrapOutboundIn(data)
        if frame.payload.readableBytes <= Self.copyLimit {
            var buffer = context.channel.allocator.buffer(capacity: frame.wireSize)
            frame.encode(into: &buffer)
            context.write(Self.wrapOutboundOut(buffer), promise: promise)
        } else {
            var header = context.channel.allocator.buffer(capacity: 5)
            header.writeInteger(UInt32(1 + frame.payload.readableBytes))
            header.writeInteger(frame.type)
            context.write(Self.wrapOutboundOut(header), promise: nil)
            context.write(Self.wrapOutboundOut(frame.payload), promise: promise)
        }
    }
}

@available(*, unavailable)
extension FrameEncodingHandler: Sendable {}
