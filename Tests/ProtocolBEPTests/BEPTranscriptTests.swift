import Crypto
import Foundation
import SyncKit
import Testing
@testable import ProtocolBEP

/// Decodes what a real Syncthing (Debian's 1.19.2) sent to a BEP client, recorded by
/// tests/bep/capture.py: its Hello, its ClusterConfig and Index (LZ4-compressed, as Syncthing
/// sends metadata by default) and its Response to one block request. This checks our framing,
/// decompression and messages against Syncthing's own bytes, not against our encoder, and our
/// Syncthing block lists against the ones Syncthing computed from the same files.
@Suite struct BEPTranscriptTests {
    struct Manifest: Decodable {
        struct File: Decodable { var name: String; var size: Int }
        struct Request: Decodable { var id: Int32; var name: String; var offset: Int; var size: Int }
        var syncthing: String
        var syncthingDeviceID: String
        var ourDeviceID: String
        var folder: String
        var files: [File]
        var request: Request
    }

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// The contents capture.py wrote for a file: SHA-256 of "name:counter", concatenated.
    static func content(_ name: String, size: Int) -> [UInt8] {
        var out: [UInt8] = []
        var counter = 0
        while out.count < size {
            out += SHA256.hash(data: Array("\(name):\(counter)".utf8))
            counter += 1
        }
        return Array(out.prefix(size))
    }

    static func load() throws -> (Manifest, [BEPStreamDecoder.Item]) {
        let manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: fixtures.appendingPathComponent("syncthing-stream.json")))
        let stream = try [UInt8](Data(contentsOf: fixtures.appendingPathComponent("syncthing-stream.bin")))
        var decoder = BEPStreamDecoder()
        decoder.append(stream)
        var items: [BEPStreamDecoder.Item] = []
        while let item = try decoder.next() { items.append(item) }
        #expect(decoder.bufferedByteCount == 0, "the transcript ends on a message boundary")
        return (manifest, items)
    }

    @Test func syncthingsHelloAndClusterConfigDecode() throws {
        let (manifest, items) = try Self.load()
        guard case .hello(let hello) = items.first else { Issue.record("no hello"); return }
        #expect(hello.clientName == "syncthing")
        #expect(manifest.syncthing.contains(hello.clientVersion.replacingOccurrences(of: "v", with: "")))

        let configs = items.compactMap { if case .message(.clusterConfig(let c)) = $0 { c } else { nil } }
        #expect(configs.count == 1)
        let folder = try #require(configs.first?.folders.first)
        #expect(folder.id == manifest.folder)
        // The devices it shares the folder with are named by their 32-byte IDs: ours and its own.
        let ids = Set(folder.devices.map { NodeID(bytes: [UInt8]($0.id)) })
        #expect(ids == [NodeID(manifest.ourDeviceID)!, NodeID(manifest.syncthingDeviceID)!])
        let own = try #require(folder.devices.first { NodeID(bytes: [UInt8]($0.id)) == NodeID(manifest.syncthingDeviceID)! })
        #expect(own.indexID != 0 && own.maxSequence > 0)
    }

    @Test func syncthingsIndexMatchesTheFilesAndOurBlockLists() throws {
        let (manifest, items) = try Self.load()
        let indexes = items.compactMap { if case .message(.index(let i)) = $0 { i } else { nil } }
        let index = try #require(indexes.first)
        #expect(index.folder == manifest.folder)
        let files = Dictionary(uniqueKeysWithValues: index.files.map { ($0.name, $0) })
        let sender = NodeID(manifest.syncthingDeviceID)!
        for expected in manifest.files {
            let file = try #require(files[expected.name], "\(expected.name) in Syncthing's index")
            #expect(file.type == .file && !file.deleted && !file.invalid)
            #expect(file.size == Int64(expected.size))
            #expect(file.modifiedBy == sender.shortID, "modified_by is the short ID of the device that made it")
            #expect(file.version.counters.map(\.id) == [sender.shortID])
            #expect(file.blockSize == Int32(SyncthingBlocks.blockSize(forFileSize: file.size)))
            // The blocks Syncthing announced are exactly the ones we compute from the bytes:
            // offsets, sizes, SHA-256 and the Adler-32 weak hashes of 1.x.
            #expect(file.blocks == SyncthingBlocks.blocks(of: Self.content(expected.name, size: expected.size)),
                    "\(expected.name): Syncthing's block list and ours")
        }
        // Names are NFC on the wire; the directory of the non-ASCII file is there too.
        #expect(files["sub"]?.type == .directory)
        #expect(files.keys.contains("sub/gr\u{00FC}\u{00DF}e.txt"))
        // 1.x leaves last_sequence unset in an Index (2.x fills it in); the sequences are there.
        #expect(index.lastSequence == 0 || index.lastSequence == index.files.map(\.sequence).max())
        #expect(Set(index.files.map(\.sequence)).count == index.files.count)
    }

    @Test func syncthingAnswersABlockRequestWithTheBlock() throws {
        let (manifest, items) = try Self.load()
        let responses = items.compactMap { if case .message(.response(let r)) = $0 { r } else { nil } }
        let response = try #require(responses.first)
        #expect(response.id == manifest.request.id)
        #expect(response.code == .noError)
        let file = Self.content(manifest.request.name, size: manifest.files.first { $0.name == manifest.request.name }!.size)
        #expect([UInt8](response.data) == Array(file[manifest.request.offset..<(manifest.request.offset + manifest.request.size)]))
    }

    @Test func reencodingSyncthingsMessagesGivesMessagesThatDecodeTheSame() throws {
        // Our encoder's output for Syncthing's own messages reads back to the same messages,
        // compressed exactly when Syncthing compressed them.
        let (_, items) = try Self.load()
        let stream = try [UInt8](Data(contentsOf: Self.fixtures.appendingPathComponent("syncthing-stream.bin")))
        var theirs: [Bep_MessageCompression] = []
        var at = 6 + (Int(stream[4]) << 8 | Int(stream[5]))
        while at < stream.count {
            let headerLength = Int(stream[at]) << 8 | Int(stream[at + 1])
            theirs.append(try Bep_Header(serializedBytes: Array(stream[(at + 2)..<(at + 2 + headerLength)])).compression)
            let p = at + 2 + headerLength
            at = p + 4 + (Int(stream[p]) << 24 | Int(stream[p + 1]) << 16 | Int(stream[p + 2]) << 8 | Int(stream[p + 3]))
        }
        var ours: [Bep_MessageCompression] = []
        for case .message(let m) in items {
            let frame = try BEPFraming.encode(m)
            let headerLength = Int(frame[0]) << 8 | Int(frame[1])
            ours.append(try Bep_Header(serializedBytes: Array(frame[2..<(2 + headerLength)])).compression)
            var decoder = BEPStreamDecoder()
            decoder.append(try BEPFraming.encodeHello(Bep_Hello()) + frame)
            _ = try decoder.next()
            #expect(try decoder.next() == .message(m))
        }
        #expect(ours == theirs)
        #expect(theirs.contains(.lz4) && theirs.contains(.none), "the transcript has both kinds")
    }
}
