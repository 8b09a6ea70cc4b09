import Foundation
import NIOCore
import NIOEmbedded
import ProtocolBEP
import SyncKit
import Testing
@testable import TransportTCP

/// One port, two protocols: the TLS handshake's ALPN picks SyncKit's framing or Syncthing's
/// BEP framing for the connection, and a BEP connection carries BEP messages as frames.
@Suite("TCP transport: BEP by ALPN")
struct BEPTransportTests {
    static let both = [TLSSettings.syncKitProtocol, BEPFrames.applicationProtocol]

    static func transport(_ protocols: [String]) throws -> TCPTransport {
        TCPTransport(configuration: .init(tls: TLSSettings(identity: try NodeIdentity.make(), applicationProtocols: protocols)))
    }

    /// A listener that accepts both gives a Syncthing-like dialer (offering only `bep/1.0`) BEP
    /// framing, and a dialer that offers both SyncKit's own: the listener's preference decides.
    @Test func alpnPicksTheFramingPerConnection() async throws {
        let listener = try await Self.transport(Self.both).listen(port: 0)
        var accepted = listener.channels.makeAsyncIterator()

        let bepClient = try await Self.transport([BEPFrames.applicationProtocol]).connect(to: TCPTransportTests.loopback(listener.port))
        let bepServer = try #require(await accepted.next())
        #expect(bepClient.security?.applicationProtocol == BEPFrames.applicationProtocol)
        #expect(bepServer.security?.applicationProtocol == BEPFrames.applicationProtocol)

        let ownClient = try await Self.transport(Self.both).connect(to: TCPTransportTests.loopback(listener.port))
        let ownServer = try #require(await accepted.next())
        #expect(ownClient.security?.applicationProtocol == TLSSettings.syncKitProtocol)
        #expect(ownServer.security?.applicationProtocol == TLSSettings.syncKitProtocol)

        // A SyncKit frame (type 9 is no BEP type) goes through the SyncKit link as it is.
        let own = Frame(type: 9, payload: ByteBuffer(bytes: [1, 2, 3]))
        try await ownClient.send(own)
        var ownInbound = ownServer.inbound.makeAsyncIterator()
        #expect(try await ownInbound.next() == own)
        // ...and is refused on the BEP link, whose frames are BEP messages only.
        await #expect(throws: BEPFramingError.self) { try await bepClient.send(own) }

        for c in [bepClient, bepServer, ownClient, ownServer] as [any PeerChannel] { await c.close() }
        await listener.close()
    }

