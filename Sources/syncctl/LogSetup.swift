import ArgumentParser
import Foundation
import JournaldLogging
import Logging

/// How syncctl sets up swift-log (named so, not `Logging`, to keep the swift-log module visible).
enum LogSetup {
    /// Sets up swift-log for the process (only the executable does this) and returns its logger.
    ///
    /// `auto` picks journald when the journal's socket exists and stderr otherwise (containers,
    /// where `docker logs` must show them). An explicit `journald` with no journal is an error,
    /// never a silent fallback: `sd_journal_sendv` would report success and drop every line.
    static func bootstrap(target: LogTarget, level: Logger.Level) throws -> Logger {
        let useJournal: Bool
        switch target {
        case .journald:
            guard JournaldLogHandler.journalIsAvailable else {
                throw ValidationError("--log journald: no systemd journal is running here (\(JournaldLogHandler.socketPath) is missing); use --log stderr.")
            }
            useJournal = true
        case .auto:
            useJournal = JournaldLogHandler.journalIsAvailable
        case .stderr:
            useJournal = false
        }
        LoggingSystem.bootstrap { label in
            if useJournal {
                var handler = JournaldLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "syncctl")
        logger.logLevel = level
        return logger
    }
}
