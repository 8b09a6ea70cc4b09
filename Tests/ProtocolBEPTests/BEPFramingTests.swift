import Crypto
import Foundation
import Testing
@testable import ProtocolBEP

@Suite struct BEPFramingTests {
    /// A deterministic stand-in for file data that LZ4 cannot shrink.
    static func noise(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }

    static func file(_ name: String, blocks: Int) -> Bep_FileInfo {
        var f = Bep_FileInfo()
        f.name = name
        f.size = Int64(blocks) * 131_072
        f.modifiedS = 1_764_000_000
        f.modifiedBy = 0x1122_3344_5566_7788
        f.sequence = 42
        f.blockSize = 131_072
        f.version.counters = [.with { $0.id = 0x1122_3344_5566_7788; $0.value = 3 }]
        f.blocks = (0..<blocks).map { i in
            .with { $0.offset = Int64(i) * 131_072; $0.size = 131_072; $0.hash = Data(SHA256.hash(data: [UInt8(i & 0xff)])) }
        }
        return f
    }

    static let messages: [BEPMessage] = [
        .clusterConfig(.with {
            $0.folders = [.with { folder in
                folder.id = "default"; folder.label = "Default Folder"
                folder.devices = [.with { $0.id = Data(repeating: 7, count: 32); $0.name = "laptop"; $0.maxSequence = 12; $0.indexID = 99; $0.addresses = ["dynamic"] }]
            }]
        }),
        .index(.with { $0.folder = "default"; $0.files = [file("a.txt", blocks: 3), file("dir/ü.bin", blocks: 40)]; $0.lastSequence = 42 }),
        .indexUpdate(.with { $0.folder = "default"; $0.files = [file("b", blocks: 1)]; $0.lastSequence = 43; $0.prevSequence = 42 }),
        .request(.with { $0.id = 5; $0.folder = "default"; $0.name = "a.txt"; $0.offset = 131_072; $0.size = 131_072; $0.hash = Data(repeating: 1, count: 32); $0.blockNo = 1 }),
        .response(.with { $0.id = 5; $0.data = Data(noise(5000, seed: 1)) }),
        .response(.with { $0.id = 6; $0.code = .noSuchFile }),
        .downloadProgress(.with { $0.folder = "default"; $0.updates = [.with { $0.name = "a.txt"; $0.blockIndexes = [0, 2]; $0.blockSize = 131_072 }] }),
        .ping,
        .close(.with { $0.reason = "shutting down" }),
    ]

    /// Decodes a stream fed in pieces of `step` bytes.
    static func decodeAll(_ bytes: [UInt8], step: Int) throws -> [BEPStreamDecoder.Item] {
        var decoder = BEPStreamDecoder()
        var items: [BEPStreamDecoder.Item] = []
        var i = 0
        while i < bytes.count {
            decoder.append(bytes[i..<min(i + step, bytes.count)])
            i += step
            while let item = try decoder.next() { items.append(item) }
        }
        #expect(decoder.bufferedByteCount == 0)
        return items
    }

    @Test func everyMessageSurvivesTheStreamWhateverTheReadSizes() throws {
        var hello = Bep_Hello()
        hello.deviceName = "node-a"; hello.clientName = "syncctl"; hello.clientVersion = "v1.0.0"
        for compression in [BEPCompression.metadata, .always, .never] {
            var stream = try BEPFraming.encodeHello(hello)
            for m in Self.messages { stream += try BEPFraming.encode(m, compression: compression) }
            for step in [1, 7, 4096, stream.count] {
                let items = try Self.decodeAll(stream, step: step)
                #expect(items == [.hello(hello)] + Self.messages.map { .message($0) }, "compression \(compression), step \(step)")
            }
        }
    }

    @Test func thePingFrameHasTheBytesTheSpecGives() throws {
        // Header length 2, Header { type: PING (6) } = 08 06, body length 0.
        #expect(try BEPFraming.encode(.ping) == [0x00, 0x02, 0x08, 0x06, 0x00, 0x00, 0x00, 0x00])
        // Hello: magic 2EA7D90B, length, then the message.
        var hello = Bep_Hello()
        hello.deviceName = "a"
        #expect(try BEPFraming.encodeHello(hello) == [0x2E, 0xA7, 0xD9, 0x0B, 0x00, 0x03, 0x0A, 0x01, 0x61])
    }

    /// The header's compression field, read back from an encoded frame.
    static func compression(of frame: [UInt8]) throws -> Bep_MessageCompression {
        let headerLength = Int(frame[0]) << 8 | Int(frame[1])
        return try Bep_Header(serializedBytes: Array(frame[2..<(2 + headerLength)])).compression
    }

