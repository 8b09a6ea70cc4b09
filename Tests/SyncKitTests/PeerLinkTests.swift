import Foundation
import NIOCore
import Testing
@testable import SyncKit

/// A channel whose peer never answers: it records what is written to it.
private final class SilentChannel: PeerChannel, @unchecked Sendable {
    let written = Locked<[[Frame]]>([])
    let remoteDescription = "silent"
    let inbound = AsyncThrowingStream<Frame, any Error> { _ in }
    func send(_ frame: Frame) async throws { written.withLock { $0.append([frame]) } }
    func send(contentsOf frames: [Frame]) async throws { written.withLock { $0.append(frames) } }
    func close() async {}
}

@Suite struct PeerLinkTests {
    fileprivate func link(_ channel: SilentChannel) -> PeerLink {
        PeerLink(id: TestIDs.b, name: "b", address: "silent", channel: channel, initiatedLocally: true, indexID: 1, requestBudget: 8 << 20, metrics: NodeMetrics(node: "test"))
    }

    /// A request the peer never answers fails once it is overdue, so the puller asks the next
    /// peer; one that is not yet overdue keeps waiting.
    @Test func anUnansweredBlockRequestFailsWhenOverdue() async throws {
        let channel = SilentChannel()
        let link = link(channel)
        let block = BlockRef(hash: Chunker.hash([1, 2, 3]), size: 3)
        let request = Task { try await link.requestBlock(block, path: "f", offset: 0) }
        while link.outstandingBytes == 0 { try await Task.sleep(for: .milliseconds(1)) }
        link.expireRequests(now: .now)
        #expect(link.outstandingBytes == 3)  // not overdue yet: still waiting
        link.expireRequests(now: .now + PeerLink.requestTimeout + .seconds(1))
        await #expect { try await request.value } throws: { ($0 as? SyncError)?.code == .blockUnavailable }
        #expect(link.outstandingBytes == 0)
    }

    /// Messages sent while the writer is busy go out together, in order, in one write.
    @Test func queuedMessagesGoOutInOrderInFewWrites() async throws {
        let channel = SilentChannel()
        let link = link(channel)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask { try await link.send(.close(reason: "\(i)")) }
            }
            try await group.waitForAll()
        }
        let writes = channel.written.withLock { $0 }
        #expect(writes.reduce(0) { $0 + $1.count } == 200)
        #expect(writes.count < 200)
        // Each caller's frame is written exactly once.
        let reasons = writes.flatMap { $0 }.compactMap { frame -> String? in
            if case .close(let reason)? = try? WireCodec.decode(frame) { return reason }
            return nil
        }
        #expect(Set(reasons).count == 200)
    }
}
