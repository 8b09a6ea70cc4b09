import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import SyncKit
import TransportTCP

/// `--gui-address`, `--no-gui`, `--gui-api-key`, `--gui-tls`: where the dashboard and the REST
/// API are served (docs/REST-API.md).
struct GUIOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Serve the dashboard and the REST API here (docs/REST-API.md). Loopback by default; a port already in use leaves the node running without them. Port 0 picks a free one (`syncctl gui-url` prints it).", valueName: "host:port"))
    var guiAddress: String = "127.0.0.1:8384"

    @Flag(help: "Do not serve the dashboard and the REST API.")
    var noGui = false

    @Option(help: ArgumentHelp("The API key for the REST API (default: made on first start and kept in <state dir>/gui-api-key; `syncctl gui-url` prints a link with it).", valueName: "key"))
    var guiApiKey: String?

    @Flag(help: "Serve the dashboard over HTTPS with the node's own certificate (advised when --gui-address is not a loopback address).")
    var guiTls = false

    /// The host and port of `--gui-address` (`[v6]:port` or `host:port`; port 0 allowed).
    var endpoint: (host: String, port: Int)? {
        guard let colon = guiAddress.lastIndex(of: ":"), let port = Int(guiAddress[guiAddress.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(guiAddress[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(where: { $0.isWhitespace || $0 == "/" }) else { return nil }
        return (host, port)
    }

    func validateGUI() throws {
        guard !noGui else { return }
        guard endpoint != nil else {
            throw ValidationError("--gui-address takes host:port, for example 127.0.0.1:8384 or [::1]:8384 (port 0: any free one), not '\(guiAddress)'.")
        }
        if let guiApiKey, guiApiKey.count < 16 || guiApiKey.contains(where: { $0.isWhitespace || !$0.isASCII }) {
            throw ValidationError("--gui-api-key must be at least 16 printable ASCII characters without spaces.")
        }
    }
}

/// The API key and the address the GUI was served at, kept in the state directory.
enum GUIKeys {
    static func keyPath(_ stateDirectory: String) -> String { stateDirectory + "/gui-api-key" }
    static func addressPath(_ stateDirectory: String) -> String { stateDirectory + "/gui-address" }

    /// The key in the state directory, made (32 random bytes as hex) when none is. (The node
    /// holds its state directory's lock by now: no second start races this one.)
    static func loadOrCreate(_ stateDirectory: String) throws -> String {
        if let existing = read(stateDirectory) { return existing }
        var generator = SystemRandomNumberGenerator()
        let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        try store(key, stateDirectory)
        return key
    }

    /// Writes `key` as the key file: a temp file of mode 0600, flushed, renamed over the old
    /// one, so a crash leaves the old key or the new one, never an empty file.
    static func store(_ key: String, _ stateDirectory: String) throws {
        try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = keyPath(stateDirectory), temp = path + ".tmp-\(getpid())"
        unlink(temp)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SyncError(.io, "cannot write \(temp): \(String(cString: strerror(errno)))") }
        let bytes = Array((key + "\n").utf8)
        let ok = write(fd, bytes, bytes.count) == bytes.count && fsync(fd) == 0
        close(fd)
        guard ok, rename(temp, path) == 0 else {
            unlink(temp)
            throw SyncError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    static func read(_ stateDirectory: String) -> String? {
        guard let text = try? String(contentsOfFile: keyPath(stateDirectory), encoding: .utf8) else { return nil }
        let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return key.isEmpty ? nil : key
    }
}

/// Serves the dashboard (`GET /`) and the REST API (`/rest/...`) over HTTP/1.1 (or HTTPS with
/// `--gui-tls`), with SwiftNIO's HTTP codec.
///
/// Each connection may carry several requests (keep-alive); `GET /rest/events` holds its
/// connection for the stream. What is allowed is decided before any handler runs, in
/// `GUISecurity`: the Host and Origin checks, the API key, the method and the body's type.
/// A port in use is logged and leaves the node running without a GUI (a second node on the
/// same machine must not fail for want of 8384).
struct GUIServer: Service {
    let host: String
    let port: Int
    let tls: TLSSettings?
    let api: RESTAPI
    let apiKey: String
    let stateDirectory: String
    /// Connections served at once; more are closed at once (idle sockets cannot use up the
    /// descriptors the node needs for its peers and files).
    static let maxConnections = 64
    let logger: Logger

    func run() async throws {
        var sslContext: NIOSSLContext?
        if let tls {
            let chain = try NIOSSLCertificate(bytes: tls.certificateDER, format: .der)
            let key = try NIOSSLPrivateKey(bytes: Array(tls.privateKeyPEM.utf8), format: .pem)
            var c = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(chain)], privateKey: .privateKey(key))
            c.minimumTLSVersion = .tlsv12
            sslContext = try NIOSSLContext(configuration: c)
        }
        let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .bind(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let sslContext {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                        }
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            logger.error("cannot serve the dashboard; the node runs without it", metadata: ["address": "\(host):\(port)", "error": "\(error)"])
            try? await gracefulShutdown()
            return
        }
        let bound = server.channel.localAddress?.port ?? port
        // Whether Host must be a loopback name is decided by the address bound, however the
        // flag spelled it (::ffff:127.0.0.1, 0:0:0:0:0:0:0:1, localhost).
        let security = GUISecurity(apiKey: apiKey, loopbackOnly: GUISecurity.isLoopbackAddress(server.channel.localAddress?.ipAddress ?? host))
        let gate = ConnectionGate(limit: Self.maxConnections)
        let shown = host.contains(":") ? "[\(host)]:\(bound)" : "\(host):\(bound)"
        let url = "\(tls == nil ? "http" : "https")://\(shown)/"
        try? (url + "\n").write(toFile: GUIKeys.addressPath(stateDirectory), atomically: true, encoding: .utf8)
        logger.notice("serving the dashboard and the REST API", metadata: ["address": "\(url)", "gui.key": "\(GUIKeys.keyPath(stateDirectory))"])
        let events = Task { await api.hub.run() }
        defer { events.cancel() }
        do {
            try await serveUntilShutdown(server) { client in
                guard await gate.enter() else {
                    try? await client.channel.close()
                    return
                }
                await self.serve(client, security: security)
                await gate.leave()
            }
        } catch {
            // The GUI is a window on the node, never a reason to stop syncing.
            logger.error("the dashboard stopped; the node runs on without it", metadata: ["error": "\(error)"])
            try? await gracefulShutdown()
        }
    }

    /// One connection: requests in turn until the client closes or a response says close.
    func serve(_ client: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, security: GUISecurity) async {
        try? await client.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            var body = ByteBuffer()
            var tooLarge = false
            for try await part in inbound {
                switch part {
                case .head(let h):
                    head = h
                    body.clear()
                    tooLarge = false
                case .body(var chunk):
                    if body.readableBytes + chunk.readableBytes > GUISecurity.maxBody { tooLarge = true } else { body.writeBuffer(&chunk) }
                case .end:
                    guard let request = head else { continue }
                    head = nil
                    let keepAlive = request.isKeepAlive
                    let writer = ResponseWriter(outbound: outbound, keepAlive: keepAlive, tls: tls != nil)
                    // One reading of the target, for the checks and the handler alike.
                    let target = RequestTarget(request.uri)
                    if tooLarge {
                        try await writer.json(.payloadTooLarge, ["error": "the request body is over \(GUISecurity.maxBody) bytes"])
                    } else if let target, let refusal = security.check(request, path: target.path, bodyBytes: body.readableBytes, tls: tls != nil) {
                        logger.debug("refused a GUI request", metadata: ["http.path": "\(target.path.prefix(200))", "http.status": "\(refusal.status.code)", "reason": "\(refusal.reason)"])
                        try await writer.json(refusal.status, ["error": refusal.reason])
                    } else if let target {
                        try await api.handle(request, target: target, body: body, writer: writer)
                    } else {
                        try await writer.json(.badRequest, ["error": "a request target must be a plain path: /, /rest/..., no percent escapes, dot segments or fragments"])
                    }
                    if !keepAlive || writer.streamed { return }
                }
            }
        }
    }
}

/// Writes responses on one connection, with the headers every answer carries.
final class ResponseWriter: @unchecked Sendable {
    let outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    let keepAlive: Bool
    let tls: Bool
    /// A stream was sent: the connection ends with it.
    var streamed = false

    init(outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, keepAlive: Bool, tls: Bool) {
        self.outbound = outbound
        self.keepAlive = keepAlive
        self.tls = tls
    }

    /// Headers for every answer: no caching of node state, no sniffing of types, never inside
    /// another site's frame, and scripts and styles only from the page itself.
    func headers(contentType: String, length: Int?) -> HTTPHeaders {
        var h = HTTPHeaders()
        h.add(name: "Content-Type", value: contentType)
        if let length { h.add(name: "Content-Length", value: "\(length)") }
        h.add(name: "Cache-Control", value: "no-store")
        h.add(name: "X-Content-Type-Options", value: "nosniff")
        h.add(name: "X-Frame-Options", value: "DENY")
        h.add(name: "Referrer-Policy", value: "no-referrer")
        h.add(name: "Content-Security-Policy", value: "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
        h.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        return h
    }

    func send(_ status: HTTPResponseStatus, contentType: String, body: [UInt8]) async throws {
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers(contentType: contentType, length: body.count))))
        if !body.isEmpty { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
        try await outbound.write(.end(nil))
    }

    func json(_ status: HTTPResponseStatus, _ value: some Encodable) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try await send(status, contentType: "application/json", body: Array(try encoder.encode(value)))
    }

    /// Starts a stream (server-sent events): the head now, chunks with `chunk`.
    func startStream(contentType: String) async throws {
        streamed = true
        var h = headers(contentType: contentType, length: nil)
        h.replaceOrAdd(name: "Connection", value: "close")
        h.add(name: "X-Accel-Buffering", value: "no")
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: h)))
    }

    func chunk(_ text: String) async throws {
        try await outbound.write(.body(.byteBuffer(ByteBuffer(string: text))))
    }

    func endStream() async throws { try await outbound.write(.end(nil)) }
}