    @Test func metadataIsCompressedAndFileDataIsNotByDefault() throws {
        let index = BEPMessage.index(.with { $0.folder = "default"; $0.files = (0..<50).map { Self.file("dir/file-\($0).txt", blocks: 2) } })
        let packed = try BEPFraming.encode(index)
        let plain = try BEPFraming.encode(index, compression: .never)
        #expect(try Self.compression(of: packed) == .lz4)
        #expect(try Self.compression(of: plain) == .none)
        #expect(packed.count < plain.count)
        // A compressed body is the uncompressed length (big-endian) and then the LZ4 block.
        let headerLength = Int(packed[0]) << 8 | Int(packed[1])
        let body = Array(packed[(2 + headerLength + 4)...])
        let announced = Int(body[0]) << 24 | Int(body[1]) << 16 | Int(body[2]) << 8 | Int(body[3])
        let plainHeaderLength = Int(plain[0]) << 8 | Int(plain[1])
        #expect(announced == plain.count - (2 + plainHeaderLength + 4))

        let zeros = BEPMessage.response(.with { $0.id = 1; $0.data = Data(count: 100_000) })
        #expect(try Self.compression(of: BEPFraming.encode(zeros)) == .none)
        #expect(try Self.compression(of: BEPFraming.encode(zeros, compression: .always)) == .lz4)
        // Data LZ4 cannot shrink goes as it is, even when compression is asked for.
        let noise = BEPMessage.response(.with { $0.id = 1; $0.data = Data(Self.noise(100_000, seed: 9)) })
        #expect(try Self.compression(of: BEPFraming.encode(noise, compression: .always)) == .none)
        // Nothing to compress in nothing.
        #expect(BEPFraming.lz4Compress([]) == nil)
        // Under the threshold nothing is compressed.
        #expect(try Self.compression(of: BEPFraming.encode(.close(.with { $0.reason = String(repeating: "x", count: 100) }), compression: .always)) == .none)
    }

    static func helloBytes() throws -> [UInt8] { try BEPFraming.encodeHello(Bep_Hello()) }

    static func expectRefusal(_ bytes: [UInt8], _ expected: BEPFramingError, limit: Int = 64 << 20) {
        var decoder = BEPStreamDecoder(maxMessageLength: limit)
        decoder.append(bytes)
        #expect(throws: expected) { while try decoder.next() != nil {} }
    }

    @Test func anOversizedMessageIsRefusedBeforeItsBodyArrives() throws {
        // Only the header and the length: the decoder must not wait for 100 MB to say no.
        let head = try BEPFraming.frame(type: .index, compression: .none, body: [])
        var bytes = try Self.helloBytes() + head
        bytes.replaceSubrange((bytes.count - 4)..., with: [0x05, 0xF5, 0xE1, 0x00])  // 100,000,000
        Self.expectRefusal(bytes, .messageTooLarge(100_000_000))
    }

    @Test func compressedDataCannotAnnounceMoreThanTheLimitOrLie() throws {
        let big = BEPMessage.index(.with { $0.folder = "default"; $0.files = (0..<200).map { Self.file("f\($0)", blocks: 4) } })
        let frame = try BEPFraming.encode(big)
        #expect(try Self.compression(of: frame) == .lz4)
        // The same frame with a decoder limit below its uncompressed size.
        let headerLength = Int(frame[0]) << 8 | Int(frame[1])
        let body = Array(frame[(2 + headerLength + 4)...])
        let announced = Int(body[0]) << 24 | Int(body[1]) << 16 | Int(body[2]) << 8 | Int(body[3])
        Self.expectRefusal(try Self.helloBytes() + frame, .messageTooLarge(announced), limit: announced - 1)

        // An announced size larger than what the block holds, and a block that is garbage.
        var lying = body
        lying[0...3] = [0x00, 0x10, 0x00, 0x00]
        Self.expectRefusal(try Self.helloBytes() + BEPFraming.frame(type: .index, compression: .lz4, body: lying), .badLZ4)
        let garbage: [UInt8] = [0x00, 0x00, 0x01, 0x00] + Self.noise(64, seed: 4)
        Self.expectRefusal(try Self.helloBytes() + BEPFraming.frame(type: .index, compression: .lz4, body: garbage), .badLZ4)
        Self.expectRefusal(try Self.helloBytes() + BEPFraming.frame(type: .index, compression: .lz4, body: [0x00, 0x01]), .badLZ4)
    }

