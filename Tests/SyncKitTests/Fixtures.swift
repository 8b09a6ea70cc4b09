import Foundation
import NIOCore
@testable import SyncKit

/// Node IDs for tests: "A" < "B" < "C" < "D" by construction.
enum TestIDs {
    static func node(_ n: UInt8) -> NodeID { NodeID(bytes: [n] + [UInt8](repeating: 0, count: 31)) }
    static let a = node(1), b = node(2), c = node(3), d = node(4)
}

func fileRecord(_ path: String, _ content: [UInt8], by node: NodeID, version: VersionVector? = nil, mtime: Int64 = 1_700_000_000_000_000_000, sequence: UInt64 = 1) -> FileRecord {
    let blocks = Chunker.standard.blocks(of: content)
    return FileRecord(path: path, kind: .file, size: UInt64(content.count), mtimeNs: mtime, mode: 0o644, version: version ?? VersionVector([node: 1]), modifiedBy: node, blocks: blocks, sequence: sequence)
}

/// A fresh empty directory under the system temp dir.
func makeTempDirectory(_ label: String = "synckit") -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString.prefix(8))").path
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
