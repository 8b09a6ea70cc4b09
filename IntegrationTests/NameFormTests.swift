import Crypto
import Foundation
import SyncKit
import Testing

extension Integration {
    /// Names two file systems disagree on (issue 16): the same name in NFC and NFD, and names
    /// that differ only in case on a real FAT file system. Each ends with both contents kept
    /// and every node agreeing.
    @Suite(.serialized) struct NameFormTests {
        /// Names in a directory as raw bytes (Swift compares strings by canonical equivalence,
        /// which would hide the difference the test is about).
        static func rawNames(_ dir: String) -> [[UInt8]] {
            guard let d = opendir(dir) else { return [] }
            defer { closedir(d) }
            var out = [[UInt8]]()
            while let e = readdir(d) {
                let name = withUnsafePointer(to: e.pointee.d_name) { p in
                    p.withMemoryRebound(to: CChar.self, capacity: 256) { Array(String(cString: $0).utf8) }
                }
                if name != Array(".".utf8) && name != Array("..".utf8) && name != Array(".synckit".utf8) { out.append(name) }
            }
            return out.sorted { $0.lexicographicallyPrecedes($1) }
        }

        /// Path (exact bytes, as a string) -> SHA-256 of the content, for the regular files of a
        /// folder's top level (modes left out: FAT keeps none).
        static func contents(_ dir: String) -> [String: String] {
            var out = [String: String]()
            for raw in rawNames(dir) {
                let name = String(decoding: raw, as: UTF8.self)
                var st = stat()
                guard lstat(dir + "/" + name, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
                let data = FileManager.default.contents(atPath: dir + "/" + name) ?? Data()
                out[name.unicodeScalars.map { String($0.value, radix: 16) }.joined(separator: ",")] = hex(SHA256.hash(data: data))
            }
            return out
        }

        static func bytes(_ s: String, contain part: String) -> Bool {
            let (a, b) = (Array(s.utf8), Array(part.utf8))
            return a.count >= b.count && (0...(a.count - b.count)).contains { a[$0..<($0 + b.count)].elementsEqual(b) }
        }

        static let nfc = "caf\u{E9}.txt"
        static let nfd = "cafe\u{301}.txt"

        /// Node 0 writes `café.txt` in NFC, node 1 the same name in NFD (as a Mac would), with
        /// different contents. They are one file in the cluster: a conflict, both contents kept
        /// (one as a conflict copy), every node agreeing; node 1 keeps its NFD spelling on disk
        /// and holds no second, NFC-spelled file beside it.
        @Test func nfcAndNfdAreOneFile() async throws {
            try await withTestCluster(nodes: 3, seed: { c in
                c.write(0, Self.nfc, "written on Linux in NFC")
                c.write(1, Self.nfd, "written on a Mac in NFD")
            }) { c in
                try await c.waitUntilConverged(timeout: .seconds(30)) { snap in
                    snap.keys.filter { $0.hasPrefix("caf") }.count == 2
                }
                for i in 0..<3 {
                    let names = Self.rawNames(c.folder(i)).map { String(decoding: $0, as: UTF8.self) }
                    #expect(names.count == 2, "node \(i): \(names)")
                    #expect(names.contains { Self.bytes($0, contain: ConflictNaming.marker) }, "node \(i): \(names)")
                }
                // Both contents are kept on every node.
                let texts = Set(TestCluster.snapshot(of: c.folder(2)).keys.compactMap { c.read(2, $0) }.map { String(decoding: $0, as: UTF8.self) })
                #expect(texts == ["written on Linux in NFC", "written on a Mac in NFD"])
                // Node 1's disk keeps the NFD name; no NFC twin was made beside it.
                let raw1 = Self.rawNames(c.folder(1))
                #expect(raw1.contains(Array(Self.nfd.utf8)))
                #expect(!raw1.contains(Array(Self.nfc.utf8)))
                // One record, in NFC, on every node (compared as bytes: string comparisons would
                // hide the forms), and none in NFD.
                for i in 0..<3 {
                    let paths = await c.node(i).localRecords.keys.map { Array($0.utf8) }
                    #expect(paths.contains(Array(Self.nfc.utf8)), "node \(i)")
                    #expect(!paths.contains(Array(Self.nfd.utf8)), "node \(i)")
                    #expect(paths.count == 2, "node \(i): \(paths)")
                }

                // An edit on node 1 (through its NFD name) reaches the others as an edit of
                // the one file, and a delete on node 0 removes node 1's NFD file.
                let nfdPath = c.folder(1) + "/" + Self.nfd
                try Data("edited on the Mac".utf8).write(to: URL(fileURLWithPath: nfdPath))
                try await c.waitUntilConverged { snap in snap.keys.contains { $0 == Self.nfc } && c.read(0, Self.nfc) == Array("edited on the Mac".utf8) }
                #expect(!Self.rawNames(c.folder(1)).contains(Array(Self.nfc.utf8)))
                c.remove(0, Self.nfc)
                try await c.waitUntilConverged { snap in !snap.keys.contains(Self.nfc) }
                #expect(!Self.rawNames(c.folder(1)).contains(Array(Self.nfd.utf8)))
            }
        }

        /// A folder on a real FAT file system: an image made here, loop-mounted by the kernel's
        /// vfat driver where there is one, else through FUSE (fusefat; kernels in containers and
        /// small VMs often lack the vfat module). Needs root, mkfs.vfat and fusefat
        /// (scripts/setup.sh installs them); without them the test is skipped and says why.
        final class FATMount {
            let image: String
            let mountPoint: String
            /// fusefat in the foreground (`-f`): the mount lasts while it runs, and a daemonized
            /// FUSE process would outlive a test that failed.
            var daemon: Process?
            /// Mounted by the kernel (`mount -o loop`) rather than by fusefat.
            var loop = false

            init(at mountPoint: String) throws {
                self.mountPoint = mountPoint
                image = mountPoint + ".img"
                try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
                try Self.run("/usr/bin/truncate", ["-s", "64M", image])
                try Self.run("/usr/sbin/mkfs.vfat", [image])
                if (try? Self.run("/usr/bin/mount", ["-t", "vfat", "-o", "loop", image, mountPoint])) != nil {
                    loop = true
                    return
                }
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/bin/fusefat")
                p.arguments = ["-f", "-o", "rw+", image, mountPoint]
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                try p.run()
                daemon = p
                // Mounted when /proc/mounts says so.
                for _ in 0..<100 {
                    let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
                    if mounts.contains(" \(mountPoint) fuse") { return }
                    usleep(50_000)
                }
                unmount()
                throw SyncError(.io, "fusefat did not mount \(image)")
            }

            var mounted: Bool { loop || daemon?.isRunning == true }

            static func run(_ tool: String, _ args: [String]) throws {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: tool)
                p.arguments = args
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                try p.run()
                p.waitUntilExit()
                guard p.terminationStatus == 0 else { throw SyncError(.io, "\(tool) \(args.joined(separator: " ")) failed with \(p.terminationStatus)") }
            }

            func unmount() {
                if loop {
                    loop = false
                    try? Self.run("/usr/bin/umount", [mountPoint])
                    try? FileManager.default.removeItem(atPath: image)
                }
                guard let daemon else { return }
                self.daemon = nil
                try? Self.run("/bin/fusermount", ["-u", mountPoint])
                if daemon.isRunning { daemon.terminate() }
                daemon.waitUntilExit()
                try? FileManager.default.removeItem(atPath: image)
            }
        }

