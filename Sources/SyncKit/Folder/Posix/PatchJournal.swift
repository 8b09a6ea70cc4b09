import Crypto
import Foundation
import Logging
import NIOCore

/// A redo journal for patching a large file in place.
///
/// Why: when 1 MiB changes in the middle of a 512 MiB file, the temp-file way (assemble a full
/// copy, fsync it, rename it over) reads, hashes and rewrites 511 unchanged MiB on every
/// receiver. Patching writes only the changed blocks into the existing file, but a crash half
/// way would leave a file that is neither version. So the changed blocks are first written to a
/// journal in the state directory and made durable; only then is the file touched. A restart
/// finds any journal left and replays it (writing the same bytes at the same offsets again is
/// harmless), so after a crash the file is the new version, never a mix.
///
/// Layout: a header (magic, path, the inode and sizes it applies to, the target's size, mode and
/// time, then each entry's offset, size and SHA-256), the header's own SHA-256, then the entries'
/// bytes in order. A journal whose header digest or any entry's hash does not check out was torn
/// by the crash before the file was touched, and is simply deleted.
struct PatchJournal: Equatable {
    struct Entry: Equatable {
        var offset: UInt64
        var size: UInt32
        var hash: BlockHash
    }

    static let magic = Array("SKPATCH1".utf8)

    var path: String
    /// The file this applies to: its inode and birth time (0 where the file system keeps
    /// none), and its size before and after the patch.
    var inode: UInt64
    var birthNs: Int64
    var oldSize: UInt64
    var newSize: UInt64
    var mode: UInt32
    var mtimeNs: Int64
    var entries: [Entry]

    /// Where the journal for `path` lives (one per path; a name that does not depend on the
    /// path's length or characters).
    static func location(for path: String, in directory: String) -> String {
        directory + "/patch-" + String(Chunker.hash(Array(path.utf8)).description.prefix(24)) + ".journal"
    }

    /// The header bytes, digest included; the entries' data follows at `header().count`.
    func header() -> [UInt8] {
        var b = ByteBuffer()
        b.writeBytes(Self.magic)
        WireCodec.writeString(path, to: &b)
        b.writeInteger(inode)
        b.writeInteger(birthNs)
        b.writeInteger(oldSize)
        b.writeInteger(newSize)
        b.writeInteger(mode)
        b.writeInteger(mtimeNs)
        b.writeInteger(UInt32(entries.count))
        for e in entries {
            b.writeInteger(e.offset)
            b.writeInteger(e.size)
            WireCodec.writeHash(e.hash, to: &b)
        }
        var bytes = Array(b.readableBytesView)
        bytes += Array(SHA256.hash(data: bytes))
        return bytes
    }

    /// Offsets of each entry's data within the journal file.
    func dataOffsets() -> [UInt64] {
        var at = UInt64(header().count)
        return entries.map { e in
            defer { at += UInt64(e.size) }
            return at
        }
    }

    /// Reads and checks a journal: nil when it is torn (bad digest, short, or an entry whose
    /// bytes do not match its hash).
    static func read(_ fd: Int32) -> PatchJournal? {
        guard let size = try? FileOps.fstat(fd).size, size > 0, size < 1 << 40 else { return nil }
        // The header is small next to the data: read at most its largest possible size first.
        let headerLimit = Int(min(size, 1 << 24))
        var head = [UInt8](repeating: 0, count: headerLimit)
        guard (try? head.withUnsafeMutableBytes({ try FileOps.pread(fd, into: $0, offset: 0) })) == headerLimit else { return nil }
        var r = WireCodec.Reader(ByteBuffer(bytes: head))
        guard let magic = try? r.bytes(magic.count), magic == Self.magic,
              let path = try? r.string(),
              let inode = try? r.integer(UInt64.self), let birth = try? r.integer(Int64.self), let oldSize = try? r.integer(UInt64.self),
              let newSize = try? r.integer(UInt64.self), let mode = try? r.integer(UInt32.self),
              let mtime = try? r.integer(Int64.self),
              let count = try? r.count(UInt32.self, minimumElementSize: 44)
        else { return nil }
        var entries = [Entry]()
        entries.reserveCapacity(count)
        for _ in 0..<count {
            guard let offset = try? r.integer(UInt64.self), let size = try? r.integer(UInt32.self), let hash = try? r.hash() else { return nil }
            entries.append(Entry(offset: offset, size: size, hash: hash))
        }
        let journal = PatchJournal(path: path, inode: inode, birthNs: birth, oldSize: oldSize, newSize: newSize, mode: mode, mtimeNs: mtime, entries: entries)
        let header = journal.header()
        guard header.count <= headerLimit, Array(head[..<header.count]) == header else { return nil }
        // Every entry's bytes must be there and match their hash.
        for (e, at) in zip(entries, journal.dataOffsets()) {
            guard let data = readBytes(fd, at: at, count: Int(e.size)), Chunker.hash(data) == e.hash else { return nil }
        }
        return journal
    }

