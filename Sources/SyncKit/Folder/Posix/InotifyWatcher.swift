import Foundation
import Logging

/// Watches the folder recursively with Linux inotify(7) and reports which paths changed.
///
/// inotify watches single directories, so every directory gets its own watch: at start, and as
/// soon as a new one appears (created or moved in). A directory moved away loses its watches,
/// which would otherwise keep reporting under the old name. When the kernel queue overflows
/// (`IN_Q_OVERFLOW`) events were lost, and the node answers with a full rescan. The node
/// debounces what this reports; the periodic full rescan covers anything inotify cannot see
/// (for example changes made while a directory's watch was being added).
///
/// A dedicated thread blocks in poll(2) on the inotify descriptor, so no task of the cooperative
/// pool ever blocks on it.
public final class InotifyWatcher: @unchecked Sendable {
    /// What the watcher reports (see `FolderChange`).
    public typealias Event = FolderChange

    let root: FolderRoot
    let ignore: IgnoreRules
    let logger: Logger
    private let lock = NSLock()
    private var fd: Int32 = -1
    private var directories: [Int32: String] = [:]  // watch descriptor -> relative dir ("" = root)
    private var stopped = false
    private var continuation: AsyncStream<Event>.Continuation?

    /// (No IN_DONT_FOLLOW: the path watched is the `/proc/self/fd` link to a directory that was
    /// opened beneath the folder, and following that link is the point.)
    static let mask: UInt32 = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF) | UInt32(IN_ONLYDIR)

    public init(root: FolderRoot, ignore: IgnoreRules, logger: Logger) {
        self.root = root
        self.ignore = ignore
        self.logger = logger
    }

    /// Starts watching; the stream finishes after `stop()`.
    public func start() throws -> AsyncStream<Event> {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw SyncError(.io, "inotify is not available: \(FileOps.errorText())") }
        let (stream, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(4096))
        lock.withLock {
            self.fd = fd
            self.continuation = continuation
        }
        addRecursive("")
        let thread = Thread { [self] in self.loop(fd) }
        thread.name = "synckit-inotify"
        thread.start()
        return stream
    }

    public func stop() {
        lock.withLock { stopped = true }
    }

    /// Number of directories watched (for status and tests).
    public var watchCount: Int { lock.withLock { directories.count } }

    /// Adds watches for `dir` and every directory below it.
    ///
    /// Each directory is opened beneath the folder first (no symlink in any component), and
    /// the watch is added through `/proc/self/fd/N`, which names exactly the directory that was
    /// opened: a directory swapped for a link to somewhere else in the meantime is not watched.
    func addRecursive(_ dir: String) {
        guard let dfd = try? root.openDirectory(dir.isEmpty ? nil : dir) else { return }
        defer { close(dfd) }
        let wd = lock.withLock { () -> Int32 in
            guard fd >= 0 else { return -1 }
            return inotify_add_watch(fd, "/proc/self/fd/\(dfd)", Self.mask)
        }
        guard wd >= 0 else {
            if errno == ENOSPC {
                logger.error("inotify watch limit reached; raise fs.inotify.max_user_watches. Changes will be found by the periodic rescan.")
            }
            return
        }
        lock.withLock { directories[wd] = dir }
        guard let entries = try? FolderRoot.list(dfd) else { return }
        var subdirs = [String]()
        for entry in entries {
            guard entry.type == DT_DIR || entry.type == DT_UNKNOWN else { continue }
            guard let name = String(validating: entry.name, as: UTF8.self) else { continue }
            let path = dir.isEmpty ? name : dir + "/" + name
            // Judged by the name the index knows (NFC); watched by the disk's spelling.
            let wire = path.precomposedStringWithCanonicalMapping
            if ignore.isIgnored(wire, isDirectory: true) || !PathSafety.isSafe(wire) { continue }
            if entry.type == DT_UNKNOWN, (try? FolderEntry.stat(dfd, name, path))??.kind != .directory { continue }
            subdirs.append(path)
        }
        for sub in subdirs { addRecursive(sub) }
    }

    /// Drops the watches of `dir` and everything below it (it was moved away or deleted).
    func removeRecursive(_ dir: String) {
        lock.withLock {
            let prefix = dir + "/"
            for (wd, path) in directories where path == dir || path.hasPrefix(prefix) {
                inotify_rm_watch(fd, wd)
                directories[wd] = nil
            }
        }
    }

    private static let tempSuffix = Array(PathSafety.tempSuffix.utf8).map { CChar(bitPattern: $0) }

    private func loop(_ fd: Int32) {
        let size = 64 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer {
            buffer.deallocate()
            lock.withLock {
                close(fd)
                self.fd = -1
                continuation?.finish()
            }
        }
        while !lock.withLock({ stopped }) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 200)
            if ready <= 0 { continue }
            let n = read(fd, buffer, size)
            if n <= 0 { continue }
            var changed = Set<String>()
            var overflow = false
            var offset = 0
            while offset + 16 <= n {
                let base = buffer + offset
                let wd = base.loadUnaligned(as: Int32.self)
                let mask = base.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                let length = Int(base.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
                var name: String?
                if length > 0 {
                    let raw = (base + 16).assumingMemoryBound(to: CChar.self)
                    // Our own temp files come and go by the thousand during a pull (created,
                    // written, chmodded, renamed): dropped here, before any string is built.
                    let count = strlen(raw)
                    if count >= Self.tempSuffix.count,
                       memcmp(raw + count - Self.tempSuffix.count, Self.tempSuffix, Self.tempSuffix.count) == 0 {
                        offset += 16 + length
                        continue
                    }
                    name = String(validatingCString: raw)
                }
                offset += 16 + length
                if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                    overflow = true
                    continue
                }
                guard let dir = lock.withLock({ directories[wd] }) else { continue }
                if mask & UInt32(IN_IGNORED) != 0 {
                    lock.withLock { _ = directories.removeValue(forKey: wd) }
                    continue
                }
                guard let name else {
                    // An event on the watched directory itself (deleted or moved): its parent
                    // will report it too; look at it anyway.
                    if !dir.isEmpty { changed.insert(dir) }
                    continue
                }
                let path = dir.isEmpty ? name : dir + "/" + name
                let isDir = mask & UInt32(IN_ISDIR) != 0
                if ignore.isIgnored(path, isDirectory: isDir) { continue }
                if isDir && mask & UInt32(IN_MOVED_FROM | IN_DELETE) != 0 { removeRecursive(path) }
                if isDir && mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 { addRecursive(path) }
                changed.insert(path)
            }
            let event: Event? = overflow ? .overflow : (changed.isEmpty ? nil : .changed(changed))
            if let event { _ = lock.withLock { continuation?.yield(event) } }
        }
    }
}
