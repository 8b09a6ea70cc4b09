import Foundation
import SyncKit
import Testing

extension Integration {
    /// Hostile scenarios for moves applied as renames (decision 46).
    @Suite(.serialized) struct MoveAttackTests {
        static let transport: TestTransport = .tcp

        func dirFiles(_ n: Int, prefix: String, seed: UInt64 = 5000) -> [(String, [UInt8])] {
            (0..<n).map { i in ("\(prefix)/f\(i).bin", bytes(700 + i, seed: seed + UInt64(i))) }
        }

        /// A cluster of `nodes` whose node 0 held `files` before it started, converged before
        /// `body` runs.
        func withConverged(_ files: [(String, [UInt8])], nodes: Int = 2, _ body: (TestCluster) async throws -> Void) async throws {
            try await withTestCluster(nodes: nodes, transport: Self.transport, seed: { c in
                for (p, b) in files { c.write(0, p, b) }
            }) { c in
                try await c.waitUntilConverged()
                try await body(c)
            }
        }

        /// Node 0 moves d -> e and, as soon as node 1 starts moving, moves it back (undo). Every
        /// file must survive at d/ on every node.
        @Test func moveThenMoveBackWhileThePeerIsMoving() async throws {
            let files = dirFiles(400, prefix: "d")
            try await withConverged(files) { c in
                let movedBefore = await c.node(1).statistics.filesMoved
                c.move(0, "d", "e")
                for _ in 0..<2000 {
                    if await c.node(1).statistics.filesMoved > movedBefore { break }
                    try await Task.sleep(for: .milliseconds(1))
                }
                c.move(0, "e", "d")
                try await c.waitUntilConverged(timeout: .seconds(60), where: { s in !s.keys.contains { $0.hasPrefix("e/") } })
                var missing = [String]()
                for i in 0..<2 { for (p, b) in files where c.read(i, p) != b { missing.append("node\(i):\(p)") } }
                #expect(missing.isEmpty, "\(missing.count) files lost: \(missing.prefix(10))")
            }
        }

        /// Swap two names: a -> tmp, b -> a, tmp -> b.
        @Test func swapTwoFilesNames() async throws {
            let a = bytes(3000, seed: 1), b = bytes(4000, seed: 2)
            try await withTestCluster(nodes: 2, transport: Self.transport, seed: { c in
                c.write(0, "a", a); c.write(0, "b", b)
            }) { c in
                try await c.waitUntilConverged()
                c.move(0, "a", "tmp")
                try await Task.sleep(for: .milliseconds(150))
                c.move(0, "b", "a")
                try await Task.sleep(for: .milliseconds(150))
                c.move(0, "tmp", "b")
                try await c.waitUntilConverged(where: { $0["tmp"] == nil })
                for i in 0..<2 {
                    #expect(c.read(i, "a") == b)
                    #expect(c.read(i, "b") == a)
                }
            }
        }

