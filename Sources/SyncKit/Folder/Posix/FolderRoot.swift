import CSyncKitShims
import Foundation

/// The synced folder, reached only through a directory descriptor that the kernel keeps every
/// operation beneath.
///
/// Why: checking a path string and then handing the string to a system call are two steps,
/// and everything between them is the attacker's (a symlink planted in a parent, a name the
/// check read differently from the kernel, a directory swapped for a link mid-pull). Here the
/// check and the use are one step, done by the kernel: the folder root is opened once, and every
/// open, create, mkdir, rename, unlink, chmod, utimes and readlink under it is relative to a
/// descriptor obtained with openat2(2) and `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS` (no `..` out, no absolute path, no symlink in any component), then
/// acts on a single validated name with a `*at` call that never follows a final symlink. Where
/// openat2 is missing (kernels before 5.6) the same is done by walking the components one
/// `openat(O_NOFOLLOW | O_DIRECTORY)` at a time. The same shape as Go's `os.Root` and Rust's
/// cap-std.
///
/// Paths come in as `RelativePath` (checked by `PathSafety`), and the root also refuses the
/// state directory and any reserved prefix (a `--state-dir` inside the folder), so even a path
/// that slipped past every other check cannot name them.
public final class FolderRoot: Sendable {
    /// The folder, for messages only: no system call ever uses it after `init`.
    public let path: String
    /// The root directory, open for the node's lifetime.
    let fd: Int32
    /// Relative paths below which nothing is ever opened (the state directory...).
    let reserved: [[UInt8]]
    /// False to use the component walk even where openat2 exists (tests of the fallback).
    let useOpenat2: Bool
    /// The folder's file system finds names regardless of case (FAT, exFAT, ext4 with
    /// casefold): probed once at start. Then every lookup checks the exact name (`resolve`).
    public let caseInsensitive: Bool
    /// The file system keeps permission bits (FAT does not: every file reads as one fixed
    /// mode and chmod fails). Without them, pulls do not set modes and scans keep the modes the
    /// index knows, so a fixed disk mode never travels to the other nodes as an edit.
    public let keepsPermissions: Bool

