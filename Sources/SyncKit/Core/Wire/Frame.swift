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

    public init(maximumSize: Int = Frame.defaultMaximumSize) {
        self.maximumSize = maximumSize
        self.buffer = ByteBufferAllocator().buffer(capacity: 0)
    }

    /// Bytes received but not yet returned as frames.
    public var bufferedBytes: Int { buffer.readableBytes }

    /// Adds bytes received from the stream.
    ///
    /// Frames handed out are slices of this buffer, and a caller may keep them; appending to a
    /// buffer that is still shared would copy all of it, consumed bytes included. So an empty
    /// buffer is replaced by the new bytes (no copy at all), and otherwise only the unread tail
    /// moves into a fresh buffer before the new bytes are added.
    public mutating func append(_ bytes: ByteBuffer) {
        if buffer.readableBytes == 0 {
            buffer = bytes
            return
        }
        if buffer.readerIndex > 0 {
            var fresh = ByteBufferAllocator().buffer(capacity: buffer.readableBytes + bytes.readableBytes)
            fresh.writeBuffer(&buffer)
            buffer = fresh
        }
        var bytes = bytes
        buffer.writeBuffer(&bytes)
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
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        try Self.validate(length: length, maximum: maximumSize)
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let type: UInt8 = buffer.readInteger()!
        let payload = buffer.readSlice(length: Int(length) - 1)!
        return Frame(type: type, payload: payload)
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
