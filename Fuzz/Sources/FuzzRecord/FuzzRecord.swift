// libFuzzer target `record`: the record decoder, `WireCodec.readRecord`, which reads every
// record of an index update and every row of the index database (`IndexStore.decode`, the
// record followed by the local inode).
//
// Bad bytes must end in `WireError` or `InvalidPathRecord` (a path that is not UTF-8); a record
// that decodes must decode the same after `writeRecord`.
import FuzzMain
import Glibc
import Foundation
import NIOCore
@testable import SyncKit  // IndexStore.decode is internal; fuzz builds are debug (testable)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRecord(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    let input = ByteBuffer(bytes: bytes)
    for partial in [false, true] {
        var reader = WireCodec.Reader(input)
        let record: FileRecord
        do {
            record = try WireCodec.readRecord(&reader, partialBlocks: partial)
        } catch is WireError {
            continue
        } catch is InvalidPathRecord {
            continue
        } catch {
            preconditionFailure("readRecord threw something other than WireError: \(error)")
        }
        var encoded = ByteBuffer()
        WireCodec.writeRecord(record, to: &encoded)
        var again = WireCodec.Reader(encoded)
        do {
            let decoded = try WireCodec.readRecord(&again, partialBlocks: partial)
            precondition(decoded == record, "a record changed in a round trip")
            precondition(again.remaining == 0, "writeRecord wrote bytes readRecord did not read")
        } catch {
            preconditionFailure("a decoded record does not decode after writeRecord: \(error)")
        }
    }
    do {
        _ = try IndexStore.decode(Data(bytes))
    } catch is WireError {
    } catch is InvalidPathRecord {
    } catch {
        preconditionFailure("IndexStore.decode threw something other than WireError: \(error)")
    }
    return 0
}

/// The entry point: libFuzzer's driver with this file's test function, or `--write-seeds DIR`
/// (see `runFuzzer` in Fuzz/Sources/FuzzMain).
@main
enum Main {
    static func main() { runFuzzer(fuzzRecord, seeds: seeds) }
}

// MARK: seeds

func node(_ n: UInt8) -> NodeID { NodeID(bytes: [UInt8](repeating: n, count: 32)) }
func hash(_ n: UInt64) -> BlockHash { BlockHash(w0: n, w1: n &* 3, w2: n &* 5, w3: n &* 7) }

/// Records of every kind as `writeRecord` makes them, each also in the index database's form
/// (followed by the inode), and one whose path is not UTF-8.
func seeds() -> [(String, [UInt8])] {
    let records: [(String, FileRecord)] = [
        ("file", FileRecord(path: "docs/report.txt", kind: .file, size: 66536, mtimeNs: 1_700_000_000_123_456_789, mode: 0o644,
                            version: VersionVector([node(1): 3, node(2): 1]), modifiedBy: node(1),
                            blocks: [BlockRef(hash: hash(1), size: 65536), BlockRef(hash: hash(2), size: 1000)], sequence: 7)),
        ("directory", FileRecord(path: "docs", kind: .directory, mode: 0o755, version: VersionVector([node(1): 1]), modifiedBy: node(1), sequence: 1)),
        ("symlink", FileRecord(path: "link", kind: .symlink, mode: 0o777, version: VersionVector([node(2): 2]), modifiedBy: node(2), symlinkTarget: "../outside", sequence: 3)),
        ("deleted", FileRecord(path: "old.bin", kind: .file, deleted: true, version: VersionVector([node(3): 9]), modifiedBy: node(3), sequence: 4)),
        ("unicode", FileRecord(path: "caf\u{E9}/\u{65E5}\u{672C}.txt", kind: .file, size: 5, mode: 0o600,
                               version: VersionVector([node(1): 1, node(2): 2, node(3): 3]), modifiedBy: node(2), blocks: [BlockRef(hash: hash(9), size: 5)], sequence: 99)),
        ("empty-file", FileRecord(path: "empty", kind: .file, version: VersionVector([node(4): 1]), modifiedBy: node(4), sequence: 5)),
    ]
    var out = [(String, [UInt8])]()
    for (name, record) in records {
        var b = ByteBuffer()
        WireCodec.writeRecord(record, to: &b)
        out.append(("record-\(name)", Array(b.readableBytesView)))
        b.writeInteger(UInt64(123_456))
        out.append(("stored-\(name)", Array(b.readableBytesView)))
    }
    var b = ByteBuffer()
    WireCodec.writeRecord(records[1].1, to: &b)
    out.append(("record-invalid-utf8", [0, 4] + Array("bad".utf8) + [0xFF] + Array(b.readableBytesView.dropFirst(2 + 4))))
    return out
}
