import Foundation
import SyncKit
import Testing

extension Integration {
    /// The deleted file that came back under churn, reproduced deterministically.
    ///
    /// The root cause: a node that pulled a new version of a file renamed it into place, and
    /// was killed before the pulled record reached its index (records are group-committed every
    /// 100 ms). On restart its index still held the old version while the disk held the new
    /// content, and the first scan took that for a local edit: it bumped the node's own counter
    /// for content it never changed. That version was concurrent with the delete made meanwhile
    /// elsewhere, and "an edit beats a concurrent delete" brought the file back on every node.
    ///
    /// The test makes the same state without timing luck: node 1 pulls version 2, is stopped,
    /// and its index is set back to version 1 (what the kill left); node 0 deletes the file;
    /// node 1 restarts. It must adopt version 2, from its stored copy of node 0's index or from
    /// the pull's intent, and the delete must win.
    @Suite(.serialized) struct ResurrectionTests {
        @Test(arguments: ["the peer's stored index", "the pull's intent"])
        func aPullLostToAKillIsNotAnEditAndTheDeleteWins(knownFrom: String) async throws {
            try await withTestCluster(nodes: 2, seed: { $0.write(0, "p.txt", "version one") }) { c in
                try await c.waitUntilConverged()
                let v1 = try #require(await c.node(1).localRecords["p.txt"])
                c.write(0, "p.txt", "version two, longer")
                try await c.waitUntilConverged()
                let v2 = try #require(await c.node(1).localRecords["p.txt"])
                let writer = c.node(0).id
                #expect(v2.modifiedBy == writer)
                await c.stop(1)

                // What the kill left: version 2 on disk, version 1 in the index.
                let store = try IndexStore(path: c.folder(1) + "/.synckit/index.db")
                try store.save([v1])
                if knownFrom == "the pull's intent" {
                    var forget = IndexChanges()
                    forget.forgottenPeers = [writer]
                    try store.save(forget)
                    try store.saveIntents([v2])
                }
                try store.close()

                c.remove(0, "p.txt")
                try await Task.sleep(for: .milliseconds(200))
                let tombstone = try #require(await c.node(0).localRecords["p.txt"])
                #expect(tombstone.deleted)

                try await c.start(1)
                try await c.waitUntilConverged()
                try await Task.sleep(for: .milliseconds(300))
                #expect(c.read(0, "p.txt") == nil, "the deleted file did not come back")
                #expect(c.read(1, "p.txt") == nil)
                let after = try #require(await c.node(1).localRecords["p.txt"])
                #expect(after.deleted)
                #expect(after.version == tombstone.version, "node 1 holds node 0's delete, no version of its own")
                #expect(after.version[c.node(1).id] == 0, "node 1 never counted an edit it did not make")
            }
        }

        /// The same kill, then the user deletes the file on that node while it is down: the
        /// delete is of what the pull put there (its temp file is gone: it was renamed in), so it
        /// must win over that version, not lose to it as a concurrent edit.
        @Test func aPulledFileDeletedWhileItsNodeWasDownStaysDeleted() async throws {
            try await withTestCluster(nodes: 2, seed: { $0.write(0, "p.txt", "version one") }) { c in
                try await c.waitUntilConverged()
                let v1 = try #require(await c.node(1).localRecords["p.txt"])
                c.write(0, "p.txt", "version two, longer")
                try await c.waitUntilConverged()
                let v2 = try #require(await c.node(1).localRecords["p.txt"])
                await c.stop(1)
                let store = try IndexStore(path: c.folder(1) + "/.synckit/index.db")
                try store.save([v1])
                try store.saveIntents([v2])
                try store.close()
                c.remove(1, "p.txt")  // the user, while node 1 is down

                try await c.start(1)
                try await c.waitUntilConverged()
                try await Task.sleep(for: .milliseconds(300))
                #expect(c.read(0, "p.txt") == nil, "the user's delete reached node 0")
                #expect(c.read(1, "p.txt") == nil, "and the file did not come back to node 1")
                let after = try #require(await c.node(0).localRecords["p.txt"])
                #expect(after.deleted && after.version.compare(to: v2.version) == .newer)
            }
        }
    }
}
