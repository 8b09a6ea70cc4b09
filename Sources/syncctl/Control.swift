import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SyncKit

/// The daemon's control socket: `syncctl status` and `syncctl peers` ask the running node here.
///
/// A Unix socket at `<state dir>/control.sock`, mode 0600 so only the folder's owner may ask.
/// The protocol is one line in (`status`), one JSON document out, then close: easy to script
/// with `socat` too. Runs as a Service beside the node and stops with it.
struct ControlServer: Service {
    let path: String
    let node: SyncNode
    let logger: Logger

    func run() async throws {
        unlink(path)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineDecoder()))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        chmod(path, 0o600)
        defer { unlink(path) }
        try await serveUntilShutdown(server) { await self.serve($0) }
    }

    func serve(_ client: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        try? await client.executeThenClose { inbound, outbound in
            for try await line in inbound {
                let command = String(buffer: line).trimmingCharacters(in: .whitespacesAndNewlines)
                let body: Data
                switch command {
                case "status", "peers":
                    body = Data(try prettyJSON(await node.status()).utf8)
                default:
                    body = Data("{\"error\": \"unknown command\"}".utf8)
                }
                try await outbound.write(ByteBuffer(bytes: body + Data("\n".utf8)))
                return
            }
        }
    }
}

/// Splits the control stream into lines (at most 1 KiB: commands are short).
struct LineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let line = buffer.readSlice(length: newline - buffer.readerIndex + 1)!
            context.fireChannelRead(Self.wrapInboundOut(line))
            return .continue
        }
        if buffer.readableBytes > 1024 { throw SyncError(.protocolViolation, "control command too long") }
        return .needMoreData
    }
}

/// Asks a running daemon over its control socket; nil when none answers.
func askDaemon(stateDirectory: String, command: String) -> Data? {
    let path = stateDirectory + "/control.sock"
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
        raw[bytes.count] = 0
    }
    let ok = withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
    }
    guard ok else { return nil }
    let line = Array((command + "\n").utf8)
    guard write(fd, line, line.count) == line.count else { return nil }
    var out = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        out.append(contentsOf: buffer[..<n])
    }
    return out.isEmpty ? nil : out
}

/// `syncctl status`: what the daemon syncing a folder is doing.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show what the daemon syncing a folder is doing.")
    @OptionGroup var folder: FolderOptions
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() throws {
        let status = try fetchStatus(folder)
        if json {
            print(try prettyJSON(status))
            return
        }
        print("node      \(status.name)  \(status.nodeID)")
        print("folder    \(status.folder)")
        print("port      \(status.port)")
        print("state     \(status.inSync ? "in sync" : "syncing")")
        print("files     \(status.files) files, \(formatBytes(status.bytes))")
        print("peers     \(status.peers.count) connected")
        for p in status.peers {
            print("  \(p.name)  \(p.address)  \(p.caughtUp ? "in sync" : "exchanging index")  sent \(formatBytes(UInt64(p.bytesSent))), received \(formatBytes(UInt64(p.bytesReceived)))")
        }
        print("pulled    \(status.filesPulled) files: \(formatBytes(UInt64(status.bytesFromNetwork))) from peers, \(formatBytes(UInt64(status.bytesReused))) reused from local files")
        if !status.pulling.isEmpty { print("pulling   \(status.pulling.prefix(10).joined(separator: ", "))\(status.pulling.count > 10 ? " and \(status.pulling.count - 10) more" : "")") }
        for (path, why) in status.failed.sorted(by: { $0.key < $1.key }).prefix(10) { print("waiting   \(path): \(why)") }
        print("conflicts \(status.conflicts)")
        for c in status.conflictCopies { print("  kept the other version as \(c)") }
        if !status.recentErrors.isEmpty {
            print("recent errors")
            for e in status.recentErrors { print("  \(e)") }
        }
    }
}

/// `syncctl peers`: the peers the daemon is connected to.
struct Peers: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the peers the daemon syncing a folder is connected to.")
    @OptionGroup var folder: FolderOptions
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() throws {
        let status = try fetchStatus(folder)
        if json {
            print(try prettyJSON(status.peers))
            return
        }
        if status.peers.isEmpty { print("no peers connected") }
        for p in status.peers {
            print("\(p.name)\t\(p.address)\t\(p.nodeID)\t\(p.caughtUp ? "in sync" : "exchanging index")")
        }
    }
}

func fetchStatus(_ folder: FolderOptions) throws -> NodeStatus {
    let state = folder.stateDir ?? folder.absoluteDir + "/.synckit"
    guard let data = askDaemon(stateDirectory: state, command: "status") else {
        throw ValidationError("No syncctl daemon is running for \(folder.absoluteDir) (nothing answers on \(state)/control.sock). Start one with `syncctl run --dir \(folder.dir) ...`.")
    }
    return try JSONDecoder().decode(NodeStatus.self, from: data)
}

func formatBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(n)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
}

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

/// Indented JSON with sorted keys, as `--json` prints it.
func prettyJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// Accepts connections on `server` and serves each in its own child task until a graceful
/// shutdown closes the listening channel (the loop then ends and the task group waits for the
/// connections still being served).
func serveUntilShutdown<Inbound: Sendable, Outbound: Sendable>(
    _ server: NIOAsyncChannel<NIOAsyncChannel<Inbound, Outbound>, Never>,
    _ handle: @escaping @Sendable (NIOAsyncChannel<Inbound, Outbound>) async -> Void
) async throws {
    try await withGracefulShutdownHandler {
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { clients in
                for try await client in clients {
                    group.addTask { await handle(client) }
                }
            }
        }
    } onGracefulShutdown: {
        server.channel.close(promise: nil)
    }
}
