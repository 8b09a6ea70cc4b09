import Foundation
import NIOCore
import Testing
@testable import SyncKit

/// The per-connection state machine, without any I/O: handshake, index batches, block-list
/// deltas, and block requests with a byte budget and deadlines.
@Suite struct PeerSessionTests {
    func session(_ c: UInt64 = 1, dialed: Bool = true) -> PeerSession {
        PeerSession(connection: ConnectionID(c), address: "test", dialed: dialed ? PeerEndpoint(host: "h", port: 1) : nil, nonce: ClusterKey.nonce(), now: .zero)
    }

    /// Sends `records` on `from` and returns the update as the other end decodes it.
    func transfer(_ records: [FileRecord], peerHas: [String: [BlockRef]] = [:], from: inout PeerSession) -> WireMessage.IndexUpdate {
        from.enqueue(records, peerHas: peerHas)
        let update = from.nextIndexBatch(indexID: 1) { _ in [] }!
        from.indexBatchSent()
        return update
    }

    /// Both ends prove the key; a wrong key, another cluster, or oneself are refused.
    @Test func theHandshakeProvesTheKeyBothWays() throws {
        let key = ClusterKey(secret: "k")
        var a = session(1), b = session(2, dialed: false)
        let helloA = a.ourHello(id: TestIDs.a, name: "a", clusterName: "c", port: 1, indexID: 7)
        let helloB = b.ourHello(id: TestIDs.b, name: "b", clusterName: "c", port: 2, indexID: 8)
        guard case .sendAuth(let authA) = a.handshake(helloB, me: TestIDs.a, clusterName: "c", key: key),
              case .sendAuth(let authB) = b.handshake(helloA, me: TestIDs.b, clusterName: "c", key: key) else { Issue.record("no auth"); return }
        #expect(a.handshake(authB, me: TestIDs.a, clusterName: "c", key: key) == .established)
        #expect(b.handshake(authA, me: TestIDs.b, clusterName: "c", key: key) == .established)
        #expect(a.peer == TestIDs.b && a.hello?.indexID == 8)

        var c = session(3)
        _ = c.handshake(helloB, me: TestIDs.c, clusterName: "c", key: ClusterKey(secret: "other"))
        if case .refuse = c.handshake(authB, me: TestIDs.c, clusterName: "c", key: ClusterKey(secret: "other")) {} else { Issue.record("a wrong key was accepted") }
        var d = session(4)
        if case .refuse = d.handshake(helloB, me: TestIDs.d, clusterName: "elsewhere", key: key) {} else { Issue.record("another cluster was accepted") }
        var e = session(5)
        #expect(e.handshake(helloA, me: TestIDs.a, clusterName: "c", key: key) == .isSelf)
        var f = session(6)
        if case .refuse = f.handshake(.ping, me: TestIDs.a, clusterName: "c", key: key) {} else { Issue.record("a ping before the handshake was accepted") }
    }

    /// One index update in flight at a time; a backlog is read a batch at a time, skips records
    /// that changed since (they are queued behind it), and ends with the caught-up marker.
    @Test func theIndexGoesOutInOrderOneBatchAtATime() {
        var s = session()
        var local = [String: FileRecord]()
        var keys = [SyncEngine.RecordKey]()
        for i in 0..<2500 {
            let r = fileRecord("f\(i)", [UInt8(i % 256)], by: TestIDs.a, sequence: UInt64(i + 1))
            local[r.path] = r
            keys.append(.init(path: r.path, sequence: r.sequence))
        }
        local["f5"]!.sequence = 9999  // changed since the request: not in the backlog's answer
        s.answerIndexRequest(keys)
        let read: ([SyncEngine.RecordKey]) -> [FileRecord] = { keys in keys.compactMap { k in local[k.path].flatMap { $0.sequence == k.sequence ? $0 : nil } } }
        let first = s.nextIndexBatch(indexID: 1, read: read)!
        #expect(s.nextIndexBatch(indexID: 1, read: read) == nil, "one in flight")
        s.indexBatchSent()
        var sent = first.records
        var caughtUp = first.caughtUp
        while let next = s.nextIndexBatch(indexID: 1, read: read) {
            s.indexBatchSent()
            sent += next.records
            caughtUp = next.caughtUp
        }
        #expect(caughtUp)
        #expect(sent.count == 2499)
        #expect(sent.map(\.sequence) == sent.map(\.sequence).sorted())
        #expect(!sent.contains { $0.path == "f5" })
    }

