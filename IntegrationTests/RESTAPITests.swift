import Foundation
import SyncKit
import Testing

extension Integration {
    /// The dashboard's REST API (docs/REST-API.md) on real `syncctl run` processes: every
    /// endpoint, what it refuses (no key, a wrong key, a foreign Origin or Host, a form post, the
    /// wrong method), and what its answers do on every node.
    @Suite(.serialized) struct RESTAPITests {
        typealias Cluster = MultiProcessTests.Cluster

        /// A plain HTTP/1.1 exchange over a socket, so a test controls every header (Host
        /// included) and sees the status line as sent.
        struct Response {
            var status: Int
            var headers: [String: String]
            var body: [UInt8]
            var text: String { String(decoding: body, as: UTF8.self) }
            var json: Any? { try? JSONSerialization.jsonObject(with: Data(body)) }
        }

        struct HTTPFailure: Error, CustomStringConvertible { var description: String }

        static func request(_ port: Int, _ method: String, _ target: String, headers: [String: String] = [:], body: [UInt8] = [],
                            readUntil: String? = nil, timeout: Double = 10) throws -> Response {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw HTTPFailure(description: "socket") }
            defer { close(fd) }
            var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard ok else { throw HTTPFailure(description: "cannot connect to 127.0.0.1:\(port)") }
            var all = ["Host": "127.0.0.1:\(port)", "Connection": "close"]
            for (k, v) in headers { all[k] = v }
            if !body.isEmpty { all["Content-Length"] = "\(body.count)" }
            var text = "\(method) \(target) HTTP/1.1\r\n"
            for (k, v) in all.sorted(by: { $0.key < $1.key }) where !v.isEmpty { text += "\(k): \(v)\r\n" }
            let bytes = Array((text + "\r\n").utf8) + body
            guard write(fd, bytes, bytes.count) == bytes.count else { throw HTTPFailure(description: "write") }
            var raw = [UInt8]()
            var buffer = [UInt8](repeating: 0, count: 65536)
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                raw += buffer[..<n]
                if let readUntil, String(decoding: raw, as: UTF8.self).contains(readUntil) { break }
            }
            guard let split = raw.firstRange(of: Array("\r\n\r\n".utf8)) else { throw HTTPFailure(description: "no HTTP response: \(String(decoding: raw, as: UTF8.self))") }
            let head = String(decoding: raw[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
            let status = Int(head[0].split(separator: " ")[1]) ?? 0
            var h: [String: String] = [:]
            for line in head.dropFirst() {
                if let colon = line.firstIndex(of: ":") { h[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
            }
            var payload = Array(raw[split.upperBound...])
            if h["transfer-encoding"] == "chunked" { payload = dechunk(payload) }
            return Response(status: status, headers: h, body: payload)
        }

        static func dechunk(_ data: [UInt8]) -> [UInt8] {
            var out = [UInt8](), i = 0
            while i < data.count, let lineEnd = data[i...].firstRange(of: Array("\r\n".utf8)) {
                guard let size = Int(String(decoding: data[i..<lineEnd.lowerBound], as: UTF8.self), radix: 16), size > 0 else { break }
                let start = lineEnd.upperBound
                out += data[start..<min(start + size, data.count)]
                i = start + size + 2
            }
            return out
        }

        /// A started cluster whose nodes serve the GUI on free ports, with their keys.
        struct GUICluster {
            let cluster: Cluster
            var guiPorts: [Int] = []
            var keys: [String] = []

            init(count: Int, extra: [String] = [], prepare: (Cluster) throws -> Void = { _ in }) async throws {
                cluster = try Cluster(count: count)
                cluster.extraArgs = ["--gui-address", "127.0.0.1:0"] + extra
                try prepare(cluster)
                for i in 0..<count { try cluster.start(i) }
                for i in 0..<count {
                    let state = cluster.folder(i) + "/.synckit"
                    let deadline = ContinuousClock.now + .seconds(30)
                    var address: String?
                    while ContinuousClock.now < deadline {
                        address = try? String(contentsOfFile: state + "/gui-address", encoding: .utf8)
                        if address != nil { break }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    guard let address, let port = Int(address.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").last?.filter(\.isNumber) ?? "") else {
                        print(cluster.logs())
                        throw HTTPFailure(description: "node \(i) did not write its GUI address")
                    }
                    guiPorts.append(port)
                    keys.append(try String(contentsOfFile: state + "/gui-api-key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
                }
            }

            func get(_ i: Int, _ target: String) throws -> Response {
                try RESTAPITests.request(guiPorts[i], "GET", target, headers: ["X-API-Key": keys[i]])
            }

            func post(_ i: Int, _ target: String, _ json: String? = nil) throws -> Response {
                try RESTAPITests.request(guiPorts[i], "POST", target, headers: ["X-API-Key": keys[i], "Content-Type": json == nil ? "" : "application/json"],
                                         body: Array((json ?? "").utf8))
            }

            /// Polls until `ok` holds (the cluster's logs are printed when it never does).
            func eventually(_ what: String, timeout: Duration = .seconds(30), _ ok: () throws -> Bool) async throws {
                let deadline = ContinuousClock.now + timeout
                while ContinuousClock.now < deadline {
                    if (try? ok()) == true { return }
                    try await Task.sleep(for: .milliseconds(50))
                }
                print(cluster.logs())
                throw HTTPFailure(description: "never: \(what)")
            }

            func stop() {
                cluster.stopAll()
                try? FileManager.default.removeItem(atPath: cluster.root)
            }
        }

        static let getPaths = ["/rest/status", "/rest/peers", "/rest/transfers", "/rest/changes", "/rest/events", "/rest/conflicts",
                               "/rest/file?path=a.txt", "/rest/versions"]
        static let postPaths = ["/rest/rescan", "/rest/pause", "/rest/resume", "/rest/conflicts/resolve", "/rest/versions/restore"]

        @Test func everyEndpointRefusesNoKeyAWrongKeyAForeignOriginOrHostAFormAndTheWrongMethod() async throws {
            let c = try await GUICluster(count: 2) { FileManager.default.createFile(atPath: $0.folder(0) + "/a.txt", contents: Data("a\n".utf8)) }
            defer { c.stop() }
            let port = c.guiPorts[0], key = c.keys[0]
            // The key: 64 hex digits, in a file only the owner reads; gui-url prints it.
            #expect(key.count == 64 && key.allSatisfy(\.isHexDigit))
            var st = stat()
            #expect(stat(c.cluster.folder(0) + "/.synckit/gui-api-key", &st) == 0 && st.st_mode & 0o777 == 0o600)
            let url = Process()
            url.executableURL = URL(fileURLWithPath: MultiProcessTests.syncctl)
            url.arguments = ["gui-url", "--dir", c.cluster.folder(0)]
            let pipe = Pipe()
            url.standardOutput = pipe
            try url.run()
            url.waitUntilExit()
            let printed = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(printed.trimmingCharacters(in: .whitespacesAndNewlines) == "http://127.0.0.1:\(port)/#key=\(key)")

            // The probe needs no key; the page itself holds no secret and is served to anyone.
            #expect(try Self.request(port, "GET", "/rest/health").status == 200)
            let page = try Self.request(port, "GET", "/")
            #expect(page.status == 200 && page.headers["content-type"]?.hasPrefix("text/html") == true)
            #expect(page.headers["x-frame-options"] == "DENY" && page.headers["content-security-policy"]?.contains("frame-ancestors 'none'") == true)
            #expect(!page.text.contains(key))

            for path in Self.getPaths {
                #expect(try Self.request(port, "GET", path).status == 401, "GET \(path) without a key")
                #expect(try Self.request(port, "GET", path, headers: ["X-API-Key": String(key.reversed())]).status == 401, "GET \(path) with a wrong key")
                #expect(try Self.request(port, "GET", path, headers: ["X-API-Key": key, "Origin": "http://evil.example"]).status == 403, "GET \(path) from a foreign origin")
                #expect(try Self.request(port, "GET", path, headers: ["X-API-Key": key, "Origin": "http://127.0.0.1:\(port + 1)"]).status == 403, "GET \(path) from another port")
                #expect(try Self.request(port, "GET", path, headers: ["X-API-Key": key, "Sec-Fetch-Site": "cross-site"]).status == 403, "GET \(path) cross-site")
                #expect(try Self.request(port, "GET", path, headers: ["X-API-Key": key, "Host": "rebound.evil.example:\(port)"]).status == 403, "GET \(path) by a rebound name")
                if path != "/rest/events" {
                    #expect(try Self.request(port, "POST", path, headers: ["X-API-Key": key]).status == 405, "POST to \(path)")
                }
            }
            for path in Self.postPaths {
                let json = ["Content-Type": "application/json"]
                #expect(try Self.request(port, "POST", path, headers: json).status == 401, "POST \(path) without a key")
                #expect(try Self.request(port, "POST", path, headers: json.merging(["X-API-Key": "0" + key.dropFirst()]) { $1 }).status == 401, "POST \(path) with a wrong key")
                #expect(try Self.request(port, "POST", path, headers: json.merging(["X-API-Key": key, "Origin": "https://evil.example"]) { $1 }).status == 403, "POST \(path) from a foreign origin")
                #expect(try Self.request(port, "POST", path, headers: json.merging(["X-API-Key": key, "Origin": "null"]) { $1 }).status == 403, "POST \(path) from an opaque origin")
                #expect(try Self.request(port, "GET", path, headers: ["X-API-Key": key]).status == 405, "GET \(path)")
                for form in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"] {
                    #expect(try Self.request(port, "POST", path, headers: ["X-API-Key": key, "Content-Type": form], body: Array("a=b".utf8)).status == 415, "a \(form) post to \(path)")
                }
            }
            // One reading of a target for the checks and the router: escapes, doubled slashes,
            // absolute forms, dot segments and fragments are refused, never routed.
            for target in ["/%72est/status", "/%72est/pause", "///rest/status", "//127.0.0.1/rest/status", "http://127.0.0.1/rest/pause",
                           "/rest/%70ause", "/rest/pause#x", "/rest/../rest/status", "/./rest/status", "/rest/status%00", "*"] {
                for key in ["", key] {
                    let r = try Self.request(port, "GET", target, headers: ["X-API-Key": key])
                    #expect(r.status == 400 || r.status == 401, "GET \(target) \(key.isEmpty ? "without" : "with") the key: \(r.status)")
                    let p = try Self.request(port, "POST", target, headers: ["X-API-Key": key, "Content-Type": "application/json"])
                    #expect(p.status == 400 || p.status == 401, "POST \(target) \(key.isEmpty ? "without" : "with") the key: \(p.status)")
                }
            }
            #expect(try c.post(0, "/rest/no-such-thing", "{}").status == 404)
            // Nothing refused took effect: the node is not paused.
            let status = try c.get(0, "/rest/status").json as? [String: Any]
            #expect(status?["paused"] as? Bool == false)
            #expect(try c.get(0, "/rest/nothing-here").status == 404)
            // The same origin is let through (the page's own requests carry it).
            #expect(try Self.request(port, "GET", "/rest/status", headers: ["X-API-Key": key, "Origin": "http://127.0.0.1:\(port)", "Sec-Fetch-Site": "same-origin"]).status == 200)
            #expect(try Self.request(port, "GET", "/rest/status", headers: ["X-API-Key": key, "Host": "localhost:\(port)", "Origin": "http://localhost:\(port)"]).status == 200)
        }

        @Test func statusPeersChangesTransfersAndTheEventStreamDescribeTheCluster() async throws {
            let c = try await GUICluster(count: 2) { FileManager.default.createFile(atPath: $0.folder(0) + "/first.txt", contents: Data("1\n".utf8)) }
            defer { c.stop() }
            try await c.eventually("both nodes in sync with first.txt") {
                let state = (try c.get(0, "/rest/status").json as? [String: Any])?["state"] as? String
                return FileManager.default.fileExists(atPath: c.cluster.folder(1) + "/first.txt") && state == "idle"
            }
            let status = try #require(try c.get(0, "/rest/status").json as? [String: Any])
            #expect(status["name"] as? String == "n0")
            #expect(status["files"] as? Int == 1)
            #expect(status["percentInSync"] as? Double == 100)
            #expect(status["lastScan"] is Double)
            #expect((status["peers"] as? [[String: Any]])?.first?["name"] as? String == "n1")
            #expect((status["peers"] as? [[String: Any]])?.first?["pullFiles"] as? Int == 0)

            let peers = try #require(try c.get(0, "/rest/peers").json as? [[String: Any]])
            #expect(peers.count == 1)
            #expect(peers.first?["name"] as? String == "n1" && peers.first?["connected"] as? Bool == true)
            #expect(peers.first?["protocol"] as? String == "synckit")
            #expect(peers.first?["address"] as? String != "")

            // A file written on n1 reaches n0: the stream says so as it happens.
            let stream = Task.detached { try Self.request(c.guiPorts[0], "GET", "/rest/events", headers: ["X-API-Key": c.keys[0]], readUntil: "\"path\":\"news.txt\"", timeout: 20) }
            try await Task.sleep(for: .milliseconds(500))
            FileManager.default.createFile(atPath: c.cluster.folder(1) + "/news.txt", contents: Data(bytes(300_000, seed: 7)))
            let events = try await stream.value
            #expect(events.status == 200 && events.headers["content-type"]?.hasPrefix("text/event-stream") == true)
            #expect(events.text.contains("event: status"))
            #expect(events.text.contains("event: pulled"))

            // The change is listed: what, by whom (n1's short ID and name), pulled here.
            let n1 = try #require(peers.first?["shortID"] as? String)
            try await c.eventually("news.txt in n0's changes") {
                let changes = try c.get(0, "/rest/changes").json as? [[String: Any]] ?? []
                return changes.contains { $0["path"] as? String == "news.txt" && $0["by"] as? String == n1 && $0["byName"] as? String == "n1" && $0["origin"] as? String == "remote" }
            }
            // n1's own list says it made the change there.
            let theirs = try c.get(1, "/rest/changes").json as? [[String: Any]] ?? []
            #expect(theirs.contains { $0["path"] as? String == "news.txt" && $0["origin"] as? String == "local" })
            // Nothing is in flight once in sync.
            try await c.eventually("no transfers") { (try c.get(0, "/rest/transfers").json as? [Any])?.isEmpty == true }
            // The stream replays what it still holds after a given id (a reconnecting page).
            let replay = try Self.request(c.guiPorts[0], "GET", "/rest/events?since=0", headers: ["X-API-Key": c.keys[0]], readUntil: "news.txt", timeout: 10)
            #expect(replay.text.contains("id: 1\n"))
        }

        @Test func transfersShowAPullInFlightWithItsProgress() async throws {
            let c = try await GUICluster(count: 2)
            defer { c.stop() }
            try await c.eventually("connected") { (try c.get(1, "/rest/peers").json as? [[String: Any]])?.first?["connected"] as? Bool == true }
            let size = 192 << 20
            FileManager.default.createFile(atPath: c.cluster.folder(0) + "/big.bin", contents: Data(bytes(size, seed: 192)))
            var seen: [(done: Int, size: Int)] = []
            var percents: [Double] = []
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline {
                if let list = try c.get(1, "/rest/transfers").json as? [[String: Any]],
                   let t = list.first(where: { $0["path"] as? String == "big.bin" }), let done = t["done"] as? Int, let total = t["size"] as? Int {
                    seen.append((done, total))
                    if let percent = (try c.get(1, "/rest/status").json as? [String: Any])?["percentInSync"] as? Double { percents.append(percent) }
                }
                if FileManager.default.fileExists(atPath: c.cluster.folder(1) + "/big.bin") { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(!seen.isEmpty, "the pull of big.bin never showed in /rest/transfers")
            #expect(seen.allSatisfy { $0.size == size && $0.done <= size })
            #expect(seen.contains { $0.done > 0 && $0.done < size }, "no progress between 0 and the size was seen: \(seen.prefix(5))")
            #expect(percents.contains { $0 > 0 && $0 < 100 }, "the folder's percentage did not move with the pull: \(percents.prefix(5))")
        }

        @Test func rescanPauseAndResume() async throws {
            let c = try await GUICluster(count: 2, extra: ["--no-watch", "--rescan-interval", "3600"])
            defer { c.stop() }
            try await c.eventually("connected") { (try c.get(0, "/rest/peers").json as? [[String: Any]])?.first?["connected"] as? Bool == true }
            // No watcher and no periodic scan: only the API's rescan finds the new file.
            FileManager.default.createFile(atPath: c.cluster.folder(0) + "/found.txt", contents: Data("found\n".utf8))
            #expect(try c.post(0, "/rest/rescan?wait=true").status == 200)
            try await c.eventually("found.txt on n1") { FileManager.default.fileExists(atPath: c.cluster.folder(1) + "/found.txt") }

            // Paused, n1 pulls nothing, and says so.
            #expect(try c.post(1, "/rest/pause").status == 200)
            #expect((try c.get(1, "/rest/status").json as? [String: Any])?["state"] as? String == "paused")
            FileManager.default.createFile(atPath: c.cluster.folder(0) + "/held.txt", contents: Data("held\n".utf8))
            #expect(try c.post(0, "/rest/rescan?wait=true").status == 200)
            try await c.eventually("n1 knows it needs held.txt") { ((try c.get(1, "/rest/status").json as? [String: Any])?["needFiles"] as? Int ?? 0) >= 1 }
            try await Task.sleep(for: .seconds(1))
            #expect(!FileManager.default.fileExists(atPath: c.cluster.folder(1) + "/held.txt"))
            let peers = try c.get(1, "/rest/peers").json as? [[String: Any]] ?? []
            #expect(peers.first?["pullFiles"] as? Int == 1)
            // Resumed, it does.
            #expect(try c.post(1, "/rest/resume", "{}").status == 200)
            try await c.eventually("held.txt on n1") { FileManager.default.fileExists(atPath: c.cluster.folder(1) + "/held.txt") }
            try await c.eventually("n1 idle") { (try c.get(1, "/rest/status").json as? [String: Any])?["state"] as? String == "idle" }
        }

        @Test func conflictsAreListedComparedAndSettledOnEveryNode() async throws {
            // The same three names with other content on each node, written before either
            // starts: three conflicts, each with one copy.
            let c = try await GUICluster(count: 2) { cluster in
                for (i, content) in ["older", "newer"].enumerated() {
                    for name in ["keep-original.txt", "keep-copy.txt", "keep-both.txt"] {
                        let path = cluster.folder(i) + "/" + name
                        FileManager.default.createFile(atPath: path, contents: Data("\(content) \(name)\n".utf8))
                        // n1's version is the newer: it wins, n0's goes to the copy.
                        var times = [timespec(tv_sec: 1_700_000_000 + i * 100, tv_nsec: 0), timespec(tv_sec: 1_700_000_000 + i * 100, tv_nsec: 0)]
                        utimensat(AT_FDCWD, path, &times, 0)
                    }
                }
            }
            defer { c.stop() }
            var conflicts: [[String: Any]] = []
            try await c.eventually("three conflicts listed on both nodes") {
                conflicts = try c.get(0, "/rest/conflicts").json as? [[String: Any]] ?? []
                let other = try c.get(1, "/rest/conflicts").json as? [[String: Any]] ?? []
                return conflicts.count == 3 && other.count == 3
            }
            func copy(of original: String) throws -> String {
                try #require(conflicts.first { $0["original"] as? String == original }?["copy"] as? String)
            }
            let first = try #require(conflicts.first { $0["original"] as? String == "keep-copy.txt" })
            #expect((first["copyInfo"] as? [String: Any])?["size"] as? Int == "older keep-copy.txt\n".utf8.count)
            #expect((first["originalInfo"] as? [String: Any])?["size"] as? Int == "newer keep-copy.txt\n".utf8.count)
            // Both sides can be read for the side-by-side view.
            let copyPath = try copy(of: "keep-copy.txt")
            #expect(try c.get(1, "/rest/file?path=" + copyPath.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!).text == "older keep-copy.txt\n")
            #expect(try c.get(1, "/rest/file?path=keep-copy.txt").text == "newer keep-copy.txt\n")
            #expect(try c.get(1, "/rest/file?path=..%2F..%2Fetc%2Fpasswd").status == 400)
            #expect(try c.get(1, "/rest/file?path=no-such.txt").status == 404)

            // Refusals: not a copy, no such copy, outside the folder, an unknown choice.
            #expect(try c.post(1, "/rest/conflicts/resolve", #"{"copy": "keep-copy.txt", "keep": "copy"}"#).status == 400)
            #expect(try c.post(1, "/rest/conflicts/resolve", #"{"copy": "x.sync-conflict-20200101-000000-ABCDEFG.txt", "keep": "copy"}"#).status == 404)
            #expect(try c.post(1, "/rest/conflicts/resolve", #"{"copy": "../x.sync-conflict-20200101-000000-ABCDEFG.txt", "keep": "copy"}"#).status == 400)
            #expect(try c.post(1, "/rest/conflicts/resolve", "{\"copy\": \"\(copyPath)\", \"keep\": \"neither\"}").status == 400)

            // A copy whose original is gone: keeping "the original" would delete the only
            // version, so it is refused; a copy named beside a temp name is refused outright.
            FileManager.default.createFile(atPath: c.cluster.folder(1) + "/orphan.sync-conflict-20200101-000000-ABCDEFG.txt", contents: Data("orphan\n".utf8))
            FileManager.default.createFile(atPath: c.cluster.folder(1) + "/x.synckit-tmp.sync-conflict-20200101-000000-ABCDEFG", contents: Data("t\n".utf8))
            #expect(try c.post(1, "/rest/conflicts/resolve", #"{"copy": "orphan.sync-conflict-20200101-000000-ABCDEFG.txt", "keep": "original"}"#).status == 409)
            #expect(FileManager.default.fileExists(atPath: c.cluster.folder(1) + "/orphan.sync-conflict-20200101-000000-ABCDEFG.txt"))
            #expect(try c.post(1, "/rest/conflicts/resolve", #"{"copy": "x.synckit-tmp.sync-conflict-20200101-000000-ABCDEFG", "keep": "copy"}"#).status == 400)
            #expect(FileManager.default.fileExists(atPath: c.cluster.folder(1) + "/x.synckit-tmp.sync-conflict-20200101-000000-ABCDEFG"))
            #expect(try c.post(1, "/rest/conflicts/resolve", #"{"copy": "orphan.sync-conflict-20200101-000000-ABCDEFG.txt", "keep": "both"}"#).status == 200)
            try FileManager.default.removeItem(atPath: c.cluster.folder(1) + "/x.synckit-tmp.sync-conflict-20200101-000000-ABCDEFG")

            // Settled on n1; every node ends the same.
            for (original, keep) in [("keep-original.txt", "original"), ("keep-copy.txt", "copy"), ("keep-both.txt", "both")] {
                let r = try c.post(1, "/rest/conflicts/resolve", "{\"copy\": \"\(try copy(of: original))\", \"keep\": \"\(keep)\"}")
                #expect(r.status == 200, "\(keep): \(r.text)")
            }
            let expected: [String: String] = [
                "keep-original.txt": "newer keep-original.txt\n",
                "keep-copy.txt": "older keep-copy.txt\n",
                "keep-both.txt": "newer keep-both.txt\n",
            ]
            try await c.eventually("the choices on both nodes") {
                for i in 0..<2 {
                    let folder = c.cluster.folder(i)
                    func content(_ name: String) -> String? { try? String(contentsOfFile: folder + "/" + name, encoding: .utf8) }
                    for (name, text) in expected where content(name) != text { return false }
                    let names = try FileManager.default.contentsOfDirectory(atPath: folder)
                    guard !names.contains(where: { ConflictNaming.isConflictCopy($0) }) else { return false }
                    guard let both = names.first(where: { $0.hasPrefix("keep-both (conflict ") && $0.hasSuffix(").txt") }),
                          content(both) == "older keep-both.txt\n" else { return false }
                    guard content("orphan (conflict 20200101-000000 ABCDEFG).txt") == "orphan\n" else { return false }
                }
                return true
            }
            #expect((try c.get(0, "/rest/conflicts").json as? [Any])?.isEmpty == true)
            let changes = try c.get(1, "/rest/changes").json as? [[String: Any]] ?? []
            #expect(changes.contains { $0["action"] as? String == "resolved" })
        }

        @Test func versionsAreListedAndRestoredThroughTheAPI() async throws {
            let c = try await GUICluster(count: 2, extra: ["--versioning", "trashcan"]) {
                FileManager.default.createFile(atPath: $0.folder(0) + "/report.txt", contents: Data("quarterly\n".utf8))
            }
            defer { c.stop() }
            try await c.eventually("report.txt on n1") { FileManager.default.fileExists(atPath: c.cluster.folder(1) + "/report.txt") }
            try FileManager.default.removeItem(atPath: c.cluster.folder(0) + "/report.txt")
            var versions: [[String: Any]] = []
            try await c.eventually("n1 keeps the deleted report") {
                versions = (try c.get(1, "/rest/versions").json as? [String: Any])?["versions"] as? [[String: Any]] ?? []
                return versions.contains { $0["path"] as? String == "report.txt" && $0["reason"] as? String == "deleted" }
            }
            #expect((try c.get(1, "/rest/versions?path=report.txt").json as? [String: Any]).flatMap { $0["versions"] as? [Any] }?.count == 1)
            #expect(try c.post(1, "/rest/versions/restore", #"{"path": "never-was.txt"}"#).status == 404)
            #expect(try c.post(1, "/rest/versions/restore", #"{"path": "../../etc/passwd"}"#).status == 400)
            #expect(try c.post(1, "/rest/versions/restore", "{}").status == 400)
            let restored = try c.post(1, "/rest/versions/restore", #"{"path": "report.txt"}"#)
            #expect(restored.status == 200, "\(restored.text)")
            try await c.eventually("report.txt back on both nodes") {
                (0..<2).allSatisfy { (try? String(contentsOfFile: c.cluster.folder($0) + "/report.txt", encoding: .utf8)) == "quarterly\n" }
            }
        }

        @Test func aSecondNodeOnTheSameAddressRunsWithoutTheGUI() async throws {
            let c = try await GUICluster(count: 2)
            defer { c.stop() }
            // A third node asks for the address n0 holds: it logs that and syncs all the same.
            let other = try Cluster(count: 1)
            other.extraArgs = ["--gui-address", "127.0.0.1:\(c.guiPorts[0])", "--peer", "127.0.0.1:\(c.cluster.ports[0])"]
            FileManager.default.createFile(atPath: other.folder(0) + "/from-the-third.txt", contents: Data("3\n".utf8))
            try other.start(0)
            defer { other.stopAll(); try? FileManager.default.removeItem(atPath: other.root) }
            try await c.eventually("the third node's file on n0") { FileManager.default.fileExists(atPath: c.cluster.folder(0) + "/from-the-third.txt") }
            #expect(other.logs().contains("cannot serve the dashboard"))
            #expect(try c.get(0, "/rest/health").status == 200)
            #expect((try c.get(0, "/rest/status").json as? [String: Any])?["name"] as? String == "n0")
        }

        /// `--gui-tls`: the same API over HTTPS with the node's certificate (curl, as a person
        /// scripting it would); plain HTTP to that port gets no answer.
        @Test func theAPIOverHTTPSWithGuiTls() async throws {
            let c = try await GUICluster(count: 2, extra: ["--gui-tls"])
            defer { c.stop() }
            let address = try String(contentsOfFile: c.cluster.folder(0) + "/.synckit/gui-address", encoding: .utf8)
            #expect(address.hasPrefix("https://127.0.0.1:"))
            func curl(_ args: [String]) throws -> String {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
                p.arguments = ["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"] + args
                let pipe = Pipe()
                p.standardOutput = pipe
                try p.run()
                p.waitUntilExit()
                return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            }
            let base = "https://127.0.0.1:\(c.guiPorts[0])"
            #expect(try curl(["-H", "X-API-Key: \(c.keys[0])", base + "/rest/status"]) == "200")
            #expect(try curl([base + "/rest/status"]) == "401")
            #expect(try curl(["-H", "X-API-Key: \(c.keys[0])", "-H", "Origin: https://evil.example", base + "/rest/status"]) == "403")
            #expect(try curl([base + "/"]) == "200")
            #expect(try curl(["http://127.0.0.1:\(c.guiPorts[0])/rest/health"]) != "200")
        }

        /// The daemon as a service runs it: not as root. (A socket option only root may set
        /// once made every dashboard connection end the node; tests as root never saw it.)
        @Test func aNodeRunByAnUnprivilegedUserServesTheAPI() async throws {
            let c = try await GUICluster(count: 2) { cluster in
                guard getuid() == 0 else { return }
                // nobody (65534) owns the folders and runs the nodes.
                chmod(cluster.root, 0o755)
                for i in 0..<2 { chown(cluster.folder(i), 65534, 65534) }
                cluster.launcher = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
                FileManager.default.createFile(atPath: cluster.folder(0) + "/mine.txt", contents: Data("x\n".utf8))
                chown(cluster.folder(0) + "/mine.txt", 65534, 65534)
            }
            defer { c.stop() }
            for _ in 0..<3 {
                #expect(try c.get(0, "/rest/health").status == 200)
                #expect(try c.get(0, "/rest/status").status == 200)
                #expect(try Self.request(c.guiPorts[0], "GET", "/").status == 200)
            }
            try await c.eventually("mine.txt on n1") { FileManager.default.fileExists(atPath: c.cluster.folder(1) + "/mine.txt") }
            #expect(c.cluster.processes.values.allSatisfy { $0.isRunning })
        }
    }
}
