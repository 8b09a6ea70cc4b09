import Foundation
import SyncKit
import Testing

extension Integration {
    /// Versioning across a real cluster (issue 16): what a sync deletes or overwrites on a node
    /// is kept there, and a restore on any node brings it back on every node.
    @Suite(.serialized) struct VersioningTests {
        static func versioned(_ policy: VersioningPolicy) -> @Sendable (inout SyncConfiguration) -> Void {
            { $0.versioning = policy }
        }

        /// Deleted on node 0 by mistake; node 1 kept what the delete removed; a restore on
        /// node 1 puts it back on all three nodes, as a new version that wins over the delete.
        @Test func deleteOnOneNodeRestoreOnAnotherComesBackEverywhere() async throws {
            try await withTestCluster(nodes: 3, seed: { c in
                c.configure = Self.versioned(.init(kind: .trashcan))
                c.write(0, "reports/q3.txt", "the only copy of the Q3 report")
            }) { cluster in
                try await cluster.waitUntilConverged { $0["reports/q3.txt"] != nil }

                cluster.remove(0, "reports/q3.txt")
                try await cluster.waitUntilConverged { $0["reports/q3.txt"] == nil }
                #expect(cluster.read(1, "reports/q3.txt") == nil)

                let node1 = cluster.node(1)
                let kept = node1.versions?.list("reports/q3.txt") ?? []
                #expect(kept.count == 1)
                #expect(kept.first?.reason == "deleted")
                #expect(kept.first?.by == cluster.node(0).id.short, "the delete was node 0's")
                let restored = try await node1.restoreVersion(path: "reports/q3.txt", at: nil)
                #expect(restored.path == "reports/q3.txt")
                try await cluster.waitUntilConverged { $0["reports/q3.txt"] != nil }
                for i in 0..<3 {
                    #expect(cluster.read(i, "reports/q3.txt").map { String(decoding: $0, as: UTF8.self) } == "the only copy of the Q3 report")
                }
                let record = try #require(await cluster.node(0).localRecords["reports/q3.txt"])
                #expect(!record.deleted)
                #expect(record.modifiedBy == node1.id, "the restore is node 1's edit")
            }
        }

