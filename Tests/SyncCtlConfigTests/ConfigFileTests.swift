import Testing
@testable import SyncCtlConfig

/// The `--config FILE` loader: what a file becomes, and the shapes it refuses instead of
/// trapping, overflowing the stack or hanging (found by fuzzing, Fuzz/Corpus/config).
@Suite struct ConfigFileTests {
    @Test func flagsFollowTheKeys() throws {
        let flags = try ConfigFile.flags(fromText: """
            dir: /srv/share
            port: 22000
            peers: [10.0.0.2:22000, nas.local:22000]
            no-watch: true
            no-conflict-copies: false
            """, path: "c.yaml")
        #expect(flags == ["--dir", "/srv/share", "--no-watch", "--peer", "10.0.0.2:22000", "--peer", "nas.local:22000", "--port", "22000"])
        #expect(try ConfigFile.flags(fromText: #"{"port": 1, "name": "n"}"#, path: "c.json") == ["--name", "n", "--port", "1"])
        // Aliases are fine within bounds, also as keys when they stand for plain values.
        #expect(try ConfigFile.flags(fromText: "&k dir: /x\nname: *k\n", path: "c.yaml") == ["--dir", "/x", "--name", "dir"])
        #expect(try ConfigFile.flags(fromText: "name: &k dir\n*k : /y\n", path: "c.yaml") == ["--dir", "/y", "--name", "dir"])
    }

    @Test func refusesWhatIsNotAMapOfKnownFlags() {
        #expect(throws: ConfigFile.Problem.self) { try ConfigFile.flags(fromText: "bogus: 1", path: "c.yaml") }
        #expect(throws: ConfigFile.Problem.self) { try ConfigFile.flags(fromText: "- dir", path: "c.yaml") }
        #expect(throws: ConfigFile.Problem.self) { try ConfigFile.flags(fromText: "no-watch: maybe", path: "c.yaml") }
        #expect(throws: ConfigFile.Problem.self) { try ConfigFile.flags(fromText: "dir: [", path: "c.yaml") }
    }

    /// A list or a mapping as a key made Yams trap (a force unwrap in its constructor).
    @Test(arguments: ["pee{: [[ac ]:, {d: d},ll]\n", "? [a]\n: b\n", "{{a: b}: c}", "k: &k [a]\n? *k\n: v\n", "peer: [{[x]: y}]"])
    func refusesKeysThatAreNotPlainValues(_ text: String) throws {
        let error = try #require(throws: ConfigFile.Problem.self) { try ConfigFile.flags(fromText: text, path: "c.yaml") }
        #expect(error.description.contains("mapping key"))
    }

    /// Deep nesting overflowed the stack inside Yams.
    @Test func refusesDeepNesting() throws {
        let flow = try #require(throws: ConfigFile.Problem.self) {
            try ConfigFile.flags(fromText: "dir: " + String(repeating: "[", count: 100_000), path: "c.yaml")
        }
        #expect(flow.description.contains("levels deep"))
        let block = (0..<200).map { String(repeating: " ", count: $0) + "a:\n" }.joined()
        #expect(throws: ConfigFile.Problem.self) { try ConfigFile.flags(fromText: block, path: "c.yaml") }
        // Within the bound, a nested value is just turned into text as before.
        #expect(try ConfigFile.flags(fromText: "name: " + String(repeating: "[", count: 60) + String(repeating: "]", count: 60), path: "c.yaml").count == 2)
    }

    /// A few lines of aliases of aliases expand to 10^9 values: Yams never finished.
    @Test func refusesAliasExpansion() throws {
        var text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1...8 {
            let previous = i == 1 ? "a" : "b\(i - 1)"
            text += "b\(i): &b\(i) [" + Array(repeating: "*" + previous, count: 10).joined(separator: ", ") + "]\n"
        }
        let error = try #require(throws: ConfigFile.Problem.self) { try ConfigFile.flags(fromText: text, path: "c.yaml") }
        #expect(error.description.contains("values"))
        // A chain of aliases each one level deeper is bounded the same way.
        var chain = "a: &x0 [1]\n"
        for i in 1...80 { chain += "b\(i): &x\(i) [*x\(i - 1)]\n" }
        #expect(throws: ConfigFile.Problem.self) { try ConfigFile.flags(fromText: chain, path: "c.yaml") }
    }
}
