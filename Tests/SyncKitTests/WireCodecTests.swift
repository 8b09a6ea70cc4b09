import NIOCore
import Testing
@testable import SyncKit

@Suite struct WireCodecTests {
    static let record = fileRecord("dir/file.txt", randomBytes(200_000, seed: 3), by: TestIDs.a, version: VersionVector([TestIDs.a: 3, TestIDs.b: 1]), sequence: 17)

    static let messages: [WireMessage] = [
        .hello(.init(nodeID: TestIDs.a, nodeName: "alpha", clusterName: "lab", listenPort: 22000, nonce: [UInt8](repeating: 7, count: 32), indexID: 99)),
        .auth(.init(mac: [UInt8](repeating: 1, count: 32))),
        .indexRequest(.init(indexID: 5, since: 1234)),
        .indexUpdate(.init(indexID: 5, records: [record, FileRecord(path: "d", kind: .directory, mode: 0o755, modifiedBy: TestIDs.b), FileRecord(path: "l", kind: .symlink, modifiedBy: TestIDs.c, symlinkTarget: "d/x")], caughtUp: true)),
        .indexUpdate(.init(indexID: 6, records: [FileRecord(path: "d", kind: .directory, mode: 0o755, modifiedBy: TestIDs.b), record], caughtUp: false,
                           deltas: [1: .init(keepPrefix: 10, keepSuffix: 3)])),
        .blockRequest(.init(id: 9, hash: record.blocks[0].hash, size: record.blocks[0].size, path: "dir/file.txt", offset: 0)),
        .blockResponse(.init(id: 9, status: .ok, data: ByteBuffer(bytes: [1, 2, 3]))),
        .ping,
        .close(reason: "bye"),
    ]

    @Test(arguments: messages) func roundTrips(_ message: WireMessage) throws {
        let frame = WireCodec.encode(message)
        #expect(try WireCodec.decode(frame) == message)
        // And through the stream framing.
        var stream = ByteBuffer()
        frame.encode(into: &stream)
        var decoder = FrameDecoder()
        decoder.append(stream)
        let back = try #require(try decoder.next())
        #expect(try WireCodec.decode(back) == message)
    }

    @Test(arguments: messages) func everyTruncationIsATypedError(_ message: WireMessage) {
        let frame = WireCodec.encode(message)
        let full = frame.payload.readableBytes
        for cut in stride(from: 0, to: full, by: max(1, full / 300)) {
            let truncated = Frame(type: frame.type, payload: frame.payload.getSlice(at: frame.payload.readerIndex, length: cut)!)
            #expect(throws: WireError.self) { try WireCodec.decode(truncated) }
        }
    }

    /// The smallest record the encoder can write (no version entries, no blocks, a one-byte
    /// path) alone in an update still decodes: the bound on the declared count must not exceed
    /// the true minimum (found by the `wire` fuzzer, which had 80 against an actual 73).
    /// The records of a moved directory: each new name (one block) and its old name's
    /// tombstone, as a scan numbers them.
    static func movedDirectory(_ count: Int) -> WireMessage {
        var records = [FileRecord]()
        for i in 0..<count {
            let name = "\(["a", "b", "c"][i % 3])/img\(i).jpg"
            records.append(fileRecord("archive/2026/photos/" + name, randomBytes(1024, seed: UInt64(i)), by: TestIDs.a,
                                      version: VersionVector([TestIDs.a: 1_733_000_000 + UInt64(i)]), sequence: UInt64(2 * i + 1)))
            records.append(FileRecord(path: "photos/" + name, kind: .file, deleted: true,
                                      version: VersionVector([TestIDs.a: 1_733_000_000 + UInt64(i), TestIDs.b: 1_732_000_000]),
                                      modifiedBy: TestIDs.a, sequence: UInt64(2 * i + 2)))
        }
        return .indexUpdate(.init(indexID: 7, records: records, caughtUp: false))
    }

