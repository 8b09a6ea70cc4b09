import Foundation
import NIOCore
import SyncKit
import SyncKitTesting
import Testing

/// Deterministic pseudo-random bytes (SplitMix64) for test files.
func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix(seed: seed)
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        var i = 0
        while i + 8 <= raw.count {
            raw.storeBytes(of: rng.next(), toByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < raw.count {
            raw[i] = UInt8(truncatingIfNeeded: rng.next())
            i += 1
        }
    }
    return out
}

/// Prints a scenario's measurements, so the CI log carries the figures.
func report(_ scenario: String, _ figures: String) {
    print("[scenario] \(scenario): \(figures)")
}

extension Integration {
    @Suite(.serialized) struct ScenarioTests {
        static let transport: TestTransport = .tcp

        @Test func fourNodesWithUniqueFilesReachTheUnion() async throws {
            try await withTestCluster(nodes: 4, transport: Self.transport, seed: { c in
                for i in 0..<4 {
                    c.write(i, "node\(i)/notes.txt", "hello from node \(i)\n")
                    c.write(i, "node\(i)/data/blob.bin", bytes(300_000 + i * 1000, seed: UInt64(i)))
                    c.write(i, "shared-dir/from-\(i).txt", "\(i)")
                }
            }) { c in
                let time = try await c.waitUntilConverged()
                let snap = c.snapshot(0)
                for i in 0..<4 {
                    #expect(snap["node\(i)/notes.txt"] != nil)
                    #expect(snap["node\(i)/data/blob.bin"] != nil)
                    #expect(snap["shared-dir/from-\(i).txt"] != nil)
                }
                report("union of 4 nodes", "converged in \(time), \(c.totalBytesSent) bytes sent in total")
            }
        }

