import Foundation
import Logging
import Testing
import SyncKitTesting
@testable import SyncKit

@Suite struct IndexStoreTests {
    @Test func recordsAndIndexIDSurviveAReopen() throws {
        let dir = makeTempDirectory()
        var r = fileRecord("a/b.txt", randomBytes(100_000, seed: 1), by: TestIDs.a, version: .init([TestIDs.a: 2, TestIDs.b: 5]), sequence: 9)
        r.inode = 1234
        let tomb = FileRecord(path: "gone", kind: .file, deleted: true, version: .init([TestIDs.c: 1]), modifiedBy: TestIDs.c, sequence: 10)
        let id: UInt64
        do {
            let store = try IndexStore(path: dir + "/index.db")
            try store.save([r, tomb])
            id = store.indexID
            try store.close()
        }
        let reopened = try IndexStore(path: dir + "/index.db")
        #expect(reopened.indexID == id)
        let loaded = try reopened.loadAll().sorted { $0.path < $1.path }
        #expect(loaded == [r, tomb])
        #expect(loaded[0].inode == 1234)
    }
}

extension IndexStoreTests {
    /// A record's Syncthing block list is kept after the inode, so records written before such
    /// lists existed (record and inode only) still read.
    @Test func fixedBlockListsAreStoredAndOldRecordsStillRead() throws {
        let dir = makeTempDirectory()
        let content = randomBytes(300_000, seed: 4)
        var r = fileRecord("big.bin", content, by: TestIDs.a, version: .init([TestIDs.a: 1]), sequence: 3)
        r.fixedBlocks = FixedBlocks.blocks(of: content)
        let plain = fileRecord("plain.bin", content, by: TestIDs.a, version: .init([TestIDs.a: 1]), sequence: 4)
        let store = try IndexStore(path: dir + "/index.db")
        try store.save([r, plain])
        let loaded = try store.loadAll().sorted { $0.path < $1.path }
        #expect(loaded == [r, plain] && loaded[0].fixedBlocks.count == 3 && loaded[1].fixedBlocks.isEmpty)
        try store.close()
    }

    /// A crash (no clean close) keeps the index ID: peers go on asking only for what changed.
    /// What made a new ID necessary before, numbers handed out again after a crash, cannot
    /// happen: the next start hands out numbers above the reservation, which is on disk before
    /// any number above it is used.
    @Test func aCrashKeepsTheIndexIDAndNeverReusesASequenceNumber() throws {
        let dir = makeTempDirectory()
        let first = try IndexStore(path: dir + "/index.db")  // never closed: a crash
        try first.save([fileRecord("a", [1], by: TestIDs.a, sequence: 7)])
        try first.reserveSequences(through: 100_007)
        let second = try IndexStore(path: dir + "/index.db")
        #expect(second.indexID == first.indexID)
        #expect(second.reservedSequence == 100_007)
        var engine = SyncEngine(me: TestIDs.a, policy: NewestWinsPolicy())
        engine.restore(records: try second.loadAll(), sequenceFloor: second.reservedSequence)
        let out = engine.localScan([.init(path: "b", record: fileRecord("b", [2], by: TestIDs.a))])
        #expect(out.persist.first?.sequence == 100_008)
    }

