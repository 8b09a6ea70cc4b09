import Foundation
import SyncKit
import SyncKitTesting
import Testing

/// Real nodes whose tables spilled to SQLite (`SpillStore`, issue 18) sync as the others do:
/// the memory limit is set to a few records, so a few dozen files take every node past it.
@Suite(.serialized) struct SpilledNodeTests {
    @Test func nodesWithTheirTablesSpilledConvergeThroughEditsMovesDeletesAndARestart() async throws {
        let files = (0..<60).map { i in ("d\(i % 4)/sub/f\(i).bin", bytes(700 + i * 13, seed: UInt64(5000 + i))) }
        try await withTestCluster(nodes: 3, transport: .memory, seed: { c in
            c.configure = { $0.memoryRecordLimit = 4 }
            for (path, content) in files { c.write(0, path, content) }
            for i in 0..<15 { c.write(1, "mine/n\(i).txt", "node 1's file \(i)") }
        }) { c in
            try await c.waitUntilConverged(timeout: .seconds(60))
            for i in 0..<3 { #expect(await c.node(i).indexSpilled, "node \(i) holds more records than its limit") }
            #expect(c.snapshot(2).keys.filter { $0.hasSuffix(".bin") }.count == files.count)

            // An edit, a deletion and a moved directory, on two nodes.
            c.write(1, files[0].0, "edited on node 1")
            c.remove(0, files[1].0)
            try FileManager.default.createDirectory(atPath: c.folder(0) + "/moved", withIntermediateDirectories: true)
            c.move(0, "d2", "moved/d2")
            try await c.waitUntilConverged(timeout: .seconds(60), where: { s in
                s[files[1].0] == nil && s.keys.contains { $0.hasPrefix("moved/d2/sub/") } && !s.keys.contains { $0.hasPrefix("d2/") }
            })
            #expect(c.read(2, files[0].0) == Array("edited on node 1".utf8))
            #expect(await c.node(1).statistics.filesMoved + c.node(2).statistics.filesMoved > 0, "the move was applied as renames")

            // Node 2 stops; changes on both sides meanwhile; it comes back with a new spill file.
            await c.stop(2)
            c.remove(0, files[2].0)
            c.write(0, "while-away.txt", "made while node 2 was down")
            c.write(2, "offline.txt", "made on node 2 while it was down")
            try await c.start(2)
            try await c.waitUntilConverged(timeout: .seconds(60), where: { s in s["offline.txt"] != nil && s["while-away.txt"] != nil && s[files[2].0] == nil })
            #expect(await c.node(2).indexSpilled)
            #expect(c.read(1, "offline.txt") == Array("made on node 2 while it was down".utf8))
            #expect(c.snapshot(1)[files[1].0] == nil, "the deleted file did not come back")
            let status = await c.node(2).status()
            #expect(status.files == c.snapshot(2).values.filter { $0 != "dir" }.count, "status counts the spilled index")
        }
    }
}
