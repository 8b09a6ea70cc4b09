import Crypto
import Foundation
import Testing
import SyncKitTesting
@testable import SyncKit

@Suite struct VersionVectorTests {
    /// Random vectors over four nodes, from a seed.
    static func vectors(_ count: Int, seed: UInt64) -> [VersionVector] {
        let bytes = randomBytes(count * 32, seed: seed)
        let ids = [TestIDs.a, TestIDs.b, TestIDs.c, TestIDs.d]
        return (0..<count).map { i in
            VersionVector(Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, UInt64(bytes[i * 4 + $0] % 4)) }))
        }
    }

    @Test func comparisonLaws() {
        let vs = Self.vectors(200, seed: 11)
        for a in vs {
            #expect(a.compare(to: a) == .equal)
            #expect(a.bumped(by: TestIDs.a).compare(to: a) == .newer)
            for b in vs.prefix(40) {
                let ab = a.compare(to: b), ba = b.compare(to: a)
                switch ab {
                case .equal: #expect(ba == .equal && a == b)
                case .newer: #expect(ba == .older)
                case .older: #expect(ba == .newer)
                case .concurrent: #expect(ba == .concurrent)
                }
                let m = a.merged(with: b)
                #expect([.newer, .equal].contains(m.compare(to: a)))
                #expect([.newer, .equal].contains(m.compare(to: b)))
                #expect(m == b.merged(with: a))
            }
        }
    }

    /// The sorted-array representation agrees with the textbook definition on dictionaries
    /// (compare, merge, bump), for random vectors over four nodes.
    @Test func sortedEntriesAgreeWithTheDictionaryDefinition() {
        var rng = SystemRandomNumberGenerator()
        let nodes = [TestIDs.d, TestIDs.b, TestIDs.a, TestIDs.c]
        func random() -> [NodeID: UInt64] {
            var d = [NodeID: UInt64]()
            for n in nodes where Bool.random(using: &rng) { d[n] = UInt64.random(in: 0...3, using: &rng) }
            return d
        }
        func reference(_ a: [NodeID: UInt64], _ b: [NodeID: UInt64]) -> VersionVector.Ordering {
            let ge = nodes.allSatisfy { a[$0, default: 0] >= b[$0, default: 0] }
            let le = nodes.allSatisfy { a[$0, default: 0] <= b[$0, default: 0] }
            return ge && le ? .equal : ge ? .newer : le ? .older : .concurrent
        }
        for _ in 0..<2000 {
            let (a, b) = (random(), random())
            let (va, vb) = (VersionVector(a), VersionVector(b))
            #expect(va.compare(to: vb) == reference(a, b))
            let merged = va.merged(with: vb)
            for n in nodes { #expect(merged[n] == max(a[n, default: 0], b[n, default: 0])) }
            #expect(merged.entries.map(\.node) == merged.entries.map(\.node).sorted())
            let bumped = va.bumped(by: nodes[0], atLeast: 2)
            #expect(bumped[nodes[0]] == max(a[nodes[0], default: 0] + 1, 2))
            #expect(bumped.compare(to: va) == .newer)
            #expect(bumped.entries.map(\.node) == bumped.entries.map(\.node).sorted())
            #expect((va == vb) == (a.filter { $0.value > 0 } == b.filter { $0.value > 0 }))
        }
    }

    @Test func concurrentEditsAreConcurrent() {
        let base = VersionVector([TestIDs.a: 1])
        #expect(base.bumped(by: TestIDs.a).compare(to: base.bumped(by: TestIDs.b)) == .concurrent)
    }

    /// Vectors count by short ID (Syncthing's): a version made by a full ID and the same version
    /// as a Syncthing peer reports it (short IDs only) are equal, and compare equal whichever
    /// side made them, for real-looking IDs whose last 24 bytes are not zero.
    @Test func countersAreKeyedByShortIDAsSyncthingKeysThem() throws {
        let x = NodeID(bytes: randomBytes(32, seed: 5)), y = NodeID(bytes: randomBytes(32, seed: 6))
        let ours = VersionVector([x: 3]).bumped(by: y, atLeast: 1_700_000_000)
        let fromSyncthing = VersionVector(shortCounters: [(id: y.w0, value: 1_700_000_000), (id: x.w0, value: 3)])
        #expect(ours == fromSyncthing && ours.compare(to: fromSyncthing) == .equal)
        #expect(fromSyncthing[x] == 3 && fromSyncthing[y] == 1_700_000_000, "looked up by the full ID")
        #expect(ours.entries.allSatisfy { $0.node.w1 == 0 && $0.node.w2 == 0 && $0.node.w3 == 0 })
        // Bumping by the full ID continues the counter a Syncthing peer reported.
        #expect(fromSyncthing.bumped(by: x).compare(to: ours) == .newer)
        #expect(fromSyncthing.bumped(by: x)[x] == 4)
        // An ID with the same first 8 bytes is the same counter (as in Syncthing); the larger
        // value is kept when two are given.
        let twin = NodeID(bytes: x.bytes.prefix(8) + randomBytes(24, seed: 7))
        #expect(VersionVector([x: 2, twin: 5]) == VersionVector([x: 5]))
        #expect(VersionVector([twin: 2]).compare(to: VersionVector([x: 2])) == .equal)
        // The text of a counter is the node's short text, the same for full and short forms.
        #expect(VersionVector([x: 1]).description == "{\(x.short):1}")
        #expect(NodeID(shortID: x.w0).short == x.short)
    }
}