    /// Writes the journal's entries into `target` (already open for writing), then sets its
    /// size, mode and time. The caller makes it durable.
    func apply(from journalFD: Int32, to target: Int32) throws {
        // A growing file takes its new size first, so that a crash part way leaves one of the
        // two sizes the replay accepts, never one in between that a write past the end made.
        if newSize > oldSize {
            guard ftruncate(target, off_t(newSize)) == 0 else { throw SyncError(.io, "cannot size \(path): \(FileOps.errorText())") }
        }
        for (e, at) in zip(entries, dataOffsets()) {
            guard let data = Self.readBytes(journalFD, at: at, count: Int(e.size)) else {
                throw SyncError(.io, "the patch journal of \(path) is short")
            }
            try data.withUnsafeBytes { try FileOps.pwrite(target, $0, offset: e.offset) }
        }
        guard ftruncate(target, off_t(newSize)) == 0 else { throw SyncError(.io, "cannot size \(path): \(FileOps.errorText())") }
        guard fchmod(target, mode_t(mode & 0o777)) == 0 else { throw SyncError(.io, "cannot chmod \(path)") }
        var times = FileOps.modificationTimes(mtimeNs)
        guard futimens(target, &times) == 0 else { throw SyncError(.io, "cannot set the time of \(path)") }
    }

    static func readBytes(_ fd: Int32, at offset: UInt64, count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { (try? FileOps.pread(fd, into: $0, offset: offset)) ?? -1 }
        return n == count ? bytes : nil
    }

    /// At start, before the first scan: finishes every patch a crash interrupted, and deletes
    /// torn journals (their file was never touched). A journal is replayed only onto the same
    /// file (same inode and birth time: a file created since may reuse the inode number) at one
    /// of the two sizes the patch goes between; anything else means the file was replaced
    /// meanwhile, and the journal no longer applies.
    static func replayAll(directory: String, root: FolderRoot, logger: Logger) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names where name.hasPrefix("patch-") && name.hasSuffix(".journal") {
            _ = replay(directory + "/" + name, root: root, logger: logger)
        }
    }

    /// Replays one journal (see `replayAll`) and deletes it. False when it could not be applied
    /// (the file cannot be opened or written): the journal is then kept, to be tried again.
    /// The file is reached through the folder's handle like every other write.
    static func replay(_ location: String, root: FolderRoot, logger: Logger) -> Bool {
        let fd = open(location, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return errno == ENOENT }
        defer { close(fd) }
        guard let journal = read(fd), let entry = try? root.entry(journal.path) else {
            logger.info("dropping a torn patch journal (its file was not touched)", metadata: ["journal": "\(location)"])
            unlink(location)
            return true
        }
        guard let st = try? entry.stat(), st.kind == .file, st.inode == journal.inode,
              entry.birthTimeNs() == journal.birthNs,
              st.size >= min(journal.oldSize, journal.newSize), st.size <= max(journal.oldSize, journal.newSize) else {
            logger.notice("a patch journal no longer matches its file; dropping it", metadata: ["sync.path": "\(journal.path)"])
            unlink(location)
            return true
        }
        let raw = entry.open(O_WRONLY | O_NONBLOCK)
        guard raw >= 0, let out = try? FolderEntry.regularFile(raw, journal.path) else {
            logger.error("cannot open a file to finish its patch; the journal is kept", metadata: ["sync.path": "\(journal.path)", "error": "\(FileOps.errorText())"])
            return false
        }
        defer { close(out) }
        do {
            try journal.apply(from: fd, to: out)
            guard fsync(out) == 0 else { throw SyncError(.io, "fsync failed: \(FileOps.errorText())") }
        } catch {
            logger.error("cannot replay a patch journal; it is kept", metadata: ["sync.path": "\(journal.path)", "error": "\(error)"])
            return false
        }
        unlink(location)
        logger.notice("finished a patch from its journal", metadata: ["sync.path": "\(journal.path)"])
        return true
    }
}
