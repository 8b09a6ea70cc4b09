import Foundation
import Logging
import SyncKit
import SyncKitTesting
import Testing

extension Integration {
    @Suite(.serialized) struct NodeLifecycleTests {
        /// A restart reads the index and trusts the quick check: nothing unchanged is hashed again,
        /// and a file deleted while the node was down is recorded as deleted.
        @Test func aRestartDoesNotRehashUnchangedFiles() async throws {
            try await withTestCluster(nodes: 1, transport: .memory, seed: { c in
                for i in 0..<50 { c.write(0, "f\(i).bin", bytes(20_000, seed: UInt64(i))) }
            }) { c in
                #expect(await c.node(0).statistics.filesHashed == 50)
                await c.stop(0)
                c.remove(0, "f7.bin")
                c.write(0, "f8.bin", "changed while down")
                let node = try await c.start(0)
                let stats = await node.statistics
                #expect(stats.filesHashed == 1, "only the changed file is read again")
                let records = await node.localRecords
                #expect(records["f7.bin"]?.deleted == true)
                #expect(records["f8.bin"]?.size == 18)
                #expect(records["f9.bin"]?.deleted == false)
            }
        }

        /// With the index kept outside the folder, a folder without its marker (an unmounted disk)
        /// must stop the node instead of being read as "every file deleted".
        @Test func aFolderWithoutItsMarkerIsRefused() throws {
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("synckit-marker-\(UUID().uuidString.prefix(8))").path
            defer { try? FileManager.default.removeItem(atPath: root) }
            try FileManager.default.createDirectory(atPath: root + "/folder", withIntermediateDirectories: true)
            var config = SyncConfiguration(folder: root + "/folder")
            config.stateDirectory = root + "/state"
            let net = InMemoryNetwork()
            func make() throws -> SyncNode {
                try SyncNode(configuration: config, discovery: InMemoryDiscoveryBus().discovery(), transport: net.transport(), policy: NewestWinsPolicy(), logger: Logger(label: "t"))
            }
            _ = try make()
            // The disk "is unmounted": the mount point is empty.
            try FileManager.default.removeItem(atPath: root + "/folder/.synckit")
            #expect { try make() } throws: { ($0 as? SyncError)?.code == .folderMarkerMissing }
            // A folder that does not exist at all is refused too.
            config.folder = root + "/nope"
            #expect { try make() } throws: { ($0 as? SyncError)?.code == .folderMissing }
        }

        /// A node joining late pulls from every peer that has the content, not just one.
        @Test func aNewNodePullsFromSeveralPeersAtOnce() async throws {
            try await withTestCluster(nodes: 4, transport: ScenarioTests.transport, seed: { c in
                c.write(0, "big.bin", bytes(24 << 20, seed: 9))
            }, start: false) { c in
                for i in 0..<3 { try await c.start(i) }
                try await c.waitUntilConverged([0, 1, 2], timeout: .seconds(60))
                c.injector.resetCounters()
                try await c.start(3)
                try await c.waitUntilConverged(timeout: .seconds(60))
                let served = (0..<3).map { c.bytesSent($0) }
                #expect(served.filter { $0 > 1 << 20 }.count >= 2, "blocks came from several peers: \(served)")
                report("late joiner", "24 MiB served by the three peers as \(served) bytes")
            }
        }
    }
}