@Suite struct NodeIDTests {
    @Test func textFormRoundTrips() {
        let id = NodeID(certificateDER: Array("a certificate".utf8))
        #expect(id.description.count == 63)
        #expect(NodeID(id.description) == id)
        #expect(id.short.count == 7)
        #expect(NodeID("not base32!") == nil)
    }

    /// The identity is made once, kept with a private key only its owner may read, and the same
    /// at every load; a node that had only the old key keeps that key.
    @Test func identityPersistsAcrossLoads() throws {
        let dir = makeTempDirectory() + "/state"
        let first = try NodeIdentity.loadOrCreate(in: dir)
        let second = try NodeIdentity.loadOrCreate(in: dir)
        #expect(first.id == second.id && first.certificateDER == second.certificateDER)
        let attrs = try FileManager.default.attributesOfItem(atPath: dir + "/key.pem")
        #expect((attrs[.posixPermissions] as? Int) == 0o600)

        let old = makeTempDirectory()
        let key = Curve25519.Signing.PrivateKey()
        FileManager.default.createFile(atPath: old + "/identity.key", contents: key.rawRepresentation)
        let migrated = try NodeIdentity.loadOrCreate(in: old)
        let pem = try String(contentsOfFile: old + "/key.pem", encoding: .utf8)
        #expect(pem.contains("PRIVATE KEY"))
        #expect(migrated.id == NodeID(certificateDER: migrated.certificateDER))
    }
}

@Suite struct PathSafetyTests {
    /// Each is refused, with the rule that catches it. The Unicode cases are the class of the
    /// reported escape: a '/' that starts a grapheme cluster with the mark after it is not the
    /// `Character` "/", but it is the byte the kernel splits on.
    @Test(arguments: [
        ("/etc/passwd", "absolute"), ("../x", "'..'"), ("a/../../x", "'..'"), ("a/./b", "'.'"), ("", "empty path"),
        ("a//b", "empty path component"), ("a/", "empty path component"), ("a/\u{0}b", "NUL"),
        (".synckit/index.db", "state directory"), (".synckit", "state directory"), ("a/.f.synckit-tmp", "temp file"),
        (String(repeating: "n", count: 256), "longer than 255"), (String(repeating: "a/", count: 2100) + "a", "longer than 4096"),
        ("../\u{301}escape.txt", "'..'"), ("a/\u{301}b", "'/' joined"),
        ("link/\u{200D}name", "'/' joined"), ("a/\u{FE0F}b", "'/' joined"), ("a/\u{0308}b", "'/' joined"),
        ("a\u{0600}/b", "'/' joined"), (".synckit/\u{301}x", "state directory"),
        ("e\u{301}.txt", "NFC"), ("dir/A\u{30A}", "NFC"), ("\u{212B}", "NFC"),
    ])
    func refuses(_ path: String, _ reason: String) {
        let problem = PathSafety.problem(with: path)
        #expect(problem?.contains(reason) == true, "\(path.debugDescription): \(problem ?? "accepted")")
        #expect(throws: SyncError.self) { try RelativePath(path) }
    }

    @Test(arguments: ["a", "a/b/c.txt", ".hidden", "dir/.synckit", "é/ü.txt", "x..y", "...", "a/...", "\u{301}start", "..\u{301}/x", "日本/語.txt", "emoji 👨‍👩‍👧.txt"])
    func accepts(_ path: String) {
        #expect(PathSafety.isSafe(path), "\(PathSafety.problem(with: path) ?? "")")
    }

    /// Bytes that are not UTF-8 are refused as such.
    @Test func invalidUTF8IsRefused() {
        let bytes: [UInt8] = [0x61, 0x2F, 0xC3, 0x28]
        let problem = bytes.withUnsafeBytes { PathSafety.problem(withBytes: $0, string: nil) }
        #expect(problem == "not valid UTF-8")
    }

