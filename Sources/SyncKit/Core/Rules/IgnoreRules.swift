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
        // A path is ignored when any parent is: check every prefix, shortest first.
        let bytes = Array(path.utf8)
        var index = 0
        while index < bytes.count {
            let end = bytes[index...].firstIndex(of: UInt8(ascii: "/")) ?? bytes.count
            let isDir = end < bytes.count || isDirectory
            if matches(Array(bytes[..<end]), isDirectory: isDir) { return true }
            index = end + 1
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

    func matches(_ path: [UInt8], isDirectory: Bool) -> Bool {
        var ignored = false
        let base: ArraySlice<UInt8> = path.lastIndex(of: UInt8(ascii: "/")).map { path[($0 + 1)...] } ?? path[...]
        for rule in rules {
            if rule.directoryOnly && !isDirectory { continue }
            let hit = rule.anchored ? Glob.match(rule.pattern[...], path[...]) : Glob.match(rule.pattern[...], base)
            if hit { ignored = !rule.negated }
        }
        return ignored
    }
}

/// A small glob matcher over bytes: `*` and `?` stay within one path component, `**` crosses
/// them, `[abc]`, `[a-z]` and `[!a]` match one byte. Backtracking, fine for short patterns.
enum Glob {
    static let slash = UInt8(ascii: "/")

    static func match(_ p: ArraySlice<UInt8>, _ s: ArraySlice<UInt8>) -> Bool {
        var p = p, s = s
        while let c = p.first {
            switch c {
            case UInt8(ascii: "*"):
                if p.dropFirst().first == UInt8(ascii: "*") {
                    var rest = p.dropFirst(2)
                    if rest.first == slash { rest = rest.dropFirst() }
                    // `**` matches any run of bytes, separators included.
                    var t = s
                    while true {
                        if match(rest, t) { return true }
                        guard !t.isEmpty else { return false }
                        t = t.dropFirst()
                    }
                }
                let rest = p.dropFirst()
                var t = s
                while true {
                    if match(rest, t) { return true }
                    guard let first = t.first, first != slash else { return false }
                    t = t.dropFirst()
                }
            case UInt8(ascii: "?"):
                guard let first = s.first, first != slash else { return false }
                p = p.dropFirst()
                s = s.dropFirst()
            case UInt8(ascii: "["):
                guard let first = s.first, first != slash, let (ok, rest) = matchClass(p.dropFirst(), first) else {
                    if s.first == c { p = p.dropFirst(); s = s.dropFirst(); continue }
                    return false
                }
                if !ok { return false }
                p = rest
                s = s.dropFirst()
            case UInt8(ascii: "\\"):
                let literal = p.dropFirst().first ?? c
                guard s.first == literal else { return false }
                p = p.dropFirst(2)
                s = s.dropFirst()
            default:
                guard s.first == c else { return false }
                p = p.dropFirst()
                s = s.dropFirst()
            }
        }
        return s.isEmpty
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
