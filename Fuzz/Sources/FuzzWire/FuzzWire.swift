// libFuzzer target `wire`: the frame decoder and every wire message decoder.
//
// The input is taken two ways:
// 1. as a byte stream from a peer: `FrameDecoder` splits it into frames (once all at once, once
//    in small chunks, which must give the same frames) and `WireCodec.decode` decodes each;
// 2. as the payload of one frame, decoded as each type byte (0...10: every message type, the
//    compressed index update (9) among them, and two unknown ones).
// A thrown `WireError` (or `InvalidPathRecord`) is the expected answer to bad bytes; a crash, a
// trap, an ASan report or a huge allocation is a bug. A message that decodes must survive a
// round trip: encoding it and decoding that gives the same message.
import FuzzMain
import Glibc
import NIOCore
import SyncKit

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWire(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    let input = ByteBuffer(bytes: bytes)

    // 1. The stream, all at once.
    let whole = frames(of: [input])
    // The same stream in chunks of 1 to 61 bytes (sizes from a fixed sequence, so a run is
    // reproducible): the decoder must not care how the bytes arrive.
    let chunks = chunkRanges(count: count).map { input.getSlice(at: $0.lowerBound, length: $0.count)! }
    let chunked = frames(of: chunks)
    precondition(whole.frames == chunked.frames && whole.failed == chunked.failed,
                 "FrameDecoder gave different frames for the same bytes in chunks")
    for frame in whole.frames { check(frame) }

    // 2. The input as one payload, for every type byte.
    for type in UInt8(0)...10 { check(Frame(type: type, payload: input)) }
    return 0
}

/// The frames `FrameDecoder` yields for `chunks` appended one by one, and whether it threw.
func frames(of chunks: [ByteBuffer]) -> (frames: [Frame], failed: Bool) {
    var decoder = FrameDecoder()
    var out = [Frame]()
    do {
        // `next()` checks the length prefix as soon as it is complete, whole frame or not.
        for chunk in chunks {
            decoder.append(chunk)
            while let frame = try decoder.next() { out.append(frame) }
        }
    } catch is WireError {
        return (out, true)
    } catch {
        preconditionFailure("FrameDecoder threw something other than WireError: \(error)")
    }
    return (out, false)
}

/// Decodes `frame`; a message that decodes must come back the same from its encoding.
func check(_ frame: Frame) {
    let message: WireMessage
    do {
        message = try WireCodec.decode(frame)
    } catch is WireError {
        return
    } catch {
        preconditionFailure("WireCodec.decode threw something other than WireError: \(error)")
    }
    var expected = message
    switch message {
    case .indexUpdate(var u):
        // Refused records (a path that is not UTF-8) are reported, never encoded.
        u.refused = []
        expected = .indexUpdate(u)
    case .close(let reason) where reason.utf8.count > 1024:
        // `encode` cuts a reason to 1,024 bytes (a peer may send up to 4,096).
        return
    default:
        break
    }
    let again: WireMessage
    do {
        again = try WireCodec.decode(WireCodec.encode(expected))
    } catch {
        preconditionFailure("a decoded \(frame.type) message does not decode after encoding: \(error)")
    }
    precondition(again == expected, "a decoded \(frame.type) message changed in a round trip")
}

/// The entry point: libFuzzer's driver with this file's test function, or `--write-seeds DIR`
/// (see `runFuzzer` in Fuzz/Sources/FuzzMain).
@main
enum Main {
    static func main() { runFuzzer(fuzzWire, seeds: seeds) }
}

// MARK: seeds

/// A node ID whose bytes are all `n`.
func node(_ n: UInt8) -> NodeID { NodeID(bytes: [UInt8](repeating: n, count: 32)) }
/// A block hash made of `n`.
func hash(_ n: UInt64) -> BlockHash { BlockHash(w0: n, w1: n &* 3, w2: n &* 5, w3: n &* 7) }

/// Records of every kind and form: a file with blocks, a directory, a symlink, a deletion,
/// a non-ASCII (NFC) name, a vector of several nodes.
func sampleRecords() -> [FileRecord] {
    let blocks = [BlockRef(hash: hash(1), size: 65536), BlockRef(hash: hash(2), size: 1000)]
    return [
        FileRecord(path: "docs/report.txt", kind: .file, size: 66536, mtimeNs: 1_700_000_000_123_456_789, mode: 0o644,
                   version: VersionVector([node(1): 3, node(2): 1]), modifiedBy: node(1), blocks: blocks, sequence: 7),
        FileRecord(path: "docs", kind: .directory, mode: 0o755, version: VersionVector([node(1): 1]), modifiedBy: node(1), sequence: 1),
        FileRecord(path: "link", kind: .symlink, mode: 0o777, version: VersionVector([node(2): 2]), modifiedBy: node(2), symlinkTarget: "docs/report.txt", sequence: 3),
        FileRecord(path: "old.bin", kind: .file, deleted: true, version: VersionVector([node(3): 9]), modifiedBy: node(3), sequence: 4),
        FileRecord(path: "caf\u{E9}/\u{65E5}\u{672C}.txt", kind: .file, size: 5, mode: 0o600,
                   version: VersionVector([node(1): 1, node(2): 2, node(3): 3]), modifiedBy: node(2), blocks: [BlockRef(hash: hash(9), size: 5)], sequence: 99),
    ]
}