    /// What makes every String operation of SyncKit safe on accepted paths: their components
    /// as Characters are their components as bytes.
    @Test func acceptedPathsSplitTheSameAsStringsAndAsBytes() {
        var rng = SplitMix(seed: 7)
        let alphabet: [String] = ["a", "/", ".", "\u{301}", "\u{200D}", "é", "e", "\u{0600}", "\u{FE0F}", "👩", "\u{1F3FB}", " "]
        var accepted = 0
        for _ in 0..<20_000 {
            let path = (0..<Int.random(in: 1...8, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }.joined()
            guard PathSafety.isSafe(path) else { continue }
            accepted += 1
            let byBytes = Array(path.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map { Array($0) }
            let byCharacters = path.split(separator: "/" as Character, omittingEmptySubsequences: false).map { Array($0.utf8) }
            #expect(byBytes == byCharacters, "\(path.debugDescription)")
            #expect(!byBytes.contains([]) && !byBytes.contains([46]) && !byBytes.contains([46, 46]))
        }
        #expect(accepted > 1000)
    }
}

@Suite struct IgnoreRulesTests {
    let rules = IgnoreRules(text: """
        # comment
        *.tmp
        /build/
        logs/**/*.log
        !keep.tmp
        node_modules
        cache?
        [Tt]humbs.db
        """)

    @Test(arguments: [
        ("a.tmp", false, true), ("dir/b.tmp", false, true), ("keep.tmp", false, false),
        ("build", true, true), ("build/x.o", false, true), ("src/build", true, false),
        ("logs/a/b/c.log", false, true), ("logs/c.log", false, true), ("other/c.log", false, false),
        ("x/node_modules/y.js", false, true), ("cache1", false, true), ("cache12", false, false),
        ("Thumbs.db", false, true), ("thumbs.db", false, true), ("readme.md", false, false),
        (".synckit/index.db", false, true), ("d/.f.synckit-tmp", false, true),
    ])
    func matches(_ path: String, _ isDirectory: Bool, _ ignored: Bool) {
        #expect(rules.isIgnored(path, isDirectory: isDirectory) == ignored, "\(path)")
    }
}

@Suite struct ConflictNamingTests {
    @Test func namesCarryTheLosersTimeAndTheWinnersNode() {
        var loser = fileRecord("docs/report.txt", [1], by: TestIDs.b)
        loser.mtimeNs = 1_764_000_000 * 1_000_000_000  // 2025-11-24 16:00:00 UTC
        let winner = fileRecord("docs/report.txt", [2], by: TestIDs.c)
        #expect(ConflictNaming.copyPath(for: "docs/report.txt", loser: loser, winner: winner) == "docs/report.sync-conflict-20251124-160000-\(TestIDs.c.short).txt")
        #expect(ConflictNaming.copyPath(for: "Makefile", loser: loser, winner: winner) == "Makefile.sync-conflict-20251124-160000-\(TestIDs.c.short)")
        #expect(ConflictNaming.copyPath(for: ".bashrc", loser: loser, winner: winner) == ".bashrc.sync-conflict-20251124-160000-\(TestIDs.c.short)")
    }

    /// The dashboard settles a conflict from the copy's name alone: every name `copyPath` makes
    /// gives back its original, and names of other shapes give nothing.
    @Test func aCopysNameGivesBackItsOriginal() {
        var loser = fileRecord("x", [1], by: TestIDs.b)
        loser.mtimeNs = 1_764_000_000 * 1_000_000_000
        let winner = fileRecord("x", [2], by: TestIDs.c)
        for original in ["docs/report.txt", "Makefile", ".bashrc", "a/b/c.tar.gz", "dir.d/name", "caf\u{E9} \u{2615}.txt"] {
            let copy = ConflictNaming.copyPath(for: original, loser: loser, winner: winner)
            #expect(ConflictNaming.parse(copy) == .init(original: original, stamp: "20251124-160000", winner: TestIDs.c.short), "\(copy)")
        }
        for notACopy in ["report.txt", "README.sync-conflict-case.txt", ".sync-conflict-20251124-160000-ABCDEFG.txt",
                         "a.sync-conflict-2025112-160000-ABCDEFG.txt", "a.sync-conflict-20251124-160000-.txt", "a.sync-conflict-20251124-16000x-ABCDEFG"] {
            #expect(ConflictNaming.parse(notACopy) == nil, "\(notACopy)")
        }
    }
}

/// Node IDs read and print as Syncthing's device IDs do (lib/protocol deviceid.go, luhn.go),
/// with the vectors of Syncthing's own tests.
@Suite struct NodeIDFormatTests {
    static let raw: [UInt8] = {
        let hex = Array("7f7c8723ecca5b4d22061c4981b34c34d865ec376be1eb74330873c9a6f9b205".utf8)
        return stride(from: 0, to: hex.count, by: 2).map { UInt8(String(decoding: hex[$0...$0 + 1], as: UTF8.self), radix: 16)! }
    }()
    static let formatted = "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2"

    @Test func printsAsSyncthing() {
        #expect(NodeID(bytes: Self.raw).description == Self.formatted)
        #expect(NodeID(bytes: Self.raw).short == "P56IOI7")
        #expect(Luhn32.check(Array("AB725E4GHIQPL3ZFGT".utf8)) == UInt8(ascii: "G"))
    }

    /// Every form Syncthing's tests accept parses to the same ID.
    @Test(arguments: [
        "P56IOI7MZJNU2IQGDREYDM2MGTMGL3BXNPQ6W5BTBBZ4TJXZWICQ",
        "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2",
        "P56IOI7 MZJNU2I QGDREYD M2MGTMG L3BXNPQ 6W5BTBB Z4TJXZW ICQ",
        "P56IOI7 MZJNU2Y IQGDREY DM2MGTI MGL3BXN PQ6W5BM TBBZ4TJ XZWICQ2",
        "P56IOI7MZJNU2YIQGDREYDM2MGTIMGL3BXNPQ6W5BMTBBZ4TJXZWICQ2",
        "p56ioi7mzjnu2iqgdreydm2mgtmgl3bxnpq6w5btbbz4tjxzwicq",
        "p56ioi7mzjnu2yiqgdreydm2mgtimgl3bxnpq6w5bmtbbz4tjxzwicq2",
        "P561017MZJNU2YIQGDREYDM2MGTIMGL3BXNPQ6W5BMT88Z4TJXZWICQ2",
        "p561017mzjnu2yiqgdreydm2mgtimgl3bxnpq6w5bmt88z4tjxzwicq2",
    ])
    func parsesEverySyncthingForm(_ text: String) {
        #expect(NodeID(text) == NodeID(bytes: Self.raw), "\(text)")
    }

    /// A typo is caught by the check characters.
    @Test func aTypoIsCaught() {
        var typo = Array(Self.formatted.utf8)
        typo[3] = typo[3] == UInt8(ascii: "A") ? UInt8(ascii: "C") : UInt8(ascii: "A")
        #expect(NodeID(String(decoding: typo, as: UTF8.self)) == nil)
        #expect(NodeID("P56IOI7-MZJNU2Y") == nil)
    }

    /// A fresh identity's ID is the SHA-256 of its certificate's DER bytes and reads back from its text.
    @Test func theIDOfACertificateIsItsHash() throws {
        let identity = try NodeIdentity.make()
        #expect(identity.id == NodeID(certificateDER: identity.certificateDER))
        #expect(NodeID(identity.id.description) == identity.id)
    }
}

@Suite struct BlockMapTests {
    func record(_ path: String, blocks: [BlockHash], deleted: Bool = false) -> FileRecord {
        FileRecord(path: path, kind: .file, size: UInt64(blocks.count * 100), deleted: deleted, modifiedBy: TestIDs.a,
                   blocks: blocks.map { BlockRef(hash: $0, size: 100) })
    }

    func hash(_ n: UInt64) -> BlockHash { BlockHash(w0: n, w1: 0, w2: 0, w3: 0) }

    /// One location per hash and one hash per file are kept inline; the map still finds every
    /// copy (up to four), drops a path's old blocks when the path changes or goes, and keeps
    /// the others' locations of a shared block.
    @Test func findsEveryCopyAndForgetsWhatAPathNoLongerHolds() {
        var map = BlockMap()
        map.update(record("a", blocks: [hash(1)]))
        #expect(map.locations(of: hash(1)) == [.init(path: "a", offset: 0, size: 100)])
        map.update(record("b", blocks: [hash(2), hash(1), hash(3)]))
        #expect(map.locations(of: hash(1)).map(\.path) == ["a", "b"])
        #expect(map.locations(of: hash(1))[1].offset == 100)
        for p in ["c", "d", "e"] { map.update(record(p, blocks: [hash(1)])) }
        #expect(map.locations(of: hash(1)).count == 4, "a few copies are enough")

        // b changes: its old blocks go, a's copy of the shared one stays.
        map.update(record("b", blocks: [hash(4)]))
        #expect(map.locations(of: hash(2)).isEmpty && map.locations(of: hash(3)).isEmpty)
        #expect(map.locations(of: hash(1)).map(\.path) == ["a", "c", "d"])
        #expect(map.locations(of: hash(4)).map(\.path) == ["b"])

        // Deleted, or no longer a file: nothing of it is found.
        map.update(record("a", blocks: [hash(1)], deleted: true))
        map.update(FileRecord(path: "c", kind: .directory, modifiedBy: TestIDs.a))
        #expect(map.locations(of: hash(1)).map(\.path) == ["d"])
        map.update(record("d", blocks: [], deleted: true))
        #expect(map.locations(of: hash(1)).isEmpty)
        map.update(record("b", blocks: [hash(4), hash(4)]))
        #expect(map.locations(of: hash(4)).map(\.offset) == [0, 100])
    }
}
