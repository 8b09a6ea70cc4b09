import CSystemd
import Foundation
import Logging

/// A swift-log backend that writes structured entries to the systemd journal.
///
/// Each entry carries `MESSAGE`, `PRIORITY` (syslog levels, mapped from swift-log's), the
/// `SYSLOG_IDENTIFIER`, the source location (`CODE_FILE`, `CODE_LINE`, `CODE_FUNC`) and every
/// metadata value as its own field, so `journalctl -t syncctl SYNCKIT_PEER_ID=...` filters on
/// it. Metadata keys become valid journal field names (`JournalFieldName`).
///
/// `sd_journal_sendv` reports success even when no journal listens, so whether a journal is
/// there is decided up front by looking for its socket (`JournaldLogHandler.journalIsAvailable`).
public struct JournaldLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public let label: String
    public let identifier: String

    public init(label: String, identifier: String = "syncctl") {
        self.label = label
        self.identifier = identifier
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// The journal's native socket; present when journald runs.
    public static let socketPath = "/run/systemd/journal/socket"

    /// True when a journal is listening on this machine: its socket exists *and* accepts a
    /// connection (a socket file left behind by a journald that died does not count).
    public static var journalIsAvailable: Bool {
        var st = stat()
        guard stat(socketPath, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in socketPath.utf8.enumerated() { raw[i] = b }
        }
        return withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
    }

    /// syslog(3) priorities, as journald expects them in `PRIORITY`.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    public func log(event: LogEvent) {
        var fields = [
            "MESSAGE=\(event.message)",
            "PRIORITY=\(Self.priority(event.level))",
            "SYSLOG_IDENTIFIER=\(identifier)",
            "CODE_FILE=\(event.file)",
            "CODE_LINE=\(event.line)",
            "CODE_FUNC=\(event.function)",
            "SYNCKIT_LOGGER=\(label)",
        ]
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        for (key, value) in merged {
            fields.append("\(JournalFieldName.make(key))=\(value)")
        }
        Self.send(fields)
    }

    /// Sends one entry made of `KEY=value` fields (values may hold newlines).
    static func send(_ fields: [String]) {
        let buffers = fields.map { Array($0.utf8) }
        var iovecs = [iovec]()
        iovecs.reserveCapacity(buffers.count)
        // Keep every buffer alive and pinned while sd_journal_sendv reads it.
        func build(_ index: Int) {
            if index == buffers.count {
                _ = sd_journal_sendv(iovecs, Int32(iovecs.count))
                return
            }
            buffers[index].withUnsafeBytes { raw in
                iovecs.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count))
                build(index + 1)
            }
        }
        build(0)
    }
}

/// Turns a swift-log metadata key into a journal field name.
///
/// journald accepts field names of upper-case ASCII letters, digits and underscores, starting
/// with a letter, at most 64 characters, and reserves a leading underscore for trusted fields.
/// Keys are upper-cased, every other character becomes `_`, and the `SYNCKIT_` prefix keeps our
/// fields apart from the journal's own: `peer.id` becomes `SYNCKIT_PEER_ID`.
public enum JournalFieldName {
    public static func make(_ key: String) -> String {
        var out = "SYNCKIT_"
        var lastUnderscore = true
        for scalar in key.unicodeScalars {
            let c: Character
            switch scalar {
            case "a"..."z": c = Character(String(scalar).uppercased())
            case "A"..."Z", "0"..."9": c = Character(scalar)
            default: c = "_"
            }
            if c == "_" {
                if lastUnderscore { continue }
                lastUnderscore = true
            } else {
                lastUnderscore = false
            }
            out.append(c)
        }
        while out.hasSuffix("_") && out.count > 8 { out.removeLast() }
        if out == "SYNCKIT" || out == "SYNCKIT_" { out = "SYNCKIT_FIELD" }
        return String(out.prefix(64))
    }
}