        /// A chain: x -> y, y -> z in quick succession (with and without a scan in between).
        @Test(arguments: [0, 120]) func chainOfRenames(pause: Int) async throws {
            let x = bytes(9000, seed: 3)
            try await withTestCluster(nodes: 3, transport: Self.transport, seed: { c in c.write(0, "x", x) }) { c in
                try await c.waitUntilConverged()
                c.move(0, "x", "y")
                try await Task.sleep(for: .milliseconds(pause))
                c.move(0, "y", "z")
                try await c.waitUntilConverged(where: { $0["x"] == nil && $0["y"] == nil && $0["z"] != nil })
                for i in 0..<3 { #expect(c.read(i, "z") == x) }
            }
        }

        /// Many identical files (and empty ones) in a directory that moves.
        @Test func movedDirectoryOfDuplicatesAndEmptyFiles() async throws {
            let same = bytes(2048, seed: 9)
            try await withTestCluster(nodes: 3, transport: Self.transport, seed: { c in
                for i in 0..<30 { c.write(0, "dups/same\(i)", same) }
                for i in 0..<10 { c.write(0, "dups/empty\(i)", []) }
                c.write(0, "dups/other", "other")
                c.write(0, "keep/same", same)
            }) { c in
                try await c.waitUntilConverged()
                try FileManager.default.createDirectory(atPath: c.folder(0) + "/moved", withIntermediateDirectories: true)
                c.move(0, "dups", "moved/dups")
                do { try await c.waitUntilConverged(timeout: .seconds(10), where: { s in !s.keys.contains { $0.hasPrefix("dups") } && s["moved/dups/same29"] != nil }) } catch {
                    for i in 0..<3 { print("[moves] not converged; node\(i) holds \(c.snapshot(i).keys.sorted())") }
                    throw error
                }
                for i in 0..<3 {
                    for k in 0..<30 { #expect(c.read(i, "moved/dups/same\(k)") == same) }
                    for k in 0..<10 { #expect(c.read(i, "moved/dups/empty\(k)") == []) }
                    #expect(c.read(i, "keep/same") == same)
                }
            }
        }

        /// The peer holds an unsynced file at the name the rename goes to.
        @Test func renameOntoANameWhereThePeerHasAnUnsyncedFile() async throws {
            let x = bytes(5000, seed: 4)
            try await withTestCluster(nodes: 2, transport: Self.transport, seed: { c in c.write(0, "x", x) }) { c in
                try await c.waitUntilConverged()
                await c.cut(0, 1)
                c.move(0, "x", "y")
                c.write(1, "y", "node 1's own y")
                try await Task.sleep(for: .milliseconds(400))
                c.heal(0, 1)
                try await c.waitUntilConverged(where: { $0["x"] == nil })
                for i in 0..<2 {
                    let s = c.snapshot(i)
                    let contents = s.keys.filter { $0 == "y" || ConflictNaming.isConflictCopy($0) }.compactMap { c.read(i, $0) }
                    #expect(contents.contains(x), "node \(i) keeps the renamed content: \(s.keys.sorted())")
                    #expect(contents.contains(Array("node 1's own y".utf8)), "node \(i) keeps node 1's y: \(s.keys.sorted())")
                }
            }
        }

        /// While cut off, node 0 moves d -> e and node 1 edits d/f0 and deletes d/f1.
        @Test func moveWhileDisconnectedAndThePeerEditsTheOldPath() async throws {
            let files = dirFiles(20, prefix: "d")
            try await withConverged(files) { c in
                await c.cut(0, 1)
                c.move(0, "d", "e")
                c.write(1, "d/f0.bin", "edited on node 1")
                c.remove(1, "d/f1.bin")
                try await Task.sleep(for: .milliseconds(400))
                c.heal(0, 1)
                try await c.waitUntilConverged(timeout: .seconds(40))
                for i in 0..<2 {
                    #expect(c.read(i, "d/f0.bin") == Array("edited on node 1".utf8), "node \(i): the edit survives")
                    for (p, b) in files.dropFirst(2) { #expect(c.read(i, "e" + p.dropFirst(1)) == b) }
                }
            }
        }

        /// Both nodes move the same directory to different places while cut off.
        @Test func concurrentMovesOfTheSameDirectory() async throws {
            let files = dirFiles(30, prefix: "d")
            try await withConverged(files, nodes: 3) { c in
                await c.cut(0, 1); await c.cut(0, 2); await c.cut(1, 2)
                c.move(0, "d", "e")
                c.move(1, "d", "f")
                try await Task.sleep(for: .milliseconds(500))
                c.heal(0, 1); c.heal(0, 2); c.heal(1, 2)
                try await c.waitUntilConverged(timeout: .seconds(40))
                for i in 0..<3 {
                    for (p, b) in files {
                        let name = p.dropFirst(1)
                        #expect(c.read(i, "e" + name) == b || c.read(i, "f" + name) == b, "node \(i): \(name) lost")
                    }
                }
            }
        }

        /// The sender moves a directory and edits / deletes / re-creates right away.
        @Test func moveThenEditDeleteRecreateAtOnce() async throws {
            let files = dirFiles(50, prefix: "d")
            try await withConverged(files) { c in
                c.move(0, "d", "e")
                c.write(0, "e/f0.bin", "edited after move")
                c.remove(0, "e/f1.bin")
                c.write(0, "d/f2.bin", files[2].1)  // re-created at the old path, same content
                c.write(0, "d/f3.bin", "new at old path")
                try await c.waitUntilConverged(timeout: .seconds(40))
                for i in 0..<2 {
                    #expect(c.read(i, "e/f0.bin") == Array("edited after move".utf8))
                    #expect(c.read(i, "e/f1.bin") == nil)
                    #expect(c.read(i, "d/f2.bin") == files[2].1)
                    #expect(c.read(i, "e/f2.bin") == files[2].1)
                    #expect(c.read(i, "d/f3.bin") == Array("new at old path".utf8))
                    for (p, b) in files.dropFirst(4) { #expect(c.read(i, "e" + p.dropFirst(1)) == b) }
                }
            }
        }

        /// Node 1 stopped while node 0 moves; it applies the move at start.
        @Test func moveWhileThePeerIsStopped() async throws {
            let files = dirFiles(100, prefix: "d")
            try await withConverged(files) { c in
                await c.stop(1)
                try FileManager.default.createDirectory(atPath: c.folder(0) + "/x", withIntermediateDirectories: true)
                c.move(0, "d", "x/e")
                try await Task.sleep(for: .milliseconds(300))
                try await c.start(1)
                do { try await c.waitUntilConverged(timeout: .seconds(10), where: { s in !s.keys.contains { $0.hasPrefix("d/") } }) } catch {
                    for i in 0..<2 { print("[moves] not converged; node\(i) holds \(c.snapshot(i).keys.sorted())") }
                    throw error
                }
                for (p, b) in files { #expect(c.read(1, "x/e" + p.dropFirst(1)) == b) }
                #expect(await c.node(1).statistics.filesMoved == files.count)
            }
        }

        /// The receiver edits a source file right as the move lands (a race on node 1).
        @Test func receiverEditsTheSourceDuringTheMove() async throws {
            let files = dirFiles(300, prefix: "d")
            try await withConverged(files) { c in
                c.move(0, "d", "e")
                // Node 1 edits every 10th file at its old name as fast as possible.
                var edited = [String]()
                for (k, (p, _)) in files.enumerated() where k % 10 == 0 {
                    let full = c.folder(1) + "/" + p
                    if let h = FileHandle(forWritingAtPath: full) {
                        h.seekToEndOfFile(); h.write(Data("+local".utf8)); h.closeFile()
                        edited.append(p)
                    }
                }
                try await c.waitUntilConverged(timeout: .seconds(60))
                // Every local edit must survive somewhere on node 1.
                for p in edited {
                    let name = String(p.dropFirst(2))
                    let s = c.snapshot(1)
                    let holders = s.keys.filter { $0.hasSuffix(name) || ($0.contains(name.replacingOccurrences(of: ".bin", with: "")) && ConflictNaming.isConflictCopy($0)) }
                    let kept = holders.contains { c.read(1, $0).map { $0.suffix(6) == Array("+local".utf8) } ?? false }
                    #expect(kept, "the edit of \(p) on node 1 is lost; holders \(holders)")
                }
            }
        }

        /// Versioning on: a moved directory keeps no spurious versions and all content.
        @Test func moveWithVersioning() async throws {
            let files = dirFiles(40, prefix: "d")
            try await withTestCluster(nodes: 2, transport: Self.transport, seed: { c in
                c.configure = { $0.versioning = .init(kind: .trashcan) }
                for (p, b) in files { c.write(0, p, b) }
            }) { c in
                try await c.waitUntilConverged()
                c.move(0, "d", "e")
                try await c.waitUntilConverged(where: { s in !s.keys.contains { $0.hasPrefix("d/") } })
                c.write(1, "e/f0.bin", "edited on 1 after the move")   // replaced content must be versioned on 0
                try await c.waitUntilConverged(where: { $0["e/f0.bin"] != nil })
                try await Task.sleep(for: .milliseconds(300))
                try await c.waitUntilConverged()
                let kept = c.node(0).versions?.list("e/f0.bin") ?? []
                #expect(kept.count == 1, "node 0 keeps the replaced e/f0.bin: \(kept)")
                c.remove(0, "e/f5.bin")
                try await c.waitUntilConverged(where: { $0["e/f5.bin"] == nil })
                let kept5 = c.node(1).versions?.list("e/f5.bin") ?? []
                #expect(kept5.count == 1, "node 1 keeps the deleted e/f5.bin: \(kept5)")
                #expect(await c.node(1).statistics.filesMoved >= files.count)
            }
        }
            /// Node 1 is stopped in the middle of applying a moved directory, then started again.
        @Test func stopInTheMiddleOfApplyingAMove() async throws {
            let files = dirFiles(400, prefix: "d")
            try await withConverged(files) { c in
                let before = await c.node(1).statistics.filesMoved
                c.move(0, "d", "e")
                for _ in 0..<2000 {
                    if await c.node(1).statistics.filesMoved > before { break }
                    try await Task.sleep(for: .milliseconds(1))
                }
                await c.stop(1)
                try await c.start(1)
                try await c.waitUntilConverged(timeout: .seconds(60), where: { s in !s.keys.contains { $0.hasPrefix("d/") } })
                for i in 0..<2 { for (p, b) in files { #expect(c.read(i, "e" + p.dropFirst(1)) == b, "node \(i): \(p)") } }
            }
        }

        /// Node 1 creates a new file in the directory node 0 is moving away.
        @Test func peerCreatesAFileInTheDirectoryBeingMoved() async throws {
            let files = dirFiles(50, prefix: "d")
            try await withConverged(files) { c in
                c.move(0, "d", "e")
                c.write(1, "d/new.txt", "created on node 1 during the move")
                try await c.waitUntilConverged(timeout: .seconds(40))
                for i in 0..<2 {
                    let found = c.snapshot(i).keys.filter { $0.hasSuffix("new.txt") }
                    #expect(!found.isEmpty, "node \(i) lost node 1's new file")
                    for (p, b) in files { #expect(c.read(i, "e" + p.dropFirst(1)) == b) }
                }
            }
        }
    }
}
