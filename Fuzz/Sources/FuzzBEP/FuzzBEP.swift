// libFuzzer target `bep`: the decoder of Syncthing's BEP stream (`BEPStreamDecoder`), its LZ4
// decompression and every BEP message parser (ProtocolBEP).
//
// The input is taken three ways:
// 1. as the byte stream a BEP peer sends: decoded all at once and in small chunks, which must
//    give the same items and the same verdict; every message decoded must come back the same
//    from our encoder, compressed or not;
// 2. as a compressed body (4-byte length, LZ4 block) for `lz4Decompress`, with a 1 MiB limit;
// 3. as the body of each message type (a hello too).
// Every Index, IndexUpdate and ClusterConfig decoded either way also goes through what the
// session does with it (`SyncthingFiles.record`, `BEPClusterConfig.start`): they may refuse an
// entry, never trap; and a record they accept has a safe path and blocks that add up to its size.
// The stream also goes through the link codec the node uses (`BEPLinkCodec`), with the same checks
// on what it hands on.
// A thrown `BEPFramingError` is the expected answer to bad bytes; a crash, a trap, an ASan
// report or an allocation over the limit is a bug.
import Foundation
import FuzzMain
import ProtocolBEP
import SyncKit

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBEP(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))

    // 1. The stream, all at once and in chunks of 1 to 61 bytes (`chunkRanges`).
    let whole = items(of: [bytes[...]])
    let chunks = chunkRanges(count: count).map { bytes[$0] }
    let chunked = items(of: chunks)
    precondition(whole.items == chunked.items && whole.failed == chunked.failed,
                 "BEPStreamDecoder gave different items for the same bytes in chunks")
    for case .message(let m) in whole.items { roundTrip(m); interpret(m) }
    throughTheCodec(whole.items)

    // 2. A compressed body: any verdict, but no crash and no allocation past the limit
    //    (libFuzzer's -malloc_limit_mb catches one).
    _ = try? BEPFraming.lz4Decompress(bytes[...], limit: 1 << 20)

    // 3. The input as the body of each message type.
    for raw in 0...8 {
        guard let m = try? BEPMessage.parse(type: Bep_MessageType(rawValue: raw) ?? .UNRECOGNIZED(raw), body: bytes) else { continue }
        roundTrip(m)
        interpret(m)
    }
    _ = try? Bep_Hello(serializedBytes: bytes)
    return 0
}

/// What the decoder yields for `chunks` appended one by one, and whether it threw.
func items(of chunks: [ArraySlice<UInt8>]) -> (items: [BEPStreamDecoder.Item], failed: Bool) {
    // A small limit, so the fuzzer reaches the limit checks with short inputs.
    var decoder = BEPStreamDecoder(maxMessageLength: 1 << 20)
    var out: [BEPStreamDecoder.Item] = []
    do {
        for chunk in chunks {
            decoder.append(chunk)
            while let item = try decoder.next() { out.append(item) }
        }
    } catch is BEPFramingError {
        return (out, true)
    } catch {
        preconditionFailure("BEPStreamDecoder threw something other than BEPFramingError: \(error)")
    }
    return (out, false)
}

/// A decoded message must read back the same from our encoding, with and without LZ4, when
/// that encoding decodes at all. (swift-protobuf keeps a message's unknown fields as the bytes
/// it read, and a malformed unknown group a peer sent can come back out in a form its own
/// parser refuses, as the fuzzer found: an Index body with a stray end-group tag. We never
/// re-encode a peer's message, so "decodes to the same, or is refused" is the property that
/// matters; encoding must never trap.)
func roundTrip(_ message: BEPMessage) {
    for compression in [BEPCompression.always, .never] {
        var decoder = BEPStreamDecoder(maxMessageLength: 64 << 20)
        guard let hello = try? BEPFraming.encodeHello(Bep_Hello()), let encoded = try? BEPFraming.encode(message, compression: compression) else {
            continue
        }
        decoder.append(hello)
        decoder.append(encoded)
        guard (try? decoder.next()) != nil, let again = try? decoder.next() else { continue }
        precondition(again == .message(message), "a decoded \(message.type) changed in a round trip")
    }
}

/// What a session makes of a peer's message: index entries as records, a cluster config as
/// where the exchange starts. Refusals are fine; what is accepted must be sound.
func interpret(_ message: BEPMessage) {
    let files: [Bep_FileInfo]
    switch message {
    case .index(let i): files = i.files
    case .indexUpdate(let u): files = u.files
    case .clusterConfig(let c):
        let me = NodeID(bytes: [UInt8](repeating: 1, count: 32)), peer = NodeID(bytes: [UInt8](repeating: 2, count: 32))
        for folder in Set(c.folders.map(\.id)).prefix(4) {
            if let start = try? BEPClusterConfig.start(from: c, folderID: folder, me: me, peer: peer, ourIndexID: 7, ourSequence: 10, heldPeerIndexID: 3) {
                precondition(start.sendAfter >= 0 && start.sendAfter <= 10, "a start beyond our own sequence")
            }
        }
        return
    default: return
    }
    for file in files {
        guard let record = try? SyncthingFiles.record(from: file) else { continue }
        precondition(PathSafety.isSafe(record.path), "an unsafe path was accepted: \(record.path.debugDescription)")
        if record.kind == .file && !record.deleted {
            precondition(record.blocks.reduce(UInt64(0)) { $0 + UInt64($1.size) } == record.size, "blocks that do not add up to the size")
        }
    }
}

