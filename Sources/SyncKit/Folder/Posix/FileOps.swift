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

    /// `futimens`/`utimensat` times that leave the access time alone and set the modification time.
    static func modificationTimes(_ mtimeNs: Int64) -> [timespec] {
        [timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2 /* UTIME_OMIT */), timespec(mtimeNs)]
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
        // Permission bits only: setuid, setgid and sticky are neither synced nor applied, so a
        // file that has them locally still matches the record its peers hold.
        mode = UInt32(st.st_mode) & 0o777
        inode = UInt64(st.st_ino)
    }
}
