import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SyncKit

extension VersioningPolicy.Kind: ExpressibleByArgument {}

/// `run`'s versioning flags (issue 16): what is kept of the files syncs replace or delete.
struct VersioningOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Keep the old content of files that syncs replace or delete, in <state dir>/versions: 'none', 'trashcan' (the last version of each file), 'simple' (the --versions-keep last ones) or 'staggered' (one per 30 s for an hour, per hour for a day, per day for 30 days, per week until --versions-max-age). `syncctl versions` lists and restores them.", valueName: "kind"))
    var versioning: VersioningPolicy.Kind = .none

    @Option(help: ArgumentHelp("With --versioning simple: versions kept per file.", valueName: "count"))
    var versionsKeep: Int = 5

    @Option(help: ArgumentHelp("Remove versions older than this: a number of days, or a duration such as 12h, 90m, 30d (default: never; 365d for staggered).", valueName: "age"))
    var versionsMaxAge: String?

    @Option(help: ArgumentHelp("How often old versions are cleaned up while the daemon runs (a duration: 3600, 1h, 30m).", valueName: "interval"))
    var versionsCleanupInterval: String = "1h"

    @Option(help: ArgumentHelp("Bytes all kept versions may take together; the oldest go first (e.g. 500M, 2G, 1073741824).", valueName: "size"))
    var versionsMaxSize: String?

    func validate() throws { _ = try policy() }

    func policy() throws -> VersioningPolicy {
        guard versionsKeep >= 1 else { throw ValidationError("--versions-keep must be at least 1.") }
        var maxAge: Int64?
        if let versionsMaxAge {
            guard let seconds = parseDuration(versionsMaxAge, bareUnit: 86_400), seconds >= 0 else {
                throw ValidationError("--versions-max-age takes days (30) or a duration (12h, 90m, 30d), not '\(versionsMaxAge)'.")
            }
            maxAge = seconds
        }
        guard let interval = parseDuration(versionsCleanupInterval, bareUnit: 1), interval > 0 else {
            throw ValidationError("--versions-cleanup-interval takes a positive duration (3600, 1h, 30m), not '\(versionsCleanupInterval)'.")
        }
        var maxBytes: UInt64?
        if let versionsMaxSize {
            guard let bytes = parseSize(versionsMaxSize) else {
                throw ValidationError("--versions-max-size takes a size (500M, 2G, 1048576), not '\(versionsMaxSize)'.")
            }
            maxBytes = bytes
        }
        if versioning == .none && (versionsMaxAge != nil || versionsMaxSize != nil) {
            throw ValidationError("--versions-max-age and --versions-max-size need --versioning trashcan, simple or staggered.")
        }
        return VersioningPolicy(kind: versioning, keep: versionsKeep, maxAge: maxAge, cleanupInterval: interval, maxBytes: maxBytes)
    }
}

/// Seconds in "90", "90s", "15m", "12h", "30d", "2w"; a bare number counts in `bareUnit`.
func parseDuration(_ text: String, bareUnit: Int64) -> Int64? {
    let t = text.trimmingCharacters(in: .whitespaces).lowercased()
    let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400]
    if let last = t.last, let unit = units[last], let n = Double(t.dropLast()), n >= 0 { return Int64(n * Double(unit)) }
    if let n = Double(t), n >= 0 { return Int64(n * Double(bareUnit)) }
    return nil
}

/// Bytes in "1048576", "500K", "500M", "2G", "1T" (powers of 1024; "MiB", "MB" alike).
func parseSize(_ text: String) -> UInt64? {
    var t = text.trimmingCharacters(in: .whitespaces).uppercased()
    for suffix in ["IB", "B"] where t.hasSuffix(suffix) && t.count > suffix.count {
        t = String(t.dropLast(suffix.count))
        break
    }
    let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    if let last = t.last, let unit = units[last], let n = Double(t.dropLast()), n >= 0 { return UInt64(n * Double(unit)) }
    return UInt64(t)
}