/// Who may ask what of the GUI server: the checks every request passes before a handler runs.
struct GUISecurity: Sendable {
    struct Refusal: Error {
        var status: HTTPResponseStatus
        var reason: String
    }

    static let maxBody = 65536
    /// The key every `/rest/` request but the health probe carries in `X-API-Key`.
    let apiKey: String
    /// The server listens on a loopback address: `Host` must then name one.
    let loopbackOnly: Bool

    /// Paths that change state: POST only.
    static let postPaths: Set<String> = ["/rest/rescan", "/rest/pause", "/rest/resume", "/rest/conflicts/resolve", "/rest/versions/restore"]

    /// Paths that read: GET only.
    static let getPaths: Set<String> = ["/rest/health", "/rest/status", "/rest/peers", "/rest/transfers", "/rest/changes", "/rest/events",
                                        "/rest/conflicts", "/rest/file", "/rest/versions"]

    func check(_ request: HTTPRequestHead, path: String, bodyBytes: Int, tls: Bool) -> Refusal? {
        // 1. Host: a page on a name its attacker controls (DNS rebinding) sends that name.
        guard let host = request.headers.first(name: "Host"), !host.isEmpty else {
            return Refusal(status: .badRequest, reason: "no Host header")
        }
        if loopbackOnly && !Self.isLoopbackHost(host) {
            return Refusal(status: .forbidden, reason: "this server answers to loopback names only (127.0.0.1, localhost, [::1]), not '\(host.prefix(100))'")
        }
        // 2. Cross-site: a browser names the page that sent the request.
        if let origin = request.headers.first(name: "Origin") {
            let own = [(tls ? "https://" : "http://") + host.lowercased()]
            if !own.contains(origin.lowercased()) {
                return Refusal(status: .forbidden, reason: "cross-origin requests are refused (Origin \(origin.prefix(100)))")
            }
        }
        if request.headers.first(name: "Sec-Fetch-Site")?.lowercased() == "cross-site" {
            return Refusal(status: .forbidden, reason: "cross-site requests are refused")
        }
        guard path.hasPrefix("/rest/") else {
            guard request.method == .GET else { return Refusal(status: .methodNotAllowed, reason: "only GET here") }
            return nil
        }
        // 3. The key, compared in constant time.
        if path != "/rest/health" {
            guard let given = request.headers.first(name: "X-API-Key"), Self.same(given, apiKey) else {
                return Refusal(status: .unauthorized, reason: "missing or wrong API key: send it in the X-API-Key header (`syncctl gui-url` prints a link with it)")
            }
        }
        // 4. Methods and bodies: state changes are POSTs of JSON (a form cannot send one).
        if Self.postPaths.contains(path) {
            guard request.method == .POST else { return Refusal(status: .methodNotAllowed, reason: "use POST for \(path)") }
            let type = request.headers.first(name: "Content-Type")?.lowercased() ?? ""
            let isJSON = type.hasPrefix("application/json")
            if (bodyBytes > 0 && !isJSON) || (!type.isEmpty && !isJSON) {
                return Refusal(status: .unsupportedMediaType, reason: "send JSON (Content-Type: application/json)")
            }
        } else if Self.getPaths.contains(path), request.method != .GET {
            return Refusal(status: .methodNotAllowed, reason: "use GET for \(path)")
        }
        // Any other /rest/ path is the router's 404, whatever the method.
        return nil
    }

