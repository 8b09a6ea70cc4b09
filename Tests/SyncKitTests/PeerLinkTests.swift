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

    /// Waits for the next index update `link` writes to `channel`.
    fileprivate func nextUpdate(_ channel: SilentChannel, after count: Int) async throws -> WireMessage.IndexUpdate {
        while channel.written.withLock({ $0.count }) <= count { try await Task.sleep(for: .milliseconds(1)) }
        let frame = channel.written.withLock { $0[count][0] }
        guard case .indexUpdate(let u) = try WireCodec.decode(frame) else { throw SyncError(.protocolViolation, "not an index update") }
        return u
    }

    /// A large file's record goes in full first, then as a small delta against the list either
    /// end sent last: here the edit travels back the other way, against what it received.
    @Test func blockListsTravelAsDeltasAgainstEitherDirectionsLastList() async throws {
        let (channelA, channelB) = (SilentChannel(), SilentChannel())
        let (a, b) = (link(channelA), link(channelB))
        var content = randomBytes(8 << 20, seed: 21)
        let first = fileRecord("big.bin", content, by: TestIDs.a)
        #expect(first.blocks.count >= WireMessage.BlockDelta.minimumBlocks)

        a.enqueueIndex([first])
        let full = try await nextUpdate(channelA, after: 0)
        #expect(full.deltas.isEmpty)
        #expect(try b.deltaDecode(full, local: { _ in [] }).records == [first])

        // B's edit goes back to A: a delta against the list B received from A.
        content.replaceSubrange(4_000_000..<4_100_000, with: randomBytes(100_000, seed: 22))
        let second = fileRecord("big.bin", content, by: TestIDs.b, version: .init([TestIDs.a: 1, TestIDs.b: 1]), sequence: 2)
        b.enqueueIndex([second])
        let delta = try await nextUpdate(channelB, after: 0)
        #expect(delta.deltas.count == 1)
        #expect(delta.records[0].blocks.count < 10)
        #expect(try a.deltaDecode(delta, local: { _ in [] }).records == [second])

        // A base that neither end holds is a protocol error, never a wrong list.
        var forged = delta
        forged.deltas[0]?.baseDigest &+= 1
        #expect(throws: SyncError.self) { try a.deltaDecode(forged, local: { _ in [] }) }
    }

    /// Both ends send a new list at once: each names the base it knew, and the other still
    /// holds it (two lists are kept per direction), so crossing updates never break the link.
    @Test func crossingDeltasBothFindTheirBase() async throws {
        let (channelA, channelB) = (SilentChannel(), SilentChannel())
        let (a, b) = (link(channelA), link(channelB))
        var content = randomBytes(8 << 20, seed: 31)
        let first = fileRecord("big.bin", content, by: TestIDs.a)
        a.enqueueIndex([first])
        _ = try b.deltaDecode(try await nextUpdate(channelA, after: 0), local: { _ in [] })

        content.replaceSubrange(1_000_000..<1_050_000, with: randomBytes(50_000, seed: 32))
        let second = fileRecord("big.bin", content, by: TestIDs.c, version: .init([TestIDs.a: 1, TestIDs.c: 1]), sequence: 2)
        a.enqueueIndex([second])
        b.enqueueIndex([second])
        let fromA = try await nextUpdate(channelA, after: 1)
        let fromB = try await nextUpdate(channelB, after: 0)
        #expect(fromA.deltas.count == 1 && fromB.deltas.count == 1)
        #expect(try b.deltaDecode(fromA, local: { _ in [] }).records[0].blocks == second.blocks)
        #expect(try a.deltaDecode(fromB, local: { _ in [] }).records[0].blocks == second.blocks)
    }

    /// On a new connection the base can be the receiver's own list, as it announced it.
    @Test func aNewConnectionUsesTheReceiversOwnListAsBase() async throws {
        let (channelA, channelB) = (SilentChannel(), SilentChannel())
        let (a, b) = (link(channelA), link(channelB))
        var content = randomBytes(8 << 20, seed: 41)
        let theirs = fileRecord("big.bin", content, by: TestIDs.b)
        content.replaceSubrange(2_000_000..<2_050_000, with: randomBytes(50_000, seed: 42))
        let mine = fileRecord("big.bin", content, by: TestIDs.a, version: .init([TestIDs.a: 1, TestIDs.b: 1]), sequence: 3)
        a.enqueueIndex([mine], peerHas: ["big.bin": theirs.blocks])
        let update = try await nextUpdate(channelA, after: 0)
        #expect(update.deltas.count == 1)
        #expect(try b.deltaDecode(update, local: { $0 == "big.bin" ? [theirs.blocks] : [] }).records[0].blocks == mine.blocks)
    }
}
