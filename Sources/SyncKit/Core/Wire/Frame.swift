import NIOCore

/// One message on a peer link: a type byte and its payload.
///
/// On a byte stream a frame is `u32 big-endian length | type | payload`, where the length counts
/// the type byte and the payload. Transports that carry frames natively (the in-memory one)
/// skip the length prefix; stream transports use `FrameDecoder` and `Frame.encode(into:)`.
public struct Frame: Sendable, Equatable {
    public var type: UInt8
    public var payload: ByteBuffer

    public init(type: UInt8, payload: ByteBuffer) {
        self.type = type
        self.payload = payload
    }

    /// Bytes this frame takes on a stream, prefix included.
    public var wireSize: Int { 5 + payload.readableBytes }

    /// Appends the length-prefixed form of the frame to `buffer`.
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(1 + payload.readableBytes))
        buffer.writeInteger(type)
        var copy = payload
        buffer.writeBuffer(&copy)
    }

    /// The hard limit on one frame (16 MiB): well above the largest block (256 KiB) and index
    /// batch (about 2 MiB), and small enough that a hostile length cannot exhaust memory.
    public static let defaultMaximumSize = 16 << 20
}

/// Splits a byte stream into frames, enforcing the maximum size before any buffering.
///
/// Incremental and bounded: bytes are appended as they arrive and `next()` returns a frame only
/// once all of it is present. A declared length above `maximumSize` (or zero) throws at once,
/// so a peer cannot make the node buffer an oversized frame. Pure Swift, no I/O: the TCP
/// transport and the tests both use it.
public struct FrameDecoder: Sendable {
    public let maximumSize: Int
    private var buffer: ByteBuffer
    /// False while `buffer` is the caller's own buffer taken as is (no copy): its storage may
    /// still be shared (NIOSSL keeps a reference to the buffer it decrypts into), so nothing is
    /// written into it and a partial frame is not kept in it.
    private var owned = true

    /// The most a partial frame's buffer is given up front: room for a whole block frame, so its
    /// pieces are copied once each; a larger declared frame grows as its bytes come, so a peer
    /// that announces a big frame and sends nothing costs no more than this.
    static let preallocationLimit = 1 << 20

    public init(maximumSize: Int = Frame.defaultMaximumSize) {
        self.maximumSize = maximumSize
        self.buffer = ByteBufferAllocator().buffer(capacity: 0)
    }

    /// Bytes received but not yet returned as frames.
    public var bufferedBytes: Int { buffer.readableBytes }

    /// Adds bytes received from the stream.
    ///
    /// Each byte is copied at most once: frames that arrive whole in one read are slices of the
    /// caller's buffer (no copy at all); a frame that spans reads is gathered in a buffer of its
    /// own, made once with room for the whole frame. A frame handed out may be kept by the
    /// caller: the decoder never writes into storage a handed-out frame shares (it moves the
    /// unread tail into a fresh buffer first), so keeping one never makes the next append copy
    /// everything (copy-on-write).
    public mutating func append(_ bytes: ByteBuffer) {
        if buffer.readableBytes == 0 {
            buffer = bytes
            owned = false
            return
        }
        var bytes = bytes
        if !owned || buffer.readerIndex > 0 || buffer.writableBytes < bytes.readableBytes {
            adopt(extra: bytes.readableBytes)
        }
        buffer.writeBuffer(&bytes)
    }

    /// Moves the unread bytes into a fresh buffer of this decoder's own, with room for `extra`
    /// more bytes and, when the pending frame's length is known, for all of that frame (up to
    /// `preallocationLimit`).
    private mutating func adopt(extra: Int) {
        var room = buffer.readableBytes + extra
        if let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self), Int(length) <= maximumSize {
            room = max(room, min(4 + Int(length), Self.preallocationLimit))
        }
        var fresh = ByteBufferAllocator().buffer(capacity: room)
        fresh.writeBuffer(&buffer)
        buffer = fresh
        owned = true
    }

    static func validate(length: UInt32, maximum: Int) throws {
        if length == 0 { throw WireError(.malformed, "a frame of length 0") }
        if Int(length) > maximum {
            throw WireError(.frameTooLarge, "a frame of \(length) bytes is over the limit of \(maximum)")
        }
    }

    /// The next complete frame, or nil when more bytes are needed. The length prefix is checked
    /// as soon as its four bytes are in, so an oversized frame fails before it is buffered.
    public mutating func next() throws -> Frame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else {
            keepPartial()
            return nil
        }
        try Self.validate(length: length, maximum: maximumSize)
        guard buffer.readableBytes >= 4 + Int(length) else {
            keepPartial()
            return nil
        }
        buffer.moveReaderIndex(forwardBy: 4)
        let type: UInt8 = buffer.readInteger()!
        let payload = buffer.readSlice(length: Int(length) - 1)!
        return Frame(type: type, payload: payload)
    }

    /// A partial frame left in the caller's buffer moves into one of our own now, so that the
    /// caller's storage is released (and not copied on its next write).
    private mutating func keepPartial() {
        if !owned && buffer.readableBytes > 0 { adopt(extra: 0) }
    }
}

/// A malformed, oversized or unexpected input from a peer. It costs the peer its connection.
public struct WireError: Error, Equatable, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable {
        let raw: String
        /// Bytes ran out before the structure they announced was complete.
        public static let truncated = Code(raw: "truncated")
        /// A length or count larger than allowed or than what the frame holds.
        public static let frameTooLarge = Code(raw: "frameTooLarge")
        /// A value that cannot be right (bad magic, invalid UTF-8, bad enum value, trailing bytes).
        public static let malformed = Code(raw: "malformed")
        /// A type byte this version does not know.
        public static let unknownType = Code(raw: "unknownType")
        /// A protocol version this node cannot speak.
        public static let unsupportedVersion = Code(raw: "unsupportedVersion")
    }

    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "\(code.raw): \(message)" }
}
