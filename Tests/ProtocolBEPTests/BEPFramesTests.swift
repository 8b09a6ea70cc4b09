import Foundation
import NIOCore
import SyncKit
import Testing
@testable import ProtocolBEP

/// BEP over `PeerChannel` frames (`BEPFrames`): what a transport hands on must be exactly the
/// stream's items, and what it writes back must be the stream Syncthing expects.
@Suite struct BEPFramesTests {
    static func hello() -> Bep_Hello {
        var h = Bep_Hello()
        h.deviceName = "laptop"
        h.clientName = "syncctl"
        h.clientVersion = "v0.1"
        return h
    }

    static func clusterConfig() -> Bep_ClusterConfig {
        var folder = Bep_Folder()
        folder.id = "default"
        folder.label = String(repeating: "a compressible label ", count: 20)
        var c = Bep_ClusterConfig()
        c.folders = [folder]
        return c
    }

    /// Every frame written with `wireBytes` comes back through the stream decoder as the same
    /// frame, the Hello first; metadata over 128 bytes goes compressed, block data never.
    @Test func framesSurviveTheWireAndCompressAsSyncthingDoes() throws {
        var response = Bep_Response()
        response.id = 7
        response.data = Data(repeating: 0, count: 300_000)  // compresses well, but is block data
        var request = Bep_Request()
        request.id = 7
        request.folder = "default"
        request.name = "big.bin"
        request.size = 131_072
        let frames = [
            try BEPFrames.frame(hello: Self.hello()),
            try BEPFrames.frame(.clusterConfig(Self.clusterConfig())),
            try BEPFrames.frame(.request(request)),
            try BEPFrames.frame(.response(response)),
            try BEPFrames.frame(.ping),
        ]
        #expect(frames.map(\.type) == [BEPFrames.helloType, 0, 3, 4, 6])
        var wire: [UInt8] = []
        var sizes: [Int] = []
        for frame in frames {
            let bytes = try BEPFrames.wireBytes(frame)
            sizes.append(bytes.count)
            wire += bytes
        }
        #expect(sizes[1] < frames[1].payload.readableBytes, "the ClusterConfig went LZ4-compressed")
        #expect(sizes[3] > 300_000, "the Response went as it is")

        var decoder = BEPStreamDecoder()
        // In pieces of 1,000 bytes, as reads arrive.
        var back: [Frame] = []
        var offset = 0
        while offset < wire.count {
            decoder.append(wire[offset..<min(offset + 1_000, wire.count)])
            offset += 1_000
            while let raw = try decoder.nextRaw() { back.append(BEPFrames.frame(raw)) }
        }
        #expect(back == frames)
        guard case .hello(let hello) = try BEPFrames.item(back[0]) else { Issue.record("not a hello"); return }
        #expect(hello == Self.hello())
        #expect(try BEPFrames.item(back[1]) == .message(.clusterConfig(Self.clusterConfig())))
        #expect(try BEPFrames.item(back[4]) == .message(.ping))
    }

    /// A frame type BEP does not have is refused both ways: not written, not parsed.
    @Test(arguments: [UInt8(8), 9, 100, 254])
    func unknownFrameTypesAreRefused(type: UInt8) {
        let frame = Frame(type: type, payload: ByteBuffer())
        #expect(throws: BEPFramingError.unknownMessageType(Int(type))) { try BEPFrames.wireBytes(frame) }
        #expect(throws: BEPFramingError.unknownMessageType(Int(type))) { try BEPFrames.item(frame) }
    }

    /// A frame that did not come through the stream decoder (another transport, a test) is still
    /// held to its type's limits when parsed: 30,000 empty files in one Index are refused
    /// before they become 30,000 objects.
    @Test func parsingAFrameChecksItsTypesLimits() {
        var body: [UInt8] = []
        for _ in 0..<30_000 { body += [0x12, 0x00] }  // field 2 (files), length 0
        let frame = Frame(type: 1, payload: ByteBuffer(bytes: body))
        #expect(throws: BEPFramingError.self) { try BEPFrames.item(frame) }
    }

    /// `next()` and `nextRaw()` then `parsed()` read a real Syncthing's stream the same way.
    @Test func rawItemsParseAsTheDecoderDoes() throws {
        let stream = try [UInt8](Data(contentsOf: BEPTranscriptTests.fixtures.appendingPathComponent("syncthing-stream.bin")))
        var whole = BEPStreamDecoder()
        whole.append(stream)
        var raw = BEPStreamDecoder()
        raw.append(stream)
        var count = 0
        while let item = try whole.next() {
            let other = try #require(try raw.nextRaw())
            #expect(try other.parsed() == item)
            count += 1
        }
        #expect(try raw.nextRaw() == nil)
        #expect(count >= 4, "hello, cluster config, index, response")
    }

    /// A Response built straight into its frame is the bytes protobuf makes of `Bep_Response`,
    /// and its plain header plus the payload as it is are the bytes `wireBytes` writes.
    @Test(arguments: [(Int32(7), 131_072, Bep_ErrorCode.noError), (-3, 5, .noError), (0, 0, .noSuchFile), (Int32.max, 0, .invalidFile)])
    func responsesAreBuiltWithoutCopies(_ id: Int32, _ size: Int, _ code: Bep_ErrorCode) throws {
        let data = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let frame = BEPFrames.responseFrame(id: id, data: ByteBuffer(bytes: data), code: code)
        var expected = Bep_Response()
        expected.id = id
        expected.data = Data(data)
        expected.code = code
        #expect(Array(frame.payload.readableBytesView) == (try expected.serializedBytes() as [UInt8]))
        #expect(try BEPFrames.item(frame) == .message(.response(expected)))
        let header = try #require(try BEPFrames.plainHeader(frame))
        #expect(header + Array(frame.payload.readableBytesView) == (try BEPFrames.wireBytes(frame)))
        // Metadata (an index) is compressed, so it has no plain header.
        var index = Bep_Index()
        index.folder = String(repeating: "f", count: 500)
        #expect(try BEPFrames.plainHeader(BEPFrames.frame(.index(index))) == nil)
    }
}
