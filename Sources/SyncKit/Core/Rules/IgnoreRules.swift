/// Paths that are not synced, from `.syncignore` at the folder root (gitignore syntax).
///
/// Supported, as in gitignore(5): `#` comments, blank lines, `!` to re-include, a trailing `/`
/// for directories only, a `/` at the start or in the middle to anchor the pattern at the root
/// (otherwise it matches a name at any depth), `*` and `?` within a name, `**` across
/// directories, and `[...]` classes. The last matching pattern decides. A path is also ignored
/// when one of its parent directories is. The state directory and temp files are always ignored.
public struct IgnoreRules: Sendable {
    struct Rule: Sendable {
        var pattern: [UInt8]
        var negated: Bool
        var directoryOnly: Bool
        var anchored: Bool
    }

    var rules: [Rule] = []
    /// Relative paths never synced besides `.synckit` (a state directory inside the folder).
    var reserved: [String] = []

    public init(text: String = "", reserved: [String] = []) {
        self.reserved = reserved
        for raw in text.split(whereSeparator: \.isNewline) {
            var line = raw.trimmingTrailingSpaces()
            if line.isEmpty || line.hasPrefix("#") { continue }
            var rule = Rule(pattern: [], negated: false, directoryOnly: false, anchored: false)
            if line.hasPrefix("!") {
                rule.negated = true
                line.removeFirst()
            }
            if line.hasSuffix("/") {
                rule.directoryOnly = true
                line.removeLast()
            }
            if line.hasPrefix("/") {
                rule.anchored = true
                line.removeFirst()
            } else if line.contains("/") {
                rule.anchored = true
            }
            if line.hasPrefix("**/") {
                rule.anchored = false
                line.removeFirst(3)
            }
            guard !line.isEmpty else { continue }
            rule.pattern = Array(line.utf8)
            rules.append(rule)
        }
    }

    /// True when `path` (relative, `/`-separated) is not synced.
    public func isIgnored(_ path: String, isDirectory: Bool) -> Bool {
        if Self.isInternal(path) { return true }
        for r in reserved where path == r || path.utf8.starts(with: (r + "/").utf8) { return true }
        if rules.isEmpty { return false }
        // A path is ignored when any parent is: check every prefix, shortest first. The
        // prefixes end at each '/' and at the end of the path. A rule that is not anchored is
        // matched against the last component of each prefix; an anchored one against the whole
        // prefix, for all prefixes in one pass (matching it once per prefix cost
        // prefixes x pattern x path: seconds for a long rule and a deep path).
        let bytes = Array(path.utf8)
        var ends = bytes.indices.filter { bytes[$0] == Glob.slash }
        if let last = bytes.last, last != Glob.slash { ends.append(bytes.count) }
        var anchoredHits = [Int: [Bool]]()  // by rule, made when first needed
        var start = 0
        for (k, end) in ends.enumerated() {
            let isDir = end < bytes.count || isDirectory
            var ignored = false
            for (r, rule) in rules.enumerated() {
                if rule.directoryOnly && !isDir { continue }
                let hit: Bool
                if rule.anchored {
                    if anchoredHits[r] == nil { anchoredHits[r] = Glob.matches(rule.pattern[...], bytes, ends: ends) }
                    hit = anchoredHits[r]![k]
                } else {
                    hit = Glob.match(rule.pattern[...], bytes[start..<end])
                }
                if hit { ignored = !rule.negated }
            }
            if ignored { return true }
            start = end + 1
        }
        return false
    }

    /// True for SyncKit's own names, never synced whatever the rules say: the state directory
    /// and everything in it, and pull temp files (compared as bytes).
    public static func isInternal(_ path: String) -> Bool {
        let bytes = path.utf8
        let state = PathSafety.stateDirectory.utf8
        if bytes.starts(with: state) && (bytes.count == state.count || bytes.dropFirst(state.count).first == UInt8(ascii: "/")) { return true }
        let temp = PathSafety.tempSuffix.utf8
        return bytes.count >= temp.count && bytes.suffix(temp.count).elementsEqual(temp)
    }
}

/// A small glob matcher over bytes: `*` and `?` stay within one path component, `**` crosses
/// them, `[abc]`, `[a-z]` and `[!a]` match one byte.
///
/// The pattern is read into tokens, then matched by dynamic programming over (token, byte):
/// time O(tokens x bytes), memory O(bytes), no recursion. It used to backtrack recursively,
/// which fuzzing (Fuzz/, target `ignore`) showed to be exponential: the rule
/// `*a*a*a*a*a*a*a*a*a*a*a*a*b` against a name of 60 `a`s did not finish in a minute, and as
/// `.syncignore` is synced like any file, a peer could stall a node that way; a rule of many
/// thousand wildcards also recursed that deep, enough to overflow a thread's stack. What
/// matches is unchanged (the fuzz target compares with the old matcher).
enum Glob {
    static let slash = UInt8(ascii: "/")

    /// One step of a pattern.
    enum Token {
        /// This byte (a plain byte, an escaped one, or a `[` that opens no class).
        case byte(UInt8)
        /// `?`: one byte, not `/`.
        case one
        /// `[...]`: one byte, not `/`, that the class whose body starts at this index accepts.
        case set(Int)
        /// `*`: any run of bytes without `/`.
        case star
        /// `**` (and a `/` right after it): any run of bytes.
        case anything
    }

    /// Whether the pattern `p` matches all of `s`.
    static func match(_ p: ArraySlice<UInt8>, _ s: ArraySlice<UInt8>) -> Bool {
        matches(p, Array(s), ends: [s.count])[0]
    }

