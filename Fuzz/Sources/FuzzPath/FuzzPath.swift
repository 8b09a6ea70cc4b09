// libFuzzer target `path`: remote-path validation (`PathSafety`, `RelativePath`) and the folder
// handle (`FolderRoot`) that every file operation goes through.
//
// For any input bytes taken as a path:
// - the byte check and the `String` check agree (`problem(withBytes:)` / `problem(with:)`);
// - an accepted path has no "", "." or ".." component, and its components split on the byte
//   '/' equal its `String.split(separator: "/")` components, byte for byte;
// - creating it beneath a root that has symlinks planted in it (`FolderRoot.entry(path,
//   create: true)` and an O_CREAT open of the name) never creates or changes anything outside
//   the root: the created file's real path (read back through /proc/self/fd) is inside the
//   root, and the "outside" directory the links point at stays empty. Both resolution modes
//   run: openat2(RESOLVE_BENEATH) and the O_NOFOLLOW component walk.
// What an input creates is removed again (through the same root), so every input starts from
// the same tree and the run stays fast.
import FuzzMain
import Foundation
import Glibc
import SyncKit

/// The scratch tree, made once per process in LLVMFuzzerInitialize, under $TMPDIR (or /tmp):
///   base/outside/          must stay empty
///   base/root/             the folder; holds the planted links below and `.synckit/`
///     link -> base/outside   abs -> /   up -> ..   out -> ../outside   self -> .
///     dir/back -> ../../outside   dir/loop -> loop   file -> ../outside/f (dangling)
struct Scratch {
    let base: String
    let root: String
    let outside: String
    /// root/ and root/dir/ open, for listing and cleaning up.
    let rootFD: Int32
    let dirFD: Int32
    /// The names in root/ and root/dir/ after setup, which every input must leave alone.
    let rootNames: Set<[UInt8]>
    let dirNames: Set<[UInt8]>
    /// The folder, resolved with openat2 and with the O_NOFOLLOW component walk.
    let roots: [FolderRoot]
}

nonisolated(unsafe) var scratch: Scratch!

