import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import SyncKit

/// The REST API's handlers (docs/REST-API.md). Requests reach them only after `GUISecurity`
/// let them through; each answers JSON, the page, a file's head, or the events stream.
struct RESTAPI: Sendable {
    let node: SyncNode
    let hub: EventHub
    let logger: Logger

    init(node: SyncNode, logger: Logger) {
        self.node = node
        self.logger = logger
        hub = EventHub(node: node)
    }

    struct Failure: Encodable { var error: String }
    struct OK: Encodable { var ok = true }

    func handle(_ request: HTTPRequestHead, target: RequestTarget, body: ByteBuffer, writer: ResponseWriter) async throws {
        let path = target.path, query = target.query
        switch path {
        case "/", "/index.html":
            try await writer.send(.ok, contentType: "text/html; charset=utf-8", body: PackageResources.dashboard_html)
        case "/rest/health":
            try await writer.json(.ok, OK())
        case "/rest/status":
            try await writer.send(.ok, contentType: "application/json", body: Array(await statusJSON()))
        case "/rest/peers":
            let peers = await node.peerSummaries()
            let rates = await hub.rates()
            try await writer.json(.ok, peers.map { PeerView($0, rate: rates[$0.nodeID]) })
        case "/rest/transfers":
            try await writer.json(.ok, await node.transfers())
        case "/rest/changes":
            try await writer.json(.ok, await hub.recentChanges())
        case "/rest/events":
            let since = Int(request.headers.first(name: "Last-Event-ID") ?? query["since"] ?? "")
            try await events(writer: writer, since: since)
        case "/rest/conflicts":
            try await writer.json(.ok, await node.conflicts())
        case "/rest/file":
            guard let file = query["path"], !file.isEmpty else { return try await writer.json(.badRequest, Failure(error: "name a file: ?path=...")) }
            do {
                guard let bytes = try node.head(of: file, limit: 256 * 1024) else {
                    return try await writer.json(.notFound, Failure(error: "no file \(file) in the folder"))
                }
                // Text shows as text; anything else is offered as bytes (never as HTML).
                let text = String(validating: bytes, as: UTF8.self) != nil
                try await writer.send(.ok, contentType: text ? "text/plain; charset=utf-8" : "application/octet-stream", body: bytes)
            } catch let error as SyncError {
                try await writer.json(Self.status(for: error), Failure(error: error.message))
            }
        case "/rest/conflicts/resolve":
            struct Resolve: Decodable { var copy: String; var keep: String }
            struct Resolved: Encodable { var ok = true; var kept: String; var removed: String? }
            guard let r = try? JSONDecoder().decode(Resolve.self, from: Data(body.readableBytesView)) else {
                return try await writer.json(.badRequest, Failure(error: "send {\"copy\": \"<conflict copy>\", \"keep\": \"original\" | \"copy\" | \"both\"}"))
            }
            guard let choice = SyncNode.ConflictChoice(rawValue: r.keep) else {
                return try await writer.json(.badRequest, Failure(error: "keep is one of original, copy, both; not '\(r.keep)'"))
            }
            do {
                let done = try await node.resolveConflict(copy: r.copy, keep: choice)
                await hub.note(path: done.kept, action: "resolved", origin: "local")
                try await writer.json(.ok, Resolved(kept: done.kept, removed: done.removed))
            } catch let error as SyncError {
                try await writer.json(Self.status(for: error), Failure(error: error.message))
            }
        case "/rest/versions":
            let answer = await Versions.answer(node: node, request: .init(path: query["path"].flatMap { $0.isEmpty ? nil : $0 }, at: nil), restore: false, logger: logger)
            try await writer.json(answer.error == nil ? .ok : .badRequest, answer)
        case "/rest/versions/restore":
            guard let request = body.readableBytes == 0 ? nil : try? JSONDecoder().decode(Versions.Request.self, from: Data(body.readableBytesView)), request.path != nil else {
                return try await writer.json(.badRequest, Failure(error: "send {\"path\": \"<file>\", \"at\": <Unix seconds, optional>}"))
            }
            let answer = await Versions.answer(node: node, request: request, restore: true, logger: logger)
            if answer.restored != nil { await hub.note(path: request.path ?? "", action: "restored", origin: "local") }
            try await writer.json(answer.error == nil ? .ok : answer.error!.hasPrefix("no version") ? .notFound : .badRequest, answer)
        case "/rest/rescan":
            if query["wait"] == "true" { await node.rescan() } else { Task { await node.rescan() } }
            try await writer.json(.ok, OK())
        case "/rest/pause", "/rest/resume":
            await node.setPaused(path == "/rest/pause")
            await hub.touch()
            try await writer.json(.ok, OK())
        default:
            try await writer.json(.notFound, Failure(error: "no such endpoint: \(path.prefix(200)) (see docs/REST-API.md)"))
        }
    }

