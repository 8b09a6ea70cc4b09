import Foundation
import Testing

@testable import SyncKit

/// The kernel-level wall: whatever path a check let through, nothing done through the folder's
/// handle lands outside the folder or inside its state directory. Every test runs with openat2
/// and with the O_NOFOLLOW walk that replaces it on old kernels.
@Suite struct FolderRootTests {
    /// A folder beside an "outside" directory, with links pointing out of the folder planted in it.
    struct Fixture {
        let base = makeTempDirectory("folderroot")
        var folder: String { base + "/folder" }
        var outside: String { base + "/outside" }
        init() {
            try! FileManager.default.createDirectory(atPath: base + "/folder/real", withIntermediateDirectories: true)
            try! FileManager.default.createDirectory(atPath: base + "/outside", withIntermediateDirectories: true)
            try! FileManager.default.createDirectory(atPath: base + "/folder/.synckit", withIntermediateDirectories: true)
            symlink(base + "/outside", base + "/folder/link")
            symlink("..", base + "/folder/real/up")
            symlink("/", base + "/folder/abs")
            FileManager.default.createFile(atPath: base + "/outside/secret", contents: Data("secret".utf8))
            symlink(base + "/outside/secret", base + "/folder/secret-link")
        }
        func outsideNames() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: outside)) ?? []).sorted()
        }
    }

    @Test(arguments: [true, false]) func noWriteGoesThroughASymlinkedParent(openat2: Bool) throws {
        let f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.base) }
        let root = try FolderRoot(path: f.folder, useOpenat2: openat2)
        for path in ["link/pwned", "link/deeper/pwned", "real/up/pwned", "real/up/outside/pwned", "abs/tmp/pwned"] {
            #expect(throws: SyncError.self, "\(path)") { try root.entry(path, create: true) }
            #expect(throws: SyncError.self, "\(path)") { try root.entry(path) }
        }
        #expect(f.outsideNames() == ["secret"])
        #expect(!FileManager.default.fileExists(atPath: f.base + "/pwned"))
    }

    @Test(arguments: [true, false]) func theStateDirectoryAndReservedPathsAreNeverOpened(openat2: Bool) throws {
        let f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.base) }
        let root = try FolderRoot(path: f.folder, reserved: ["real/state"], useOpenat2: openat2)
        for path in [".synckit/index.db", ".synckit", "real/state", "real/state/identity.key"] {
            #expect(throws: SyncError.self, "\(path)") { try root.entry(path, create: true) }
        }
        #expect(throws: SyncError.self) { try root.openForReading(".synckit/x") }
        #expect(try root.entry("real/statement", create: true) != nil, "only the exact reserved path and below")
    }

    @Test(arguments: [true, false]) func readsNeverFollowLinksOrOpenSpecialFiles(openat2: Bool) throws {
        let f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.base) }
        let root = try FolderRoot(path: f.folder, useOpenat2: openat2)
        #expect(throws: SyncError.self) { try root.openForReading("secret-link") }
        #expect(throws: SyncError.self) { try root.openForReading("link/secret") }
        mkfifo(f.folder + "/fifo", 0o644)
        // A FIFO would block a plain open forever: it is opened non-blocking and refused.
        #expect(throws: SyncError.self) { try root.openForReading("fifo") }
        FileManager.default.createFile(atPath: f.folder + "/real/ok", contents: Data("ok".utf8))
        #expect(root.readSmallFile("real/ok") == Array("ok".utf8))
        #expect(root.readSmallFile("secret-link") == nil)
    }

    @Test(arguments: [true, false]) func metadataChangesDoNotFollowALinkAtTheName(openat2: Bool) throws {
        let f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.base) }
        let root = try FolderRoot(path: f.folder, useOpenat2: openat2)
        chmod(f.outside + "/secret", 0o600)
        let entry = try #require(try root.entry("secret-link"))
        #expect(throws: SyncError.self) { try entry.setMode(0o777) }
        try? entry.setModificationTime(1_000_000_000)
        var st = stat()
        stat(f.outside + "/secret", &st)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(st.st_mtim.tv_sec != 1)
    }

    /// The race the old check-then-write lost: while files are created below `a`, another
    /// thread keeps swapping `a` between a real directory and a link to the outside. Whatever
    /// the interleaving, every file lands inside the folder or the write is refused.
    @Test(arguments: [true, false]) func aParentSwappedForALinkMidWriteCannotRedirectIt(openat2: Bool) async throws {
        let f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.base) }
        let root = try FolderRoot(path: f.folder, useOpenat2: openat2)
        let stop = Locked(false)
        let folder = f.folder, outside = f.outside
        let swapper = Thread {
            while !stop.withLock({ $0 }) {
                rename(folder + "/a", folder + "/a-moved")
                symlink(outside, folder + "/a")
                unlink(folder + "/a")
                rename(folder + "/a-moved", folder + "/a")
                mkdir(folder + "/a", 0o755)
            }
        }
        swapper.start()
        var landed = 0
        for i in 0..<3000 {
            guard let entry = try? root.entry("a/f\(i)", create: true) else { continue }
            let fd = entry.open(O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
            if fd >= 0 {
                close(fd)
                landed += 1
            }
        }
        stop.withLock { $0 = true }
        try await Task.sleep(for: .milliseconds(50))
        #expect(f.outsideNames() == ["secret"], "nothing was written outside")
        #expect(landed > 0, "the loop did write (inside)")
    }
}
