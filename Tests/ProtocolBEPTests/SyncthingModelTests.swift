import Crypto
import Foundation
import SyncKit
import Testing
@testable import ProtocolBEP

@Suite struct SyncthingModelTests {
    @Test func blockSizeIsSyncthingsChoiceAtEveryBoundary() {
        let kib = Int64(1024)
        #expect(SyncthingBlocks.blockSize(forFileSize: 0) == 128 << 10)
        #expect(SyncthingBlocks.blockSize(forFileSize: 2000 * 128 * kib - 1) == 128 << 10)
        #expect(SyncthingBlocks.blockSize(forFileSize: 2000 * 128 * kib) == 256 << 10)
        #expect(SyncthingBlocks.blockSize(forFileSize: 2000 * 256 * kib) == 512 << 10)
        #expect(SyncthingBlocks.blockSize(forFileSize: 2000 * 8192 * kib - 1) == 8 << 20)
        #expect(SyncthingBlocks.blockSize(forFileSize: 2000 * 8192 * kib) == 16 << 20)
        #expect(SyncthingBlocks.blockSize(forFileSize: 1 << 50) == 16 << 20)
    }

    @Test func blocksAreFixedSizeSHA256WhateverPiecesTheyAreFedIn() {
        let data = (0..<(300 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let blocks = SyncthingBlocks.blocks(of: data)
        #expect(blocks.map(\.offset) == [0, 131_072, 262_144])
        #expect(blocks.map(\.size) == [131_072, 131_072, 45_056])
        for b in blocks {
            let slice = data[Int(b.offset)..<(Int(b.offset) + Int(b.size))]
            #expect(b.hash == Data(SHA256.hash(data: Array(slice))))
        }
        // The same list from uneven pieces, as the scanner's reads would feed it.
        var hasher = SyncthingBlocks.Hasher(fileSize: Int64(data.count))
        var i = 0
        var piece = 1
        while i < data.count {
            let end = min(i + piece, data.count)
            data[i..<end].withUnsafeBytes { hasher.update($0) }
            i = end
            piece = piece * 3 + 1
        }
        #expect(hasher.finish() == blocks)
        // A file of exactly one block has no empty second block.
        #expect(SyncthingBlocks.blocks(of: data.prefix(131_072)).count == 1)
    }

    @Test func anEmptyFileIsOneBlockOfSizeZero() {
        let blocks = SyncthingBlocks.blocks(of: [UInt8]())
        #expect(blocks.count == 1)
        #expect(blocks[0].size == 0 && blocks[0].offset == 0)
        let hex = blocks[0].hash.map { String(format: "%02x", $0) }.joined()
        #expect(hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func shortIDIsTheFirstEightBytesAndItsTextTheFirstGroup() throws {
        let bytes = (0..<32).map { UInt8($0 * 7 + 3) }
        let id = NodeID(bytes: bytes)
        #expect(id.bytes == bytes)
        #expect(id.shortID == 0x030A_1118_1F26_2D34)
        #expect(id.short == String(id.description.prefix(7)))
        #expect(id.short.count == 7)
        // Syncthing's ShortID.String(): base32 of the 8 bytes, first 7 characters. The first 35
        // bits of the 8 bytes are the first 35 bits of the ID, so the two agree.
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        var bits = 0, value = 0
        var text = ""
        for b in bytes.prefix(8) {
            value = value << 8 | Int(b); bits += 8
            while bits >= 5 { text.append(alphabet[(value >> (bits - 5)) & 31]); bits -= 5 }
        }
        #expect(String(text.prefix(7)) == id.short)
    }

    @Test func conflictCopiesAreNamedAsSyncthingNamesThem() {
        let when = Date(timeIntervalSince1970: 1_796_199_300)  // 2026-12-02 08:15:00 UTC
        let utc = TimeZone(identifier: "UTC")!
        #expect(syncthingConflictName("dir/report.txt", winnerShortID: "ABCDEFG", at: when, timeZone: utc)
                == "dir/report.sync-conflict-20261202-081500-ABCDEFG.txt")
        #expect(syncthingConflictName("notes", winnerShortID: "ABCDEFG", at: when, timeZone: utc)
                == "notes.sync-conflict-20261202-081500-ABCDEFG")
        #expect(syncthingConflictName("a.b/c", winnerShortID: "ABCDEFG", at: when, timeZone: utc)
                == "a.b/c.sync-conflict-20261202-081500-ABCDEFG")
        // Go's filepath.Ext takes a leading dot as the extension.
        #expect(syncthingConflictName(".bashrc", winnerShortID: "ABCDEFG", at: when, timeZone: utc)
                == ".sync-conflict-20261202-081500-ABCDEFG.bashrc")
        #expect(syncthingConflictName("x.tar.gz", winnerShortID: "Z", at: when, timeZone: TimeZone(secondsFromGMT: 3600)!)
                == "x.tar.sync-conflict-20261202-091500-Z.gz")
        // Go works on bytes: a "." or "/" followed by a combining mark still counts.
        #expect(syncthingConflictName("a.\u{301}b", winnerShortID: "Z", at: when, timeZone: utc)
                == "a.sync-conflict-20261202-081500-Z.\u{301}b")
        #expect(syncthingConflictName("d.x/\u{301}y", winnerShortID: "Z", at: when, timeZone: utc)
                == "d.x/\u{301}y.sync-conflict-20261202-081500-Z")
    }
}

@Suite struct Adler32Tests {
    @Test func matchesRFC1950sValuesAcrossTheModuloRuns() {
        func adler(_ bytes: [UInt8]) -> UInt32 {
            var a = Adler32()
            bytes.withUnsafeBytes { a.update($0) }
            return a.value
        }
        #expect(adler([]) == 1)
        #expect(adler(Array("Wikipedia".utf8)) == 0x11E6_0398)
        // 100,000 bytes of 0xFF: the sums would overflow 32 bits without the runs of 5,552.
        // The value is zlib's: python3 -c 'import zlib; print(hex(zlib.adler32(b"\xff" * 100000)))'
        #expect(adler([UInt8](repeating: 0xFF, count: 100_000)) == 0x149A_302C)
    }
}