    static func status(for error: SyncError) -> HTTPResponseStatus {
        switch error.code {
        case .notFound: .notFound
        case .unsafePath, .protocolViolation: .badRequest
        case .configuration, .stateConflict: .conflict
        default: .internalServerError
        }
    }

    /// `syncctl status --json`'s fields, the folder's state, and the peers' rates, as one object.
    func statusJSON() async -> Data {
        let (status, folder) = await node.statusAndFolderState()
        let rates = await hub.rates()
        // What is still pulled from each peer changes as pulls go: sent with every status (it
        // walks only the paths still needed, not the index).
        let summaries = Dictionary(await node.peerSummaries().map { ($0.nodeID, $0) }) { a, _ in a }
        var object = (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(status))) as? [String: Any] ?? [:]
        let extra = (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(folder))) as? [String: Any] ?? [:]
        object.merge(extra) { $1 }
        if folder.lastScan == nil { object["lastScan"] = NSNull() }
        if var peers = object["peers"] as? [[String: Any]] {
            for i in peers.indices {
                let rate = (peers[i]["nodeID"] as? String).flatMap { rates[$0] }
                peers[i]["rateIn"] = rate?.in ?? 0
                peers[i]["rateOut"] = rate?.out ?? 0
                if let summary = (peers[i]["nodeID"] as? String).flatMap({ summaries[$0] }) {
                    peers[i]["pullFiles"] = summary.pullFiles
                    peers[i]["pullBytes"] = summary.pullBytes
                    peers[i]["protocol"] = summary.protocol
                }
            }
            object["peers"] = peers
        }
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    }

    /// `GET /rest/events`: the node's events as they happen, with `status` and `transfers`
    /// pushed while things move. One loop writes everything (node events, a 500 ms tick), so
    /// writes never interleave; it ends when the client goes (a write fails) or the server
    /// stops (graceful shutdown cancels it).
    func events(writer: ResponseWriter, since: Int?) async throws {
        guard let (replay, stream, token) = await hub.subscribe(since: since) else {
            return try await writer.json(.serviceUnavailable, Failure(error: "too many event streams open (\(EventHub.maxListeners)); close some tabs"))
        }
        try await writer.startStream(contentType: "text/event-stream; charset=utf-8")
        enum Input: Sendable { case event(EventHub.Item), tick }
        let (merged, feed) = AsyncStream<Input>.makeStream(bufferingPolicy: .bufferingNewest(1000))
        let forward = Task {
            for await item in stream { feed.yield(.event(item)) }
            feed.finish()
        }
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                feed.yield(.tick)
            }
        }
        defer {
            forward.cancel()
            ticker.cancel()
            feed.finish()
            Task { await hub.unsubscribe(token) }
        }
        try await writer.chunk("retry: 2000\n: connected\n\n")
        for item in replay { try await writer.chunk(item.sse) }
        try await writer.chunk(Self.sse(event: "status", data: await statusJSON()))
        try await cancelWhenGracefulShutdown {
            var lastStatus = ContinuousClock.now, lastWrite = ContinuousClock.now
            var dirty = false, transfersShown = false
            for await input in merged {
                switch input {
                case .event(let item):
                    try await writer.chunk(item.sse)
                    dirty = true
                    lastWrite = .now
                case .tick:
                    let transfers = await node.transfers()
                    if !transfers.isEmpty || transfersShown {
                        let data = try JSONEncoder().encode(transfers)
                        try await writer.chunk(Self.sse(event: "transfers", data: data))
                        transfersShown = !transfers.isEmpty
                        dirty = true
                        lastWrite = .now
                    }
                    if await hub.takeTouched() { dirty = true }
                    if dirty || ContinuousClock.now - lastStatus > .seconds(10) {
                        try await writer.chunk(Self.sse(event: "status", data: await statusJSON()))
                        dirty = false
                        lastStatus = .now
                        lastWrite = .now
                    }
                    if ContinuousClock.now - lastWrite > .seconds(15) {
                        try await writer.chunk(": keep-alive\n\n")
                        lastWrite = .now
                    }
                }
            }
        }
        try? await writer.endStream()
    }

    static func sse(event: String, data: Data, id: Int? = nil) -> String {
        (id.map { "id: \($0)\n" } ?? "") + "event: \(event)\ndata: \(String(decoding: data, as: UTF8.self))\n\n"
    }
}