    /// A large file's record goes in full first, then as a small delta against the list either
    /// end sent last: here the edit travels back the other way, against what it received.
    @Test func blockListsTravelAsDeltasAgainstEitherDirectionsLastList() throws {
        var a = session(1), b = session(2)
        var content = randomBytes(8 << 20, seed: 21)
        let first = fileRecord("big.bin", content, by: TestIDs.a)
        #expect(first.blocks.count >= WireMessage.BlockDelta.minimumBlocks)
        let full = transfer([first], from: &a)
        #expect(full.deltas.isEmpty)
        #expect(try b.deltaDecode(full, own: RecentLists()).records == [first])

        content.replaceSubrange(4_000_000..<4_100_000, with: randomBytes(100_000, seed: 22))
        let second = fileRecord("big.bin", content, by: TestIDs.b, version: .init([TestIDs.a: 1, TestIDs.b: 1]), sequence: 2)
        let delta = transfer([second], from: &b)
        #expect(delta.deltas.count == 1)
        #expect(delta.records[0].blocks.count < 10)
        #expect(try a.deltaDecode(delta, own: RecentLists()).records == [second])

        // A base that neither end holds is a protocol error, never a wrong list.
        var forged = delta
        forged.deltas[0]?.baseDigest &+= 1
        #expect(throws: SyncError.self) { try a.deltaDecode(forged, own: RecentLists()) }
    }

    /// Both ends send a new list at once: each names the base it knew, and the other still
    /// holds it (two lists are kept per direction), so crossing updates never break the link.
    @Test func crossingDeltasBothFindTheirBase() throws {
        var a = session(1), b = session(2)
        var content = randomBytes(8 << 20, seed: 31)
        let first = fileRecord("big.bin", content, by: TestIDs.a)
        _ = try b.deltaDecode(transfer([first], from: &a), own: RecentLists())
        content.replaceSubrange(1_000_000..<1_050_000, with: randomBytes(50_000, seed: 32))
        let second = fileRecord("big.bin", content, by: TestIDs.c, version: .init([TestIDs.a: 1, TestIDs.c: 1]), sequence: 2)
        let fromA = transfer([second], from: &a)
        let fromB = transfer([second], from: &b)
        #expect(fromA.deltas.count == 1 && fromB.deltas.count == 1)
        #expect(try b.deltaDecode(fromA, own: RecentLists()).records[0].blocks == second.blocks)
        #expect(try a.deltaDecode(fromB, own: RecentLists()).records[0].blocks == second.blocks)
    }

    /// On a new connection the base can be the receiver's own list, as it announced it.
    @Test func aNewConnectionUsesTheReceiversOwnListAsBase() throws {
        var a = session(1), b = session(2)
        var content = randomBytes(8 << 20, seed: 41)
        let theirs = fileRecord("big.bin", content, by: TestIDs.b)
        content.replaceSubrange(2_000_000..<2_050_000, with: randomBytes(50_000, seed: 42))
        let mine = fileRecord("big.bin", content, by: TestIDs.a, version: .init([TestIDs.a: 1, TestIDs.b: 1]), sequence: 3)
        let update = transfer([mine], peerHas: ["big.bin": theirs.blocks], from: &a)
        #expect(update.deltas.count == 1)
        var own = RecentLists()
        own.remember(RecentLists.base(theirs), for: "big.bin")
        #expect(try b.deltaDecode(update, own: own).records[0].blocks == mine.blocks)
    }

    /// Requests go out while they fit the byte budget, the rest wait in order; an answer frees
    /// room; an overdue request fails (its job asks another peer); a closing connection hands
    /// every waiting fetch back.
    @Test func blockRequestsKeepToTheBudgetAndExpire() {
        var s = session()
        let hash = Chunker.hash([1, 2, 3])
        let timeout = Duration.seconds(30)
        let m1 = s.request(FetchID(1), hash: hash, size: 600, path: "f", offset: 0, budget: 1000, now: .zero, timeout: timeout)
        let m2 = s.request(FetchID(2), hash: hash, size: 600, path: "f", offset: 600, budget: 1000, now: .zero, timeout: timeout)
        #expect(m1 != nil && m2 == nil, "the second waits for room")
        #expect(s.outstandingBytes == 600)
        guard case .blockRequest(let r1)? = m1 else { Issue.record("not a request"); return }
        let (fetch, admitted) = s.answered(r1.id, budget: 1000, now: .seconds(1), timeout: timeout)
        #expect(fetch == FetchID(1))
        #expect(admitted.count == 1, "the waiting one goes now")
        #expect(s.expire(now: .seconds(10), budget: 1000, timeout: timeout).expired.isEmpty, "not overdue yet")
        #expect(s.expire(now: .seconds(32), budget: 1000, timeout: timeout).expired == [FetchID(2)])
        #expect(s.outstandingBytes == 0)
        _ = s.request(FetchID(3), hash: hash, size: 10, path: "f", offset: 0, budget: 1000, now: .zero, timeout: timeout)
        #expect(s.drainFetches() == [FetchID(3)])
    }

    /// Serving is bounded, and the shell may report several answers at once.
    @Test func servesAreCountedAndReleasedInBatches() {
        var s = session()
        var admitted = (0..<4).map { _ in s.beginServe(limit: 3) }
        #expect(admitted == [true, true, true, false], "a fourth request in flight is over the limit")
        s.endServe(2)
        #expect(s.serving == 1)
        admitted = (0..<3).map { _ in s.beginServe(limit: 3) }
        #expect(admitted == [true, true, false])
        s.endServe(5)
        #expect(s.serving == 0, "never below zero")
    }
}