        static var canMountFAT: Bool {
            getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/fusefat")
                && FileManager.default.isExecutableFile(atPath: "/usr/sbin/mkfs.vfat") && FileManager.default.fileExists(atPath: "/dev/fuse")
        }

        /// Node 0 has `Readme.txt`, node 2 `README.txt` (two files on Linux); node 1's folder is
        /// on FAT, where they would be one. Node 1 detects the case-insensitive file system,
        /// never lets one overwrite the other: the second is written as
        /// `README.sync-conflict-case.txt` (or `Readme...`), which syncs to every node in place
        /// of the clashing name. All three end with the same two files and both contents.
        @Test(.enabled(if: canMountFAT, "needs root, fusefat and mkfs.vfat (scripts/setup.sh)"))
        func aCaseClashOnFATKeepsBothContentsAndEveryNodeAgrees() async throws {
            var mount: FATMount?
            defer { mount?.unmount() }
            try await withTestCluster(nodes: 3, seed: { c in
                mount = try? FATMount(at: c.folder(1))
                c.write(0, "Readme.txt", "the readme of node 0")
                c.write(2, "README.txt", "THE README OF NODE 2")
                c.write(0, "plain.txt", "no clash here")
                let stateOutside = c.root + "/state1"
                c.configure = { config in
                    // The index (SQLite) stays on a Linux file system; the folder is on FAT.
                    if config.folder.hasSuffix("/node1") { config.stateDirectory = stateOutside }
                }
            }) { c in
                #expect(mount?.mounted == true, "the FAT image is mounted")
                #expect(try FolderRoot(path: c.folder(1)).caseInsensitive, "FAT is detected as case-insensitive")
                #expect(try !FolderRoot(path: c.folder(0)).caseInsensitive)
                #expect(try !FolderRoot(path: c.folder(1)).keepsPermissions)
                let deadline = ContinuousClock.now + .seconds(60)
                var agreed = false
                while ContinuousClock.now < deadline {
                    let snaps = (0..<3).map { Self.contents(c.folder($0)) }
                    if snaps[0] == snaps[1] && snaps[1] == snaps[2] && snaps[0].count == 3 {
                        agreed = true
                        break
                    }
                    try await Task.sleep(for: .milliseconds(100))
                }
                let names = (0..<3).map { Self.rawNames(c.folder($0)).map { String(decoding: $0, as: UTF8.self) } }
                if !agreed { print(String(c.logs.text.suffix(20_000))) }
                #expect(agreed, "\(names)")
                // Both contents, under two names, one of them the case-conflict name.
                let texts = Set(names[1].compactMap { c.read(1, $0) }.map { String(decoding: $0, as: UTF8.self) })
                #expect(texts == ["the readme of node 0", "THE README OF NODE 2", "no clash here"], "\(texts)")
                #expect(names[1].contains { Self.bytes($0, contain: ConflictNaming.marker + "case") }, "\(names[1])")
                #expect(names[0] == names[2])
                // Nothing was silently overwritten on the way: every node's index agrees too.
                let paths = await Set(c.node(0).localRecords.filter { !$0.value.deleted }.keys)
                let paths1 = await Set(c.node(1).localRecords.filter { !$0.value.deleted }.keys)
                #expect(paths == paths1)
            }
        }
    }
}
