import Foundation

/// Checks relative paths before anything is done with them: paths from peers on receipt, and
/// names the scanner reads from disk.
///
/// A path is judged as the kernel will see it: as UTF-8 bytes split on the byte `/`. Swift's
/// `String` works on grapheme clusters instead, and a `/` followed by a combining mark (U+0301)
/// or a joiner (U+200D) is one `Character` that is not `"/"`: `"../\u{301}x".split(separator: "/")`
/// yields one harmless-looking component, while the kernel sees `..` and leaves the folder.
/// So every rule here is applied to the bytes, and on top of that a path is refused when its
/// `Character`s and its bytes disagree on where the components are (a `/` glued to a
/// neighbouring mark): the rest of SyncKit compares and splits paths as `String`s, and this
/// makes both views the same for every path that gets in.
///
/// The Unicode rule (ARCHITECTURE.md, decision 26): paths are NFC on the wire, as Syncthing
/// sends them. Swift compares strings by canonical equivalence, so `é` written as one scalar
/// (NFC) and as `e` + U+0301 (NFD) are one key in the index but two files on Linux; two wire
/// names that both are NFC are equal as strings exactly when their bytes are equal, so no two
/// accepted names can meet in one index entry or one file. A peer's non-NFC name is refused;
/// a local name in another form (NFD, as macOS writes) is recorded in its NFC form, and
/// `FolderRoot` finds the disk's spelling for every later operation (decision 43).
///
/// The kernel-level guarantee does not rest on this check: every file operation is resolved
/// beneath the folder by `FolderRoot` (openat2 with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
/// This check is the first wall; the folder handle is the second.
public enum PathSafety {
    /// The state directory at the folder root, never synced.
    public static let stateDirectory = ".synckit"
    /// Suffix of the temp files pulls write next to their target.
    public static let tempSuffix = ".synckit-tmp"
    /// Longest path accepted, in bytes (Linux's PATH_MAX).
    public static let maximumPathBytes = 4096
    /// Longest name accepted, in bytes (NAME_MAX on Linux file systems).
    public static let maximumNameBytes = 255

    private static let slash = UInt8(ascii: "/")
    private static let dot = UInt8(ascii: ".")
    private static let stateBytes = Array(stateDirectory.utf8)
    private static let tempBytes = Array(tempSuffix.utf8)

    /// Nil when `path` is acceptable, else the reason it is not.
    public static func problem(with path: String) -> String? {
        var bytes = path
        return bytes.withUTF8 { problem(withBytes: UnsafeRawBufferPointer($0), string: path) }
    }

    /// The check on raw bytes (a record whose path is not valid UTF-8 is judged here too).
    /// `string` is the same path as a `String` when the bytes are valid UTF-8.
    public static func problem(withBytes bytes: UnsafeRawBufferPointer, string: String?) -> String? {
        if bytes.isEmpty { return "empty path" }
        if bytes.count > maximumPathBytes { return "path longer than \(maximumPathBytes) bytes" }
        var ascii = true
        var components = 0
        var start = 0
        // One pass over the bytes: each component between two '/' bytes is judged on its own.
        for i in 0...bytes.count {
            let atEnd = i == bytes.count
            let byte = atEnd ? slash : bytes[i]
            if byte == 0 { return "NUL byte in path" }
            if byte >= 0x80 { ascii = false }
            guard byte == slash else { continue }
            let length = i - start
            if length == 0 { return start == 0 ? "absolute path" : "empty path component" }
            if length > maximumNameBytes { return "name longer than \(maximumNameBytes) bytes" }
            if bytes[start] == dot && (length == 1 || (length == 2 && bytes[start + 1] == dot)) {
                return "'\(length == 1 ? "." : "..")' component"
            }
            if components == 0 && length == stateBytes.count && equal(bytes, start, stateBytes) {
                return "the state directory"
            }
            if length >= tempBytes.count && equal(bytes, i - tempBytes.count, tempBytes) {
                return "a SyncKit temp file name"
            }
            components += 1
            start = i + 1
        }
        if ascii { return nil }
        guard let string, String(validating: bytes, as: UTF8.self) != nil else { return "not valid UTF-8" }
        // A '/' glued to a combining mark, a joiner or a prepended mark is one Character: the
        // String view would see fewer components than the kernel.
        if string.split(separator: "/", omittingEmptySubsequences: false).count != components {
            return "a '/' joined to a combining or joining character"
        }
        if !string.precomposedStringWithCanonicalMapping.utf8.elementsEqual(string.utf8) {
            return "not in Unicode normalization form C (NFC)"
        }
        return nil
    }

    private static func equal(_ bytes: UnsafeRawBufferPointer, _ at: Int, _ other: [UInt8]) -> Bool {
        for (k, b) in other.enumerated() where bytes[at + k] != b { return false }
        return true
    }

    public static func isSafe(_ path: String) -> Bool { problem(with: path) == nil }
}

/// A relative path that passed `PathSafety`: the only kind of path the folder handle
/// (`FolderRoot`) accepts, so a path that was never checked cannot reach a system call.
public struct RelativePath: Hashable, Sendable, CustomStringConvertible {
    public let string: String

    /// Checks `string`; throws `SyncError(.unsafePath)` with the reason when it is refused.
    public init(_ string: String) throws {
        if let problem = PathSafety.problem(with: string) {
            throw SyncError(.unsafePath, "refused the path \(string.debugDescription): \(problem)")
        }
        self.string = string
    }

    /// The parent's path (nil at the top level) and the last component, split on the byte '/'.
    public var split: (parent: String?, name: String) {
        let bytes = Array(string.utf8)
        guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return (nil, string) }
        return (String(decoding: bytes[..<slash], as: UTF8.self), String(decoding: bytes[(slash + 1)...], as: UTF8.self))
    }

    /// The components, split on the byte '/'.
    public var components: [String] {
        Array(string.utf8).split(separator: UInt8(ascii: "/")).map { String(decoding: $0, as: UTF8.self) }
    }

    public var description: String { string }
}