    /// Peers' indexes and pull intents come back after a reopen as they were written; a
    /// forgotten peer (its index was reset) leaves nothing behind.
    @Test func peersAndIntentsSurviveAReopen() throws {
        let dir = makeTempDirectory()
        let fromB = [fileRecord("x", [1], by: TestIDs.b, version: .init([TestIDs.b: 3]), sequence: 3),
                     FileRecord(path: "gone", kind: .file, deleted: true, version: .init([TestIDs.b: 4]), modifiedBy: TestIDs.b, sequence: 4)]
        let intent = fileRecord("y", [9], by: TestIDs.c, version: .init([TestIDs.c: 1]))
        do {
            let store = try IndexStore(path: dir + "/index.db")
            var changes = IndexChanges()
            changes.peerRecords = [TestIDs.b: fromB, TestIDs.c: [intent]]
            changes.peerState = [TestIDs.b: PeerIndexState(indexID: 42, maxSequence: 4), TestIDs.c: PeerIndexState(indexID: 7, maxSequence: 1)]
            try store.save(changes)
            try store.saveIntents([intent])
            var forget = IndexChanges()
            forget.forgottenPeers = [TestIDs.c]
            try store.save(forget)
            try store.close()
        }
        let store = try IndexStore(path: dir + "/index.db")
        let peers = try store.loadPeers()
        #expect(peers.count == 1)
        #expect(peers.first?.id == TestIDs.b && peers.first?.state == PeerIndexState(indexID: 42, maxSequence: 4))
        #expect(peers.first?.records.sorted { $0.path < $1.path } == fromB.sorted { $0.path < $1.path })
        #expect(try store.loadIntents() == [intent])
        try store.clearIntents()
        #expect(try store.loadIntents().isEmpty)
    }

    /// A pull's intent goes once its record, or a later version, is stored (in the same
    /// transaction); an intent of a newer version than the record stored stays, and so does
    /// one of another path. In both stores alike.
    @Test func anIntentGoesOnceItsRecordIsStored() throws {
        let pulled = fileRecord("p", [1], by: TestIDs.b, version: .init([TestIDs.b: 2]))
        let later = fileRecord("q", [2], by: TestIDs.b, version: .init([TestIDs.b: 5]))
        let other = fileRecord("r", [3], by: TestIDs.b, version: .init([TestIDs.b: 1]))
        let stores: [any IndexPersistence] = [try IndexStore(path: makeTempDirectory() + "/index.db"), InMemoryIndex()]
        for store in stores {
            try store.saveIntents([pulled, later, other])
            var older = later
            older.version = .init([TestIDs.b: 4])
            var newer = other
            newer.version = .init([TestIDs.b: 1, TestIDs.a: 1])
            var first = IndexChanges()
            first.records = [pulled, older]
            try store.save(first)
            #expect(Set(try store.loadIntents().map(\.path)) == ["q", "r"], "the stored pull's intent is gone, the newer one stays")
            var second = IndexChanges()
            second.records = [newer]
            try store.save(second)
            #expect(try store.loadIntents().map(\.path) == ["q"], "a later version supersedes the intent too")
        }
    }

    /// The stored indexes stream back in chunks of the size asked, the same records as a whole
    /// load; a peer with a state and no records is still handed over (once, with none). The
    /// in-memory index's default streaming agrees.
    @Test func storedIndexesComeBackInChunks() throws {
        let dir = makeTempDirectory()
        let mine = (0..<25).map { fileRecord("f\($0)", [UInt8($0)], by: TestIDs.a, sequence: UInt64($0 + 1)) }
        let fromB = (0..<7).map { fileRecord("b\($0)", [UInt8($0)], by: TestIDs.b, sequence: UInt64($0 + 1)) }
        var changes = IndexChanges()
        changes.records = mine
        changes.peerRecords = [TestIDs.b: fromB]
        changes.peerState = [TestIDs.b: PeerIndexState(indexID: 5, maxSequence: 7), TestIDs.c: PeerIndexState(indexID: 6, maxSequence: 0)]
        let store = try IndexStore(path: dir + "/index.db")
        let memory = InMemoryIndex()
        try store.save(changes)
        try memory.save(changes)
        for index in [store, memory] as [any IndexPersistence] {
            var chunks = [[FileRecord]]()
            try index.forEachRecord(chunk: 10) { chunks.append($0) }
            #expect(chunks.map(\.count) == [10, 10, 5])
            #expect(Set(chunks.joined().map(\.path)) == Set(mine.map(\.path)))
            var peers = [NodeID: (PeerIndexState, [Int])]()
            var records = [FileRecord]()
            try index.forEachPeer(chunk: 5) { id, state, chunk in
                peers[id, default: (state, [])].1.append(chunk.count)
                if id == TestIDs.b { records += chunk }
            }
            #expect(peers[TestIDs.b]?.0 == PeerIndexState(indexID: 5, maxSequence: 7) && peers[TestIDs.b]?.1 == [5, 2])
            #expect(peers[TestIDs.c]?.0 == PeerIndexState(indexID: 6, maxSequence: 0) && peers[TestIDs.c]?.1 == [0])
            #expect(records.sorted { $0.path < $1.path } == fromB.sorted { $0.path < $1.path })
        }
    }
}