    static func isLoopbackHost(_ hostHeader: String) -> Bool {
        var name = hostHeader.lowercased()
        if name.hasPrefix("[") {
            guard let close = name.firstIndex(of: "]") else { return false }
            name = String(name[name.index(after: name.startIndex)..<close])
            return name == "::1"
        }
        if let colon = name.lastIndex(of: ":") { name = String(name[..<colon]) }
        if name == "localhost" || name.hasSuffix(".localhost") { return true }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// A loopback address as the socket reports it (or as given, before binding).
    static func isLoopbackAddress(_ host: String) -> Bool {
        let h = host.lowercased()
        return h == "::1" || h == "0:0:0:0:0:0:0:1" || h == "localhost" || h.hasPrefix("127.") || h.hasPrefix("::ffff:127.")
    }

    /// Equal strings, in time that does not depend on where they differ.
    static func same(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var diff = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) { diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0) }
        return diff == 0
    }
}

/// A request's target, read once and strictly: an origin-form path (one leading slash) with no
/// percent escapes, backslashes, dot segments, control characters or fragment, and its query.
/// Nil for anything else, which is answered 400: the security checks and the router must never
/// see two readings of one target (`/%72est/pause` is not `/rest/pause` to one and the other).
struct RequestTarget: Sendable {
    let path: String
    let query: [String: String]

    init?(_ uri: String) {
        guard uri.hasPrefix("/"), !uri.hasPrefix("//"), !uri.contains("#") else { return nil }
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts[0])
        guard path.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "%") && $0 != UInt8(ascii: "\\") }),
              !path.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }) else { return nil }
        var query: [String: String] = [:]
        if parts.count == 2 {
            var components = URLComponents()
            components.percentEncodedQuery = String(parts[1])
            guard let items = components.queryItems else { return nil }
            for item in items { query[item.name] = item.value ?? "" }
        }
        self.path = path
        self.query = query
    }
}

/// Counts the connections being served (`GUIServer.maxConnections`).
actor ConnectionGate {
    let limit: Int
    private var open = 0
    init(limit: Int) { self.limit = limit }
    func enter() -> Bool {
        guard open < limit else { return false }
        open += 1
        return true
    }
    func leave() { open -= 1 }
}