/// The records of a moved directory of `count` files: each new name followed by its old
/// name's tombstone.
func movedDirectory(_ count: Int) -> [FileRecord] {
    var records = [FileRecord]()
    for i in 0..<count {
        let name = "d\(i % 4)/f\(i).bin"
        let sequence = UInt64(2 * i + 1)
        records.append(FileRecord(path: "moved/" + name, kind: .file, size: 1024, mtimeNs: 1_700_000_000_000_000_000, mode: 0o644,
                                  version: VersionVector([node(1): 3]), modifiedBy: node(1),
                                  blocks: [BlockRef(hash: hash(UInt64(i)), size: 1024)], sequence: sequence))
        records.append(FileRecord(path: "old/" + name, kind: .file, deleted: true, version: VersionVector([node(1): 4, node(2): 1]),
                                  modifiedBy: node(1), sequence: sequence + 1))
    }
    return records
}

/// Every message type, as `WireCodec.encode` makes it.
func sampleMessages() -> [(String, WireMessage)] {
    let records = sampleRecords()
    var delta = records[0]
    delta.blocks = [BlockRef(hash: hash(3), size: 12)]  // the middle of a delta
    return [
        ("hello", .hello(.init(nodeID: node(1), nodeName: "laptop", clusterName: "home", listenPort: 22000, nonce: [UInt8](repeating: 0xA5, count: 32), indexID: 0x1234_5678_9ABC_DEF0))),
        ("auth", .auth(.init(mac: [UInt8](repeating: 0x5A, count: 32)))),
        ("index-request", .indexRequest(.init(indexID: 42, since: 1000))),
        ("index-update", .indexUpdate(.init(indexID: 42, records: records, caughtUp: true))),
        ("index-update-delta", .indexUpdate(.init(indexID: 42, records: [records[1], delta], caughtUp: false, deltas: [1: .init(keepPrefix: 1, keepSuffix: 1, baseDigest: 0xDEAD_BEEF)]))),
        ("index-update-empty", .indexUpdate(.init(indexID: 1, records: [], caughtUp: true))),
        // Large and repetitive enough to be sent compressed (type 9).
        ("index-update-lz4", .indexUpdate(.init(indexID: 42, records: movedDirectory(40), caughtUp: false))),
        ("block-request", .blockRequest(.init(id: 17, hash: hash(1), size: 65536, path: "docs/report.txt", offset: 0))),
        ("block-response", .blockResponse(.init(id: 17, status: .ok, data: ByteBuffer(bytes: Array("hello, block".utf8))))),
        ("block-response-missing", .blockResponse(.init(id: 18, status: .notFound, data: ByteBuffer()))),
        ("ping", .ping),
        ("close", .close(reason: "shutting down")),
    ]
}

/// Each message as a stream (length-prefixed frame) and as a bare payload, plus one stream of
/// a whole handshake and a stream with a record whose path is not UTF-8.
func seeds() -> [(String, [UInt8])] {
    var out = [(String, [UInt8])]()
    var stream = ByteBuffer()
    for (name, message) in sampleMessages() {
        let frame = WireCodec.encode(message)
        var one = ByteBuffer()
        frame.encode(into: &one)
        out.append(("frame-\(name)", Array(one.readableBytesView)))
        out.append(("payload-\(name)", Array(frame.payload.readableBytesView)))
        // An update the codec compressed: its plain form too (type 4), so the record decoder
        // keeps seeds it can read directly.
        if frame.type == WireMessage.Kind.indexUpdateLZ4.rawValue,
           let plain = try? frame.payload.withUnsafeReadableBytes({ try LZ4Block.decompress($0, limit: Frame.defaultMaximumSize) }) {
            var uncompressed = ByteBuffer()
            Frame(type: WireMessage.Kind.indexUpdate.rawValue, payload: ByteBuffer(bytes: plain)).encode(into: &uncompressed)
            out.append(("frame-\(name)-plain", Array(uncompressed.readableBytesView)))
            out.append(("payload-\(name)-plain", plain))
        }
        if ["hello", "auth", "index-request", "index-update", "block-request", "ping"].contains(name) { frame.encode(into: &stream) }
    }
    out.append(("stream-handshake", Array(stream.readableBytesView)))
    // An index update of two records, the first with the path bytes "bad\xFF" (refused alone).
    var bad = ByteBuffer()
    WireCodec.writeRecord(sampleRecords()[1], to: &bad)
    var payload = ByteBuffer()
    payload.writeInteger(UInt64(42))
    payload.writeInteger(UInt8(1))
    payload.writeInteger(UInt32(2))
    payload.writeInteger(UInt8(0))
    payload.writeInteger(UInt16(4))
    payload.writeBytes(Array("bad".utf8) + [0xFF])
    payload.writeBytes(Array(bad.readableBytesView.dropFirst(2 + 4)))  // the rest of a directory record
    payload.writeInteger(UInt8(0))
    WireCodec.writeRecord(sampleRecords()[3], to: &payload)
    var frame = ByteBuffer()
    Frame(type: 4, payload: payload).encode(into: &frame)
    out.append(("frame-index-update-invalid-utf8", Array(frame.readableBytesView)))
    return out
}
