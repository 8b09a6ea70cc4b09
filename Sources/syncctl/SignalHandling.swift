import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SyncKit

/// SIGINT and SIGTERM: the first starts a graceful shutdown of the service group (finish or
/// park writes, say goodbye, close peers); a second exits at once with status 130, because an
/// operator who insists should not have to wait.
///
/// The handling is ours rather than swift-service-lifecycle's: the library stops listening
/// after the first signal, and the disposition it leaves behind would swallow the second one.
/// Both signals are ignored at the process level and observed through dispatch sources that
/// live as long as the process.
enum SignalHandling {
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []

    static func install(group: ServiceGroup) {
        let seen = Locked(false)
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                let again = seen.withLock { seen in
                    defer { seen = true }
                    return seen
                }
                if again {
                    FileHandle.standardError.write(Data("syncctl: second signal, exiting now\n".utf8))
                    _exit(130)
                }
                Task { await group.triggerGracefulShutdown() }
            }
            source.resume()
            sources.append(source)
        }
    }
}

/// Test hook: with `SYNCKIT_TEST_SHUTDOWN_DELAY_MS` set, a graceful shutdown takes that long,
/// so the lifecycle test can check that a second signal does not wait for it.
struct ShutdownDelayForTests: Service {
    let delay: Duration
    func run() async throws {
        try? await gracefulShutdown()
        try? await Task.sleep(for: delay)
    }
}
