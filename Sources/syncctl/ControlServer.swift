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
/// The protocol is one line in (`status`, `peers`, or `versions-list` / `versions-restore`
/// followed by a JSON request), one JSON document out, then close: easy to script with `socat`
/// too. Runs as a Service beside the node and stops with it.
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
                let text = String(buffer: line).trimmingCharacters(in: .whitespacesAndNewlines)
                let command = text.split(separator: " ", maxSplits: 1).first.map(String.init) ?? ""
                let argument = Data(text.dropFirst(command.count).utf8)
                let body: Data
                switch command {
                case "status", "peers":
                    body = Data(try prettyJSON(await node.status()).utf8)
                case "versions-list", "versions-restore":
                    body = try JSONEncoder().encode(await versions(command, argument))
                default:
                    body = Data("{\"error\": \"unknown command\"}".utf8)
                }
                try await outbound.write(ByteBuffer(bytes: body + Data("\n".utf8)))
                return
            }
        }
    }
}

extension ControlServer {
    /// Lists or restores versions for `syncctl versions`.
    func versions(_ command: String, _ argument: Data) async -> Versions.Answer {
        guard let request = try? JSONDecoder().decode(Versions.Request.self, from: argument) else {
            return .init(error: "a malformed request")
        }
        return await Versions.answer(node: node, request: request, restore: command == "versions-restore", logger: logger)
    }
}

extension Versions {
    /// Lists the versions of `request.path` (all without one), or restores one: for the control
    /// socket and the REST API alike.
    static func answer(node: SyncNode, request: Request, restore: Bool, logger: Logger) async -> Answer {
        if let path = request.path, let problem = PathSafety.problem(with: path) {
            return .init(error: "'\(path)' is not a path in the folder: \(problem)")
        }
        if !restore {
            return .init(versions: node.versionsOnDisk.list(request.path))
        }
        guard let path = request.path else { return .init(error: "which file? Name a path to restore") }
        do {
            let version = try await node.restoreVersion(path: path, at: request.at)
            logger.notice("restored a version", metadata: ["sync.path": "\(path)", "version.time": "\(Versions.display(version.time))"])
            return .init(restored: version)
        } catch let error as SyncError {
            return .init(error: error.message)
        } catch {
            return .init(error: "\(error)")
        }
    }
}

/// Splits the control stream into lines (at most 64 KiB: a command and a path or two).
struct LineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let line = buffer.readSlice(length: newline - buffer.readerIndex + 1)!
            context.fireChannelRead(Self.wrapInboundOut(line))
            return .continue
        }
        if buffer.readableBytes > 65536 { throw SyncError(.protocolViolation, "control command too long") }
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