    /// Opens the folder at `path` (which must be a real directory). `reserved` names relative
    /// paths that are never touched, besides `.synckit`.
    public init(path: String, reserved: [String] = [], useOpenat2: Bool = FolderRoot.kernelHasOpenat2) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SyncError(.folderMissing, "cannot open the folder \(path): \(FileOps.errorText())") }
        self.fd = fd
        self.path = path
        self.reserved = ([PathSafety.stateDirectory] + reserved).map { Array($0.utf8) }
        self.useOpenat2 = useOpenat2
        (caseInsensitive, keepsPermissions) = Self.probe(fd)
    }

    /// Creates a probe file with a mixed-case name in the root (a temp name, never synced):
    /// found by its lower-case name means the file system ignores case; a
    /// chmod that fails or does not stick means it keeps no permissions. (false, true) when the
    /// folder cannot be written (nothing will be written then either).
    static func probe(_ fd: Int32) -> (caseInsensitive: Bool, keepsPermissions: Bool) {
        let name = ".SyncKit-Case-Probe-\(getpid())" + PathSafety.tempSuffix
        let probe = name.withCString { openat(fd, $0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600) }
        guard probe >= 0 else { return (false, true) }
        defer { _ = name.withCString { unlinkat(fd, $0, 0) } }
        var a = Glibc.stat(), b = Glibc.stat()
        let permissions = fchmod(probe, 0o640) == 0 && Glibc.fstat(probe, &a) == 0 && a.st_mode & 0o777 == 0o640
        close(probe)
        guard fstatat(fd, name, &a, AT_SYMLINK_NOFOLLOW) == 0 else { return (false, permissions) }
        // (Not by inode: FUSE file systems may number one file differently per lookup. The
        // probe's name is ours and unique, so its lower-case twin exists only as itself.)
        return (fstatat(fd, name.lowercased(), &b, AT_SYMLINK_NOFOLLOW) == 0, permissions)
    }

    deinit { close(fd) }

    /// The relative paths never touched: `.synckit` and any configured one.
    public var reservedPaths: [String] { reserved.map { String(decoding: $0, as: UTF8.self) } }

    /// Whether this kernel has openat2(2) (probed once on the root directory).
    public static let kernelHasOpenat2: Bool = {
        let probe = synckit_openat2_beneath(AT_FDCWD, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if probe >= 0 { close(probe) }
        return probe >= 0 || errno != ENOSYS
    }()

    // MARK: directories

    /// Opens the directory `relative` (nil: the root) beneath the root, read-only; the caller
    /// closes it. Throws `.unsafePath` when a component is a symlink or not a directory, and
    /// returns nil when a component does not exist.
    func openDirectory(_ relative: String?) throws -> Int32? {
        guard let relative else { return try duplicate(fd) }
        try checkReserved(relative)
        if useOpenat2 {
            let d = relative.withCString { synckit_openat2_beneath(fd, $0, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0) }
            if d >= 0 { return d }
            return try directoryFailure(errno, relative)
        }
        // The fallback: one validated name at a time, never following a link.
        var current = try duplicate(fd)
        for name in Array(relative.utf8).split(separator: UInt8(ascii: "/")) {
            let next = String(decoding: name, as: UTF8.self).withCString { openat(current, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            let code = errno
            close(current)
            guard next >= 0 else { return try directoryFailure(code, relative) }
            current = next
        }
        return current
    }

    private func directoryFailure(_ code: Int32, _ relative: String) throws -> Int32? {
        switch code {
        case ENOENT: return nil
        case ELOOP, ENOTDIR, EXDEV:
            throw SyncError(.unsafePath, "\(relative) is not a real directory below the folder (a symlink, a file, or a way out); refusing to go through it")
        default:
            throw SyncError(.io, "cannot open the directory \(relative): \(FileOps.errorText(code))")
        }
    }

    /// Opens the directory `relative`, creating what is missing of it (mode 0755) one real
    /// directory at a time.
    func makeDirectories(_ relative: String) throws -> Int32 {
        if let d = try openDirectory(relative) { return d }
        var current = try duplicate(fd)
        for name in Array(relative.utf8).split(separator: UInt8(ascii: "/")).map({ String(decoding: $0, as: UTF8.self) }) {
            var next = name.withCString { openat(current, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if next < 0 && errno == ENOENT {
                // Created by someone else in the meantime is fine: the open below checks it is a
                // real directory.
                if name.withCString({ mkdirat(current, $0, 0o755) }) != 0 && errno != EEXIST {
                    let code = errno
                    close(current)
                    throw SyncError(.io, "cannot create \(relative): \(FileOps.errorText(code))")
                }
                next = name.withCString { openat(current, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            }
            let code = errno
            close(current)
            guard next >= 0 else {
                if code == ELOOP || code == ENOTDIR {
                    throw SyncError(.unsafePath, "\(relative) is not a real directory below the folder (a symlink or a file); refusing to write through it")
                }
                throw SyncError(.io, "cannot open \(relative): \(FileOps.errorText(code))")
            }
            current = next
        }
        return current
    }

    /// The directory that holds `path`, opened beneath the root, and the name of `path` in it.
    /// With `create`, missing parents are made (as real directories). Nil when a parent does
    /// not exist (and `create` is off).
    public func entry(_ path: RelativePath, create: Bool = false) throws -> FolderEntry? {
        try checkReserved(path.string)
        // Names the disk may spell differently from the wire: a non-ASCII name (NFD on disk,
        // NFC on the wire) or any name on a case-insensitive file system.
        if caseInsensitive || !path.string.utf8.allSatisfy({ $0 < 0x80 }) {
            return try resolve(path, create: create)
        }
        let (parent, name) = path.split
        let dir = try create ? parent.map(makeDirectories) ?? duplicate(fd) : openDirectory(parent)
        guard let dir else { return nil }
        return FolderEntry(directory: dir, name: name, path: path.string)
    }

    /// `entry(_:create:)` for a path that is checked here.
    public func entry(_ path: String, create: Bool = false) throws -> FolderEntry? {
        try entry(RelativePath(path), create: create)
    }

    /// How a wire name is spelled in one directory on disk.
    enum DiskName {
        /// Nothing of that name (nor an equivalent one) is there.
        case missing
        /// The entry's name on disk: the same bytes, or the same name in another Unicode
        /// normalization form.
        case found(String)
        /// Only an entry whose name differs in case is there (a case-insensitive file system
        /// would open it for this name): a clash, never the same file.
        case clash(String)
    }

    /// The disk's spelling of the wire name `name` in the directory open at `dir`.
    func diskName(_ dir: Int32, _ name: String) throws -> DiskName {
        var st = Glibc.stat()
        let exists = fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0
        if exists && !caseInsensitive { return .found(name) }
        let ascii = name.utf8.allSatisfy { $0 < 0x80 }
        if !exists && ascii { return .missing }
        if !exists && !caseInsensitive {
            // The usual other spelling is the NFD one (macOS): one more stat, no listing (a
            // listing per missing name would make a first pull of many such names quadratic).
            let nfd = name.decomposedStringWithCanonicalMapping
            return fstatat(dir, nfd, &st, AT_SYMLINK_NOFOLLOW) == 0 ? .found(nfd) : .missing
        }
        // Read the directory: exact bytes first, then the same name in NFC.
        var equivalent: String?
        var variant: String?
        for entry in try Self.list(dir) {
            guard let disk = String(validating: entry.name, as: UTF8.self) else { continue }
            if entry.name.elementsEqual(name.utf8) { return .found(disk) }
            if equivalent == nil, !ascii || !disk.utf8.allSatisfy({ $0 < 0x80 }), disk.precomposedStringWithCanonicalMapping.utf8.elementsEqual(name.utf8) {
                equivalent = disk
            } else if variant == nil, exists, disk.lowercased() == name.lowercased() {
                variant = disk
            }
        }
        if let equivalent { return .found(equivalent) }
        if let variant { return .clash(variant) }
        // Found by the file system but under no listed name that is this one (a FAT short name
        // such as REPORT~1.DOC, or its own case-folding rules): another entry, never this one.
        return exists ? .clash(name) : .missing
    }

    /// `entry` by one component at a time, each looked up by its disk spelling (`diskName`),
    /// never following a link. A component that clashes in case with another entry is not that
    /// entry: a lookup finds nothing, and with `create` the path is relocated to the
    /// component's case-conflict name (`ConflictNaming.caseClashName`), which the entry reports
    /// in `relocatedPath`.
    func resolve(_ path: RelativePath, create: Bool) throws -> FolderEntry? {
        let components = path.components
        var dir = try duplicate(fd)
        var written = [String]()
        var relocated = false
        for (i, wire) in components.enumerated() {
            var component = wire
            var disk: String
            // A clash: the case-conflict name instead, until one is free or is ours.
            while true {
                let found: DiskName
                do { found = try diskName(dir, component) } catch {
                    close(dir)
                    throw error
                }
                switch found {
                case .missing: disk = component
                case .found(let d): disk = d
                case .clash:
                    guard create else {
                        close(dir)
                        return nil
                    }
                    component = ConflictNaming.caseClashName(component)
                    relocated = true
                    continue
                }
                break
            }
            written.append(component)
            if i == components.count - 1 {
                let entry = FolderEntry(directory: dir, name: disk, path: path.string)
                if relocated { entry.relocatedPath = written.joined(separator: "/") }
                return entry
            }
            var next = disk.withCString { openat(dir, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if next < 0 && errno == ENOENT && create {
                if disk.withCString({ mkdirat(dir, $0, 0o755) }) != 0 && errno != EEXIST {
                    let code = errno
                    close(dir)
                    throw SyncError(.io, "cannot create a parent of \(path): \(FileOps.errorText(code))")
                }
                next = disk.withCString { openat(dir, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            }
            let code = errno
            close(dir)
            guard next >= 0 else {
                if code == ENOENT { return nil }
                if code == ELOOP || code == ENOTDIR {
                    throw SyncError(.unsafePath, "\(path) is not below real directories of the folder (a symlink or a file); refusing to go through it")
                }
                throw SyncError(.io, "cannot open a parent of \(path): \(FileOps.errorText(code))")
            }
            dir = next
        }
        close(dir)
        return nil
    }

    private func checkReserved(_ relative: String) throws {
        let bytes = Array(relative.utf8)
        for r in reserved where bytes.starts(with: r) && (bytes.count == r.count || bytes[r.count] == UInt8(ascii: "/")) {
            throw SyncError(.unsafePath, "\(relative) is inside the state directory; refusing to touch it")
        }
    }

    /// A new descriptor of the directory open at `fd`, with its own read position (a `dup`
    /// would share it, and two listings of one directory at once would steal each other's
    /// entries).
    private func duplicate(_ fd: Int32) throws -> Int32 {
        let d = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard d >= 0 else { throw SyncError(.io, "cannot reopen a directory: \(FileOps.errorText())") }
        return d
    }

    // MARK: conveniences

    /// `lstat` of `path` beneath the root (nil: nothing there, or a parent is missing).
    public func stat(_ path: String) throws -> FileOps.Stat? {
        guard let e = try entry(path) else { return nil }
        return try e.stat()
    }

    /// Opens the regular file at `path` for reading (never a link, a FIFO or a device).
    public func openForReading(_ path: String) throws -> Int32 {
        let p = try RelativePath(path)
        try checkReserved(p.string)
        // (A name the disk may spell otherwise is looked up by `entry`, below.)
        if useOpenat2 && !caseInsensitive && p.string.utf8.allSatisfy({ $0 < 0x80 }) {
            let fd = p.string.withCString { synckit_openat2_beneath(self.fd, $0, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0) }
            guard fd >= 0 else { throw SyncError(.io, "cannot open \(path): \(FileOps.errorText())") }
            return try FolderEntry.regularFile(fd, path)
        }
        guard let e = try entry(p) else { throw SyncError(.io, "cannot open \(path): a parent directory is missing") }
        return try e.openForReading()
    }

    /// The whole content of the regular file at `path` (nil when there is none), at most
    /// `limit` bytes: for small control files such as `.syncignore`.
    public func readSmallFile(_ path: String, limit: Int = 1 << 20) -> [UInt8]? {
        guard let fd = try? openForReading(path) else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: limit)
        let n = bytes.withUnsafeMutableBytes { (try? FileOps.pread(fd, into: $0, offset: 0)) ?? -1 }
        guard n >= 0 else { return nil }
        return Array(bytes[..<n])
    }

    /// The entries of the directory open at `dir`: each name as bytes, and its type from the
    /// directory entry (`DT_UNKNOWN` on file systems that do not say).
    static func list(_ dir: Int32) throws -> [(name: [UInt8], type: UInt8)] {
        // A description of its own (see `duplicate`), read from the start.
        let d = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard d >= 0, let handle = fdopendir(d) else {
            if d >= 0 { close(d) }
            throw SyncError(.io, "cannot list a directory: \(FileOps.errorText())")
        }
        defer { closedir(handle) }
        var out = [(name: [UInt8], type: UInt8)]()
        while let entry = readdir(handle) {
            let name = withUnsafePointer(to: entry.pointee.d_name) { ptr in
                ptr.withMemoryRebound(to: UInt8.self, capacity: 256) { Array(UnsafeBufferPointer(start: $0, count: strlen(UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)))) }
            }
            if name == [46] || name == [46, 46] { continue }
            out.append((name, entry.pointee.d_type))
        }
        return out
    }
}

/// One name in one open directory: the unit every file operation of the folder acts on.
///
/// The directory was opened beneath the root (so whatever it is called now, it is inside the
/// folder), and every call below names a single component with a `*at` system call that does
/// not follow a symlink at that name. The descriptor is closed when the entry is released.
public final class FolderEntry: @unchecked Sendable {
    /// The open parent directory.
    public let directory: Int32
    /// The last component.
    public let name: String
    /// The relative path, for messages.
    public let path: String
    /// Set when the path clashed in case with another entry on a case-insensitive file system
    /// and the entry is the case-conflict name instead (`FolderRoot.resolve`): the folder-relative
    /// path actually written.
    public var relocatedPath: String?

    init(directory: Int32, name: String, path: String) {
        self.directory = directory
        self.name = name
        self.path = path
    }

    deinit { close(directory) }

    /// `fstatat(AT_SYMLINK_NOFOLLOW)` of the name; nil when nothing is there.
    public func stat() throws -> FileOps.Stat? { try Self.stat(directory, name, path) }

    /// `fstatat` of `name` in `directory` without following a link; nil when nothing is there.
    static func stat(_ directory: Int32, _ name: String, _ path: String) throws -> FileOps.Stat? {
        var st = Glibc.stat()
        if fstatat(directory, name, &st, AT_SYMLINK_NOFOLLOW) != 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw SyncError(.io, "cannot stat \(path): \(FileOps.errorText())")
        }
        return FileOps.Stat(st)
    }

    /// Another name in the same directory (a temp file, a conflict copy).
    public func sibling(_ name: String) -> String {
        let p = RelativePath.parent(of: path)
        return p.map { $0 + "/" + name } ?? name
    }

    /// Opens the name with `flags` (O_NOFOLLOW and O_CLOEXEC are always added) and `mode` for a
    /// new file; -1 with errno on failure.
    public func open(_ flags: Int32, mode: mode_t = 0, name: String? = nil) -> Int32 {
        (name ?? self.name).withCString { openat(directory, $0, flags | O_NOFOLLOW | O_CLOEXEC, mode) }
    }

    /// Opens the name for reading; it must be a regular file.
    public func openForReading() throws -> Int32 {
        let fd = open(O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else { throw SyncError(.io, "cannot open \(path): \(FileOps.errorText())") }
        return try Self.regularFile(fd, path)
    }

    /// Keeps `fd` only if it is a regular file (a FIFO or device swapped in must not be read).
    static func regularFile(_ fd: Int32, _ path: String) throws -> Int32 {
        guard let st = try? FileOps.fstat(fd), st.kind == .file else {
            close(fd)
            throw SyncError(.io, "\(path) is not a regular file")
        }
        return fd
    }

    /// The target of the symlink at the name (nil when it is not a readable link).
    public func readLink() -> String? { Self.readLink(directory, name) }

    /// The target of the symlink `name` in the directory open at `directory`.
    static func readLink(_ directory: Int32, _ name: String) -> String? {
        var buffer = [UInt8](repeating: 0, count: 4097)
        let n = buffer.withUnsafeMutableBytes { raw in
            name.withCString { readlinkat(directory, $0, raw.baseAddress!.assumingMemoryBound(to: CChar.self), 4096) }
        }
        guard n >= 0 else { return nil }
        return String(decoding: buffer[..<n], as: UTF8.self)
    }

    /// Creates a directory at the name.
    public func makeDirectory(mode: UInt32) -> Bool {
        name.withCString { mkdirat(directory, $0, mode_t(mode & 0o777)) } == 0
    }

    /// Creates a symlink `name -> target` (the link's own name; nothing is followed).
    public func makeSymlink(target: String, name: String) -> Bool {
        target.withCString { t in name.withCString { symlinkat(t, directory, $0) } } == 0
    }

    /// Removes the name (a file or link), or with `directory` an empty directory.
    public func remove(directory isDirectory: Bool = false, name: String? = nil) -> Bool {
        (name ?? self.name).withCString { unlinkat(directory, $0, isDirectory ? AT_REMOVEDIR : 0) } == 0
    }

    /// Renames `from` to `to`, both names in this directory (atomic; replaces `to`).
    public func rename(_ from: String, to: String) -> Bool {
        from.withCString { f in to.withCString { renameat(directory, f, directory, $0) } } == 0
    }

    /// Makes `to` a second name of the file `from`, both names in this directory (never
    /// following a link at `from`); fails with EEXIST when `to` exists.
    public func link(_ from: String, to: String) -> Bool {
        from.withCString { f in to.withCString { linkat(directory, f, directory, $0, 0) } } == 0
    }

    /// Sets the permission bits (never setuid, setgid or sticky) of the name, which must be a
    /// file or a directory: the name is opened without following a link (O_PATH, so no read
    /// permission is needed) and changed through that descriptor.
    public func setMode(_ mode: UInt32) throws {
        let fd = open(synckit_o_path())
        guard fd >= 0 else { throw SyncError(.io, "cannot open \(path) to change its permissions: \(FileOps.errorText())") }
        defer { close(fd) }
        let st = try FileOps.fstat(fd)
        guard st.kind == .file || st.kind == .directory else { throw SyncError(.io, "\(path) is not a file or a directory") }
        // fchmod does not take an O_PATH descriptor; the /proc link to it names exactly this
        // inode (the kernel resolves it to the open file, not to a path).
        if chmod("/proc/self/fd/\(fd)", mode_t(mode & 0o777)) != 0 {
            let plain = st.kind == .directory ? open(O_RDONLY | O_DIRECTORY) : open(O_RDONLY | O_NONBLOCK)
            guard plain >= 0 else { throw SyncError(.io, "cannot chmod \(path): \(FileOps.errorText())") }
            defer { close(plain) }
            guard fchmod(plain, mode_t(mode & 0o777)) == 0 else { throw SyncError(.io, "cannot chmod \(path): \(FileOps.errorText())") }
        }
    }

    /// Sets the modification time of the name, not following a link.
    public func setModificationTime(_ mtimeNs: Int64) throws {
        var times = FileOps.modificationTimes(mtimeNs)
        guard name.withCString({ utimensat(directory, $0, &times, AT_SYMLINK_NOFOLLOW) }) == 0 else {
            throw SyncError(.io, "cannot set the time of \(path): \(FileOps.errorText())")
        }
    }

    /// The birth time of the name (0 when the file system keeps none).
    public func birthTimeNs() -> Int64 {
        name.withCString { synckit_birth_time_ns_at(directory, $0) }
    }
}

extension RelativePath {
    /// The parent of a relative path string, split on the byte '/' (nil at the top level).
    static func parent(of path: String) -> String? {
        let bytes = Array(path.utf8)
        guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return nil }
        return String(decoding: bytes[..<slash], as: UTF8.self)
    }
}
