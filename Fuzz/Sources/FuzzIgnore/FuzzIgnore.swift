// libFuzzer target `ignore`: the `.syncignore` parser and matcher (`IgnoreRules`).
//
// The input is split on NUL bytes: the first part is the rules text, the next (at most four)
// are paths, each asked as a file and as a directory. Crashes are bugs, and so is slowness (the
// glob matcher used to backtrack exponentially): every input is timed, and one that takes over a
// second of CPU is reported at once. The matcher is also compared with the backtracking one it
// replaced (`ReferenceGlob`, kept here as the specification) wherever that one finishes within a
// step budget.
import FuzzMain
import Foundation
@testable import SyncKit  // Glob and the parsed rules are internal; fuzz builds are debug (testable)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIgnore(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    let parts = bytes.split(separator: 0, maxSplits: 4, omittingEmptySubsequences: false)
    let text = String(decoding: parts[0], as: UTF8.self)
    let paths = parts.dropFirst().map { String(decoding: $0, as: UTF8.self) }

    let began = cpuSeconds()
    let rules = IgnoreRules(text: text, reserved: ["state"])
    for path in paths {
        let asFile = rules.isIgnored(path, isDirectory: false)
        let asDirectory = rules.isIgnored(path, isDirectory: true)
        // SyncKit's own names and the reserved prefix are ignored whatever the rules say.
        if alwaysIgnored(path) {
            precondition(asFile && asDirectory, "\(path.debugDescription) is internal or reserved but was not ignored")
        }
    }
    // Parsing and matching a few KiB must take milliseconds; a second means the matcher
    // backtracks without bound.
    let took = cpuSeconds() - began
    precondition(took < 1, "IgnoreRules took \(took) s for \(count) bytes (backtracking without bound?)")

    // The answers must be those of the old code (the prefix loop and the backtracking
    // matcher, below), wherever that finishes within its step budget: every rule against
    // every path and its last component, and `isIgnored` itself. Short inputs only: the old
    // matcher is slow even when it finishes.
    for path in paths where path.utf8.count <= 256 {
        let bytes = Array(path.utf8)
        let base = bytes.lastIndex(of: UInt8(ascii: "/")).map { bytes[($0 + 1)...] } ?? bytes[...]
        for rule in rules.rules where rule.pattern.count <= 256 {
            for subject in [bytes[...], base] {
                var budget = 2_000
                guard let expected = ReferenceGlob.match(rule.pattern[...], subject, budget: &budget) else { continue }
                precondition(Glob.match(rule.pattern[...], subject) == expected,
                             "Glob and ReferenceGlob disagree on \(String(decoding: rule.pattern, as: UTF8.self).debugDescription) against \(String(decoding: subject, as: UTF8.self).debugDescription)")
            }
        }
        for isDirectory in [false, true] where !alwaysIgnored(path) {
            var budget = 10_000
            guard let expected = referenceIsIgnored(rules, bytes, isDirectory: isDirectory, budget: &budget) else { continue }
            precondition(rules.isIgnored(path, isDirectory: isDirectory) == expected,
                         "isIgnored(\(path.debugDescription), isDirectory: \(isDirectory)) differs from the old code")
        }
    }
    return 0
}

/// SyncKit's own names and the reserved prefix `state` given to `IgnoreRules` above.
func alwaysIgnored(_ path: String) -> Bool {
    IgnoreRules.isInternal(path) || path == "state" || path.utf8.starts(with: "state/".utf8)
}

/// `IgnoreRules.isIgnored` as it was (a rule matched once per prefix), minus the internal and
/// reserved names; nil when the step budget runs out.
func referenceIsIgnored(_ rules: IgnoreRules, _ bytes: [UInt8], isDirectory: Bool, budget: inout Int) -> Bool? {
    var index = 0
    while index < bytes.count {
        let end = bytes[index...].firstIndex(of: UInt8(ascii: "/")) ?? bytes.count
        let isDir = end < bytes.count || isDirectory
        let prefix = Array(bytes[..<end])
        let base: ArraySlice<UInt8> = prefix.lastIndex(of: UInt8(ascii: "/")).map { prefix[($0 + 1)...] } ?? prefix[...]
        var ignored = false
        for rule in rules.rules {
            if rule.directoryOnly && !isDir { continue }
            guard let hit = ReferenceGlob.match(rule.pattern[...], rule.anchored ? prefix[...] : base, budget: &budget) else { return nil }
            if hit { ignored = !rule.negated }
        }
        if ignored { return true }
        index = end + 1
    }
    return false
}

/// The backtracking matcher that `Glob` replaced, with positions instead of slices (much
/// faster in this unoptimized build) and a step budget: the specification of what a pattern
/// matches. Nil when the budget runs out.
enum ReferenceGlob {
    static let slash = UInt8(ascii: "/")

