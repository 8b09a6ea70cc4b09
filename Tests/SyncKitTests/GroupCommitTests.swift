import Foundation
import Testing
@testable import SyncKit

@Suite struct GroupCommitTests {
    /// While one flush runs, every writer that arrives waits for the next one, and that next
    /// flush takes all of them at once (the point of group commit).
    @Test func writersArrivingDuringAFlushShareTheNextOne() async throws {
        let firstStarted = DispatchSemaphore(value: 0)
        let releaseFirst = DispatchSemaphore(value: 0)
        let batches = Locked<[Int]>([])
        let committer = GroupCommitter { items in
            let n = batches.withLock { $0.append(items.count); return $0.count }
            if n == 1 {
                firstStarted.signal()
                releaseFirst.wait()
            }
            return items.map { _ in 0 }
        }
        async let first = committer.makeDurable(.file(100))
        await withCheckedContinuation { c in DispatchQueue.global().async { firstStarted.wait(); c.resume() } }
        // Ten writers queue up while the first flush is held.
        let others = Task {
            await withTaskGroup(of: Int32.self) { group in
                for i in 0..<10 { group.addTask { await committer.makeDurable(.file(Int32(200 + i))) } }
                return await group.reduce(into: [Int32]()) { $0.append($1) }
            }
        }
        while committer.counts.items + pendingCount(committer) < 11 { try await Task.sleep(for: .milliseconds(1)) }
        releaseFirst.signal()
        #expect(await first == 0)
        #expect(await others.value == [Int32](repeating: 0, count: 10))
        #expect(batches.withLock { $0 } == [1, 10])
        #expect(committer.counts.flushes == 2)
    }

    /// The real flush: a lone file gets fsync, a batch gets syncfs; both report success on a
    /// writable file system, and a bad descriptor is reported to its own writer only.
    @Test func realFlushReportsPerItem() throws {
        let dir = makeTempDirectory()
        let fds = (0..<3).map { open(dir + "/f\($0)", O_RDWR | O_CREAT, 0o600) }
        defer { fds.forEach { close($0) } }
        #expect(GroupCommitter.flushToDisk([.file(fds[0])]) == [0])
        let dirFD = open(dir, O_RDONLY | O_DIRECTORY)
        defer { close(dirFD) }
        #expect(GroupCommitter.flushToDisk(fds.map { .file($0) } + [.directory(dirFD)]) == [0, 0, 0, 0])
        let mixed = GroupCommitter.flushToDisk([.file(fds[0]), .file(-1), .directory(-1)])
        #expect(mixed[0] == 0)
        #expect(mixed[1] == EBADF)
        #expect(mixed[2] == EBADF)
    }
}

/// Writers queued but not yet flushed.
private func pendingCount(_ c: GroupCommitter) -> Int { c.pendingForTests }