/// What the node's machine would hear of the stream through a link's codec (`BEPLinkCodec`):
/// the codec may end the link, never trap; every path it hands on is safe, every record's
/// blocks add up, and what it hands on can be said back to a peer.
func throughTheCodec(_ items: [BEPStreamDecoder.Item]) {
    let me = NodeID(bytes: [UInt8](repeating: 1, count: 32)), peer = NodeID(bytes: [UInt8](repeating: 2, count: 32))
    let codec = BEPLinkCodec(configuration: .init(me: me, peer: peer, folderID: "default", folderLabel: "f", clientVersion: "fuzz"))
    _ = try? codec.encode(.hello(.init(nodeID: me, nodeName: "n", clusterName: "c", listenPort: 0, nonce: [UInt8](repeating: 0, count: 32), indexID: 7)))
    for item in items {
        let frame: Frame
        switch item {
        case .hello(let h): guard let f = try? BEPFrames.frame(hello: h) else { continue }; frame = f
        case .message(let m): guard let f = try? BEPFrames.frame(m) else { continue }; frame = f
        }
        guard let messages = try? codec.decode(frame) else { return }
        for message in messages {
            switch message {
            case .indexUpdate(let u):
                for r in u.records {
                    precondition(PathSafety.isSafe(r.path), "the codec handed on an unsafe path: \(r.path.debugDescription)")
                    if r.kind == .file && !r.deleted {
                        precondition(r.blocks.reduce(UInt64(0)) { $0 + UInt64($1.size) } == r.size, "blocks that do not add up to the size")
                    }
                }
                precondition((try? codec.encode(.indexUpdate(u))) != nil, "records from a peer cannot be said back")
            case .blockRequest(let r):
                precondition(PathSafety.isSafe(r.path), "the codec handed on a request for an unsafe path: \(r.path.debugDescription)")
            default:
                break
            }
        }
    }
}

/// The entry point: libFuzzer's driver with this file's test function, or `--write-seeds DIR`.
@main
enum Main {
    static func main() { runFuzzer(fuzzBEP, seeds: seeds) }
}

// MARK: seeds

/// A stream of each message type after a hello, compressed and not, and bodies of each type.
func seeds() -> [(String, [UInt8])] {
    var file = Bep_FileInfo()
    file.name = "caf\u{E9}/report.txt"
    file.size = 300_000
    file.modifiedS = 1_764_000_000
    file.modifiedBy = 0x1122_3344_5566_7788
    file.version.counters = [.with { $0.id = 0x1122_3344_5566_7788; $0.value = 3 }]
    file.sequence = 7
    file.blockSize = 131_072
    file.blocks = SyncthingBlocks.blocks(of: [UInt8](repeating: 7, count: 300_000))
    var deleted = Bep_FileInfo()
    deleted.name = "gone"
    deleted.deleted = true
    deleted.version.counters = [.with { $0.id = 9; $0.value = 1 }]
    let messages: [(String, BEPMessage)] = [
        ("cluster-config", .clusterConfig(.with {
            $0.folders = [.with { f in
                f.id = "default"; f.label = "Default Folder"
                f.devices = [.with { $0.id = [UInt8](repeating: 5, count: 32).withUnsafeBytes { Data($0) }; $0.name = "laptop"; $0.maxSequence = 12; $0.indexID = 99 }]
            }]
        })),
        ("index", .index(.with { $0.folder = "default"; $0.files = [file, deleted] })),
        ("index-update", .indexUpdate(.with { $0.folder = "default"; $0.files = [deleted]; $0.lastSequence = 8; $0.prevSequence = 7 })),
        ("request", .request(.with { $0.id = 3; $0.folder = "default"; $0.name = "a"; $0.offset = 131_072; $0.size = 131_072; $0.blockNo = 1 })),
        ("response", .response(.with { $0.id = 3; $0.data = Data(repeating: 1, count: 300) })),
        ("download-progress", .downloadProgress(.with { $0.folder = "default"; $0.updates = [.with { $0.name = "a"; $0.blockIndexes = [1, 2] }] })),
        ("ping", .ping),
        ("close", .close(.with { $0.reason = "bye" })),
    ]
    var hello = Bep_Hello()
    hello.deviceName = "node"; hello.clientName = "syncthing"; hello.clientVersion = "v1.19.2"
    let helloBytes = (try? BEPFraming.encodeHello(hello)) ?? []
    var out: [(String, [UInt8])] = [("hello", helloBytes)]
    var all = helloBytes
    for (name, m) in messages {
        let packed = (try? BEPFraming.encode(m, compression: .always)) ?? []
        let plain = (try? BEPFraming.encode(m, compression: .never)) ?? []
        out.append(("stream-\(name)-lz4", helloBytes + packed))
        out.append(("stream-\(name)", helloBytes + plain))
        out.append(("body-\(name)", (try? m.serializedBody()) ?? []))
        all += packed
    }
    out.append(("stream-all", all))
    if let lz4 = BEPFraming.lz4Compress(Array("a compressible body, a compressible body, a compressible body".utf8)) {
        out.append(("lz4-body", lz4))
    }
    return out
}