    @Test func aStreamThatIsNotBEPIsRefused() throws {
        Self.expectRefusal([0x16, 0x03, 0x01, 0x00, 0x10, 0x00], .badHelloMagic(0x1603_0100))
        Self.expectRefusal([0x9F, 0x79, 0xBC, 0x40, 0x00, 0x00], .badHelloMagic(0x9F79_BC40))
        #expect(BEPFramingError.badHelloMagic(0x9F79_BC40).description.contains("older BEP"))
        Self.expectRefusal([0x2E, 0xA7, 0xD9, 0x0B, 0x80, 0x00], .helloTooLarge(0x8000))
        Self.expectRefusal(try Self.helloBytes() + [0x80, 0x00], .headerTooLarge(0x8000))
        var unknownType = Bep_Header()
        unknownType.type = .UNRECOGNIZED(9)
        let head: [UInt8] = try unknownType.serializedBytes()
        Self.expectRefusal(try Self.helloBytes() + [0x00, UInt8(head.count)] + head + [0, 0, 0, 0], .unknownMessageType(9))
        var unknownCompression = Bep_Header()
        unknownCompression.compression = .UNRECOGNIZED(3)
        let head2: [UInt8] = try unknownCompression.serializedBytes()
        Self.expectRefusal(try Self.helloBytes() + [0x00, UInt8(head2.count)] + head2 + [0, 0, 0, 0], .unknownCompression(3))
        // A body that is not the protobuf its header says.
        var decoder = BEPStreamDecoder()
        decoder.append(try Self.helloBytes() + BEPFraming.frame(type: .request, compression: .none, body: [0xFF, 0xFF, 0xFF]))
        _ = try decoder.next()
        #expect(throws: BEPFramingError.self) { _ = try decoder.next() }
    }

    @Test func lengthsWithTheTopBitSetAreRefusedNotReadAsNegative() throws {
        let head = try BEPFraming.frame(type: .index, compression: .none, body: [])
        var bytes = try Self.helloBytes() + head
        bytes.replaceSubrange((bytes.count - 4)..., with: [0x80, 0x00, 0x00, 0x00])
        Self.expectRefusal(bytes, .messageTooLarge(0x8000_0000))
        // And an LZ4 body announcing 4 GB.
        #expect(throws: BEPFramingError.messageTooLarge(0xFFFF_FFFF)) {
            _ = try BEPFraming.lz4Decompress([0xFF, 0xFF, 0xFF, 0xFF, 0x00][...], limit: 64 << 20)
        }
    }

    @Test func aSmallBodyCannotMakeMillionsOfObjects() throws {
        // 20,001 empty FileInfos: 40 KB on the wire, far more once parsed.
        let body = [UInt8]([0x0A, 0x01, 0x61]) + Array([[UInt8]](repeating: [0x12, 0x00], count: 20_001).joined())
        Self.expectRefusal(try Self.helloBytes() + BEPFraming.frame(type: .index, compression: .none, body: body), .tooManyEntries("files", 20_000))
        // The same as an LZ4 bomb is refused the same way, after decompression, before parsing.
        let packed = try #require(BEPFraming.lz4Compress(body))
        #expect(packed.count < 1000)
        Self.expectRefusal(try Self.helloBytes() + BEPFraming.frame(type: .indexUpdate, compression: .lz4, body: packed), .tooManyEntries("files", 20_000))
        // Blocks are counted over all files of the message.
        let blocks = Array([[UInt8]](repeating: [0x82, 0x01, 0x00], count: 500_001).joined())
        let file = [UInt8]([0x12]) + varint(blocks.count) + blocks
        Self.expectRefusal(try Self.helloBytes() + BEPFraming.frame(type: .index, compression: .none, body: file + file),
                           .tooManyEntries("blocks", 1_000_000))
        // A request is small; a response is one block and a little more.
        Self.expectRefusal(try Self.helloBytes() + BEPFraming.frame(type: .request, compression: .none, body: [UInt8](repeating: 0, count: 70_000)),
                           .messageTooLarge(70_000))
        // Exactly the limits pass.
        var decoder = BEPStreamDecoder()
        let ok = [UInt8]([0x0A, 0x01, 0x61]) + Array([[UInt8]](repeating: [0x12, 0x00], count: 20_000).joined())
        decoder.append(try Self.helloBytes() + BEPFraming.frame(type: .index, compression: .none, body: ok))
        _ = try decoder.next()
        guard case .message(.index(let index))? = try decoder.next() else { Issue.record("not decoded"); return }
        #expect(index.files.count == 20_000)
    }

    func varint(_ n: Int) -> [UInt8] {
        var out: [UInt8] = []
        var v = UInt64(n)
        repeat {
            let b = UInt8(v & 0x7F)
            v >>= 7
            out.append(v == 0 ? b : b | 0x80)
        } while v != 0
        return out
    }

    @Test func compressionIsUsedOnlyWhenItSavesAThirtySecondAsSyncthingDoes() throws {
        // A body LZ4 shrinks by only a little: a run that compresses, then noise.
        var data = [UInt8](repeating: 7, count: 300) + Self.noise(20_000, seed: 5)
        let barely = BEPMessage.response(.with { $0.id = 1; $0.data = Data(data) })
        let body = try barely.serializedBody()
        let packed = try #require(BEPFraming.lz4Compress(body))
        #expect(packed.count < body.count && packed.count > body.count - body.count / 32, "the test body saves less than 1/32")
        #expect(try Self.compression(of: BEPFraming.encode(barely, compression: .always)) == .none)
        data = [UInt8](repeating: 7, count: 20_000)
        #expect(try Self.compression(of: BEPFraming.encode(.response(.with { $0.data = Data(data) }), compression: .always)) == .lz4)
    }
}