@_cdecl("LLVMFuzzerInitialize")
public func fuzzPathInitialize(_ argc: UnsafeMutableRawPointer?, _ argv: UnsafeMutableRawPointer?) -> CInt {
    let tmp = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    var template = Array((tmp + "/synckit-fuzz-path.XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp in \(tmp): \(String(cString: strerror(errno)))") }
    let base = String(cString: made)
    let root = base + "/root", outside = base + "/outside"
    let fm = FileManager.default
    try! fm.createDirectory(atPath: outside, withIntermediateDirectories: false)
    try! fm.createDirectory(atPath: root + "/dir", withIntermediateDirectories: true)
    try! fm.createDirectory(atPath: root + "/.synckit", withIntermediateDirectories: false)
    for (name, target) in [("link", outside), ("abs", "/"), ("up", ".."), ("out", "../outside"), ("self", "."),
                           ("dir/back", "../../outside"), ("dir/loop", "loop"), ("file", "../outside/f")] {
        precondition(symlink(target, root + "/" + name) == 0, "symlink \(name): \(String(cString: strerror(errno)))")
    }
    // Removed when the fuzzer exits (libFuzzer ends with exit(), which runs atexit handlers);
    // after a crash it stays for inspection (scripts/fuzz.sh points TMPDIR at its run folder).
    atexit { try? FileManager.default.removeItem(atPath: scratch.base) }
    let rootFD = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), dirFD = open(root + "/dir", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    precondition(rootFD >= 0 && dirFD >= 0)
    let roots = [try! FolderRoot(path: root), try! FolderRoot(path: root, useOpenat2: false)]
    scratch = Scratch(base: base, root: root, outside: outside, rootFD: rootFD, dirFD: dirFD,
                      rootNames: names(rootFD), dirNames: names(dirFD), roots: roots)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPath(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    let valid = String(validating: bytes, as: UTF8.self)
    let byBytes = PathSafety.problem(withBytes: bytes, string: valid)
    // The path as a peer's record would carry it (invalid UTF-8 is refused before, so repair).
    let path = valid ?? String(decoding: bytes, as: UTF8.self)
    let byString = PathSafety.problem(with: path)
    if valid != nil { precondition((byBytes == nil) == (byString == nil), "the byte and String checks disagree on \(path.debugDescription)") }
    precondition((byString == nil) == ((try? RelativePath(path)) != nil), "RelativePath disagrees with PathSafety")
    guard byString == nil else { return 0 }
    checkComponents(path)
    for root in scratch.roots { create(path, in: root) }
    return 0
}

/// An accepted path: byte components and `String` components are the same, none is "", "."
/// or "..".
func checkComponents(_ path: String) {
    let byBytes = Array(path.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map { Array($0) }
    let byString = path.split(separator: "/", omittingEmptySubsequences: false).map { Array($0.utf8) }
    precondition(byBytes == byString, "components differ as bytes and as String: \(path.debugDescription)")
    for c in byBytes {
        precondition(!c.isEmpty && c != [46] && c != [46, 46], "accepted a path with an empty, '.' or '..' component: \(path.debugDescription)")
    }
    precondition(try! RelativePath(path).components.map { Array($0.utf8) } == byBytes, "RelativePath.components differs")
}

/// Creates `path` beneath `root` as a file, checks where it landed, and removes what it made.
func create(_ path: String, in root: FolderRoot) {
    defer {
        cleanUp()
        checkOutside(path)
    }
    // Refused (a component is a link or a file, the state directory...) is fine.
    guard let entry = try? root.entry(path, create: true) else { return }
    let fd = entry.open(O_CREAT | O_WRONLY, mode: 0o600)
    guard fd >= 0 else { return }  // a directory or a planted link at the name (O_NOFOLLOW)
    defer { close(fd) }
    if let real = realPath(of: fd) {
        // Compared as bytes: as `String`s, "root/" is not a prefix of "root/\u{301}" (the '/'
        // and the combining mark are one Character).
        let bytes = Array(real.utf8), state = Array((scratch.root + "/.synckit").utf8)
        precondition(bytes.starts(with: Array((scratch.root + "/").utf8)), "\(path.debugDescription) was created at \(real), outside the root")
        precondition(!(bytes.starts(with: state) && (bytes.count == state.count || bytes[state.count] == UInt8(ascii: "/"))),
                     "\(path.debugDescription) was created inside the state directory")
    } else {
        // Deeper than PATH_MAX: the kernel cannot name it, so check that the file is the name in
        // the entry's directory and that this directory is beneath the root, walking "..".
        var file = Glibc.stat(), there = Glibc.stat()
        precondition(fstat(fd, &file) == 0 && fstatat(entry.directory, entry.name, &there, AT_SYMLINK_NOFOLLOW) == 0
                     && file.st_ino == there.st_ino && file.st_dev == there.st_dev, "\(path.debugDescription): the created file is not the entry's name")
        precondition(isBeneathRoot(entry.directory), "\(path.debugDescription) was created outside the root")
    }
}

/// Removes whatever an input made: every name in root/ and root/dir/ (the only real
/// directories of the tree; the rest are links) that was not planted, with its whole subtree.
func cleanUp() {
    for (fd, planted) in [(scratch.rootFD, scratch.rootNames), (scratch.dirFD, scratch.dirNames)] {
        for name in names(fd) where !planted.contains(name) { removeTree(fd, name) }
    }
}

/// Removes `name` in the directory open at `parent` and all below it, through descriptors and
/// never following a link (the tree holds links that point out of it).
func removeTree(_ parent: Int32, _ name: [UInt8]) {
    let cName = name.map { CChar(bitPattern: $0) } + [0]
    if unlinkat(parent, cName, 0) == 0 { return }  // a file or a link
    let fd = openat(parent, cName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard fd >= 0 else { return }
    for child in names(fd) { removeTree(fd, child) }
    close(fd)
    precondition(unlinkat(parent, cName, AT_REMOVEDIR) == 0, "cannot remove a directory the input made: \(String(cString: strerror(errno)))")
}

/// The path the kernel gives the open file `fd`; nil when it is longer than PATH_MAX.
func realPath(of fd: Int32) -> String? {
    var buffer = [CChar](repeating: 0, count: 8192)
    let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
    if n < 0 && errno == ENAMETOOLONG { return nil }
    precondition(n > 0, "readlink /proc/self/fd: \(String(cString: strerror(errno)))")
    return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Whether the directory open at `fd` is the root or beneath it: follows ".." until the root's
/// inode (true) or the file system's root (false).
func isBeneathRoot(_ fd: Int32) -> Bool {
    var root = Glibc.stat(), top = Glibc.stat()
    precondition(stat(scratch.root, &root) == 0 && stat("/", &top) == 0)
    var current = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    defer { close(current) }
    while current >= 0 {
        var st = Glibc.stat()
        precondition(fstat(current, &st) == 0)
        if st.st_ino == root.st_ino && st.st_dev == root.st_dev { return true }
        if st.st_ino == top.st_ino && st.st_dev == top.st_dev { return false }
        let up = openat(current, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        close(current)
        current = up
    }
    preconditionFailure("cannot open .. on the way up: \(String(cString: strerror(errno)))")
}

/// Nothing outside the root changed, and the planted names are all still there.
func checkOutside(_ path: String) {
    let outside = names(at: scratch.outside), base = names(at: scratch.base)
    precondition(outside.isEmpty, "\(path.debugDescription) made \(outside) in the outside directory")
    precondition(base == [Array("outside".utf8), Array("root".utf8)], "\(path.debugDescription) made \(base) next to the root")
    precondition(names(scratch.rootFD) == scratch.rootNames, "\(path.debugDescription) removed a planted name from the root")
    precondition(names(scratch.dirFD) == scratch.dirNames, "\(path.debugDescription) removed a planted name from root/dir")
    precondition(names(at: scratch.root + "/.synckit").isEmpty, "\(path.debugDescription) made something in the state directory")
}

/// The entries of the directory at `path`, by name.
func names(at path: String) -> Set<[UInt8]> {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    precondition(fd >= 0, "cannot open \(path): \(String(cString: strerror(errno)))")
    defer { close(fd) }
    return names(fd)
}

/// The entries of the directory open at `fd`, by name as bytes (readdir: cheap, no stat), read
/// from the start through a descriptor of their own.
func names(_ fd: Int32) -> Set<[UInt8]> {
    let own = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard own >= 0, let d = fdopendir(own) else { preconditionFailure("cannot list a directory: \(String(cString: strerror(errno)))") }
    defer { closedir(d) }
    var out = Set<[UInt8]>()
    while let e = readdir(d) {
        let name = withUnsafePointer(to: e.pointee.d_name) { Array(String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)).utf8) }
        if name != [46] && name != [46, 46] { out.insert(name) }
    }
    return out
}

/// The entry point: libFuzzer's driver with this file's test function, or `--write-seeds DIR`
/// (see `runFuzzer` in Fuzz/Sources/FuzzMain).
@main
enum Main {
    static func main() { runFuzzer(fuzzPath, seeds: seeds) }
}

// MARK: seeds

/// Paths: ordinary ones, ones that must be refused (`..`, absolute, empty components, the
/// state directory, temp names, a '/' glued to a combining mark or a joiner, NFD, NUL, not
/// UTF-8, too long), and ones that name the planted links, so that the fuzzer starts at the
/// interesting edges.
func seeds() -> [(String, [UInt8])] {
    let paths: [String] = [
        "a", "a/b/c.txt", "new/deep/er/file", "dir/new", "dir/sub/f", "docs/caf\u{E9}.txt", "\u{65E5}\u{672C}/\u{8A9E}",
        "..", "../x", "a/../b", "./a", "a/./b", "/etc/passwd", "a//b", "a/", "",
        "../\u{301}x", "a/\u{301}b", "a/\u{200D}b", "a\u{200D}/b", "\u{301}", "\u{1F468}\u{200D}\u{1F469}/x",
        ".synckit", ".synckit/x", "a/.synckit", "x.synckit-tmp", "a/.b.synckit-tmp",
        "cafe\u{301}.txt", "e\u{301}/x", "\u{212B}ngstr\u{F6}m",
        "link", "link/x", "abs/tmp/x", "up/x", "up/outside/x", "out/x", "self/x", "dir/back/x", "dir/loop", "dir/loop/x", "file",
        ".", "...", "..a", "a..", ". /x", "a\\..\\b",
        String(repeating: "n", count: 255), String(repeating: "n", count: 256),
        // 4,095 bytes: accepted, but root + path is longer than PATH_MAX (the kernel cannot name it).
        Array(repeating: String(repeating: "n", count: 255), count: 16).joined(separator: "/"),
    ]
    var out = paths.enumerated().map { ("path-\($0.offset)", Array($0.element.utf8)) }
    out.append(("nul", Array("a\u{0}b".utf8)))
    out.append(("invalid-utf8", [0x61, 0x2F, 0xFF, 0x2E, 0x2E]))
    out.append(("overlong-dot", [0xC0, 0xAE, 0xC0, 0xAE, 0x2F, 0x78]))  // "../x" as overlong UTF-8
    return out
}
