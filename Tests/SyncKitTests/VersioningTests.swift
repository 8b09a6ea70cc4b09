import Foundation
import Logging
import Testing

@testable import SyncKit

/// Versioning's rules (which versions a cleanup keeps, at simulated times) and its store (kept
/// without a copy, listed, restored, held to the byte budget).
@Suite struct VersioningTests {
    static let hour = 3600.0, day = 86_400.0

    // MARK: the policy

    @Test func simpleKeepsTheNewestCountPerFile() {
        let p = VersioningPolicy(kind: .simple, keep: 3)
        let times = [10.0, 50, 20, 40, 30]
        // The three newest are 50, 40 and 30: indices 1, 3, 4 stay.
        #expect(p.toRemove(times: times, now: 100) == [0, 2])
        #expect(p.toRemove(times: [5], now: 1e9) == [], "no age limit by default")
    }

    @Test func trashcanKeepsOnlyTheLastVersionAndHonoursItsAge() {
        let p = VersioningPolicy(kind: .trashcan)
        #expect(p.toRemove(times: [1, 3, 2], now: 10) == [0, 2])
        let aged = VersioningPolicy(kind: .trashcan, maxAge: Int64(7 * Self.day))
        #expect(aged.toRemove(times: [0], now: 8 * Self.day) == [0])
        #expect(aged.toRemove(times: [0], now: 6 * Self.day) == [])
    }

    /// Staggered at simulated times: versions made every 10 s over 2 hours, then looked at
    /// 2 hours and 3 days later: one per 30 s in the last hour, one per hour in the last day,
    /// one per day beyond, the newest always, nothing older than maxAge.
    @Test func staggeredThinsOlderVersions() {
        let p = VersioningPolicy(kind: .staggered, maxAge: Int64(30 * Self.day))
        #expect(p.maxAge == Int64(30 * Self.day))
        #expect(VersioningPolicy(kind: .staggered).maxAge == 365 * 86_400, "Syncthing's default")
        let times = stride(from: 0.0, through: 7200, by: 10).map { $0 }
        let now = 7200.0
        let removed = p.toRemove(times: times, now: now)
        let kept = times.indices.filter { !removed.contains($0) }.map { times[$0] }
        // The newest is kept.
        #expect(kept.contains(7200))
        // In the last hour (age < 3600): no two kept versions closer than 30 s, except the newest.
        let lastHour = kept.filter { now - $0 < 3600 }
        for (a, b) in zip(lastHour, lastHour.dropFirst()) where b != 7200 { #expect(b - a >= 30, "\(a) \(b)") }
        #expect(lastHour.count >= 100 && lastHour.count <= 122, "about one per 30 s: \(lastHour.count)")
        // Older than an hour: one per hour.
        let older = kept.filter { now - $0 >= 3600 }
        #expect(older.count <= 2, "\(older)")
        // Three days later: the whole two hours are in the "one per day" interval now.
        let later = p.toRemove(times: times, now: 3 * Self.day)
        let keptLater = times.indices.filter { !later.contains($0) }.map { times[$0] }
        #expect(keptLater == [0, 7200], "the oldest of the day and the newest: \(keptLater)")
        // Past maxAge, nothing stays.
        #expect(p.toRemove(times: times, now: 31 * Self.day).count == times.count)
    }

    @Test func theByteBudgetEvictsOldestFirst() {
        let p = VersioningPolicy(kind: .simple, maxBytes: 250)
        let versions: [(time: Double, size: UInt64)] = [(3, 100), (1, 100), (2, 100), (4, 50)]
        // 350 bytes: the oldest (time 1) goes, then 250 fit.
        #expect(p.overBudget(versions) == [1])
        #expect(VersioningPolicy(kind: .simple).overBudget(versions) == [])
        // One version larger than the whole budget goes alone; the others stay.
        #expect(p.overBudget([(1, 100), (2, 100), (3, 1000)]) == [2])
    }

    @Test func stampsRoundTrip() {
        let t = 1_764_746_112.123
        let stamp = VersionStore.stamp(t)
        #expect(stamp == "20251203T071512.123Z")
        #expect(VersionStore.parseStamp(Substring(stamp)).map { abs($0 - t) < 0.0005 } == true)
        #expect(VersionStore.Version.stampText(t) == "2025-12-03 07:15:12.123")
        #expect(VersionStore.Version.parseStampText("2025-12-03 07:15:12.123").map { abs($0 - t) < 0.0005 } == true)
        let name = VersionStore.fileName(time: t, by: "ABCDEFG", reason: .deleted)
        let parsed = VersionStore.parseFileName(name)
        #expect(parsed?.by == "ABCDEFG")
        #expect(parsed?.reason == "deleted")
        #expect(VersionStore.parseFileName("notes.txt") == nil)
    }

    // MARK: the store

    struct Fixture {
        let base = makeTempDirectory("versions")
        var folder: String { base + "/folder" }
        var state: String { base + "/folder/.synckit" }
        init() {
            try! FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        }
        func write(_ path: String, _ text: String) {
            let full = folder + "/" + path
            try! FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: full, contents: Data(text.utf8))
        }
        func read(_ path: String) -> String? {
            (try? Data(contentsOf: URL(fileURLWithPath: folder + "/" + path))).map { String(decoding: $0, as: UTF8.self) }
        }
        func store(_ policy: VersioningPolicy) -> VersionStore {
            VersionStore(stateDirectory: state, policy: policy, logger: Logger(label: "test"))
        }
    }