    /// For each of `ends`: whether the pattern `p` matches `bytes[..<end]`.
    static func matches(_ p: ArraySlice<UInt8>, _ bytes: [UInt8], ends: [Int]) -> [Bool] {
        let (tokens, needed) = tokenize(p)
        let n = ends.max() ?? 0
        if needed > n { return ends.map { _ in false } }
        /// Whether the class of token `i` (a `.set`) accepts `b`; looked up once per byte value.
        var classCache = [Int: [UInt8]]()  // token index -> per byte: 0 unknown, 1 yes, 2 no
        func classAccepts(_ i: Int, _ body: Int, _ b: UInt8) -> Bool {
            if b == slash { return false }
            if let known = classCache[i]?[Int(b)], known != 0 { return known == 1 }
            let hit = matchClass(p[body...], b)!.0
            classCache[i, default: [UInt8](repeating: 0, count: 256)][Int(b)] = hit ? 1 : 2
            return hit
        }
        if needed == tokens.count {  // no wildcard: byte for byte, so only `end == needed` can match
            let whole = zip(tokens.indices, bytes).allSatisfy { i, b in
                switch tokens[i] {
                case .byte(let x): return b == x
                case .one: return b != slash
                case .set(let body): return classAccepts(i, body, b)
                case .star, .anything: return false
                }
            }
            return ends.map { $0 == needed && whole }
        }
        // row[j]: the tokens so far match bytes[..<j]; one row per token, from the first.
        // (Buffer pointers: the loops are the hot part, also in unoptimized fuzz builds.)
        var row = [Bool](repeating: false, count: n + 1)
        var next = row
        row[0] = true
        for i in tokens.indices {
            let token = tokens[i]
            row.withUnsafeBufferPointer { row in
                next.withUnsafeMutableBufferPointer { next in
                    bytes.withUnsafeBufferPointer { bytes in
                        switch token {
                        case .star:
                            next[0] = row[0]
                            for j in 1..<(n + 1) { next[j] = row[j] || (next[j - 1] && bytes[j - 1] != slash) }
                        case .anything:
                            next[0] = row[0]
                            for j in 1..<(n + 1) { next[j] = row[j] || next[j - 1] }
                        case .byte(let x):
                            next[0] = false
                            for j in 1..<(n + 1) { next[j] = row[j - 1] && bytes[j - 1] == x }
                        case .one:
                            next[0] = false
                            for j in 1..<(n + 1) { next[j] = row[j - 1] && bytes[j - 1] != slash }
                        case .set(let body):
                            next[0] = false
                            for j in 1..<(n + 1) { next[j] = row[j - 1] && classAccepts(i, body, bytes[j - 1]) }
                        }
                    }
                }
            }
            swap(&row, &next)
        }
        return ends.map { row[$0] }
    }

    /// The tokens of a pattern, runs of wildcards merged (`*` `*` is `*`; `**` next to `*` or
    /// `**` is `**`: the same matches, and at most one wildcard between two bytes), and how
    /// many bytes it consumes at least.
    static func tokenize(_ p: ArraySlice<UInt8>) -> (tokens: [Token], needed: Int) {
        var tokens = [Token]()
        var needed = 0
        var i = p.startIndex
        while i < p.endIndex {
            let c = p[i]
            let token: Token
            switch c {
            case UInt8(ascii: "*"):
                let crosses = i + 1 < p.endIndex && p[i + 1] == UInt8(ascii: "*")
                i += crosses ? 2 : 1
                if crosses && i < p.endIndex && p[i] == slash { i += 1 }
                switch tokens.last {
                case .anything?: break
                case .star?: tokens[tokens.count - 1] = crosses ? .anything : .star
                default: tokens.append(crosses ? .anything : .star)
                }
                continue
            case UInt8(ascii: "?"):
                token = .one
                i += 1
            case UInt8(ascii: "["):
                // A class when it is closed (whatever the byte: only where it ends matters here).
                if let (_, rest) = matchClass(p[(i + 1)...], 0) {
                    token = .set(i + 1)
                    i = rest.startIndex
                } else {
                    token = .byte(c)
                    i += 1
                }
            case UInt8(ascii: "\\"):
                token = .byte(i + 1 < p.endIndex ? p[i + 1] : c)
                i = min(i + 2, p.endIndex)
            default:
                token = .byte(c)
                i += 1
            }
            tokens.append(token)
            needed += 1
        }
        return (tokens, needed)
    }

    /// Matches `byte` against a class body starting after `[`; nil when the class is not closed.
    static func matchClass(_ p: ArraySlice<UInt8>, _ byte: UInt8) -> (Bool, ArraySlice<UInt8>)? {
        var p = p
        var negate = false
        if p.first == UInt8(ascii: "!") || p.first == UInt8(ascii: "^") {
            negate = true
            p = p.dropFirst()
        }
        var hit = false
        var first = true
        while let c = p.first {
            if c == UInt8(ascii: "]") && !first { return (hit != negate, p.dropFirst()) }
            first = false
            let rest = p.dropFirst()
            if rest.first == UInt8(ascii: "-"), let hi = rest.dropFirst().first, hi != UInt8(ascii: "]") {
                if c <= byte && byte <= hi { hit = true }
                p = rest.dropFirst(2)
            } else {
                if c == byte { hit = true }
                p = rest
            }
        }
        return nil
    }
}

extension Substring {
    func trimmingTrailingSpaces() -> Substring {
        var s = self
        while s.last == " " || s.last == "\t" || s.last == "\r" { s.removeLast() }
        return s
    }
}