    /// Over a BEP link the Hello and messages arrive as sent, both ways, including a response
    /// with a 16 MiB block (Syncthing's largest): over SyncKit's frame limit, so this also shows
    /// the link is not framed as SyncKit's.
    @Test func bepMessagesCrossTheLinkBothWays() async throws {
        let listener = try await Self.transport(Self.both).listen(port: 0)
        var accepted = listener.channels.makeAsyncIterator()
        let client = try await Self.transport([BEPFrames.applicationProtocol]).connect(to: TCPTransportTests.loopback(listener.port))
        let server = try #require(await accepted.next())

        var hello = Bep_Hello()
        hello.deviceName = "syncctl test"
        hello.clientName = "syncctl"
        var folder = Bep_Folder()
        folder.id = "default"
        folder.label = String(repeating: "label ", count: 100)
        var config = Bep_ClusterConfig()
        config.folders = [folder]
        var response = Bep_Response()
        response.id = 1
        response.data = Data((0..<(16 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let sent = [try BEPFrames.frame(hello: hello), try BEPFrames.frame(.clusterConfig(config)), try BEPFrames.frame(.response(response))]
        try await client.send(contentsOf: sent)
        var inbound = server.inbound.makeAsyncIterator()
        var received: [Frame] = []
        for _ in sent { received.append(try #require(try await inbound.next())) }
        #expect(received == sent)
        #expect(try BEPFrames.item(received[1]) == .message(.clusterConfig(config)))

        try await server.send(contentsOf: [try BEPFrames.frame(hello: hello), try BEPFrames.frame(.ping)])
        var back = client.inbound.makeAsyncIterator()
        #expect(try await back.next() == (try BEPFrames.frame(hello: hello)))
        #expect(try await back.next() == (try BEPFrames.frame(.ping)))

        await client.close()
        await server.close()
        await listener.close()
    }

    /// Frames go out as BEP: the Hello behind its magic, a message behind its header.
    @Test func framesAreWrittenAsBEP() throws {
        let channel = EmbeddedChannel(handler: BEPFrameEncodingHandler())
        var hello = Bep_Hello()
        hello.deviceName = "n"
        try channel.writeOutbound(try BEPFrames.frame(hello: hello))
        try channel.writeOutbound(try BEPFrames.frame(.ping))
        let first = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(first.readableBytesView) == (try BEPFraming.encodeHello(hello)))
        #expect(Array(first.readableBytesView.prefix(4)) == [0x2E, 0xA7, 0xD9, 0x0B])
        let second = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(second.readableBytesView) == [0, 2, 0x08, 0x06, 0, 0, 0, 0], "header {type: PING}, empty body")
        _ = try channel.finish()
    }

    /// The bytes a real Syncthing 1.19.2 sent (tests/bep/capture.py), fed to the decoding
    /// handler in reads of 1,500 bytes, come out as one frame per item, which parse as
    /// ProtocolBEP's decoder reads the whole stream.
    @Test func syncthingsRecordedStreamBecomesFrames() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("ProtocolBEPTests/Fixtures/syncthing-stream.bin")
        let stream = try [UInt8](Data(contentsOf: fixtures))
        let channel = EmbeddedChannel(handler: BEPFrameDecodingHandler(maximumMessageLength: 64 << 20))
        var offset = 0
        while offset < stream.count {
            try channel.writeInbound(ByteBuffer(bytes: stream[offset..<min(offset + 1_500, stream.count)]))
            offset += 1_500
        }
        var frames: [Frame] = []
        while let frame = try channel.readInbound(as: Frame.self) { frames.append(frame) }
        var decoder = BEPStreamDecoder()
        decoder.append(stream)
        var items: [BEPStreamDecoder.Item] = []
        while let item = try decoder.next() { items.append(item) }
        #expect(frames.count == items.count && frames.first?.type == BEPFrames.helloType)
        #expect(try frames.map { try BEPFrames.item($0) } == items)
        _ = try channel.finish()
    }

    /// What is not BEP ends a BEP connection with a `WireError`: a wrong magic, a message length
    /// over the limit (refused when the length is read, before the body), an unknown type, and
    /// a stream that stops inside a message.
    @Test(arguments: [
        ([0xDE, 0xAD, 0xBE, 0xEF, 0, 0], WireError.Code.malformed),
        ([0x2E, 0xA7, 0xD9, 0x0B, 0, 0] + [0, 0] + [0x7F, 0xFF, 0xFF, 0xFF], WireError.Code.frameTooLarge),
        ([0x2E, 0xA7, 0xD9, 0x0B, 0, 0] + [0, 2, 0x08, 0x09] + [0, 0, 0, 0], WireError.Code.unknownType),
    ] as [([UInt8], WireError.Code)])
    func malformedStreamsEndTheConnection(bytes: [UInt8], code: WireError.Code) throws {
        let channel = EmbeddedChannel(handler: BEPFrameDecodingHandler(maximumMessageLength: 1 << 20))
        do {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
            Issue.record("accepted")
        } catch let error as WireError {
            #expect(error.code == code)
        }
        #expect(!channel.isActive, "the connection is closed")
        #expect(try channel.readInbound(as: Frame.self) == nil || code != .malformed, "nothing came out of a bad magic")
        _ = try? channel.finish()
    }

    @Test func aStreamEndingInsideAMessageIsTruncated() throws {
        let channel = EmbeddedChannel(handler: BEPFrameDecodingHandler(maximumMessageLength: 1 << 20))
        try channel.writeInbound(ByteBuffer(bytes: [0x2E, 0xA7, 0xD9, 0x0B, 0, 0, 0, 2, 0x08, 0x06, 0, 0, 0, 9, 1]))
        #expect(try channel.readInbound(as: Frame.self)?.type == BEPFrames.helloType)
        channel.pipeline.fireChannelInactive()
        do {
            try channel.throwIfErrorCaught()
            Issue.record("the end inside a message went unnoticed")
        } catch let error as WireError {
            #expect(error.code == .truncated && error.message.contains("9 bytes"))
        }
    }
}
