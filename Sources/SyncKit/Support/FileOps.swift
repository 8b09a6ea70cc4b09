import Foundation

/// Thin, explicit wrappers over the POSIX calls SyncKit needs, with errors as `SyncError`.
///
/// Foundation's FileManager follows symlinks in places, hides inodes and nanosecond times, and
/// has no fsync; sync needs all of those, so the file-system layer talks to libc directly.
public enum FileOps {
    /// What `lstat` says about a path (never following a final symlink).
    public struct Stat: Sendable, Equatable {
        public var kind: FileRecord.Kind?  // nil: something we do not sync (socket, device ...)
        public var size: UInt64
        public var mtimeNs: Int64
        public var mode: UInt32
        public var inode: UInt64
    }

    static func errorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    /// `lstat(path)`, or nil when nothing is there. Throws for other errors.
    public static func lstat(_ path: String) throws -> Stat? {
        var st = stat()
        if Glibc.lstat(path, &st) != 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw SyncError(.io, "cannot stat \(path): \(errorText())")
        }
        return Stat(st)
    }

    /// `fstat(fd)`.
    public static func fstat(_ fd: Int32) throws -> Stat {
        var st = stat()
        guard Glibc.fstat(fd, &st) == 0 else { throw SyncError(.io, "fstat failed: \(errorText())") }
        return Stat(st)
    }

    /// The target of the symlink at `path`, or nil when it is not a readable link.
    public static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlink(path, &buffer, 4096)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The name of a directory entry, or nil when it is not valid UTF-8.
    static func name(of entry: UnsafeMutablePointer<dirent>) -> String? {
        withUnsafePointer(to: entry.pointee.d_name) { ptr in
            ptr.withMemoryRebound(to: CChar.self, capacity: 256) { String(validatingCString: $0) }
        }
    }

    /// `futimens`/`utimensat` times that leave the access time alone and set the modification time.
    static func modificationTimes(_ mtimeNs: Int64) -> [timespec] {
        [timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2 /* UTIME_OMIT */), timespec(mtimeNs)]
    }

    /// Opens a file for reading without following a final symlink.
    public static func openForReading(_ path: String) throws -> Int32 {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw SyncError(.io, "cannot open \(path): \(errorText())") }
        return fd
    }

    /// Reads exactly `count` bytes at `offset` (short only at end of file).
    public static func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: UInt64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let r = Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if r < 0 {
                if errno == EINTR { continue }
                throw SyncError(.io, "read failed: \(errorText())")
            }
            if r == 0 { break }
            done += r
        }
        return done
    }

    /// Writes all of `buffer` at `offset`.
    public static func pwrite(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let r = Glibc.pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if r < 0 {
                if errno == EINTR { continue }
                throw SyncError(.io, "write failed: \(errorText())")
            }
            done += r
        }
    }

    /// Creates the parent directories of `relative` under `root`, refusing any parent that is a
    /// symlink or not a directory: a remote path must never write outside the folder through a
    /// link that exists here.
    public static func prepareParents(root: String, relative: String) throws {
        var current = root
        let parts = relative.split(separator: "/")
        for part in parts.dropLast() {
            current += "/" + part
            if let st = try lstat(current) {
                guard st.kind == .directory else {
                    throw SyncError(.unsafePath, "\(current) is not a real directory (a symlink or a file); refusing to write through it")
                }
            } else if mkdir(current, 0o755) != 0 {
                guard errno == EEXIST else { throw SyncError(.io, "cannot create \(current): \(errorText())") }
                // Created by someone else meanwhile: it must still be a real directory.
                guard try lstat(current)?.kind == .directory else {
                    throw SyncError(.unsafePath, "\(current) appeared as a symlink or a file; refusing to write through it")
                }
            }
        }
    }

    /// Sets permission bits and modification time without following a final symlink.
    public static func setMetadata(_ path: String, mode: UInt32?, mtimeNs: Int64?) throws {
        if let mode, chmod(path, mode_t(mode & 0o777)) != 0 {
            throw SyncError(.io, "cannot chmod \(path): \(errorText())")
        }
        if let mtimeNs {
            var times = modificationTimes(mtimeNs)
            if utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW) != 0 {
                throw SyncError(.io, "cannot set the time of \(path): \(errorText())")
            }
        }
    }
}

extension timespec {
    init(_ ns: Int64) {
        var sec = ns / 1_000_000_000
        var rem = ns % 1_000_000_000
        if rem < 0 {
            rem += 1_000_000_000
            sec -= 1
        }
        self.init(tv_sec: Int(sec), tv_nsec: Int(rem))
    }
}

extension FileOps.Stat {
    init(_ st: stat) {
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .file
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        default: kind = nil
        }
        size = UInt64(st.st_size)
        // Saturating: a file dated past 2262 (or before 1678) must not crash the scan.
        let (seconds, overflow) = Int64(st.st_mtim.tv_sec).multipliedReportingOverflow(by: 1_000_000_000)
        mtimeNs = overflow ? (st.st_mtim.tv_sec < 0 ? Int64.min : Int64.max) : seconds.addingReportingOverflow(Int64(st.st_mtim.tv_nsec)).partialValue
        mode = UInt32(st.st_mode) & 0o7777
        inode = UInt64(st.st_ino)
    }
}
