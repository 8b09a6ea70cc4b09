import Foundation
import Logging

/// Collects log lines of the nodes of one test in memory; the harness prints them only when the
/// test fails, so a passing run stays quiet and a failing one shows what each node did.
final class LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var text: String { lock.withLock { lines.joined(separator: "\n") } }

    func logger(label: String, level: Logger.Level = .debug) -> Logger {
        var logger = Logger(label: label) { _ in CaptureHandler(capture: self) }
        logger.logLevel = level
        return logger
    }

    struct CaptureHandler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            let meta = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            let t = String(format: "%.3f", Date().timeIntervalSince1970.truncatingRemainder(dividingBy: 1000))
            capture.append("\(t) \(event.level) \(event.message) \(meta)")
        }
    }
}