    static func match(_ p: ArraySlice<UInt8>, _ s: ArraySlice<UInt8>, budget: inout Int) -> Bool? {
        match(Array(p), 0, Array(s), 0, budget: &budget)
    }

    /// Whether `p[pi...]` matches `s[si...]`.
    static func match(_ p: [UInt8], _ pi: Int, _ s: [UInt8], _ si: Int, budget: inout Int) -> Bool? {
        budget -= 1
        if budget < 0 { return nil }
        var pi = pi, si = si
        while pi < p.count {
            let c = p[pi]
            switch c {
            case UInt8(ascii: "*"):
                if pi + 1 < p.count && p[pi + 1] == UInt8(ascii: "*") {
                    var rest = pi + 2
                    if rest < p.count && p[rest] == slash { rest += 1 }
                    // `**` matches any run of bytes, separators included.
                    var t = si
                    while true {
                        guard let hit = match(p, rest, s, t, budget: &budget) else { return nil }
                        if hit { return true }
                        guard t < s.count else { return false }
                        t += 1
                    }
                }
                var t = si
                while true {
                    guard let hit = match(p, pi + 1, s, t, budget: &budget) else { return nil }
                    if hit { return true }
                    guard t < s.count, s[t] != slash else { return false }
                    t += 1
                }
            case UInt8(ascii: "?"):
                guard si < s.count, s[si] != slash else { return false }
                pi += 1
                si += 1
            case UInt8(ascii: "["):
                guard si < s.count, s[si] != slash, let (ok, rest) = Glob.matchClass(p[(pi + 1)...], s[si]) else {
                    if si < s.count && s[si] == c { pi += 1; si += 1; continue }
                    return false
                }
                if !ok { return false }
                pi = rest.startIndex
                si += 1
            case UInt8(ascii: "\\"):
                let literal = pi + 1 < p.count ? p[pi + 1] : c
                guard si < s.count, s[si] == literal else { return false }
                pi = min(pi + 2, p.count)
                si += 1
            default:
                guard si < s.count, s[si] == c else { return false }
                pi += 1
                si += 1
            }
        }
        return si == s.count
    }
}

/// CPU time of this thread, in seconds: unlike the wall clock, not stretched by a busy machine.
func cpuSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// The entry point: libFuzzer's driver with this file's test function, or `--write-seeds DIR`
/// (see `runFuzzer` in Fuzz/Sources/FuzzMain).
@main
enum Main {
    static func main() { runFuzzer(fuzzIgnore, seeds: seeds) }
}

// MARK: seeds

/// `.syncignore` samples in gitignore syntax, each followed by NUL-separated paths to ask.
func seeds() -> [(String, [UInt8])] {
    let samples: [(String, String, [String])] = [
        ("basic", "# build output\n*.o\n*.log\n!keep.log\nbuild/\n", ["src/main.o", "logs/keep.log", "build/x/y", "build"]),
        ("anchored", "/docs/*.pdf\ntmp/\n/node_modules\n", ["docs/a.pdf", "sub/docs/a.pdf", "tmp/cache", "node_modules/x"]),
        ("double-star", "**/tmp/**\na/**/b\n**/*.bak\nlogs/**/*.gz\n", ["x/tmp/y/z", "a/b", "a/x/y/b", "logs/2024/01/a.gz"]),
        ("classes", "[a-z]*.tmp\n[!0-9]?.txt\nfile[0-9][0-9]\n[]x]\n[^abc]\n", ["abc.tmp", "x1.txt", "file42", "]", "d"]),
        ("escapes", "\\#literal\n\\!bang\nspace\\ \n\\*\nend\\\n", ["#literal", "!bang", "space ", "*", "end\\"]),
        ("crlf", "*.swp\r\n.DS_Store\r\n  \r\n!important.swp\r\n", [".DS_Store", "a/.b.swp", "important.swp"]),
        ("stars", "*a*b*c*d*\n**x**y**z**\na?b?c?d\n", ["aXbXcXd", "qqxqqyqqzqq", "a1b2c3d"]),
        ("internal", "!.synckit\n!*.synckit-tmp\n!state\n", [".synckit/index.db", "a/.f.synckit-tmp", "state/x"]),
        ("unicode", "caf\u{E9}/\n\u{65E5}*\n", ["caf\u{E9}/menu.txt", "\u{65E5}\u{672C}.md", "cafe\u{301}/x"]),
    ]
    return samples.map { name, rules, paths in
        (name, Array(rules.utf8) + paths.flatMap { [0] + Array($0.utf8) })
    }
}
