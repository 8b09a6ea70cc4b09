import Testing
@testable import SyncKit

/// The glob matcher of `.syncignore` (found by fuzzing, Fuzz/Corpus/ignore: it backtracked
/// exponentially; it is now a dynamic program with the same matches).
@Suite struct GlobTests {
    func glob(_ pattern: String, _ path: String) -> Bool { Glob.match(Array(pattern.utf8)[...], Array(path.utf8)[...]) }

    @Test(arguments: [
        ("*.o", "main.o", true), ("*.o", "main.c", false), ("*.o", "a/main.o", false), ("a?c", "abc", true), ("a?c", "a/c", false),
        ("[a-c]x", "bx", true), ("[!a-c]x", "bx", false), ("[]]", "]", true), ("[x", "[x", true), ("[x", "x", false),
        ("\\*", "*", true), ("\\*", "a", false), ("end\\", "end\\", true), ("a/**/b", "a/b", true), ("a/**/b", "a/x/y/b", true),
        ("a/**/b", "a/xb", true), ("**", "", true), ("*", "", true), ("**x", "a/b/x", true), ("*x", "a/x", false),
        ("***", "a/b", true), ("a**b", "a/b", true), ("a*b*c", "aXbYc", true), ("a*b*c", "aXbY/c", false), ("", "", true), ("", "a", false),
    ])
    func matchesAsBefore(_ pattern: String, _ path: String, _ expected: Bool) {
        #expect(glob(pattern, path) == expected, "\(pattern) against \(path)")
    }

    /// 13 wildcards against 60 bytes took more than a minute when matching backtracked.
    @Test func manyWildcardsStayFast() {
        let clock = ContinuousClock()
        let took = clock.measure {
            #expect(!glob(String(repeating: "*a", count: 12) + "*b", String(repeating: "a", count: 60)))
            #expect(!glob(String(repeating: "**a", count: 10) + "**b", String(repeating: "a/", count: 30)))
            #expect(glob(String(repeating: "**/", count: 12) + "x", String(repeating: "a/", count: 40) + "x"))
            #expect(!glob(String(repeating: "*a", count: 100) + "*b", String(repeating: "a", count: 250)))
            // Lines of thousands of wildcards recursed that deep (the stack of a scan thread).
            let rules = IgnoreRules(text: String(repeating: "*?", count: 50_000) + "\n" + String(repeating: "*a", count: 2_000) + "b")
            #expect(!rules.isIgnored(String(repeating: "a", count: 250), isDirectory: false))
        }
        #expect(took < .seconds(5))
    }
}