/// A peer as `/rest/peers` shows it: the node's summary and the rates the hub measured.
struct PeerView: Encodable {
    var nodeID, shortID, name, address, `protocol`: String
    var connected, caughtUp: Bool
    var bytesIn, bytesOut, pullFiles: Int
    var pullBytes: UInt64
    var rateIn, rateOut: Double

    init(_ p: SyncNode.PeerSummary, rate: (in: Double, out: Double)?) {
        nodeID = p.nodeID; shortID = p.shortID; name = p.name; address = p.address; `protocol` = p.protocol
        connected = p.connected; caughtUp = p.caughtUp
        bytesIn = p.bytesIn; bytesOut = p.bytesOut; pullFiles = p.pullFiles; pullBytes = p.pullBytes
        rateIn = rate?.in ?? 0; rateOut = rate?.out ?? 0
    }
}

/// The node's events for the GUI: the latest 200 kept (with ids, for `Last-Event-ID`), the
/// latest 200 changes to files (who changed what, when), the peers' traffic sampled every
/// second (rates), and the streams of the clients listening now.
actor EventHub {
    struct Item: Sendable {
        var id: Int
        var type: String
        var json: Data
        var sse: String { RESTAPI.sse(event: type, data: json, id: id) }
    }

    struct Change: Encodable, Sendable {
        var time: Double
        var path: String
        /// changed, deleted, conflict, resolved, restored
        var action: String
        /// local: made on this node; remote: pulled from a peer.
        var origin: String
        var by: String
        var byName: String
    }

    let node: SyncNode
    private var items: [Item] = []
    private var changes: [Change] = []
    private var nextID = 1
    private var listeners: [Int: AsyncStream<Item>.Continuation] = [:]
    private var nextListener = 0
    private var names: [String: String] = [:]
    private var samples: [String: [(time: Double, in: Int, out: Int)]] = [:]
    private var touched = false
    static let keep = 200

    init(node: SyncNode) { self.node = node }

    /// Takes the node's events in until cancelled, and samples traffic every second.
    func run() async {
        let events = node.events()
        let sampler = Task { [weak self] in
            while !Task.isCancelled {
                await self?.sample()
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { sampler.cancel() }
        for await event in events {
            await take(event)
        }
    }

    func take(_ event: SyncEvent) async {
        var fields: [String: Any] = [:]
        let type: String
        switch event {
        case .started(let id, let port):
            type = "started"; fields = ["node": id.description, "port": port]
        case .peerConnected(let id, let name):
            type = "peerConnected"; fields = ["peer": id.description, "name": name]
            names[id.short] = name
        case .peerDisconnected(let id, let reason):
            type = "peerDisconnected"; fields = ["peer": id.description, "reason": reason]
        case .localChange(let path, let deleted):
            type = "localChange"; fields = ["path": path, "deleted": deleted]
            addChange(path: path, action: deleted ? "deleted" : "changed", origin: "local", by: node.id.short)
        case .pulled(let path, let operation):
            type = "pulled"; fields = ["path": path, "operation": "\(operation)"]
            addChange(path: path, action: operation == .delete ? "deleted" : "changed", origin: "remote", by: nil)
        case .conflict(let path, let copyPath):
            type = "conflict"; fields = ["path": path, "copy": copyPath]
            addChange(path: path, action: "conflict", origin: "remote", by: nil)
        case .refused(let path, let peer, let reason):
            type = "refused"; fields = ["path": path, "peer": peer.description, "reason": reason]
        case .pullFailed(let path, let reason):
            type = "pullFailed"; fields = ["path": path, "reason": reason]
        case .peerRejected(let address, let reason):
            type = "peerRejected"; fields = ["address": address, "reason": reason]
        case .inSync:
            type = "inSync"
        }
        fields["time"] = Date().timeIntervalSince1970
        let json = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data("{}".utf8)
        let item = Item(id: nextID, type: type, json: json)
        nextID += 1
        items.append(item)
        if items.count > Self.keep { items.removeFirst(items.count - Self.keep) }
        for l in listeners.values { l.yield(item) }
    }

    /// `by` nil: a pulled change, whose author the index tells (looked up when the list is
    /// asked for, in one call for all: not one hop to the node per pulled file).
    private func addChange(path: String, action: String, origin: String, by: String?) {
        changes.append(Change(time: Date().timeIntervalSince1970, path: path, action: action, origin: origin, by: by ?? "", byName: ""))
        if changes.count > Self.keep { changes.removeFirst(changes.count - Self.keep) }
    }

    /// A change the API made itself (a conflict settled, a version restored).
    func note(path: String, action: String, origin: String) {
        addChange(path: path, action: action, origin: origin, by: node.id.short)
        touched = true
    }

    /// Something changed that no node event reports (pause): the next tick sends status.
    func touch() { touched = true }
    func takeTouched() -> Bool {
        defer { touched = false }
        return touched
    }

    func recentChanges() async -> [Change] {
        let unknown = Set(changes.filter { $0.by.isEmpty }.map(\.path))
        let authors = unknown.isEmpty ? [:] : await node.authors(of: unknown)
        for i in changes.indices where changes[i].by.isEmpty {
            changes[i].by = authors[changes[i].path] ?? ""
        }
        for i in changes.indices where changes[i].byName.isEmpty && !changes[i].by.isEmpty {
            let by = changes[i].by
            changes[i].byName = by == node.id.short ? node.name : names[by] ?? by
        }
        return changes.reversed()
    }

    /// Streams open at once, at most (each asks the node for status twice a second).
    static let maxListeners = 32

    func subscribe(since: Int?) -> (replay: [Item], stream: AsyncStream<Item>, token: Int)? {
        guard listeners.count < Self.maxListeners else { return nil }
        let (stream, continuation) = AsyncStream<Item>.makeStream(bufferingPolicy: .bufferingNewest(1000))
        nextListener += 1
        listeners[nextListener] = continuation
        let replay = since.map { s in items.filter { $0.id > s } } ?? []
        return (replay, stream, nextListener)
    }

    func unsubscribe(_ token: Int) { listeners.removeValue(forKey: token)?.finish() }

    private func sample() async {
        let now = Date().timeIntervalSince1970
        for t in await node.peerTraffic() {
            names[String(t.nodeID.prefix(7))] = t.name
            var list = samples[t.nodeID, default: []]
            list.append((now, t.bytesIn, t.bytesOut))
            list.removeAll { now - $0.time > 5 }
            samples[t.nodeID] = list
        }
        for (id, list) in samples where list.last.map({ now - $0.time > 5 }) ?? true { samples[id] = nil }
    }

    /// Bytes per second in and out of each peer over the last two seconds or so.
    func rates() -> [String: (in: Double, out: Double)] {
        var out: [String: (in: Double, out: Double)] = [:]
        for (id, list) in samples {
            guard let last = list.last, let first = list.first(where: { last.time - $0.time <= 2.5 }), last.time - first.time >= 0.5 else { continue }
            let dt = last.time - first.time
            // A reconnection starts the counters again: no negative rate.
            out[id] = (Double(max(0, last.in - first.in)) / dt, Double(max(0, last.out - first.out)) / dt)
        }
        return out
    }
}
