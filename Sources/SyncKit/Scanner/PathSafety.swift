/// Checks paths that come from peers before anything is done with them.
///
/// A record's path is untrusted input: a hostile or broken peer could name `../../etc/passwd`,
/// an absolute path, a NUL byte that truncates the name in a system call, or our own state
/// directory. Such records are refused (and logged by the node) before they enter the engine.
/// Escapes through a symlink that exists locally (`link/file` where `link -> /etc`) cannot be
/// seen from the name alone: the puller checks that every parent on disk is a real directory.
public enum PathSafety {
    /// The state directory at the folder root, never synced.
    public static let stateDirectory = ".synckit"
    /// Suffix of the temp files pulls write next to their target.
    public static let tempSuffix = ".synckit-tmp"

    /// Nil when `path` is acceptable, else the reason it is not.
    public static func problem(with path: String) -> String? {
        if path.isEmpty { return "empty path" }
        if path.utf8.count > WireCodec.maxStringBytes { return "path too long" }
        if path.utf8.contains(0) { return "NUL byte in path" }
        if path.hasPrefix("/") { return "absolute path" }
        var first = true
        for component in path.split(separator: "/", omittingEmptySubsequences: false) {
            if component.isEmpty { return "empty path component" }
            if component == "." || component == ".." { return "'\(component)' component" }
            if component.utf8.count > 255 { return "name longer than 255 bytes" }
            if first && component == stateDirectory { return "the state directory" }
            if component.hasSuffix(tempSuffix) { return "a SyncKit temp file name" }
            first = false
        }
        return nil
    }

    public static func isSafe(_ path: String) -> Bool { problem(with: path) == nil }
}
