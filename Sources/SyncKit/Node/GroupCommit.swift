import CSyncKitShims
import Foundation

/// Group commit of pulled files: makes many files (and the directories their renames changed)
/// durable with one flush instead of one fsync each.
///
/// Why: an fsync costs a disk flush (a few hundred microseconds to milliseconds on a VM disk, and
/// a CPU-heavy exit to the hypervisor), and 20,000 small pulled files meant 40,000 of them (file
/// data, then the directory after the rename). Here each writer hands its file descriptor over
/// and waits; one thread flushes whatever has accumulated while the previous flush ran, so the
/// batch size follows the load by itself: alone, a file gets its plain fsync (no added
/// latency); under a burst, dozens share one `syncfs(2)`, which writes back and commits the
/// whole file system holding them. Durability is unchanged: a writer resumes only after its data
/// is on disk, and only then renames the file into place.
///
/// The blocking calls run on this committer's own dispatch queue, not on the cooperative pool
/// that runs the node's actor and tasks (two threads on a two-core machine).
final class GroupCommitter: Sendable {
    /// What is to be made durable: an open file, or a directory whose entries changed.
    enum Item: Sendable {
        case file(Int32)
        /// An open directory (the caller keeps it open until `makeDurable` returns).
        case directory(Int32)
    }

    /// Flushes a batch; returns 0 or an errno per item, in order. Replaceable for tests.
    typealias Flush = @Sendable (_ items: [Item]) -> [Int32]

    private struct Waiter {
        let item: Item
        let done: CheckedContinuation<Int32, Never>
    }

    private struct State {
        var pending: [Waiter] = []
        var flushing = false
        var flushes = 0
        var items = 0
    }

    private let state = Locked(State())
    private let queue = DispatchQueue(label: "synckit.group-commit")
    private let flush: Flush

    init(flush: @escaping Flush = GroupCommitter.flushToDisk) {
        self.flush = flush
    }

    /// Flushes done and items made durable so far (for status and tests).
    var counts: (flushes: Int, items: Int) { state.withLock { ($0.flushes, $0.items) } }

    /// Writers waiting for the next flush (tests wait on it instead of sleeping blindly).
    var pendingForTests: Int { state.withLock { $0.pending.count } }

    /// Returns once `item` is durable: 0, or the errno of the failed flush.
    func makeDurable(_ item: Item) async -> Int32 {
        await withCheckedContinuation { continuation in
            let start = state.withLock { s -> Bool in
                s.pending.append(Waiter(item: item, done: continuation))
                guard !s.flushing else { return false }
                s.flushing = true
                return true
            }
            if start { queue.async { self.drain() } }
        }
    }

    /// Takes everything that queued up, flushes it, and repeats until nothing is left.
    private func drain() {
        while true {
            let batch = state.withLock { s -> [Waiter] in
                let b = s.pending
                s.pending.removeAll()
                if b.isEmpty { s.flushing = false } else { s.flushes += 1; s.items += b.count }
                return b
            }
            if batch.isEmpty { return }
            let results = flush(batch.map(\.item))
            for (waiter, result) in zip(batch, results) { waiter.done.resume(returning: result) }
        }
    }

    /// The real flush: one item gets its own fsync; a batch gets one syncfs per file system it
    /// touches (a folder may hold mount points). If syncfs reports an error, each item is
    /// fsynced on its own so that the error reaches the writer it belongs to.
    static func flushToDisk(_ items: [Item]) -> [Int32] {
        if items.count == 1 { return [syncOne(items[0])] }
        var byDevice: [UInt64: [Int]] = [:]
        var results = [Int32](repeating: 0, count: items.count)
        for (i, item) in items.enumerated() {
            let fd: Int32
            switch item {
            case .file(let f), .directory(let f): fd = f
            }
            var st = stat()
            guard fstat(fd, &st) == 0 else { results[i] = errno; continue }
            byDevice[UInt64(st.st_dev), default: []].append(i)
        }
        for indices in byDevice.values {
            let fd: Int32
            switch items[indices[0]] {
            case .file(let f), .directory(let f): fd = f
            }
            if synckit_syncfs(fd) != 0 {
                for i in indices { results[i] = syncOne(items[i]) }
            }
        }
        return results
    }

    private static func syncOne(_ item: Item) -> Int32 {
        switch item {
        case .file(let fd), .directory(let fd):
            return fsync(fd) == 0 ? 0 : errno
        }
    }
}