/// Runs the versions' age-based cleanup while the daemon runs: at start, then every interval.
struct VersionCleanup: Service {
    let store: VersionStore
    let logger: Logger

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let (removed, bytes) = store.cleanup()
                if removed > 0 {
                    logger.info("removed old versions", metadata: ["count": "\(removed)", "bytes": "\(bytes)"])
                }
                try await Task.sleep(for: .seconds(store.policy.cleanupInterval))
            }
        }
    }
}

/// `syncctl versions`: the old versions a node keeps, and getting one back.
struct Versions: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List and restore the old versions of files that syncs replaced or deleted (see --versioning).",
        subcommands: [List.self, Restore.self])

    /// The request and answer of the control socket's `versions-list` and `versions-restore`.
    struct Request: Codable {
        var path: String?
        var at: Double?
    }
    struct Answer: Codable {
        var versions: [VersionStore.Version]?
        var restored: VersionStore.Version?
        var error: String?
    }

    /// The path as the folder names it: folder-relative, or absolute inside the folder; NFC.
    static func relativePath(_ text: String, folder: FolderOptions) throws -> String {
        var p = text
        let base = (folder.absoluteDir as NSString).standardizingPath
        if p.hasPrefix("/") {
            p = (p as NSString).standardizingPath
            if p == base { return "" }
            guard p.hasPrefix(base + "/") else { throw ValidationError("\(text) is not inside the folder \(base).") }
            p = String(p.dropFirst(base.count + 1))
        }
        if p.hasPrefix("/") == false, p == "." || p == "./" { return "" }
        while p.hasSuffix("/") { p.removeLast() }
        while p.hasPrefix("./") { p.removeFirst(2) }
        if p.isEmpty { return "" }
        p = p.precomposedStringWithCanonicalMapping
        if let problem = PathSafety.problem(with: p) { throw ValidationError("'\(text)' is not a path in the folder: \(problem).") }
        return p
    }

    static func stateDirectory(_ folder: FolderOptions) -> String { folder.stateDir ?? folder.absoluteDir + "/.synckit" }

    /// Asks the running daemon; nil when none answers.
    static func ask(_ folder: FolderOptions, _ command: String, _ request: Request) throws -> Answer? {
        let body = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
        guard let data = askDaemon(stateDirectory: stateDirectory(folder), command: command + " " + body) else { return nil }
        return try JSONDecoder().decode(Answer.self, from: data)
    }

    /// `2026-12-03 07:35:12.123` (UTC).
    static func display(_ time: Double) -> String { VersionStore.Version.stampText(time) }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the versions kept, newest first: of a file, of everything under a directory, or all.")
        @OptionGroup var folder: FolderOptions
        @Argument(help: ArgumentHelp("A file or directory of the folder (relative to it, or absolute).", valueName: "path"))
        var path: String?
        @Flag(help: "Print JSON for scripts.") var json = false

        func run() throws {
            let relative = try path.map { try Versions.relativePath($0, folder: folder) }.flatMap { $0.isEmpty ? nil : $0 }
            let versions: [VersionStore.Version]
            if let answer = try Versions.ask(folder, "versions-list", .init(path: relative)) {
                if let error = answer.error { throw ValidationError(error) }
                versions = answer.versions ?? []
            } else {
                versions = VersionStore(stateDirectory: Versions.stateDirectory(folder), policy: .keepAll, logger: Logger(label: "versions")).list(relative)
            }
            if json {
                print(try prettyJSON(versions))
                return
            }
            if versions.isEmpty {
                print(relative.map { "no versions of \($0) are kept" } ?? "no versions are kept")
                return
            }
            let width = min(max(versions.map(\.path.count).max() ?? 4, 4), 60)
            func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
            print("\(pad("PATH", width))  \(pad("REPLACED (UTC)", 23))  \(pad("SIZE", 9))  \(pad("BY", 7))  WHY")
            for v in versions {
                print("\(pad(v.path, width))  \(pad(Versions.display(v.time), 23))  \(pad(formatBytes(v.size), 9))  \(pad(v.by, 7))  \(v.reason)")
            }
            let total = versions.reduce(UInt64(0)) { $0 + $1.size }
            print("\(versions.count) version\(versions.count == 1 ? "" : "s"), \(formatBytes(total))")
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put a kept version back, as a new edit on this node that syncs to every node.",
            discussion: """
                Without --at, the newest version kept; with it, the newest replaced at or before \
                that time. What is at the path now is kept as a version first (restored-over), so a \
                restore can be undone the same way. Works whether or not the daemon runs: without \
                one, the file is written into the folder and syncs when `syncctl run` starts.
                """)
        @OptionGroup var folder: FolderOptions
        @Argument(help: ArgumentHelp("The file to restore (relative to the folder, or absolute).", valueName: "path"))
        var path: String
        @Option(help: ArgumentHelp("Restore the version replaced at or before this time: 2026-12-03T07:35:12Z, '2026-12-03 07:35:12' (UTC), as `versions list` prints it, or @UNIXSECONDS.", valueName: "time"))
        var at: String?

        func run() throws {
            let relative = try Versions.relativePath(path, folder: folder)
            var time: Double?
            if let at {
                guard let t = parseTime(at) else {
                    throw ValidationError("--at takes a time such as 2026-12-03T07:35:12Z, '2026-12-03 07:35:12.123' (UTC) or @1764746112, not '\(at)'.")
                }
                time = t
            }
            let restored: VersionStore.Version
            var live = true
            if let answer = try Versions.ask(folder, "versions-restore", .init(path: relative, at: time)) {
                if let error = answer.error { throw ValidationError(error) }
                guard let r = answer.restored else { throw ValidationError("the daemon gave no answer") }
                restored = r
            } else {
                live = false
                try folder.validateFolder()
                let store = VersionStore(stateDirectory: Versions.stateDirectory(folder), policy: .keepAll, logger: Logger(label: "versions"))
                guard let version = store.find(path: relative, at: time) else {
                    throw ValidationError(time == nil ? "No version of \(relative) is kept." : "No version of \(relative) is kept from before \(at!).")
                }
                let identity = try NodeIdentity.loadOrCreate(in: Versions.stateDirectory(folder))
                do {
                    try store.restore(version, into: FolderRoot(path: folder.absoluteDir), me: identity.id.short)
                } catch let error as SyncError {
                    throw ValidationError(error.message)
                }
                restored = version
            }
            print("restored \(restored.path): the version \(restored.reason) at \(Versions.display(restored.time)) UTC by \(restored.by), \(formatBytes(restored.size))")
            print(live ? "it is a new edit on this node and syncs to every node now" : "no daemon runs for this folder: it syncs when `syncctl run` starts")
        }
    }
}

/// Seconds since 1970 in an ISO 8601 time (with or without fraction and zone; no zone: UTC), a
/// `versions list` time, a version stamp, or `@SECONDS`.
func parseTime(_ text: String) -> Double? {
    let t = text.trimmingCharacters(in: .whitespaces)
    if t.hasPrefix("@") { return Double(t.dropFirst()) }
    if let stamp = VersionStore.Version.parseStampText(t) { return stamp }
    var iso = t.replacingOccurrences(of: " ", with: "T")
    // A time to the second means the whole second: a version replaced at .123 of it counts.
    let wholeSecond = !iso.contains(".")
    if !(iso.hasSuffix("Z") || iso.range(of: #"[+-]\d\d:?\d\d$"#, options: .regularExpression) != nil) { iso += "Z" }
    for options: ISO8601DateFormatter.Options in [[.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime]] {
        let f = ISO8601DateFormatter()
        f.formatOptions = options
        if let d = f.date(from: iso) { return d.timeIntervalSince1970 + (wholeSecond ? 0.999 : 0) }
    }
    return nil
}