    @Test func keepingAVersionIsAHardLinkNotACopy() throws {
        let f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.base) }
        f.write("docs/a.txt", "first")
        let root = try FolderRoot(path: f.folder)
        let store = f.store(.init(kind: .simple))
        let entry = try #require(try root.entry("docs/a.txt"))
        let inode = try #require(try entry.stat()).inode
        let v = try store.keep(entry, path: "docs/a.txt", by: "PEERAAA", reason: .replaced, removing: false, now: 1000)
        #expect(try FileOps.lstat(v.file)?.inode == inode, "the version is the same inode")
        #expect(f.read("docs/a.txt") == "first", "the file is still in place")
        #expect(v.file.hasPrefix(f.state + "/versions/docs/a.txt/@"))
        // A fresh store finds it on disk.
        let again = f.store(.init(kind: .simple)).list()
        #expect(again.count == 1)
        #expect(again.first?.path == "docs/a.txt")
        #expect(again.first?.by == "PEERAAA")
        #expect(again.first?.size == 5)
    }

    @Test func restoringPutsTheVersionBackAndKeepsWhatItReplaces() throws {
        let f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.base) }
        let root = try FolderRoot(path: f.folder)
        let store = f.store(.init(kind: .simple, keep: 10))
        // Three contents, each replaced at a known time.
        for (i, text) in ["one", "two", "three"].enumerated() {
            f.write("n.txt", text)
            let entry = try #require(try root.entry("n.txt"))
            try store.keep(entry, path: "n.txt", by: "PEER", reason: .replaced, removing: true, now: 1000 + Double(i) * 100)
            _ = entry.remove()
        }
        f.write("n.txt", "four")
        #expect(store.list("n.txt").map(\.time) == [1200, 1100, 1000])
        // At a time between the second and third replacement: "two".
        let pick = try #require(store.find(path: "n.txt", at: 1150))
        try store.restore(pick, into: root, me: "ME", now: 2000)
        #expect(f.read("n.txt") == "two")
        // What the restore replaced is kept, by this node.
        let newest = try #require(store.list("n.txt").first)
        #expect(newest.reason == "restored-over")
        #expect(newest.by == "ME")
        #expect(store.find(path: "n.txt", at: 999) == nil, "nothing from before the first")
        // A deleted file comes back, parent directory included.
        f.write("gone/x.txt", "x")
        let e = try #require(try root.entry("gone/x.txt"))
        try store.keep(e, path: "gone/x.txt", by: "PEER", reason: .deleted, removing: true, now: 3000)
        _ = e.remove()
        try FileManager.default.removeItem(atPath: f.folder + "/gone")
        try store.restore(try #require(store.find(path: "gone/x.txt")), into: root, me: "ME")
        #expect(f.read("gone/x.txt") == "x")
        #expect(store.list("gone").count == 1, "a directory lists what is under it")
    }

    @Test func theByteBudgetHoldsAfterEveryKeep() throws {
        let f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.base) }
        let root = try FolderRoot(path: f.folder)
        let store = f.store(.init(kind: .simple, keep: 100, maxBytes: 1000))
        for i in 0..<20 {
            f.write("f\(i % 3).bin", String(repeating: "x", count: 300))
            let entry = try #require(try root.entry("f\(i % 3).bin"))
            try store.keep(entry, path: "f\(i % 3).bin", by: "P", reason: .deleted, removing: true, now: 1000 + Double(i))
            #expect(store.summary().bytes <= 1000)
        }
        #expect(store.summary().count == 3)
        // The three kept are the newest three.
        #expect(Set(store.list().map(\.time)) == [1017, 1018, 1019])
        // And on disk there is nothing more than that.
        #expect(f.store(.keepAll).summary().count == 3)
    }

    @Test func cleanupAtSimulatedTimesRemovesFilesAndEmptyDirectories() throws {
        let f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.base) }
        let root = try FolderRoot(path: f.folder)
        let store = f.store(.init(kind: .staggered, maxAge: Int64(10 * Self.day)))
        // One version a minute for 3 hours of a file in a subdirectory.
        for i in 0..<180 {
            f.write("deep/dir/s.txt", "v\(i)")
            let entry = try #require(try root.entry("deep/dir/s.txt"))
            try store.keep(entry, path: "deep/dir/s.txt", by: "P", reason: .replaced, removing: true, now: Double(i) * 60)
        }
        let now = 179.0 * 60
        // Keeping applied the rules as it went: within the last hour one per minute is fine
        // (steps of 30 s), beyond it one per hour.
        let kept = store.list("deep/dir/s.txt").map(\.time)
        #expect(kept.filter { now - $0 < 3600 }.count == 60, "\(kept.count)")
        #expect(kept.filter { now - $0 >= 3600 }.count <= 3)
        // Two days later, one per day: the oldest of those days and the newest.
        let (removed, _) = store.cleanup(now: 2 * Self.day)
        #expect(removed > 0)
        #expect(store.list().count == 2)
        // Past the age limit, nothing, and no empty directories are left behind.
        store.cleanup(now: 11 * Self.day)
        #expect(store.list().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: f.state + "/versions/deep"))
        #expect(f.store(.keepAll).list().isEmpty)
    }
}
