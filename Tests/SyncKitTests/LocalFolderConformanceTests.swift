import Foundation
import Logging
import SyncKitTesting
import Testing
@testable import SyncKit

/// Both folders pass the same kit: what the simulation runs on behaves like the disk.
@Suite struct LocalFolderConformanceTests {
    @Test func posixFolderConforms() async throws {
        try await LocalFolderConformance { try PosixFixture() }.run()
    }

    @Test func posixFolderConformsWithoutOpenat2() async throws {
        try await LocalFolderConformance { try PosixFixture(openat2: false) }.run()
    }

    @Test func inMemoryFolderConforms() async throws {
        try await LocalFolderConformance { InMemoryFolderFixture() }.run()
    }
}

/// A `PosixFolder` in a temp directory, beside an "outside" directory that must stay empty.
struct PosixFixture: LocalFolderFixture {
    let base = makeTempDirectory("posix-fixture")
    var root: String { base + "/folder" }
    var outside: String { base + "/outside" }
    let index: any IndexPersistence = InMemoryIndex()
    let folder: any LocalFolder

    init(openat2: Bool = FolderRoot.kernelHasOpenat2) throws {
        try FileManager.default.createDirectory(atPath: base + "/folder/.synckit", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: base + "/outside", withIntermediateDirectories: true)
        let posix = try PosixFolder(path: base + "/folder", stateDirectory: base + "/folder/.synckit", reserved: [], index: index,
                                    me: LocalFolderConformance.me, blockWindow: 16, logger: Logger(label: "fixture") { _ in SwiftLogNoOpLogHandler() })
        folder = openat2 ? posix : try PosixFolder(root: FolderRoot(path: base + "/folder", useOpenat2: false), from: posix)
    }

    func write(_ path: String, _ content: [UInt8], mtimeNs: Int64, mode: UInt32) {
        let full = root + "/" + path
        try? FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: full, contents: Data(content))
        chmod(full, mode_t(mode))
        var times = [timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2), timespec(mtimeNs)]
        utimensat(AT_FDCWD, full, &times, AT_SYMLINK_NOFOLLOW)
    }

    func makeDirectory(_ path: String) { try? FileManager.default.createDirectory(atPath: root + "/" + path, withIntermediateDirectories: true) }
    func makeSymlink(_ path: String, to target: String) { symlink(target, root + "/" + path) }
    func remove(_ path: String) { try? FileManager.default.removeItem(atPath: root + "/" + path) }
    func read(_ path: String) -> [UInt8]? {
        guard (try? FileOps.lstat(root + "/" + path))??.kind == .file else { return nil }
        return FileManager.default.contents(atPath: root + "/" + path).map { Array($0) }
    }
    func kind(_ path: String) -> FileRecord.Kind? { (try? FileOps.lstat(root + "/" + path))??.kind }
    func mode(_ path: String) -> UInt32? { (try? FileOps.lstat(root + "/" + path))??.mode }
    func mtimeNs(_ path: String) -> Int64? { (try? FileOps.lstat(root + "/" + path))??.mtimeNs }
    func somethingEscaped() -> Bool {
        !((try? FileManager.default.contentsOfDirectory(atPath: outside)) ?? []).isEmpty || FileManager.default.fileExists(atPath: base + "/pwned.txt")
    }
    func cleanUp() { try? FileManager.default.removeItem(atPath: base) }
}