@Suite struct ScannerTests {
    let logger = Logger(label: "test")

    func write(_ root: String, _ path: String, _ bytes: [UInt8]) {
        let full = root + "/" + path
        try? FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: full, contents: Data(bytes))
    }

    /// Names in another Unicode form: an NFD name is recorded in NFC and found again by its
    /// disk spelling; of an NFC/NFD pair in one directory only the NFC file is observed; a name
    /// whose NFC is another, plain-ASCII name (the Kelvin sign) is not synced.
    @Test func namesInOtherUnicodeFormsAreRecordedInNFC() throws {
        let root = makeTempDirectory()
        write(root, "d/e\u{301}.txt", [1])            // NFD alone
        write(root, "twins/\u{E9}.txt", [1, 2])       // NFC...
        write(root, "twins/e\u{301}.txt", [1, 2, 3])  // ...and its NFD twin
        write(root, "\u{212A}.txt", [4])              // NFC: "K.txt"
        let folder = try FolderRoot(path: root)
        let scanner = Scanner(root: folder, me: TestIDs.a, logger: logger)
        let obs = scanner.fullScan(known: [:])
        let paths = obs.map { Array($0.path.utf8) }
        #expect(paths.contains(Array("d/\u{E9}.txt".utf8)))
        #expect(!paths.contains(Array("d/e\u{301}.txt".utf8)))
        #expect(paths.filter { $0 == Array("twins/\u{E9}.txt".utf8) }.count == 1)
        #expect(!paths.contains(Array("twins/e\u{301}.txt".utf8)))
        #expect(obs.first { Array($0.path.utf8) == Array("twins/\u{E9}.txt".utf8) }?.record?.size == 2, "the NFC twin is the file")
        #expect(!paths.contains(Array("K.txt".utf8)))
        // The NFC path finds the NFD file on disk.
        #expect(try folder.stat("d/\u{E9}.txt")?.size == 1)
        let fd = try folder.openForReading("d/\u{E9}.txt")
        close(fd)
    }

    @Test func seesFilesDirectoriesAndSymlinksButNotStateOrIgnored() throws {
        let root = makeTempDirectory()
        write(root, "a.txt", [1, 2, 3])
        write(root, "sub/b.bin", randomBytes(300_000, seed: 2))
        write(root, ".synckit/index.db", [9])
        write(root, "skip.tmp", [1])
        write(root, "sub/.x.synckit-tmp", [1])
        symlink("a.txt", root + "/link")
        let scanner = Scanner(root: try FolderRoot(path: root), me: TestIDs.a, ignore: IgnoreRules(text: "*.tmp"), logger: logger)
        let obs = Dictionary(uniqueKeysWithValues: scanner.fullScan(known: [:]).map { ($0.path, $0.record) })
        #expect(Set(obs.keys) == ["a.txt", "sub", "sub/b.bin", "link"])
        #expect(obs["link"]??.kind == .symlink)
        #expect(obs["link"]??.symlinkTarget == "a.txt")
        #expect(obs["sub"]??.kind == .directory)
        #expect(obs["sub/b.bin"]??.size == 300_000)
        #expect(obs["sub/b.bin"]??.blocks == Chunker.standard.blocks(of: randomBytes(300_000, seed: 2)))
    }

    /// The quick check: a file whose size, mtime and inode are unchanged is not read again. The
    /// test proves it by changing the bytes behind the scanner's back (same size, mtime restored):
    /// the stored blocks are reused, so the change is not seen until the mtime moves.
    @Test func unchangedFilesAreNotRehashed() throws {
        let root = makeTempDirectory()
        write(root, "f", [UInt8](repeating: 1, count: 1000))
        let scanner = Scanner(root: try FolderRoot(path: root), me: TestIDs.a, logger: logger)
        let first = try #require(scanner.fullScan(known: [:]).first?.record)
        let st = try #require(try FileOps.lstat(root + "/f"))
        let fd = open(root + "/f", O_WRONLY)
        _ = [UInt8](repeating: 2, count: 1000).withUnsafeBytes { pwrite(fd, $0.baseAddress, 1000, 0) }
        close(fd)
        try FolderRoot(path: root).entry("f")?.setModificationTime(st.mtimeNs)
        // Read again, the new bytes would give other blocks and an observation: none comes.
        #expect(scanner.fullScan(known: ["f": first]).isEmpty, "neither read again nor reported")
        try FolderRoot(path: root).entry("f")?.setModificationTime(st.mtimeNs + 1_000_000)
        let third = try #require(scanner.fullScan(known: ["f": first]).first?.record)
        #expect(third.blocks != first.blocks, "rehashed once the mtime changed")
    }

    /// A full scan reports only what differs from the index: a tree exactly as known gives no
    /// observation at all (a restart of a million unchanged files hands the engine nothing),
    /// while a new inode with the same bytes and mtime, new permission bits, a new file and an
    /// edited one are each reported.
    @Test func aFullScanReportsOnlyWhatDiffersFromTheIndex() throws {
        let root = makeTempDirectory()
        write(root, "a", [UInt8](repeating: 1, count: 100))
        write(root, "dir/b", [UInt8](repeating: 2, count: 100))
        write(root, "dir/c", [UInt8](repeating: 3, count: 100))
        let scanner = Scanner(root: try FolderRoot(path: root), me: TestIDs.a, logger: logger)
        var known = [String: FileRecord]()
        for o in scanner.fullScan(known: [:]) { known[o.path] = try #require(o.record) }
        #expect(Set(known.keys) == ["a", "dir", "dir/b", "dir/c"])
        #expect(scanner.fullScan(known: known).isEmpty)

        // Same bytes and mtime under a new inode (a copy renamed over it): read again (the
        // quick check includes the inode) and reported, so the index learns the new inode.
        let st = try #require(try FileOps.lstat(root + "/a"))
        write(root, "a.new", [UInt8](repeating: 1, count: 100))
        try FolderRoot(path: root).entry("a.new")?.setModificationTime(st.mtimeNs)
        #expect(rename(root + "/a.new", root + "/a") == 0)
        chmod(root + "/dir/b", 0o600)
        write(root, "dir/c", [UInt8](repeating: 4, count: 100))
        try FolderRoot(path: root).entry("dir/c")?.setModificationTime(try #require(try FileOps.lstat(root + "/dir/c")).mtimeNs + 1_000_000)
        write(root, "d", [UInt8](repeating: 5, count: 100))
        let seen = Dictionary(uniqueKeysWithValues: scanner.fullScan(known: known).map { ($0.path, $0) })
        #expect(Set(seen.keys) == ["a", "dir/b", "dir/c", "d"])
        #expect(seen["a"]?.record?.inode != known["a"]?.inode && seen["a"]?.record?.blocks == known["a"]?.blocks)
        #expect(seen["dir/b"]?.record?.mode == 0o600)
        #expect(seen["dir/c"]?.hashed == true)
    }

    /// With a slice sink, a full scan hands observations over as it walks, in slices of the
    /// size asked, and returns the rest with what is gone; together they are the same scan.
    @Test func aFullScanHandsItsObservationsOverInSlices() throws {
        let root = makeTempDirectory()
        for i in 0..<7 { write(root, "d\(i % 2)/f\(i)", [UInt8(i)]) }
        let scanner = Scanner(root: try FolderRoot(path: root), me: TestIDs.a, logger: logger)
        let whole = scanner.fullScan(known: [:])
        let slices = Locked<[[String]]>([])
        let known = ["gone": fileRecord("gone", [9], by: TestIDs.a)]
        let rest = scanner.fullScan(known: known, sliceSize: 3) { observations in slices.withLock { $0.append(observations.map(\.path)) } }
        let handed = slices.withLock { $0 }
        #expect(handed.map(\.count) == [3, 3, 3], "9 present paths (2 directories, 7 files) in slices of 3")
        #expect(rest.map(\.path) == ["gone"] && rest[0].record == nil)
        #expect(Set(handed.joined()) == Set(whole.map(\.path)))
    }

    /// A half-patched file (a patch that could not be finished) is kept away from a full
    /// scan's slices as from its final result: its content is not a local edit.
    @Test func aHalfPatchedFileIsKeptOutOfAFullScansSlices() async throws {
        let base = makeTempDirectory()
        let root = base + "/folder"
        for i in 0..<4_200 { write(root, "d\(i % 10)/f\(i)", [UInt8(i % 256)]) }
        let folder = try PosixFolder(path: root, stateDirectory: root + "/.synckit", reserved: [], index: InMemoryIndex(), me: TestIDs.a,
                                     blockWindow: 16, logger: logger)
        folder.puller.unfinishedPatches.withLock { _ = $0.insert("d3/f3") }
        let sliced = Locked<[String]>([])
        let result = await folder.scan(.full, known: [:], ignore: IgnoreRules()) { found in sliced.withLock { $0 += found.map(\.path) } }
        let handed = sliced.withLock { $0 }
        #expect(handed.count == 4_095, "one slice of 4,096 was handed over, less the half-patched file")
        #expect(!handed.contains("d3/f3"))
        #expect(result.unfinished.contains("d3/f3"), "the final result names it for the machine")
        #expect(Set(handed + result.observations.map(\.path)).count == 4_200 + 10 - 1)
    }

    @Test func aKnownFileThatIsGoneIsReportedDeleted() throws {
        let root = makeTempDirectory()
        let scanner = Scanner(root: try FolderRoot(path: root), me: TestIDs.a, logger: logger)
        let known = ["old": fileRecord("old", [1], by: TestIDs.a), "dir/x": fileRecord("dir/x", [2], by: TestIDs.a)]
        let obs = scanner.fullScan(known: known)
        #expect(Set(obs.map(\.path)) == ["old", "dir/x"])
        #expect(obs.allSatisfy { $0.record == nil })
        let targeted = scanner.scan(paths: ["dir"], known: known)
        #expect(targeted.map(\.path) == ["dir/x"])
    }
}

@Suite struct WatcherTests {
    /// Waits for the watcher to report `path` (or a parent) within two seconds.
    func expectEvent(_ stream: inout AsyncStream<InotifyWatcher.Event>.Iterator, containing path: String) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < deadline {
            guard let event = await stream.next() else { return false }
            if case .changed(let paths) = event, paths.contains(path) { return true }
        }
        return false
    }

    @Test func reportsChangesInDirectoriesCreatedAfterStart() async throws {
        let root = makeTempDirectory()
        let watcher = InotifyWatcher(root: try FolderRoot(path: root), ignore: IgnoreRules(), logger: Logger(label: "test"))
        var events = try watcher.start().makeAsyncIterator()
        defer { watcher.stop() }
        FileManager.default.createFile(atPath: root + "/top.txt", contents: Data([1]))
        #expect(await expectEvent(&events, containing: "top.txt"))
        try FileManager.default.createDirectory(atPath: root + "/new/deeper", withIntermediateDirectories: true)
        #expect(await expectEvent(&events, containing: "new"))
        try await Task.sleep(for: .milliseconds(100))
        FileManager.default.createFile(atPath: root + "/new/deeper/inner.txt", contents: Data([2]))
        #expect(await expectEvent(&events, containing: "new/deeper/inner.txt"))
        #expect(watcher.watchCount == 3)
    }
}