    @Test func aLargeIndexUpdateTravelsCompressedAndDecodesTheSame() throws {
        let message = Self.movedDirectory(500)
        let frame = WireCodec.encode(message)
        #expect(frame.type == WireMessage.Kind.indexUpdateLZ4.rawValue)
        #expect(try WireCodec.decode(frame) == message)
        // What it saves on the records of a moved directory (node IDs, path prefixes and zero
        // high bytes repeat; the hashes of the new names do not compress).
        let packed = frame.payload.readableBytes
        let raw = try frame.payload.withUnsafeReadableBytes { try LZ4Block.decompress($0, limit: 1 << 24) }.count
        #expect(packed < raw / 2, "1,000 records of a moved directory: \(packed) bytes compressed, \(raw) plain")
        print("[wire] 1,000 records of a moved directory: \(packed) bytes compressed, \(raw) plain")
        // A small update is not worth it: sent as it is.
        let small = WireMessage.indexUpdate(.init(indexID: 7, records: [FileRecord(path: "d", kind: .directory, mode: 0o755, modifiedBy: TestIDs.b)], caughtUp: true))
        #expect(WireCodec.encode(small).type == WireMessage.Kind.indexUpdate.rawValue)
    }

    @Test func aCompressedUpdateIsBoundedAndCheckedLikeAnyOther() {
        let kind = WireMessage.Kind.indexUpdateLZ4.rawValue
        // Announcing more than a frame may hold: refused before anything is allocated.
        #expect { try WireCodec.decode(Frame(type: kind, payload: ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0x00]))) } throws: {
            ($0 as? WireError)?.code == .frameTooLarge
        }
        // Not LZ4, or not the length it announces: malformed.
        #expect { try WireCodec.decode(Frame(type: kind, payload: ByteBuffer(bytes: [0, 0, 1, 0, 0xF0, 0xFF, 0xFF, 0xFF]))) } throws: {
            ($0 as? WireError)?.code == .malformed
        }
        var packed = [UInt8](repeating: 0, count: 300).withUnsafeBytes { LZ4Block.compress($0) }!
        packed[3] &+= 1  // announces 301 bytes for 300
        #expect { try WireCodec.decode(Frame(type: kind, payload: ByteBuffer(bytes: packed))) } throws: { ($0 as? WireError)?.code == .malformed }
        // Inflated, it is decoded with every check of an index update: an absurd record count
        // in a small payload still fails without allocating.
        var lie = ByteBuffer()
        lie.writeInteger(UInt64(1))
        lie.writeInteger(UInt8(0))
        lie.writeInteger(UInt32.max)
        lie.writeBytes([UInt8](repeating: 0, count: 400))
        let bomb = lie.withUnsafeReadableBytes { LZ4Block.compress($0) }!
        #expect { try WireCodec.decode(Frame(type: kind, payload: ByteBuffer(bytes: bomb))) } throws: { $0 is WireError }
    }

    @Test func anUpdateOfOneMinimalRecordRoundTrips() throws {
        let minimal = FileRecord(path: "a", kind: .directory, modifiedBy: TestIDs.b)
        let update = WireMessage.indexUpdate(.init(indexID: 1, records: [minimal], caughtUp: true))
        let frame = WireCodec.encode(update)
        #expect(frame.payload.readableBytes == 8 + 1 + 4 + WireCodec.minimumRecordSize + 1)
        #expect(try WireCodec.decode(frame) == update)
    }

    @Test func trailingBytesAreRejected() {
        var frame = WireCodec.encode(.ping)
        frame.payload.writeInteger(UInt8(0))
        #expect(throws: WireError.self) { try WireCodec.decode(frame) }
    }

    @Test func unknownTypeIsRejected() {
        #expect { try WireCodec.decode(Frame(type: 200, payload: ByteBuffer())) } throws: { ($0 as? WireError)?.code == .unknownType }
    }

    @Test func oversizedFrameIsRejectedBeforeBuffering() {
        var decoder = FrameDecoder(maximumSize: 1 << 20)
        var header = ByteBuffer()
        header.writeInteger(UInt32(1 << 30))
        decoder.append(header)
        #expect { try decoder.next() } throws: { ($0 as? WireError)?.code == .frameTooLarge }
        #expect(throws: WireError.self) { try decoder.next() }
    }

    @Test func zeroLengthFrameIsRejected() {
        var decoder = FrameDecoder()
        decoder.append(ByteBuffer(bytes: [0, 0, 0, 0]))
        #expect(throws: WireError.self) { try decoder.next() }
    }

    @Test func absurdRecordCountFailsWithoutAllocating() {
        var payload = ByteBuffer()
        payload.writeInteger(UInt64(1))  // indexID
        payload.writeInteger(UInt8(0))  // caughtUp
        payload.writeInteger(UInt32.max)  // four billion records in a 13-byte frame
        #expect { try WireCodec.decode(Frame(type: WireMessage.Kind.indexUpdate.rawValue, payload: payload)) } throws: { ($0 as? WireError)?.code == .frameTooLarge }
    }

    @Test func absurdBlockCountFailsWithoutAllocating() {
        var b = ByteBuffer()
        b.writeInteger(UInt64(1))
        b.writeInteger(UInt8(0))
        b.writeInteger(UInt32(1))
        b.writeInteger(UInt8(0))  // a full record
        var r = Self.record
        r.blocks = []
        r.size = 0
        var encoded = ByteBuffer()
        WireCodec.writeRecord(r, to: &encoded)
        // Patch the block count (after path, kind, flag, size, mtime, mode, modifiedBy, vector).
        let vectorEnd = 2 + r.path.utf8.count + 1 + 1 + 8 + 8 + 4 + 32 + 2 + r.version.entries.count * 40
        encoded.setInteger(UInt32.max, at: encoded.readerIndex + vectorEnd)
        b.writeBuffer(&encoded)
        #expect { try WireCodec.decode(Frame(type: WireMessage.Kind.indexUpdate.rawValue, payload: b)) } throws: { ($0 as? WireError)?.code == .frameTooLarge }
    }

    /// A delta carries only the middle of the list, and rebuilding it from the same base
    /// gives the new list back, for edits anywhere (start, middle, end, growth, shrinking).
    @Test func blockDeltasRebuildTheListFromTheBase() {
        var rng = SystemRandomNumberGenerator()
        func block(_ n: Int) -> BlockRef { BlockRef(hash: Chunker.hash(Array("\(n)".utf8)), size: 1000) }
        for _ in 0..<500 {
            let base = (0..<Int.random(in: 64...200, using: &rng)).map { block($0) }
            var edited = base
            let from = Int.random(in: 0..<base.count, using: &rng)
            let to = Int.random(in: from...min(base.count, from + 10), using: &rng)
            edited.replaceSubrange(from..<to, with: (0..<Int.random(in: 0...5, using: &rng)).map { block(10_000 + $0 + from * 10) })
            guard let (delta, middle) = WireMessage.BlockDelta.between(base, edited) else {
                #expect(Bool(false), "an edit of at most 10 blocks in \(base.count) shares a start or an end")
                continue
            }
            #expect(middle.count <= 5 + 10)
            #expect(delta.apply(to: base, middle: middle) == edited)
        }
        // Nothing in common: no delta; a base too short for the delta: refused.
        #expect(WireMessage.BlockDelta.between([block(1)], [block(2)]) == nil)
        #expect(WireMessage.BlockDelta(keepPrefix: 3, keepSuffix: 3).apply(to: [block(1)], middle: []) == nil)
    }

    @Test func aRebuiltListMustAddUpToTheSize() {
        var r = Self.record
        r.blocks.removeLast()
        #expect(throws: WireError.self) { try WireCodec.checkBlocks(of: r) }
        #expect(throws: Never.self) { try WireCodec.checkBlocks(of: Self.record) }
    }

    @Test func blocksThatDoNotAddUpToTheSizeAreRejected() {
        var r = Self.record
        r.size += 1
        let frame = WireCodec.encode(.indexUpdate(.init(indexID: 1, records: [r], caughtUp: false)))
        #expect(throws: WireError.self) { try WireCodec.decode(frame) }
    }

    /// Blocks up to Syncthing's largest (16 MiB: the chunks of a file pulled from a BEP peer)
    /// are taken; larger ones, which no node makes, are refused.
    @Test func blocksOverTheMaximumBlockSizeAreRejected() throws {
        var r = Self.record
        r.blocks = [BlockRef(hash: r.blocks[0].hash, size: UInt32(FixedBlocks.maxBlockSize) + 1)]
        r.size = UInt64(r.blocks[0].size)
        #expect(throws: WireError.self) { try WireCodec.decode(WireCodec.encode(.indexUpdate(.init(indexID: 1, records: [r], caughtUp: false)))) }
        r.blocks = [BlockRef(hash: r.blocks[0].hash, size: 1 << 20), BlockRef(hash: r.blocks[0].hash, size: 5)]
        r.size = (1 << 20) + 5
        guard case .indexUpdate(let u) = try WireCodec.decode(WireCodec.encode(.indexUpdate(.init(indexID: 1, records: [r], caughtUp: false)))) else {
            Issue.record("not an update"); return
        }
        #expect(u.records == [r])
    }

    /// A record's Syncthing block list travels with it (a file pulled from a SyncKit peer can
    /// be announced to a Syncthing peer without being read again), and one that does not
    /// describe the file is refused.
    @Test func fixedBlockListsTravelWithTheirRecords() throws {
        var r = Self.record
        let content = randomBytes(200_000, seed: 3)
        r.fixedBlocks = FixedBlocks.blocks(of: content)
        #expect(r.fixedBlocks.count == 2 && r.syncthingBlocks == r.fixedBlocks)
        for deltas in [[:], [0: WireMessage.BlockDelta(keepPrefix: 1, keepSuffix: 0)]] as [[Int: WireMessage.BlockDelta]] {
            guard case .indexUpdate(let u) = try WireCodec.decode(WireCodec.encode(.indexUpdate(.init(indexID: 1, records: [r], caughtUp: false, deltas: deltas)))) else {
                Issue.record("not an update"); return
            }
            #expect(u.records[0].fixedBlocks == r.fixedBlocks)
        }
        var wrong = r
        wrong.fixedBlocks = [r.fixedBlocks[1], r.fixedBlocks[0]]  // the short block first
        #expect(throws: WireError.self) { try WireCodec.decode(WireCodec.encode(.indexUpdate(.init(indexID: 1, records: [wrong], caughtUp: false)))) }
    }

    @Test func directoriesAndDeletionsCarryNoSize() {
        var dir = FileRecord(path: "d", kind: .directory, mode: 0o755, modifiedBy: TestIDs.a)
        dir.size = UInt64.max
        #expect(throws: WireError.self) { try WireCodec.decode(WireCodec.encode(.indexUpdate(.init(indexID: 1, records: [dir], caughtUp: false)))) }
    }

    @Test func invalidUTF8IsRejected() {
        var b = ByteBuffer()
        b.writeInteger(UInt16(2))
        b.writeBytes([0xff, 0xfe])
        #expect(throws: WireError.self) { try WireCodec.decode(Frame(type: WireMessage.Kind.close.rawValue, payload: b)) }
    }

    @Test func wrongMagicAndVersionAreRejected() {
        var frame = WireCodec.encode(Self.messages[0])
        frame.payload.setInteger(UInt32(0xdead_beef), at: frame.payload.readerIndex)
        #expect(throws: WireError.self) { try WireCodec.decode(frame) }
        var other = WireCodec.encode(Self.messages[0])
        other.payload.setInteger(WireMessage.protocolVersion + 1, at: other.payload.readerIndex + 4)
        #expect { try WireCodec.decode(other) } throws: { ($0 as? WireError)?.code == .unsupportedVersion }
    }

    /// Random garbage of many lengths, typed as every message type: decoding may succeed by
    /// chance for tiny messages, but must never crash.
    @Test func randomBytesNeverCrash() {
        for seed in 0..<3000 {
            let length = Int(seed % 300)
            let bytes = randomBytes(((length + 7) / 8) * 8, seed: UInt64(seed)).prefix(length)
            let frame = Frame(type: UInt8(seed % 10), payload: ByteBuffer(bytes: Array(bytes)))
            _ = try? WireCodec.decode(frame)
            var decoder = FrameDecoder(maximumSize: 4096)
            decoder.append(ByteBuffer(bytes: Array(bytes)))
            while let f = try? decoder.next() { _ = try? WireCodec.decode(f) }
        }
    }
}

extension WireMessage: CustomTestStringConvertible {
    public var testDescription: String {
        switch self {
        case .hello: "hello"
        case .auth: "auth"
        case .indexRequest: "indexRequest"
        case .indexUpdate: "indexUpdate"
        case .blockRequest: "blockRequest"
        case .blockResponse: "blockResponse"
        case .ping: "ping"
        case .close: "close"
        }
    }
}