        /// Overwritten three times on node 0; node 2 restores the version that was current at
        /// a chosen time, and every node gets it. Each overwrite left a version on node 2, named
        /// by the node that made the overwrite.
        @Test func overwriteThenRestoreTheVersionOfAGivenTime() async throws {
            try await withTestCluster(nodes: 3, seed: { c in
                c.configure = Self.versioned(.init(kind: .simple, keep: 10))
                c.write(0, "plan.md", "draft 1")
            }) { c in
                try await c.waitUntilConverged()
                var times: [Double] = []
                for draft in 2...4 {
                    try await Task.sleep(for: .milliseconds(50))
                    times.append(Date().timeIntervalSince1970)
                    try await Task.sleep(for: .milliseconds(50))
                    c.write(0, "plan.md", "draft \(draft)")
                    for _ in 0..<250 where c.read(2, "plan.md") != Array("draft \(draft)".utf8) {
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                let node2 = c.node(2)
                let kept = try #require(node2.versions).list("plan.md")
                #expect(kept.count == 3, "\(kept)")
                #expect(kept.allSatisfy { $0.by == c.node(0).id.short && $0.reason == "replaced" })
                // times[2] was taken after draft 3 had landed on node 2 (replacing draft 2) and
                // before draft 4 was written: the version replaced at or before it is draft 2.
                _ = try await node2.restoreVersion(path: "plan.md", at: times[2])
                try await c.waitUntilConverged()
                for i in 0..<3 {
                    #expect(c.read(i, "plan.md").map { String(decoding: $0, as: UTF8.self) } == "draft 2", "node \(i)")
                }
                // Draft 4, which the restore replaced on node 2, is kept there too.
                #expect(try #require(node2.versions).list("plan.md").first?.reason == "restored-over")
            }
        }

        /// The byte budget holds on a node whose peers keep overwriting and deleting files.
        @Test func theByteBudgetHoldsUnderChurn() async throws {
            try await withTestCluster(nodes: 2, seed: { c in
                c.configure = Self.versioned(.init(kind: .simple, keep: 50, maxBytes: 100_000))
            }) { c in
                for round in 0..<6 {
                    for f in 0..<5 {
                        c.write(0, "data/f\(f).bin", [UInt8](repeating: UInt8(round), count: 10_000 + round * 1000))
                    }
                    try await c.waitUntilConverged()
                }
                for f in 0..<5 { c.remove(0, "data/f\(f).bin") }
                try await c.waitUntilConverged { $0.keys.allSatisfy { !$0.hasPrefix("data/f") } }
                let store = try #require(c.node(1).versions)
                let summary = store.summary()
                #expect(summary.bytes <= 100_000, "\(summary)")
                #expect(summary.count >= 5, "\(summary)")
                // What is on disk agrees with what the node counts.
                let onDisk = VersionStore(stateDirectory: c.folder(1) + "/.synckit", policy: .keepAll, logger: c.logs.logger(label: "check")).summary()
                #expect(onDisk.bytes == summary.bytes)
                // The newest versions are the ones kept: the five deletes.
                #expect(store.list().prefix(5).allSatisfy { $0.reason == "deleted" })
            }
        }
    }
}

extension Integration.VersioningTests {
    /// `syncctl versions list` and `restore` as a person types them: through the running
    /// daemon's control socket (the restore syncs to the other node at once), and with no daemon
    /// (the file is written, and syncs when the daemon starts).
    @Test func versionsCommandsWithAndWithoutTheDaemon() async throws {
        let c = try Integration.MultiProcessTests.Cluster(count: 2)
        c.extraArgs = ["--versioning", "simple", "--versions-keep", "3", "--versions-max-size", "10M"]
        defer {
            c.stopAll()
            try? FileManager.default.removeItem(atPath: c.root)
        }
        let syncctl = Integration.MultiProcessTests.syncctl
        FileManager.default.createFile(atPath: c.folder(0) + "/notes.txt", contents: Data("version A\n".utf8))
        try c.start(0)
        try c.start(1)
        _ = try await c.waitConverged(timeout: .seconds(30)) { $0["notes.txt"] != nil }
        FileManager.default.createFile(atPath: c.folder(0) + "/notes.txt", contents: Data("version B, longer\n".utf8))
        _ = try await c.waitConverged(timeout: .seconds(30)) { _ in
            FileManager.default.contents(atPath: c.folder(1) + "/notes.txt") == Data("version B, longer\n".utf8)
        }
        try FileManager.default.removeItem(atPath: c.folder(0) + "/notes.txt")
        _ = try await c.waitConverged(timeout: .seconds(30)) { $0["notes.txt"] == nil }

        // Through the daemon: two versions on node 1, the delete newest.
        let (listStatus, list) = try Integration.DaemonTests.run(syncctl, ["versions", "list", "--dir", c.folder(1)])
        #expect(listStatus == 0, "\(list)")
        print("[versions list]\n\(list)")
        #expect(list.contains("notes.txt"))
        #expect(list.contains("deleted"))
        #expect(list.contains("replaced"))
        #expect(list.contains("2 versions"))
        let (_, json) = try Integration.DaemonTests.run(syncctl, ["versions", "list", "--dir", c.folder(1), "notes.txt", "--json"])
        let versions = try JSONDecoder().decode([VersionStore.Version].self, from: Data(json.utf8))
        #expect(versions.count == 2)
        let replaced = try #require(versions.first { $0.reason == "replaced" })
        // The version of a given time: A, which B replaced.
        let at = VersionStore.Version.stampText(replaced.time)
        let (restoreStatus, restored) = try Integration.DaemonTests.run(syncctl, ["versions", "restore", "--dir", c.folder(1), "notes.txt", "--at", at])
        #expect(restoreStatus == 0, "\(restored)")
        print("[versions restore]\n\(restored)")
        #expect(restored.contains("syncs to every node now"))
        _ = try await c.waitConverged(timeout: .seconds(30)) { _ in
            FileManager.default.contents(atPath: c.folder(0) + "/notes.txt") == Data("version A\n".utf8)
        }
        // The status counts the versions kept.
        let (_, status) = try Integration.DaemonTests.run(syncctl, ["status", "--dir", c.folder(1)])
        #expect(status.contains("versions  simple: 2 kept"), "\(status)")

        // Without a daemon: the newest version (the delete's) comes back... after node 1 stops.
        c.kill(1, signal: SIGTERM)
        try FileManager.default.removeItem(atPath: c.folder(1) + "/notes.txt")
        let (offStatus, offline) = try Integration.DaemonTests.run(syncctl, ["versions", "restore", "--dir", c.folder(1), "notes.txt"])
        #expect(offStatus == 0, "\(offline)")
        #expect(offline.contains("no daemon runs"))
        #expect(FileManager.default.contents(atPath: c.folder(1) + "/notes.txt") == Data("version B, longer\n".utf8))
        let (badStatus, bad) = try Integration.DaemonTests.run(syncctl, ["versions", "restore", "--dir", c.folder(1), "nothing-here.txt"])
        #expect(badStatus != 0)
        #expect(bad.contains("No version of nothing-here.txt is kept"), "\(bad)")
        try c.start(1)
        _ = try await c.waitConverged(timeout: .seconds(30)) { _ in
            FileManager.default.contents(atPath: c.folder(0) + "/notes.txt") == Data("version B, longer\n".utf8)
        }
    }
}

extension Integration.VersioningTests {
    /// Local changes leave versions too (unlike Syncthing): an editor's save (a new file renamed
    /// over the old) and a delete on the node itself are kept there, by that node; an edit
    /// written into the same inode is not (its old bytes are gone; documented).
    @Test func localEditsAndDeletesAreKeptOnTheNodeThatMadeThem() async throws {
        try await withTestCluster(nodes: 2, seed: { c in
            c.configure = Self.versioned(.init(kind: .simple, keep: 10))
            c.write(0, "essay.txt", "first draft")
        }) { c in
            try await c.waitUntilConverged()
            let me = c.node(0).id.short
            // An editor's save: write beside, rename over.
            c.write(0, ".essay.txt.swp", "second draft")
            c.move(0, ".essay.txt.swp", "essay.txt")
            try await c.waitUntilConverged { _ in c.read(1, "essay.txt") == Array("second draft".utf8) }
            let store = try #require(c.node(0).versions)
            var kept = store.list("essay.txt")
            #expect(kept.count == 1, "\(kept)")
            #expect(kept.first?.reason == "edited")
            #expect(kept.first?.by == me)
            #expect(kept.first.flatMap { FileManager.default.contents(atPath: $0.file) } == Data("first draft".utf8))
            // A delete on the node itself.
            c.remove(0, "essay.txt")
            try await c.waitUntilConverged { $0["essay.txt"] == nil }
            kept = store.list("essay.txt")
            #expect(kept.first?.reason == "deleted")
            #expect(kept.first?.by == me)
            #expect(kept.first.flatMap { FileManager.default.contents(atPath: $0.file) } == Data("second draft".utf8))
            // And it comes back from there to every node.
            _ = try await c.node(0).restoreVersion(path: "essay.txt", at: nil)
            try await c.waitUntilConverged { _ in c.read(1, "essay.txt") == Array("second draft".utf8) }
            // Node 1 kept the pulled changes as "replaced" and "deleted" by node 0.
            let other = try #require(c.node(1).versions).list("essay.txt").map(\.reason)
            #expect(other.contains("replaced") && other.contains("deleted"), "\(other)")
        }
    }
}