        @Test func anEditPropagates() async throws {
            try await withTestCluster(nodes: 4, transport: Self.transport, seed: { $0.write(0, "doc.txt", "version 1") }) { c in
                try await c.waitUntilConverged()
                c.resetCountersAndWrite { c.write(2, "doc.txt", "version 2, edited on node 2") }
                let time = try await c.waitUntilConverged(where: { _ in true })
                for i in 0..<4 { #expect(c.read(i, "doc.txt") == Array("version 2, edited on node 2".utf8)) }
                report("edit propagates", "in \(time), \(c.totalBytesSent) bytes sent")
            }
        }

        @Test func aDeletePropagatesAndStaysDeletedWhenADownNodeReturns() async throws {
            try await withTestCluster(nodes: 4, transport: Self.transport, seed: { c in
                c.write(0, "keep.txt", "keep")
                c.write(0, "doomed/file.txt", "delete me")
            }) { c in
                try await c.waitUntilConverged()
                await c.stop(3)
                c.remove(1, "doomed")
                let time = try await c.waitUntilConverged([0, 1, 2])
                for i in 0..<3 { #expect(c.read(i, "doomed/file.txt") == nil) }
                #expect(c.read(3, "doomed/file.txt") != nil, "node 3 was down and still has it")
                try await c.start(3)
                let back = try await c.waitUntilConverged()
                #expect(c.read(3, "doomed/file.txt") == nil)
                #expect(c.read(3, "keep.txt") != nil)
                // And it stays deleted: a full rescan everywhere changes nothing.
                for i in 0..<4 { await c.node(i).rescan() }
                try await Task.sleep(for: .milliseconds(300))
                try await c.waitUntilConverged()
                for i in 0..<4 { #expect(c.read(i, "doomed/file.txt") == nil) }
                report("delete propagates", "in \(time); returning node caught up in \(back)")
            }
        }

        @Test func aRenameCausesNoBlockTransfer() async throws {
            let content = bytes(4 << 20, seed: 77)
            try await withTestCluster(nodes: 4, transport: Self.transport, seed: { $0.write(0, "big/original.bin", content) }) { c in
                try await c.waitUntilConverged()
                let pulledBefore = await (0..<4).asyncMap { await c.node($0).statistics.bytesFromNetwork }
                c.resetCountersAndWrite { c.move(1, "big/original.bin", "big/renamed.bin") }
                let time = try await c.waitUntilConverged(where: { $0["big/renamed.bin"] != nil && $0["big/original.bin"] == nil })
                let pulledAfter = await (0..<4).asyncMap { await c.node($0).statistics.bytesFromNetwork }
                #expect(pulledAfter == pulledBefore, "no block came over the network")
                let sent = c.totalBytesSent
                #expect(sent < 64 << 10, "only index records travel: \(sent) bytes")
                for i in 0..<4 { #expect(c.read(i, "big/renamed.bin") == content) }
                // The peers moved the file too: nothing read or written locally either.
                for i in [0, 2, 3] { #expect(await c.node(i).statistics.filesMoved == 1, "node \(i) moved the file") }
                report("rename", "in \(time), \(sent) bytes sent in total for a 4 MiB file")
            }
        }

        /// A directory of hundreds of files moved into another parent on one node: every peer
        /// moves the same files (each keeps its inode: no byte read, written or fetched), the
        /// old directories go, and only index records travel, about two per file.
        @Test func aMovedDirectoryIsAppliedAsRenamesOnEveryPeer() async throws {
            let files = (0..<300).map { i in ("photos/\(["a", "b", "c"][i % 3])/img\(i).jpg", bytes(1024, seed: UInt64(1000 + i))) }
            try await withTestCluster(nodes: 3, transport: Self.transport, seed: { c in
                for (path, content) in files { c.write(0, path, content) }
            }) { c in
                try await c.waitUntilConverged()
                try FileManager.default.createDirectory(atPath: c.folder(0) + "/archive/2026", withIntermediateDirectories: true)
                try await c.waitUntilConverged(where: { $0["archive/2026"] == "dir" })
                func inodes(_ i: Int, under prefix: String) -> [String: UInt64] {
                    var out = [String: UInt64]()
                    for (path, _) in files {
                        let name = String(path.dropFirst("photos/".count))
                        if let st = try? FileOps.lstat(c.folder(i) + "/" + prefix + name) { out[name] = st.inode }
                    }
                    return out
                }
                let before = [1, 2].map { inodes($0, under: "photos/") }
                let pulledBefore = await (0..<3).asyncMap { await c.node($0).statistics.bytesFromNetwork }
                let reusedBefore = await (0..<3).asyncMap { await c.node($0).statistics.bytesReused }
                c.resetCountersAndWrite { c.move(0, "photos", "archive/2026/photos") }
                let time = try await c.waitUntilConverged(where: { s in
                    !s.keys.contains { $0.hasPrefix("photos") } && s.keys.filter { $0.hasPrefix("archive/2026/photos/") && $0.hasSuffix(".jpg") }.count == files.count
                })
                let sent = c.totalBytesSent
                for (k, i) in [1, 2].enumerated() {
                    let after = inodes(i, under: "archive/2026/photos/")
                    #expect(after.count == files.count, "node \(i) holds every file under the new name")
                    let kept = after.filter { before[k][$0.key] == $0.value }.count
                    #expect(kept == files.count, "node \(i) moved \(kept) of \(files.count) files (the others were re-created)")
                    #expect(await c.node(i).statistics.filesMoved == files.count, "node \(i)'s count of moved files")
                    for (path, content) in files.prefix(20) { #expect(c.read(i, "archive/2026/" + path) == content) }
                }
                #expect(await (0..<3).asyncMap { await c.node($0).statistics.bytesFromNetwork } == pulledBefore, "no block came over the network")
                #expect(await (0..<3).asyncMap { await c.node($0).statistics.bytesReused } == reusedBefore, "no block was copied from a local file")
                // Two records per file (its new name, its old name's tombstone) to each of two
                // peers, a few hundred bytes each in all, and no blocks.
                #expect(sent < files.count * 2 * 2 * 600, "\(sent) bytes sent for \(files.count) files")
                report("directory move", "\(files.count) files in \(time), \(sent) bytes sent in total (\(sent / files.count) per file), every file moved on both peers")
            }
        }

        @Test(arguments: ["newest", "keep-both"]) func theSameFileEditedConcurrentlyOnTwoNodes(policyName: String) async throws {
            let policy: any ConflictPolicy = policyName == "newest" ? NewestWinsPolicy() : KeepBothPolicy()
            try await withTestCluster(nodes: 3, transport: Self.transport, policy: policy, seed: { $0.write(0, "plan.txt", "original") }) { c in
                try await c.waitUntilConverged()
                // Node 0 is cut off; it and node 1 edit the same file.
                await c.cut(0, 1)
                await c.cut(0, 2)
                c.write(0, "plan.txt", "edited on node 0 (older)")
                try FolderRoot(path: c.folder(0)).entry("plan.txt")?.setModificationTime(1_800_000_000_000_000_000)
                c.write(1, "plan.txt", "edited on node 1 (newer)")
                try FolderRoot(path: c.folder(1)).entry("plan.txt")?.setModificationTime(1_800_000_100_000_000_000)
                try await Task.sleep(for: .milliseconds(300))
                try await c.waitUntilConverged([1, 2])
                c.heal(0, 1)
                c.heal(0, 2)
                let time = try await c.waitUntilConverged(where: { $0.keys.contains { ConflictNaming.isConflictCopy($0) } })
                for i in 0..<3 {
                    #expect(c.read(i, "plan.txt") == Array("edited on node 1 (newer)".utf8), "node \(i) keeps the newer edit")
                    let copies = c.snapshot(i).keys.filter { ConflictNaming.isConflictCopy($0) }
                    #expect(copies.count == 1, "node \(i): \(copies)")
                    if let copy = copies.first {
                        #expect(c.read(i, copy) == Array("edited on node 0 (older)".utf8))
                        #expect(copy.hasPrefix("plan.sync-conflict-20270115-"), "named after the loser's time: \(copy)")
                        #expect(copy.hasSuffix(".txt"))
                    }
                }
                report("concurrent edit (\(policyName))", "settled in \(time)")
            }
        }

        @Test func sameNameDifferentContentOnTwoNodesAtFirstStart() async throws {
            try await withTestCluster(nodes: 4, transport: Self.transport, seed: { c in
                c.write(0, "readme.txt", "node 0's readme")
                c.write(3, "readme.txt", "node 3's readme, written later")
                try? FolderRoot(path: c.folder(0)).entry("readme.txt")?.setModificationTime(1_700_000_000_000_000_000)
                try? FolderRoot(path: c.folder(3)).entry("readme.txt")?.setModificationTime(1_700_000_500_000_000_000)
                c.write(1, "same.txt", "identical")
                c.write(2, "same.txt", "identical")
            }) { c in
                let time = try await c.waitUntilConverged(where: { $0.keys.contains { ConflictNaming.isConflictCopy($0) } })
                for i in 0..<4 {
                    #expect(c.read(i, "readme.txt") == Array("node 3's readme, written later".utf8))
                    let copies = c.snapshot(i).keys.filter { ConflictNaming.isConflictCopy($0) }
                    #expect(copies.count == 1, "only readme conflicts; identical files never do: \(copies)")
                    #expect(copies.first.flatMap { c.read(i, $0) } == Array("node 0's readme".utf8))
                }
                report("same name at first start", "settled in \(time)")
            }
        }

        @Test func overwritingOneMiBInside64MiBSendsLittleToEachPeer() async throws {
            let size = 64 << 20
            try await withTestCluster(nodes: 4, transport: Self.transport, seed: { $0.write(0, "disk.img", bytes(size, seed: 64)) }) { c in
                let first = try await c.waitUntilConverged(timeout: .seconds(120))
                let inodes = (1..<4).map { try? FileOps.lstat(c.folder($0) + "/disk.img")?.inode }
                c.resetCountersAndWrite {
                    let fd = open(c.folder(0) + "/disk.img", O_WRONLY)
                    let patch = bytes(1 << 20, seed: 65)
                    _ = patch.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(size / 2)) }
                    close(fd)
                }
                let time = try await c.waitUntilConverged(timeout: .seconds(120))
                let received = (1..<4).map { c.bytesReceived($0) }
                for (i, r) in received.enumerated() {
                    // The target: at most 1.2 MiB per peer for a 1 MiB edit (the changed
                    // chunks, and the record as a block-list delta).
                    #expect(r <= 1_258_291, "node \(i + 1) received \(r) bytes")
                }
                // Patched in place (same file, no full rewrite into a temp copy), with no
                // journal left behind.
                for i in 1..<4 {
                    #expect(try FileOps.lstat(c.folder(i) + "/disk.img")?.inode == inodes[i - 1])
                    let state = try FileManager.default.contentsOfDirectory(atPath: c.folder(i) + "/.synckit")
                    #expect(!state.contains { $0.hasSuffix(".journal") })
                }
                report("1 MiB edit in 64 MiB", "first sync \(first); edit converged in \(time); received per peer \(received) bytes")
            }
        }

        @Test func aNodeRestartedWithOfflineEditsSendsThem() async throws {
            try await withTestCluster(nodes: 4, transport: Self.transport, seed: { c in
                c.write(0, "a.txt", "a")
                c.write(0, "b.txt", "b")
                c.write(0, "c.txt", "c")
            }) { c in
                try await c.waitUntilConverged()
                await c.stop(2)
                c.write(2, "a.txt", "a, edited offline")
                c.remove(2, "b.txt")
                c.write(2, "new/offline.txt", "made while down")
                try await c.start(2)
                let time = try await c.waitUntilConverged(where: { $0["new/offline.txt"] != nil })
                for i in 0..<4 {
                    #expect(c.read(i, "a.txt") == Array("a, edited offline".utf8))
                    #expect(c.read(i, "b.txt") == nil)
                    #expect(c.read(i, "c.txt") == Array("c".utf8))
                    #expect(c.read(i, "new/offline.txt") == Array("made while down".utf8))
                }
                report("offline edits", "propagated \(time) after restart")
            }
        }

        @Test func twoThousandSmallFiles() async throws {
            try await withTestCluster(nodes: 4, transport: Self.transport, seed: { c in
                for f in 0..<2000 { c.write(0, "many/d\(f % 20)/f\(f).txt", bytes(1024, seed: UInt64(f))) }
            }) { c in
                let time = try await c.waitUntilConverged(timeout: .seconds(120))
                #expect(c.snapshot(3).count == 2000 + 20 + 1)
                report("2,000 small files", "converged on 4 nodes in \(time), \(c.totalBytesSent) bytes sent")
            }
        }

        @Test func aFileReplacedByADirectoryAndBackPropagates() async throws {
            try await withTestCluster(nodes: 3, transport: Self.transport, seed: { $0.write(0, "thing", "a file") }) { c in
                try await c.waitUntilConverged()
                c.remove(1, "thing")
                c.write(1, "thing/inside.txt", "now a directory")
                let toDir = try await c.waitUntilConverged(where: { $0["thing"] == "dir" && $0["thing/inside.txt"] != nil })
                c.remove(2, "thing")
                c.write(2, "thing", "a file again")
                let toFile = try await c.waitUntilConverged(timeout: .seconds(30), where: { $0["thing"]?.hasPrefix("dir") == false })
                for i in 0..<3 { #expect(c.read(i, "thing") == Array("a file again".utf8)) }
                report("type changes", "file to directory in \(toDir), directory to file in \(toFile)")
            }
        }

        @Test func aLinkCutAndHealedCatchesUp() async throws {
            try await withTestCluster(nodes: 2, transport: Self.transport) { c in
                await c.cut(0, 1)
                c.write(0, "while-cut.txt", "x")
                try await Task.sleep(for: .milliseconds(300))
                #expect(c.read(1, "while-cut.txt") == nil)
                c.heal(0, 1)
                try await c.waitUntilConverged(where: { $0["while-cut.txt"] != nil })
            }
        }
    }
}

extension TestCluster {
    /// Zeroes the byte counters, then makes a change: the next wait measures only its cost.
    func resetCountersAndWrite(_ change: () -> Void) {
        injector.resetCounters()
        change()
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async -> T) async -> [T] {
        var out = [T]()
        for e in self { out.append(await transform(e)) }
        return out
    }
}
