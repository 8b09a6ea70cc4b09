import CSyncKitShims
import Foundation

/// Group commit: many writers, each waiting for its item to be made durable, share one flush.
///
/// Each writer hands its item over and waits; one thread flushes whatever has accumulated while
/// the previous flush ran, so the batch size follows the load by itself: alone, an item is
/// flushed on its own (no added latency); under a burst, dozens share one flush. The blocking
/// calls run on this committer's own dispatch queue, not on the cooperative pool that runs the
/// node's actor and tasks (two threads on a two-core machine).
///
/// Two uses: pulled files and directories (`GroupCommitter`, below), and the index's intent log
/// (a pull's target recorded before the pull changes the disk; see `IndexStore.saveIntents`).
final class GroupCommit<Item: Sendable>: Sendable {
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
    private let queue: DispatchQueue
    private let flush: Flush

    init(label: String = "synckit.group-commit", flush: @escaping Flush) {
        self.queue = DispatchQueue(label: label)
        self.flush = flush
    }

    /// Flushes done and items made durable so far (for status and tests).
    var counts: (flushes: Int, items: Int) { state.withLock { ($0.flushes, $0.items) } }

    /// Writers waiting for the next flush (tests wait on it instead of sleeping blindly).
    var pendingForTests: Int { state.withLock { $0.pending.count } }

    /// Returns once `item` is durable: 0, or the errno of the failed flush.
    func submit(_ item: Item) async -> Int32 {
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
}

/// What the file committer makes durable: an open file, or an open directory whose entries
/// changed (the caller keeps the descriptor open until `makeDurable` returns).
enum DurableItem: Sendable {
    case file(Int32)
    case directory(Int32)

    var descriptor: Int32 {
        switch self {
        case .file(let fd), .directory(let fd): fd
        }
    }
}

/// Group commit of pulled files: makes many files (and the directories their renames changed)
/// durable with one flush instead of one fsync each.
///
/// Why: an fsync costs a disk flush (a few hundred microseconds to milliseconds on a VM disk, and
/// a CPU-heavy exit to the hypervisor), and 20,000 small pulled files meant 40,000 of them (file
/// data, then the directory after the rename). Alone, a file gets its plain fsync; under a
/// burst, dozens share one `syncfs(2)`, which writes back and commits the whole file system
/// holding them. Durability is unchanged: a writer resumes only after its data is on disk, and
/// only then renames the file into place.
typealias GroupCommitter = GroupCommit<DurableItem>

extension GroupCommit where Item == DurableItem {
    convenience init() { self.init(label: "synckit.group-commit", flush: Self.flushToDisk) }

    /// Returns once `item` is on disk: 0, or the errno of the failed flush.
    func makeDurable(_ item: Item) async -> Int32 { await submit(item) }

    /// The real flush: one item gets its own fsync; a batch gets one syncfs per file system it
    /// touches (a folder may hold mount points). If syncfs reports an error, each item is
    /// fsynced on its own so that the error reaches the writer it belongs to.
    static func flushToDisk(_ items: [Item]) -> [Int32] {
        if items.count == 1 { return [syncOne(items[0])] }
        var byDevice: [UInt64: [Int]] = [:]
        var results = [Int32](repeating: 0, count: items.count)
        for (i, item) in items.enumerated() {
            let fd = item.descriptor
            var st = stat()
            guard fstat(fd, &st) == 0 else { results[i] = errno; continue }
            byDevice[UInt64(st.st_dev), default: []].append(i)
        }
        for indices in byDevice.values {
            if synckit_syncfs(items[indices[0]].descriptor) != 0 {
                for i in indices { results[i] = syncOne(items[i]) }
            }
        }
        return results
    }

    private static func syncOne(_ item: Item) -> Int32 {
        fsync(item.descriptor) == 0 ? 0 : errno
    }
}
